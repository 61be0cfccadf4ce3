/// The decisions of `baton migrate`, which moves one node of a running Patroni cluster to Baton:
/// whether the node is ready, whom to switch over to when it leads, and when the Baton agent
/// that replaced Patroni counts as healthy. Pure: the command reads etcd and acts.
///
/// What is unknown is refused, never guessed: a member that is not in etcd, a version that is not
/// a Patroni release this was tested against, a cluster without a running leader, a paused
/// cluster, or a pending switchover all stop the migration before anything is touched.
public enum Migration {
    /// The Patroni releases whose keys, member JSON and REST API Baton shares a scope with (tested
    /// against 4.1.5; 4.0 writes the same keys).
    public static let supportedPatroni: ClosedRange<Int> = 0...1

    /// Whether `version` (a member's `version`) is a Patroni release Baton may replace.
    public static func isSupportedPatroni(_ version: String) -> Bool {
        let parts = version.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 2, parts.count <= 3, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }),
            let major = Int(parts[0]), let minor = Int(parts[1])
        else { return false }
        return major == 4 && supportedPatroni.contains(minor)
    }

    /// What to do with the node.
    public enum Plan: Equatable, Sendable, CustomStringConvertible {
        /// The node already runs Baton: nothing to do.
        case alreadyBaton
        /// A replica (or a member that does not lead): stop Patroni, start Baton.
        case replica
        /// The leader: switch over to `candidate` first, then as a replica.
        case leader(candidate: String)

        public var description: String {
            switch self {
            case .alreadyBaton: return "already runs Baton"
            case .replica: return "replica: stop Patroni, start Baton"
            case .leader(let candidate): return "leader: switch over to \(candidate), then stop Patroni, start Baton"
            }
        }
    }

    /// Why the node is not ready, each with what to do about it.
    public struct Refusal: Error, Equatable, Sendable, CustomStringConvertible {
        public var reasons: [String]
        public var description: String { reasons.joined(separator: "; ") }
    }

    /// Whether `name` may be moved now. `preferred` names the candidate asked for (`--candidate`).
    public static func plan(
        _ view: ClusterView, member name: String, batonVersion: String, preferred: String? = nil
    ) -> Result<Plan, Refusal> {
        guard let member = view.member(named: name) else {
            let names = view.members.map(\.name).sorted().joined(separator: ", ")
            return .failure(
                Refusal(reasons: [
                    "\(name) has no member key in this scope (members: \(names.isEmpty ? "none" : names)); "
                        + "is Patroni running on this node with this configuration file?"
                ]))
        }
        if member.version == batonVersion { return .success(.alreadyBaton) }
        var reasons: [String] = []
        if !isSupportedPatroni(member.version) {
            reasons.append(
                "\(name) runs version '\(member.version)', not a supported Patroni release (4.0 or 4.1); "
                    + "upgrade Patroni first or move the node by hand (docs/runbooks.md)")
        }
        if view.dynamicConfig.pause {
            reasons.append("the cluster is paused: resume it first ('baton resume' or 'patronictl resume')")
        }
        if view.failover != nil {
            reasons.append("a switchover or failover is pending: let it finish or cancel it ('baton list' shows it)")
        }
        if member.state != .running {
            reasons.append("postgres on \(name) is \(member.state), not running: fix that under Patroni first")
        }
        guard let leaderName = view.leader?.member, let leader = view.member(named: leaderName),
            leader.state == .running, [.primary, .standbyLeader].contains(leader.role)
        else {
            reasons.append("the cluster has no running leader: wait until it has one ('baton list')")
            return .failure(Refusal(reasons: reasons))
        }
        if leaderName != name {
            return reasons.isEmpty ? .success(.replica) : .failure(Refusal(reasons: reasons))
        }
        // The leader: a switchover first, to a streaming replica that may take over; one already
        // on Baton first (it is the side the cluster is moving to), then the least lagging.
        // In synchronous mode only a standby the sync key names has every acknowledged commit, and
        // Patroni's leader refuses any other candidate.
        let synchronous = view.dynamicConfig.synchronousMode
        let candidates = view.members.filter { other in
            other.name != name && other.state == .running && other.role == .replica && !other.tags.noFailover
                && other.replicationState == "streaming"
                && (!synchronous
                    || (view.sync?.value.leader == name && view.sync?.value.isSynchronous(other.name) == true))
        }
        let chosen: Member?
        if let preferred {
            chosen = candidates.first { $0.name == preferred }
            if chosen == nil {
                reasons.append(
                    "\(preferred) cannot take over (it must be a running, streaming replica not tagged nofailover"
                        + (synchronous ? ", and a synchronous standby the sync key names)" : ")"))
            }
        } else {
            // A member on Baton is preferred only within maximum_lag_on_failover of the leader
            // (unknown positions are not within): a far-behind one would lengthen the switchover.
            let limit = view.dynamicConfig.maximumLagOnFailover
            func preferred(_ member: Member) -> Bool {
                guard member.version == batonVersion, let top = leader.xlogLocation,
                    let position = member.replayLSN ?? member.receiveLSN
                else { return false }
                return top <= position || top.rawValue - position.rawValue <= limit
            }
            chosen = candidates.min { a, b in
                let aBaton = preferred(a)
                let bBaton = preferred(b)
                if aBaton != bBaton { return aBaton }
                let aLSN = a.replayLSN ?? a.receiveLSN ?? LSN(0)
                let bLSN = b.replayLSN ?? b.receiveLSN ?? LSN(0)
                return aLSN != bLSN ? aLSN > bLSN : a.name < b.name
            }
            if chosen == nil {
                reasons.append(
                    "\(name) leads and no streaming replica may take over"
                        + (synchronous ? " (synchronous mode: none the sync key names)" : "")
                        + ": add or fix a replica first, or wait (a leader is moved last, through a switchover)")
            }
        }
        guard let chosen, reasons.isEmpty else { return .failure(Refusal(reasons: reasons)) }
        return .success(.leader(candidate: chosen.name))
    }

    /// Whether `name` now runs under Baton and serves: its member key written by a Baton agent,
    /// postgres running, a replica streaming (or the leader running as primary), and the cluster
    /// has a leader. nil (with what is missing) until then.
    public static func healthyUnderBaton(_ view: ClusterView, member name: String, batonVersion: String)
        -> String?
    {
        guard let member = view.member(named: name) else { return "\(name) has no member key yet" }
        guard member.version == batonVersion else { return "\(name)'s member key is still Patroni's" }
        guard member.state == .running else { return "postgres on \(name) is \(member.state)" }
        guard let leader = view.leader?.member else { return "the cluster has no leader" }
        if leader == name { return member.role == .primary || member.role == .standbyLeader ? nil : "not yet primary" }
        guard member.role == .replica else { return "\(name) is \(member.role), not a replica" }
        guard member.replicationState == "streaming" else {
            return "\(name) is not streaming yet (\(member.replicationState ?? "unknown"))"
        }
        return nil
    }
}
