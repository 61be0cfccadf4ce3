import BatonEtcd
import Foundation
import NIOSSL
import PostgresNIO
import Tracing

/// Everything a `BatonClient` needs: where the topology comes from, how to log in, and how the
/// pools and the router behave. Build it in code or from flat settings (`init(settings:)`);
/// `validate()` runs when the client starts.
public struct BatonClientConfiguration: Sendable {
    /// Where the client learns which server is the primary and which are replicas.
    public enum TopologySource: Sendable {
        /// Reads and watches the cluster's keys in etcd (the default and the fastest: a change takes
        /// effect within milliseconds of the etcd event). `fallbackAgents`, when given, are polled
        /// through their REST `/cluster` while etcd cannot be read.
        case etcd(EtcdTopologyOptions)
        /// Polls `GET /cluster` of the first agent (base URLs such as `http://10.0.0.1:8008`) that
        /// answers, every `pollInterval`.
        case rest(agents: [String], pollInterval: Duration)
        /// Fixed lists. Writes go to the first of `primaryHosts` that answers as writable (as
        /// libpq's multi-host `target_session_attrs=read-write`); reads may use `readReplicas`.
        case fixed(primaryHosts: [Endpoint], readReplicas: [Endpoint])
    }

    public struct EtcdTopologyOptions: Sendable {
        public var endpoints: [String]
        public var namespace: String
        public var scope: String
        public var credentials: EtcdConfiguration.Credentials?
        public var tls: EtcdTLSConfiguration?
        public var requestTimeout: Duration
        public var fallbackAgents: [String]
        public var fallbackPollInterval: Duration
        /// How often etcd is read besides the watch, to notice an outage the watch does not report
        /// (a connection that went quiet) and to keep the topology's age current.
        public var checkInterval: Duration

        public init(
            endpoints: [String], namespace: String = "/service", scope: String,
            credentials: EtcdConfiguration.Credentials? = nil, tls: EtcdTLSConfiguration? = nil,
            requestTimeout: Duration = .seconds(2), fallbackAgents: [String] = [],
            fallbackPollInterval: Duration = .seconds(1), checkInterval: Duration = .seconds(1)
        ) {
            self.checkInterval = checkInterval
            self.endpoints = endpoints
            self.namespace = namespace
            self.scope = scope
            self.credentials = credentials
            self.tls = tls
            self.requestTimeout = requestTimeout
            self.fallbackAgents = fallbackAgents
            self.fallbackPollInterval = fallbackPollInterval
        }
    }

    /// Per-host connection pool settings (each server has its own pool).
    public struct PoolOptions: Sendable, Equatable {
        /// Connections kept open per host even when idle.
        public var minConnections: Int
        /// At most this many connections per host.
        public var maxConnections: Int
        /// How long an acquisition waits for a free connection of a full pool.
        public var acquireTimeout: Duration
        /// A connection older than this is closed when it is returned (or found idle).
        public var maxLifetime: Duration
        /// An idle connection above `minConnections` is closed after this long.
        public var idleTimeout: Duration
        /// A connection idle for longer than this is checked (`SELECT 1`) before it is handed out.
        public var healthCheckAfterIdle: Duration

        public init(
            minConnections: Int = 0, maxConnections: Int = 10, acquireTimeout: Duration = .seconds(5),
            maxLifetime: Duration = .seconds(1800), idleTimeout: Duration = .seconds(300),
            healthCheckAfterIdle: Duration = .seconds(1)
        ) {
            self.minConnections = minConnections
            self.maxConnections = maxConnections
            self.acquireTimeout = acquireTimeout
            self.maxLifetime = maxLifetime
            self.idleTimeout = idleTimeout
            self.healthCheckAfterIdle = healthCheckAfterIdle
        }
    }

    /// What a read does when no replica is usable.
    public enum NoReplicaPolicy: String, Sendable, CaseIterable {
        /// Read from the primary (the default).
        case usePrimary = "primary"
        /// Fail with `BatonClientError.noReplicaAvailable`.
        case fail
    }

