import BatonPostgres
import BatonTestCluster
import Foundation

/// A client that inserts increasing ids into whoever is primary (by the leader key), one
/// autocommit INSERT every `interval`, reconnecting after any failure, and remembers every
/// acknowledged id with the monotonic time of its acknowledgement.
final class Writer: @unchecked Sendable {
    struct Ack: Sendable {
        let id: Int
        let at: ContinuousClock.Instant
        let node: String
    }

    private let cluster: AgentCluster
    private let interval: Duration
    private let statementTimeout: Duration
    private let limit: Duration
    private let lock = NSLock()
    private var acks: [Ack] = []
    private var failures: [String] = []
    private var running = true
    private var task: Task<Void, Never>?

    init(
        _ cluster: AgentCluster, interval: Duration = .milliseconds(20), statementTimeout: Duration = .seconds(5),
        limit: Duration = .seconds(120)
    ) {
        self.cluster = cluster
        self.interval = interval
        self.statementTimeout = statementTimeout
        self.limit = limit
    }

    func start(firstID: Int = 1_000_000) {
        let task = Task { await self.run(firstID: firstID) }
        lock.withLock { self.task = task }
    }

    /// Stops after the statement in flight (bounded by the statement timeout).
    func stop() async {
        let task = lock.withLock { () -> Task<Void, Never>? in
            running = false
            return self.task
        }
        await task?.value
    }

    var acknowledged: [Ack] { lock.withLock { acks } }
    var acknowledgedIDs: Set<Int> { Set(acknowledged.map(\.id)) }
    var failureCount: Int { lock.withLock { failures.count } }
    var lastFailures: [String] { lock.withLock { Array(failures.suffix(5)) } }

    /// Acks recorded after `instant`.
    func acks(after instant: ContinuousClock.Instant) -> [Ack] { acknowledged.filter { $0.at > instant } }

