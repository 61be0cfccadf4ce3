import BatonCore
import BatonTestCluster
import Foundation
import Testing

/// Permanent physical slots (`slots`) and `ignore_slots` on real nodes: the leader keeps the
/// slot, every replica keeps a copy advanced to the leader's position, and the slot is on
/// whichever member leads after a switchover and after a failover; an `ignore_slots` slot and an
/// operator's slot are never dropped.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct PermanentSlotTests {
    /// name → restart LSN (nil before the slot reserved WAL) of the physical slots on `node`.
    static func slots(_ cluster: AgentCluster, _ node: String) async throws -> [String: LSN?] {
        let result = try await cluster.execute(
            node,
            "SELECT slot_name AS name, restart_lsn::text AS lsn FROM pg_replication_slots WHERE slot_type = 'physical'")
        var slots: [String: LSN?] = [:]
        for row in result.rows {
            guard let name = try row.string("name") else { continue }
            slots[name] = try row.string("lsn").flatMap(LSN.init(text:))
        }
        return slots
    }

    /// Polls every 200 ms until `condition` holds for `node`'s slots, for up to `timeout`.
    static func waitForSlots(
        _ cluster: AgentCluster, _ node: String, _ what: String, timeout: Duration = .seconds(30),
        _ condition: ([String: LSN?]) -> Bool
    ) async throws -> [String: LSN?] {
        let deadline = ContinuousClock.now + timeout
        var last: [String: LSN?] = [:]
        while ContinuousClock.now < deadline {
            if let slots = try? await Self.slots(cluster, node) {
                last = slots
                if condition(slots) { return slots }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw ClusterFailure(
            description: "\(node): timed out waiting for \(what); slots \(last)\n\(await cluster.report())")
    }

    @Test("permanent physical slots follow the leader; ignore_slots and operator slots are never dropped")
    func permanentSlotsFollowTheLeader() async throws {
        var options = ClusterOptions()
        options.dcsExtra = [
            "slots: {keep_me: {type: physical}, ignored_perm: {type: physical}}",
            "ignore_slots: [{name: ignored_one}, {name: ignored_perm}]",
        ]
        let cluster = try AgentCluster.start("permanent-slots", options)
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy()
        let replicas = cluster.nodes.map(\.name).filter { $0 != leader }

        // A bad `slots` is refused with where and why; nothing of it is applied. (A null in a
        // PATCH deletes the key, as RFC 7386 says: a slot is added with {type: physical}.)
        let refused = QuorumCommitNodeTests.curl(
            cluster,
            [
                "-X", "PATCH", "-d", #"{"slots": {"Bad-Name": {"type": "physical"}}}"#,
                "http://127.0.0.1:\(try cluster.node(leader).apiPort)/config",
            ])
        #expect(
            refused.map { $0.0 >= 400 && $0.1.contains("slots.Bad-Name") } == true, "\(String(describing: refused))")

        // The leader has the permanent slot, each replica a copy.
        _ = try await Self.waitForSlots(cluster, leader, "keep_me on the leader") { $0.keys.contains("keep_me") }
        for replica in replicas {
            _ = try await Self.waitForSlots(cluster, replica, "a copy of keep_me") { $0.keys.contains("keep_me") }
        }
        // An operator's slot and an ignored one on the leader, never dropped by Baton.
        _ = try await cluster.execute(
            leader,
            "SELECT pg_create_physical_replication_slot('operator_one', true), pg_create_physical_replication_slot('ignored_one', true)"
        )

        // The slot's consumer moves it on the leader; the copies follow (never past what a
        // replica replayed).
        _ = try await cluster.execute(
            leader, "CREATE TABLE slot_wal AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 20000) g")
        let moved = try await cluster.execute(
            leader,
            "SELECT pg_replication_slot_advance('keep_me', pg_current_wal_lsn()) IS NOT NULL AS ok, "
                + "(SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = 'keep_me') AS lsn")
        let position = try #require(try moved.rows.first?.string("lsn").flatMap(LSN.init(text:)))
        for replica in replicas {
            _ = try await Self.waitForSlots(cluster, replica, "the copy of keep_me at \(position)") {
                ($0["keep_me"] ?? nil) == position
            }
        }

        // Switchover: the new leader has the slot where the old one had it.
        let target = replicas[0]
        #expect(try await cluster.store.writeFailover(FailoverRequest(leader: leader, member: target), expected: nil))
        _ = try await cluster.waitFor("\(target) to lead", timeout: .seconds(60)) {
            cluster.primary(in: $0) == target && cluster.isHealthy($0)
        }
        let onTarget = try await Self.slots(cluster, target)
        #expect((onTarget["keep_me"] ?? nil) == position, "keep_me on \(target): \(onTarget)")
        // The old leader, now a replica, keeps the operator's and the ignored slot.
        let onOld = try await Self.waitForSlots(cluster, leader, "the old leader's slots after demotion") {
            $0.keys.contains("keep_me")
        }
        #expect(onOld.keys.contains("operator_one") && onOld.keys.contains("ignored_one"), "\(onOld)")

        // Failover (the new leader's node killed): the next leader has the slot too.
        try cluster.killNode(target)
        let view = try await cluster.waitFor("a leader other than \(target)", timeout: .seconds(60)) {
            guard let next = cluster.primary(in: $0) else { return false }
            return next != target
        }
        let next = try #require(cluster.primary(in: view))
        let onNext = try await Self.slots(cluster, next)
        #expect((onNext["keep_me"] ?? nil) == position, "keep_me on \(next) after the failover: \(onNext)")
        if next == leader {
            #expect(onNext.keys.contains("operator_one") && onNext.keys.contains("ignored_one"), "\(onNext)")
        }
        // ignore_slots wins over slots: the ignored permanent slot was never made anywhere.
        for node in cluster.nodes.map(\.name) where node != target {
            let slots = try await Self.slots(cluster, node)
            #expect(!slots.keys.contains("ignored_perm"), "\(node): \(slots)")
        }
        AgentFailoverTests.measure(
            "permanent_slots", ["position": "\(position)", "leaders": "\(leader),\(target),\(next)"])
    }
}
