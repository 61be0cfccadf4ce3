import BatonCore
import BatonEtcd
import BatonTestCluster
import BatonTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Random and adversarial values written into every key the agents read (in a real etcd, while a
/// real cluster runs) and sent to every REST endpoint that takes input: thousands of cases. The
/// agents stay alive, the primary keeps its key, every refused request gets a 4xx that names what
/// is wrong, and once the garbage is gone the cluster is healthy again.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct HostileInputFuzzTests {
    /// splitmix64: reproducible from the seed printed with the results.
    typealias Generator = SeededGenerator

    static let scalars: [String] = [
        "0", "-1", "1", "0.5", "-0", "1e300", "-1e300", "1e309", "-1e309", "4.9e-324", "1.7976931348623157e308",
        "9223372036854775807", "9223372036854775808", "-9223372036854775809", "18446744073709551616", "true",
        "false", "null", "\"\"", "\"x\"", "\"10s\"", "\"-5\"", "\"1e300\"", "\"nan\"", "\"inf\"", "\"primary\"",
        "\"replica\"", "\"\\u0000\"", "\"\\ud800\"", "\"'; DROP TABLE x; --\"", "\"../../etc/passwd\"",
        "\"ñ🚀\"", "\"2099-01-01T00:00:00+00:00\"", "\"not-a-time\"", "[]", "{}", "[1,2,3]", "{\"a\":1}",
        "[[1,2,\"x\"]]", "[[1e300,-1,5,\"x\",\"y\"]]",
    ]

    /// A JSON value, mostly adversarial; sometimes large or deeply nested.
    static func value(_ g: inout Generator, depth: Int = 0) -> String {
        switch g.below(20) {
        case 0 where depth < 3:
            return "[" + (0..<g.below(4)).map { _ in value(&g, depth: depth + 1) }.joined(separator: ",") + "]"
        case 1 where depth < 3:
            return "{"
                + (0..<g.below(4)).map { _ in "\"k\(g.below(5))\":" + value(&g, depth: depth + 1) }
                .joined(separator: ",") + "}"
        case 2: return "\"" + String(repeating: "a", count: 16_384 + g.below(50_000)) + "\""
        case 3: return String(repeating: "[", count: 600) + String(repeating: "]", count: 600)
        default: return g.pick(scalars)
        }
    }

    /// An object of some of `keys` (and an unknown one) with adversarial values.
    static func object(_ g: inout Generator, _ keys: [String]) -> String {
        let chosen = (keys + ["x_unknown"]).filter { _ in g.below(2) == 0 }
        return "{" + chosen.map { "\"\($0)\":\(value(&g))" }.joined(separator: ",") + "}"
    }

    /// Bytes that are not JSON at all.
    static let garbage: [[UInt8]] = [
        [], Array("{".utf8), Array("}".utf8), Array("nul".utf8), [0xFF, 0xFE, 0x00], Array("{\"a\":".utf8),
        Array("[1,2".utf8), Array("\u{1}\u{2}\u{3}".utf8),
    ]

    static let configKeys = [
        "ttl", "loop_wait", "retry_timeout", "maximum_lag_on_failover", "primary_start_timeout", "synchronous_mode",
        "synchronous_node_count", "pause", "failsafe_mode", "master_start_timeout",
    ]

    /// One value for an etcd key the agents read. Failover requests always name a member that does
    /// not exist (a real one would be a switchover, not garbage; so would an empty or null member
    /// with no leader: "switch over to the healthiest", as in Patroni — CI drew that once).
    static func etcdCase(_ g: inout Generator, prefix: String, index: Int) -> (key: String, value: [UInt8]) {
        let keys = ["config", "failover", "sync", "history", "status", "failsafe", "members/fuzz-\(index % 7)"]
        let key = g.pick(keys)
        if g.below(6) == 0 { return (prefix + key, g.pick(garbage)) }
        let text: String
        switch key {
        case "config": text = object(&g, configKeys)
        case "failover":
            text =
                "{\"member\":\(g.pick(["\"nobody\"", "1", "[]"]))"
                + ",\"leader\":\(g.pick(["\"nobody\"", "null", "7"]))"
                + ",\"scheduled_at\":\(value(&g))}"
        case "sync": text = object(&g, ["leader", "sync_standby", "quorum"])
        case "history": text = g.below(2) == 0 ? value(&g) : "[[1,\(value(&g)),\(value(&g))],[2,3,\"x\",\(value(&g))]]"
        case "status": text = object(&g, ["optime", "slots", "retain_slots"])
        case "failsafe": text = object(&g, ["node1", "node2", "x"])
        default:
            text = object(
                &g,
                [
                    "conn_url", "api_url", "state", "role", "xlog_location", "timeline", "tags", "version",
                    "replication_state",
                ])
        }
        return (prefix + key, Array(text.utf8))
    }

    /// One REST request: method, path, body; none can change the primary (switchover and failover
    /// name members that do not exist; restart and reinitialize go to replicas).
    static func restCase(_ g: inout Generator) -> (method: String, path: String, body: String?, toReplica: Bool) {
        switch g.below(9) {
        case 0: return ("PATCH", "/config", object(&g, configKeys), false)
        case 1: return ("PUT", "/config", g.below(3) == 0 ? value(&g) : object(&g, configKeys), false)
        case 2:
            return (
                "POST", "/switchover",
                "{\"leader\":\(g.pick(["\"nobody\"", "1", "null", "[]"])),\"candidate\":\(g.pick(["\"nobody\"", "{}", "\"\""]))"
                    + ",\"scheduled_at\":\(value(&g))}", false
            )
        case 3: return ("POST", "/failover", "{\"candidate\":\(g.pick(["\"nobody\"", "7", "\"\""]))}", false)
        case 4:
            return (
                "POST", "/restart", object(&g, ["timeout", "postgres_version", "role", "schedule", "restart_pending"]),
                true
            )
        case 5: return ("POST", "/reinitialize", "{\"force\":\(g.pick(["\"yes\"", "1", "[]", "{}", "1e300"]))}", true)
        case 6: return ("POST", "/failsafe", value(&g), false)
        case 7:
            return (
                "POST", g.pick(["/reload", "/restart", "/switchover"]), g.pick(["{", "[1,", "\u{1}", "nul"]), false
            )
        default:
            let query = g.pick([
                "lag=", "lag=1e300", "lag=-1", "lag=10ZB", "replication_state=", "tag_x=%00",
                "lag=\(value(&g).prefix(64))",
            ])
            return ("GET", g.pick(["/replica", "/read-only", "/health", "/asynchronous"]) + "?" + query, nil, false)
        }
    }

    /// Sends one request on a fresh connection; the status and body, or nil when unanswered.
    static func exchange(port: Int, method: String, path: String, body: String?) -> (Int, String)? {
        guard let fd = RawTCP.connect(port: port, timeout: .seconds(2)) else { return nil }
        defer { close(fd) }
        var target = ""
        for scalar in path.unicodeScalars {
            target += scalar.value > 32 && scalar.value < 127 ? String(scalar) : "%20"
        }
        let bytes = Array((body ?? "").utf8)
        var head = "\(method) \(target) HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        if body != nil { head += "Content-Type: application/json\r\nContent-Length: \(bytes.count)\r\n" }
        guard RawTCP.sendAll(fd, Array((head + "\r\n").utf8) + bytes) else { return nil }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        for _ in 0..<1000 {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            received += buffer[0..<count]
        }
        let text = String(decoding: received, as: UTF8.self)
        guard text.hasPrefix("HTTP/1.1 "), let code = Int(text.dropFirst(9).prefix(3)) else { return nil }
        let payload = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
        return (code, payload)
    }

    @Test(
        "thousands of hostile values in every key the agents read and at every REST endpoint: agents live, the primary keeps its key"
    )
    func fuzzTheStoreAndTheAPI() async throws {
        let cluster = try AgentCluster.start("fuzz")
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy()
        let replicas = cluster.nodes.map(\.name).filter { $0 != leader }
        let prefix = "/service/\(AgentCluster.scope)/"
        let original = try #require(try await cluster.view().config)
        let agents = cluster.nodes.map { ($0.name, cluster.agentPID($0.name)) }
        let seed =
            UInt64(ProcessInfo.processInfo.environment["BATON_FUZZ_SEED"] ?? "") ?? UInt64.random(in: 1...UInt64.max)
        var g = Generator(seed: seed)
        print("MEASURE fuzz: seed=\(seed)")

        var etcdCases = 0
        var restCases = 0
        var refused = 0
        var unnamed: [String] = []
        var serverErrors: [String] = []
        var unanswered = 0
        for batch in 0..<20 {
            // 100 values into the store, then 25 requests at the agents' APIs.
            for index in 0..<100 {
                let (key, value) = Self.etcdCase(&g, prefix: prefix, index: batch * 100 + index)
                _ = try await cluster.etcdClient.put(EtcdPutRequest(key: Array(key.utf8), value: value))
                etcdCases += 1
            }
            for _ in 0..<25 {
                let (method, path, body, toReplica) = Self.restCase(&g)
                let target = toReplica ? g.pick(replicas) : g.pick(cluster.nodes.map(\.name))
                let port = try cluster.node(target).apiPort
                restCases += 1
                guard let (code, payload) = Self.exchange(port: port, method: method, path: path, body: body) else {
                    unanswered += 1
                    continue
                }
                if code >= 500 && code != 503 {
                    serverErrors.append("\(method) \(path) \(body ?? ""): \(code) \(payload.prefix(200))")
                }
                if (400..<500).contains(code), method != "GET" {
                    refused += 1
                    // The refusal names what is wrong: a field of the body, or the body itself.
                    let fields =
                        Self.configKeys + [
                            "leader", "candidate", "scheduled_at", "timeout", "postgres_version", "role", "schedule",
                            "restart_pending", "force", "body", "JSON", "json", "member", "configuration", "x_unknown",
                        ]
                    if !fields.contains(where: { payload.contains($0) }) {
                        unnamed.append("\(method) \(path) \(body?.prefix(120) ?? ""): \(code) \(payload.prefix(200))")
                    }
                }
            }
            // Between batches: every agent lives, and the primary keeps its key.
            for (name, pid) in agents {
                #expect(
                    pid.map { AgentCluster.isAlive($0) && !AgentCluster.isZombie($0) } == true,
                    "\(name)'s agent died in batch \(batch)")
            }
            let holder = try await cluster.view().leader?.member
            if holder != leader {
                await cluster.fail(
                    "the leader key moved from \(leader) to \(holder ?? "nobody") in batch \(batch) (seed \(seed))")
                return
            }
            try await Task.sleep(for: .milliseconds(200))
        }

        // A config key that is not JSON at all: the last valid configuration stays in force, the
        // problem is reported, and PATCH /config repairs it (it answered 409 for ever before).
        let fuzzed = try await cluster.view()
        let restored = try await cluster.store.writeConfig(
            original.value, expected: fuzzed.config?.modRevision ?? fuzzed.unreadableConfigRevision)
        #expect(restored, "could not put the original configuration back")
        try await Task.sleep(for: .seconds(2))  // every agent takes the valid one in
        _ = try await cluster.etcdClient.put(
            EtcdPutRequest(key: Array((prefix + "config").utf8), value: Array("[1,2]".utf8)))
        try await Task.sleep(for: .seconds(3))
        let leaderPort = try cluster.node(leader).apiPort
        let clusterDocument = Self.exchange(port: leaderPort, method: "GET", path: "/cluster", body: nil)
        #expect(
            clusterDocument?.1.contains("config_problems") == true, "\(clusterDocument?.1.prefix(300) ?? "no answer")")
        let inForce = Self.exchange(port: leaderPort, method: "GET", path: "/config", body: nil)
        let ttl = inForce.flatMap { try? JSONSerialization.jsonObject(with: Data($0.1.utf8)) as? [String: Any] }?["ttl"]
        #expect((ttl as? NSNumber)?.doubleValue == 4, "the config in force: \(inForce?.1.prefix(200) ?? "no answer")")
        let repaired = Self.exchange(port: leaderPort, method: "PATCH", path: "/config", body: "{\"loop_wait\": 1}")
        #expect(
            repaired?.0 == 200,
            "PATCH /config over an unreadable key: \(repaired.map { "\($0.0) \($0.1.prefix(200))" } ?? "no answer")")

        // Garbage removed: the original configuration back, the cluster healthy, nobody died.
        for key in ["failover", "sync", "failsafe", "history", "status"] {
            _ = try await cluster.etcdClient.delete(prefix + key)
        }
        for index in 0..<7 { _ = try await cluster.etcdClient.delete(prefix + "members/fuzz-\(index)") }
        let current = try await cluster.view()
        _ = try await cluster.store.writeConfig(
            original.value, expected: current.config?.modRevision ?? current.unreadableConfigRevision)
        let after = try await cluster.waitHealthy(timeout: .seconds(60))
        #expect(after == leader, "the leader changed: \(after)")
        for (name, pid) in agents {
            #expect(pid.map { AgentCluster.isAlive($0) && !AgentCluster.isZombie($0) } == true, "\(name)'s agent died")
        }
        AgentFailoverTests.measure(
            "fuzz",
            [
                "seed": "\(seed)", "etcd_cases": "\(etcdCases)", "rest_cases": "\(restCases)", "refused": "\(refused)",
                "unanswered": "\(unanswered)", "unnamed_refusals": "\(unnamed.count)",
                "server_errors": "\(serverErrors.count)",
            ])
        #expect(serverErrors.isEmpty, "\(serverErrors.prefix(5))")
        #expect(unnamed.isEmpty, "refusals that name nothing: \(unnamed.prefix(5))")
        #expect(unanswered * 20 < restCases, "\(unanswered) of \(restCases) requests went unanswered")
    }
}
