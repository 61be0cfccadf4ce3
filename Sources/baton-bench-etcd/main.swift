// baton-bench-etcd: latency and throughput of one EtcdClient (sequential calls) against a running
// etcd. Usage: baton-bench-etcd ENDPOINTS [OPS] — prints one JSON object per operation kind, one a
// line, then nothing else. Driven by `scripts/bench etcd`.
import BatonCore
import BatonEtcd
import Foundation
import Logging

struct Stats: Encodable {
    var op: String
    var ops: Int
    var seconds: Double
    var opsPerSecond: Double
    var minMs: Double
    var p50Ms: Double
    var p99Ms: Double
    var maxMs: Double

    init(op: String, samples: [Duration], total: Duration) {
        let ms = samples.map { Double($0.components.attoseconds) / 1e15 + Double($0.components.seconds) * 1000 }
            .sorted()
        func percentile(_ p: Double) -> Double {
            guard !ms.isEmpty else { return 0 }
            return ms[min(ms.count - 1, Int((Double(ms.count) * p).rounded(.up)) - 1)]
        }
        self.op = op
        self.ops = ms.count
        self.seconds = Double(total.components.seconds) + Double(total.components.attoseconds) / 1e18
        self.opsPerSecond = seconds > 0 ? Double(ms.count) / seconds : 0
        self.minMs = ms.first ?? 0
        self.p50Ms = percentile(0.5)
        self.p99Ms = percentile(0.99)
        self.maxMs = ms.last ?? 0
    }
}

func measure(_ op: String, count: Int, _ body: () async throws -> Void) async throws -> Stats {
    for _ in 0..<min(50, count / 10 + 1) { try await body() }  // warm-up: connections, threads
    var samples: [Duration] = []
    samples.reserveCapacity(count)
    let clock = ContinuousClock()
    let started = clock.now
    for _ in 0..<count {
        let begin = clock.now
        try await body()
        samples.append(clock.now - begin)
    }
    return Stats(op: op, samples: samples, total: clock.now - started)
}

let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    FileHandle.standardError.write(Data("usage: baton-bench-etcd ENDPOINTS [OPS]\n".utf8))
    exit(2)
}
let endpoints = arguments[1].split(separator: ",").map(String.init)
let count = arguments.count >= 3 ? Int(arguments[2]) ?? 2000 : 2000
var logger = Logger(label: "bench")
logger.logLevel = .warning
let client = EtcdClient(configuration: EtcdConfiguration(endpoints: endpoints), logger: logger)

do {
    let lease = try await client.grantLease(ttl: 60)
    let key = "/bench/leader"
    try await client.put(key, "me", lease: lease.id)
    // The HA loop's hot path: re-assert the leader key guarded by its value, and renew the lease.
    let txn = EtcdTxnRequest(
        compare: [.value(key, equals: "me")],
        success: [.put(EtcdPutRequest(key: key, value: "me", lease: lease.id))])
    var results: [Stats] = []
    results.append(
        try await measure("txn", count: count) {
            guard try await client.txn(txn).succeeded else { throw StoreError(.other, "bench txn lost its compare") }
        })
    results.append(
        try await measure("keepalive", count: count) {
            guard case .alive = try await client.keepAlive(lease: lease.id) else {
                throw StoreError(.other, "lease expired")
            }
        })
    results.append(
        try await measure("range", count: count) { _ = try await client.range(EtcdRangeRequest(prefix: "/bench/")) })
    try await client.revokeLease(lease.id)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    for result in results {
        print(String(decoding: try encoder.encode(result), as: UTF8.self))
    }
} catch {
    FileHandle.standardError.write(Data("baton-bench-etcd: \(error)\n".utf8))
    exit(1)
}
