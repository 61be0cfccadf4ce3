import BatonAPI
import BatonCore
import BatonHA
import Foundation
import Logging
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

/// Runs an agent until SIGTERM or SIGINT: the HA loop and the REST API in one `ServiceGroup`.
public enum AgentRunner {
    /// `configurationFile` is the file `configuration` came from, re-read on `POST /reload`.
    public static func run(
        configuration: AgentConfiguration, configurationFile: String? = nil, executable: String?, logger: Logger
    ) async throws {
        let peers: HTTPPeerProbe
        do {
            peers = try HTTPPeerProbe(
                timeout: .seconds(1), tls: clientTLS(configuration.restapi), username: configuration.restapi.username,
                password: configuration.restapi.password, logger: logger)
        } catch {
            throw ConfigurationError(path: "restapi", message: "\(error)")
        }
        let agent = try Agent(
            configuration: configuration, peers: peers, executable: executable, configurationFile: configurationFile,
            logger: logger)
        let api = try apiApplication(agent: agent, logger: logger)
        logger.info(
            "starting agent",
            metadata: [
                "ha.member": "\(configuration.name)", "etcd.endpoints": "\(configuration.etcd.endpoints)",
                "pg.datadir": "\(configuration.postgresql.dataDirectory)",
                "api.listen": "\(configuration.restapi.listenHost):\(configuration.restapi.listenPort)",
            ])
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: agent.haService), .init(service: api)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    /// How many REST connections the process's descriptor limit leaves room for: the soft limit is
    /// first raised to the hard one (a connection cap above the limit would turn a flood into
    /// failed accepts and failed etcd and postgres connections), then 256 descriptors are kept for
    /// etcd, postgres, hooks and files.
    static func connectionBudget() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1000 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = min(limit.rlim_max, 1 << 20)
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return max(16, Int(clamping: limit.rlim_cur) - 256)
    }

    static func apiApplication(agent: Agent, logger: Logger) throws -> BatonAPIApplication {
        let rest = agent.configuration.restapi
        var allowlist: [CIDRNetwork] = []
        for network in rest.allowlist {
            do {
                allowlist.append(try CIDRNetwork(network))
            } catch {
                throw ConfigurationError(
                    path: "restapi.allowlist", message: "'\(network)' is not a network like 10.0.0.0/8: \(error)")
            }
        }
        let auth = rest.username.flatMap { user in
            rest.password.map { APIConfiguration.BasicAuth(username: user, password: $0) }
        }
        let budget = connectionBudget()
        if rest.maxConnections > budget {
            logger.warning(
                "restapi.max_connections lowered to what the open-file limit leaves room for",
                metadata: [
                    "api.max_connections": "\(rest.maxConnections)", "api.budget": "\(budget)",
                    "api.hint": "raise LimitNOFILE (systemd) or ulimit -n",
                ])
        }
        let source = HALoopStateSource(
            loop: agent.loop, memberName: agent.configuration.name, scope: agent.configuration.scope,
            store: agent.apiStore, clock: SystemMonotonicClock(), wallClock: { Date().timeIntervalSince1970 })
        let tls = rest.certfile.flatMap { certfile in
            rest.keyfile.map { keyfile in
                APIServerTLS(
                    certificateFile: certfile, keyFile: keyfile, caFile: rest.cafile,
                    verifyClient: APIServerTLS.ClientVerification(rawValue: rest.verifyClient) ?? .none,
                    keyPassword: rest.keyfilePassword, ciphers: rest.ciphers)
            }
        }
        var apiConfiguration = APIConfiguration(
            host: rest.listenHost, port: rest.listenPort, auth: auth, allowlist: allowlist, tls: tls,
            threads: rest.threads,
            limits: ConnectionLimitSettings(
                maxConnections: min(rest.maxConnections, budget),
                requestTimeout: Duration(checkedSeconds: rest.requestTimeout) ?? .seconds(10),
                idleTimeout: Duration(checkedSeconds: rest.idleTimeout) ?? .seconds(60)))
        // Patroni: http_extra_headers always, https_extra_headers too when the API speaks TLS.
        apiConfiguration.extraHeaders = rest.httpExtraHeaders + (tls == nil ? [] : rest.httpsExtraHeaders)
        apiConfiguration.allowlistIncludeMembers = rest.allowlistIncludeMembers
        apiConfiguration.backlog = rest.requestQueueSize
        let server = BatonAPIServer(source: source, configuration: apiConfiguration, logger: logger)
        do {
            return try server.makeApplication()
        } catch {
            throw ConfigurationError(path: "restapi", message: "\(error)")
        }
    }

    /// How this agent (and the CLI) calls members' APIs: the section's CA, and its certificate as
    /// a client certificate (for members that verify clients); nil when TLS is not configured.
    public static func clientTLS(_ rest: AgentConfiguration.RestAPI) -> APIClientTLS? {
        guard rest.certfile != nil || rest.cafile != nil else { return nil }
        return APIClientTLS(
            caFile: rest.cafile, certificateFile: rest.certfile, keyFile: rest.keyfile,
            keyPassword: rest.keyfilePassword)
    }
}
