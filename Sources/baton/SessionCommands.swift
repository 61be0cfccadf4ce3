import ArgumentParser
import BatonAgent
import BatonCore
import BatonPostgres
import Foundation

/// Which members a command acts on, as patronictl selects them: named ones, or by role.
enum MemberRole: String, ExpressibleByArgument, CaseIterable {
    case leader, primary, replica, any
}

extension ClusterView {
    /// The members named, or those in `role` (any: all); the problem when a name is unknown or
    /// nothing matches.
    func select(_ names: [String], role: MemberRole) -> Result<[Member], CLIProblem> {
        let leaderName = leader?.member
        if !names.isEmpty {
            let unknown = names.filter { member(named: $0) == nil }
            guard unknown.isEmpty else {
                return .failure(
                    CLIProblem(
                        "\(unknown.joined(separator: ", ")) not a member; members: "
                            + members.map(\.name).joined(separator: ", ")))
            }
            return .success(names.compactMap { member(named: $0) })
        }
        let chosen = members.filter { member in
            switch role {
            case .any: return true
            case .leader, .primary: return member.name == leaderName
            case .replica: return member.name != leaderName
            }
        }
        guard !chosen.isEmpty else { return .failure(CLIProblem("no member is \(role.rawValue)")) }
        return .success(chosen.sorted { $0.name < $1.name })
    }
}

extension OperatorStore {
    /// The members `names` (or those in `role`) of `view`; exits with the problem otherwise.
    func members(of view: ClusterView, _ names: [String], role: MemberRole) -> [Member] {
        switch view.select(names, role: role) {
        case .success(let found): return found
        case .failure(let problem): fail(problem.description)
        }
    }

    /// `method path` on each member's REST API, one line per member; exit status 1 when any
    /// failed or did not answer.
    func callEach(_ members: [Member], _ method: String, path: String, timeout: Double = 10) async throws {
        var failed = false
        for member in members {
            do {
                let reply = try await api.call(method, member.apiURL, path: path, timeout: timeout)
                print("\(member.name): \(reply.ok ? "" : "failed: ")\(reply.message)")
                failed = failed || !reply.ok
            } catch {
                print("\(member.name): failed: its REST API did not answer (\(error))")
                failed = true
            }
        }
        if failed { throw ExitCode(1) }
    }
}

struct CLIProblem: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// libpq key=value words for a member's `conn_url` (`postgres://host:port/db`), as
/// `patronictl dsn` prints them; nil when the URL is not one.
func connectionWords(_ connURL: String) -> (host: String, port: Int)? {
    guard let components = URLComponents(string: connURL), let host = components.host, !host.isEmpty else {
        return nil
    }
    return (host, components.port ?? 5432)
}

struct ReloadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload",
        abstract: "Re-read the agent's configuration and reload PostgreSQL on members (POST /reload).")
    @OptionGroup var options: ConfigOptions
    @Argument(help: "Members to reload (default: every member, or those of --role).") var members: [String] = []
    @Option(help: "Only members in this role: leader, replica or any.") var role: MemberRole = .any
    @Flag(help: "Do not ask for confirmation.") var force = false

    func run() async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        let chosen = op.members(of: try await op.load(), members, role: role)
        let names = chosen.map(\.name).joined(separator: ", ")
        if !force, !confirm("Reload \(names)?") { op.fail("aborted") }
        try await op.callEach(chosen, "POST", path: "/reload", timeout: 30)
    }
}

struct FlushCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flush",
        abstract: "Cancel scheduled restarts (flush [MEMBER...] restart) or a scheduled switchover (flush switchover).")
    @OptionGroup var options: ConfigOptions
    @Argument(help: "Members (for restart), then what to flush: restart or switchover.") var words: [String]
    @Option(help: "Only members in this role: leader, replica or any.") var role: MemberRole = .any
    @Flag(help: "Do not ask for confirmation.") var force = false

    func validate() throws {
        guard let target = words.last, ["restart", "switchover"].contains(target) else {
            throw ValidationError("say what to flush last: restart or switchover (e.g. baton flush node2 restart)")
        }
        if target == "switchover", words.count > 1 {
            throw ValidationError("flush switchover takes no member: the switchover is the cluster's")
        }
    }

    func run() async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        let view = try await op.load()
        if words.last == "switchover" {
            // Only a scheduled one: an immediate switchover or failover is already under way.
            guard let failover = view.failover, failover.value.scheduled_at != nil else {
                print(
                    view.failover == nil ? "no scheduled switchover" : "no scheduled switchover (one is under way now)")
                return
            }
            if !force, !confirm("Cancel the scheduled switchover?") { op.fail("aborted") }
            guard try await op.store.deleteFailover(expected: failover.modRevision) else {
                op.fail("the switchover key changed meanwhile; look again with baton list")
            }
            print("scheduled switchover cancelled")
            return
        }
        let chosen = op.members(of: view, Array(words.dropLast()), role: role)
        if !force, !confirm("Cancel the scheduled restart of \(chosen.map(\.name).joined(separator: ", "))?") {
            op.fail("aborted")
        }
        try await op.callEach(chosen, "DELETE", path: "/restart")
    }
}

