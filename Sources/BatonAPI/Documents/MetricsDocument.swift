import BatonCore
import BatonHA

/// `GET /metrics`: the snapshot in Prometheus' text exposition format (version 0.0.4).
enum MetricsDocument {
    static func make(
        _ status: HAStatus, scope: String, now: MonotonicInstant, wallClock: Double = 0,
        store: StoreRequestStats? = nil
    ) -> String {
        var text = MetricsText(labels: ["scope": scope, "name": status.member])
        patroni(&text, status, scope: scope, now: now, wallClock: wallClock)
        let node = NodeFacts(status)
        text.gauge("baton_info", "Baton version of this member.", 1, extra: ["version": BatonCore.version])
        let roles: [Member.Role] = [.primary, .replica, .standbyLeader, .demoted, .uninitialized]
        text.header("baton_role", "Current role of this member (1 for the current role).", type: "gauge")
        for role in roles {
            text.sample("baton_role", status.role == role ? 1 : 0, extra: ["role": role.rawValue])
        }
        if !roles.contains(status.role) { text.sample("baton_role", 1, extra: ["role": status.role.rawValue]) }
        text.gauge("baton_is_leader", "1 if this member holds the leader key.", status.holdsLeaderKey ? 1 : 0)
        text.gauge("baton_postgres_running", "1 if PostgreSQL is running.", node.isRunning ? 1 : 0)
        text.gauge(
            "baton_postgres_streaming", "1 if this replica's WAL receiver is streaming.",
            node.isReplica && node.isStreaming ? 1 : 0)
        text.gauge("baton_sync_standby", "1 if this member is a synchronous standby.", node.isSynchronous ? 1 : 0)
        text.gauge(
            "baton_pending_restart", "1 if PostgreSQL needs a restart for a parameter change.",
            status.postgres.pendingRestart ? 1 : 0)
        text.gauge("baton_cluster_paused", "1 if the cluster is in maintenance mode.", status.config.pause ? 1 : 0)
        if let cluster = status.cluster {
            text.gauge("baton_cluster_unlocked", "1 if no member holds the leader key.", cluster.leader == nil ? 1 : 0)
        }
        if let timeline = status.postgres.timeline {
            text.gauge("baton_timeline", "PostgreSQL timeline.", Double(timeline))
        }
        if let position = status.postgres.walPosition {
            text.gauge(
                "baton_xlog_location",
                "Current WAL position in bytes (write on a primary, received/replayed on a replica).",
                Double(position.rawValue))
        }
        if node.isReplica, let lag = node.lag {
            text.gauge(
                "baton_lag_bytes", "Bytes this replica is behind the leader's last published position.", Double(lag))
        }
        if status.holdsLeaderKey, let deadline = status.leaseDeadline {
            text.gauge(
                "baton_lease_seconds_remaining", "Seconds until this leader fences itself unless the lease is renewed.",
                seconds(deadline - now))
        }
        text.counter("baton_promotions_total", "Promotions performed by this agent.", Double(status.promotions))
        text.counter(
            "baton_failovers_total", "Automatic failovers this agent won (promotions nobody asked for).",
            Double(status.failovers))
        text.header("baton_decisions_total", "HA decisions taken, by reason code.", type: "counter")
        for (reason, count) in status.decisions.sorted(by: { $0.key < $1.key }) {
            text.sample("baton_decisions_total", Double(count), extra: ["reason": reason])
        }
        text.histogram(
            "baton_ha_cycle_duration_seconds", "Duration of the HA loop's cycles (observe, decide, act, publish).",
            status.cycleDurations)
        if let store {
            text.histogram(
                "baton_store_request_duration_seconds", "Latency of the HA loop's requests to the store (etcd).",
                store.latency)
            text.header(
                "baton_store_request_errors_total", "Failed store requests, by kind (unavailable, timeout, ...).",
                type: "counter")
            for (kind, count) in store.errors.sorted(by: { $0.key < $1.key }) {
                text.sample("baton_store_request_errors_total", Double(count), extra: ["kind": kind])
            }
        }
        if let last = status.lastCycleAt {
            text.gauge(
                "baton_last_cycle_seconds_ago", "Seconds since the HA loop last finished a cycle.", seconds(now - last))
        }
        if let duration = status.lastCycleDuration {
            text.gauge("baton_last_cycle_duration_seconds", "Duration of the last HA cycle.", seconds(duration))
        }
        return text.output
    }

