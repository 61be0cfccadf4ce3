import BatonCore
import BatonHA

/// The health-check endpoints and the rule each one answers 200 for (else 503).
public enum HealthCheck: String, CaseIterable, Sendable {
    case primary, leader, standbyLeader, replica, readOnly, synchronous, asynchronous, health, liveness, readiness
    case readOnlySync, quorum, readOnlyQuorum

    /// The paths answering this check.
    public var paths: [String] {
        switch self {
        case .primary: return ["/", "/primary", "/read-write", "/master"]
        case .leader: return ["/leader"]
        case .standbyLeader: return ["/standby-leader"]
        case .replica: return ["/replica"]
        case .readOnly: return ["/read-only"]
        case .synchronous: return ["/synchronous", "/sync"]
        case .asynchronous: return ["/asynchronous", "/async"]
        case .health: return ["/health"]
        case .liveness: return ["/liveness"]
        case .readiness: return ["/readiness"]
        case .readOnlySync: return ["/read-only-sync", "/read-only-synchronous"]
        case .quorum: return ["/quorum"]
        case .readOnlyQuorum: return ["/read-only-quorum"]
        }
    }

    /// Whether this node passes the check.
    ///
    /// - Parameter now: the current instant on the clock the snapshot was stamped with.
    public func passes(_ status: HAStatus, query: HealthQuery, now: MonotonicInstant) -> Bool {
        let node = NodeFacts(status)
        switch self {
        case .primary: return node.isRunningPrimary
        case .leader: return node.isRunning && status.holdsLeaderKey
        case .standbyLeader: return node.isStandbyLeader
        case .replica: return node.passesReplicaRule(query)
        case .readOnly: return node.isRunningPrimary || node.isStandbyLeader || node.passesReplicaRule(query)
        case .synchronous: return node.passesReplicaRule(query) && node.isSynchronous
        case .asynchronous: return node.passesReplicaRule(query) && !node.isSynchronous && !node.isQuorumStandby
        case .health: return node.isRunning
        case .liveness:
            // Patroni's thresholds: a primary is unhealthy after one ttl without a cycle (its lease
            // would be gone); a replica gets two. Paused (maintenance), a stuck loop is no reason
            // for an orchestrator to restart the agent, as in Patroni.
            if status.config.pause { return true }
            guard let last = status.lastCycleAt else { return false }
            let threshold = node.isRunningPrimary || node.isStandbyLeader ? status.config.ttl : status.config.ttl * 2
            return now - last <= threshold
        case .readiness:
            if node.isRunning && status.holdsLeaderKey { return true }
            // Patroni's `mode`: the lag of what was replayed (apply, the default) or received (write).
            let position = query.mode == .write ? status.postgres.receiveLSN : status.postgres.replayLSN
            guard node.isReplica, node.isStreaming, let position else { return false }
            let lag = node.clusterOptime.map { $0.bytesAhead(of: position) } ?? 0
            return lag <= (query.lag ?? status.config.maximumLagOnFailover)
        case .readOnlySync:
            return node.isRunningPrimary || node.isStandbyLeader
                || (node.passesReplicaRule(query) && node.isSynchronous)
        case .quorum:
            return node.passesReplicaRule(query) && node.isQuorumStandby
        case .readOnlyQuorum:
            return node.isRunningPrimary || node.isStandbyLeader
                || (node.passesReplicaRule(query) && node.isQuorumStandby)
        }
    }
}

/// The query parameters of the replica checks: `?lag=`, `?replication_state=`, `?tag_<key>=`.
public struct HealthQuery: Hashable, Sendable {
    /// Maximum lag in bytes.
    public var lag: UInt64?
    public var replicationState: String?
    /// Tags that must match, as text (`tag_zone=a` → `["zone": "a"]`).
    public var tags: [String: String]
    /// `/readiness?mode=`: `write` measures the received position, anything else the replayed one.
    public var mode: ReadinessMode?

    public enum ReadinessMode: Hashable, Sendable { case apply, write }

    public init(lag: UInt64? = nil, replicationState: String? = nil, tags: [String: String] = [:]) {
        self.lag = lag
        self.replicationState = replicationState
        self.tags = tags
    }

