/// `GET /patroni` (and every health check's body): one member's status in Patroni's field names.
/// Declared once: the REST API writes it, the agent's peer probe and the `baton` CLI read it
/// (from Baton and from Patroni members).
///
/// Reading is per field and tolerant: a field of the wrong type or out of range (a hostile or
/// newer peer) reads as absent, never as a default that means something (unknown is not
/// "replica", not "not paused"); the document as a whole fails only when it is not a JSON object.
public struct NodeStatusDocument: Codable, Hashable, Sendable {
    public var state: String?
    public var role: String?
    public var patroni: Patroni?
    public var serverVersion: Int?
    public var postmasterStartTime: String?
    public var timeline: Int?
    public var databaseSystemIdentifier: String?
    public var xlog: Xlog?
    public var replicationState: String?
    public var replication: [Replication]?
    public var clusterUnlocked: Bool?
    public var pause: Bool?
    /// Wall-clock second when the member last read the store.
    public var dcsLastSeen: Double?
    public var tags: Tags?
    public var pendingRestart: Bool?
    public var pendingRestartReason: [String: PendingChange]?
    public var syncStandby: Bool?
    /// Quorum commit: this replica is one of the `sync` key's voters (Patroni 4's `quorum_standby`).
    public var quorumStandby: Bool?
    public var scheduledRestart: ScheduledRestart?

    enum CodingKeys: String, CodingKey {
        case state, role, patroni, timeline, xlog, replication, pause, tags
        case serverVersion = "server_version"
        case postmasterStartTime = "postmaster_start_time"
        case databaseSystemIdentifier = "database_system_identifier"
        case replicationState = "replication_state"
        case clusterUnlocked = "cluster_unlocked"
        case dcsLastSeen = "dcs_last_seen"
        case pendingRestart = "pending_restart"
        case pendingRestartReason = "pending_restart_reason"
        case syncStandby = "sync_standby"
        case quorumStandby = "quorum_standby"
        case scheduledRestart = "scheduled_restart"
    }

