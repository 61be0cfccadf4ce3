import BatonCore
import BatonTestCluster
import Foundation
import Testing

/// `tags.replicatefrom` on real nodes (before: shown in `topology`, not acted on): node3 streams
/// from node2, not from the leader; the leader keeps no slot for it; writes reach it through
/// node2; when node2's whole node dies, node3 streams from the leader.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct CascadingReplicationTests {
    static func senderPort(_ cluster: AgentCluster, on name: String) async -> Int? {
        guard let result = try? await cluster.execute(name, "SELECT sender_port FROM pg_stat_wal_receiver") else {
            return nil
        }
        return (try? result.rows.first?.string("sender_port")).flatMap { $0.flatMap { Int($0) } }
    }

    static func standbys(_ cluster: AgentCluster, of name: String) async throws -> [String] {
        try await cluster.execute(name, "SELECT application_name FROM pg_stat_replication ORDER BY 1").rows
            .compactMap { try $0.string("application_name") }
    }

    @Test("replicatefrom: a replica cascades from another, and falls back to the leader")
    func cascadingReplication() async throws {
        var options = ClusterOptions()
        options.tags = [3: "{replicatefrom: node2}"]
        // node3 may have streamed from the leader (through a slot) before node2 joined: that slot
        // is kept for member_slots_ttl after node3 last wanted it.
        options.dcsExtra = ["member_slots_ttl: 5"]
        let cluster = try AgentCluster.start("cascade", options)
        defer { cluster.stop() }
        var leader = try await cluster.waitHealthy()
        if leader != "node1" {
            // node2 must be a replica for node3 to cascade from it, and node3 one to cascade.
            _ = try await cluster.store.writeFailover(FailoverRequest(leader: leader, member: "node1"), expected: nil)
            _ = try await cluster.waitFor("node1 to lead", timeout: .seconds(30)) {
                cluster.primary(in: $0) == "node1" && cluster.isHealthy($0)
            }
            leader = "node1"
        }
        let node2Port = try cluster.node("node2").pgPort
        let cascadedAt = ContinuousClock.now
        let streamsFromNode2 = await PatronictlTests.eventually(.seconds(20)) {
            await Self.senderPort(cluster, on: "node3") == node2Port
        }
        let firstSender = await Self.senderPort(cluster, on: "node3") ?? 0
        #expect(streamsFromNode2, "node3 streams from port \(firstSender)")
        let cascaded = ContinuousClock.now - cascadedAt
        #expect(try await Self.standbys(cluster, of: leader) == ["node2"])
        #expect(try await Self.standbys(cluster, of: "node2") == ["node3"])
        // No slot for node3 on the leader (one it never uses would hold the leader's WAL): none
        // made, or one from before node2 joined dropped after member_slots_ttl.
        let onlyNode2 = await PatronictlTests.eventually(.seconds(30)) {
            (try? await cluster.execute(leader, "SELECT slot_name FROM pg_replication_slots ORDER BY 1").rows
                .compactMap { try $0.string("slot_name") }) == ["node2"]
        }
        #expect(onlyNode2, "the leader keeps a slot for node3")
        try await cluster.createTable(on: leader)
        try await cluster.insert([1, 2, 3], on: leader)
        try await cluster.waitForIDs([1, 2, 3], on: "node3")

        // node2's whole node dies: node3 streams from the leader.
        let fault = ContinuousClock.now
        try cluster.killNode("node2")
        let leaderPort = try cluster.node(leader).pgPort
        let streamsFromLeader = await PatronictlTests.eventually(.seconds(40)) {
            await Self.senderPort(cluster, on: "node3") == leaderPort
        }
        let laterSender = await Self.senderPort(cluster, on: "node3") ?? 0
        #expect(streamsFromLeader, "node3 streams from port \(laterSender)")
        let fellBack = ContinuousClock.now - fault
        try await cluster.insert([4], on: leader)
        try await cluster.waitForIDs([1, 2, 3, 4], on: "node3")
        AgentFailoverTests.measure(
            "cascade", ["cascading_after": seconds(cascaded), "fallback_after_upstream_loss": seconds(fellBack)])
    }
}
