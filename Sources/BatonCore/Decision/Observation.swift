/// Everything the decision core sees in one HA cycle. Built by the I/O shell; pure data.
public struct Observation: Hashable, Sendable {
    /// This agent's member name.
    public var me: String
    /// Monotonic time of the observation.
    public var now: MonotonicInstant
    /// Wall-clock seconds since 1970, used only to compare a scheduled switchover's `scheduled_at`
    /// (a calendar time by definition); never for a lease or deadline.
    public var wallClockSeconds: Double
    /// The cluster as read from the store, or nil when the store could not be reached.
    public var cluster: ClusterView?
    /// Why the store could not be read, when `cluster` is nil.
    public var storeProblem: String?
    /// The local PostgreSQL.
    public var postgres: PostgresStatus
    /// The member the local standby is configured to stream from, when known.
    public var following: String?
    /// The `synchronous_standby_names` this agent last applied, when known.
    public var appliedSynchronousStandbys: SynchronousSetting?
    /// The WAL position up to which every commit was made under an earlier setting, read once
    /// PostgreSQL had taken the last one in: a standby newly listed counts as synchronous only
    /// once it has flushed this far. Nil when unknown (no standby newly counts).
    public var synchronousAppliedAt: LSN?
    /// This agent's session and self-fencing deadline.
    public var lease: LeaseState
    /// Configuration in force: the cluster's dynamic config merged with local overrides.
    public var config: DynamicConfig
    /// This member's own tags.
    public var tags: Tags
    /// Peers' own reports, fetched from their REST APIs when racing for the lock; nil when not fetched.
    public var peers: [PeerStatus]?
    /// Failsafe mode: whether every member reachable over REST confirmed this node as primary
    /// during the current store outage; nil when not asked.
    public var failsafeConfirmed: Bool?
    /// What the agent remembers between cycles.
    public var memory: HAMemory
    /// False when the fence guard process is configured but not running (and could not be
    /// restarted): the member then neither leads nor races. True when it runs or was turned off.
    public var fenceGuardRunning: Bool
    /// A leader this member confirmed over REST in failsafe mode within the last ttl: it may
    /// still be serving as primary on the strength of that confirmation, so this member does not race.
    public var confirmedFailsafeLeader: String?
    /// False for ttl after a promotion was refused because `watchdog.mode: required` could not be
    /// met: the member stays out of the race, so that another one can win it.
    public var watchdogUsable: Bool
    /// What this agent last saw its postgres run as (primary or replica); nil when it never saw it
    /// run or the data directory was replaced since. A blind cycle (recovery state unknown) keeps
    /// the role last seen: unknown is not "replica".
    public var lastRunningRole: Member.Role?
    /// Starts of postgres that failed in a row since it last ran, and when the last one failed: the
    /// next attempt waits (loop_wait, doubling up to a minute) instead of following the failed
    /// postmaster's exit at once.
    public var failedStarts: Int
    public var lastFailedStartAt: MonotonicInstant?
    /// Whether the last rejoin (pg_rewind onto a leader) this agent ran failed or was refused (a
    /// source still in recovery, a lost connection): a rejoin for a standby stuck on an older
    /// timeline is then not taken as done, and is tried again after the grace.
    public var lastRejoinFailed: Bool
    /// True when the cluster exists but its config key is missing or invalid and this agent has
    /// not seen a valid one: whether it is a standby cluster is unknown, so nobody promotes.
    public var configUnknown = false
    /// Whether a replica method can make this member with no server to copy from (a command
    /// with `no_leader`, e.g. a restore from a backup).
    public var canCreateReplicaWithoutServer = false
    /// The methods defined in the agent's file (listed in create_replica_methods or not) that need
    /// no server: those `standby_cluster.create_replica_methods` may name.
    public var definedMethodsWithoutServer: Set<String> = []

    public init(
        me: String, now: MonotonicInstant, wallClockSeconds: Double = 0, cluster: ClusterView?,
        storeProblem: String? = nil, postgres: PostgresStatus, following: String? = nil,
        appliedSynchronousStandbys: SynchronousSetting? = nil, synchronousAppliedAt: LSN? = nil, lease: LeaseState,
        config: DynamicConfig,
        tags: Tags = Tags(), peers: [PeerStatus]? = nil, failsafeConfirmed: Bool? = nil,
        memory: HAMemory = HAMemory(), fenceGuardRunning: Bool = true, confirmedFailsafeLeader: String? = nil,
        watchdogUsable: Bool = true, lastRunningRole: Member.Role? = nil, failedStarts: Int = 0,
        lastFailedStartAt: MonotonicInstant? = nil, lastRejoinFailed: Bool = false
    ) {
        self.lastRejoinFailed = lastRejoinFailed
        self.failedStarts = failedStarts
        self.lastFailedStartAt = lastFailedStartAt
        self.lastRunningRole = lastRunningRole
        self.watchdogUsable = watchdogUsable
        self.confirmedFailsafeLeader = confirmedFailsafeLeader
        self.fenceGuardRunning = fenceGuardRunning
        self.me = me
        self.now = now
        self.wallClockSeconds = wallClockSeconds
        self.cluster = cluster
        self.storeProblem = storeProblem
        self.postgres = postgres
        self.following = following
        self.appliedSynchronousStandbys = appliedSynchronousStandbys
        self.synchronousAppliedAt = synchronousAppliedAt
        self.lease = lease
        self.config = config
        self.tags = tags
        self.peers = peers
        self.failsafeConfirmed = failsafeConfirmed
        self.memory = memory
    }
}

