import Foundation

/// A role name and its password. `description` never shows the password.
public struct Credentials: Sendable, CustomStringConvertible {
    public var username: String
    public var password: String

    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    /// Reads the password from `passwordVariable` in the environment (nil when unset).
    public static func fromEnvironment(username: String, passwordVariable: String) -> Credentials? {
        guard let password = ProcessInfo.processInfo.environment[passwordVariable] else { return nil }
        return Credentials(username: username, password: password)
    }

    public var description: String { "\(username) (password hidden)" }
}

/// Everything `LocalPostgresNode` needs to know about its PostgreSQL instance.
public struct LocalPostgresConfiguration: Sendable {
    /// This member's name: `application_name` on its upstream, its slot name.
    public var memberName: String
    public var dataDirectory: String
    public var binDirectory: String
    /// `listen_addresses`.
    public var listenAddress: String
    /// The address other members and clients use to reach this server (primary_conninfo host).
    public var connectAddress: String
    /// The address the agent itself connects to.
    public var localAddress: String
    public var port: Int
    /// The OS account that owns the data directory and runs postgres (binaries are run through
    /// `setpriv` when the agent is root).
    public var osUser: String
    public var superuser: Credentials
    public var replication: Credentials
    /// The role pg_rewind connects as; the superuser when nil.
    public var rewind: Credentials?
    /// Extra postgresql.conf parameters; they override the managed defaults.
    public var parameters: [String: String]
    /// Networks (CIDR) allowed to connect for replication and for normal sessions (scram-sha-256).
    public var replicationNetworks: [String]
    public var clientNetworks: [String]
    public var usePgRewind: Bool
    /// When pg_rewind is impossible or fails: wipe the data directory and clone again.
    public var removeDataDirectoryOnRewindFailure: Bool
    /// Use one physical replication slot per member (`primary_slot_name`).
    public var useReplicationSlots: Bool
    /// False for a member tagged `nostream`: it does not stream (no `primary_conninfo`); it
    /// replays what `restore_command` fetches and what appears in pg_wal, as in Patroni.
    public var streams = true
    /// initdb's `--data-checksums`.
    public var dataChecksums: Bool
    public var initdbLocale: String
    /// Patroni's `bootstrap.initdb`: extra initdb arguments (`--encoding=UTF8`,
    /// `--data-checksums`); an option given here replaces Baton's default for it.
    public var initdbOptions: [String] = []
    /// The 0600 libpq passfile holding the replication and rewind passwords; default: next to the
    /// data directory (`<data_dir>.pgpass`), outside it so that backups do not copy it.
    public var passfile: String
    /// The server log (postgres' stderr); default `<data_dir>.log`.
    public var logFile: String
    /// `unix_socket_directories`; empty means TCP only.
    public var socketDirectory: String
    public var connectTimeout: Duration
    public var statementTimeout: Duration
    /// How long the status query may take before its answer counts as unknown (the connection is
    /// then abandoned: a backend stopped with SIGSTOP honours neither statement_timeout nor a cancel).
    public var statusTimeout: Duration = .seconds(5)
    public var startTimeout: Duration
    public var promoteTimeout: Duration
    /// Limit for pg_basebackup and pg_rewind.
    public var cloneTimeout: Duration
    /// `create_replica_methods`, in order: the first that succeeds makes the replica.
    public var replicaMethods: [ReplicaMethod] = [.basebackup(options: [])]
    /// Methods defined but not in `create_replica_methods`: used when `standby_cluster` names
    /// them, and (those with `no_leader`) to make a member while no server can be copied from.
    public var definedReplicaMethods: [ReplicaMethod] = []
    /// The cluster's name (`scope`): `cluster_name`, as Patroni sets it, and `--scope` for replica
    /// methods.
    public var scope = ""
    /// `postgresql.recovery_conf`: what every standby's recovery settings add (`restore_command`
    /// for WAL the upstream no longer has, `archive_cleanup_command`, `recovery_min_apply_delay`).
    public var recoveryConf: [String: String] = [:]
    /// `bootstrap.method` other than initdb: a new cluster restored from a backup.
    public var bootstrapMethod: BootstrapMethod?
    /// `bootstrap.post_bootstrap` (or `post_init`): run once after a new cluster is made.
    public var postBootstrap: [String]?

