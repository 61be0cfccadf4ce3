// baton-client-example: keeps writing and reading through BatonClient and prints where each
// request went. Run it against the demo cluster (`scripts/demo`, then `scripts/demo client`, which
// also kills the primary halfway so you can watch the failover), or against any Baton cluster:
//
//   BATON_PASSWORD=… baton-client-example etcd_hosts=127.0.0.1:24790 scope=demo user=postgres seconds=30
//
// Arguments are BatonClient settings (`key=value`, see docs/client.md) plus `seconds=N` (how long
// to run, default 30) and `verbose=1` (routing decisions at debug level). The password comes from
// $BATON_PASSWORD (or $BATON_SUPERUSER_PASSWORD), never from the command line.
import BatonClient
import Foundation
import Logging
import PostgresNIO

#if canImport(Glibc)
    import Glibc
#endif

var settings: [String: String] = [:]
var seconds = 30.0
var verbose = false
for argument in CommandLine.arguments.dropFirst() {
    let parts = argument.split(separator: "=", maxSplits: 1).map(String.init)
    guard parts.count == 2 else {
        FileHandle.standardError.write(
            Data(
                "usage: baton-client-example key=value … (e.g. etcd_hosts=h:2379 scope=demo user=postgres seconds=30)\n"
                    .utf8))
        exit(2)
    }
    switch parts[0] {
    case "seconds":
        guard let value = Double(parts[1]), value > 0, value <= 31_536_000 else {
            FileHandle.standardError.write(Data("seconds must be a positive number, got '\(parts[1])'\n".utf8))
            exit(2)
        }
        seconds = value
    case "verbose": verbose = parts[1] != "0"
    default: settings[parts[0]] = parts[1]
    }
}
let environment = ProcessInfo.processInfo.environment
if settings["password"] == nil, let password = environment["BATON_PASSWORD"] ?? environment["BATON_SUPERUSER_PASSWORD"]
{
    settings["password"] = password
}
settings["application_name"] = settings["application_name"] ?? "baton-client-example"
settings["primary_wait_timeout"] = settings["primary_wait_timeout"] ?? "30s"

let logLevel: Logger.Level = verbose ? .debug : .info
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = logLevel
    return handler
}

let started = ContinuousClock.now
func stamp() -> String {
    let elapsed = ContinuousClock.now - started
    return String(
        format: "t+%6.2fs", Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
}

/// The member a connection reached, without the address.
func member(_ connection: BatonConnection) -> String {
    String(connection.server.split(separator: " ").first ?? Substring(connection.server))
}

let configuration: BatonClientConfiguration
do {
    configuration = try BatonClientConfiguration(settings: settings)
} catch {
    FileHandle.standardError.write(Data("baton-client-example: \(error)\n".utf8))
    exit(2)
}

let client: BatonClient
do {
    client = try await BatonClient(configuration, logger: Logger(label: "baton.client"))
} catch {
    FileHandle.standardError.write(Data("baton-client-example: \(error)\n".utf8))
    exit(1)
}
print("\(stamp())  topology: \(client.topology)")

try await client.write { conn in
    try await conn.query(
        "CREATE TABLE IF NOT EXISTS baton_client_example (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
}

var acknowledged = 0
var failedWrites = 0
var lastAck: ContinuousClock.Instant?
var longestGap: Duration = .zero
var routes: [String: Int] = [:]
var stale = 0
let deadline = started + .seconds(seconds)
var lastPrimary = client.topology.primary?.description

while ContinuousClock.now < deadline {
    if let primary = client.topology.primary?.description, primary != lastPrimary {
        print("\(stamp())  topology: primary is now \(primary)")
        lastPrimary = primary
    }
    // A write, then a read that must see it, then an eventual read.
    do {
        let ((id, writer), token) = try await client.write { conn in
            var id: Int64 = -1
            let rows = try await conn.query("INSERT INTO baton_client_example DEFAULT VALUES RETURNING id")
            for try await value in rows.decode(Int64.self) { id = value }
            return (id, member(conn))
        }
        let now = ContinuousClock.now
        if let lastAck { longestGap = max(longestGap, now - lastAck) }
        lastAck = now
        acknowledged += 1
        routes["write → \(writer)", default: 0] += 1
        let (found, reader) = try await client.read(consistency: .readYourWrites(token)) { conn in
            // Typed binds: `id` travels as an int8 parameter, never in the SQL text.
            var count = 0
            let rows = try await conn.query("SELECT count(*) FROM baton_client_example WHERE id = \(id)")
            for try await value in rows.decode(Int.self) { count = value }
            return (count == 1, member(conn))
        }
        if !found { stale += 1 }
        routes["read-your-writes → \(reader)", default: 0] += 1
        let eventual = try await client.read(consistency: .eventual) { conn in member(conn) }
        routes["eventual read → \(eventual)", default: 0] += 1
        if acknowledged % 25 == 1 {
            print(
                "\(stamp())  write #\(id) → \(writer)   read-your-writes(\(token)) → \(reader)\(found ? "" : " STALE")   eventual read → \(eventual)"
            )
        }
    } catch let error as BatonClientError {
        failedWrites += 1
        print(
            "\(stamp())  \(error.code): \(error.message)\(error.commitOutcomeUnknown ? " [commit outcome unknown]" : "")"
        )
        try? await Task.sleep(for: .milliseconds(100))
    } catch {
        failedWrites += 1
        print("\(stamp())  error: \(error)")
        try? await Task.sleep(for: .milliseconds(100))
    }
    try? await Task.sleep(for: .milliseconds(20))
}

print(
    "\(stamp())  done: \(acknowledged) writes acknowledged, \(failedWrites) failed, \(stale) stale read-your-writes reads"
)
print("          longest gap between acknowledged writes: \(longestGap)")
// The same routing as postgres-nio's `PostgresDatabase` (what PostgresKit's `.sql()` and Fluent's
// PostgreSQL driver take): an eventual read on a replica.
if let rows = try? await client.database(.read(.eventual)).query("SELECT count(*) FROM baton_client_example").get()
    .rows,
    let count = try? rows.first?.decode(Int.self)
{
    print("          rows in the table (PostgresDatabase adapter, eventual read): \(count)")
}
for (route, count) in routes.sorted(by: { $0.key < $1.key }) { print("          \(route): \(count)") }
await client.shutdown()
exit(stale == 0 ? 0 : 1)
