import BatonCore
import BatonHA

extension NodeStatusDocument {
    /// The node status of `GET /patroni` and of every health check's body, from the HA loop's
    /// snapshot.
    init(_ status: HAStatus, scope: String, now: MonotonicInstant, wallClock: Double) {
        self.init()
        let node = NodeFacts(status)
        let postgres = status.postgres
        state = Self.state(of: status).rawValue
        role = status.role.rawValue
        patroni = Patroni(version: BatonCore.version, scope: scope, name: status.member)
        serverVersion = postgres.serverVersion
        postmasterStartTime = postgres.postmasterStartTime
        timeline = postgres.timeline
        databaseSystemIdentifier = postgres.systemIdentifier
        if postgres.inRecovery == false {
            if let location = postgres.currentLSN { xlog = .primary(location: location) }
        } else if postgres.inRecovery == true {
            xlog = .standby(
                received: postgres.receiveLSN, replayed: postgres.replayLSN, paused: postgres.replayPaused ?? false,
                replayedTimestamp: postgres.lastReplayTimestamp)
            replicationState = node.replicationState
        }
        if !postgres.replication.isEmpty { replication = postgres.replication.map { Self.row($0) } }
        if let cluster = status.cluster, cluster.leader == nil { clusterUnlocked = true }
        if status.config.pause { pause = true }
        dcsLastSeen = Self.dcsLastSeen(status, now: now, wallClock: wallClock)
        if !node.tags.isEmpty { tags = node.tags }
        if postgres.pendingRestart { pendingRestart = true }
        if !postgres.pendingRestartReason.isEmpty { pendingRestartReason = postgres.pendingRestartReason }
        if node.isSynchronous { syncStandby = true }
        if node.isQuorumStandby, node.isReplica { quorumStandby = true }
        if let scheduled = status.scheduledRestart {
            scheduledRestart = ScheduledRestart(
                schedule: scheduled.scheduledAtText ?? "", role: scheduled.role?.rawValue,
                restartPending: scheduled.onlyIfPending ? true : nil, postgresVersion: scheduled.postgresVersionBelow)
        }
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

    static func row(_ row: ReplicationRow) -> Replication {
        var out = Replication(
            applicationName: row.applicationName, state: row.state, syncState: row.syncState)
        out.clientAddr = row.clientAddress
        out.sentLSN = row.sentLSN.map(LSNNumber.init)
        out.writeLSN = row.writeLSN.map(LSNNumber.init)
        out.flushLSN = row.flushLSN.map(LSNNumber.init)
        out.replayLSN = row.replayLSN.map(LSNNumber.init)
        out.usename = row.userName
        out.syncPriority = row.syncPriority
        return out
    }
}
