/// What one agent publishes about itself under `members/<name>`, in Patroni's JSON layout.
public struct Member: Hashable, Sendable {
    /// Open set of roles; unknown roles written by other tools are kept, not rejected.
    public struct Role: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public static let primary = Role(rawValue: "primary")
        public static let replica = Role(rawValue: "replica")
        public static let standbyLeader = Role(rawValue: "standby_leader")
        public static let demoted = Role(rawValue: "demoted")
        public static let uninitialized = Role(rawValue: "uninitialized")
        public var description: String { rawValue }
    }

    /// Open set of states (`running`, `starting`, `stopped`, `crashed`, `creating replica`, …).
    public struct State: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public static let running = State(rawValue: "running")
        public static let starting = State(rawValue: "starting")
        public static let stopping = State(rawValue: "stopping")
        public static let stopped = State(rawValue: "stopped")
        public static let crashed = State(rawValue: "crashed")
        public static let creatingReplica = State(rawValue: "creating replica")
        public static let initializingNewCluster = State(rawValue: "initializing new cluster")
        public static let restarting = State(rawValue: "restarting")
        public static let rewinding = State(rawValue: "running pg_rewind")
        public var description: String { rawValue }
    }

    /// The member's name: the last path element of its key, not part of the JSON.
    public var name: String
    public var connURL: String
    /// Patroni's `proxy_url` (`postgresql.proxy_address`): where clients reach this member through
    /// a connection pooler or proxy; published, not used by the agent.
    public var proxyURL: String?
    /// A restart scheduled on this member (Patroni's `scheduled_restart`; `patronictl list -e`).
    public var scheduledRestart: NodeStatusDocument.ScheduledRestart?
    /// While this member is being created: how far the copy is (`clone_progress`).
    public var cloneProgress: CloneProgressRecord?
    public var apiURL: String
    public var state: State
    public var role: Role
    public var version: String
    /// Current LSN on a primary; max(receive, replay) on a replica.
    public var xlogLocation: LSN?
    public var receiveLSN: LSN?
    public var replayLSN: LSN?
    /// `streaming` or `in archive recovery` on a replica.
    public var replicationState: String?
    public var timeline: Int?
    public var tags: Tags
    public var pendingRestart: Bool
    /// What needs the restart: parameter → its value in force and the one the files set
    /// (`pending_restart_reason`, Patroni 4).
    public var pendingRestartReason: [String: PendingChange]
    /// Whether this member saw the cluster paused when it wrote its key (`"pause": true`, as
    /// Patroni writes it; patronictl's `pause --wait` and `resume --wait` wait for it).
    public var paused: Bool

    public init(
        name: String, connURL: String = "", apiURL: String = "", state: State = .stopped,
        role: Role = .uninitialized, version: String = BatonCore.version, xlogLocation: LSN? = nil,
        receiveLSN: LSN? = nil, replayLSN: LSN? = nil, replicationState: String? = nil,
        timeline: Int? = nil, tags: Tags = Tags(), pendingRestart: Bool = false, paused: Bool = false,
        pendingRestartReason: [String: PendingChange] = [:]
    ) {
        self.pendingRestartReason = pendingRestartReason
        self.paused = paused
        self.name = name
        self.connURL = connURL
        self.apiURL = apiURL
        self.state = state
        self.role = role
        self.version = version
        self.xlogLocation = xlogLocation
        self.receiveLSN = receiveLSN
        self.replayLSN = replayLSN
        self.replicationState = replicationState
        self.timeline = timeline
        self.tags = tags
        self.pendingRestart = pendingRestart
    }
}

