import BatonCore

extension ClusterDocument {
    /// `GET /cluster`: the members as the store shows them, in Patroni's layout.
    init(_ cluster: ClusterView, scope: String, config: DynamicConfig, configProblems: [String] = []) {
        let leaderName = cluster.leader?.member
        let reference = cluster.status?.optime ?? cluster.leaderMember?.xlogLocation
        let synchronous = config.synchronousMode ? cluster.sync?.value : nil
        var members: [Member] = []
        for member in cluster.members.sorted(by: { $0.name < $1.name }) {
            var entry = Member(name: member.name, state: member.state.rawValue, apiURL: member.apiURL)
            if member.name == leaderName {
                entry.role = member.role == .standbyLeader ? "standby_leader" : "leader"
            } else if synchronous?.isSynchronous(member.name) == true {
                entry.role = "sync_standby"
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
            if member.name != leaderName {
                if let location = member.xlogLocation {
                    entry.lag = .bytes(reference.map { $0.bytesAhead(of: location) } ?? 0)
                    entry.lsn = location.description
                } else {
                    entry.lag = .unknown
                }
            }
            members.append(entry)
        }
        var scheduled: ScheduledSwitchover?
        if let failover = cluster.failover?.value, let at = failover.scheduled_at {
            scheduled = ScheduledSwitchover(at: at, from: failover.leader, to: failover.member)
        }
        self.init(
            scope: scope, members: members, pause: config.pause ? true : nil,
            configProblems: configProblems.isEmpty ? nil : configProblems, scheduledSwitchover: scheduled)
    }
}