/// The agent's store session and the deadline by which, unrenewed, it must have stopped acting as
/// primary: the send time of the last successful keepalive + ttl − fencing margin.
public struct LeaseState: Hashable, Sendable {
    public var session: SessionID?
    public var deadline: MonotonicInstant?
    /// The ttl the session was asked for; a session granted under another ttl than the one in
    /// force is replaced (a dynamic `ttl` change applies within one loop).
    public var ttl: Duration?

    public init(session: SessionID? = nil, deadline: MonotonicInstant? = nil, ttl: Duration? = nil) {
        self.session = session
        self.deadline = deadline
        self.ttl = ttl
    }

    /// True when the lease may still be relied on at `now`.
    public func isValid(at now: MonotonicInstant) -> Bool {
        guard session != nil, let deadline else { return false }
        return now < deadline
    }
}

/// A peer's answer to `GET /patroni` (or its failure), as used to veto a race.
public struct PeerStatus: Hashable, Sendable {
    public var name: String
    /// False when the peer's API could not be reached.
    public var reachable: Bool
    /// Whether the peer's postgres may accept writes: it reports itself primary, demoted but
    /// still running, or running in a recovery state it cannot tell. Unknown is not "replica".
    public var runningAsPrimary: Bool
    public var walPosition: LSN?
    public var timeline: Int?
    public var tags: Tags

    public init(
        name: String, reachable: Bool, runningAsPrimary: Bool = false, walPosition: LSN? = nil,
        timeline: Int? = nil, tags: Tags = Tags()
    ) {
        self.name = name
        self.reachable = reachable
        self.runningAsPrimary = runningAsPrimary
        self.walPosition = walPosition
        self.timeline = timeline
        self.tags = tags
    }
}

/// State the decision core carries from one cycle to the next (returned in each decision).
public struct PoolerPauseWait: Hashable, Sendable {
    public var request: Int64
    public var since: MonotonicInstant

    public init(request: Int64, since: MonotonicInstant) {
        self.request = request
        self.since = since
    }
}

public struct HAMemory: Hashable, Sendable {
    /// When the leader's postgres was found down and an in-place restart began.
    public var crashRecoveryStartedAt: MonotonicInstant?
    /// Since when this standby, following the leader, has been on an older timeline than the
    /// leader's without streaming (reset by any cycle that sees it streaming or caught up).
    public var stuckOnOlderTimelineSince: MonotonicInstant?
    /// The leader and timeline this standby last rewound onto for being stuck, so that a standby
    /// still stuck afterwards (for another reason) is not rewound again and again.
    public var rewoundWhenStuckOnto: String?
    /// Since when postgres has run without the agent being able to tell whether it is a primary
    /// or a standby (the status query failed); reset by any cycle that knows.
    public var recoveryUnknownSince: MonotonicInstant?
    /// Set when postgres was started read-only from a data directory that may have run as a primary
    /// since it last followed a leader: it may hold WAL past a new leader's fork point, so it goes
    /// through pg_rewind before it follows anyone. Cleared once it runs as a standby of the leader
    /// (which it can reach only through a rewind while this is set).
    public var mayHaveDiverged: Bool
    /// The switchover (its failover key's revision) this leader waits for the poolers to pause
    /// for, and since when.
    public var poolerPauseWait: PoolerPauseWait?

    public init(
        crashRecoveryStartedAt: MonotonicInstant? = nil, stuckOnOlderTimelineSince: MonotonicInstant? = nil,
        rewoundWhenStuckOnto: String? = nil, recoveryUnknownSince: MonotonicInstant? = nil,
        mayHaveDiverged: Bool = false
    ) {
        self.mayHaveDiverged = mayHaveDiverged
        self.crashRecoveryStartedAt = crashRecoveryStartedAt
        self.stuckOnOlderTimelineSince = stuckOnOlderTimelineSince
        self.rewoundWhenStuckOnto = rewoundWhenStuckOnto
        self.recoveryUnknownSince = recoveryUnknownSince
    }
}
