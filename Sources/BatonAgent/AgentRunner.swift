import BatonAPI
import BatonCore
import BatonHA
import Foundation
import Logging
import ServiceLifecycle

/// Runs an agent until SIGTERM or SIGINT: the HA loop and the REST API in one `ServiceGroup`.
public enum AgentRunner {
    public static func run(configuration: AgentConfiguration, executable: String?, logger: Logger) async throws {
        let peers = HTTPPeerProbe(timeout: .seconds(1), logger: logger)
        let agent = try Agent(configuration: configuration, peers: peers, executable: executable, logger: logger)
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
        let source = HALoopStateSource(
            loop: agent.loop, memberName: agent.configuration.name, scope: agent.configuration.scope,
            store: agent.store, clock: SystemMonotonicClock(), wallClock: { Date().timeIntervalSince1970 })
        let server = BatonAPIServer(
            source: source,
            configuration: APIConfiguration(
                host: rest.listenHost, port: rest.listenPort, auth: auth, allowlist: allowlist),
            logger: logger)
        return server.makeApplication()
    }
}