    /// Patroni 4's metrics, same names, help, types and labels, so that Patroni's dashboards and
    /// alerts work unchanged; computed from the same document as `GET /patroni`, as Patroni does.
    static func patroni(
        _ text: inout MetricsText, _ status: HAStatus, scope: String, now: MonotonicInstant, wallClock: Double
    ) {
        let document = NodeStatusDocument(status, scope: scope, now: now, wallClock: wallClock)
        let node = NodeFacts(status)
        let postgres = status.postgres
        var xlog: (location: Double, received: Double, replayed: Double, paused: Bool) = (0, 0, 0, false)
        if let value = document.xlog {
            xlog = (
                Double(value.location?.lsn.rawValue ?? 0), Double(value.receivedLocation?.lsn.rawValue ?? 0),
                Double(value.replayedLocation?.lsn.rawValue ?? 0), value.paused == true
            )
        }
        // Failsafe mode in force: a primary that stays up without etcd because every member confirmed it.
        let failsafeActive = status.lastReason?.code == "failsafe_confirmed"
        let role = document.role ?? ""
        let versionDigits = BatonCore.version.split(separator: ".").prefix(3).map { part -> String in
            let digits = String(part.prefix { $0.isNumber })
            return String(repeating: "0", count: max(0, 2 - digits.count)) + digits
        }
        text.header("patroni_version", "Patroni semver without periods.", type: "gauge")
        text.sample("patroni_version", Double(versionDigits.joined()) ?? 0)
        text.gauge(
            "patroni_postgres_running", "Value is 1 if Postgres is running, 0 otherwise.",
            document.state == "running" ? 1 : 0)
        text.gauge(
            "patroni_postmaster_start_time", "Epoch seconds since Postgres started.",
            postgres.postmasterStartEpoch ?? 0)
        text.gauge(
            "patroni_primary", "Value is 1 if this node is the leader, 0 otherwise.", role == "primary" ? 1 : 0)
        text.header(
            "patroni_xlog_location",
            "Current location of the Postgres transaction log, 0 if this node is not the leader.", type: "counter")
        text.sample("patroni_xlog_location", xlog.location)
        text.gauge(
            "patroni_standby_leader", "Value is 1 if this node is the standby_leader, 0 otherwise.",
            role == "standby_leader" ? 1 : 0)
        text.gauge("patroni_replica", "Value is 1 if this node is a replica, 0 otherwise.", role == "replica" ? 1 : 0)
        text.gauge(
            "patroni_sync_standby", "Value is 1 if this node is a sync standby replica, 0 otherwise.",
            node.isSynchronous ? 1 : 0)
        text.gauge(
            "patroni_quorum_standby", "Value is 1 if this node is a quorum standby, 0 otherwise.",
            node.isQuorumStandby ? 1 : 0)
        text.header(
            "patroni_xlog_received_location",
            "Current location of the received Postgres transaction log, 0 if this node is not a replica.",
            type: "counter")
        text.sample("patroni_xlog_received_location", xlog.received)
        text.header(
            "patroni_xlog_replayed_location",
            "Current location of the replayed Postgres transaction log, 0 if this node is not a replica.",
            type: "counter")
        text.sample("patroni_xlog_replayed_location", xlog.replayed)
        text.gauge(
            "patroni_xlog_replayed_timestamp", "Current timestamp of the replayed Postgres transaction log, 0 if null.",
            postgres.lastReplayEpoch ?? 0)
        text.gauge(
            "patroni_xlog_paused", "Value is 1 if the Postgres xlog is paused, 0 otherwise.", xlog.paused ? 1 : 0)
        text.gauge(
            "patroni_postgres_streaming", "Value is 1 if Postgres is streaming, 0 otherwise.",
            document.replicationState == "streaming" ? 1 : 0)
        text.gauge(
            "patroni_postgres_in_archive_recovery", "Value is 1 if Postgres is replicating from archive, 0 otherwise.",
            document.replicationState == "in archive recovery" ? 1 : 0)
        text.gauge(
            "patroni_postgres_server_version", "Version of Postgres (if running), 0 otherwise.",
            Double(document.serverVersion ?? 0))
        text.gauge(
            "patroni_cluster_unlocked", "Value is 1 if the cluster is unlocked, 0 if locked.",
            document.clusterUnlocked == true ? 1 : 0)
        text.gauge(
            "patroni_failsafe_mode_is_active", "Value is 1 if failsafe mode is active, 0 if inactive.",
            failsafeActive ? 1 : 0)
        text.header(
            "patroni_postgres_timeline", "Postgres timeline of this node (if running), 0 otherwise.", type: "counter")
        text.sample("patroni_postgres_timeline", Double(document.timeline ?? 0))
        text.gauge(
            "patroni_dcs_last_seen", "Epoch timestamp when DCS was last contacted successfully by Patroni.",
            document.dcsLastSeen ?? 0)
        text.gauge(
            "patroni_pending_restart", "Value is 1 if the node needs a restart, 0 otherwise.",
            document.pendingRestart == true ? 1 : 0)
        text.gauge(
            "patroni_is_paused", "Value is 1 if auto failover is disabled, 0 otherwise.",
            document.pause == true ? 1 : 0)
        text.header(
            "patroni_postgres_state",
            "Numeric representation of Postgres state.\n# Values: 0=initdb, 1=initdb_failed, 2=custom_bootstrap, "
                + "3=custom_bootstrap_failed, 4=creating_replica, 5=running, 6=starting, 7=bootstrap_starting, "
                + "8=start_failed, 9=restarting, 10=restart_failed, 11=stopping, 12=stopped, 13=stop_failed, "
                + "14=crashed",
            type: "gauge")
        text.sample("patroni_postgres_state", Double(patroniStateNumber(document.state)))
    }