    public init(
        memberName: String, dataDirectory: String, binDirectory: String = "/usr/lib/postgresql/15/bin",
        listenAddress: String = "127.0.0.1", connectAddress: String = "127.0.0.1", localAddress: String = "127.0.0.1",
        port: Int = 5432, osUser: String = "postgres", superuser: Credentials, replication: Credentials,
        rewind: Credentials? = nil, parameters: [String: String] = [:],
        replicationNetworks: [String] = ["0.0.0.0/0", "::/0"], clientNetworks: [String] = ["0.0.0.0/0", "::/0"],
        usePgRewind: Bool = true, removeDataDirectoryOnRewindFailure: Bool = false, useReplicationSlots: Bool = true,
        dataChecksums: Bool = true, initdbLocale: String = "C.UTF-8", passfile: String? = nil, logFile: String? = nil,
        socketDirectory: String = "", connectTimeout: Duration = .seconds(3), statementTimeout: Duration = .seconds(10),
        startTimeout: Duration = .seconds(60), promoteTimeout: Duration = .seconds(30),
        cloneTimeout: Duration = .seconds(3600)
    ) {
        let trimmed =
            dataDirectory.hasSuffix("/") && dataDirectory.count > 1 ? String(dataDirectory.dropLast()) : dataDirectory
        self.memberName = memberName
        self.dataDirectory = trimmed
        self.binDirectory = binDirectory
        self.listenAddress = listenAddress
        self.connectAddress = connectAddress
        self.localAddress = localAddress
        self.port = port
        self.osUser = osUser
        self.superuser = superuser
        self.replication = replication
        self.rewind = rewind
        self.parameters = parameters
        self.replicationNetworks = replicationNetworks
        self.clientNetworks = clientNetworks
        self.usePgRewind = usePgRewind
        self.removeDataDirectoryOnRewindFailure = removeDataDirectoryOnRewindFailure
        self.useReplicationSlots = useReplicationSlots
        self.dataChecksums = dataChecksums
        self.initdbLocale = initdbLocale
        self.passfile = passfile ?? trimmed + ".pgpass"
        self.logFile = logFile ?? trimmed + ".log"
        self.socketDirectory = socketDirectory
        self.connectTimeout = connectTimeout
        self.statementTimeout = statementTimeout
        self.startTimeout = startTimeout
        self.promoteTimeout = promoteTimeout
        self.cloneTimeout = cloneTimeout
    }

    func binary(_ name: String) -> String { (binDirectory as NSString).appendingPathComponent(name) }

    /// The superuser session the agent uses for status and control.
    var localConnection: ConnectionParameters {
        ConnectionParameters(
            host: localAddress, port: port, user: superuser.username, password: superuser.password,
            database: "postgres", applicationName: "baton-\(memberName)",
            connectTimeout: connectTimeout, statementTimeout: statementTimeout)
    }

    var rewindCredentials: Credentials { rewind ?? superuser }
}

/// One of `create_replica_methods` (Patroni's layout).
public enum ReplicaMethod: Hashable, Sendable {
    /// pg_basebackup from the source, with the operator's extra options (`postgresql.basebackup`,
    /// each `--name=value` or `--switch`).
    case basebackup(options: [String])
    /// A command that fills the data directory (the WAL-G or pgBackRest way), run as the
    /// PostgreSQL OS user: `argv`, then `parameters` (`--name=value`), then — unless `noParams`
    /// — `--scope`, `--datadir`, `--role=replica` and `--connstring` (the source, its password in
    /// `PGPASSFILE`). `keepData`: what a failed attempt left is kept (else removed: the data
    /// directory was empty before it ran). `noLeader`: it needs no server (a restore from a
    /// backup), so it can make a replica while no member leads, or a standby cluster's leader
    /// from an archive only.
    case command(name: String, argv: [String], parameters: [String], keepData: Bool, noParams: Bool, noLeader: Bool)

    public var name: String {
        switch self {
        case .basebackup: "basebackup"
        case .command(let name, _, _, _, _, _): name
        }
    }

    /// Whether it can run with no server to copy from.
    public var worksWithoutServer: Bool {
        if case .command(_, _, _, _, _, let noLeader) = self { return noLeader }
        return false
    }
}

/// A custom bootstrap (`bootstrap.method`, Patroni's layout): `argv` fills the empty data
/// directory from a backup (with `--scope` and `--datadir` unless `noParams`), then PostgreSQL
/// recovers with `recoveryConf` (`restore_command`, a recovery target; `recovery_target_action`
/// promote) and the new cluster's primary comes out of it.
public struct BootstrapMethod: Hashable, Sendable {
    public var name: String
    public var argv: [String]
    public var noParams: Bool
    public var recoveryConf: [String: String]

    public init(name: String, argv: [String], noParams: Bool = false, recoveryConf: [String: String] = [:]) {
        self.name = name
        self.argv = argv
        self.noParams = noParams
        self.recoveryConf = recoveryConf
    }
}