    public struct ReplicaOptions: Sendable {
        public var strategy: ReplicaStrategy
        /// A replica whose replay position is more than this many bytes behind the primary's
        /// (as the topology publishes it) gets no reads. nil: no byte limit.
        public var maxLagBytes: UInt64?
        /// A replica more than this far behind the primary in time (estimated from the published
        /// positions, see docs/client.md) gets no reads. nil: no time limit.
        public var maxLag: Duration?
        public var whenNoReplica: NoReplicaPolicy
        public var breaker: CircuitBreakerConfiguration
        /// Weights for the `.weighted` strategy by member name or `host:port`; others weigh 1, or
        /// their `weight` tag when they publish one.
        public var weights: [String: Int]
        /// How long a read carrying a write token waits for a replica that replayed the write
        /// before it goes to the primary.
        public var readYourWritesTimeout: Duration

        public init(
            strategy: ReplicaStrategy = .roundRobin, maxLagBytes: UInt64? = nil, maxLag: Duration? = nil,
            whenNoReplica: NoReplicaPolicy = .usePrimary, breaker: CircuitBreakerConfiguration = .init(),
            weights: [String: Int] = [:], readYourWritesTimeout: Duration = .milliseconds(100)
        ) {
            self.strategy = strategy
            self.maxLagBytes = maxLagBytes
            self.maxLag = maxLag
            self.whenNoReplica = whenNoReplica
            self.breaker = breaker
            self.weights = weights
            self.readYourWritesTimeout = readYourWritesTimeout
        }
    }

    /// TLS to the servers, as libpq's `sslmode`.
    public enum SSLMode: String, Sendable, CaseIterable {
        /// Never TLS.
        case disable
        /// TLS when the server offers it (as `prefer`: postgres-nio always asks first).
        case allow
        /// TLS when the server offers it, else plain; the certificate is not checked (libpq's
        /// default).
        case prefer
        /// TLS or no connection; the certificate is not checked, unless `rootCertificate` is
        /// given (then as `verify-ca`), as libpq does.
        case require
        /// TLS with a certificate signed by `rootCertificate` (or the system's roots).
        case verifyCA = "verify-ca"
        /// `verify-ca`, and the certificate names the host (DNS name or IP address) connected to.
        case verifyFull = "verify-full"
    }

    public struct TLSOptions: Sendable {
        public var mode: SSLMode
        /// PEM file of the certificate authorities to trust (`sslrootcert`); the system's when nil.
        public var rootCertificate: String?
        /// PEM file of the client's certificate chain (`sslcert`), for certificate login.
        public var certificate: String?
        /// PEM file of the client's private key (`sslkey`).
        public var key: String?

        public init(
            mode: SSLMode = .prefer, rootCertificate: String? = nil, certificate: String? = nil, key: String? = nil
        ) {
            self.mode = mode
            self.rootCertificate = rootCertificate
            self.certificate = certificate
            self.key = key
        }
    }

    public var topology: TopologySource
    public var user: String
    public var password: String?
    /// Asked for the password at every new connection (wins over `password` and `passfile`): a
    /// rotated secret is used from the next connection on, without restarting the client.
    public var passwordProvider: (@Sendable () async throws -> String?)?
    public var tls: TLSOptions = .init()
    /// Where the client's spans go (one per acquisition and per statement, with the member and
    /// its role). nil: the tracer bootstrapped in `InstrumentationSystem`, or none when that is
    /// the no-op tracer (then no span is even started).
    public var tracer: (any Tracer)?
    /// A passfile (libpq's `.pgpass` format, read at each connect), used when `password` is nil.
    public var passfile: String?
    public var database: String
    public var applicationName: String
    public var connectTimeout: Duration
    public var statementTimeout: Duration
    public var pool: PoolOptions
    /// Replica pools use `pool` unless this is set.
    public var replicaPool: PoolOptions?
    public var replicas: ReplicaOptions
    /// How long a write waits for a primary (none published, or the published one not reachable
    /// or not yet promoted) before it fails with `.noPrimary`.
    public var primaryWaitTimeout: Duration
    /// How long the initial topology may take before `BatonClient.init` fails.
    public var topologyTimeout: Duration
    /// When no topology source has answered for this long, the primary pool stops trusting the
    /// last published primary and connects to the first known member that is writable (as libpq's
    /// `target_session_attrs=read-write`) instead.
    public var degradedAfter: Duration
    /// On shutdown, connections in use get this long to be returned before they are closed.
    public var drainTimeout: Duration

