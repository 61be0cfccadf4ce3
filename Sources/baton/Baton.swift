import ArgumentParser
import BatonAgent
import BatonCore
import BatonEtcd
import Foundation
import Logging

/// `baton`: the agent and the operator's command line.
@main
struct Baton: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baton",
        abstract: "PostgreSQL high availability through etcd.",
        version: BatonCore.version,
        subcommands: [
            AgentCommand.self, ListCommand.self, SwitchoverCommand.self, PauseCommand.self, ResumeCommand.self,
            VersionCommand.self, FenceGuardCommand.self,
        ]
    )
}

/// Options shared by commands that read the cluster: the agent's configuration file.
struct ConfigOptions: ParsableArguments {
    @Option(name: [.short, .customLong("config")], help: "Path to agent.yml.")
    var config: String = ProcessInfo.processInfo.environment["BATON_CONFIG"] ?? "agent.yml"

    func load(requireSecrets: Bool = false) throws -> AgentConfiguration {
        do {
            return try AgentConfiguration.load(path: config, requireSecrets: requireSecrets)
        } catch let error as ConfigurationError {
            throw ValidationError("\(error)")
        }
    }
}

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent", abstract: "Run the agent beside the local PostgreSQL (until SIGTERM).")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let configuration = try options.load(requireSecrets: true)
        let level = Logger.Level(rawValue: configuration.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "baton")
        logger[metadataKey: "ha.scope"] = "\(configuration.scope)"
        try await AgentRunner.run(configuration: configuration, executable: Self.executablePath(), logger: logger)
    }

    static func executablePath() -> String? {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments.first
    }
}

struct FenceGuardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fence-guard", abstract: "Internal: the agent's fencing backstop process.", shouldDisplay: false)

    func run() throws {
        throw ExitCode(FenceGuardMain.run())
    }
}

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print Baton's version.")
    func run() { print("baton \(BatonCore.version)") }
}

struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List the members of the cluster, as a table or JSON.")

    @OptionGroup var options: ConfigOptions

    @Option(help: "Output format: table or json.")
    var format: String = "table"

    func validate() throws {
        guard ["table", "json"].contains(format) else {
            throw ValidationError("--format must be table or json, got '\(format)'")
        }
    }

    func run() async throws {
        let configuration = try options.load()
        let client = EtcdClient(
            configuration: EtcdConfiguration(endpoints: configuration.etcd.endpoints, retryTimeout: .seconds(3)),
            logger: Logger(label: "baton", factory: { _ in SwiftLogNoOpLogHandler() }))
        defer { client.shutdown() }
        let store = EtcdClusterStore(
            client: client, namespace: configuration.namespace, scope: configuration.scope,
            logger: Logger(label: "baton", factory: { _ in SwiftLogNoOpLogHandler() }))
        let view: ClusterView
        do {
            view = try await store.loadCluster()
        } catch {
            FileHandle.standardError.write(
                Data(
                    "baton: cannot read the cluster from etcd (\(configuration.etcd.endpoints.joined(separator: ", "))): \(error)\n"
                        .utf8))
            throw ExitCode(1)
        }
        print(ClusterTable.render(view, scope: configuration.scope, format: format))
    }
}
