import BatonCore

/// A `POST /switchover` or `POST /failover` request, checked against the cluster as Patroni does.
struct SwitchoverRequest: Hashable, Sendable {
    enum Action: String, Sendable {
        case switchover, failover

        var title: String { self == .switchover ? "Switchover" : "Failover" }
        /// "switched over" / "failed over".
        var pastTense: String { self == .switchover ? "switched over" : "failed over" }
    }

    var action: Action
    var leader: String?
    var candidate: String?
    var scheduledAt: String?

    /// A refusal: status code and the reason.
    struct Refusal: Error, Hashable, Sendable {
        var statusCode: Int
        var message: String
    }

    /// Parses the body fields (`candidate`, or Patroni's older `member`).
    static func parse(_ action: Action, _ object: [String: JSONValue]) -> Result<SwitchoverRequest, APIInputError> {
        let fields = ["leader", "candidate", "member", "scheduled_at"]
        var values: [String: String] = [:]
        for key in fields {
            switch BatonAPIServer.string(object, key) {
            case .success(let value): values[key] = value
            case .failure(let error): return .failure(error)
            }
        }
        let unknown = object.keys.filter { !fields.contains($0) }.sorted()
        if !unknown.isEmpty {
            return .failure(
                APIInputError(
                    "unknown field\(unknown.count == 1 ? "" : "s") \(unknown.joined(separator: ", ")); "
                        + "expected leader, candidate and scheduled_at"))
        }
        return .success(
            SwitchoverRequest(
                action: action, leader: values["leader"], candidate: values["candidate"] ?? values["member"],
                scheduledAt: values["scheduled_at"]))
    }

    /// Checks the request against the cluster; returns the `failover` key to write.
    func validate(cluster: ClusterView, config: DynamicConfig, wallClock: Double) -> Result<FailoverRequest, Refusal> {
        func refuse(_ code: Int, _ message: String) -> Result<FailoverRequest, Refusal> {
            .failure(Refusal(statusCode: code, message: message))
        }
        if action == .failover, candidate == nil {
            return refuse(400, "Failover could be performed only to a specific candidate; give \"candidate\"")
        }
        if action == .switchover, leader == nil {
            return refuse(
                400, "Switchover could be performed only from a specific leader; give \"leader\": the current leader")
        }
        if let scheduledAt {
            if action == .failover {
                return refuse(400, "Failover can't be scheduled; use POST /switchover with leader and scheduled_at")
            }
            guard let seconds = ISO8601.secondsSince1970(scheduledAt) else {
                return refuse(
                    400,
                    "scheduled_at: unable to parse '\(scheduledAt)'; use ISO 8601 with a time zone, "
                        + "e.g. 2026-11-22T15:00:00+00:00")
            }
            guard ISO8601.hasTimeZone(scheduledAt) else {
                return refuse(
                    400, "scheduled_at: time zone information is mandatory, e.g. 2026-11-22T15:00:00+00:00")
            }
            if seconds < wallClock {
                return refuse(422, "Cannot schedule switchover in the past (\(scheduledAt))")
            }
        }
        if config.pause, candidate == nil {
            return refuse(400, "\(action.title) is possible only to a specific candidate in a paused state")
        }
        if let existing = cluster.failover?.value, let at = existing.scheduled_at {
            return refuse(
                409, "a switchover is already scheduled at \(at); cancel it with DELETE /switchover first")
        }
        let currentLeader = cluster.leader?.member
        if let leader, leader != currentLeader {
            return refuse(
                412,
                currentLeader.map { "leader name does not match: the current leader is \($0), not \(leader)" }
                    ?? "leader name does not match: the cluster has no leader; use POST /failover with a candidate")
        }
        // Synchronous replication does not apply in a standby cluster.
        let synchronous = config.synchronousMode && config.standbyCluster == nil ? cluster.sync?.value : nil
        if let candidate {
            if candidate == currentLeader {
                return refuse(412, "\(candidate) is already the leader; name another member as candidate")
            }
            guard let member = cluster.member(named: candidate) else {
                let names = cluster.members.map(\.name).sorted().joined(separator: ", ")
                return refuse(412, "candidate \(candidate) does not exist; members are: \(names)")
            }
            if member.tags.noFailover {
                return refuse(412, "candidate \(candidate) is tagged nofailover and can never become leader")
            }
            if action == .switchover, let synchronous, !synchronous.isSynchronous(candidate) {
                return refuse(
                    412,
                    "candidate name does not match with sync_standby: in synchronous mode the candidate must be one of "
                        + "\(synchronous.syncStandbys.joined(separator: ", "))")
            }
        } else {
            let eligible = cluster.members.filter { member in
                member.name != currentLeader && !member.apiURL.isEmpty && !member.tags.noFailover
                    && (synchronous.map { $0.isSynchronous(member.name) } ?? true)
            }
            if eligible.isEmpty {
                return refuse(
                    412,
                    synchronous != nil
                        ? "\(action.rawValue) is not possible: can not find a sync_standby"
                        : "\(action.rawValue) is not possible: cluster does not have members except leader")
            }
        }
        return .success(FailoverRequest(leader: leader, member: candidate, scheduledAt: scheduledAt))
    }
}