    public init(
        topology: TopologySource, user: String, password: String? = nil, passfile: String? = nil,
        database: String = "postgres", applicationName: String = "baton-client",
        connectTimeout: Duration = .seconds(2), statementTimeout: Duration = .seconds(30),
        pool: PoolOptions = .init(), replicaPool: PoolOptions? = nil, replicas: ReplicaOptions = .init(),
        primaryWaitTimeout: Duration = .seconds(10), topologyTimeout: Duration = .seconds(5),
        degradedAfter: Duration = .seconds(5), drainTimeout: Duration = .seconds(10)
    ) {
        self.topology = topology
        self.user = user
        self.password = password
        self.passfile = passfile
        self.database = database
        self.applicationName = applicationName
        self.connectTimeout = connectTimeout
        self.statementTimeout = statementTimeout
        self.pool = pool
        self.replicaPool = replicaPool
        self.replicas = replicas
        self.primaryWaitTimeout = primaryWaitTimeout
        self.topologyTimeout = topologyTimeout
        self.degradedAfter = degradedAfter
        self.drainTimeout = drainTimeout
    }

    /// Throws `BatonClientError.invalidConfiguration` naming the first setting that is wrong.
    public func validate() throws {
        func positive(_ value: Duration, _ name: String) throws {
            guard value > .zero else { throw BatonClientError.configuration("\(name) must be positive, got \(value)") }
        }
        switch topology {
        case .etcd(let etcd):
            guard !etcd.endpoints.isEmpty else {
                throw BatonClientError.configuration("etcd_hosts is empty: give at least one etcd endpoint (host:port)")
            }
            guard !etcd.scope.isEmpty, !etcd.scope.contains("/") else {
                throw BatonClientError.configuration(
                    "scope '\(etcd.scope)' is invalid: give the cluster's scope (its name, without '/')")
            }
            try positive(etcd.requestTimeout, "etcd_request_timeout")
            try positive(etcd.fallbackPollInterval, "poll_interval")
            try positive(etcd.checkInterval, "etcd_check_interval")
            for agent in etcd.fallbackAgents { try Self.checkAgentURL(agent) }
        case .rest(let agents, let interval):
            guard !agents.isEmpty else {
                throw BatonClientError.configuration("agents is empty: give at least one agent REST URL")
            }
            for agent in agents { try Self.checkAgentURL(agent) }
            try positive(interval, "poll_interval")
        case .fixed(let primaries, let replicas):
            guard !primaries.isEmpty else {
                throw BatonClientError.configuration("primary_hosts is empty: give at least one host:port")
            }
            for endpoint in primaries + replicas where endpoint.host.isEmpty || !(1...65535).contains(endpoint.port) {
                throw BatonClientError.configuration("'\(endpoint)' is not a valid host:port")
            }
        }
        guard !user.isEmpty else { throw BatonClientError.configuration("user is empty: give the role to log in as") }
        guard !database.isEmpty else { throw BatonClientError.configuration("dbname is empty") }
        for (name, options) in [("pool", pool), ("replica pool", replicaPool ?? pool)] {
            guard options.maxConnections >= 1 else {
                throw BatonClientError.configuration(
                    "\(name) max_connections must be at least 1, got \(options.maxConnections)")
            }
            guard (0...options.maxConnections).contains(options.minConnections) else {
                throw BatonClientError.configuration(
                    "\(name) min_connections (\(options.minConnections)) must be between 0 and max_connections "
                        + "(\(options.maxConnections))")
            }
            try positive(options.acquireTimeout, "\(name) acquire_timeout")
            try positive(options.maxLifetime, "\(name) max_lifetime")
            try positive(options.idleTimeout, "\(name) idle_timeout")
            guard options.healthCheckAfterIdle >= .zero else {
                throw BatonClientError.configuration("\(name) health_check_after_idle must not be negative")
            }
        }
        try positive(connectTimeout, "connect_timeout")
        try positive(statementTimeout, "statement_timeout")
        try positive(primaryWaitTimeout, "primary_wait_timeout")
        try positive(topologyTimeout, "topology_timeout")
        try positive(degradedAfter, "degraded_after")
        guard drainTimeout >= .zero else { throw BatonClientError.configuration("drain_timeout must not be negative") }
        if let maxLag = replicas.maxLag { try positive(maxLag, "max_replica_lag") }
        guard replicas.readYourWritesTimeout >= .zero else {
            throw BatonClientError.configuration("read_your_writes_timeout must not be negative")
        }
        for (key, weight) in replicas.weights where weight < 0 {
            throw BatonClientError.configuration("replica weight of '\(key)' is \(weight); weights must be 0 or more")
        }
        try replicas.breaker.validate()
        if tls.mode == .disable, tls.rootCertificate != nil || tls.certificate != nil {
            throw BatonClientError.configuration(
                "sslmode is disable but sslrootcert or sslcert is set: use sslmode verify-full (or remove them)")
        }
        if tls.mode == .verifyCA, tls.rootCertificate == nil {
            throw BatonClientError.configuration(
                "sslmode verify-ca needs sslrootcert: with the system's roots any publicly trusted certificate "
                    + "would pass without a name check; give the CA that signs the servers, or use verify-full")
        }
        if (tls.certificate == nil) != (tls.key == nil) {
            throw BatonClientError.configuration("sslcert and sslkey go together: give both or neither")
        }
        for (name, path) in [("sslrootcert", tls.rootCertificate), ("sslcert", tls.certificate), ("sslkey", tls.key)] {
            if let path, !FileManager.default.isReadableFile(atPath: path) {
                throw BatonClientError.configuration(
                    "\(name) '\(path)' cannot be read: check the path and its permissions")
            }
        }
    }

