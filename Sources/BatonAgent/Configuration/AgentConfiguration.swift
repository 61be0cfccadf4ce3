import BatonAPI
import BatonCore
import Foundation
import Yams

/// Everything in agent.yml, typed and validated. `AgentConfiguration.load(path:)` rejects unknown
/// keys and wrong types with the key path and line, reads secrets from the environment
/// (`BATON_*`), and refuses timing that cannot be safe.
public struct AgentConfiguration: Sendable {
    public struct Credentials: Sendable, CustomStringConvertible {
        public var username: String
        public var password: String
        public var description: String { "\(username) (password hidden)" }
    }

    public struct Etcd: Sendable {
        public var hosts: [String]
        public var protocolScheme: String
        public var username: String?
        public var password: String?
        public var cacert: String?
        public var cert: String?
        public var key: String?

        /// Endpoints as URLs (`http://127.0.0.1:2379`).
        public var endpoints: [String] {
            hosts.map { $0.contains("://") ? $0 : "\(protocolScheme)://\($0)" }
        }
    }

    public struct RestAPI: Sendable {
        public var listenHost: String
        public var listenPort: Int
        public var connectAddress: String
        public var username: String?
        public var password: String?
        public var allowlist: [String]
        /// TLS: the server's certificate chain and key (PEM); the API speaks https when set.
        public var certfile: String? = nil
        public var keyfile: String? = nil
        /// CA bundle (PEM) that client certificates must chain to, and that peers' certificates are
        /// checked against when this agent calls them.
        public var cafile: String? = nil
        /// `none`, `optional` (a presented certificate must be valid) or `required`.
        public var verifyClient: String = "none"
        /// Event-loop threads of the REST API.
        public var threads: Int = 1
        /// At most this many connections at once (`max_connections`).
        public var maxConnections: Int = 1000
        /// Seconds a request (head and body) may take to arrive, from its first byte or the
        /// connection's accept (`request_timeout`).
        public var requestTimeout: Double = 10
        /// Seconds a connection may sit idle between requests (`idle_timeout`).
        public var idleTimeout: Double = 60
        /// Patroni's `http_extra_headers` (every answer) and `https_extra_headers` (with TLS).
        public var httpExtraHeaders: [(name: String, value: String)] = []
        public var httpsExtraHeaders: [(name: String, value: String)] = []
        /// Patroni's `allowlist_include_members`.
        public var allowlistIncludeMembers = false
        /// `keyfile_password`, `ciphers`, `request_queue_size` (the listen backlog).
        public var keyfilePassword: String?
        public var ciphers: String?
        public var requestQueueSize = 256

        /// `https` when TLS is configured, else `http`.
        public var scheme: String { certfile == nil ? "http" : "https" }
    }

    public struct Postgres: Sendable {
        /// `proxy_address`: published as the member's `proxy_url`.
        public var proxyAddress: String?
        public var listenHost: String
        public var port: Int
        public var connectAddress: String
        public var dataDirectory: String
        public var binDirectory: String
        public var osUser: String
        public var superuser: Credentials
        public var replication: Credentials
        public var rewind: Credentials?
        public var parameters: [String: String]
        public var usePgRewind: Bool
        public var removeDataDirectoryOnRewindFailure: Bool
        /// `postgresql.use_slots` in this file (it wins over the `config` key's); nil: not given.
        public var useReplicationSlots: Bool?
        public var dataChecksums: Bool
        public var replicationNetworks: [String]
        public var clientNetworks: [String]

        /// The address the agent's own session connects to: the listen address when it is one
        /// address, the loopback when postgres listens on all of them.
        public var localAddress: String {
            switch listenHost {
            case "0.0.0.0", "*", "", "localhost": return "127.0.0.1"
            case "::": return "::1"
            default: return listenHost
            }
        }
        /// `postgresql.pg_hba` and `pg_ident`: they win over the `config` key's.
        public var accessRules = AccessRules()
        /// `postgresql.pgpass`: where the 0600 libpq passfile goes (default `<data_dir>.pgpass`).
        public var pgpass: String?
        /// `bootstrap.initdb` as initdb arguments (`--encoding=UTF8`, `--data-checksums`).
        public var initdbOptions: [String] = []
        /// `postgresql.recovery_conf`: added to every standby's recovery settings.
        public var recoveryConf: [String: String] = [:]
        /// `bootstrap.post_bootstrap` (or `post_init`): run once after a new cluster is made.
        public var postBootstrap: [String]?
        /// `bootstrap.method` other than initdb, with its section.
        public var bootstrapMethod: BootstrapMethodSetting?
        /// `create_replica_methods` with each method's section (`basebackup` and its options
        /// when none is given).
        public var replicaMethods: [ReplicaMethodSetting] = [ReplicaMethodSetting(name: "basebackup")]
        /// Methods defined under `postgresql.NAME` without being listed in create_replica_methods:
        /// for `standby_cluster.create_replica_methods`, and (with `no_leader`) a restore while no
        /// member leads.
        public var definedReplicaMethods: [ReplicaMethodSetting] = []
    }

    /// `bootstrap.method` (a restore from a backup): the command, and the recovery settings
    /// PostgreSQL recovers with before the new cluster's primary comes out of it.
    public struct BootstrapMethodSetting: Hashable, Sendable {
        public var name: String
        public var argv: [String]
        public var noParams: Bool
        public var recoveryConf: [String: String]
    }

    /// One of `create_replica_methods`: `basebackup` (pg_basebackup, `options` its extra
    /// arguments) or a command (`argv`, then `options` as `--name=value`).
    public struct ReplicaMethodSetting: Hashable, Sendable {
        public var name: String
        public var argv: [String] = []
        public var options: [String] = []
        public var keepData = false
        public var noParams = false
        public var noLeader = false

        public init(name: String) { self.name = name }
    }

    public struct Watchdog: Sendable {
        public enum Mode: String, Sendable { case off, automatic, required }
        public var mode: Mode
        public var device: String
        public var safetyMargin: Double
    }

    public var scope: String
    public var namespace: String
    public var name: String
    public var etcd: Etcd
    public var restapi: RestAPI
    public var postgresql: Postgres
    /// `bootstrap.dcs`: the dynamic configuration written to the config key by the first member.
    public var dynamicConfig: DynamicConfig
    public var tags: Tags
    public var watchdog: Watchdog
    public var logLevel: String
    /// The `log` section (Patroni's): format, destination, rotation, per-logger levels.
    public var log = LogSettings()
    public var stopTimeout: Double
    /// Whether the agent runs the fence guard process (the backstop against a frozen agent).
    public var fenceGuard: Bool
    public var callbacks: [String: String]
    public var prePromote: String?
    /// Patroni's `postgresql.before_stop`.
    public var beforeStop: String?
    /// How long a hook (callback, pre_promote, before_stop) may run before it is killed
    /// (`postgresql.hook_timeout`, Baton's own; seconds).
    public var hookTimeout: Double

