import BatonCore

/// `GET /cluster`: the members as the store shows them, in Patroni's layout.
enum ClusterDocument {
    static func make(
        _ cluster: ClusterView, scope: String, config: DynamicConfig, configProblems: [String] = []
    ) -> [String: JSONValue] {
        let leaderName = cluster.leader?.member
        let reference = cluster.status?.optime ?? cluster.leaderMember?.xlogLocation
        let synchronous = config.synchronousMode ? cluster.sync?.value : nil
        var members: [JSONValue] = []
        for member in cluster.members.sorted(by: { $0.name < $1.name }) {
            var object: [String: JSONValue] = [
                "name": .string(member.name),
                "state": .string(member.state.rawValue),
                "api_url": .string(member.apiURL),
            ]
            if member.name == leaderName {
                object["role"] = .string(member.role == .standbyLeader ? "standby_leader" : "leader")
            } else if synchronous?.isSynchronous(member.name) == true {
                object["role"] = .string("sync_standby")
            } else {
                object["role"] = .string("replica")
            }
            if let (host, port) = hostAndPort(member.connURL) {
                object["host"] = .string(host)
                if let port { object["port"] = .number(Double(port)) }
            }
            if let timeline = member.timeline { object["timeline"] = .number(Double(timeline)) }
            if !member.tags.isEmpty { object["tags"] = .object(member.tags.values) }
            if member.pendingRestart { object["pending_restart"] = .bool(true) }
            if member.name != leaderName {
                if let location = member.xlogLocation {
                    let lag = reference.map { $0.bytesAhead(of: location) } ?? 0
                    object["lag"] = .number(Double(lag))
                    object["lsn"] = .string(location.description)
                } else {
                    object["lag"] = .string("unknown")
                }
            }
            members.append(.object(object))
        }
        var document: [String: JSONValue] = ["scope": .string(scope), "members": .array(members)]
        if config.pause { document["pause"] = .bool(true) }
        // Baton's addition (Patroni has no such field; readers that do not know it skip it): the
        // config key is invalid and this member runs with the last valid configuration.
        if !configProblems.isEmpty { document["config_problems"] = .array(configProblems.map(JSONValue.string)) }
        if let failover = cluster.failover?.value, let at = failover.scheduled_at {
            var scheduled: [String: JSONValue] = ["at": .string(at)]
            if let from = failover.leader { scheduled["from"] = .string(from) }
            if let to = failover.member { scheduled["to"] = .string(to) }
            document["scheduled_switchover"] = .object(scheduled)
        }
        return document
    }

    /// Host and port of `postgres://host:port/db` (also `[v6]:port`, userinfo, no port).
    static func hostAndPort(_ url: String) -> (String, Int?)? {
        HostPort(url: url).map { ($0.host, $0.port) }
    }
}
