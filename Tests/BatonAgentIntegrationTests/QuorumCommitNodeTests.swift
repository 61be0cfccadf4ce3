import BatonCore
import BatonTestCluster
import Foundation
import Testing

/// `synchronous_mode: quorum` on real nodes: three agents, each commit on 2 of the 3 servers
/// (`ANY 1` of the two standbys), the `sync` key's quorum 1; a whole-node loss of the leader is
/// taken over by a standby that heard from the other one, losing no acknowledged write; then
/// `synchronous_node_count: 2` (every commit on all three) is put in force postgres first.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct QuorumCommitNodeTests {
    static func curl(_ cluster: AgentCluster, _ arguments: [String], maxTime: Int = 5) -> (Int, String)? {
        let output = cluster.root.appendingPathComponent("quorum-\(UUID().uuidString).out").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        guard
            let status = try? AgentCluster.runToCompletion(
                ["/usr/bin/curl", "-s", "--max-time", "\(maxTime)", "-o", output + ".body", "-w", "%{http_code}"]
                    + arguments,
                environment: ProcessInfo.processInfo.environment, output: output, timeout: .seconds(maxTime + 5)),
            status == 0,
            let code = (try? String(contentsOfFile: output, encoding: .utf8)).flatMap({ Int($0) })
        else { return nil }
        defer { try? FileManager.default.removeItem(atPath: output + ".body") }
        return (code, (try? String(contentsOfFile: output + ".body", encoding: .utf8)) ?? "")
    }

    static func show(_ cluster: AgentCluster, on name: String) async throws -> String? {
        try await cluster.execute(name, "SHOW synchronous_standby_names").rows.first?.string(
            "synchronous_standby_names")
    }

    @Test("quorum commit: ANY 1 of two standbys, failover by votes, then synchronous_node_count 2")
    func quorumCommitOnRealNodes() async throws {
        var options = ClusterOptions()
        options.quorumCommit = true
        let cluster = try AgentCluster.start("quorum", options)
        defer { cluster.stop() }
        let old = try await cluster.waitHealthy()
        let standbys = cluster.nodes.map(\.name).filter { $0 != old }.sorted()
        let keyed = try await cluster.waitFor("the sync key: both standbys, quorum 1", timeout: .seconds(30)) {
            $0.sync?.value.leader == old && $0.sync?.value.syncStandbys == standbys && $0.sync?.value.quorum == 1
        }
        #expect(
            try await Self.show(cluster, on: old) == "ANY 1 (\(standbys.map { "\"\($0)\"" }.joined(separator: ",")))")

        // What tools see: each standby is a quorum standby (GET /quorum 200, /sync 503), and so
        // /cluster and /metrics say.
        for name in standbys {
            let port = try cluster.node(name).apiPort
            #expect(Self.curl(cluster, ["http://127.0.0.1:\(port)/quorum"])?.0 == 200, "\(name) /quorum")
            #expect(Self.curl(cluster, ["http://127.0.0.1:\(port)/read-only-quorum"])?.0 == 200, "\(name)")
            #expect(Self.curl(cluster, ["http://127.0.0.1:\(port)/sync"])?.0 == 503, "\(name) /sync")
            #expect(Self.curl(cluster, ["http://127.0.0.1:\(port)/async"])?.0 == 503, "\(name) /async")
            let metrics = Self.curl(cluster, ["http://127.0.0.1:\(port)/metrics"])?.1 ?? ""
            #expect(metrics.contains("patroni_quorum_standby{name=\"\(name)\",scope=\"\(AgentCluster.scope)\"} 1"))
        }
        let leaderPort = try cluster.node(old).apiPort
        #expect(Self.curl(cluster, ["http://127.0.0.1:\(leaderPort)/quorum"])?.0 == 503)
        #expect(Self.curl(cluster, ["http://127.0.0.1:\(leaderPort)/read-only-quorum"])?.0 == 200)
        let clusterDocument = Self.curl(cluster, ["http://127.0.0.1:\(leaderPort)/cluster"])?.1 ?? ""
        #expect(clusterDocument.components(separatedBy: "\"quorum_standby\"").count - 1 == 2, "\(clusterDocument)")

        // The leader's node dies under a writer: a standby wins with the other's vote.
        try await cluster.createTable(on: old)
        let writer = Writer(cluster, statementTimeout: .seconds(30))
        writer.start()
        guard await writer.waitForAcks(50, after: .now, timeout: .seconds(15)) else {
            await writer.stop()
            await cluster.fail("the writer made no progress: \(writer.lastFailures)")
            return
        }
        let fault = ContinuousClock.now
        try cluster.killNode(old)
        let view: ClusterView
        do {
            view = try await cluster.waitFor("a new primary", timeout: .seconds(cluster.options.ttl + 15)) {
                cluster.primary(in: $0).map { $0 != old } == true
            }
        } catch {
            await writer.stop()
            throw error
        }
        let promotion = ContinuousClock.now - fault
        let new = cluster.primary(in: view) ?? ""
        let resumed = await writer.waitForAcks(20, after: .now, timeout: .seconds(20))
        await writer.stop()
        let missing = writer.acknowledgedIDs.subtracting(try await cluster.ids(on: new))
        AgentFailoverTests.measure(
            "quorum",
            [
                "promotion": seconds(promotion), "unavailability": writer.longestGap().map { seconds($0.gap) } ?? "-",
                "acks": "\(writer.acknowledgedIDs.count)", "lost": "\(missing.count)", "new": new,
                "key_before": "\(keyed.sync?.value.syncStandbys ?? []) quorum \(keyed.sync?.value.quorum ?? -1)",
            ])
        #expect(resumed, "writes did not resume on \(new): \(writer.lastFailures)")
        #expect(standbys.contains(new))
        if !missing.isEmpty {
            await cluster.fail("\(missing.count) acknowledged ids lost: \(missing.sorted().prefix(20))")
        }
        let votes = cluster.log(new)
        #expect(!votes.contains("quorum_not_reached") || votes.contains("racing"))

        // The old node comes back as a standby; then every commit on all three.
        try cluster.startAgent(old)
        let others = cluster.nodes.map(\.name).filter { $0 != new }.sorted()
        _ = try await cluster.waitFor("both standbys in the key again", timeout: .seconds(60)) {
            cluster.isHealthy($0) && $0.sync?.value.leader == new && $0.sync?.value.syncStandbys == others
                && $0.sync?.value.quorum == 1
        }
        let newPort = try cluster.node(new).apiPort
        let patched = Self.curl(
            cluster,
            ["-X", "PATCH", "-d", #"{"synchronous_node_count": 2}"#, "http://127.0.0.1:\(newPort)/config"])
        #expect(patched?.0 == 200, "PATCH /config: \(patched.map { "\($0.0) \($0.1)" } ?? "no answer")")
        _ = try await cluster.waitFor("quorum 0: each standby has every commit", timeout: .seconds(30)) {
            $0.sync?.value.syncStandbys == others && $0.sync?.value.quorum == 0
        }
        #expect(try await Self.show(cluster, on: new) == "ANY 2 (\(others.map { "\"\($0)\"" }.joined(separator: ",")))")
        try await cluster.insert([900_001], on: new)
    }
}
