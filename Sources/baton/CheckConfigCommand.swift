import ArgumentParser
import BatonAgent
import BatonCore
import Foundation

/// `baton check-config`: runs the agent's own configuration loader on a file and reports the first
/// problem (key path and line) or a one-screen summary. Used by deployment checks (compose/, k8s/).
struct CheckConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate an agent configuration file with the agent's own loader.",
        discussion: """
            Exits 0 when `baton agent` would accept the file, 2 with the key path and line of the first \
            problem otherwise. Secrets may come from BATON_* environment variables, as for the agent. Examples:
              baton check-config -c /etc/baton/agent.yml
              BATON_SUPERUSER_PASSWORD=x BATON_REPLICATION_PASSWORD=y baton check-config -c compose/node1.yml
              baton check-config -c agent.yml --without-secrets   (as operator commands load it)
            """)

    @OptionGroup var options: ConfigOptions
    @Flag(help: "Do not require the PostgreSQL passwords (they are supplied at run time).")
    var withoutSecrets = false

    func run() throws {
        let loaded = try options.load(requireSecrets: !withoutSecrets)
        let dcs = loaded.dynamicConfig
        print("\(options.config): ok")
        print("  cluster     \(loaded.namespace)/\(loaded.scope), member \(loaded.name)")
        print("  etcd        \(loaded.etcd.endpoints.joined(separator: ", "))")
        print(
            "  rest api    \(loaded.restapi.listenHost):\(loaded.restapi.listenPort) (published \(loaded.restapi.connectAddress))"
        )
        print(
            "  postgresql  \(loaded.postgresql.listenHost):\(loaded.postgresql.port), data \(loaded.postgresql.dataDirectory)"
        )
        print(
            "  timing      ttl \(dcs.ttl.secondsText), loop_wait \(dcs.loopWait.secondsText), "
                + "retry_timeout \(dcs.retryTimeout.secondsText)")
    }
}