    public init() {}

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        state = try? c.decodeIfPresent(String.self, forKey: .state)
        role = try? c.decodeIfPresent(String.self, forKey: .role)
        patroni = try? c.decodeIfPresent(Patroni.self, forKey: .patroni)
        serverVersion = try? c.decodeIfPresent(Int.self, forKey: .serverVersion)
        postmasterStartTime = try? c.decodeIfPresent(String.self, forKey: .postmasterStartTime)
        timeline = try? c.decodeIfPresent(Int.self, forKey: .timeline)
        databaseSystemIdentifier = try? c.decodeIfPresent(String.self, forKey: .databaseSystemIdentifier)
        xlog = try? c.decodeIfPresent(Xlog.self, forKey: .xlog)
        replicationState = try? c.decodeIfPresent(String.self, forKey: .replicationState)
        replication = try? c.decodeIfPresent([Replication].self, forKey: .replication)
        clusterUnlocked = try? c.decodeIfPresent(Bool.self, forKey: .clusterUnlocked)
        pause = try? c.decodeIfPresent(Bool.self, forKey: .pause)
        dcsLastSeen = (try? c.decodeIfPresent(Double.self, forKey: .dcsLastSeen)).flatMap {
            $0?.isFinite == true ? $0 : nil
        }
        tags = try? c.decodeIfPresent(Tags.self, forKey: .tags)
        pendingRestart = try? c.decodeIfPresent(Bool.self, forKey: .pendingRestart)
        pendingRestartReason = try? c.decodeIfPresent([String: PendingChange].self, forKey: .pendingRestartReason)
        syncStandby = try? c.decodeIfPresent(Bool.self, forKey: .syncStandby)
        quorumStandby = try? c.decodeIfPresent(Bool.self, forKey: .quorumStandby)
        scheduledRestart = try? c.decodeIfPresent(ScheduledRestart.self, forKey: .scheduledRestart)
    }

    public struct Patroni: Codable, Hashable, Sendable {
        public var version: String?
        public var scope: String?
        public var name: String?

        public init(version: String?, scope: String?, name: String?) {
            self.version = version
            self.scope = scope
            self.name = name
        }
    }

    /// WAL positions as byte offsets (Patroni writes numbers). A primary has `location`; a standby
    /// `received_location`, `replayed_location`, `paused` and `replayed_timestamp`.
    public struct Xlog: Codable, Hashable, Sendable {
        public var location: LSNNumber?
        public var receivedLocation: LSNNumber?
        public var replayedLocation: LSNNumber?
        public var paused: Bool?
        /// Encoded as JSON null when absent on a standby (Patroni does the same).
        public var replayedTimestamp: String?
        var standby = false

        enum CodingKeys: String, CodingKey {
            case location, paused
            case receivedLocation = "received_location"
            case replayedLocation = "replayed_location"
            case replayedTimestamp = "replayed_timestamp"
        }

        public static func primary(location: LSN?) -> Xlog {
            Xlog(location: location.map(LSNNumber.init))
        }

        public static func standby(received: LSN?, replayed: LSN?, paused: Bool, replayedTimestamp: String?) -> Xlog {
            Xlog(
                receivedLocation: received.map(LSNNumber.init), replayedLocation: replayed.map(LSNNumber.init),
                paused: paused, replayedTimestamp: replayedTimestamp, standby: true)
        }

        init(
            location: LSNNumber? = nil, receivedLocation: LSNNumber? = nil, replayedLocation: LSNNumber? = nil,
            paused: Bool? = nil, replayedTimestamp: String? = nil, standby: Bool = false
        ) {
            self.location = location
            self.receivedLocation = receivedLocation
            self.replayedLocation = replayedLocation
            self.paused = paused
            self.replayedTimestamp = replayedTimestamp
            self.standby = standby
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            location = try? c.decodeIfPresent(LSNNumber.self, forKey: .location)
            receivedLocation = try? c.decodeIfPresent(LSNNumber.self, forKey: .receivedLocation)
            replayedLocation = try? c.decodeIfPresent(LSNNumber.self, forKey: .replayedLocation)
            paused = try? c.decodeIfPresent(Bool.self, forKey: .paused)
            replayedTimestamp = try? c.decodeIfPresent(String.self, forKey: .replayedTimestamp)
            standby = receivedLocation != nil || replayedLocation != nil || paused != nil
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encodeIfPresent(location, forKey: .location)
            try c.encodeIfPresent(receivedLocation, forKey: .receivedLocation)
            try c.encodeIfPresent(replayedLocation, forKey: .replayedLocation)
            try c.encodeIfPresent(paused, forKey: .paused)
            if standby { try c.encode(replayedTimestamp, forKey: .replayedTimestamp) }
        }
    }

    /// An LSN written as a JSON number of bytes; reading takes only a whole number within UInt64
    /// (a peer's 1e20 or -1 is no position, never a trap).
    public struct LSNNumber: Codable, Hashable, Sendable {
        public var lsn: LSN

        public init(_ lsn: LSN) { self.lsn = lsn }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let whole = try? container.decode(UInt64.self) {
                lsn = LSN(whole)
                return
            }
            let number = try container.decode(Double.self)
            guard number >= 0, number < 0x1p64, let value = UInt64(exactly: number.rounded(.down)) else {
                throw DecodingError.dataCorruptedError(
                    in: container, debugDescription: "\(number) is not a WAL position in bytes")
            }
            lsn = LSN(value)
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(lsn.rawValue)
        }
    }

    /// One row of `pg_stat_replication` (a primary's standbys).
    public struct Replication: Codable, Hashable, Sendable {
        public var applicationName: String
        public var state: String
        public var syncState: String
        public var clientAddr: String?
        public var sentLSN: LSNNumber?
        public var writeLSN: LSNNumber?
        public var flushLSN: LSNNumber?
        public var replayLSN: LSNNumber?
        public var usename: String?
        public var syncPriority: Int?

        enum CodingKeys: String, CodingKey {
            case state, usename
            case syncPriority = "sync_priority"
            case applicationName = "application_name"
            case syncState = "sync_state"
            case clientAddr = "client_addr"
            case sentLSN = "sent_lsn"
            case writeLSN = "write_lsn"
            case flushLSN = "flush_lsn"
            case replayLSN = "replay_lsn"
        }

        public init(applicationName: String, state: String, syncState: String) {
            self.applicationName = applicationName
            self.state = state
            self.syncState = syncState
        }
    }

    public struct ScheduledRestart: Codable, Hashable, Sendable {
        public var schedule: String
        public var role: String?
        public var restartPending: Bool?
        public var postgresVersion: Int?

        enum CodingKeys: String, CodingKey {
            case schedule, role
            case restartPending = "restart_pending"
            case postgresVersion = "postgres_version"
        }

        public init(schedule: String, role: String? = nil, restartPending: Bool? = nil, postgresVersion: Int? = nil) {
            self.schedule = schedule
            self.role = role
            self.restartPending = restartPending
            self.postgresVersion = postgresVersion
        }

        /// Patroni writes `postgres_version` as text (`15.4`): read as a number when it is one.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            schedule = try c.decode(String.self, forKey: .schedule)
            role = try? c.decodeIfPresent(String.self, forKey: .role)
            restartPending = try? c.decodeIfPresent(Bool.self, forKey: .restartPending)
            postgresVersion =
                (try? c.decodeIfPresent(Int.self, forKey: .postgresVersion))
                ?? (try? c.decodeIfPresent(String.self, forKey: .postgresVersion)).flatMap { $0.flatMap { Int($0) } }
        }
    }
}
