import BatonCore
import BatonTestCluster
import Foundation
import Testing

/// A standby cluster on real nodes: a 2-member cluster (b1, b2) follows a 3-member primary
/// cluster (a1–a3), each with its own etcd, through a permanent slot on the primary cluster.
/// Writes reach both standby members; the standby leader fails over inside its cluster, and a
/// switchover moves the key back and forth inside it; then the clusters swap roles in the planned
/// order, with Baton's CLI: `demote-cluster` on the primary cluster, `promote-cluster` on the
/// standby cluster; writes on the new primary cluster reach every member of the old one. The real `patronictl` shows the standby leader as Patroni does.
@Suite(.serialized, .timeLimit(.minutes(8)))
struct StandbyClusterTests {
    /// Waits until `cluster`'s leader reports `role`, running, and its other members stream.
    static func waitForLeader(
        _ cluster: AgentCluster, role: Member.Role, members: Int, timeout: Duration = .seconds(90)
    ) async throws -> String {
        let view = try await cluster.waitFor("a \(role) leading \(members) members", timeout: timeout) { view in
            guard let leader = view.leaderMember, leader.role == role, leader.state == .running else { return false }
            let streaming = view.members.filter {
                $0.name != leader.name && $0.state == .running && $0.replicationState == "streaming"
            }
            return streaming.count == members - 1
        }
        return try #require(view.leaderMember?.name)
    }

    /// `baton ARGS -c <member's config>`.
    static func baton(_ cluster: AgentCluster, _ member: String, _ arguments: [String]) throws -> (Int32, String) {
        let config = try cluster.node(member).configPath
        let output = cluster.root.appendingPathComponent("cli-\(UUID().uuidString).out").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        let status = try AgentCluster.runToCompletion(
            [AgentCluster.batonBinary] + arguments + ["-c", config], environment: ProcessInfo.processInfo.environment,
            output: output, timeout: .seconds(180))
        return (status, (try? String(contentsOfFile: output, encoding: .utf8)) ?? "")
    }

