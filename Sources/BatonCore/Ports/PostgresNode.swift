/// The port to the local PostgreSQL instance that the HA loop drives. `BatonPostgres` implements
/// it with libpq and a supervised postmaster; `BatonTesting` has a fake for the simulated cluster.
public protocol PostgresNode: Sendable {
    /// The current state, from one cheap round trip; never throws: failures become state.
    func status() async -> PostgresStatus

    /// Creates a new cluster (initdb, managed parameters, roles, pg_hba) and starts it as primary.
    /// Returns the database system identifier.
    func bootstrap() async throws -> String
    /// Clones a replica from `source` with pg_basebackup into a missing or empty data directory
    /// (anything else is refused: see `clearDataDirectory(reason:)`) and configures it as a standby
    /// of `source`; does not start it.
    /// `progress` is called from a background thread as pg_basebackup reports progress.
    func cloneReplica(from source: ReplicationSource, progress: (@Sendable (CloneProgress) -> Void)?) async throws
    /// Starts postgres; as a standby of `source` when given, else as it was. Adopts a postmaster that is
    /// already running on the data directory instead of starting a second one.
    func start(following source: ReplicationSource?) async throws
    func stop(mode: StopMode, timeout: Duration) async throws
    /// Restarts postgres: a fast stop cut short after `stopTimeout` (an immediate shutdown), then
    /// a start.
    func restart(stopTimeout: Duration) async throws
    func reload() async throws
    /// Promotes a standby and returns once it accepts writes.
    func promote(timeout: Duration) async throws
    /// Turns a (possibly stopped) primary into a standby of `source`: stop, configure, start.
    func demote(toFollow source: ReplicationSource?, mode: StopMode) async throws
    /// Re-points a running standby at a new primary (reload where PostgreSQL allows it).
    func follow(_ source: ReplicationSource) async throws
    /// Rejoins an old primary after a promotion elsewhere: pg_rewind if needed and possible.
    func rewind(from source: ReplicationSource) async throws
    /// `demote-cluster`: a stopped primary follows another cluster's server — through pg_rewind
    /// when that one is a primary; as it is when it is still a standby (the planned order: this
    /// cluster demoted first, so the other has not forked this history yet).
    func rejoinOtherCluster(_ source: ReplicationSource) async throws
    /// Applies `synchronous_standby_names` on a primary. Returns the WAL position from which every
    /// commit waits for the new setting (read once PostgreSQL has taken it in), or nil when that
    /// could not be confirmed.
    func setSynchronousStandbys(_ setting: SynchronousSetting) async throws -> LSN?
    /// Puts the cluster's PostgreSQL parameters (from the `config` key, already checked by
    /// `PostgresParameters.fromCluster`) in force: written for the next start, and reloaded now
    /// when postgres runs. Returns what the server itself refused (an unknown name, an invalid
    /// value), which is left out of its configuration; nil when they could not be checked yet (no
    /// data directory): the caller asks again.
    func applyClusterParameters(_ parameters: [String: String]) async throws -> [PostgresParameters.Refusal]?
    /// Puts `postgresql.pg_hba`/`pg_ident` in force (`source`: where they came from) while postgres
    /// runs: written, read by PostgreSQL, reloaded, and kept only when the agent still gets in.
    /// Returns what was refused (the previous files then stay in force); nil when postgres does
    /// not run (nothing written: the caller asks again).
    func applyAccessRules(_ rules: AccessRules, source: String) async throws -> [String]?
    /// The physical replication slots on this server, by name (an unknown `active` counts as
    /// active: never dropped).
    func physicalReplicationSlots() async throws -> [String: PhysicalSlot]
    /// Creates and drops physical slots as `MemberSlots.plan` decided; a slot that became active
    /// meanwhile is not dropped. Each slot on its own: one that fails (max_replication_slots
    /// reached, say) is logged and the others go on. Returns the slots it created and dropped.
    @discardableResult
    func applyReplicationSlots(create: [String], drop: [String]) async throws -> (created: [String], dropped: [String])
    /// Moves inactive physical slots' restart LSNs forward (slot name → position: a replica's
    /// copy of a permanent slot to the leader's position, say); an active slot, or one already
    /// past its position, is left as it is. Each slot on its own: a failure is logged and the
    /// others go on.
    func advanceReplicationSlots(_ advances: [String: LSN]) async
    /// The logical replication slots on this server, by name (an unknown `active` counts as
    /// active).
    func logicalReplicationSlots() async throws -> [String: LogicalSlot]
    /// Creates logical slots (each in its database, with its plugin) and drops inactive ones, as
    /// `LogicalSlots.primaryPlan`/`replicaPlan` decided. Each slot on its own.
    @discardableResult
    func applyLogicalSlots(create: [PermanentSlot], drop: [String]) async throws -> (
        created: [String], dropped: [String]
    )
    /// Advances inactive logical slots on a replica to their positions (never past what it
    /// replayed). Each slot on its own: a failure is logged. Returns the slots that cannot be
    /// advanced at all (the WAL they start from is gone here, or the slot was invalidated).
    @discardableResult
    func advanceLogicalSlots(_ advances: [String: LogicalSlotAdvance]) async -> [String]
    /// Copies logical slots from `source` (the leader) onto this replica, checked against their
    /// configuration; restarts postgres (following its upstream) to load them. Returns the slots
    /// copied.
    func copyLogicalSlots(_ slots: [PermanentSlot], from source: ReplicationSource) async throws -> [String]
    /// The `catalog_xmin` of the named slots on `source` (the leader): nil for a slot without
    /// one, absent for a slot not there. Throws when `source` is not a primary.
    func slotCatalogXmins(_ names: [String], on source: ReplicationSource) async throws -> [String: TransactionID?]
    /// Settings as this server has them (`pg_settings.setting`; `on`/`off` for booleans).
    func currentSettings(_ names: [String]) async throws -> [String: String]
    /// Whether a standby names its slot on the primary (the cluster's `use_slots`).
    func setReplicationSlotUse(_ use: Bool) async throws
    /// Yields once each time the supervised postmaster exits, promptly (not at the next poll).
    func terminations() -> AsyncStream<PostmasterExit>
    /// Empties the data directory before a re-clone the agent has proven it may do (an operator's
    /// reinitialize): stops postgres and moves the directory aside; logged with `reason`.
    func clearDataDirectory(reason: String) async throws
    /// Fences this node without asking postgres anything: stops every postmaster of the data
    /// directory at once (the supervised one, one that is starting, one found in postmaster.pid)
    /// and, until `liftFence()`, refuses to start postgres other than as a standby and to promote.
    func fence() async
    /// Ends a fence: the loop holds a valid lease as leader again.
    func liftFence()
    /// Whether a replica can be made with no server to copy from (a method in
    /// `create_replica_methods` with `no_leader`, e.g. a restore from a backup).
    var canCreateReplicaWithoutServer: Bool { get }
    /// The methods defined in the agent's file, listed or not, that need no server (those
    /// `standby_cluster.create_replica_methods` may name).
    var definedMethodsWithoutServer: Set<String> { get }
}

