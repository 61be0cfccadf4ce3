/// `GET /cluster` in Patroni's layout: the one declaration of the document, written by the REST
/// API and read by BatonClient's REST topology source (and anything else that reads an agent's
/// or a Patroni member's `/cluster`). Keys are Patroni's; optional fields are left out when
/// absent; unknown keys in a document read from elsewhere are ignored.
public struct ClusterDocument: Codable, Hashable, Sendable {
    public var scope: String?
    public var members: [Member]
    public var pause: Bool?
    /// Baton's addition (Patroni has no such field): the `config` key is invalid and the member
    /// runs with the last valid configuration.
    public var configProblems: [String]?
    public var scheduledSwitchover: ScheduledSwitchover?
    /// Baton's addition: the poolers registered in etcd (`baton pooler`) and what they do now;
    /// left out when none is.
    public var poolers: [PoolerRecord]?

    enum CodingKeys: String, CodingKey {
        case scope, members, pause, poolers
        case configProblems = "config_problems"
        case scheduledSwitchover = "scheduled_switchover"
    }

    public init(
        scope: String?, members: [Member], pause: Bool? = nil, configProblems: [String]? = nil,
        scheduledSwitchover: ScheduledSwitchover? = nil, poolers: [PoolerRecord]? = nil
    ) {
        self.scope = scope
        self.members = members
        self.pause = pause
        self.configProblems = configProblems
        self.scheduledSwitchover = scheduledSwitchover
        self.poolers = poolers
    }

    public struct Member: Codable, Hashable, Sendable {
        public var name: String
        /// `leader`, `standby_leader`, `sync_standby`, `quorum_standby` or `replica`.
        public var role: String?
        public var state: String?
        public var apiURL: String?
        public var host: String?
        public var port: Int?
        public var timeline: Int?
        public var tags: Tags?
        public var pendingRestart: Bool?
        public var pendingRestartReason: [String: PendingChange]?
        /// Bytes behind the leader (absent for the leader itself), and the position it is at
        /// (`"unknown"` when the member did not publish one, as Patroni writes it).
        public var lag: Lag?
        public var lsn: String?
        /// The same for what a replica received and what it replayed (Patroni 4).
        public var receiveLag: Lag?
        public var receiveLSN: String?
        public var replayLag: Lag?
        public var replayLSN: String?

        enum CodingKeys: String, CodingKey {
            case name, role, state, host, port, timeline, tags, lag, lsn
            case apiURL = "api_url"
            case pendingRestart = "pending_restart"
            case pendingRestartReason = "pending_restart_reason"
            case receiveLag = "receive_lag"
            case receiveLSN = "receive_lsn"
            case replayLag = "replay_lag"
            case replayLSN = "replay_lsn"
        }

        public init(name: String, role: String? = nil, state: String? = nil, apiURL: String? = nil) {
            self.name = name
            self.role = role
            self.state = state
            self.apiURL = apiURL
        }
    }

    /// A member's lag: a number of bytes, or `"unknown"` (Patroni writes that string when it
    /// cannot tell). A reader takes anything that is not a whole number of bytes as unknown.
    public enum Lag: Codable, Hashable, Sendable {
        case bytes(UInt64)
        case unknown

        public init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let number = try? container.decode(Double.self), number >= 0, number < 0x1p64 {
                self = .bytes(UInt64(number))
            } else {
                self = .unknown
            }
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .bytes(let bytes): try container.encode(bytes)
            case .unknown: try container.encode("unknown")
            }
        }
    }

    public struct ScheduledSwitchover: Codable, Hashable, Sendable {
        public var at: String
        public var from: String?
        public var to: String?

        public init(at: String, from: String? = nil, to: String? = nil) {
            self.at = at
            self.from = from
            self.to = to
        }
    }
}
