// baton-bench-client: the figures of `scripts/bench client` (which starts the cluster and runs
// this). Prints one JSON object per line:
//   {"bench":"throughput", …}  pooled `SELECT 1` vs raw postgres-nio (PostgresConnection) and raw
//                              libpq, N tasks on N connections, one server, taking turns in
//                              0.25 s slices; with the client's CPU time per statement
//   {"bench":"overhead", …}    routing + acquire + release per request (empty body), in ns
//   {"bench":"failover", …}    new leader key → first write acknowledged through the pool, in ms
//
// Usage: baton-bench-client etcd_hosts=… scope=… user=… [tasks=8] [seconds=5] [rounds=3]
//        [iterations=20000] [failovers=3] [kill_cmd='… {n}'] [start_cmd='… {n}']
//        [profile=raw|pooled|libpq]  (that throughput body alone for `seconds`, then exit)
// ({n} is replaced by the primary's node number; without kill_cmd no failover is measured).
// The password comes from $BATON_PASSWORD (or $BATON_SUPERUSER_PASSWORD).
import BatonClient
import BatonCore
import BatonEtcd
import BatonPostgres
import Foundation
import Logging
import PostgresNIO
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

var arguments: [String: String] = [:]
for argument in CommandLine.arguments.dropFirst() {
    let parts = argument.split(separator: "=", maxSplits: 1).map(String.init)
    guard parts.count == 2 else {
        FileHandle.standardError.write(Data("usage: baton-bench-client key=value …\n".utf8))
        exit(2)
    }
    arguments[parts[0]] = parts[1]
}
let benchKeys: Set<String> = [
    "tasks", "seconds", "rounds", "iterations", "failovers", "kill_cmd", "start_cmd", "profile",
]
let given = arguments
func take(_ key: String) -> String? { given[key] }
let tasks = Int(take("tasks") ?? "8") ?? 8
let seconds = Double(take("seconds") ?? "5") ?? 5
let rounds = Int(take("rounds") ?? "3") ?? 3
let iterations = Int(take("iterations") ?? "20000") ?? 20000
let failovers = Int(take("failovers") ?? "3") ?? 3
let killCommand = take("kill_cmd")
let startCommand = take("start_cmd")
var settings = arguments.filter { !benchKeys.contains($0.key) }
let environment = ProcessInfo.processInfo.environment
if settings["password"] == nil, let password = environment["BATON_PASSWORD"] ?? environment["BATON_SUPERUSER_PASSWORD"]
{
    settings["password"] = password
}
settings["application_name"] = "baton-bench-client"

let quiet = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("baton-bench-client: \(message)\n".utf8))
    exit(1)
}

func stats(_ values: [Double]) -> (min: Double, median: Double, max: Double) {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return (0, 0, 0) }
    return (sorted[0], sorted[sorted.count / 2], sorted[sorted.count - 1])
}

func json(_ object: [String: Any]) -> String {
    guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return "{}" }
    let line = String(decoding: data, as: UTF8.self)
    // Also on stderr, so that a run cut short still shows what it measured.
    FileHandle.standardError.write(Data((line + "\n").utf8))
    return line
}

func round3(_ value: Double) -> Double { (value * 1000).rounded() / 1000 }

let clusterConfiguration: BatonClientConfiguration
do {
    clusterConfiguration = try BatonClientConfiguration(settings: settings)
} catch {
    fail("\(error)")
}
let cluster = try await BatonClient(clusterConfiguration, logger: quiet)
guard case .member(let primaryName, let primary, _)? = cluster.topology.primary else {
    fail("no primary published: \(cluster.topology)")
}
FileHandle.standardError.write(Data("topology: \(cluster.topology)\n".utf8))

// MARK: Throughput: pooled vs raw postgres-nio (and raw libpq), one server

/// Statements and the process's CPU time, counted over many short slices.
struct Tally {
    var statements = 0
    var seconds = 0.0
    var cpuMicroseconds = 0.0
    var rate: Double { seconds > 0 ? Double(statements) / seconds : 0 }
    var cpuPerStatement: Double { statements > 0 ? cpuMicroseconds / Double(statements) : 0 }

    static func += (total: inout Tally, part: Tally) {
        total.statements += part.statements
        total.seconds += part.seconds
        total.cpuMicroseconds += part.cpuMicroseconds
    }
}

/// User + system CPU time of this process, in microseconds.
func processCPU() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    let seconds = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec
    return Double(seconds) * 1e6 + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
}

