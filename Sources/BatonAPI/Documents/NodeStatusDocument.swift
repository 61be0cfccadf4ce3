import BatonCore
import BatonHA

/// The node status of `GET /patroni` and of every health check's body, in Patroni's field names.
enum NodeStatusDocument {
    static func make(
        _ status: HAStatus, scope: String, now: MonotonicInstant, wallClock: Double
    ) -> [String: JSONValue] {
        let node = NodeFacts(status)
        let postgres = status.postgres
        var document: [String: JSONValue] = [
            "state": .string(state(of: status).rawValue),
            "role": .string(status.role.rawValue),
            "patroni": .object([
                "version": .string(BatonCore.version), "scope": .string(scope), "name": .string(status.member),
            ]),
        ]
        if let version = postgres.serverVersion { document["server_version"] = .number(Double(version)) }
        if let started = postgres.postmasterStartTime { document["postmaster_start_time"] = .string(started) }
        if let timeline = postgres.timeline { document["timeline"] = .number(Double(timeline)) }
        if let systemID = postgres.systemIdentifier { document["database_system_identifier"] = .string(systemID) }

        if postgres.inRecovery == false {
            if let location = postgres.currentLSN { document["xlog"] = .object(["location": lsn(location)]) }
        } else if postgres.inRecovery == true {
            var xlog: [String: JSONValue] = ["paused": .bool(false), "replayed_timestamp": .null]
            if let received = postgres.receiveLSN { xlog["received_location"] = lsn(received) }
            if let replayed = postgres.replayLSN { xlog["replayed_location"] = lsn(replayed) }
            document["xlog"] = .object(xlog)
            if let state = node.replicationState { document["replication_state"] = .string(state) }
        }
        if !postgres.replication.isEmpty {
            document["replication"] = .array(postgres.replication.map(replicationRow))
        }
        if let cluster = status.cluster, cluster.leader == nil { document["cluster_unlocked"] = .bool(true) }
        if status.config.pause { document["pause"] = .bool(true) }
        if let seen = dcsLastSeen(status, now: now, wallClock: wallClock) {
            document["dcs_last_seen"] = .number(seen)
        }
        if !node.tags.isEmpty { document["tags"] = .object(node.tags.values) }
        if postgres.pendingRestart { document["pending_restart"] = .bool(true) }
        if node.isSynchronous { document["sync_standby"] = .bool(true) }
        if let scheduled = status.scheduledRestart {
            var restart: [String: JSONValue] = ["schedule": .string(scheduled.scheduledAtText ?? "")]
            if let role = scheduled.role { restart["role"] = .string(role.rawValue) }
            if scheduled.onlyIfPending { restart["restart_pending"] = .bool(true) }
            if let version = scheduled.postgresVersionBelow { restart["postgres_version"] = .number(Double(version)) }
            document["scheduled_restart"] = .object(restart)
        }
        return document
    }

    /// Wall-clock second when the store was last read (`dcs_last_seen`).
    static func dcsLastSeen(_ status: HAStatus, now: MonotonicInstant, wallClock: Double) -> Double? {
        guard let readAt = status.clusterReadAt else { return nil }
        let ago = max(0, Double((now - readAt).components.seconds))
        return (wallClock - ago).rounded(.down)
    }

    /// The state to report: the activity published in the member key (`creating replica`,
    /// `running pg_rewind`, …) when there is one, else what the process is doing.
    static func state(of status: HAStatus) -> Member.State {
        if let published = status.published?.state { return published }
        switch status.postgres.process {
        case .running: return .running
        case .starting: return .starting
        case .crashed: return .crashed
        case .unusable: return status.postgres.postmasterPID != nil ? .running : .stopped
        case .stopped, .uninitialized: return .stopped
        }
    }

    static func lsn(_ value: LSN) -> JSONValue { .number(Double(value.rawValue)) }

    static func replicationRow(_ row: ReplicationRow) -> JSONValue {
        var object: [String: JSONValue] = [
            "application_name": .string(row.applicationName),
            "state": .string(row.state),
            "sync_state": .string(row.syncState),
        ]
        if let address = row.clientAddress { object["client_addr"] = .string(address) }
        if let sent = row.sentLSN { object["sent_lsn"] = lsn(sent) }
        if let write = row.writeLSN { object["write_lsn"] = lsn(write) }
        if let flush = row.flushLSN { object["flush_lsn"] = lsn(flush) }
        if let replay = row.replayLSN { object["replay_lsn"] = lsn(replay) }
        return .object(object)
    }
}
