/// A value read from the store together with the revision that last modified it, which is what a
/// compare-and-swap against it must name.
public struct Versioned<Value: Sendable>: Sendable {
    public var value: Value
    public var modRevision: Int64

    public init(_ value: Value, modRevision: Int64) {
        self.value = value
        self.modRevision = modRevision
    }
}

extension Versioned: Equatable where Value: Equatable {}
extension Versioned: Hashable where Value: Hashable {}

/// An opaque store session (an etcd lease): the leader key and the member key live and die with it.
public struct SessionID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int64
    public init(rawValue: Int64) { self.rawValue = rawValue }
    public var description: String { String(rawValue, radix: 16) }
}

/// The `leader` key: who holds it, on which session, at which revision.
public struct LeaderLock: Hashable, Sendable {
    public var member: String
    public var session: SessionID?
    public var modRevision: Int64

    public init(member: String, session: SessionID?, modRevision: Int64) {
        self.member = member
        self.session = session
        self.modRevision = modRevision
    }
}

/// The `failover` key: a requested switchover (with `leader`) or failover (without), possibly scheduled.
public struct FailoverRequest: Hashable, Sendable, Codable {
    public var leader: String?
    public var member: String?
    /// ISO 8601 wall-clock time, as Patroni writes it; only ever compared by the leader that executes it.
    public var scheduled_at: String?

    public init(leader: String? = nil, member: String? = nil, scheduledAt: String? = nil) {
        self.leader = leader
        self.member = member
        self.scheduled_at = scheduledAt
    }
}

/// The `sync` key: which members are synchronous standbys of which leader.
public struct SyncState: Hashable, Sendable, Codable {
    public var leader: String?
    /// Comma-separated member names, as Patroni writes it.
    public var sync_standby: String?
    /// Patroni 4's `quorum`: how many of the standbys must acknowledge in quorum mode; 0 outside
    /// it (Baton writes 0; a key without it reads as 0).
    public var quorum: Int

    public init(leader: String?, syncStandbys: [String], quorum: Int = 0) {
        self.leader = leader
        self.sync_standby = syncStandbys.isEmpty ? nil : syncStandbys.sorted().joined(separator: ",")
        self.quorum = quorum
    }

    enum CodingKeys: String, CodingKey {
        case leader, sync_standby, quorum
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        leader = try container.decodeIfPresent(String.self, forKey: .leader)
        sync_standby = try container.decodeIfPresent(String.self, forKey: .sync_standby)
        // Patroni reads a quorum written as text ("1") as a number. Anything else that is not a
        // whole number from 0 up is kept as -1: a quorum no leader writes, which the race reads
        // as "every voter must answer" and a leader replaces.
        if let value = try? container.decodeIfPresent(Int.self, forKey: .quorum) {
            quorum = value
        } else if let text = try? container.decodeIfPresent(String.self, forKey: .quorum) {
            quorum = Int(text.trimmingWhitespace()) ?? -1
        } else if container.contains(.quorum), (try? container.decodeNil(forKey: .quorum)) != true {
            quorum = -1
        } else {
            quorum = 0
        }
    }

    public var syncStandbys: [String] {
        (sync_standby ?? "").split(separator: ",").map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty }
    }

    public func isSynchronous(_ member: String) -> Bool { syncStandbys.contains(member) }
}

/// One row of the `history` key: `[timeline, lsn, reason, timestamp, new_leader]`.
public struct HistoryEntry: Hashable, Sendable, Codable {
    public var timeline: Int
    public var lsn: LSN
    public var reason: String
    public var timestamp: String?
    public var newLeader: String?

    public init(timeline: Int, lsn: LSN, reason: String, timestamp: String? = nil, newLeader: String? = nil) {
        self.timeline = timeline
        self.lsn = lsn
        self.reason = reason
        self.timestamp = timestamp
        self.newLeader = newLeader
    }

    public init(from decoder: any Decoder) throws {
        var container = try decoder.unkeyedContainer()
        self.timeline = try container.decode(Int.self)
        self.lsn = try container.decode(LSN.self)
        self.reason = try container.decode(String.self)
        self.timestamp = container.isAtEnd ? nil : try container.decodeIfPresent(String.self)
        self.newLeader = container.isAtEnd ? nil : try container.decodeIfPresent(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.unkeyedContainer()
        try container.encode(timeline)
        try container.encode(lsn)
        try container.encode(reason)
        if let timestamp { try container.encode(timestamp) }
        if let newLeader {
            if timestamp == nil { try container.encodeNil() }
            try container.encode(newLeader)
        }
    }
}

/// The `status` key the leader writes each cycle: its optime is what replicas measure lag against.
public struct LeaderStatus: Hashable, Sendable, Codable {
    public var optime: LSN
    public var slots: [String: LSN]?
    /// Patroni 4: the member slots the leader keeps, so that a new leader keeps them too (for
    /// `member_slots_ttl` from when it reads them).
    public var retainSlots: [String]?

    enum CodingKeys: String, CodingKey {
        case optime, slots
        case retainSlots = "retain_slots"
    }

    public init(optime: LSN, slots: [String: LSN]? = nil, retainSlots: [String]? = nil) {
        self.optime = optime
        self.slots = slots
        self.retainSlots = retainSlots
    }

    /// The optime must be readable; `slots` and `retain_slots` of another shape (another tool's,
    /// a hostile write) are read as absent rather than making the whole key unreadable.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        optime = try container.decode(LSN.self, forKey: .optime)
        // Entry by entry: one value of another shape does not hide the others (replicas
        // advance their copies of permanent slots to these positions).
        if let raw = try? container.decodeIfPresent([String: JSONValue].self, forKey: .slots) {
            slots = raw.compactMapValues { value in
                guard let number = value.doubleValue, number >= 0, number < 1.8e19, number.rounded() == number else {
                    return nil
                }
                return LSN(rawValue: UInt64(number))
            }
        } else {
            slots = nil
        }
        retainSlots = try? container.decodeIfPresent([String].self, forKey: .retainSlots)
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }
}