/// Runs `body` in `tasks` tasks for `seconds`: what it did.
func run(tasks: Int, seconds: Double, _ body: @escaping @Sendable (Int) async throws -> Void) async throws -> Tally {
    let count = Counter()
    let cpuBefore = processCPU()
    let deadline = ContinuousClock.now + (Duration(checkedSeconds: seconds) ?? .seconds(10))
    let started = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        for task in 0..<tasks {
            group.addTask {
                while ContinuousClock.now < deadline {
                    try await body(task)
                    count.value.add(1, ordering: .relaxed)
                }
            }
        }
        try await group.waitForAll()
    }
    return Tally(
        statements: count.value.load(ordering: .relaxed), seconds: (ContinuousClock.now - started).secondsDouble,
        cpuMicroseconds: processCPU() - cpuBefore)
}

final class Counter: Sendable {
    let value = Atomic<Int>(0)
}

extension Duration {
    var secondsDouble: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

var pooledSettings = settings
for key in ["etcd_hosts", "scope", "namespace", "agents"] { pooledSettings.removeValue(forKey: key) }
pooledSettings["host"] = primary.description
pooledSettings["max_connections"] = String(tasks)
pooledSettings["min_connections"] = String(tasks)
let pooled = try await BatonClient(try BatonClientConfiguration(settings: pooledSettings), logger: quiet)
let parameters = ConnectionParameters(
    host: primary.host, port: primary.port, user: settings["user"] ?? "postgres", password: settings["password"],
    database: settings["dbname"] ?? "postgres", applicationName: "baton-bench-raw")
var libpq: [BatonPostgres.PostgresConnection] = []
for _ in 0..<tasks { libpq.append(try await BatonPostgres.PostgresConnection.connect(parameters)) }
let libpqConnections = libpq
var nioConfiguration = PostgresNIO.PostgresConnection.Configuration(
    host: primary.host, port: primary.port, username: settings["user"] ?? "postgres", password: settings["password"],
    database: settings["dbname"] ?? "postgres", tls: .disable)
nioConfiguration.options.additionalStartupParameters = [("application_name", "baton-bench-raw-nio")]
var nio: [PostgresNIO.PostgresConnection] = []
for task in 0..<tasks {
    nio.append(
        try await PostgresNIO.PostgresConnection.connect(configuration: nioConfiguration, id: task, logger: quiet))
}
let nioConnections = nio

/// One `SELECT 1` on a raw postgres-nio connection, rows consumed (as the pooled path does).
@Sendable func rawNIO(_ task: Int) async throws {
    for try await _ in try await nioConnections[task].query("SELECT 1", logger: quiet) {}
}
let aToA = ProcessInfo.processInfo.environment["BENCH_AA"] == "1"
@Sendable func pooledNIO(_ task: Int) async throws {
    if aToA { return try await rawNIO(task) }
    try await pooled.read(consistency: .strong) { conn in for try await _ in try await conn.query("SELECT 1") {} }
}
@Sendable func rawLibpq(_ task: Int) async throws { _ = try await libpqConnections[task].query("SELECT 1") }

// profile=raw|pooled|libpq: that one alone for `seconds` (to watch it with perf), then exit.
if let profile = take("profile") {
    guard let body = ["raw": rawNIO, "pooled": pooledNIO, "libpq": rawLibpq][profile] else {
        fail("profile must be raw, pooled or libpq")
    }
    _ = try await run(tasks: tasks, seconds: 0.5, body)
    let tally = try await run(tasks: tasks, seconds: seconds, body)
    print(
        json([
            "bench": "profile", "body": profile, "qps": tally.rate.rounded(),
            "client_cpu_us_per_statement": round3(tally.cpuPerStatement),
        ]))
    exit(0)
}

// The three take turns in short slices (a quarter second each), so that what the machine does
// meanwhile (the agents' loops, checkpoints, the scheduler) falls on all three alike; a round
// is `seconds` of each. BENCH_AA=1 puts the raw body in the pooled slot too (an A/A run: the
// method's own bias and noise).
let slice = 0.25
for body in [rawNIO, pooledNIO, rawLibpq] as [@Sendable (Int) async throws -> Void] {
    _ = try await run(tasks: tasks, seconds: 0.5, body)
}
var nioRounds: [Tally] = []
var pooledRounds: [Tally] = []
var libpqRounds: [Tally] = []
var ratios: [Double] = []
for round in 1...rounds {
    var (nioTally, pooledTally, libpqTally) = (Tally(), Tally(), Tally())
    for turn in 0..<max(2, Int((seconds / slice).rounded())) {
        // Raw and pooled swap places every turn: the slice that follows another measured a few
        // percent lower even with the same body in both.
        if turn.isMultiple(of: 2) {
            nioTally += try await run(tasks: tasks, seconds: slice, rawNIO)
            pooledTally += try await run(tasks: tasks, seconds: slice, pooledNIO)
        } else {
            pooledTally += try await run(tasks: tasks, seconds: slice, pooledNIO)
            nioTally += try await run(tasks: tasks, seconds: slice, rawNIO)
        }
        libpqTally += try await run(tasks: tasks, seconds: slice, rawLibpq)
    }
    nioRounds.append(nioTally)
    pooledRounds.append(pooledTally)
    libpqRounds.append(libpqTally)
    ratios.append(pooledTally.rate / nioTally.rate)
    FileHandle.standardError.write(
        Data(
            String(
                format:
                    "throughput round %d: raw postgres-nio %.0f/s (%.1f µs CPU each), pooled %.0f/s (%.1f µs, %.3fx), "
                    + "raw libpq %.0f/s (%.1f µs)\n",
                round, nioTally.rate, nioTally.cpuPerStatement, pooledTally.rate, pooledTally.cpuPerStatement,
                pooledTally.rate / nioTally.rate, libpqTally.rate, libpqTally.cpuPerStatement
            ).utf8))
}
for connection in libpqConnections { await connection.close() }
for connection in nioConnections { try? await connection.close().get() }
await pooled.shutdown()
func summary(_ values: [Double]) -> [String: Double] {
    let (low, median, high) = stats(values)
    return ["min": low.rounded(), "median": median.rounded(), "max": high.rounded()]
}
let (ratioMin, ratioMedian, ratioMax) = stats(ratios)
print(
    json([
        "bench": "throughput", "server": "\(primaryName) \(primary)", "tasks": tasks, "seconds": seconds,
        "rounds": rounds, "slice_seconds": slice, "raw_qps": summary(nioRounds.map(\.rate)),
        "pooled_qps": summary(pooledRounds.map(\.rate)), "raw_libpq_qps": summary(libpqRounds.map(\.rate)),
        "client_cpu_us_per_statement": [
            "raw": round3(stats(nioRounds.map(\.cpuPerStatement)).median),
            "pooled": round3(stats(pooledRounds.map(\.cpuPerStatement)).median),
            "raw_libpq": round3(stats(libpqRounds.map(\.cpuPerStatement)).median),
        ],
        "ratio": ["min": round3(ratioMin), "median": round3(ratioMedian), "max": round3(ratioMax)],
        "target_ratio": 0.95,
    ]))

// MARK: Routing overhead per acquire (empty body: no statement, no I/O)

func perAcquire(_ consistency: Consistency) async throws -> [Double] {
    var samples: [Double] = []
    for _ in 0..<5 {
        let started = ContinuousClock.now
        for _ in 0..<iterations { try await cluster.read(consistency: consistency) { _ in () } }
        samples.append((ContinuousClock.now - started).secondsDouble * 1e9 / Double(iterations))
    }
    return samples
}
// Warm: a connection in each pool.
for _ in 0..<10 {
    try await cluster.read(consistency: .eventual) { _ in () }
    try await cluster.read(consistency: .strong) { _ in () }
}
let eventualNs = stats(try await perAcquire(.eventual))
let strongNs = stats(try await perAcquire(.strong))
print(
    json([
        "bench": "overhead", "iterations": iterations,
        "replica_read_ns": [
            "min": eventualNs.min.rounded(), "median": eventualNs.median.rounded(), "max": eventualNs.max.rounded(),
        ],
        "primary_read_ns": [
            "min": strongNs.min.rounded(), "median": strongNs.median.rounded(), "max": strongNs.max.rounded(),
        ],
        "target_ns": 2000,
    ]))

// MARK: Failover: new leader key → first write acknowledged through the pool

guard let killCommand, failovers > 0 else {
    await cluster.shutdown()
    exit(0)
}
guard case .etcd(let etcdOptions) = clusterConfiguration.topology else { fail("the failover bench needs etcd_hosts") }
let etcd = EtcdClient(
    configuration: EtcdConfiguration(endpoints: etcdOptions.endpoints, requestTimeout: .seconds(2)), logger: quiet)
let store = EtcdClusterStore(client: etcd, namespace: etcdOptions.namespace, scope: etcdOptions.scope, logger: quiet)

func shell(_ template: String, node: String) {
    let command = template.replacingOccurrences(of: "{n}", with: String(node.drop { !$0.isNumber }))
    // system(3), not Foundation's Process: its waitUntilExit did not always return here.
    let quoted = "'" + command.replacingOccurrences(of: "'", with: "'\\''") + "'"
    let status = system("exec /bin/bash -c " + quoted)
    guard status == 0 else { fail("'\(command)' exited with status \(status)") }
}

try await cluster.write { conn in
    try await conn.query("CREATE TABLE IF NOT EXISTS bench_client (id bigint PRIMARY KEY, node int)")
}

/// The new primary's address once the client routes writes to it (within 5 s).
func adopted(_ leader: String) async -> Endpoint? {
    for _ in 0..<500 {
        if case .member(let name, let endpoint, _)? = cluster.topology.primary, name == leader { return endpoint }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return nil
}

/// Acks as (time, server port).
let acks = Mutex<[(ContinuousClock.Instant, Int)]>([])
let writer = Task {
    var id = Int(Date().timeIntervalSince1970 * 1000) * 1000
    while !Task.isCancelled {
        id += 1
        if let (port, _) = try? await cluster.write({ conn in
            var port = -1
            let rows = try await conn.query(
                "INSERT INTO bench_client VALUES (\(id), inet_server_port()) RETURNING inet_server_port()")
            for try await value in rows.decode(Int.self) { port = value }
            return port
        }) {
            acks.withLock { $0.append((.now, port)) }
        } else {
            try? await Task.sleep(for: .milliseconds(1))
        }
    }
}

var latencies: [Double] = []
for run in 1...failovers {
    // Healthy: a confirmed primary and two running replicas.
    let healthyBy = ContinuousClock.now + .seconds(120)
    while ContinuousClock.now < healthyBy {
        let topology = cluster.topology
        if case .member(_, _, true)? = topology.primary,
            topology.replicas.filter({ $0.state == "running" && ($0.lagBytes ?? .max) < 1_048_576 }).count == 2
        {
            break
        }
        try await Task.sleep(for: .milliseconds(200))
    }
    try await Task.sleep(for: .seconds(2))
    guard case .member(let old, _, _)? = cluster.topology.primary else { fail("no primary before failover \(run)") }
    let view = try await store.loadCluster()
    let watcher = Task { () -> (String, ContinuousClock.Instant)? in
        for await event in store.watch(after: view.revision) {
            guard case .put(let key, _) = event, key == .leader else { continue }
            if let leader = try? await store.loadCluster().leader?.member, leader != old { return (leader, .now) }
        }
        return nil
    }
    shell(killCommand, node: old)
    let change = await withTaskGroup(of: (String, ContinuousClock.Instant)?.self) { group in
        group.addTask { await watcher.value }
        group.addTask {
            try? await Task.sleep(for: .seconds(60))
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        watcher.cancel()
        return first
    }
    guard let (leader, keyAt) = change else { fail("no new leader within 60 s of killing \(old)") }
    guard let newEndpoint = await adopted(leader) else { fail("the client never adopted \(leader)") }
    var firstAck: ContinuousClock.Instant?
    let ackBy = ContinuousClock.now + .seconds(30)
    while firstAck == nil && ContinuousClock.now < ackBy {
        firstAck = acks.withLock { $0.first { $0.0 > keyAt && $0.1 == newEndpoint.port }?.0 }
        if firstAck == nil { try await Task.sleep(for: .milliseconds(5)) }
    }
    guard let firstAck else { fail("no write acknowledged by \(leader) within 30 s") }
    let milliseconds = (firstAck - keyAt).secondsDouble * 1000
    latencies.append(milliseconds)
    FileHandle.standardError.write(
        Data(
            String(
                format: "failover %d: %@ → %@, first write acknowledged %.1f ms after the new leader key\n", run, old,
                leader, milliseconds
            ).utf8))
    if let startCommand { shell(startCommand, node: old) }
}
writer.cancel()
_ = await writer.value
let (failoverMin, failoverMedian, failoverMax) = stats(latencies)
print(
    json([
        "bench": "failover", "runs": latencies.count,
        "leader_key_to_first_ack_ms": [
            "min": round3(failoverMin), "median": round3(failoverMedian), "max": round3(failoverMax),
        ],
        "target_ms": 100,
    ]))
await cluster.shutdown()
etcd.shutdown()
