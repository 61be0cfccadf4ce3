import ArgumentParser
import BatonAgent
import BatonCore
import Foundation

/// `--watch [SECONDS]` for read-only views: redraw every so many seconds until Ctrl-C.
struct WatchOptions: ParsableArguments {
    @Option(
        name: [.short, .long],
        help: ArgumentHelp(
            "Redraw every SECONDS (2 when --watch is given alone) until Ctrl-C.", valueName: "SECONDS"))
    var watch: Double?
    @Flag(name: .customShort("W"), help: "Redraw every 2 seconds until Ctrl-C (patronictl's -W).")
    var watchEveryTwoSeconds = false

    var interval: Double? { watch ?? (watchEveryTwoSeconds ? 2 : nil) }

    func validate() throws {
        if let watch, !(watch >= 0.1) || Duration(checkedSeconds: watch, maximum: 86_400) == nil {
            throw ValidationError("--watch must be from 0.1 to 86400 seconds, got \(watch)")
        }
    }

    /// Runs `render` once, or forever with a cleared screen and a timestamp when watching.
    func run(_ render: () async throws -> String) async throws {
        guard let watch = interval else {
            print(try await render())
            return
        }
        while true {
            let text = try await render()
            let now = Date().formatted(.iso8601)
            print("\u{1B}[H\u{1B}[2J\(now)  (every \(watch.formatted()) s, Ctrl-C to stop)\n\(text)")
            fflush(nil)
            try await Task.sleep(for: Duration(checkedSeconds: watch, maximum: 86_400) ?? .seconds(2))
        }
    }

    /// `--watch` without a value means every 2 seconds; ArgumentParser needs a value, so give it one.
    static func defaultingBareWatch(_ arguments: [String]) -> [String] {
        var result: [String] = []
        for (index, argument) in arguments.enumerated() {
            result.append(argument)
            if argument == "--watch" || argument == "-w" {
                let next = index + 1 < arguments.count ? arguments[index + 1] : nil
                if next.map({ Double($0) == nil }) ?? true { result.append("2") }
            }
        }
        return result
    }
}

struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List the members of the cluster, as a table, JSON or YAML.")

    @OptionGroup var options: ConfigOptions
    @Option(help: "Output format: table, json or yaml.") var format: OutputFormat = .table
    @Flag(name: [.short, .long], help: "More columns: pending restart (and why) and tags.") var extended = false
    @Flag(name: [.short, .long], help: "Print the time before the table.") var timestamp = false
    @OptionGroup var watch: WatchOptions

    func run() async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        try await watch.run {
            let text = ClusterTable.render(
                try await op.load(), scope: op.configuration.scope, format: format.rawValue, extended: extended)
            guard timestamp else { return text }
            return Date().formatted(.iso8601) + "\n" + text
        }
    }
}

struct TopologyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topology",
        abstract: "Show who replicates from whom: the leader at the root, its replicas under it, with lag and state.")

    @OptionGroup var options: ConfigOptions
    @Option(help: "Output format: table, json or yaml.") var format: OutputFormat = .table
    @OptionGroup var watch: WatchOptions

    func run() async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        try await watch.run {
            OperatorFormatting.topology(try await op.load(), scope: op.configuration.scope, format: format.rawValue)
        }
    }
}

struct HistoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history", abstract: "Show the timeline history: each promotion, its LSN, reason and new leader.")

    @OptionGroup var options: ConfigOptions
    @Option(help: "Output format: table, json or yaml.") var format: OutputFormat = .table

    func run() async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        let view = try await op.load()
        if view.history.isEmpty, format == .table {
            print("no timeline switch yet: the cluster has stayed on timeline 1 (or has not been bootstrapped)")
            return
        }
        print(OperatorFormatting.history(view.history, format: format.rawValue))
    }
}