extension PostgresNode {
    public var canCreateReplicaWithoutServer: Bool { false }
    public var definedMethodsWithoutServer: Set<String> { [] }

    public func cloneReplica(from source: ReplicationSource) async throws {
        try await cloneReplica(from: source, progress: nil)
    }
}

/// pg_basebackup's progress report.
public struct CloneProgress: Hashable, Sendable {
    public var doneKB: Int64
    public var totalKB: Int64
    public var percent: Int

    public init(doneKB: Int64, totalKB: Int64, percent: Int) {
        self.doneKB = doneKB
        self.totalKB = totalKB
        self.percent = percent
    }
}

/// How to reach the primary (or cascade source) a standby streams from.
public struct ReplicationSource: Hashable, Sendable {
    public var member: String
    public var host: String
    public var port: Int
    /// Set for another cluster's primary (a standby cluster's leader follows it): the recovery
    /// settings then come from `standby_cluster` (its slot, none unless named; its archive
    /// commands), not from the member's own.
    public var remote: RemoteRecovery?
    /// A member of a standby cluster following its standby leader (or a cascade) restores from
    /// the other cluster's archive: `standby_cluster`'s `restore_command` and
    /// `archive_cleanup_command` take the place of its own, as in Patroni (not
    /// `recovery_min_apply_delay`, which is the standby leader's alone).
    public var standbyClusterArchive: StandbyClusterArchive?