    /// Parses query items; throws a message for a malformed `lag`.
    public init(items: [(key: String, value: String)]) throws(APIInputError) {
        self.init()
        for (key, value) in items {
            if key == "lag" {
                guard let bytes = Self.parseSize(value) else {
                    throw APIInputError(
                        "lag: '\(value)' is not a size; give bytes (1048576) or a number with a unit "
                            + "(16kB, 10MB, 1GB, 1TB)")
                }
                lag = bytes
            } else if key == "replication_state" {
                replicationState = value
            } else if key == "mode" {
                mode = value == "write" ? .write : .apply
            } else if key.hasPrefix("tag_"), key.count > 4 {
                tags[String(key.dropFirst(4))] = value
            }
        }
    }

    /// Bytes, or a number with PostgreSQL's memory units (`B`, `kB`, `MB`, `GB`, `TB`; 1024-based,
    /// case-insensitive).
    public static func parseSize(_ text: String) -> UInt64? {
        let trimmed = text.filter { $0 != " " }
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, let number = UInt64(digits) else { return nil }
        let multiplier: UInt64
        switch trimmed.dropFirst(digits.count).lowercased() {
        case "", "b": multiplier = 1
        case "kb": multiplier = 1 << 10
        case "mb": multiplier = 1 << 20
        case "gb": multiplier = 1 << 30
        case "tb": multiplier = 1 << 40
        default: return nil
        }
        let (result, overflow) = number.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : result
    }
}

/// Facts about this node derived from a snapshot, shared by the health checks and the documents.
struct NodeFacts {
    let status: HAStatus

    init(_ status: HAStatus) { self.status = status }

    var isRunning: Bool { status.postgres.process == .running }
    var isRunningPrimary: Bool { isRunning && status.postgres.inRecovery == false && status.holdsLeaderKey }
    var isStandbyLeader: Bool { isRunning && status.postgres.inRecovery == true && status.holdsLeaderKey }
    var isReplica: Bool { isRunning && status.postgres.inRecovery == true && !status.holdsLeaderKey }

    var tags: Tags { status.published?.tags ?? Tags() }

    var isStreaming: Bool { status.postgres.streaming || status.postgres.walReceiverStatus == "streaming" }

    /// Patroni's `replication_state` of a replica.
    var replicationState: String? {
        guard status.postgres.inRecovery == true, isRunning else { return nil }
        return isStreaming ? "streaming" : "in archive recovery"
    }

    /// A synchronous standby (synchronous mode, not quorum commit: there it is a quorum standby).
    var isSynchronous: Bool {
        guard status.config.synchronousMode, !status.config.quorumCommit, let sync = status.cluster?.sync?.value
        else { return false }
        return sync.isSynchronous(status.member)
    }

    /// Quorum commit: one of the `sync` key's voters.
    var isQuorumStandby: Bool {
        guard status.config.quorumCommit, let sync = status.cluster?.sync?.value else { return false }
        return sync.isSynchronous(status.member)
    }

    /// What replicas measure their lag against: the leader's last published optime.
    var clusterOptime: LSN? {
        status.cluster?.status?.optime ?? status.cluster?.leaderMember?.xlogLocation
    }

    /// Bytes behind the leader; nil when this node's position is unknown, 0 when the leader's is.
    var lag: UInt64? {
        guard let own = status.postgres.walPosition else { return nil }
        guard let reference = clusterOptime else { return 0 }
        return reference.bytesAhead(of: own)
    }

    func passesReplicaRule(_ query: HealthQuery) -> Bool {
        guard isReplica, !tags.noLoadBalance else { return false }
        if let limit = query.lag {
            guard let lag, lag <= limit else { return false }
        }
        if let wanted = query.replicationState, wanted != replicationState { return false }
        for (key, wanted) in query.tags {
            guard let value = tags[key], Self.text(of: value).lowercased() == wanted.lowercased() else { return false }
        }
        return true
    }

    /// A tag value as query text: strings as they are, booleans as true/false, whole numbers without a fraction.
    static func text(of value: JSONValue) -> String {
        switch value {
        case .string(let text): return text
        case .bool(let flag): return flag ? "true" : "false"
        case .number: return value.intValue.map(String.init) ?? "\(value.doubleValue ?? 0)"
        case .null: return "null"
        case .array, .object: return "\(value)"
        }
    }
}
