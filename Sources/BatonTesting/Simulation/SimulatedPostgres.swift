import BatonCore
import Foundation

/// A PostgreSQL node as the simulated cluster needs it: data or none, running or not, primary or
/// standby of an upstream, a timeline and WAL positions. Replication and writes are driven by
/// `SimulatedCluster`; every call returns at once.
public final class SimulatedPostgres: PostgresNode, @unchecked Sendable {
    public struct State: Sendable {
        public var hasData = false
        public var running = false
        public var crashed = false
        public var standby = false
        public var upstream: String?
        public var timeline = 1
        public var lsn: UInt64 = 0
        public var systemID: String?
        /// When true, the node does not receive WAL (a lagging or cut-off replica).
        public var replicationPaused = false
        public var synchronousStandbys: [String] = []
        public var promotions: [(timeline: Int, lsn: UInt64)] = []
        /// How many times `restart()` and `reload()` ran, and clones were taken.
        public var restarts = 0
        public var reloads = 0
        public var clones = 0
    }

    public let name: String
    private let lock = NSLock()
    private var state = State()
    private let sourceLookup: @Sendable (String) -> SimulatedPostgres?
    private var hooks = Hooks()

    /// Test hooks, called as the operation begins (e.g. to make a lease expire during a rewind).
    public struct Hooks: Sendable {
        public var beforeRewind: (@Sendable () async -> Void)?
        public var beforeStart: (@Sendable (ReplicationSource?) async -> Void)?
        public init() {}
    }

    public func setHooks(_ value: Hooks) { lock.withLock { hooks = value } }

    public init(name: String, lookup: @escaping @Sendable (String) -> SimulatedPostgres?) {
        self.name = name
        self.sourceLookup = lookup
    }

    public var snapshot: State { lock.withLock { state } }

    public func mutate(_ body: (inout State) -> Void) { lock.withLock { body(&state) } }

    /// True when this node would acknowledge a write now.
    public var isWritablePrimary: Bool { lock.withLock { state.running && !state.standby } }

    /// SIGKILL of the postmaster.
    public func crash() {
        lock.withLock {
            if state.running {
                state.running = false
                state.crashed = true
            }
        }
    }

    public func status() async -> PostgresStatus {
        lock.withLock {
            guard state.hasData else { return PostgresStatus(process: .uninitialized) }
            guard state.running else {
                return PostgresStatus(process: state.crashed ? .crashed : .stopped, systemIdentifier: state.systemID)
            }
            let position = LSN(state.lsn)
            return PostgresStatus(
                process: .running, inRecovery: state.standby, timeline: state.timeline,
                currentLSN: state.standby ? nil : position, receiveLSN: state.standby ? position : nil,
                replayLSN: state.standby ? position : nil, streaming: state.standby && state.upstream != nil,
                systemIdentifier: state.systemID,
                replication: [])
        }
    }

    public func bootstrap() async throws -> String {
        lock.withLock {
            state.hasData = true
            state.running = true
            state.standby = false
            state.systemID = "7\(abs(name.hashValue) % 1_000_000)"
            state.lsn = 0x100_0000
            return state.systemID ?? ""
        }
    }

    public func cloneReplica(from source: ReplicationSource, progress: (@Sendable (CloneProgress) -> Void)?)
        async throws
    {
        guard let upstream = sourceLookup(source.member)?.snapshot, upstream.running else {
            throw SimulationError("clone source \(source.member) is not running")
        }
        lock.withLock {
            state.hasData = true
            state.running = false
            state.crashed = false
            state.standby = true
            state.upstream = source.member
            state.lsn = upstream.lsn
            state.timeline = upstream.timeline
            state.systemID = upstream.systemID
            state.clones += 1
        }
        progress?(CloneProgress(doneKB: 100, totalKB: 100, percent: 100))
    }

    public func start(following source: ReplicationSource?) async throws {
        if let hook = lock.withLock({ hooks.beforeStart }) { await hook(source) }
        lock.withLock {
            state.running = true
            state.crashed = false
            if let source {
                state.standby = true
                state.upstream = source.member
            }
        }
    }

    public func stop(mode: StopMode, timeout: Duration) async throws {
        lock.withLock {
            state.running = false
            state.crashed = false
        }
    }

    public func restart() async throws {
        lock.withLock {
            state.running = true
            state.crashed = false
            state.restarts += 1
        }
    }

    public func reload() async throws { lock.withLock { state.reloads += 1 } }

    public func promote(timeout: Duration) async throws {
        try lock.withLock {
            guard state.running, state.standby else { throw SimulationError("promote: not a running standby") }
            state.standby = false
            state.upstream = nil
            state.timeline += 1
            state.promotions.append((state.timeline, state.lsn))
        }
    }

    public func demote(toFollow source: ReplicationSource?, mode: StopMode) async throws {
        lock.withLock {
            state.running = true
            state.crashed = false
            state.standby = true
            state.upstream = source?.member
        }
    }

    public func follow(_ source: ReplicationSource) async throws {
        lock.withLock {
            state.standby = true
            state.upstream = source.member
        }
    }

    public func rewind(from source: ReplicationSource) async throws {
        if let hook = lock.withLock({ hooks.beforeRewind }) { await hook() }
        guard let upstream = sourceLookup(source.member)?.snapshot else {
            throw SimulationError("rewind source \(source.member) unknown")
        }
        lock.withLock {
            // Divergent WAL is discarded: the node restarts at the source's position.
            state.lsn = min(state.lsn, upstream.lsn)
            state.timeline = upstream.timeline
            state.running = true
            state.crashed = false
            state.standby = true
            state.upstream = source.member
        }
    }

    public func setSynchronousStandbys(_ names: [String]) async throws {
        lock.withLock { state.synchronousStandbys = names }
    }

    public func syncReplicationSlots(forMembers members: [String]) async throws {}

    public func terminations() -> AsyncStream<PostmasterExit> {
        AsyncStream { _ in }
    }
}

public struct SimulationError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
