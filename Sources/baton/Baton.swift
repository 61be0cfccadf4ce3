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
            AgentCommand.self, ListCommand.self, TopologyCommand.self, HistoryCommand.self,
            SwitchoverCommand.self, FailoverCommand.self, PauseCommand.self, ResumeCommand.self,
            ShowConfigCommand.self, EditConfigCommand.self, RestartCommand.self, ReinitCommand.self,
            RemoveCommand.self, ReloadCommand.self, FlushCommand.self, DSNCommand.self, QueryCommand.self,
            CheckConfigCommand.self, VersionCommand.self,
        ]
    )

    /// Exit codes: 0 done, 1 the action failed, 2 bad usage or configuration (ArgumentParser's
    /// usage errors would otherwise exit 64).
    static func main() async {
        let arguments = WatchOptions.defaultingBareWatch(Array(CommandLine.arguments.dropFirst()))
        var command: any ParsableCommand
        do {
            command = try parseAsRoot(arguments)
        } catch {
            if exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
        do {
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as ValidationError {
            // Raised once parsing is done: a configuration file or input problem, not the syntax.
            FileHandle.standardError.write(Data("baton: \(error.message)\n".utf8))
            Foundation.exit(2)
        } catch {
            exit(withError: error)
        }
    }
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
        let settings = configuration.log
        let sink = AgentLogHandler.makeSink(settings)
        LoggingSystem.bootstrap { label in AgentLogHandler(label: label, settings: settings, sink: sink) }
        // Every line written before the agent ends reaches the sink (it writes on its own queue).
        defer { sink.flush() }
        var logger = Logger(label: "baton")
        logger[metadataKey: "ha.scope"] = "\(configuration.scope)"
        try await AgentRunner.run(
            configuration: configuration, configurationFile: options.config, executable: Self.executablePath(),
            logger: logger)
    }

    static func executablePath() -> String? {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments.first
    }
}

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print Baton's version.")
    func run() { print("baton \(BatonCore.version)") }
}