extension Member {
    /// The JSON body of a member key (everything but the name, which is the key).
    public struct Body: Hashable, Sendable, Codable {
        public var conn_url: String?
        public var api_url: String?
        public var state: State?
        public var role: Role?
        public var version: String?
        public var xlog_location: LSN?
        public var receive_lsn: LSN?
        public var replay_lsn: LSN?
        public var replication_state: String?
        public var timeline: Int?
        public var tags: Tags?
        public var pending_restart: Bool?
        public var pending_restart_reason: [String: PendingChange]?
        public var pause: Bool?
        public var proxy_url: String?
        public var scheduled_restart: NodeStatusDocument.ScheduledRestart?
        /// Baton's own: how far the copy of a member being created is (Patroni ignores the key).
        public var clone_progress: CloneProgressRecord?
    }

    /// A replica being created: kB copied so far, the total when the method knows it, the rate
    /// since it began, and the method.
    public struct CloneProgressRecord: Hashable, Sendable, Codable {
        public var done_kb: Int64
        public var total_kb: Int64?
        public var rate_kb_s: Int64
        public var method: String?

        public init(doneKB: Int64, totalKB: Int64?, rateKBs: Int64, method: String?) {
            done_kb = doneKB
            total_kb = totalKB
            rate_kb_s = rateKBs
            self.method = method
        }

        /// `45% of 266 MB, 120 MB at 30 MB/s` (or without the total when unknown).
        public var summary: String {
            let done = "\(done_kb / 1024) MB"
            let rate = "\(rate_kb_s / 1024) MB/s"
            guard let total = total_kb, total > 0 else { return "\(done) at \(rate)" }
            return "\(min(100, done_kb * 100 / total))% of \(total / 1024) MB, \(done) at \(rate)"
        }
    }

    public var body: Body {
        Body(
            conn_url: connURL, api_url: apiURL, state: state, role: role, version: version,
            xlog_location: xlogLocation, receive_lsn: receiveLSN, replay_lsn: replayLSN,
            replication_state: replicationState, timeline: timeline,
            tags: tags.isEmpty ? nil : tags, pending_restart: pendingRestart ? true : nil,
            pending_restart_reason: pendingRestartReason.isEmpty ? nil : pendingRestartReason,
            pause: paused ? true : nil, proxy_url: proxyURL, scheduled_restart: scheduledRestart,
            clone_progress: cloneProgress)
    }

    public init(name: String, body: Body) {
        self.init(
            name: name, connURL: body.conn_url ?? "", apiURL: body.api_url ?? "",
            state: body.state ?? .stopped, role: body.role ?? .uninitialized,
            version: body.version ?? "", xlogLocation: body.xlog_location,
            receiveLSN: body.receive_lsn, replayLSN: body.replay_lsn,
            replicationState: body.replication_state, timeline: body.timeline,
            tags: body.tags ?? Tags(), pendingRestart: body.pending_restart ?? false, paused: body.pause ?? false,
            pendingRestartReason: body.pending_restart_reason ?? [:])
        self.proxyURL = body.proxy_url
        self.scheduledRestart = body.scheduled_restart
        self.cloneProgress = body.clone_progress
    }
}

/// A member's tags (`nofailover`, `failover_priority`, `noloadbalance`, `clonefrom`, `nosync`, and
/// any user-defined key). Kept as JSON so that unknown tags survive a round trip.
public struct Tags: Hashable, Sendable, Codable {
    public var values: [String: JSONValue]

    public init(_ values: [String: JSONValue] = [:]) { self.values = values }

    public init(from decoder: any Decoder) throws {
        self.values = try [String: JSONValue](from: decoder)
    }

    public func encode(to encoder: any Encoder) throws { try values.encode(to: encoder) }

    public var isEmpty: Bool { values.isEmpty }

    public subscript(key: String) -> JSONValue? {
        get { values[key] }
        set { values[key] = newValue }
    }

    /// `nofailover: true`, or a `failover_priority` of 0 or less, keeps a member out of every race.
    /// As Patroni reads it: the boolean tag wins when it is given; else a priority of 0 or less.
    public var noFailover: Bool { boolTag("nofailover", priority: "failover_priority") }

    /// Higher wins among equally advanced candidates; default 1 (0 with nofailover).
    public var failoverPriority: Int { priorityTag("nofailover", priority: "failover_priority") }

