import BatonCore
import Synchronization

/// A Prometheus-style histogram: counts per upper bound (not cumulative here; rendered cumulative),
/// sum and count. A value type, cheap to copy into a snapshot.
public struct Histogram: Hashable, Sendable {
    /// Upper bounds in seconds, ascending; `+Inf` is implied.
    public let bounds: [Double]
    /// `counts[i]` observations with `bounds[i-1] < value <= bounds[i]`; the last is above every bound.
    public private(set) var counts: [UInt64]
    public private(set) var sum: Double = 0
    public private(set) var count: UInt64 = 0

    public init(bounds: [Double]) {
        self.bounds = bounds
        self.counts = Array(repeating: 0, count: bounds.count + 1)
    }

    /// Seconds, from 1 ms to 10 s: HA cycles and store requests.
    public static let latencyBounds: [Double] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    ]

    public mutating func observe(_ value: Double) {
        let index = bounds.firstIndex { value <= $0 } ?? bounds.count
        counts[index] += 1
        sum += value
        count += 1
    }

    public mutating func observe(_ duration: Duration) { observe(duration.secondsValue) }

    /// Cumulative counts per bound (what `_bucket{le=...}` shows), ending with `+Inf` = count.
    public var cumulative: [UInt64] {
        var total: UInt64 = 0
        return counts.map {
            total += $0
            return total
        }
    }
}

extension Duration {
    /// The duration in seconds, as a Double.
    public var secondsValue: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }
}

/// Requests the HA loop made to the store: latency, and failures by kind.
public struct StoreRequestStats: Hashable, Sendable {
    public var latency = Histogram(bounds: Histogram.latencyBounds)
    /// Failed requests by `StoreError.Code` (`unavailable`, `timeout`, `lease not found`, …).
    public var errors: [String: UInt64] = [:]

    public init() {}
}

/// Collects `StoreRequestStats` from any task; read by the REST API's `GET /metrics`.
public final class StoreRequestMetrics: Sendable {
    let stats = Mutex(StoreRequestStats())

    public init() {}

    public func record(_ duration: Duration, error: (any Error)?) {
        stats.withLock { stats in
            stats.latency.observe(duration)
            if let error {
                let kind = (error as? StoreError)?.code.rawValue ?? "other"
                stats.errors[kind, default: 0] += 1
            }
        }
    }

    public func snapshot() -> StoreRequestStats { stats.withLock { $0 } }
}

/// A `ClusterStore` that times every request of the wrapped store (the watch stream excluded).
struct MeteredClusterStore: ClusterStore {
    let base: any ClusterStore
    let metrics: StoreRequestMetrics
    let clock: any MonotonicClock

    func setRequestTimeout(_ timeout: Duration) { base.setRequestTimeout(timeout) }

    func timed<T>(_ body: () async throws -> T) async throws -> T {
        let started = clock.now
        do {
            let result = try await body()
            metrics.record(clock.now - started, error: nil)
            return result
        } catch {
            metrics.record(clock.now - started, error: error)
            throw error
        }
    }

    func loadCluster() async throws -> ClusterView { try await timed { try await base.loadCluster() } }
    func createSession(ttl: Duration) async throws -> SessionID {
        try await timed { try await base.createSession(ttl: ttl) }
    }
    func keepAlive(_ session: SessionID) async throws -> SessionStatus {
        try await timed { try await base.keepAlive(session) }
    }
    func revokeSession(_ session: SessionID) async throws { try await timed { try await base.revokeSession(session) } }
    func acquireLeader(member: String, session: SessionID) async throws -> Bool {
        try await timed { try await base.acquireLeader(member: member, session: session) }
    }
    func reattachLeader(member: String, session: SessionID) async throws -> Bool {
        try await timed { try await base.reattachLeader(member: member, session: session) }
    }
    func releaseLeader(member: String) async throws -> Bool {
        try await timed { try await base.releaseLeader(member: member) }
    }
    func publishMember(_ member: Member, session: SessionID) async throws {
        try await timed { try await base.publishMember(member, session: session) }
    }
    func removeMember(name: String) async throws { try await timed { try await base.removeMember(name: name) } }
    func claimInitialize(systemID: String) async throws -> Bool {
        try await timed { try await base.claimInitialize(systemID: systemID) }
    }
    func updateInitialize(systemID: String, expected: Int64) async throws -> Bool {
        try await timed { try await base.updateInitialize(systemID: systemID, expected: expected) }
    }
    func cancelInitialize() async throws { try await timed { try await base.cancelInitialize() } }
    func writeConfig(_ config: DynamicConfig, expected: Int64?) async throws -> Bool {
        try await timed { try await base.writeConfig(config, expected: expected) }
    }
    func writeFailover(_ request: FailoverRequest, expected: Int64?) async throws -> Bool {
        try await timed { try await base.writeFailover(request, expected: expected) }
    }
    func deleteFailover(expected: Int64?) async throws -> Bool {
        try await timed { try await base.deleteFailover(expected: expected) }
    }
    func writeSync(_ state: SyncState, expected: Int64?) async throws -> Bool {
        try await timed { try await base.writeSync(state, expected: expected) }
    }
    func deleteSync(expected: Int64?) async throws -> Bool {
        try await timed { try await base.deleteSync(expected: expected) }
    }
    func writeHistory(_ history: [HistoryEntry]) async throws {
        try await timed { try await base.writeHistory(history) }
    }
    func writeStatus(_ status: LeaderStatus) async throws { try await timed { try await base.writeStatus(status) } }
    func writeFailsafe(_ members: [String: String]?) async throws {
        try await timed { try await base.writeFailsafe(members) }
    }
    func watch(after revision: Int64) -> AsyncStream<StoreEvent> { base.watch(after: revision) }
}