    public init(member: String, host: String, port: Int, remote: RemoteRecovery? = nil) {
        self.member = member
        self.host = host
        self.port = port
        self.remote = remote
    }

    /// No server to stream or copy from: a standby cluster that restores from an archive only
    /// (`standby_cluster` with `restore_command` and no `host`), or a replica made from a backup
    /// while no member leads (a replica method with `no_leader`). It is made only by a method that
    /// needs no server (a command with `no_leader`) and recovers from the archive
    /// (`restore_command`), with no `primary_conninfo`.
    public static func withoutServer(_ member: String, remote: RemoteRecovery? = nil) -> ReplicationSource {
        ReplicationSource(member: member, host: "", port: 0, remote: remote)
    }

    /// False for `withoutServer`: there is nothing to stream, copy or rewind from.
    public var hasServer: Bool { !host.isEmpty }

    /// A replica made while no member leads, from a backup (`no_leader`).
    public static let backupWithoutLeader = withoutServer("a backup (no leader)")
}

/// `standby_cluster`'s archive commands, for the members that follow the standby leader.
public struct StandbyClusterArchive: Hashable, Sendable {
    public var restoreCommand: String?
    public var archiveCleanupCommand: String?

    public init(restoreCommand: String?, archiveCleanupCommand: String?) {
        self.restoreCommand = restoreCommand
        self.archiveCleanupCommand = archiveCleanupCommand
    }
}

/// PostgreSQL's shutdown modes.
public enum StopMode: String, Hashable, Sendable {
    case smart, fast, immediate
}

/// How the supervised postmaster ended.
public struct PostmasterExit: Hashable, Sendable {
    public var pid: Int32
    /// Exit code, or the signal number when `bySignal`; nil when unknown (an adopted postmaster is
    /// not our child, so its status cannot be collected).
    public var status: Int32?
    public var bySignal: Bool
    /// True when the agent asked for it (stop, restart, demote); false for a crash or a kill.
    public var requested: Bool

    public init(pid: Int32, status: Int32?, bySignal: Bool, requested: Bool = false) {
        self.pid = pid
        self.status = status
        self.bySignal = bySignal
        self.requested = requested
    }
}

/// What the agent knows about its local PostgreSQL at one moment.
public struct PostgresStatus: Hashable, Sendable {
    public enum Process: String, Hashable, Sendable {
        /// No data directory, or an empty one: safe to bootstrap or clone into.
        case uninitialized
        /// A data directory that holds something but not a usable cluster (no PG_VERSION, no
        /// pg_control, not a directory, unreadable): never bootstrapped, cloned into or deleted;
        /// `problem` says what is wrong. A postmaster may still run on it (`postmasterPID`).
        case unusable
        case stopped
        case starting
        case running
        /// Exited without being asked to.
        case crashed
    }

    public var process: Process
    /// `pg_is_in_recovery()`; nil when not connected.
    public var inRecovery: Bool?
    public var timeline: Int?
    public var currentLSN: LSN?
    public var receiveLSN: LSN?
    public var replayLSN: LSN?
    /// WAL receiver streaming from its upstream.
    public var streaming: Bool
    public var systemIdentifier: String?
    public var serverVersion: Int?
    public var pendingRestart: Bool
    /// The parameters waiting for a restart, when `pendingRestart` (read only then).
    public var pendingRestartReason: [String: PendingChange] = [:]
    public var replication: [ReplicationRow]
    /// Why the status is incomplete (connection refused, query failed, …).
    public var problem: String?
    /// The postmaster's PID when one is known to be running.
    public var postmasterPID: Int32?
    /// `pg_postmaster_start_time()` as Patroni shows it (`2026-12-06 20:00:00.123456+00:00`).
    public var postmasterStartTime: String?
    /// `pg_stat_wal_receiver.status` on a standby (`streaming`, `catchup`, …); nil when no receiver.
    public var walReceiverStatus: String?
    /// `host:port` the WAL receiver streams from.
    public var upstream: String?
    /// On a standby: whether WAL replay is paused (`pg_is_wal_replay_paused()`), and when the last
    /// replayed transaction committed on the primary, as Patroni prints it
    /// (`2026-12-06 20:00:00.123 UTC`); nil when unknown or none was replayed yet.
    public var replayPaused: Bool?
    public var lastReplayTimestamp: String?
    /// The postmaster's start and the last replayed commit in seconds since 1970 (for metrics).
    public var postmasterStartEpoch: Double?
    public var lastReplayEpoch: Double?
    /// `pg_replication_slots`.
    public var slots: [ReplicationSlotRow]
    /// The postmaster's own word when the status query failed: postmaster.pid's status line
    /// (`starting`, `stopping`, `ready` for a primary, `standby` for a hot standby).
    public var postmasterState: String?

