import BatonCore
import BatonHA

/// Everything the REST API reads and controls: the HA loop's latest snapshot, a way to wake it,
/// the cluster store for control requests, the clocks, and who this member is.
///
/// `HALoopStateSource` is the production implementation; tests supply canned snapshots.
public protocol APIStateSource: Sendable {
    /// This member's name (`patroni.name` in `GET /patroni`).
    var memberName: String { get }
    /// The cluster scope (`patroni.scope`).
    var scope: String { get }
    /// The store that control endpoints (config, switchover, failover) write to.
    var store: any ClusterStore { get }
    /// The monotonic clock the HA loop stamps its snapshot with (`lastCycleAt`, `leaseDeadline`).
    var clock: any MonotonicClock { get }
    /// Seconds since 1970, for `dcs_last_seen` and scheduled switchovers.
    func wallClockSeconds() -> Double

    /// The HA loop's latest snapshot.
    func status() async -> HAStatus
    /// The latest snapshot when it can be read without waiting (a lock, no suspension), for the
    /// health checks answered on the connection's event loop; nil sends every request through
    /// the router.
    func currentStatus() -> HAStatus?
    /// The generation of the snapshot `currentStatus()` would return, read without copying it;
    /// nil when the source does not number its snapshots (nothing derived from one is then reused).
    func currentGeneration() -> UInt64?
    /// Asks the HA loop for an immediate cycle.
    func wake(_ reason: String)
    /// Hands an operator request (restart, reload, reinitialize) to the HA loop, which carries it
    /// out between two decisions, and returns its answer.
    func submit(_ request: OperatorRequest) async -> OperatorReply
    /// Latency and failures of the HA loop's store requests, when known.
    func storeRequestStats() -> StoreRequestStats?
    /// This member confirmed `leader` as primary (`POST /failsafe`): it must not race for ttl.
    func noteFailsafeConfirmed(leader: String)
}

extension APIStateSource {
    public func noteFailsafeConfirmed(leader: String) {}

    public func storeRequestStats() -> StoreRequestStats? { nil }
    public func currentStatus() -> HAStatus? { nil }
    public func currentGeneration() -> UInt64? { nil }
}

/// The production state source: a running `HALoop` and the store it uses.
public struct HALoopStateSource: APIStateSource {
    public let loop: HALoop
    public let memberName: String
    public let scope: String
    public let store: any ClusterStore
    public let clock: any MonotonicClock
    let wallClock: @Sendable () -> Double

    /// - Parameters:
    ///   - clock: the same clock the loop was created with, so that snapshot instants compare.
    ///   - wallClock: seconds since 1970 (the loop's `wallClock`).
    public init(
        loop: HALoop, memberName: String, scope: String, store: any ClusterStore,
        clock: any MonotonicClock = SystemMonotonicClock(), wallClock: @escaping @Sendable () -> Double
    ) {
        self.loop = loop
        self.memberName = memberName
        self.scope = scope
        self.store = store
        self.clock = clock
        self.wallClock = wallClock
    }

    public func wallClockSeconds() -> Double { wallClock() }
    public func status() async -> HAStatus { loop.latestStatus() }
    public func currentStatus() -> HAStatus? { loop.latestStatus() }
    public func currentGeneration() -> UInt64? { loop.latestGeneration() }
    public func wake(_ reason: String) { loop.wake(reason) }
    public func submit(_ request: OperatorRequest) async -> OperatorReply { await loop.submit(request) }
    public func storeRequestStats() -> StoreRequestStats? { loop.storeMetrics.snapshot() }
    public func noteFailsafeConfirmed(leader: String) { loop.noteFailsafeConfirmed(leader: leader) }
}
