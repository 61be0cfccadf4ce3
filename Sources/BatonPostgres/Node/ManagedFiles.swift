import BatonCore
import Foundation

/// The files Baton writes into (and next to) the data directory. Pure text rendering, unit-tested.
///
/// Layout (chosen over ALTER SYSTEM so that the agent owns its settings without a running server,
/// and so that `postgresql.auto.conf` stays the operator's):
/// * `postgresql.conf` (initdb's) gets two lines appended once:
///   `include_if_exists = 'baton.conf'` and `include_if_exists = 'baton.recovery.conf'`.
/// * `baton.conf`: the managed parameters (rewritten before every start).
/// * `baton.recovery.conf`: primary_conninfo, primary_slot_name, recovery_target_timeline
///   (rewritten when the upstream changes; reloaded, since PostgreSQL 13 allows that).
/// * `standby.signal`: present exactly when the node should run as a standby.
/// * `<data_dir>.pgpass` (outside the data directory, 0600, owned by the postgres OS user).
/// pg_basebackup and pg_rewind copy the source's files; Baton rewrites its own before starting.
public enum ManagedFiles {
    public static let parametersFile = "baton.conf"
    public static let recoveryFile = "baton.recovery.conf"
    public static let includeLines = [
        "include_if_exists = '\(parametersFile)'\t# added by Baton",
        "include_if_exists = '\(recoveryFile)'\t# added by Baton",
    ]

    /// The managed parameters: safe HA defaults, then the cluster's (`postgresql.parameters` of the
    /// `config` key, already checked), then the local file's, as `PostgresParameters.effective`
    /// merges them.
    public static func parameters(_ configuration: LocalPostgresConfiguration, cluster: [String: String] = [:])
        -> [String: String]
    {
        PostgresParameters.effective(
            defaults: defaults(configuration), cluster: cluster, local: configuration.parameters
        ).parameters
    }

    /// Baton's own settings, before the cluster's and the local file's parameters.
    static func defaults(_ configuration: LocalPostgresConfiguration) -> [String: String] {
        [
            "listen_addresses": configuration.listenAddress,
            "port": String(configuration.port),
            "unix_socket_directories": configuration.socketDirectory,
            // Patroni's choice (the scope), so that a data directory moved between Patroni and
            // Baton keeps a setting that only a restart can change.
            "cluster_name": configuration.scope.isEmpty ? configuration.memberName : configuration.scope,
            "wal_level": "replica",
            "hot_standby": "on",
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            "wal_log_hints": "on",
            "wal_keep_size": "128MB",
            "hba_file": configuration.dataDirectory + "/pg_hba.conf",
            "logging_collector": "off",
            "log_line_prefix": "%m [%p] ",
            "password_encryption": "scram-sha-256",
        ]
    }

    /// The `synchronous_standby_names` `baton.conf` sets: the leader's setting — FIRST n with the n
    /// names (each has every acknowledged commit, as the sync key says), or ANY k in quorum mode —
    /// else what the configuration says (nil: not set).
    public static func synchronousStandbyNames(
        _ configuration: LocalPostgresConfiguration, cluster: [String: String] = [:],
        synchronousStandbys: SynchronousSetting
    ) -> String? {
        synchronousStandbys.isEmpty
            ? parameters(configuration, cluster: cluster)["synchronous_standby_names"]
            : synchronousStandbys.postgresValue
    }

    /// `baton.conf`; `synchronousStandbys` (the leader's, from the `sync` key) win over any
    /// configured `synchronous_standby_names`.
    public static func parametersText(
        _ configuration: LocalPostgresConfiguration, cluster: [String: String] = [:],
        synchronousStandbys: SynchronousSetting = .empty, standbyFloors: [String: Int] = [:]
    ) -> String {
        var values = parameters(configuration, cluster: cluster)
        values["synchronous_standby_names"] = synchronousStandbyNames(
            configuration, cluster: cluster, synchronousStandbys: synchronousStandbys)
        for (name, floor) in standbyFloors {
            let current = values[name].flatMap { Int($0) } ?? postgresDefaults[name] ?? 0
            if current < floor { values[name] = String(floor) }
        }
        return "# Managed by Baton: rewritten before every start and reload. Set parameters with "
            + "'baton edit-config -p' (every member) or in the agent's configuration (this one).\n"
            + PostgresConf.render(values) + "\n"
    }

