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
            CheckConfigCommand.self, VersionCommand.self, DemoteClusterCommand.self, PromoteClusterCommand.self,
            PoolerCommand.self, MigrateCommand.self,
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
    @Option(
        name: .customLong("dcs-url"),
        help: ArgumentHelp(
            "etcd to use instead of the file's (patronictl's -d): etcd3://host:port[,host:port]; with --scope, no file is needed.",
            valueName: "URL"))
    var dcsURL: String?
    @Option(help: "The cluster's scope, instead of the file's.") var scope: String?
    @Flag(
        name: [.short, .customLong("insecure")],
        help: "Do not verify the REST APIs' TLS certificates (patronictl's -k).")
    var insecure = false

    func validate() throws { _ = try Self.endpoints(dcsURL) }

    /// The endpoints of `--dcs-url` (etcd3://h:p,h:p, or http(s)://h:p) and their protocol.
    static func endpoints(_ url: String?) throws -> (hosts: String, scheme: String)? {
        guard let url else { return nil }
        guard let separator = url.range(of: "://") else {
            throw ValidationError("--dcs-url: expected etcd3://host:port, got '\(url)'")
        }
        let scheme = String(url[..<separator.lowerBound])
        let rest = String(url[separator.upperBound...]).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        let protocolScheme: String
        switch scheme {
        case "etcd3", "http": protocolScheme = "http"
        case "https": protocolScheme = "https"
        case "etcd":
            throw ValidationError("--dcs-url: etcd:// is etcd's v2 API, which Baton does not use; write etcd3://")
        default:
            throw ValidationError(
                "--dcs-url: Baton keeps the cluster in etcd 3; expected etcd3://host:port, got '\(url)'")
        }
        let hosts = rest.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
        guard !hosts.isEmpty, hosts.allSatisfy({ HostPort(parsing: $0) != nil }) else {
            throw ValidationError("--dcs-url: expected host:port after \(scheme)://, got '\(rest)'")
        }
        return (hosts.joined(separator: ","), protocolScheme)
    }

    func load(requireSecrets: Bool = false) throws -> AgentConfiguration {
        var environment = ProcessInfo.processInfo.environment
        let endpoints = try Self.endpoints(dcsURL)
        if let (hosts, _) = endpoints { environment["BATON_ETCD_HOSTS"] = hosts }
        if let scope { environment["BATON_SCOPE"] = scope }
        var configuration: AgentConfiguration
        do {
            if dcsURL != nil, scope != nil, !FileManager.default.fileExists(atPath: config) {
                // No file: enough of one to reach the cluster (the commands that need more say so).
                configuration = try AgentConfiguration.parse(
                    "name: baton-cli\netcd3: {hosts: []}\npostgresql: {data_dir: /nonexistent}\n",
                    file: "(--dcs-url)", environment: environment, requireSecrets: false)
            } else {
                configuration = try AgentConfiguration.load(
                    path: config, environment: environment, requireSecrets: requireSecrets)
            }
        } catch let error as ConfigurationError {
            throw ValidationError("\(error)")
        }
        if let (_, scheme) = endpoints {
            // The etcd named replaces the file's, as patronictl -d does: its protocol from the URL, and
            // none of the file's credentials or certificates (they may belong to another etcd);
            // BATON_ETCD_USERNAME/PASSWORD still apply.
            configuration.etcd.protocolScheme = scheme
            configuration.etcd.cacert = nil
            configuration.etcd.cert = nil
            configuration.etcd.key = nil
            if environment["BATON_ETCD_USERNAME"] == nil {
                configuration.etcd.username = nil
                configuration.etcd.password = nil
            }
        }
        return configuration
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