struct DSNCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dsn", abstract: "Print a libpq connection string for a member (the leader by default).")
    @OptionGroup var options: ConfigOptions
    @Argument(help: "The member (default: the first of --role).") var member: String?
    @Option(help: "leader, replica or any.") var role: MemberRole = .leader

    func run() async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        let view = try await op.load()
        let chosen = op.members(of: view, member.map { [$0] } ?? [], role: role)
        guard let target = chosen.first, let words = connectionWords(target.connURL) else {
            op.fail("\(chosen.first?.name ?? "the member") publishes no usable conn_url")
        }
        // Quoted as libpq reads it: a conn_url from etcd cannot add keywords (host=a host=evil).
        print(ConnInfo.make([("host", words.host), ("port", String(words.port))]))
    }
}

struct QueryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "query",
        abstract: "Run SQL on a member (the leader by default) and print the rows as a table, JSON or YAML.")
    @OptionGroup var options: ConfigOptions
    @Argument(help: "The member (default: the first of --role).") var member: String?
    @Option(help: "leader, replica or any.") var role: MemberRole = .leader
    // Not -c, as patronictl has it: -c names the configuration file in every baton command.
    @Option(name: .customLong("command"), help: "The SQL to run.") var command: String?
    @Option(name: [.short, .customLong("file")], help: "A file of SQL to run.") var file: String?
    @Option(name: [.customShort("U"), .long], help: "The role to connect as (default: the superuser).")
    var username: String?
    @Option(name: [.short, .customLong("dbname")], help: "The database (default: postgres).") var database = "postgres"
    @Option(help: "Output format: table, json or yaml.") var format: OutputFormat = .table

    func validate() throws {
        guard (command == nil) != (file == nil) else {
            throw ValidationError("give the SQL with --command or -f, once (-c names the configuration file)")
        }
    }

    func run() async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        let view = try await op.load()
        let chosen = op.members(of: view, member.map { [$0] } ?? [], role: role)
        guard let target = chosen.first, let words = connectionWords(target.connURL) else {
            op.fail("\(chosen.first?.name ?? "the member") publishes no usable conn_url")
        }
        let sql: String
        if let command {
            sql = command
        } else if let file, let text = try? String(contentsOfFile: file, encoding: .utf8) {
            sql = text
        } else {
            op.fail("cannot read \(file ?? "the SQL file")")
        }
        // The password comes from libpq's own sources (PGPASSWORD, PGPASSFILE, ~/.pgpass), never
        // from the agent's file: the host is whatever conn_url etcd holds, and a server there could
        // ask for the password in clear text.
        let user = username ?? op.configuration.postgresql.superuser.username
        let password = ProcessInfo.processInfo.environment["PGPASSWORD"]
        let parameters = ConnectionParameters(
            host: words.host, port: words.port, user: user, password: password, database: database,
            applicationName: "baton-query", connectTimeout: .seconds(5), statementTimeout: .seconds(300))
        let results: [QueryResult]
        do {
            let connection = try await PostgresConnection.connect(parameters)
            defer { Task { await connection.close() } }
            results = try await connection.queryBatch(sql)
        } catch {
            op.fail("\(target.name): \(error)")
        }
        for result in results {
            print(QueryOutput.render(result, format: format), terminator: "")
        }
    }
}

/// A query result as the CLI prints it.
enum QueryOutput {
    static func render(_ result: QueryResult, format: OutputFormat) -> String {
        guard !result.columns.isEmpty else { return result.commandTag + "\n" }
        switch format {
        case .table:
            let rows = result.rows.map { $0.values.map { $0 ?? "NULL" } }
            return ClusterTable.table(header: result.columns, rows: rows).joined(separator: "\n") + "\n"
        case .json, .yaml:
            let objects: [JSONValue] = result.rows.map { row in
                var object: [String: JSONValue] = [:]
                for (index, column) in result.columns.enumerated() {
                    object[column] = row.values[index].map { .string($0) } ?? .null
                }
                return .object(object)
            }
            guard format == .json else { return OperatorFormatting.yaml(.array(objects)) }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let data = (try? encoder.encode(JSONValue.array(objects))) ?? Data("[]".utf8)
            return String(decoding: data, as: UTF8.self) + "\n"
        }
    }
}
