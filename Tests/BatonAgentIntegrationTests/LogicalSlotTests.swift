import BatonCore
import BatonTestCluster
import Foundation
import Testing

/// A permanent logical slot on real nodes (PostgreSQL 15, test_decoding): the leader creates it,
/// each replica copies it (its state file, then a restart) and advances its copy to the
/// position the consumer confirmed on the leader; after a switchover and after a failover the
/// consumer goes on from the new leader and receives every change it had not confirmed, and
/// none it had.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct LogicalSlotTests {
    /// The `cdc` slot's confirmed position on `node`; nil when it has no such logical slot.
    static func confirmed(_ cluster: AgentCluster, _ node: String) async throws -> LSN? {
        let result = try await cluster.execute(
            node,
            "SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = 'cdc' AND slot_type = 'logical'"
        )
        return try result.rows.first?.string("lsn").flatMap(LSN.init(text:))
    }

    /// Polls every 200 ms until `node`'s `cdc` slot's confirmed position satisfies `condition`.
    static func waitForSlot(
        _ cluster: AgentCluster, _ node: String, _ what: String, timeout: Duration = .seconds(40),
        _ condition: (LSN) -> Bool
    ) async throws {
        let deadline = ContinuousClock.now + timeout
        var last: LSN?
        while ContinuousClock.now < deadline {
            if let lsn = try? await confirmed(cluster, node) {
                last = lsn
                if condition(lsn) { return }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw ClusterFailure(
            description:
                "\(node): timed out waiting for \(what); cdc at \(last.map { "\($0)" } ?? "none")\n\(await cluster.report(logLines: 40))"
        )
    }

    /// Every node's slots with their catalog_xmin, for a failure's message.
    static func slotTable(_ cluster: AgentCluster) async throws -> String {
        var lines: [String] = []
        for node in cluster.nodes.map(\.name) {
            let rows = try? await cluster.execute(
                node,
                "SELECT slot_name || ' ' || slot_type || ' xmin=' || coalesce(catalog_xmin::text, '-') || ' at='"
                    + " || coalesce(confirmed_flush_lsn::text, restart_lsn::text, '-') AS line FROM pg_replication_slots"
            )
            lines.append(
                "\(node): "
                    + ((try? rows?.rows.compactMap { try $0.string("line") }) ?? nil ?? []).joined(separator: "; "))
        }
        return lines.joined(separator: "\n")
    }

    /// The row ids in test_decoding's output lines (`table public.cdc_rows: INSERT: id[integer]:7`).
    static func insertedIDs(_ lines: [String]) -> [Int] {
        lines.compactMap { line in
            guard line.hasPrefix("table public.cdc_rows: INSERT: id[integer]:") else { return nil }
            return Int(line.split(separator: ":").last ?? "")
        }
    }

    /// Consumes (and confirms) every change of `cdc` on `node` with SQL.
    static func consume(_ cluster: AgentCluster, _ node: String) async throws -> [Int] {
        let result = try await cluster.execute(node, "SELECT data FROM pg_logical_slot_get_changes('cdc', NULL, NULL)")
        return insertedIDs(try result.rows.compactMap { try $0.string("data") })
    }

    /// Consumes `cdc` on `node` with pg_recvlogical up to the current WAL position.
    static func receive(_ cluster: AgentCluster, _ node: String) async throws -> [Int] {
        let end = try await cluster.execute(node, "SELECT pg_current_wal_lsn()::text AS lsn").rows.first?.string("lsn")
        let output = NSTemporaryDirectory() + "baton-it-recvlogical-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: output) }
        let status = try AgentCluster.runToCompletion(
            [
                AgentCluster.binDirectory + "/pg_recvlogical", "-h", "127.0.0.1", "-p",
                "\(try cluster.node(node).pgPort)",
                "-U", "postgres", "-d", "postgres", "-S", "cdc", "--start", "--no-loop", "--endpos", end ?? "0/0",
                "-f", output,
            ],
            environment: ["PGPASSWORD": AgentCluster.superuserPassword, "PGCONNECT_TIMEOUT": "5"],
            output: output + ".log",
            timeout: .seconds(30))
        let log = (try? String(contentsOfFile: output + ".log", encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: output + ".log")
        guard status == 0 else {
            throw ClusterFailure(description: "pg_recvlogical on \(node): status \(status): \(log)")
        }
        // Its last confirmation is taken in by the walsender before it ends: wait for that.
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let active = try? await cluster.execute(
                node, "SELECT active FROM pg_replication_slots WHERE slot_name = 'cdc'"
            ).rows.first?.bool("active")
            if active == false { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        return insertedIDs(text.split(separator: "\n").map(String.init))
    }

    @Test("a permanent logical slot goes on from the new leader after a switchover and a failover")
    func logicalSlotSurvivesSwitchoverAndFailover() async throws {
        var options = ClusterOptions()
        options.dcsParameters = ["wal_level: logical", "hot_standby_feedback: 'on'"]
        options.dcsExtra = ["slots: {cdc: {type: logical, database: postgres, plugin: test_decoding}}"]
        let cluster = try AgentCluster.start("logical-slots", options)
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy()
        let replicas = cluster.nodes.map(\.name).filter { $0 != leader }

        try await Self.waitForSlot(cluster, leader, "cdc on the leader") { _ in true }
        // The slot was made before the replicas were cloned: it starts from WAL they never had,
        // so a copy would be of no use and is not made until the consumer moves the slot past
        // the clones' start (a checkpoint logs the snapshot a restart point needs).
        _ = try await cluster.execute(leader, "CREATE TABLE cdc_rows (id int PRIMARY KEY)")
        var consumed: [Int] = []
        var round = 0
        while round < 8 {
            round += 1
            _ = try await cluster.execute(leader, "CHECKPOINT")
            _ = try await cluster.execute(leader, "INSERT INTO cdc_rows VALUES (\(round))")
            consumed += try await Self.consume(cluster, leader)
            var copies = 0
            for replica in replicas {
                if (try? await Self.waitForSlot(cluster, replica, "a copy of cdc", timeout: .seconds(12)) { _ in true })
                    != nil
                {
                    copies += 1
                }
            }
            if copies == replicas.count { break }
        }
        #expect(consumed == Array(1...round))
        for replica in replicas {
            try await Self.waitForSlot(cluster, replica, "a copy of cdc") { _ in true }
        }
        _ = try await cluster.waitHealthy()
        _ = try await cluster.execute(leader, "INSERT INTO cdc_rows SELECT generate_series(\(round + 1), 10)")
        #expect(try await Self.consume(cluster, leader) == Array((round + 1)...10))
        // Changes the consumer has not confirmed when the leader changes.
        _ = try await cluster.execute(leader, "INSERT INTO cdc_rows SELECT generate_series(11, 20)")
        let first = try #require(try await Self.confirmed(cluster, leader))
        for replica in replicas {
            try await Self.waitForSlot(cluster, replica, "the copy of cdc at \(first)") { $0 == first }
        }
        // Each copy is safe to decode from once the leader holds its catalog rows.
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline,
            !replicas.allSatisfy({ cluster.log($0).contains("logical slot cdc is safe to use after a failover") })
        {
            try await Task.sleep(for: .milliseconds(200))
        }
        for replica in replicas where !cluster.log(replica).contains("logical slot cdc is safe to use after a failover")
        {
            Issue.record("\(replica) never found its copy of cdc safe to use:\n\(try await Self.slotTable(cluster))")
        }

        // Switchover: the consumer goes on from the new leader with exactly what it had not confirmed.
        let target = replicas[0]
        #expect(try await cluster.store.writeFailover(FailoverRequest(leader: leader, member: target), expected: nil))
        _ = try await cluster.waitFor("\(target) to lead", timeout: .seconds(60)) {
            cluster.primary(in: $0) == target && cluster.isHealthy($0)
        }
        #expect(try await Self.consume(cluster, target) == Array(11...20))

        // Again before a failover, now with pg_recvlogical as the consumer.
        _ = try await cluster.execute(target, "INSERT INTO cdc_rows SELECT generate_series(21, 30)")
        #expect(try await Self.receive(cluster, target) == Array(21...30))
        _ = try await cluster.execute(target, "INSERT INTO cdc_rows SELECT generate_series(31, 40)")
        let second = try #require(try await Self.confirmed(cluster, target))
        let others = cluster.nodes.map(\.name).filter { $0 != target }
        for node in others {
            try await Self.waitForSlot(cluster, node, "cdc at \(second) after the switchover") { $0 == second }
        }
        try cluster.killNode(target)
        let view = try await cluster.waitFor("a leader other than \(target)", timeout: .seconds(60)) {
            guard let next = cluster.primary(in: $0) else { return false }
            return next != target
        }
        let next = try #require(cluster.primary(in: view))
        #expect(try await Self.receive(cluster, next) == Array(31...40))
        // Each copy restarts postgres once; no loop of restarts.
        for node in cluster.nodes.map(\.name) {
            let restarts =
                cluster.log(node).components(separatedBy: "restarting postgres to load logical slots").count - 1
            #expect(restarts <= 2, "\(node) restarted postgres \(restarts) times to load copied slots")
        }
        AgentFailoverTests.measure(
            "logical_slots", ["first": "\(first)", "second": "\(second)", "leaders": "\(leader),\(target),\(next)"])
    }
}