    /// Patroni's numbers for its PostgresqlState values (fixed, for monitoring).
    static func patroniStateNumber(_ state: String?) -> Int {
        let states = [
            "initializing new cluster", "initdb failed", "running custom bootstrap script", "custom bootstrap failed",
            "creating replica", "running", "starting", "starting after custom bootstrap", "start failed", "restarting",
            "restart failed", "stopping", "stopped", "stop failed", "crashed",
        ]
        return states.firstIndex(of: state ?? "") ?? 12
    }

    static func seconds(_ duration: Duration) -> Double {
        let parts = duration.components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }
}

/// A small writer of Prometheus' text format with a set of labels common to every sample.
struct MetricsText {
    let labels: [String: String]
    var output = ""

    init(labels: [String: String]) { self.labels = labels }

    mutating func header(_ name: String, _ help: String, type: String) {
        output += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    mutating func sample(_ name: String, _ value: Double, extra: [String: String] = [:]) {
        let all = labels.merging(extra) { _, new in new }
        let rendered = all.sorted { $0.key < $1.key }.map { "\($0.key)=\"\(Self.escape($0.value))\"" }
        output += "\(name){\(rendered.joined(separator: ","))} \(Self.format(value))\n"
    }

    mutating func gauge(_ name: String, _ help: String, _ value: Double, extra: [String: String] = [:]) {
        header(name, help, type: "gauge")
        sample(name, value, extra: extra)
    }

    mutating func histogram(_ name: String, _ help: String, _ histogram: Histogram) {
        header(name, help, type: "histogram")
        let cumulative = histogram.cumulative
        for (index, bound) in histogram.bounds.enumerated() {
            sample(name + "_bucket", Double(cumulative[index]), extra: ["le": Self.format(bound)])
        }
        sample(name + "_bucket", Double(histogram.count), extra: ["le": "+Inf"])
        sample(name + "_sum", histogram.sum)
        sample(name + "_count", Double(histogram.count))
    }

    mutating func counter(_ name: String, _ help: String, _ value: Double) {
        header(name, help, type: "counter")
        sample(name, value)
    }

    static func escape(_ value: String) -> String {
        var result = ""
        for character in value {
            switch character {
            case "\\": result += "\\\\"
            case "\"": result += "\\\""
            case "\n": result += "\\n"
            default: result.append(character)
            }
        }
        return result
    }

    static func format(_ value: Double) -> String {
        if value.rounded() == value, abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }
}