    /// Waits until at least `count` acks were recorded after `instant`.
    func waitForAcks(_ count: Int, after instant: ContinuousClock.Instant, timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if acks(after: instant).count >= count { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// U within [from, to]: the longest gap between consecutive acknowledged writes that overlaps
    /// the interval (one that began before it or runs past its end counts too); the whole
    /// interval when no write was acknowledged across it.
    func longestGap(from: ContinuousClock.Instant, to: ContinuousClock.Instant) -> Duration {
        let all = acknowledged.sorted { $0.at < $1.at }
        let overlapping = zip(all, all.dropFirst()).filter { $0.0.at < to && $0.1.at > from }.map { $0.1.at - $0.0.at }
        let covered = all.contains { $0.at <= from } && all.contains { $0.at >= to }
        return covered ? overlapping.max() ?? .zero : max(overlapping.max() ?? .zero, to - from)
    }

    /// The longest gap between two consecutive acknowledged writes (U), and where it started.
    func longestGap() -> (gap: Duration, from: ContinuousClock.Instant)? {
        let all = acknowledged
        guard all.count >= 2 else { return nil }
        var best: (Duration, ContinuousClock.Instant) = (.zero, all[0].at)
        for index in 1..<all.count {
            let gap = all[index].at - all[index - 1].at
            if gap > best.0 { best = (gap, all[index - 1].at) }
        }
        return best
    }

    private var isRunning: Bool { lock.withLock { running } }

    private func run(firstID: Int) async {
        let deadline = ContinuousClock.now + limit
        var id = firstID
        var connection: PostgresConnection?
        var target = ""
        while isRunning, ContinuousClock.now < deadline {
            if connection == nil {
                guard let leader = try? await cluster.leader(),
                    let opened = try? await cluster.connect(
                        leader, timeout: .seconds(1), statementTimeout: statementTimeout)
                else {
                    try? await Task.sleep(for: .milliseconds(50))
                    continue
                }
                connection = opened
                target = leader
            }
            guard let open = connection else { continue }
            id += 1
            do {
                _ = try await open.query("INSERT INTO baton_it (id) VALUES (\(id))")
                let ack = Ack(id: id, at: .now, node: target)
                lock.withLock { acks.append(ack) }
                try? await Task.sleep(for: interval)
            } catch {
                lock.withLock { failures.append("\(target) id \(id): \(error)") }
                await open.close()
                connection = nil
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
        await connection?.close()
    }
}

/// Writes every 50 ms on a connection to one node (never following the leader), to see when that
/// node stops accepting writes, and whether it ever accepts one again.
final class NodeProbe: @unchecked Sendable {
    private let cluster: AgentCluster
    private let name: String
    private let lock = NSLock()
    private var firstFailure: ContinuousClock.Instant?
    private var firstError = ""
    private var acceptedAfterFailure: [ContinuousClock.Instant] = []
    private var accepts: [ContinuousClock.Instant] = []
    private var running = true
    private var task: Task<Void, Never>?

    init(_ cluster: AgentCluster, node name: String) {
        self.cluster = cluster
        self.name = name
    }

    func start(firstID: Int, limit: Duration = .seconds(60)) {
        let task = Task { await self.run(firstID: firstID, limit: limit) }
        lock.withLock { self.task = task }
    }

    func stop() async {
        let task = lock.withLock { () -> Task<Void, Never>? in
            running = false
            return self.task
        }
        await task?.value
    }

    var failedAt: ContinuousClock.Instant? { lock.withLock { firstFailure } }
    var failure: String { lock.withLock { firstError } }
    var writesAfterFailure: [ContinuousClock.Instant] { lock.withLock { acceptedAfterFailure } }
    /// When each accepted write was acknowledged.
    var accepted: [ContinuousClock.Instant] { lock.withLock { accepts } }

    private var isRunning: Bool { lock.withLock { running } }

    private func run(firstID: Int, limit: Duration) async {
        let deadline = ContinuousClock.now + limit
        var id = firstID
        var connection: PostgresConnection?
        while isRunning, ContinuousClock.now < deadline {
            if connection == nil {
                connection = try? await cluster.connect(
                    name, timeout: .milliseconds(500), statementTimeout: .milliseconds(500))
            }
            if let open = connection {
                id += 1
                do {
                    _ = try await open.query("INSERT INTO baton_it (id) VALUES (\(id))")
                    lock.withLock {
                        accepts.append(.now)
                        if firstFailure != nil { acceptedAfterFailure.append(.now) }
                    }
                } catch {
                    lock.withLock {
                        if firstFailure == nil {
                            firstFailure = .now
                            firstError = "\(error)"
                        }
                    }
                    // A replica's read-only refusal leaves the connection usable; anything else
                    // reconnects.
                    if (error as? PostgresError)?.sqlState != "25006" {
                        await open.close()
                        connection = nil
                    }
                }
            } else {
                lock.withLock {
                    if firstFailure == nil {
                        firstFailure = .now
                        firstError = "cannot connect"
                    }
                }
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        await connection?.close()
    }
}

/// D2, split brain: one prober per node writes every 50 ms on its own connection to that node
/// (never following the leader) and records when the node accepted a write. A node is counted as
/// writable from its first to its last accepted write, across gaps shorter than 1 s; D2 is the
/// time during which two nodes were writable at once.
final class SplitBrainProbes: @unchecked Sendable {
    private let probes: [(name: String, probe: NodeProbe)]

    init(_ cluster: AgentCluster, nodes: [String]) {
        probes = nodes.map { ($0, NodeProbe(cluster, node: $0)) }
    }

    func start(limit: Duration) {
        for (index, entry) in probes.enumerated() {
            entry.probe.start(firstID: 50_000_000 + index * 1_000_000, limit: limit)
        }
    }

    func stop() async {
        for entry in probes { await entry.probe.stop() }
    }

    /// How many writes each node accepted (a D2 of 0 means something only if some did).
    var acceptedByNode: [String: Int] {
        Dictionary(uniqueKeysWithValues: probes.map { ($0.name, $0.probe.accepted.count) })
    }

    /// Writes a node accepted strictly inside another node's span of accepted writes: a second
    /// primary even for a moment, which `overlap` misses when it accepted only once.
    func interleaved() -> [String] {
        let accepted = probes.map { ($0.name, $0.probe.accepted) }
        var found: [String] = []
        for (name, spans) in accepted.map({ ($0.0, Self.spans($0.1)) }) {
            for (other, instants) in accepted where other != name {
                for instant in instants
                where spans.contains(where: { $0.lowerBound < instant && instant < $0.upperBound }) {
                    found.append("\(other) accepted a write while \(name) did")
                }
            }
        }
        return found
    }

    /// The total time two nodes were writable together, and where (for the report).
    func overlap() -> (total: Duration, cases: [String]) {
        let spans = probes.map { ($0.name, Self.spans($0.probe.accepted)) }
        var total = Duration.zero
        var cases: [String] = []
        for (i, a) in spans.enumerated() {
            for b in spans.dropFirst(i + 1) {
                for x in a.1 {
                    for y in b.1 {
                        let from = max(x.lowerBound, y.lowerBound)
                        let to = min(x.upperBound, y.upperBound)
                        if from < to {
                            total += to - from
                            cases.append("\(a.0) and \(b.0) for \(to - from)")
                        }
                    }
                }
            }
        }
        return (total, cases)
    }

    /// Accepts merged into spans where consecutive accepts are less than 1 s apart.
    static func spans(_ accepts: [ContinuousClock.Instant]) -> [Range<ContinuousClock.Instant>] {
        var result: [Range<ContinuousClock.Instant>] = []
        for instant in accepts.sorted() {
            if let last = result.last, instant - last.upperBound < .seconds(1) {
                result[result.count - 1] = last.lowerBound..<instant
            } else {
                result.append(instant..<instant)
            }
        }
        return result
    }
}
