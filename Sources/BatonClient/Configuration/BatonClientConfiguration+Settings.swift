import BatonCore
import BatonEtcd

extension BatonClientConfiguration {
    /// Every key `init(settings:)` understands.
    public static let settingKeys: [String] = [
        "host", "port", "primary_hosts", "read_replicas",
        "etcd_hosts", "namespace", "scope", "etcd_user", "etcd_password", "agents", "poll_interval",
        "etcd_request_timeout", "etcd_check_interval",
        "user", "password", "passfile", "sslmode", "sslrootcert", "sslcert", "sslkey", "dbname", "application_name",
        "connect_timeout", "statement_timeout",
        "min_connections", "max_connections", "acquire_timeout", "max_lifetime", "idle_timeout",
        "health_check_after_idle", "replica_strategy", "max_replica_lag_bytes", "max_replica_lag",
        "no_replica_policy", "replica_weights", "read_your_writes_timeout", "primary_wait_timeout",
        "topology_timeout", "degraded_after", "drain_timeout", "breaker_failure_ratio",
        "breaker_minimum_requests", "breaker_window", "breaker_open_timeout", "breaker_half_open_requests",
    ]

    /// Builds a configuration from flat `key: value` settings, as they come from a YAML section,
    /// environment variables or a command line. Lists are comma-separated; durations are seconds
    /// (`1.5`) or carry a unit (`250ms`, `2s`, `1m`).
    ///
    /// The topology source follows from the keys: `etcd_hosts` + `scope` (etcd, with `agents` as
    /// REST fallback), else `agents` (REST polling), else `primary_hosts` / `host` (+
    /// `read_replicas`) as fixed lists. `host` (one server) and `primary_hosts` (a list) exclude
    /// each other.
    public init(settings: [String: String]) throws {
        let reader = SettingsReader(settings)
        try reader.rejectUnknown(Self.settingKeys)
        if settings["host"] != nil && settings["primary_hosts"] != nil {
            throw BatonClientError.configuration(
                "both 'host' and 'primary_hosts' are set: 'host' names one server and 'primary_hosts' a list of "
                    + "candidate primaries; keep only one of them (e.g. primary_hosts: \(settings["host"] ?? "a:5432"),b:5432)"
            )
        }
        let defaultPort = try reader.int("port", in: 1...65535) ?? 5432
        let etcdHosts = reader.list("etcd_hosts")
        let agents = reader.list("agents")
        let pollInterval = try reader.duration("poll_interval") ?? .seconds(1)
        let source: TopologySource
        if !etcdHosts.isEmpty {
            guard let scope = reader.string("scope") else {
                throw BatonClientError.configuration(
                    "etcd_hosts is set but scope is missing: give the cluster's scope (the agents' 'scope:')")
            }
            var credentials: EtcdConfiguration.Credentials?
            if let user = reader.string("etcd_user") {
                credentials = EtcdConfiguration.Credentials(user: user, password: reader.string("etcd_password") ?? "")
            }
            source = .etcd(
                EtcdTopologyOptions(
                    endpoints: etcdHosts, namespace: reader.string("namespace") ?? "/service", scope: scope,
                    credentials: credentials,
                    requestTimeout: try reader.duration("etcd_request_timeout") ?? .seconds(2),
                    fallbackAgents: agents, fallbackPollInterval: pollInterval,
                    checkInterval: try reader.duration("etcd_check_interval") ?? .seconds(1)))
        } else if !agents.isEmpty {
            source = .rest(agents: agents, pollInterval: pollInterval)
        } else {
            let primaries = try reader.endpoints("primary_hosts", defaultPort: defaultPort)
            let single = try reader.endpoints("host", defaultPort: defaultPort)
            guard single.count <= 1 else {
                throw BatonClientError.configuration(
                    "host lists \(single.count) servers; 'host' takes one, use 'primary_hosts' for a list")
            }
            let replicas = try reader.endpoints("read_replicas", defaultPort: defaultPort)
            guard !(primaries + single).isEmpty else {
                throw BatonClientError.configuration(
                    "no topology source: set etcd_hosts + scope (etcd), agents (REST), or host / primary_hosts "
                        + "(+ read_replicas) for fixed servers")
            }
            source = .fixed(primaryHosts: primaries + single, readReplicas: replicas)
        }
        guard let user = reader.string("user") else {
            throw BatonClientError.configuration("user is missing: give the PostgreSQL role to log in as")
        }
        self.init(topology: source, user: user)
        password = reader.string("password")
        passfile = reader.string("passfile")
        if let mode = reader.string("sslmode") {
            guard let parsed = SSLMode(rawValue: mode) else {
                throw BatonClientError.configuration(
                    "sslmode '\(mode)' is not one of "
                        + SSLMode.allCases.map(\.rawValue).joined(separator: ", "))
            }
            tls.mode = parsed
        }
        tls.rootCertificate = reader.string("sslrootcert")
        tls.certificate = reader.string("sslcert")
        tls.key = reader.string("sslkey")
        database = reader.string("dbname") ?? database
        applicationName = reader.string("application_name") ?? applicationName
        connectTimeout = try reader.duration("connect_timeout") ?? connectTimeout
        statementTimeout = try reader.duration("statement_timeout") ?? statementTimeout
        // PostgreSQL takes statement_timeout in milliseconds up to 2^31 - 1 (about 24.8 days).
        guard statementTimeout <= .milliseconds(Int32.max) else {
            throw BatonClientError.configuration(
                "statement_timeout \(statementTimeout) is longer than PostgreSQL allows (2147483647 ms, about 24.8 days); "
                    + "give a shorter one, or 0 for none")
        }
        pool.minConnections = try reader.int("min_connections", in: 0...10_000) ?? pool.minConnections
        pool.maxConnections = try reader.int("max_connections", in: 1...10_000) ?? pool.maxConnections
        pool.acquireTimeout = try reader.duration("acquire_timeout") ?? pool.acquireTimeout
        pool.maxLifetime = try reader.duration("max_lifetime") ?? pool.maxLifetime
        pool.idleTimeout = try reader.duration("idle_timeout") ?? pool.idleTimeout
        pool.healthCheckAfterIdle = try reader.duration("health_check_after_idle") ?? pool.healthCheckAfterIdle
        if let text = reader.string("replica_strategy") {
            guard let strategy = ReplicaStrategy(rawValue: text) else {
                throw BatonClientError.configuration(
                    "replica_strategy '\(text)' is unknown; use one of "
                        + ReplicaStrategy.allCases.map(\.rawValue).joined(separator: ", "))
            }
            replicas.strategy = strategy
        }
        if let text = reader.string("max_replica_lag_bytes") {
            guard let bytes = UInt64(text) else {
                throw BatonClientError.configuration("max_replica_lag_bytes '\(text)' is not a number of bytes")
            }
            replicas.maxLagBytes = bytes
        }
        replicas.maxLag = try reader.duration("max_replica_lag")
        if let text = reader.string("no_replica_policy") {
            guard let policy = NoReplicaPolicy(rawValue: text) else {
                throw BatonClientError.configuration(
                    "no_replica_policy '\(text)' is unknown; use 'primary' (read from the primary) or 'fail'")
            }
            replicas.whenNoReplica = policy
        }
        for item in reader.list("replica_weights") {
            let parts = item.split(separator: "=", maxSplits: 1).map { String($0).trimmed() }
            guard parts.count == 2, !parts[0].isEmpty, let weight = Int(parts[1]), (0...1_000_000).contains(weight)
            else {
                throw BatonClientError.configuration(
                    "replica_weights entry '\(item)' must be name=weight with a weight from 0 to 1000000 "
                        + "(e.g. node2=3,127.0.0.1:5434=1)")
            }
            replicas.weights[parts[0]] = weight
        }
        replicas.readYourWritesTimeout =
            try reader.duration("read_your_writes_timeout") ?? replicas.readYourWritesTimeout
        primaryWaitTimeout = try reader.duration("primary_wait_timeout") ?? primaryWaitTimeout
        topologyTimeout = try reader.duration("topology_timeout") ?? topologyTimeout
        degradedAfter = try reader.duration("degraded_after") ?? degradedAfter
        drainTimeout = try reader.duration("drain_timeout") ?? drainTimeout
        if let text = reader.string("breaker_failure_ratio") {
            guard let ratio = Double(text) else {
                throw BatonClientError.configuration("breaker_failure_ratio '\(text)' is not a number in (0, 1]")
            }
            replicas.breaker.failureRatio = ratio
        }
        replicas.breaker.minimumRequests =
            try reader.int("breaker_minimum_requests", in: 1...1_000_000) ?? replicas.breaker.minimumRequests
        replicas.breaker.window = try reader.duration("breaker_window") ?? replicas.breaker.window
        replicas.breaker.openTimeout = try reader.duration("breaker_open_timeout") ?? replicas.breaker.openTimeout
        replicas.breaker.halfOpenRequests =
            try reader.int("breaker_half_open_requests", in: 1...1000) ?? replicas.breaker.halfOpenRequests
        try validate()
    }
}