    /// Patroni 4.1's `sync_priority`: higher is preferred as a synchronous standby; 0 (or nosync)
    /// never is one.
    public var syncPriority: Int { priorityTag("nosync", priority: "sync_priority") }

    func boolTag(_ name: String, priority: String) -> Bool {
        if let flag = values[name], flag != .null { return flag.boolValue ?? true }
        guard let value = values[priority]?.intValue else { return false }
        return value <= 0
    }

    func priorityTag(_ name: String, priority: String) -> Int {
        if values[name]?.boolValue == true { return 0 }
        return values[priority]?.intValue ?? 1
    }
    public var noLoadBalance: Bool { values["noloadbalance"]?.boolValue == true }
    public var noSync: Bool { boolTag("nosync", priority: "sync_priority") }
    public var cloneFrom: Bool { values["clonefrom"]?.boolValue == true }
    /// `nostream`: the member does not stream from the primary, so no slot is kept for it.
    public var noStream: Bool { values["nostream"]?.boolValue == true }
    /// `replicatefrom`: the member this one streams from instead of the leader (cascading).
    public var replicateFrom: String? {
        guard case .string(let name)? = values["replicatefrom"] else { return nil }
        let trimmed = name.trimmingWhitespace()
        return trimmed.isEmpty ? nil : trimmed
    }
}

/// A parameter change that waits for a restart: the value in force and the one the files set.
public struct PendingChange: Hashable, Sendable, Codable {
    public var oldValue: String
    public var newValue: String

    enum CodingKeys: String, CodingKey {
        case oldValue = "old_value"
        case newValue = "new_value"
    }

    public init(oldValue: String, newValue: String) {
        self.oldValue = oldValue
        self.newValue = newValue
    }
}

extension Member.Body {
    enum CodingKeys: String, CodingKey {
        case conn_url, api_url, state, role, version, xlog_location, receive_lsn, replay_lsn, replication_state
        case timeline, tags, pending_restart, pending_restart_reason, pause, proxy_url, scheduled_restart
        case clone_progress
    }

    /// As synthesized, except the fields only shown (`proxy_url`, `scheduled_restart`): one of an
    /// unexpected shape (Patroni writes `postgres_version` as text; a hostile key anything) is
    /// left out instead of hiding the whole member.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            conn_url: try c.decodeIfPresent(String.self, forKey: .conn_url),
            api_url: try c.decodeIfPresent(String.self, forKey: .api_url),
            state: try c.decodeIfPresent(Member.State.self, forKey: .state),
            role: try c.decodeIfPresent(Member.Role.self, forKey: .role),
            version: try c.decodeIfPresent(String.self, forKey: .version),
            xlog_location: try c.decodeIfPresent(LSN.self, forKey: .xlog_location),
            receive_lsn: try c.decodeIfPresent(LSN.self, forKey: .receive_lsn),
            replay_lsn: try c.decodeIfPresent(LSN.self, forKey: .replay_lsn),
            replication_state: try c.decodeIfPresent(String.self, forKey: .replication_state),
            timeline: try c.decodeIfPresent(Int.self, forKey: .timeline),
            tags: try c.decodeIfPresent(Tags.self, forKey: .tags),
            pending_restart: try c.decodeIfPresent(Bool.self, forKey: .pending_restart),
            pending_restart_reason: try c.decodeIfPresent(
                [String: PendingChange].self, forKey: .pending_restart_reason),
            pause: try c.decodeIfPresent(Bool.self, forKey: .pause),
            proxy_url: (try? c.decodeIfPresent(String.self, forKey: .proxy_url)) ?? nil,
            scheduled_restart: (try? c.decodeIfPresent(
                NodeStatusDocument.ScheduledRestart.self, forKey: .scheduled_restart)) ?? nil,
            clone_progress: (try? c.decodeIfPresent(Member.CloneProgressRecord.self, forKey: .clone_progress)) ?? nil)
    }
}
