import BatonCore

/// A snapshot of what the HA loop knows, for the REST API and metrics. Cheap to copy.
public struct HAStatus: Sendable {
    public var member: String
    public var postgres: PostgresStatus
    /// The last cluster view read from the store, and when (monotonic).
    public var cluster: ClusterView?
    public var clusterReadAt: MonotonicInstant?
    /// The reason of the last decision, and the actions it took.
    public var lastReason: Reason?
    public var lastActions: [Action]
    /// When the last cycle finished (monotonic), and how long it took.
    public var lastCycleAt: MonotonicInstant?
    public var lastCycleDuration: Duration?
    /// Whether this agent holds the leader key on its current session.
    public var holdsLeaderKey: Bool
    /// The self-fencing deadline of the current lease.
    public var leaseDeadline: MonotonicInstant?
    public var config: DynamicConfig
    /// Why the `config` key in the store is not in force (empty when it is): it failed validation
    /// and the last valid configuration is used instead.
    public var configProblems: [String] = []
    /// The member record as last published.
    public var published: Member?
    /// Number of promotions this agent performed.
    public var promotions: Int
    /// Automatic failovers this agent won (promotions without an operator's request).
    public var failovers: Int = 0
    /// How long each HA cycle took.
    public var cycleDurations = Histogram(bounds: Histogram.latencyBounds)
    /// Decisions taken, by `Reason.code`.
    public var decisions: [String: UInt64] = [:]
    /// Grows by one each time the loop publishes a changed snapshot (0: never published by a
    /// loop); equal generations of one loop mean equal snapshots, so readers may cache what they
    /// derive from one.
    public var generation: UInt64 = 0
    /// A restart scheduled for later (`POST /restart` with `schedule`).
    public var scheduledRestart: RestartRequest?

    public init(member: String) {
        self.member = member
        self.postgres = PostgresStatus(process: .stopped)
        self.lastActions = []
        self.holdsLeaderKey = false
        self.config = DynamicConfig()
        self.promotions = 0
    }

    /// The role to report: primary only while holding the key and running as primary.
    public var role: Member.Role {
        switch postgres.process {
        case .uninitialized: return .uninitialized
        case .running, .starting, .unusable:
            if postgres.inRecovery == false { return holdsLeaderKey ? .primary : .demoted }
            // Unknown is not "replica": a postgres that last ran as primary may still accept writes.
            if postgres.inRecovery == nil, postgres.process != .starting, published?.role == .primary {
                return holdsLeaderKey ? .primary : .demoted
            }
            return holdsLeaderKey ? .standbyLeader : .replica
        case .stopped, .crashed:
            return published?.role ?? .replica
        }
    }
}
