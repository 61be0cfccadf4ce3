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
        public var synchronousStandbys: SynchronousSetting = .empty
        public var promotions: [(timeline: Int, lsn: UInt64)] = []
        /// How many times `restart()` and `reload()` ran, and clones were taken.
        public var restarts = 0
        public var reloads = 0
        public var clones = 0
        /// Clones asked for, failed ones included.
        public var cloneAttempts = 0
        /// What the status query answers, to simulate an agent that cannot see its own node.
        public var answer: Answer = .truthful
        /// The data directory holds files but no usable cluster (e.g. PG_VERSION moved away).
        public var dataDirectoryDamaged = false
        /// Set by `fence()`; starting as a primary and promoting are refused until `liftFence()`.
        public var fenced = false
        public var fences = 0
        /// When set, every start fails with this message (a postmaster that exits during start-up).
        public var startFailure: String?
        /// Starts attempted (failed ones included).
        public var starts = 0
        /// The cluster's parameters last applied, how many times they were, and the names the
        /// simulated server does not know (refused when applied).
        public var clusterParameters: [String: String] = [:]
        public var parameterApplications = 0
        public var unknownParameters: Set<String> = []
        /// `postgresql.pg_hba`/`pg_ident` last put in force, how often, and the lines refused.
        public var accessRules = AccessRules()
        public var accessApplications = 0
        public var refusedAccessLines: Set<String> = []
        /// Physical slots (name → active) and the slot use the loop last set.
        public var slots: [String: Bool] = [:]
        /// `advanceReplicationSlot` calls: slot, position.
        public var slotAdvances: [(String, LSN)] = []
        public var useSlots: Bool?
        /// Logical slots (their copies on a replica restart it), the settings `currentSettings`
        /// answers, and a failure every logical slot call throws (a query that failed).
        public var logicalSlots: [String: LogicalSlot] = [:]
        public var settings: [String: String] = ["wal_level": "replica", "hot_standby_feedback": "off"]
        public var slotFailure: String?
        /// `advanceLogicalSlots` calls, and the logical slots copied in (restarts counted).
        public var logicalAdvances: [String: LogicalSlotAdvance] = [:]
        public var logicalCopies = 0
        /// Logical slots whose advance fails as for WAL that is gone.
        public var unusableLogicalSlots: Set<String> = []
    }

    /// How the simulated status query answers: the truth; "unknown" (the query failed: an
    /// authentication error, no connection slots); after a delay (a backend that hangs); or a
    /// lie about the recovery state.
    public enum Answer: Sendable, Equatable {
        case truthful
        case unknown(String)
        case slow(Duration)
        case claimsRecovery(Bool)
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
        if case .slow(let delay) = lock.withLock({ state.answer }) { try? await Task.sleep(for: delay) }
        return lock.withLock {
            if state.dataDirectoryDamaged {
                return PostgresStatus(
                    process: .unusable, problem: "simulated: PG_VERSION missing", postmasterPID: state.running ? 1 : nil
                )
            }
            guard state.hasData else { return PostgresStatus(process: .uninitialized) }
            guard state.running else {
                return PostgresStatus(process: state.crashed ? .crashed : .stopped, systemIdentifier: state.systemID)
            }
            let position = LSN(state.lsn)
            switch state.answer {
            case .unknown(let why):
                // postmaster.pid still tells a hot standby from a primary, as a real one does.
                var status = PostgresStatus(process: .running, systemIdentifier: state.systemID, problem: why)
                status.postmasterState = state.standby ? "standby" : "ready"
                return status
            case .claimsRecovery(let claim):
                return PostgresStatus(
                    process: .running, inRecovery: claim, timeline: state.timeline, currentLSN: position,
                    receiveLSN: position, replayLSN: position, systemIdentifier: state.systemID)
            case .truthful, .slow: break
            }
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
        lock.withLock { state.cloneAttempts += 1 }
        guard let upstream = sourceLookup(source.member)?.snapshot, upstream.running else {
            throw SimulationError("clone source \(source.member) is not running")
        }
        guard source.member != name else { throw SimulationError("clone from itself refused") }
        try lock.withLock {
            if state.hasData || state.dataDirectoryDamaged {
                throw SimulationError("clone refused: the data directory is not empty")
            }
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
        try lock.withLock {
            state.starts += 1
            if state.fenced, source == nil, !state.standby {
                throw SimulationError("start as primary refused: fenced")
            }
            if let failure = state.startFailure {
                state.running = false
                throw SimulationError(failure)
            }
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

    public func restart(stopTimeout: Duration) async throws {
        try lock.withLock {
            if state.fenced, !state.standby { throw SimulationError("restart as primary refused: fenced") }
            state.running = true
            state.crashed = false
            state.restarts += 1
        }
    }

    public func reload() async throws { lock.withLock { state.reloads += 1 } }

    public func promote(timeout: Duration) async throws {
        try lock.withLock {
            guard !state.fenced else { throw SimulationError("promote refused: fenced") }
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

    public func setSynchronousStandbys(_ setting: SynchronousSetting) async throws -> LSN? {
        lock.withLock {
            state.synchronousStandbys = setting
            return state.running && !state.standby ? LSN(state.lsn) : nil
        }
    }

    /// Records the cluster's parameters; names in `state.unknownParameters` are refused as a
    /// server refuses a name it does not know.
    public func applyClusterParameters(_ parameters: [String: String]) async throws -> [PostgresParameters.Refusal]? {
        lock.withLock {
            state.clusterParameters = parameters
            state.parameterApplications += 1
            return parameters.keys.sorted().filter { state.unknownParameters.contains($0) }.map {
                PostgresParameters.Refusal(name: $0, reason: "unrecognized configuration parameter \"\($0)\"")
            }
        }
    }

    /// Records the access rules; a line listed in `state.refusedAccessLines` is refused as
    /// PostgreSQL refuses a file it cannot read.
    public func applyAccessRules(_ rules: AccessRules, source: String) async throws -> [String]? {
        lock.withLock {
            guard state.running else { return nil }
            let bad = (rules.hba ?? []).filter { state.refusedAccessLines.contains($0) }
            guard bad.isEmpty else { return ["postgresql.pg_hba: PostgreSQL refuses \(bad)"] }
            state.accessRules = rules
            state.accessApplications += 1
            return []
        }
    }

    public func physicalReplicationSlots() async throws -> [String: PhysicalSlot] {
        lock.withLock { state.slots.mapValues { PhysicalSlot(active: $0) } }
    }

    @discardableResult
    public func applyReplicationSlots(
        create: [String], drop: [String]
    ) async throws -> (created: [String], dropped: [String]) {
        lock.withLock {
            var result: (created: [String], dropped: [String]) = ([], [])
            for name in drop where state.slots[name] == false {
                state.slots[name] = nil
                result.dropped.append(name)
            }
            for name in create where state.slots[name] == nil {
                state.slots[name] = false
                result.created.append(name)
            }
            return result
        }
    }

    public func advanceReplicationSlots(_ advances: [String: LSN]) async {
        lock.withLock { state.slotAdvances += advances.sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }
    }

    public func rejoinOtherCluster(_ source: ReplicationSource) async throws {
        try await rewind(from: source)
    }

    private func checkSlotFailure() throws {
        if let failure = lock.withLock({ state.slotFailure }) { throw SimulationError(failure) }
    }

    public func logicalReplicationSlots() async throws -> [String: LogicalSlot] {
        try checkSlotFailure()
        return lock.withLock { state.logicalSlots }
    }

    @discardableResult
    public func applyLogicalSlots(
        create: [PermanentSlot], drop: [String]
    ) async throws -> (created: [String], dropped: [String]) {
        try checkSlotFailure()
        return lock.withLock {
            var result: (created: [String], dropped: [String]) = ([], [])
            for name in drop where state.logicalSlots[name]?.active == false {
                state.logicalSlots[name] = nil
                result.dropped.append(name)
            }
            for slot in create where state.logicalSlots[slot.name] == nil && !state.standby {
                guard case .logical(let database, let plugin) = slot.kind, state.settings["wal_level"] == "logical"
                else { continue }
                state.logicalSlots[slot.name] = LogicalSlot(
                    database: database, plugin: plugin, active: false, confirmedFlush: LSN(state.lsn),
                    catalogXmin: TransactionID(1000))
                result.created.append(slot.name)
            }
            return result
        }
    }

    @discardableResult
    public func advanceLogicalSlots(_ advances: [String: LogicalSlotAdvance]) async -> [String] {
        lock.withLock {
            var unusable: [String] = []
            for (name, advance) in advances.sorted(by: { $0.key < $1.key }) {
                state.logicalAdvances[name] = advance
                if state.unusableLogicalSlots.contains(name) {
                    unusable.append(name)
                } else if state.logicalSlots[name]?.active == false {
                    state.logicalSlots[name]?.confirmedFlush = advance.lsn
                }
            }
            return unusable
        }
    }

    public func copyLogicalSlots(_ slots: [PermanentSlot], from source: ReplicationSource) async throws -> [String] {
        try checkSlotFailure()
        guard let leader = sourceLookup(source.member), leader.snapshot.running else {
            throw SimulationError("simulated: \(source.member) does not answer")
        }
        let theirs = leader.snapshot.logicalSlots
        return lock.withLock {
            var copied: [String] = []
            for slot in slots {
                guard let found = theirs[slot.name], case .logical(let database, let plugin) = slot.kind,
                    found.database == database, found.plugin == plugin, state.logicalSlots[slot.name] == nil
                else { continue }
                var copy = found
                copy.active = false
                state.logicalSlots[slot.name] = copy
                copied.append(slot.name)
            }
            if !copied.isEmpty {
                state.logicalCopies += copied.count
                state.restarts += 1
            }
            return copied
        }
    }

    public func slotCatalogXmins(_ names: [String], on source: ReplicationSource) async throws -> [String:
        TransactionID?]
    {
        try checkSlotFailure()
        guard let leader = sourceLookup(source.member), leader.snapshot.running, !leader.snapshot.standby else {
            throw SimulationError("simulated: \(source.member) is not a primary")
        }
        let snapshot = leader.snapshot
        var xmins: [String: TransactionID?] = [:]
        for name in names {
            if let slot = snapshot.logicalSlots[name] {
                xmins[name] = .some(slot.catalogXmin)
            } else if snapshot.slots[name] != nil {
                // A physical slot holds the catalog_xmin of its standby's feedback.
                xmins[name] = .some(snapshot.settings["feedback_catalog_xmin"].flatMap(TransactionID.init(text:)))
            }
        }
        return xmins
    }

    public func currentSettings(_ names: [String]) async throws -> [String: String] {
        try checkSlotFailure()
        return lock.withLock { state.settings.filter { names.contains($0.key) } }
    }

    public func setReplicationSlotUse(_ use: Bool) async throws {
        lock.withLock { state.useSlots = use }
    }

    public func terminations() -> AsyncStream<PostmasterExit> {
        AsyncStream { _ in }
    }

    public func fence() async {
        lock.withLock {
            state.fenced = true
            state.fences += 1
            state.running = false
            state.crashed = false
        }
    }

    public func liftFence() { lock.withLock { state.fenced = false } }

    public func clearDataDirectory(reason: String) async throws {
        lock.withLock {
            state.running = false
            state.crashed = false
            state.hasData = false
            state.dataDirectoryDamaged = false
        }
    }
}

public struct SimulationError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
