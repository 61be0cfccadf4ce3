// baton-bench-probe: the BatonClient write prober of `scripts/bench failover`
// (scripts/lib/bench_failover.py runs one beside its libpq prober in every run; the definitions of
// U and L are in ../shared/design/faults.md). Every `interval_ms` (20) it writes the next unique id
// through `BatonClient.write` (topology from etcd, the client's default settings otherwise) and
// prints one JSON object per attempt on stdout:
//
//   {"event":"ready","t":…}                                  the client has read the topology
//   {"id":…,"sent":…,"ack":…,"port":…}                        acknowledged by the server on `port`
//   {"id":…,"sent":…,"error":"noPrimary","outcome_unknown":false,"message":"…"}   failed
//   {"event":"end","t":…,"attempts":…,"acked":…}
//
// Times are seconds on CLOCK_MONOTONIC, the clock of Python's time.monotonic() on Linux: one
// system-wide clock, so the harness compares these stamps with its own (the fault's moment)
// directly, with no offset to estimate and no wall-clock steps. (Swift's ContinuousClock is
// CLOCK_BOOTTIME on Linux, which differs from CLOCK_MONOTONIC by any time spent suspended; hence
// clock_gettime here.) A stamp is taken right before `write` is called and right after it returns.
//
// Usage: baton-bench-probe etcd_hosts=… scope=… user=… [dbname=…] [table=bench_probe_client]
//        [first_id=N] [interval_ms=20] [seconds=600] [any other BatonClient setting=…]
// The table must exist with an `id bigint` column; ids are first_id+1, first_id+2, … The password
// comes from $BATON_PASSWORD (or $BATON_SUPERUSER_PASSWORD). It stops after `seconds`, or as soon
// as its stdin (when a pipe, as the harness gives it) reaches end of file.
import BatonClient
import Foundation
import Logging
import PostgresNIO
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

func usage(_ message: String) -> Never {
    FileHandle.standardError.write(
        Data(
            ("baton-bench-probe: \(message)\nusage: baton-bench-probe etcd_hosts=h:2379,… scope=S user=U "
                + "[table=T] [first_id=N] [interval_ms=20] [seconds=600] [BatonClient setting=value …]\n").utf8))
    exit(2)
}

/// Seconds on CLOCK_MONOTONIC (see the header: comparable with Python's time.monotonic()).
func monotonic() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// One JSON line on stdout, written at once (write(2), no buffering) so the harness sees it live.
func emit(_ object: [String: Any]) {
    guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
    FileHandle.standardOutput.write(data + Data("\n".utf8))
}

var settings: [String: String] = [:]
var table = "bench_probe_client"
var firstId = Int(Date().timeIntervalSince1970 * 1000) * 1000
var interval = 0.020
var seconds = 600.0
for argument in CommandLine.arguments.dropFirst() {
    let parts = argument.split(separator: "=", maxSplits: 1).map(String.init)
    guard parts.count == 2 else { usage("'\(argument)' is not key=value") }
    let (key, value) = (parts[0], parts[1])
    switch key {
    case "table":
        guard value.range(of: "^[a-z_][a-z0-9_]{0,62}$", options: .regularExpression) != nil else {
            usage("table=\(value): expected a lower-case SQL identifier such as bench_probe_client")
        }
        table = value
    case "first_id":
        guard let number = Int(value), number >= 0 else { usage("first_id=\(value): expected an integer ≥ 0") }
        firstId = number
    case "interval_ms":
        guard let number = Double(value), number >= 1, number <= 10_000 else {
            usage("interval_ms=\(value): expected milliseconds between 1 and 10000")
        }
        interval = number / 1000
    case "seconds":
        guard let number = Double(value), number > 0, number <= 86_400 else {
            usage("seconds=\(value): expected a positive number of seconds (at most 86400)")
        }
        seconds = number
    case "password":
        usage("pass the password in $BATON_PASSWORD, not on the command line")
    default:
        settings[key] = value
    }
}
let environment = ProcessInfo.processInfo.environment
if let password = environment["BATON_PASSWORD"] ?? environment["BATON_SUPERUSER_PASSWORD"] {
    settings["password"] = password
}
settings["application_name"] = settings["application_name"] ?? "baton-bench-probe"

// The client's own log (primary changes, breakers) goes to stderr; the harness keeps it in a file.
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .info
    return handler
}

let configuration: BatonClientConfiguration
do {
    configuration = try BatonClientConfiguration(settings: settings)
} catch {
    usage("\(error)")
}
let client: BatonClient
do {
    client = try await BatonClient(configuration)
} catch {
    FileHandle.standardError.write(Data("baton-bench-probe: \(error)\n".utf8))
    exit(1)
}

final class StopFlag: Sendable {
    private let stopped = Atomic<Bool>(false)
    var isSet: Bool { stopped.load(ordering: .acquiring) }
    func set() { stopped.store(true, ordering: .releasing) }
}
let stop = StopFlag()
var status = stat()
if fstat(STDIN_FILENO, &status) == 0 && (status.st_mode & S_IFMT) == S_IFIFO {
    // A blocking read on its own thread, not on the (2-thread) cooperative pool.
    Thread.detachNewThread { [stop] in
        _ = FileHandle.standardInput.readDataToEndOfFile()
        stop.set()
    }
}

emit(["event": "ready", "t": monotonic()])
// The table name is the operator's (a flag): it goes in the text; the id is a typed bind.
let statement = "INSERT INTO \(table) (id) VALUES ($1) RETURNING inet_server_port()"
let deadline = monotonic() + seconds
var id = firstId
var attempts = 0
var acknowledged = 0
while !stop.isSet && monotonic() < deadline {
    id += 1
    attempts += 1
    var bindings = PostgresBindings()
    bindings.append(id)
    let query = PostgresQuery(unsafeSQL: statement, binds: bindings)
    let sent = monotonic()
    var record: [String: Any] = ["id": id, "sent": sent]
    do {
        let (port, _) = try await client.write { conn in
            var port = -1
            for try await value in try await conn.query(query).decode(Int.self) { port = value }
            return port
        }
        record["ack"] = monotonic()
        record["port"] = port
        acknowledged += 1
    } catch let error as BatonClientError {
        record["error"] = error.code.rawValue
        record["outcome_unknown"] = error.commitOutcomeUnknown
        record["message"] = String(error.message.prefix(200))
    } catch let error as PSQLError {
        record["error"] = "sql"
        record["outcome_unknown"] = true
        record["message"] = String(String(reflecting: error).prefix(200))
    } catch {
        record["error"] = "other"
        record["outcome_unknown"] = true
        record["message"] = String(String(describing: error).prefix(200))
    }
    emit(record)
    let pause = interval - (monotonic() - sent)
    if pause > 0 { try? await Task.sleep(for: .nanoseconds(Int64(pause * 1e9))) }
}
emit(["event": "end", "t": monotonic(), "attempts": attempts, "acked": acknowledged])
await client.shutdown()
