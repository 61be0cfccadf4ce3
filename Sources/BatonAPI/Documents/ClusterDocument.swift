import BatonCore

extension ClusterDocument {
    /// `GET /cluster`: the members as the store shows them, in Patroni's layout.
    init(_ cluster: ClusterView, scope: String, config: DynamicConfig, configProblems: [String] = []) {
        let leaderName = cluster.leader?.member
        let reference = cluster.status?.optime ?? cluster.leaderMember?.xlogLocation
        let synchronous = config.synchronousMode ? cluster.sync?.value : nil
        var members: [Member] = []
        for member in cluster.members.sorted(by: { $0.name < $1.name }) {
            // A replica's state is how it replicates (`streaming`, `in archive recovery`) when it
            // published that, as Patroni shows it; the leader's is its postgres state.
            let state =
                member.name == leaderName ? member.state.rawValue : member.replicationState ?? member.state.rawValue
            var entry = Member(name: member.name, state: state, apiURL: member.apiURL)
            if member.name == leaderName {
                entry.role = member.role == .standbyLeader ? "standby_leader" : "leader"
            } else if synchronous?.isSynchronous(member.name) == true {
                entry.role = config.quorumCommit ? "quorum_standby" : "sync_standby"
            } else {
                entry.role = "replica"
            }
            if let address = HostPort(url: member.connURL) {
                entry.host = address.host
                entry.port = address.port
            }
            entry.timeline = member.timeline
            if !member.tags.isEmpty { entry.tags = member.tags }
            if member.pendingRestart { entry.pendingRestart = true }
            if !member.pendingRestartReason.isEmpty { entry.pendingRestartReason = member.pendingRestartReason }
            if member.name != leaderName {
                // Patroni's rule: a position behind the reference is lag in bytes, one ahead of it
                // (the status key lags the leader) is no lag, a missing one is "unknown".
                func position(_ location: LSN?) -> (Lag, String) {
                    guard let location else { return (.unknown, "unknown") }
                    return (.bytes(reference.map { $0.bytesAhead(of: location) } ?? 0), location.description)
                }
                (entry.lag, entry.lsn) = position(member.xlogLocation)
                (entry.receiveLag, entry.receiveLSN) = position(member.receiveLSN)
                (entry.replayLag, entry.replayLSN) = position(member.replayLSN)
            }
            members.append(entry)
        }
        var scheduled: ScheduledSwitchover?
        if let failover = cluster.failover?.value, let at = failover.scheduled_at {
            scheduled = ScheduledSwitchover(at: at, from: failover.leader, to: failover.member)
        }
        self.init(
            scope: scope, members: members, pause: config.pause ? true : nil,
            configProblems: configProblems.isEmpty ? nil : configProblems, scheduledSwitchover: scheduled,
            poolers: cluster.poolers.isEmpty ? nil : cluster.poolers.sorted { $0.name < $1.name })
    }
}
