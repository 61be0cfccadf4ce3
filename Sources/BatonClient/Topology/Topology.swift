import BatonCore

/// The cluster as the client routes by it: where writes go and which replicas may serve reads.
public struct Topology: Sendable, Equatable, CustomStringConvertible {
    /// Where the primary pool connects.
    public enum PrimaryTarget: Sendable, Hashable, CustomStringConvertible {
        /// The published leader. `confirmed` once it publishes role `primary` and state `running`;
        /// before that (a promotion in progress) connections are tried and verified all the same.
        case member(name: String, endpoint: Endpoint, confirmed: Bool)
        /// The first of these that answers as writable (as libpq's multi-host
        /// `target_session_attrs=read-write`): fixed configuration, or no topology source
        /// answering for `degradedAfter`.
        case anyWritable([Endpoint])

        /// Identity for pool purposes: a promotion being confirmed is not a change of primary.
        var poolKey: String {
            switch self {
            case .member(let name, let endpoint, _): return "\(name)@\(endpoint)"
            case .anyWritable(let endpoints): return "read-write:" + endpoints.map(\.description).joined(separator: ",")
            }
        }

        public var description: String {
            switch self {
            case .member(let name, let endpoint, let confirmed):
                return "\(name) (\(endpoint))" + (confirmed ? "" : ", promotion not yet published")
            case .anyWritable(let endpoints):
                return "whichever of \(endpoints.map(\.description).joined(separator: ", ")) is writable"
            }
        }
    }

    public struct Replica: Sendable, Hashable {
        /// Member name (or `host:port` for fixed replicas).
        public var name: String
        public var endpoint: Endpoint
        /// The published state (`running`, `starting`, …); only `running` replicas get reads.
        public var state: String
        /// Bytes of WAL the replica has not replayed yet; nil when unknown.
        public var lagBytes: UInt64?
        /// Estimated seconds behind the primary; nil when unknown.
        public var lagSeconds: Double?
        public var replayLSN: LSN?
        /// `noloadbalance` tag: never gets reads.
        public var noLoadBalance: Bool
        /// `weight` tag, for the weighted strategy.
        public var weight: Int?

        public init(
            name: String, endpoint: Endpoint, state: String = "running", lagBytes: UInt64? = nil,
            lagSeconds: Double? = nil, replayLSN: LSN? = nil, noLoadBalance: Bool = false, weight: Int? = nil
        ) {
            self.name = name
            self.endpoint = endpoint
            self.state = state
            self.lagBytes = lagBytes
            self.lagSeconds = lagSeconds
            self.replayLSN = replayLSN
            self.noLoadBalance = noLoadBalance
            self.weight = weight
        }
    }

    public var primary: PrimaryTarget?
    public var replicas: [Replica]
    /// Whether the source publishes lag (etcd, REST); a fixed topology has none, and lag limits
    /// then do not apply.
    public var lagIsKnown: Bool
    /// Every member's address, for the degraded (multi-host) path.
    public var knownEndpoints: [Endpoint]
    /// Where this came from, e.g. `etcd revision 42`.
    public var source: String

    public init(
        primary: PrimaryTarget?, replicas: [Replica], lagIsKnown: Bool, knownEndpoints: [Endpoint] = [],
        source: String
    ) {
        self.primary = primary
        self.replicas = replicas
        self.lagIsKnown = lagIsKnown
        self.knownEndpoints = knownEndpoints
        self.source = source
    }

    public static let empty = Topology(primary: nil, replicas: [], lagIsKnown: false, source: "none yet")

    public var description: String {
        let replicaText = replicas.map { replica in
            var text = "\(replica.name) (\(replica.endpoint), \(replica.state)"
            if let lag = replica.lagBytes { text += ", lag \(lag) B" }
            if let seconds = replica.lagSeconds { text += " \((seconds * 10).rounded() / 10) s" }
            return text + ")"
        }
        return "primary: \(primary?.description ?? "none"); replicas: "
            + (replicaText.isEmpty ? "none" : replicaText.joined(separator: ", ")) + " [\(source)]"
    }

    /// Equal for routing purposes, ignoring where it came from.
    func sameRouting(as other: Topology) -> Bool {
        primary == other.primary && replicas == other.replicas && knownEndpoints == other.knownEndpoints
    }
}

// MARK: From the store's view

extension Topology {
    /// Builds the topology from etcd's cluster view: the primary is the leader key's holder (with
    /// a readable `conn_url`, and not a standby leader); replicas are the other members publishing
    /// role `replica`. Lag is the leader's position (its published optime, else its xlog) minus the
    /// replica's replay position; seconds come from `lagHistory`.
    public init(view: ClusterView, lagHistory: inout LagHistory, now: ContinuousClock.Instant) {
        let leaderName = view.leader?.member
        var primary: PrimaryTarget?
        if let leader = view.leaderMember, leader.role != .standbyLeader,
            let (host, port) = ConnURL.hostAndPort(leader.connURL)
        {
            primary = .member(
                name: leader.name, endpoint: Endpoint(host: host, port: port),
                confirmed: leader.role == .primary && leader.state == .running)
        }
        let reference = [view.status?.optime, view.leaderMember?.xlogLocation].compactMap { $0 }.max()
        if let reference { lagHistory.record(reference, at: now) }
        var replicas: [Replica] = []
        var known: [Endpoint] = []
        for member in view.members {
            guard let (host, port) = ConnURL.hostAndPort(member.connURL) else { continue }
            let endpoint = Endpoint(host: host, port: port)
            known.append(endpoint)
            guard member.name != leaderName, member.role == .replica else { continue }
            let position = member.replayLSN ?? member.xlogLocation
            var lagBytes: UInt64?
            var lagSeconds: Double?
            if let position, let reference {
                lagBytes = reference.bytesAhead(of: position)
                lagSeconds = lagHistory.secondsBehind(position, now: now)
            }
            replicas.append(
                Replica(
                    name: member.name, endpoint: endpoint, state: member.state.rawValue, lagBytes: lagBytes,
                    lagSeconds: lagSeconds, replayLSN: position, noLoadBalance: member.tags.noLoadBalance,
                    weight: member.tags["weight"]?.intValue))
        }
        self.init(
            primary: primary, replicas: replicas, lagIsKnown: true, knownEndpoints: known,
            source: "etcd revision \(view.revision)")
    }

    /// Fixed configuration: writes through multi-host over `primaryHosts`, reads over `readReplicas`.
    public static func fixed(primaryHosts: [Endpoint], readReplicas: [Endpoint]) -> Topology {
        Topology(
            primary: .anyWritable(primaryHosts),
            replicas: readReplicas.map { Replica(name: $0.description, endpoint: $0) },
            lagIsKnown: false, knownEndpoints: primaryHosts + readReplicas, source: "static configuration")
    }

    /// The same cluster with the primary replaced by multi-host over every known member (the
    /// degraded path, while the topology source cannot be read).
    func degraded() -> Topology {
        var copy = self
        if !knownEndpoints.isEmpty { copy.primary = .anyWritable(knownEndpoints) }
        copy.source += ", degraded: topology source unreachable"
        return copy
    }
}