    @Test("a standby cluster follows, fails over, and swaps roles with its primary cluster")
    func standbyClusterFollowsFailsOverAndSwapsRoles() async throws {
        var primaryOptions = ClusterOptions()
        primaryOptions.namePrefix = "a"
        primaryOptions.dcsExtra = ["slots: {dr_site: {type: physical}}"]
        let primary = try AgentCluster.start("standby-primary", primaryOptions)
        defer { primary.stop() }
        let leaderA = try await primary.waitHealthy()
        try await primary.createTable(on: leaderA)
        try await primary.insert([1, 2, 3], on: leaderA)

        var standbyOptions = ClusterOptions()
        standbyOptions.nodes = 2
        standbyOptions.namePrefix = "b"
        standbyOptions.dcsExtra = [
            "standby_cluster: {host: 127.0.0.1, port: \(try primary.node(leaderA).pgPort), primary_slot_name: dr_site}"
        ]
        let standby = try AgentCluster.start("standby-standby", standbyOptions)
        defer { standby.stop() }
        let leaderB = try await Self.waitForLeader(standby, role: .standbyLeader, members: 2)
        for node in standby.nodes.map(\.name) {
            try await standby.waitForIDs([1, 2, 3], on: node, timeout: .seconds(60))
        }
        // The standby leader streams through the primary cluster's permanent slot.
        let slot = try await primary.execute(
            leaderA, "SELECT active FROM pg_replication_slots WHERE slot_name = 'dr_site'")
        #expect(try slot.rows.first?.bool("active") == true)
        // The standby leader refuses writes; patronictl shows it as Patroni's standby leader.
        await #expect(throws: (any Error).self) { try await standby.insert([9], on: leaderB) }
        let listed = try PatronictlTests.listed(standby)
        #expect(listed[leaderB]?["Role"]?.stringValue == "Standby Leader", "\(listed)")
        let other = standby.nodes.map(\.name).first { $0 != leaderB } ?? ""
        #expect(listed[other]?["Role"]?.stringValue == "Replica", "\(listed)")
        let health = QuorumCommitNodeTests.curl(
            standby, ["http://127.0.0.1:\(try standby.node(leaderB).apiPort)/standby-leader"])
        #expect(health?.0 == 200, "\(String(describing: health))")
        let primaryCheck = QuorumCommitNodeTests.curl(
            standby, ["http://127.0.0.1:\(try standby.node(leaderB).apiPort)/primary"])
        #expect(primaryCheck?.0 == 503, "\(String(describing: primaryCheck))")

        // Failover inside the standby cluster: the other member becomes the standby leader and
        // follows the primary cluster.
        try standby.killNode(leaderB)
        let view = try await standby.waitFor("\(other) to be the standby leader", timeout: .seconds(60)) {
            $0.leaderMember?.name == other && $0.leaderMember?.role == .standbyLeader
        }
        #expect(view.leaderMember?.name == other)
        try await primary.insert([4, 5], on: leaderA)
        try await standby.waitForIDs([1, 2, 3, 4, 5], on: other, timeout: .seconds(60))

        // A switchover inside the standby cluster, back to the member that was killed: it rejoins
        // as a standby of the new standby leader, then takes the key over and follows the primary
        // cluster; the old standby leader follows it. Nobody promotes.
        try standby.startAgent(leaderB)
        let current = try await Self.waitForLeader(standby, role: .standbyLeader, members: 2)
        #expect(current == other)
        let switched = try Self.baton(
            standby, other, ["switchover", "--leader", other, "--candidate", leaderB, "--force"])
        #expect(switched.0 == 0, "\(switched.1)")
        let back = try await Self.waitForLeader(standby, role: .standbyLeader, members: 2)
        #expect(back == leaderB)
        try await primary.insert([8], on: leaderA)
        for node in standby.nodes.map(\.name) {
            try await standby.waitForIDs([1, 2, 3, 4, 5, 8], on: node, timeout: .seconds(60))
        }
        await #expect(throws: (any Error).self) { try await standby.insert([9], on: leaderB) }
        // The roles swap back for the planned swap below.
        let returned = try Self.baton(
            standby, leaderB, ["switchover", "--leader", leaderB, "--candidate", other, "--force"])
        #expect(returned.0 == 0, "\(returned.1)")
        #expect(try await Self.waitForLeader(standby, role: .standbyLeader, members: 2) == other)

        // The planned swap: the primary cluster is demoted first (its leader follows the standby
        // leader, which has every write), then the standby cluster is promoted.
        let demoted = try Self.baton(
            primary, leaderA,
            [
                "demote-cluster", "--host", "127.0.0.1", "--port", "\(try standby.node(other).pgPort)", "--timeout",
                "120",
            ])
        #expect(demoted.0 == 0, "\(demoted.1)")
        #expect(demoted.1.contains("the cluster is demoted"), "\(demoted.1)")
        let promoted = try Self.baton(standby, other, ["promote-cluster", "--timeout", "120"])
        #expect(promoted.0 == 0, "\(promoted.1)")
        _ = try await standby.waitFor("\(other) to lead as primary", timeout: .seconds(60)) {
            $0.leaderMember?.name == other && $0.leaderMember?.role == .primary
        }
        try await standby.insert([6, 7], on: other)
        // Every member of the old primary cluster follows the new one.
        let newStandbyLeader = try await Self.waitForLeader(primary, role: .standbyLeader, members: 3)
        #expect(newStandbyLeader == leaderA)
        for node in primary.nodes.map(\.name) {
            try await primary.waitForIDs([1, 2, 3, 4, 5, 6, 7, 8], on: node, timeout: .seconds(60))
        }
        AgentFailoverTests.measure(
            "standby_cluster", ["primary": leaderA, "standby_leaders": "\(leaderB),\(other)"])
    }
}
