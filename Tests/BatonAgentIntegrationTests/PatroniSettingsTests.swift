import BatonCore
import BatonTestCluster
import Foundation
import Testing

/// Patroni settings and tags on real nodes: `nostream`, `use_slots: false`, `member_slots_ttl`
/// and `primary_stop_timeout`.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct PatroniSettingsTests {
    static func rows(_ cluster: AgentCluster, _ name: String, _ sql: String) async throws -> [String] {
        try await cluster.execute(name, sql).rows.compactMap { try $0.string("v") }
    }

    static func patch(_ cluster: AgentCluster, _ name: String, _ body: String) throws -> Int? {
        QuorumCommitNodeTests.curl(
            cluster, ["-X", "PATCH", "-d", body, "http://127.0.0.1:\(try cluster.node(name).apiPort)/config"])?.0
    }

    @Test("nostream: no replication connection, WAL by restore_command; use_slots false; member_slots_ttl")
    func nostreamSlotsAndTTL() async throws {
        var options = ClusterOptions()
        options.tags = [3: "{nostream: true}"]
        options.dcsExtra = ["member_slots_ttl: 8"]
        let cluster = try AgentCluster.start("nostream", options)
        defer { cluster.stop() }
        // node3 runs in archive recovery, not streaming: healthy is a primary, the members other
        // than it and node3 streaming, and node3 running (node3 may also be the one that
        // bootstrapped: then both others stream).
        func healthy(_ view: ClusterView) -> Bool {
            guard let primary = cluster.primary(in: view), view.member(named: "node3")?.state == .running else {
                return false
            }
            let streamers = ["node1", "node2", "node3"].filter { $0 != primary && $0 != "node3" }
            return streamers.allSatisfy { view.member(named: $0)?.replicationState == "streaming" }
        }
        let started = try await cluster.waitFor("a primary, a streaming replica and node3", timeout: .seconds(90)) {
            healthy($0)
        }
        var leader = cluster.primary(in: started) ?? ""
        if leader == "node3" {
            _ = try await cluster.store.writeFailover(FailoverRequest(leader: "node3", member: "node1"), expected: nil)
            _ = try await cluster.waitFor("node1 to lead", timeout: .seconds(30)) {
                cluster.primary(in: $0) == "node1" && healthy($0)
            }
            leader = "node1"
        }
        #expect(
            started.member(named: "node3")?.replicationState == "in archive recovery"
                || leader != cluster.primary(in: started))
        let other = leader == "node1" ? "node2" : "node1"
        // WAL for the nostream member: restore_command, here from the leader's own pg_wal.
        let pgWal = try cluster.node(leader).dataDirectory + "/pg_wal"
        #expect(
            try Self.patch(
                cluster, leader, #"{"postgresql":{"parameters":{"restore_command":"cp \#(pgWal)/%f %p"}}}"#) == 200)

        // node3 never connects for replication, and the leader keeps no slot for it.
        try await Task.sleep(for: .seconds(3))
        #expect(try await Self.rows(cluster, "node3", "SELECT pid::text AS v FROM pg_stat_wal_receiver").isEmpty)
        #expect(
            try await Self.rows(cluster, leader, "SELECT application_name AS v FROM pg_stat_replication") == [other])
        // (A slot node3 had while node3 led is retained for member_slots_ttl, 8 s, then dropped.)
        let slotsSettled = await PatronictlTests.eventually(.seconds(30)) {
            (try? await Self.rows(cluster, leader, "SELECT slot_name AS v FROM pg_replication_slots")) == [other]
        }
        #expect(slotsSettled, "the leader keeps a slot for the nostream member")
        try await cluster.createTable(on: leader)
        try await cluster.insert([1, 2, 3], on: leader)
        _ = try await cluster.execute(leader, "SELECT pg_switch_wal()::text AS v")
        try await cluster.waitForIDs([1, 2, 3], on: "node3", timeout: .seconds(30))

        // use_slots: false — the leader's member slots go, the replica streams without one;
        // true again — it streams through its slot.
        #expect(try Self.patch(cluster, leader, #"{"postgresql":{"use_slots":false}}"#) == 200)
        let dropped = await PatronictlTests.eventually(.seconds(30)) {
            (try? await Self.rows(cluster, leader, "SELECT slot_name AS v FROM pg_replication_slots"))?.isEmpty == true
        }
        #expect(dropped, "slots left with use_slots false")
        try await cluster.insert([4], on: leader)
        try await cluster.waitForIDs([1, 2, 3, 4], on: other)
        #expect(try Self.patch(cluster, leader, #"{"postgresql":{"use_slots":true}}"#) == 200)
        let active = await PatronictlTests.eventually(.seconds(30)) {
            (try? await Self.rows(
                cluster, leader, "SELECT slot_name AS v FROM pg_replication_slots WHERE active")) == [other]
        }
        #expect(active, "\(other) does not stream through its slot again")

        // member_slots_ttl 8: the slot of a member whose key is gone stays 8 s, then goes.
        try cluster.killNode(other)
        _ = try await cluster.waitFor("\(other)'s member key to expire", timeout: .seconds(30)) {
            $0.member(named: other) == nil
        }
        let gone = ContinuousClock.now
        try await Task.sleep(for: .seconds(4))
        #expect(
            try await Self.rows(cluster, leader, "SELECT slot_name AS v FROM pg_replication_slots") == [other],
            "the slot went before member_slots_ttl")
        let droppedAfterTTL = await PatronictlTests.eventually(.seconds(30)) {
            (try? await Self.rows(cluster, leader, "SELECT slot_name AS v FROM pg_replication_slots"))?.isEmpty == true
        }
        #expect(droppedAfterTTL, "the slot was kept past member_slots_ttl")
        AgentFailoverTests.measure("member_slots_ttl", ["dropped_after_key_gone": seconds(ContinuousClock.now - gone)])
    }

    /// primary_stop_timeout (synchronous mode): a primary's stop that waits for a standby that no
    /// longer answers (its walreceiver stopped: the walsender waits up to wal_sender_timeout,
    /// 60 s) is cut short after 3 s. Before: POST /restart stopped with a fixed 60 s, and the
    /// agent's shutdown with stop_timeout, neither reading primary_stop_timeout.
    @Test("primary_stop_timeout cuts a primary's stop short in synchronous mode")
    func primaryStopTimeout() async throws {
        var options = ClusterOptions()
        options.nodes = 2
        options.synchronousMode = true
        options.dcsExtra = ["primary_stop_timeout: 3"]
        let cluster = try AgentCluster.start("stoptimeout", options)
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy(nodes: 2)
        let standby = cluster.nodes.map(\.name).first { $0 != leader } ?? ""
        _ = try await cluster.waitFor("a synchronous standby", timeout: .seconds(30)) {
            $0.sync?.value.syncStandbys == [standby]
        }
        guard
            let receiver = try await Self.rows(cluster, standby, "SELECT pid::text AS v FROM pg_stat_wal_receiver")
                .first.flatMap({ pid_t($0) })
        else {
            Issue.record("\(standby) has no walreceiver")
            return
        }
        let before = cluster.postmasterPID(leader)
        cluster.suspend(receiver)
        defer { cluster.resume(receiver) }
        let started = ContinuousClock.now
        let answer = QuorumCommitNodeTests.curl(
            cluster, ["-X", "POST", "-d", "{}", "http://127.0.0.1:\(try cluster.node(leader).apiPort)/restart"],
            maxTime: 120)
        let took = ContinuousClock.now - started
        cluster.resume(receiver)
        AgentFailoverTests.measure("primary_stop_timeout", ["restart": seconds(took), "answer": "\(answer?.0 ?? 0)"])
        #expect(answer?.0 == 200, "POST /restart: \(answer.map { "\($0.0) \($0.1)" } ?? "no answer")")
        #expect(took < .seconds(30), "the restart took \(took): the stop was not cut short at 3 s")
        #expect(cluster.postmasterPID(leader) != before)
    }
}
