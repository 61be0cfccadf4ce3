import BatonCore
import BatonHA
import Logging
import ServiceLifecycle

/// Runs an agent until SIGTERM or SIGINT: the HA loop and the REST API in one `ServiceGroup`.
public enum AgentRunner {
    public static func run(configuration: AgentConfiguration, executable: String?, logger: Logger) async throws {
        let peers = HTTPPeers(logger: logger)
        let agent = try Agent(configuration: configuration, peers: peers, executable: executable, logger: logger)
        logger.info(
            "starting agent",
            metadata: [
                "ha.member": "\(configuration.name)", "etcd.endpoints": "\(configuration.etcd.endpoints)",
                "pg.datadir": "\(configuration.postgresql.dataDirectory)",
            ])
        let services: [any Service] = [agent.haService]
        let group = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
    }
}