    /// The settings a hot standby may not have lower than its primary had (PostgreSQL refuses to
    /// run recovery otherwise), with PostgreSQL 15's defaults, and their names in pg_controldata.
    public static let postgresDefaults: [String: Int] = [
        "max_connections": 100, "max_worker_processes": 8, "max_wal_senders": 10, "max_prepared_transactions": 0,
        "max_locks_per_transaction": 64,
    ]
    static let controlDataNames: [String: String] = [
        "max_connections setting": "max_connections", "max_worker_processes setting": "max_worker_processes",
        "max_wal_senders setting": "max_wal_senders", "max_prepared_xacts setting": "max_prepared_transactions",
        "max_locks_per_xact setting": "max_locks_per_transaction",
    ]

    /// A standby's floors for those settings, from its pg_controldata (what the primary ran with,
    /// as last recorded), as Patroni takes them: the configured value when higher, else this.
    public static func standbyFloors(controlData: [String: String]) -> [String: Int] {
        var floors: [String: Int] = [:]
        for (field, name) in controlDataNames {
            if let value = controlData[field].flatMap({ Int($0) }), value > 0 || name == "max_prepared_transactions" {
                floors[name] = value
            }
        }
        return floors
    }

    /// How long data sent on a replication connection may stay unacknowledged by the peer's TCP
    /// before the connection is dropped, on both ends.
    ///
    /// A path that swallows the primary's WAL but not the standby's replies (a one-way partition)
    /// otherwise keeps the walsender alive for as long as TCP retransmits — tens of seconds or
    /// minutes — and a synchronous primary keeps waiting for that standby: every commit stalls.
    /// With the connection dropped, the standby is simply gone, the case the synchronous-standby
    /// logic already handles (another streaming standby takes its place). Zero-window probes that
    /// are answered (a standby slow to write) do not count: only a silent peer is cut.
    public static let replicationTCPUserTimeout: Duration = .seconds(5)

    /// The standby's recovery settings for following `source`.
    public static func recoveryText(_ configuration: LocalPostgresConfiguration, source: ReplicationSource?) -> String {
        var text = "# Managed by Baton: the upstream this standby follows.\n"
        guard let source else { return text }
        let userTimeout = String(replicationTCPUserTimeout.components.seconds * 1000)
        let conninfo = ConnInfo.make([
            ("host", source.host),
            ("port", String(source.port)),
            ("user", configuration.replication.username),
            ("passfile", configuration.passfile),
            ("application_name", configuration.memberName),
            ("sslmode", "prefer"),
            ("connect_timeout", "5"),
            // The standby's end (libpq) and the walsender's end (a startup option of the session).
            ("tcp_user_timeout", userTimeout),
            ("options", "-c tcp_user_timeout=\(userTimeout)"),
        ])
        var parameters: [String: String] = [
            "primary_conninfo": conninfo,
            "recovery_target_timeline": "latest",
            // No recovery target, whatever another file says: reaching one would end recovery
            // (promote, or shut down) without the leader key.
            "recovery_target": "", "recovery_target_lsn": "", "recovery_target_name": "",
            "recovery_target_time": "", "recovery_target_xid": "", "recovery_target_action": "pause",
        ]
        // postgresql.recovery_conf (a standby cluster's leader takes standby_cluster's instead).
        if source.remote == nil {
            for (key, value) in configuration.recoveryConf { parameters[key] = value }
            // A member of a standby cluster: the other cluster's archive, as standby_cluster says.
            if let archive = source.standbyClusterArchive {
                if let command = archive.restoreCommand { parameters["restore_command"] = command }
                if let command = archive.archiveCleanupCommand { parameters["archive_cleanup_command"] = command }
            }
        }
        if let remote = source.remote {
            // A standby cluster's leader: the other cluster's slot (none unless named) and its
            // archive, as `standby_cluster` says.
            text += "# The standby leader of a standby cluster: it follows another cluster's primary.\n"
            parameters["primary_slot_name"] = remote.slotName ?? ""
            if let command = remote.restoreCommand { parameters["restore_command"] = command }
            if let command = remote.archiveCleanupCommand { parameters["archive_cleanup_command"] = command }
            if let delay = remote.recoveryMinApplyDelay { parameters["recovery_min_apply_delay"] = delay }
        } else if configuration.useReplicationSlots {
            parameters["primary_slot_name"] = PostgresConf.slotName(forMember: configuration.memberName)
        }
        if !configuration.streams {
            // nostream: no replication connection; archive recovery (restore_command) and pg_wal.
            text += "# \(source.member) leads; this member is tagged nostream: it does not stream.\n"
            parameters["primary_conninfo"] = ""
            parameters["primary_slot_name"] = ""
        } else if !source.hasServer {
            text += "# \(source.member): no server to stream from; recovery from the archive (restore_command).\n"
            parameters["primary_conninfo"] = ""
            parameters["primary_slot_name"] = ""
        }
        text += PostgresConf.render(parameters) + "\n"
        return text
    }

