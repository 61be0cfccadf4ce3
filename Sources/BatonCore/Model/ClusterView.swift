/// One consistent snapshot of everything under `/<namespace>/<scope>/`.
public struct ClusterView: Hashable, Sendable {
    /// The store revision the snapshot was read at; watches resume after it.
    public var revision: Int64
    /// The `initialize` key: the system identifier, `""` while bootstrapping, nil when absent.
    public var initialize: String?
    /// The modification revision of the `initialize` key, for `updateInitialize(expected:)`.
    public var initializeRevision: Int64?
    public var config: Versioned<DynamicConfig>?
    public var leader: LeaderLock?
    public var members: [Member]
    public var failover: Versioned<FailoverRequest>?
    public var sync: Versioned<SyncState>?
    public var history: [HistoryEntry]
    public var status: LeaderStatus?
    public var failsafe: [String: String]?
    /// Keys that could not be decoded, each with what was wrong; never fatal.
    public var problems: [String]
    /// The modification revision of a `config` key that is not a JSON object (so `config` is
    /// nil although the key exists): the HA loop keeps the last valid configuration under this
    /// revision, and a `PATCH`/`PUT /config` replaces the key with a compare-and-swap on it.
    public var unreadableConfigRevision: Int64?
    /// What was wrong with that key (also in `problems`).
    public var unreadableConfigProblem: String?
    /// The modification revision of a `sync` key that could not be read (so `sync` is nil
    /// although the key exists): nobody races on it, and the leader replaces it.
    public var unreadableSyncRevision: Int64?
    /// The poolers (`baton pooler`) registered under `poolers/`, by name.
    public var poolers: [PoolerRecord] = []

    public init(
        revision: Int64 = 0, initialize: String? = nil, initializeRevision: Int64? = nil,
        config: Versioned<DynamicConfig>? = nil,
        leader: LeaderLock? = nil, members: [Member] = [], failover: Versioned<FailoverRequest>? = nil,
        sync: Versioned<SyncState>? = nil, history: [HistoryEntry] = [], status: LeaderStatus? = nil,
        failsafe: [String: String]? = nil, problems: [String] = [], unreadableConfigRevision: Int64? = nil
    ) {
        self.revision = revision
        self.initialize = initialize
        self.initializeRevision = initializeRevision
        self.config = config
        self.leader = leader
        self.members = members
        self.failover = failover
        self.sync = sync
        self.history = history
        self.status = status
        self.failsafe = failsafe
        self.problems = problems
        self.unreadableConfigRevision = unreadableConfigRevision
    }

    public func member(named name: String) -> Member? { members.first { $0.name == name } }

    public var leaderMember: Member? { leader.flatMap { member(named: $0.member) } }

    public var dynamicConfig: DynamicConfig { config?.value ?? DynamicConfig() }
}