    public init(
        process: Process, inRecovery: Bool? = nil, timeline: Int? = nil, currentLSN: LSN? = nil,
        receiveLSN: LSN? = nil, replayLSN: LSN? = nil, streaming: Bool = false,
        systemIdentifier: String? = nil, serverVersion: Int? = nil, pendingRestart: Bool = false,
        replication: [ReplicationRow] = [], problem: String? = nil, postmasterPID: Int32? = nil,
        postmasterStartTime: String? = nil, walReceiverStatus: String? = nil, upstream: String? = nil,
        slots: [ReplicationSlotRow] = []
    ) {
        self.postmasterPID = postmasterPID
        self.postmasterStartTime = postmasterStartTime
        self.walReceiverStatus = walReceiverStatus
        self.upstream = upstream
        self.slots = slots
        self.process = process
        self.inRecovery = inRecovery
        self.timeline = timeline
        self.currentLSN = currentLSN
        self.receiveLSN = receiveLSN
        self.replayLSN = replayLSN
        self.streaming = streaming
        self.systemIdentifier = systemIdentifier
        self.serverVersion = serverVersion
        self.pendingRestart = pendingRestart
        self.replication = replication
        self.problem = problem
    }

    /// The position a replica would have if promoted now, or the primary's write position.
    public var walPosition: LSN? {
        if inRecovery == true {
            return [receiveLSN, replayLSN].compactMap { $0 }.max()
        }
        return currentLSN
    }
}

/// One row of `pg_stat_replication` on a primary.
public struct ReplicationRow: Hashable, Sendable, Codable {
    public var applicationName: String
    public var clientAddress: String?
    public var state: String
    public var syncState: String
    public var sentLSN: LSN?
    public var writeLSN: LSN?
    public var flushLSN: LSN?
    public var replayLSN: LSN?
    /// `usename` (the role the standby connected as) and `sync_priority`, as Patroni shows them.
    public var userName: String?
    public var syncPriority: Int?

    public init(
        applicationName: String, clientAddress: String? = nil, state: String, syncState: String,
        sentLSN: LSN? = nil, writeLSN: LSN? = nil, flushLSN: LSN? = nil, replayLSN: LSN? = nil,
        userName: String? = nil, syncPriority: Int? = nil
    ) {
        self.userName = userName
        self.syncPriority = syncPriority
        self.applicationName = applicationName
        self.clientAddress = clientAddress
        self.state = state
        self.syncState = syncState
        self.sentLSN = sentLSN
        self.writeLSN = writeLSN
        self.flushLSN = flushLSN
        self.replayLSN = replayLSN
    }
}

/// One row of `pg_replication_slots`.
public struct ReplicationSlotRow: Hashable, Sendable, Codable {
    public var name: String
    /// `physical` or `logical`.
    public var type: String
    public var active: Bool
    public var restartLSN: LSN?

    public init(name: String, type: String, active: Bool, restartLSN: LSN? = nil) {
        self.name = name
        self.type = type
        self.active = active
        self.restartLSN = restartLSN
    }
}

/// One physical replication slot as the server shows it.
public struct PhysicalSlot: Hashable, Sendable {
    public var active: Bool
    /// `restart_lsn`: the oldest WAL the slot holds (nil before its first use).
    public var restartLSN: LSN?

    public init(active: Bool, restartLSN: LSN? = nil) {
        self.active = active
        self.restartLSN = restartLSN
    }
}