    /// pg_hba.conf: local peer for the OS user, scram-sha-256 over TCP for the configured networks.
    public static func hbaText(_ configuration: LocalPostgresConfiguration) -> String {
        var lines = [
            "# Managed by Baton.",
            "# TYPE  DATABASE     USER  ADDRESS  METHOD",
            "local   all          all            peer",
            "local   replication  all            peer",
            "host    all          all   127.0.0.1/32  scram-sha-256",
            "host    all          all   ::1/128       scram-sha-256",
            "host    replication  \(configuration.replication.username)  127.0.0.1/32  scram-sha-256",
            "host    replication  \(configuration.replication.username)  ::1/128       scram-sha-256",
        ]
        for network in configuration.replicationNetworks {
            lines.append("host    replication  \(configuration.replication.username)  \(network)  scram-sha-256")
        }
        for network in configuration.clientNetworks {
            lines.append("host    all          all   \(network)  scram-sha-256")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// initdb's arguments after the data directory, the superuser and its password file: Baton's
    /// defaults (peer locally, scram-sha-256 over TCP, UTF8, the locale, checksums), each left out
    /// when `bootstrap.initdb` gives the same option, then `bootstrap.initdb`'s.
    public static func initdbArguments(_ configuration: LocalPostgresConfiguration) -> [String] {
        let given = Set(
            configuration.initdbOptions.map { option in
                String(option.drop { $0 == "-" }.prefix { $0 != "=" })
            })
        func overridden(_ names: String...) -> Bool { names.contains { given.contains($0) } }
        var arguments: [String] = []
        if !overridden("auth-local", "auth", "A") { arguments.append("--auth-local=peer") }
        if !overridden("auth-host", "auth", "A") { arguments.append("--auth-host=scram-sha-256") }
        if !overridden("encoding", "E") { arguments.append("--encoding=UTF8") }
        if !overridden("locale") { arguments.append("--locale=\(configuration.initdbLocale)") }
        if configuration.dataChecksums, !overridden("data-checksums", "k") { arguments.append("--data-checksums") }
        return arguments + configuration.initdbOptions
    }

    /// A libpq passfile: `host:port:database:user:password`, `:` and `\` escaped.
    /// The passfile a replica method's command gets: the replication role's line only.
    public static func replicationPassfileText(_ configuration: LocalPostgresConfiguration) -> String {
        let escape = { (value: String) in
            value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: ":", with: "\\:")
        }
        return "*:*:*:\(escape(configuration.replication.username)):\(escape(configuration.replication.password))\n"
    }

    public static func passfileText(_ configuration: LocalPostgresConfiguration) -> String {
        func escape(_ value: String) -> String {
            value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: ":", with: "\\:")
        }
        var credentials = [configuration.replication, configuration.superuser]
        if let rewind = configuration.rewind { credentials.append(rewind) }
        return credentials.map { "*:*:*:\(escape($0.username)):\(escape($0.password))" }.joined(separator: "\n") + "\n"
    }
}