/// Typed access to flat settings, with errors that name the key.
struct SettingsReader {
    let settings: [String: String]

    init(_ settings: [String: String]) { self.settings = settings }

    func rejectUnknown(_ known: [String]) throws {
        let unknown = settings.keys.filter { !known.contains($0) }.sorted()
        guard unknown.isEmpty else {
            throw BatonClientError.configuration(
                "unknown setting\(unknown.count > 1 ? "s" : "") \(unknown.map { "'\($0)'" }.joined(separator: ", ")); "
                    + "known settings: \(known.joined(separator: ", "))")
        }
    }

    func string(_ key: String) -> String? {
        guard let value = settings[key]?.trimmed(), !value.isEmpty else { return nil }
        return value
    }

    func list(_ key: String) -> [String] {
        (settings[key] ?? "").split(separator: ",").map { String($0).trimmed() }.filter { !$0.isEmpty }
    }

    func int(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let text = string(key) else { return nil }
        guard let value = Int(text), range.contains(value) else {
            throw BatonClientError.configuration(
                "\(key) '\(text)' must be a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    func endpoints(_ key: String, defaultPort: Int) throws -> [Endpoint] {
        try list(key).map { item in
            guard let endpoint = Endpoint(parsing: item, defaultPort: defaultPort) else {
                throw BatonClientError.configuration(
                    "\(key) entry '\(item)' is not host or host:port (port 1-65535; IPv6 as [addr]:port)")
            }
            return endpoint
        }
    }

    func duration(_ key: String) throws -> Duration? {
        guard let text = string(key) else { return nil }
        guard let duration = Self.parseDuration(text) else {
            throw BatonClientError.configuration(
                "\(key) '\(text)' is not a duration: give seconds (1.5) or a number with ms, s or m (250ms, 2s, 1m)")
        }
        return duration
    }

    static func parseDuration(_ text: String) -> Duration? {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60)]
        var number = text
        var scale = 1.0
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            number = String(text.dropLast(suffix.count)).trimmed()
            scale = factor
            break
        }
        guard let value = Double(number), value.isFinite, value >= 0 else { return nil }
        return Duration(checkedSeconds: value * scale)
    }
}