    /// What every connection of the client starts with: login, session parameters and TLS (the
    /// certificates are read here, once).
    func sessionSettings() throws -> SessionSettings {
        var tlsConfiguration = TLSConfiguration.makeClientConfiguration()
        let verify =
            tls.mode == .verifyFull || tls.mode == .verifyCA || (tls.mode == .require && tls.rootCertificate != nil)
        tlsConfiguration.certificateVerification =
            tls.mode == .verifyFull ? .fullVerification : verify ? .noHostnameVerification : .none
        do {
            if let root = tls.rootCertificate {
                tlsConfiguration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(root))
            }
            if let certificate = tls.certificate, let key = tls.key {
                tlsConfiguration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map {
                    .certificate($0)
                }
                tlsConfiguration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            }
        } catch {
            throw BatonClientError(
                .invalidConfiguration,
                "could not load the TLS files (sslrootcert \(tls.rootCertificate ?? "-"), sslcert \(tls.certificate ?? "-"), "
                    + "sslkey \(tls.key ?? "-")): \(error); give PEM files", cause: error)
        }
        let mode: PostgresNIO.PostgresConnection.Configuration.TLS
        switch tls.mode {
        case .disable: mode = .disable
        case .allow, .prefer: mode = .prefer(try makeContext(tlsConfiguration))
        case .require, .verifyCA, .verifyFull: mode = .require(try makeContext(tlsConfiguration))
        }
        let password: SessionSettings.PasswordSource =
            if let passwordProvider { .provider(passwordProvider) } else if let password {
                .fixed(password)
            } else if let passfile {
                .passfile(passfile)
            } else { .passfile(NSHomeDirectory() + "/.pgpass") }
        let tracer = self.tracer ?? (InstrumentationSystem.tracer is NoOpTracer ? nil : InstrumentationSystem.tracer)
        return SessionSettings(
            user: user, database: database, applicationName: applicationName, connectTimeout: connectTimeout,
            statementTimeout: statementTimeout, password: password, tls: mode, tlsServerName: tls.mode != .disable,
            tracer: tracer)
    }

    private func makeContext(_ configuration: TLSConfiguration) throws -> NIOSSLContext {
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw BatonClientError(
                .invalidConfiguration, "the TLS settings were refused: \(error)", cause: error)
        }
    }

    static func checkAgentURL(_ url: String) throws {
        guard url.hasPrefix("http://") || url.hasPrefix("https://"), url.count > "http://".count else {
            throw BatonClientError.configuration(
                "agent URL '\(url)' must start with http:// or https:// (e.g. http://10.0.0.1:8008)")
        }
    }
}