    /// Loads and validates `path`; environment variables override secrets.
    /// `requireSecrets: false` is for operator commands (list, switchover, …) that never connect
    /// to PostgreSQL: missing database passwords are then not an error.
    public static func load(
        path: String, environment: [String: String] = ProcessInfo.processInfo.environment, requireSecrets: Bool = true
    ) throws -> AgentConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError(
                path: "", message: "cannot read the file (does it exist and is it readable?)", file: path)
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigurationError(path: "", message: "the file is not UTF-8 text", file: path)
        }
        return try parse(text, file: path, environment: environment, requireSecrets: requireSecrets)
    }

    public static func parse(
        _ text: String, file: String? = nil, environment: [String: String] = [:], requireSecrets: Bool = true
    ) throws -> AgentConfiguration {
        let overlay: [PatroniEnvironment.Entry]
        do {
            overlay = try PatroniEnvironment.entries(environment)
        } catch {
            let what = error.kind == .mapping ? "a mapping (Name: value, …)" : "a list (a, b or [a, b])"
            throw ConfigurationError(
                path: "", message: "\(error.variable): expected \(what) that YAML can read; fix or unset it", file: file
            )
        }
        let root = try ConfigReader.parse(text, file: file, overlay: overlay)
        try root.rejectUnknownKeys([
            "scope", "namespace", "name", "etcd3", "restapi", "postgresql", "bootstrap", "tags", "watchdog",
            "log", "stop_timeout", "fence_guard", "ctl", "thread_pool_size", "thread_stack_size",
        ])
        // patronictl's own section (its client certificates): checked, not used by the agent.
        try root.section("ctl").rejectUnknownKeys([
            "insecure", "certfile", "keyfile", "keyfile_password", "cacert", "authentication",
        ])
        // Python thread tunings of Patroni (a count, a size like 512kB): no meaning for Baton.
        for key in ["thread_pool_size", "thread_stack_size"] { _ = try root.string(key) }
        // The first of `names` set and not empty: BATON_* before Patroni's PATRONI_* (which an
        // existing Patroni deployment may already set), both before the file.
        func env(_ names: String...) -> String? {
            names.lazy.compactMap { environment[$0].flatMap { $0.isEmpty ? nil : $0 } }.first
        }

        let scope = try env("BATON_SCOPE", "PATRONI_SCOPE") ?? root.requiredString("scope")
        let name = try env("BATON_NAME", "PATRONI_NAME") ?? root.requiredString("name")
        for (key, value) in [("scope", scope), ("name", name)] where !isSafeName(value) {
            throw root.error(key, "'\(value)' may contain only letters, digits, '-', '_' and '.'")
        }
        var namespace = try env("BATON_NAMESPACE", "PATRONI_NAMESPACE") ?? root.string("namespace", default: "/service")
        if !namespace.hasPrefix("/") { namespace = "/" + namespace }

        // etcd
        let etcdKey = "etcd3"
        let etcdSection = try root.section(etcdKey)
        try etcdSection.rejectUnknownKeys([
            "hosts", "host", "protocol", "username", "password", "cacert", "cert", "key", "url", "proxy",
        ])
        var hosts = try etcdSection.stringList("hosts") ?? (etcdSection.string("host").map { [$0] } ?? [])
        // Patroni's `proxy` (an etcd gRPC proxy or gateway) and `url`: one endpoint, taken before
        // hosts in that order, as Patroni takes them. A path after host:port is refused (the v3
        // JSON API is at /v3/ of the endpoint).
        var urlScheme: String?
        for key in ["url", "proxy"].reversed() {
            guard let url = try etcdSection.string(key) else { continue }
            if let at = url.firstIndex(of: "@"), url[..<at].contains(":") || url.contains("://") {
                throw etcdSection.error(
                    key, "a user or password in the URL is not taken: give etcd3.username and etcd3.password")
            }
            guard let address = HostPort(url: url), let scheme = url.split(separator: ":").first.map(String.init),
                scheme == "http" || scheme == "https",
                url.dropFirst(scheme.count + 3).drop(while: { $0 != "/" }).allSatisfy({ $0 == "/" })
            else {
                throw etcdSection.error(key, "expected http(s)://host:port without a path, got '\(url)'")
            }
            hosts = ["\(address.host.contains(":") ? "[\(address.host)]" : address.host):\(address.port ?? 2379)"]
            urlScheme = scheme
            break
        }
        // PATRONI_ETCD3_HOSTS is written 'host1:port1','host2:port2' (quotes optional).
        // PATRONI_ETCD3_HOSTS/HOST come through the file's keys (PatroniEnvironment, YAML list
        // forms included); BATON_ETCD_HOSTS wins over everything.
        if let override = env("BATON_ETCD_HOSTS") {
            hosts = override.split(separator: ",").map { part in
                String(part).trimmed.trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
            }
        }
        hosts = hosts.filter { !$0.isEmpty }
        guard !hosts.isEmpty else {
            throw root.error(etcdKey, "is required: give etcd3.hosts, e.g. [\"127.0.0.1:2379\"]")
        }
        for host in hosts where (host.contains("://") ? HostPort(url: host) : HostPort(parsing: host)) == nil {
            throw root.error(
                etcdKey, "hosts: '\(host)' is not host:port or http(s)://host:port (e.g. 127.0.0.1:2379)")
        }
        // A url's scheme wins over protocol, as in Patroni (http with an https:// URL would send
        // the credentials in clear).
        let scheme = try urlScheme ?? etcdSection.string("protocol") ?? "http"
        guard scheme == "http" || scheme == "https" else {
            throw etcdSection.error("protocol", "must be http or https, got '\(scheme)'")
        }
        let etcd = Etcd(
            hosts: hosts, protocolScheme: scheme,
            username: try env("BATON_ETCD_USERNAME", "PATRONI_ETCD3_USERNAME") ?? etcdSection.string("username"),
            password: try env("BATON_ETCD_PASSWORD", "PATRONI_ETCD3_PASSWORD") ?? etcdSection.string("password"),
            cacert: try env("PATRONI_ETCD3_CACERT") ?? etcdSection.string("cacert"),
            cert: try env("PATRONI_ETCD3_CERT") ?? etcdSection.string("cert"),
            key: try env("PATRONI_ETCD3_KEY") ?? etcdSection.string("key"))

        // REST API
        let api = try root.section("restapi")
        try api.rejectUnknownKeys([
            "listen", "connect_address", "authentication", "allowlist", "certfile", "keyfile", "cafile",
            "verify_client", "threads", "max_connections", "request_timeout", "idle_timeout", "http_extra_headers",
            "https_extra_headers", "allowlist_include_members", "keyfile_password", "ciphers", "request_queue_size",
            "server_tokens",
        ])
        let listen = try env("PATRONI_RESTAPI_LISTEN") ?? api.string("listen", default: "127.0.0.1:8008")
        guard let (listenHost, listenPort) = hostPort(listen) else {
            throw api.error("listen", "expected host:port, got '\(listen)'")
        }
        let connect =
            try env("PATRONI_RESTAPI_CONNECT_ADDRESS")
            ?? api.string(
                "connect_address", default: "\(listenHost == "0.0.0.0" ? "127.0.0.1" : listenHost):\(listenPort)")
        guard hostPort(connect) != nil else {
            throw api.error("connect_address", "expected host:port, got '\(connect)'")
        }
        let apiAuth = try api.section("authentication")
        try apiAuth.rejectUnknownKeys(["username", "password"])
        var restapi = RestAPI(
            listenHost: listenHost, listenPort: listenPort, connectAddress: connect,
            username: try env("BATON_RESTAPI_USERNAME", "PATRONI_RESTAPI_USERNAME") ?? apiAuth.string("username"),
            password: try env("BATON_RESTAPI_PASSWORD", "PATRONI_RESTAPI_PASSWORD") ?? apiAuth.string("password"),
            allowlist: try api.stringList("allowlist") ?? [])
        // Checked here, not only when the server starts: check-config and a reload refuse a bad one.
        for network in restapi.allowlist where (try? CIDRNetwork(network)) == nil {
            throw api.error("allowlist", "'\(network)' is not an address or a network like 10.0.0.0/8 or fd00::/8")
        }
        for key in ["http_extra_headers", "https_extra_headers"] {
            var headers: [(name: String, value: String)] = []
            for (name, box) in (try api.json(key) ?? [:]).sorted(by: { $0.key < $1.key }) {
                let value: String
                switch box.value.json {
                case .string(let text): value = text
                case .number(let number) where number.isFinite:
                    value = number.rounded() == number && abs(number) < 9e15 ? String(Int64(number)) : String(number)
                case .bool(let flag): value = flag ? "true" : "false"
                default: throw api.error(key, "\(name): expected a text value")
                }
                if let problem = ExtraHeaders.problem(name: name, value: value) { throw api.error(key, problem) }
                headers.append((name, value))
            }
            if key == "http_extra_headers" {
                restapi.httpExtraHeaders = headers
            } else {
                restapi.httpsExtraHeaders = headers
            }
        }
        restapi.allowlistIncludeMembers = try api.bool("allowlist_include_members") ?? false
        restapi.keyfilePassword = try env("BATON_RESTAPI_KEYFILE_PASSWORD") ?? api.string("keyfile_password")
        restapi.ciphers = try api.string("ciphers")
        if let ciphers = restapi.ciphers {
            do {
                _ = try APIServerTLS.cipherSuites(ciphers)
            } catch {
                throw api.error("ciphers", "\(error)".replacingOccurrences(of: "restapi.ciphers: ", with: ""))
            }
        }
        if let size = try api.int("request_queue_size") {
            guard (1...65535).contains(size) else {
                throw api.error("request_queue_size", "expected a number of connections from 1 to 65535, got \(size)")
            }
            restapi.requestQueueSize = size
        }
        // Patroni's Server header choice; Baton's header is `Baton` whatever it says (no versions).
        if let tokens = try api.string("server_tokens") {
            guard ["original", "productonly", "minimal"].contains(tokens.lowercased()) else {
                throw api.error("server_tokens", "expected Original, ProductOnly or Minimal, got '\(tokens)'")
            }
        }
        restapi.certfile = try env("PATRONI_RESTAPI_CERTFILE") ?? api.string("certfile")
        restapi.keyfile = try env("PATRONI_RESTAPI_KEYFILE") ?? api.string("keyfile")
        restapi.cafile = try env("PATRONI_RESTAPI_CAFILE") ?? api.string("cafile")
        restapi.verifyClient = try api.string("verify_client", default: "none")
        restapi.threads = try api.int("threads") ?? 1
        guard (1...64).contains(restapi.threads) else {
            throw api.error(
                "threads", "expected 1 to 64 event-loop threads, got \(restapi.threads) (1 serves >10,000 req/s)")
        }
        restapi.maxConnections = try api.int("max_connections") ?? 1000
        guard (1...100_000).contains(restapi.maxConnections) else {
            throw api.error(
                "max_connections", "expected 1 to 100000 connections at once, got \(restapi.maxConnections)")
        }
        restapi.requestTimeout = try api.seconds("request_timeout") ?? 10
        restapi.idleTimeout = try api.seconds("idle_timeout") ?? 60
        for (key, value) in [("request_timeout", restapi.requestTimeout), ("idle_timeout", restapi.idleTimeout)]
        where value < 1 {
            throw api.error(key, "expected at least 1 second, got \(value)")
        }
        guard ["none", "optional", "required"].contains(restapi.verifyClient) else {
            throw api.error("verify_client", "expected none, optional or required, got '\(restapi.verifyClient)'")
        }
        if (restapi.certfile == nil) != (restapi.keyfile == nil) {
            throw api.error(
                restapi.certfile == nil ? "certfile" : "keyfile",
                "give both restapi.certfile and restapi.keyfile (PEM files) for TLS, or neither")
        }
        if restapi.verifyClient != "none", restapi.cafile == nil || restapi.certfile == nil {
            throw api.error(
                "verify_client",
                "verifying client certificates needs TLS (certfile, keyfile) and a cafile to check them against")
        }
        for key in ["certfile", "keyfile", "cafile"] {
            if requireSecrets, let path = try api.string(key), !FileManager.default.isReadableFile(atPath: path) {
                throw api.error(key, "cannot read '\(path)' (does it exist, and may this user read it?)")
            }
        }
        if (restapi.username == nil) != (restapi.password == nil) {
            throw apiAuth.error("password", "give both restapi.authentication.username and password, or neither")
        }

        // PostgreSQL
        let pg = try root.section("postgresql")
        // Each replica method named in create_replica_methods may have its own section.
        let methodNames = try pg.stringList("create_replica_methods") ?? []
        let knownKeys: Set = [
            "listen", "connect_address", "data_dir", "bin_dir", "os_user", "authentication", "parameters",
            "use_pg_rewind", "remove_data_directory_on_rewind_failure", "use_slots", "data_checksums",
            "replication_networks", "client_networks", "callbacks", "pre_promote", "before_stop", "hook_timeout",
            "pg_hba", "pg_ident", "pgpass", "use_unix_socket", "use_unix_socket_repl", "pg_ctl_timeout",
            "remove_data_directory_on_diverged_timelines", "proxy_address", "create_replica_methods", "basebackup",
            "recovery_conf",
        ]
        // A method defined but not listed (a mapping with a command), as Patroni allows: one that
        // standby_cluster.create_replica_methods names, or a restore with no_leader.
        let definedOnly = (pg.node?.mapping ?? [:]).compactMap { key, value -> String? in
            guard let name = key.string, !knownKeys.contains(name), !methodNames.contains(name),
                Self.isMethodName(name),
                value.mapping?.keys.contains(where: { $0.string == "command" }) == true
            else { return nil }
            return name
        }.sorted()
        try pg.rejectUnknownKeys(
            knownKeys.union(methodNames.filter { Self.isMethodName($0) }).union(definedOnly))
        // Patroni keys whose value Baton accepts when it is what Baton does anyway.
        for key in ["use_unix_socket", "use_unix_socket_repl", "remove_data_directory_on_diverged_timelines"]
        where try pg.bool(key) == true {
            throw pg.error(
                key, "refused: \(PatroniKeys.refused["postgresql." + key] ?? "not supported") (false is accepted)")
        }
        _ = try pg.seconds("pg_ctl_timeout")  // Baton supervises postgres directly: stop_timeout applies
        let pgListen = try env("PATRONI_POSTGRESQL_LISTEN") ?? pg.string("listen", default: "127.0.0.1:5432")
        guard let (pgHost, pgPort) = hostPort(pgListen) else {
            throw pg.error("listen", "expected host:port, got '\(pgListen)'")
        }
        let pgConnect =
            try env("PATRONI_POSTGRESQL_CONNECT_ADDRESS")
            ?? pg.string("connect_address", default: "\(pgHost == "0.0.0.0" ? "127.0.0.1" : pgHost):\(pgPort)")
        guard hostPort(pgConnect) != nil else {
            throw pg.error("connect_address", "expected host:port, got '\(pgConnect)'")
        }
        let dataDir = try env("PATRONI_POSTGRESQL_DATA_DIR") ?? pg.requiredString("data_dir")
        guard dataDir.hasPrefix("/") else { throw pg.error("data_dir", "must be an absolute path, got '\(dataDir)'") }
        let auth = try pg.section("authentication")
        try auth.rejectUnknownKeys(["superuser", "replication", "rewind"])
        func credentials(_ role: String, defaultUser: String?, required: Bool) throws -> Credentials? {
            let section = try auth.section(role)
            try section.rejectUnknownKeys(["username", "password"])
            let upper = role.uppercased()
            let username =
                try env("BATON_\(upper)_USERNAME", "PATRONI_\(upper)_USERNAME") ?? section.string("username")
                ?? defaultUser
            let password = try env("BATON_\(upper)_PASSWORD", "PATRONI_\(upper)_PASSWORD") ?? section.string("password")
            guard let username else {
                if required { throw section.error("username", "is required") }
                // A password with no user to go with it is a mistake, not "no rewind role".
                if password != nil {
                    throw section.error(
                        "username",
                        "is missing while a password is set (BATON_\(upper)_PASSWORD or "
                            + "postgresql.authentication.\(role).password): set BATON_\(upper)_USERNAME or "
                            + "postgresql.authentication.\(role).username, or remove the password")
                }
                return nil
            }
            guard let password, !password.isEmpty else {
                if !requireSecrets { return Credentials(username: username, password: "") }
                if required || section.node != nil {
                    throw section.error(
                        "password",
                        "is required: set postgresql.authentication.\(role).password, or BATON_\(upper)_PASSWORD in the environment"
                    )
                }
                return nil
            }
            return Credentials(username: username, password: password)
        }
        guard let superuser = try credentials("superuser", defaultUser: "postgres", required: true),
            let replication = try credentials("replication", defaultUser: "replicator", required: true)
        else { throw auth.error("superuser", "is required") }
        let rewind = try credentials("rewind", defaultUser: nil, required: false)
        var parameters: [String: String] = [:]
        for (key, box) in try pg.json("parameters") ?? [:] {
            switch box.value {
            case .string(let text): parameters[key] = text
            case .number(let number):
                guard number.isFinite else {
                    throw pg.error(
                        "parameters", "\(key): \(number) is not a value PostgreSQL takes; give a finite number")
                }
                // Whole numbers print without a fraction while they fit an Int64 exactly.
                parameters[key] =
                    number.rounded() == number && abs(number) < 9e15 ? String(Int64(number)) : String(number)
            case .bool(let flag): parameters[key] = flag ? "on" : "off"
            default: throw pg.error("parameters", "\(key): expected a string, number or boolean")
            }
        }
        let callbackSection = try pg.section("callbacks")
        try callbackSection.rejectUnknownKeys(Set(Self.callbackEvents))
        var callbacks: [String: String] = [:]
        for key in Self.callbackEvents {
            if let command = try callbackSection.string(key) { callbacks[key] = command }
        }
        let hookTimeout = try pg.double("hook_timeout") ?? 60
        guard hookTimeout.isFinite, hookTimeout > 0, hookTimeout <= 3600 else {
            throw pg.error("hook_timeout", "expected seconds between 0 and 3600, got \(hookTimeout)")
        }
        let accessRules = AccessRules(
            hba: try pg.lines("pg_hba", check: AccessRules.hbaProblem),
            ident: try pg.lines("pg_ident", check: AccessRules.identProblem))
        if let hba = accessRules.hba, let problem = AccessRules.hbaListProblem(hba) {
            throw pg.error("pg_hba", problem)
        }
        var postgres = Postgres(
            listenHost: pgHost, port: pgPort, connectAddress: pgConnect, dataDirectory: dataDir,
            binDirectory: try env("PATRONI_POSTGRESQL_BIN_DIR")
                ?? pg.string("bin_dir", default: "/usr/lib/postgresql/15/bin"),
            osUser: try pg.string("os_user", default: "postgres"), superuser: superuser, replication: replication,
            rewind: rewind, parameters: parameters, usePgRewind: try pg.bool("use_pg_rewind") ?? true,
            removeDataDirectoryOnRewindFailure: try pg.bool("remove_data_directory_on_rewind_failure") ?? false,
            useReplicationSlots: try pg.bool("use_slots"), dataChecksums: try pg.bool("data_checksums") ?? true,
            replicationNetworks: try pg.stringList("replication_networks") ?? ["127.0.0.1/32"],
            clientNetworks: try pg.stringList("client_networks") ?? ["127.0.0.1/32"])
        if let proxy = try pg.string("proxy_address") {
            guard hostPort(proxy) != nil else {
                throw pg.error(
                    "proxy_address", "expected host:port (a pooler or proxy in front of this member), got '\(proxy)'")
            }
            postgres.proxyAddress = proxy
        }
        postgres.accessRules = accessRules
        postgres.replicaMethods = try Self.replicaMethods(pg, names: methodNames)
        postgres.definedReplicaMethods = try Self.replicaMethods(pg, names: definedOnly, listed: false)
        postgres.recoveryConf = try Self.standbyRecoveryConf(pg)
        if let pgpass = try pg.string("pgpass") {
            guard pgpass.hasPrefix("/"), !pgpass.hasSuffix("/"), !pgpass.split(separator: "/").contains("..") else {
                throw pg.error("pgpass", "expected the absolute path of a file, got '\(pgpass)'")
            }
            guard pgpass != dataDir, !pgpass.hasPrefix(dataDir.hasSuffix("/") ? dataDir : dataDir + "/") else {
                throw pg.error(
                    "pgpass",
                    "'\(pgpass)' is inside the data directory, where backups and clones would copy it; put it beside")
            }
            postgres.pgpass = pgpass
        }

        // bootstrap.dcs
        let bootstrap = try root.section("bootstrap")
        let methodName = try bootstrap.string("method") ?? "initdb"
        try bootstrap.rejectUnknownKeys(
            Set(
                ["dcs", "initdb", "method", "post_bootstrap", "post_init"]
                    + (methodName == "initdb" ? [] : [methodName])))
        let postBootstrap = try bootstrap.string("post_bootstrap")
        let postInit = try bootstrap.string("post_init")
        if postBootstrap != nil, postInit != nil {
            throw bootstrap.error("post_init", "give post_bootstrap or post_init (the same setting), not both")
        }
        if let command = postBootstrap ?? postInit {
            postgres.postBootstrap = try bootstrap.commandLine(
                postBootstrap != nil ? "post_bootstrap" : "post_init", command)
        }
        if methodName != "initdb" { postgres.bootstrapMethod = try Self.bootstrapMethod(bootstrap, name: methodName) }
        postgres.initdbOptions = try Self.initdbOptions(bootstrap)
        var document: [String: JSONValue] = [
            "ttl": .number(Double(DynamicConfig.defaultTTL)),
            "loop_wait": .number(Double(DynamicConfig.defaultLoopWait)),
            "retry_timeout": .number(Double(DynamicConfig.defaultRetryTimeout)),
            "maximum_lag_on_failover": .number(Double(DynamicConfig.defaultMaximumLagOnFailover)),
        ]
        if let dcs = try bootstrap.json("dcs") {
            let known: Set<String> = [
                "ttl", "loop_wait", "retry_timeout", "maximum_lag_on_failover", "primary_start_timeout",
                "maximum_lag_on_syncnode",
                "check_timeline",
                "synchronous_mode", "synchronous_mode_strict", "synchronous_node_count", "failsafe_mode", "pause",
                "postgresql", "max_timelines_history", "primary_stop_timeout", "member_slots_ttl", "slots",
                "ignore_slots", "standby_cluster", "pooler_pause_timeout", "pooler_pause_required",
            ]
            let dcsSection = try bootstrap.section("dcs")
            try dcsSection.rejectUnknownKeys(known)
            for (key, box) in dcs { document[key] = box.value.json }
        }
        let dynamic = DynamicConfig(document)
        let problems = dynamic.validationErrors() + dynamic.slotProblems()
        if let first = problems.first {
            throw ConfigurationError(
                path: "bootstrap.dcs", line: try bootstrap.section("dcs").line, message: first, file: file)
        }

        // tags, watchdog, log
        var tags: [String: JSONValue] = [:]
        for (key, box) in try root.json("tags") ?? [:] { tags[key] = box.value.json }
        let watchdogSection = try root.section("watchdog")
        try watchdogSection.rejectUnknownKeys(["mode", "device", "safety_margin"])
        let modeText = try watchdogSection.string("mode", default: "off")
        guard let mode = Watchdog.Mode(rawValue: modeText) else {
            throw watchdogSection.error("mode", "must be off, automatic or required, got '\(modeText)'")
        }
        let logSettings = try Self.logSettings(try root.section("log"), env: env)

        return AgentConfiguration(
            scope: scope, namespace: namespace, name: name, etcd: etcd, restapi: restapi, postgresql: postgres,
            dynamicConfig: dynamic, tags: Tags(tags),
            watchdog: Watchdog(
                mode: mode, device: try watchdogSection.string("device", default: "/dev/watchdog"),
                safetyMargin: try watchdogSection.seconds("safety_margin") ?? 5),
            logLevel: "\(logSettings.level)", log: logSettings, stopTimeout: try root.seconds("stop_timeout") ?? 30,
            fenceGuard: try root.bool("fence_guard") ?? true, callbacks: callbacks,
            prePromote: try pg.string("pre_promote"), beforeStop: try pg.string("before_stop"),
            hookTimeout: hookTimeout)
    }

    /// Patroni's `log` section and its `PATRONI_LOG_*` variables.
    static func logSettings(_ log: ConfigReader, env: (String...) -> String?) throws -> LogSettings {
        try log.rejectUnknownKeys([
            "level", "type", "format", "dateformat", "static_fields", "max_queue_size", "dir", "mode", "file_num",
            "file_size", "loggers", "traceback_level", "deduplicate_heartbeat_logs",
        ])
        var settings = LogSettings()
        let levelText = try env("PATRONI_LOG_LEVEL") ?? log.string("level", default: "info")
        guard let level = LogSettings.level(levelText) else {
            throw log.error(
                "level",
                "must be one of trace, debug, info, notice, warning, error, critical (or DEBUG, INFO, WARNING, …)")
        }
        settings.level = level
        let kind = try env("PATRONI_LOG_TYPE") ?? log.string("type", default: "plain")
        guard let parsedKind = LogSettings.Kind(rawValue: kind.lowercased()) else {
            throw log.error("type", "must be plain or json, got '\(kind)'")
        }
        settings.kind = parsedKind
        // format: a string (plain and json), a list of fields or a mapping field → key (json).
        func pieces(_ text: String) throws -> [LogSettings.Piece] {
            switch LogSettings.parsePlainFormat(text) {
            case .success(let pieces): return pieces
            case .failure(let problem): throw log.error("format", problem.message)
            }
        }
        func field(_ name: String) throws -> LogSettings.Field {
            guard let field = LogSettings.Field(rawValue: name) else {
                throw log.error(
                    "format",
                    "unknown field '\(name)'; known: \(LogSettings.Field.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            return field
        }
        // PATRONI_LOG_FORMAT comes through the file's keys (PatroniEnvironment): a %-format or a
        // list of field names, as Patroni reads it.
        if let node = log.value("format") {
            if node.scalar != nil, let text = node.string {
                settings.plainFormat = try pieces(text)
            } else if settings.kind == .json, let items = node.sequence {
                settings.jsonFields = try items.map { item in
                    guard let name = item.string, item.scalar != nil else {
                        throw log.error("format", "expected field names")
                    }
                    return (try field(name), name)
                }
            } else if settings.kind == .json, let mapping = node.mapping {
                settings.jsonFields = try mapping.map { key, value in
                    guard let name = key.string, let renamed = value.string, value.scalar != nil else {
                        throw log.error("format", "expected field: key pairs")
                    }
                    return (try field(name), renamed)
                }
            } else {
                throw log.error("format", "expected a format string (a list or mapping of fields with type: json)")
            }
        }
        if settings.kind == .json, let pieces = settings.plainFormat {
            // A format string with type json names the fields to write, as in Patroni.
            settings.jsonFields = pieces.compactMap { piece -> (LogSettings.Field, String)? in
                if case .field(let field, _, _) = piece { return (field, field.rawValue) }
                return nil
            }
            settings.plainFormat = nil
        }
        settings.dateFormat = try env("PATRONI_LOG_DATEFORMAT") ?? log.string("dateformat")
        if let dateFormat = settings.dateFormat,
            dateFormat.isEmpty || dateFormat.count > 100
                || dateFormat.unicodeScalars.contains(where: { $0.value < 0x20 })
        {
            throw log.error("dateformat", "expected a strftime pattern like %Y-%m-%d %H:%M:%S")
        }
        for (key, box) in try log.json("static_fields") ?? [:] {
            guard case .string(let text) = box.value.json else {
                throw log.error("static_fields", "\(key): expected a string")
            }
            settings.staticFields[key] = text
        }
        func bounded(_ key: String, _ variable: String, _ range: ClosedRange<Int>, _ what: String) throws -> Int? {
            let value: Int?
            if let text = env(variable) {
                guard let number = Int(text) else {
                    throw log.error(key, "\(variable)='\(text)' is not a whole number")
                }
                value = number
            } else {
                value = try log.int(key)
            }
            if let value, !range.contains(value) {
                throw log.error(key, "expected \(what) from \(range.lowerBound) to \(range.upperBound), got \(value)")
            }
            return value
        }
        settings.maxQueueSize =
            try bounded("max_queue_size", "PATRONI_LOG_MAX_QUEUE_SIZE", 1...1_000_000, "lines") ?? 1000
        settings.fileSize =
            try bounded("file_size", "PATRONI_LOG_FILE_SIZE", 0...1_000_000_000_000, "bytes") ?? 25_000_000
        settings.fileNum = try bounded("file_num", "PATRONI_LOG_FILE_NUM", 0...1000, "files") ?? 4
        if let dir = try env("PATRONI_LOG_DIR") ?? log.string("dir") {
            guard dir.hasPrefix("/") else { throw log.error("dir", "expected an absolute directory, got '\(dir)'") }
            settings.directory = dir
        }
        if let modeText = try env("PATRONI_LOG_MODE") ?? log.string("mode") {
            // 0644 (octal, as chmod takes it), 0o644, or Python's decimal 420.
            let digits = modeText.hasPrefix("0o") ? String(modeText.dropFirst(2)) : modeText
            let mode = digits.hasPrefix("0") || modeText.hasPrefix("0o") ? Int(digits, radix: 8) : Int(digits)
            guard let mode, (0...0o777).contains(mode) else {
                throw log.error("mode", "expected file permissions like 0644, got '\(modeText)'")
            }
            settings.mode = mode
        }
        let loggers = try log.section("loggers")
        for (name, box) in try log.json("loggers") ?? [:] {
            guard case .string(let text) = box.value.json, let level = LogSettings.level(text) else {
                throw loggers.error(name, "expected a level (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
            }
            guard let modules = LogSettings.modules(forLogger: name) else {
                throw loggers.error(
                    name,
                    "is not a logger Baton has; use patroni, patroni.ha, patroni.dcs, patroni.postgresql, patroni.api, "
                        + "urllib3, or Baton's modules (BatonHA, BatonEtcd, BatonPostgres, BatonAPI, BatonAgent)")
            }
            // Several loggers on one module (urllib3 and patroni.dcs on BatonEtcd): the most
            // verbose wins, whatever order the mapping is read in.
            for module in modules { settings.moduleLevels[module] = min(level, settings.moduleLevels[module] ?? level) }
        }
        _ = try log.string("traceback_level")
        _ = try log.bool("deduplicate_heartbeat_logs")
        return settings
    }

    /// initdb options Baton sets itself (Patroni refuses the first ones too).
    static let managedInitdbOptions: Set<String> = [
        "pgdata", "D", "nosync", "N", "no-sync", "pwfile", "sync-only", "S", "version", "V", "username", "U", "help",
        "show", "pwprompt", "W", "no-clean", "n", "noclean",
    ]
    /// PostgreSQL 15's initdb options an operator may give, by their exact names: initdb (getopt)
    /// takes any unique prefix (`user` for `username`), so nothing else is passed on.
    static let operatorInitdbOptions: Set<String> = [
        "auth", "A", "auth-host", "auth-local", "encoding", "E", "allow-group-access", "g", "icu-locale",
        "locale", "lc-collate", "lc-ctype", "lc-messages", "lc-monetary", "lc-numeric", "lc-time", "no-locale",
        "locale-provider", "text-search-config", "T", "waldir", "X", "wal-segsize", "data-checksums", "k",
        "no-instructions", "debug", "d", "discard-caches",
    ]

    /// A replica or bootstrap method's name: the rule `standby_cluster.create_replica_methods`
    /// is checked by too.
    static func isMethodName(_ name: String) -> Bool { StandbyCluster.isMethodName(name) }

    /// pg_basebackup options Baton sets itself (Patroni's list): not taken from `basebackup`.
    static let managedBasebackupOptions: Set = [
        "pgdata", "format", "wal-method", "xlog-method", "gzip", "version", "dbname", "host", "port", "username",
        "password", "no-password", "progress", "D", "F", "X", "h", "p", "U", "d", "w", "W",
    ]
    /// The pg_basebackup (PostgreSQL 15) options `basebackup` may give, by their full names: an
    /// abbreviation (`--ho`) or an option that changes where the copy goes or what it contains
    /// (`--target`, `--waldir`, `--write-recovery-conf`, `--slot`, `--no-sync`) is refused.
    static let operatorBasebackupOptions: Set = [
        "checkpoint", "max-rate", "verbose", "label", "no-verify-checksums", "manifest-checksums",
        "manifest-force-encode", "no-manifest", "tablespace-mapping", "status-interval", "no-estimate-size",
        "compress", "no-manifest",
    ]

    /// `create_replica_methods` and each method's section, as Patroni reads them.
    /// `listed`: the names come from `create_replica_methods` (empty means basebackup); else they
    /// are sections defined without being listed.
    static func replicaMethods(_ pg: ConfigReader, names: [String], listed: Bool = true) throws
        -> [ReplicaMethodSetting]
    {
        let names = names.isEmpty && listed ? ["basebackup"] : names
        var seen: Set<String> = []
        var methods: [ReplicaMethodSetting] = []
        for name in names {
            guard isMethodName(name) else {
                throw pg.error(
                    "create_replica_methods", "'\(name)' is not a method name (lower-case letters, digits, _ and -)")
            }
            guard seen.insert(name).inserted else {
                throw pg.error("create_replica_methods", "'\(name)' is listed twice")
            }
            var method = ReplicaMethodSetting(name: name)
            if name == "basebackup" {
                method.options = try basebackupOptions(pg)
                methods.append(method)
                continue
            }
            let section = try pg.section(name)
            guard section.node != nil else {
                throw pg.error(
                    name,
                    "is missing: create_replica_methods names '\(name)'; give postgresql.\(name).command (and keep_data, no_params, no_leader as needed)"
                )
            }
            method.argv = try section.commandLine("command", try section.requiredString("command"))
            method.keepData = try section.bool("keep_data") ?? false
            method.noParams = try section.bool("no_params") ?? false
            // no_master: Patroni's older name for no_leader.
            method.noLeader = try section.bool("no_leader") ?? section.bool("no_master") ?? false
            for (key, value) in section.node?.mapping ?? [:] {
                guard let option = key.string,
                    !["command", "keep_data", "no_params", "no_leader", "no_master"].contains(option)
                else { continue }
                if ["scope", "datadir", "role", "connstring"].contains(option) {
                    throw section.error(option, "is passed by Baton itself (--\(option)); leave it out")
                }
                guard isMethodName(option.replacingOccurrences(of: ".", with: "_")), let text = value.string,
                    value.scalar != nil, !text.contains("\n")
                else {
                    throw section.error(option, "expected a single value on one line for --\(option)")
                }
                method.options.append("--\(option)=\(text)")
            }
            methods.append(method)
        }
        return methods
    }

    /// `postgresql.recovery_conf`: the settings a standby may add. Recovery targets are refused:
    /// reaching one would end a standby's recovery without the leader key.
    static func standbyRecoveryConf(_ pg: ConfigReader) throws -> [String: String] {
        let allowed: Set = [
            "restore_command", "archive_cleanup_command", "recovery_end_command", "recovery_min_apply_delay",
        ]
        let section = try pg.section("recovery_conf")
        var settings: [String: String] = [:]
        for (key, value) in section.node?.mapping ?? [:] {
            guard let name = key.string, allowed.contains(name) else {
                throw section.error(
                    key.string ?? "?",
                    key.string?.hasPrefix("recovery_target") == true
                        ? "a recovery target would end a standby's recovery without the leader key: not for standbys (bootstrap.<method>.recovery_conf takes one)"
                        : "not a standby recovery setting Baton passes on (known: \(allowed.sorted().joined(separator: ", ")))"
                )
            }
            guard value.scalar != nil, let text = value.string,
                !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
            else { throw section.error(name, "expected a single value on one line") }
            settings[name] = text
        }
        return settings
    }

    /// The recovery settings a custom bootstrap may give (`recovery_conf`).
    static let bootstrapRecoveryKeys: Set = [
        "restore_command", "archive_cleanup_command", "recovery_end_command", "recovery_target",
        "recovery_target_lsn", "recovery_target_name", "recovery_target_time", "recovery_target_xid",
        "recovery_target_inclusive", "recovery_target_timeline", "recovery_target_action",
    ]

    /// `bootstrap.<method>`: `command` (required), `no_params`, `keep_existing_recovery_conf`
    /// (accepted: Baton always writes its own), `recovery_conf`.
    static func bootstrapMethod(_ bootstrap: ConfigReader, name: String) throws -> BootstrapMethodSetting {
        guard isMethodName(name) else {
            throw bootstrap.error("method", "'\(name)' is not a method name (lower-case letters, digits, _ and -)")
        }
        let section = try bootstrap.section(name)
        guard section.node != nil else {
            throw bootstrap.error(
                "method", "names '\(name)' but bootstrap.\(name) is missing: give its command and recovery_conf")
        }
        try section.rejectUnknownKeys(["command", "no_params", "keep_existing_recovery_conf", "recovery_conf"])
        let argv = try section.commandLine("command", try section.requiredString("command"))
        _ = try section.bool("keep_existing_recovery_conf")
        var recovery: [String: String] = [:]
        let recoverySection = try section.section("recovery_conf")
        for (key, value) in recoverySection.node?.mapping ?? [:] {
            guard let option = key.string, bootstrapRecoveryKeys.contains(option) else {
                throw recoverySection.error(
                    key.string ?? "?",
                    "not a recovery setting Baton passes on (known: \(bootstrapRecoveryKeys.sorted().joined(separator: ", ")))"
                )
            }
            guard value.scalar != nil, let text = value.string,
                !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
            else { throw recoverySection.error(option, "expected a single value on one line") }
            recovery[option] = text
        }
        if let action = recovery["recovery_target_action"], action != "promote" {
            throw recoverySection.error(
                "recovery_target_action",
                "must be promote (Baton waits for the restored server to become the new cluster's primary), got \(action)"
            )
        }
        return BootstrapMethodSetting(
            name: name, argv: argv, noParams: try section.bool("no_params") ?? false,
            recoveryConf: recovery)
    }

    /// `postgresql.basebackup`: a mapping (`max-rate: 100M`) or a list of switches and mappings
    /// (`[verbose, {max-rate: 100M}]`), as Patroni takes it.
    static func basebackupOptions(_ pg: ConfigReader) throws -> [String] {
        guard let node = pg.value("basebackup") else { return [] }
        var options: [String] = []
        func option(_ name: String, _ value: String?, line: Int?) throws {
            let bare = name.hasPrefix("--") ? String(name.dropFirst(2)) : name
            func fail(_ message: String) -> ConfigurationError {
                ConfigurationError(path: "postgresql.basebackup", line: line, message: message, file: pg.file)
            }
            guard !bare.isEmpty, bare.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") })
            else { throw fail("'\(name)' is not a pg_basebackup option name") }
            guard !managedBasebackupOptions.contains(bare) else {
                throw fail("'\(bare)' is set by Baton (data directory, format, WAL method, connection); leave it out")
            }
            guard operatorBasebackupOptions.contains(bare) else {
                throw fail(
                    "'\(bare)' is not an option Baton passes to pg_basebackup (give the full name; known: "
                        + operatorBasebackupOptions.sorted().joined(separator: ", ") + ")")
            }
            if let value {
                guard !value.contains("\n") else { throw fail("the value of '\(bare)' must be on one line") }
                options.append("--\(bare)=\(value)")
            } else {
                options.append("--\(bare)")
            }
        }
        func add(_ mapping: Node.Mapping) throws {
            for (key, value) in mapping {
                guard let name = key.string, value.scalar != nil, let text = value.string else {
                    throw pg.error("basebackup", "expected option: value with a single value, e.g. max-rate: 100M")
                }
                try option(name, text, line: key.line)
            }
        }
        if let mapping = node.mapping {
            try add(mapping)
        } else if let sequence = node.sequence {
            for item in sequence {
                if let mapping = item.mapping {
                    try add(mapping)
                } else if item.scalar != nil, let name = item.string {
                    try option(name, nil, line: item.line)
                } else {
                    throw pg.error("basebackup", "expected a switch (verbose) or option: value (max-rate: 100M)")
                }
            }
        } else {
            throw pg.error("basebackup", "expected a mapping or a list, e.g. [verbose, {max-rate: 100M}]")
        }
        return options
    }

    /// `bootstrap.initdb` as Patroni writes it: a list of switches (`data-checksums`) and
    /// one-key mappings (`encoding: UTF8`), or one mapping; as initdb arguments.
    static func initdbOptions(_ bootstrap: ConfigReader) throws -> [String] {
        guard let node = bootstrap.value("initdb") else { return [] }
        var pairs: [(name: String, value: String?, line: Int?)] = []
        func scalarText(_ node: Node) -> String? { node.scalar != nil ? node.string : nil }
        func add(mapping: Node.Mapping) throws {
            for (key, value) in mapping {
                guard let name = key.string, let text = scalarText(value) else {
                    throw bootstrap.error("initdb", "expected option: value with a single value, e.g. encoding: UTF8")
                }
                pairs.append((name, text, key.line))
            }
        }
        if let mapping = node.mapping {
            try add(mapping: mapping)
        } else if let sequence = node.sequence {
            for item in sequence {
                if let mapping = item.mapping {
                    try add(mapping: mapping)
                } else if let name = scalarText(item) {
                    pairs.append((name, nil, item.line))
                } else {
                    throw bootstrap.error(
                        "initdb", "expected a switch (data-checksums) or option: value (encoding: UTF8)")
                }
            }
        } else {
            throw bootstrap.error("initdb", "expected a list, e.g. [data-checksums, {encoding: UTF8}]")
        }
        return try pairs.map { pair in
            let name = pair.name.hasPrefix("--") ? String(pair.name.dropFirst(2)) : pair.name
            let where_ = ConfigurationError(
                path: "bootstrap.initdb", line: pair.line, message: "", file: bootstrap.file)
            func fail(_ message: String) -> ConfigurationError {
                var error = where_
                error.message = message
                return error
            }
            guard !name.isEmpty, name.first?.isLetter == true,
                name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") })
            else { throw fail("'\(pair.name)' is not an initdb option name") }
            guard !managedInitdbOptions.contains(name) else {
                throw fail("'\(name)' is set by Baton (data directory, superuser, password file); leave it out")
            }
            guard operatorInitdbOptions.contains(name) else {
                throw fail(
                    "'\(name)' is not an initdb option of PostgreSQL 15 (give the full name; known: "
                        + operatorInitdbOptions.filter { $0.count > 1 }.sorted().joined(separator: ", ") + ")")
            }
            guard let value = pair.value else { return "--\(name)" }
            guard !value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
                throw fail("the value of '\(name)' contains a control character")
            }
            return "--\(name)=\(value)"
        }
    }

    /// Patroni's callback events, all accepted.
    public static let callbackEvents = ["on_reload", "on_restart", "on_role_change", "on_start", "on_stop"]

    static func isSafeName(_ text: String) -> Bool {
        !text.isEmpty
            && text.unicodeScalars.allSatisfy {
                CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0)
            }
    }

    /// `host:port` (IPv6 in brackets), or nil.
    static func hostPort(_ text: String) -> (String, Int)? {
        guard let address = HostPort(parsing: text), let port = address.port else { return nil }
        return (address.host, port)
    }
}

extension JSONValueBox.Value {
    var json: JSONValue {
        switch self {
        case .null: return .null
        case .bool(let value): return .bool(value)
        case .number(let value): return .number(value)
        case .string(let value): return .string(value)
        case .array(let values): return .array(values.map(\.json))
        case .object(let values): return .object(values.mapValues(\.json))
        }
    }
}
