import BatonCore
import BatonTestCluster
import Foundation
import Testing

/// The `baton` CLI as an operator runs it (the built binary, as a process) against a real
/// three-agent cluster: list/topology/history output, and restart/reinit through the REST API
/// and the HA loop.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct OperatorCLITests {
    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs `baton ARGS -c <node1's config>` to completion, stdin closed.
    static func baton(
        _ cluster: AgentCluster, _ arguments: [String], timeout: Duration = .seconds(120),
        environment extra: [String: String] = [:]
    ) throws -> Output {
        let config = try cluster.node("node1").configPath
        let base = cluster.root.appendingPathComponent("cli-\(UUID().uuidString)").path
        defer {
            try? FileManager.default.removeItem(atPath: base + ".out")
            try? FileManager.default.removeItem(atPath: base + ".err")
        }
        let code = try AgentCluster.runToCompletion(
            [AgentCluster.batonBinary] + arguments + ["-c", config],
            environment: ProcessInfo.processInfo.environment.merging(extra) { $1 },
            output: base + ".out", errors: base + ".err", timeout: timeout)
        return Output(
            status: code,
            stdout: (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? "")
    }

    static func startTime(_ cluster: AgentCluster, _ name: String) async throws -> String {
        let result = try await cluster.execute(name, "SELECT pg_postmaster_start_time()::text AS started")
        return try #require(try result.rows.first?.string("started"))
    }

    static func inRecovery(_ cluster: AgentCluster, _ name: String) async throws -> Bool? {
        try await cluster.execute(name, "SELECT pg_is_in_recovery() AS r").rows.first?.bool("r")
    }

    /// Waits until `name` answers SQL again (after a restart or a re-clone).
    static func waitForSQL(_ cluster: AgentCluster, _ name: String, timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if (try? await startTime(cluster, name)) != nil { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw ClusterFailure(description: "\(name) does not answer SQL\n\(await cluster.report())")
    }

    @Test("baton list / topology / history print the real cluster as a table and as JSON")
    func listTopologyHistory() async throws {
        let cluster = try AgentCluster.start("cli-list")
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy()
        let names = cluster.nodes.map(\.name).sorted()

        let table = try Self.baton(cluster, ["list"])
        #expect(table.status == 0, "\(table.stderr)")
        let lines = table.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.contains(AgentCluster.scope) == true, "title: \(table.stdout)")
        for name in names {
            let row = lines.first { $0.contains("| \(name) ") || $0.contains(" \(name) ") }
            #expect(row != nil, "no row for \(name):\n\(table.stdout)")
            if name == leader {
                #expect(row?.contains("Leader") == true, "\(table.stdout)")
            } else {
                #expect(row?.contains("Replica") == true, "\(table.stdout)")
                #expect(row?.contains("streaming") == true, "\(table.stdout)")
            }
        }

        // --dcs-url and --scope (patronictl's -d): no configuration file needed.
        let hosts = cluster.endpoints.map { $0.replacingOccurrences(of: "http://", with: "") }
        let noFile = cluster.root.appendingPathComponent("cli-nofile.out").path
        let status = try AgentCluster.runToCompletion(
            [
                AgentCluster.batonBinary, "list", "-c", "/nonexistent/agent.yml", "--dcs-url",
                "etcd3://" + hosts.joined(separator: ","), "--scope", AgentCluster.scope,
            ], environment: ProcessInfo.processInfo.environment, output: noFile, timeout: .seconds(30))
        let listed = (try? String(contentsOfFile: noFile, encoding: .utf8)) ?? ""
        #expect(status == 0 && names.allSatisfy { listed.contains($0) }, "\(listed)")
        let v2 = try Self.baton(cluster, ["list", "--dcs-url", "etcd://127.0.0.1:2379"])
        #expect(v2.status != 0 && v2.stderr.contains("etcd3://"), "\(v2.stderr)")

        let json = try Self.baton(cluster, ["list", "--format", "json"])
        #expect(json.status == 0, "\(json.stderr)")
        let rows = try #require(
            try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]], "\(json.stdout)")
        #expect(rows.compactMap { $0["member"] as? String }.sorted() == names)
        let leaderRow = rows.first { $0["member"] as? String == leader }
        #expect((leaderRow?["role"] as? String)?.lowercased() == "leader", "\(json.stdout)")
        for row in rows where row["member"] as? String != leader {
            #expect((row["state"] as? String) == "streaming", "\(json.stdout)")
            #expect(row["lag"] != nil, "replica rows carry their lag: \(json.stdout)")
        }

        let topology = try Self.baton(cluster, ["topology"])
        #expect(topology.status == 0, "\(topology.stderr)")
        let treeLines = topology.stdout.split(separator: "\n").map(String.init)
        let leaderLine = try #require(treeLines.firstIndex { $0.contains(leader) }, "\(topology.stdout)")
        for name in names where name != leader {
            let index = try #require(treeLines.firstIndex { $0.contains(name) }, "\(topology.stdout)")
            #expect(index > leaderLine, "replicas are listed under the leader:\n\(topology.stdout)")
        }
        let topologyJSON = try Self.baton(cluster, ["topology", "--format", "json"])
        let trees = try #require(
            try JSONSerialization.jsonObject(with: Data(topologyJSON.stdout.utf8)) as? [[String: Any]],
            "\(topologyJSON.stdout)")
        #expect(trees.first?["member"] as? String == leader)
        let children = (trees.first?["replicas"] as? [[String: Any]])?.compactMap { $0["member"] as? String }
        #expect(children?.sorted() == names.filter { $0 != leader })

        // dsn, query, reload and flush as patronictl has them (before: missing from baton).
        let dsn = try Self.baton(cluster, ["dsn"])
        let leaderPort = try cluster.node(leader).pgPort
        #expect(dsn.status == 0 && dsn.stdout == "host=127.0.0.1 port=\(leaderPort)\n", "\(dsn.stdout)\(dsn.stderr)")
        let replicaDSN = try Self.baton(cluster, ["dsn", "--role", "replica"])
        #expect(replicaDSN.status == 0 && !replicaDSN.stdout.contains("port=\(leaderPort)"), "\(replicaDSN.stdout)")
        let password = ["PGPASSWORD": AgentCluster.superuserPassword]
        let query = try Self.baton(
            cluster,
            ["query", "--command", "SELECT 40 + 2 AS answer, pg_is_in_recovery() AS standby", "--format", "json"],
            environment: password)
        #expect(query.status == 0, "\(query.stderr)")
        #expect(
            query.stdout.contains("\"answer\":\"42\"") && query.stdout.contains("\"standby\":\"f\""), "\(query.stdout)")
        let queryTable = try Self.baton(
            cluster, ["query", "--role", "replica", "--command", "SELECT pg_is_in_recovery() AS standby"],
            environment: password)
        #expect(
            queryTable.status == 0 && queryTable.stdout.contains("standby") && queryTable.stdout.contains(" t "),
            "\(queryTable.stdout)")
        let badSQL = try Self.baton(cluster, ["query", "--command", "SELEC 1"], environment: password)
        #expect(badSQL.status == 1 && badSQL.stderr.contains("syntax error"), "\(badSQL.stderr)")
        let reload = try Self.baton(cluster, ["reload", "--force"])
        #expect(reload.status == 0, "\(reload.stdout)\(reload.stderr)")
        #expect(names.allSatisfy { name in reload.stdout.contains("\(name): ") }, "\(reload.stdout)")
        let replica = try #require(names.first { $0 != leader })
        let scheduled = try Self.baton(
            cluster, ["restart", replica, "--scheduled", "2099-01-01T00:00:00+00:00", "--force"])
        #expect(scheduled.status == 0, "\(scheduled.stdout)\(scheduled.stderr)")
        let flush = try Self.baton(cluster, ["flush", replica, "restart", "--force"])
        #expect(flush.status == 0, "\(flush.stdout)\(flush.stderr)")
        let noSwitchover = try Self.baton(cluster, ["flush", "switchover", "--force"])
        #expect(noSwitchover.status == 0 && noSwitchover.stdout.contains("no scheduled switchover"))
        let unknown = try Self.baton(cluster, ["reload", "nobody", "--force"])
        #expect(unknown.status == 1 && unknown.stderr.contains("nobody not a member"), "\(unknown.stderr)")

        // A switchover writes the first history entry.
        let candidate = try #require(names.first { $0 != leader })
        let switchover = try Self.baton(
            cluster, ["switchover", "--leader", leader, "--candidate", candidate, "--force"])
        #expect(switchover.status == 0, "\(switchover.stdout)\(switchover.stderr)")
        _ = try await cluster.waitFor("\(candidate) leads", timeout: .seconds(60)) { view in
            view.leader?.member == candidate && cluster.isHealthy(view)
        }
        let history = try Self.baton(cluster, ["history", "--format", "json"])
        #expect(history.status == 0, "\(history.stderr)")
        let entries = try #require(
            try JSONSerialization.jsonObject(with: Data(history.stdout.utf8)) as? [[String: Any]],
            "\(history.stdout)")
        #expect(entries.last?["new_leader"] as? String == candidate, "\(history.stdout)")
        // The first promotion ends timeline 1.
        #expect(entries.last?["timeline"] as? Int == 1, "\(history.stdout)")
        let historyTable = try Self.baton(cluster, ["history"])
        #expect(historyTable.stdout.contains(candidate), "\(historyTable.stdout)")
        #expect(historyTable.stdout.contains("switchover"), "\(historyTable.stdout)")

        // Usage errors exit 2 and say what to do.
        let bad = try Self.baton(cluster, ["list", "--format", "xml"])
        #expect(bad.status == 2, "\(bad.stdout)\(bad.stderr)")
    }

    @Test("baton restart and reinit on a replica: same role, new postmaster, streaming again; no failover")
    func restartAndReinit() async throws {
        let cluster = try AgentCluster.start("cli-restart")
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy()
        let replica = try #require(cluster.nodes.map(\.name).sorted().first { $0 != leader })
        try await cluster.createTable(on: leader)
        try await cluster.insert([1, 2, 3], on: leader)
        try await cluster.waitForIDs([1, 2, 3], on: replica)

        // Cluster-wide parameters (before: accepted and never applied): a reloadable one reaches
        // every member by a reload, one that needs a restart shows as pending on every member,
        // and a typo is refused without stopping anyone.
        let edit = try Self.baton(
            cluster,
            ["edit-config", "-p", "work_mem=24MB", "-p", "max_connections=150", "-p", "wokr_mem=1MB", "--force"])
        #expect(edit.status == 0, "\(edit.stdout)\(edit.stderr)")
        let names = cluster.nodes.map(\.name).sorted()
        var applied: [String: String] = [:]
        var pending: Set<String> = []
        for _ in 0..<100 {
            for name in names {
                applied[name] = try? await cluster.execute(name, "SHOW work_mem").rows.first?.values.first ?? nil
            }
            pending = Set(try await cluster.view().members.filter(\.pendingRestart).map(\.name))
            if applied.values.allSatisfy({ $0 == "24MB" }) && applied.count == names.count
                && pending.count == names.count
            {
                break
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(applied.values.allSatisfy { $0 == "24MB" } && applied.count == names.count, "\(applied)")
        #expect(pending == Set(names), "pending_restart on \(pending)")
        #expect(try await cluster.leader() == leader)

        // list -e: the pending restart and why, per member; -t: the time first.
        let extended = try Self.baton(cluster, ["list", "-e", "-t"])
        #expect(extended.status == 0 && extended.stdout.contains("Pending restart"), "\(extended.stdout)")
        #expect(extended.stdout.contains("max_connections: 30->150"), "\(extended.stdout)")
        #expect(extended.stdout.split(separator: "\n").first?.contains("T") == true, "\(extended.stdout)")

        // edit-config in an editor ($EDITOR here changes check_timeline), --replace a whole
        // document, -q without the difference.
        let editor = try Self.baton(
            cluster, ["edit-config", "--force"],
            environment: ["EDITOR": "sed -i '$a check_timeline: true'"])
        #expect(editor.status == 0 && editor.stdout.contains("check_timeline"), "\(editor.stdout)\(editor.stderr)")
        #expect(try await cluster.view().config?.value.checkTimeline == true)
        var whole = try #require(try await cluster.view().config?.value.document)
        whole["maximum_lag_on_failover"] = .number(2_097_152)
        let replacement = cluster.root.appendingPathComponent("replacement.json").path
        try String(decoding: try JSONEncoder().encode(JSONValue.object(whole)), as: UTF8.self).write(
            toFile: replacement, atomically: true, encoding: .utf8)
        let replaced = try Self.baton(cluster, ["edit-config", "--replace", replacement, "-q", "--force"])
        #expect(replaced.status == 0 && !replaced.stdout.contains("maximum_lag_on_failover"), "\(replaced.stdout)")
        #expect(try await cluster.view().config?.value.maximumLagOnFailover == 2_097_152)

        // Without --force the CLI asks first; with no answer (stdin closed) nothing happens.
        let before = try await Self.startTime(cluster, replica)
        let unconfirmed = try Self.baton(cluster, ["restart", replica])
        #expect(unconfirmed.status == 1, "\(unconfirmed.stdout)\(unconfirmed.stderr)")
        #expect(unconfirmed.stdout.contains("[y/N]") && unconfirmed.stderr.contains("aborted"))
        let unconfirmedSwitchover = try Self.baton(cluster, ["switchover", "--candidate", replica])
        #expect(unconfirmedSwitchover.status == 1)
        #expect(try await cluster.leader() == leader)
        let remove = try Self.baton(cluster, ["remove"])
        #expect(remove.status == 1)
        #expect(remove.stderr.contains("stop every agent first"), "\(remove.stderr)")
        #expect(try await Self.startTime(cluster, replica) == before, "restarted without confirmation")

        // Restart a replica.
        let restart = try Self.baton(cluster, ["restart", replica, "--force"])
        #expect(restart.status == 0, "\(restart.stdout)\(restart.stderr)")
        #expect(restart.stdout.contains("restarted successfully"), "\(restart.stdout)")
        try await Self.waitForSQL(cluster, replica)
        let after = try await Self.startTime(cluster, replica)
        #expect(after != before, "the postmaster did not restart (start time \(before))")
        #expect(try await Self.inRecovery(cluster, replica) == true)
        let connections = try await cluster.execute(replica, "SHOW max_connections").rows.first?.values.first
        #expect(connections == "150", "max_connections after the restart: \(String(describing: connections))")
        #expect(try await cluster.leader() == leader)

        // Conditions: a replica is not restarted when asked for primaries only.
        let conditional = try Self.baton(cluster, ["restart", replica, "--role", "primary", "--force"])
        #expect(conditional.status == 1, "\(conditional.stdout)\(conditional.stderr)")
        #expect(conditional.stderr.contains("restart conditions are not satisfied"), "\(conditional.stderr)")

        // Restart the leader: it keeps the key, nobody else promotes.
        let leaderBefore = try await Self.startTime(cluster, leader)
        let leaderRestart = try Self.baton(cluster, ["restart", leader, "--force"])
        #expect(leaderRestart.status == 0, "\(leaderRestart.stdout)\(leaderRestart.stderr)")
        try await Self.waitForSQL(cluster, leader)
        #expect(try await Self.startTime(cluster, leader) != leaderBefore)
        try await Task.sleep(for: .seconds(3))
        #expect(try await cluster.leader() == leader, "a restart must not cause a failover")
        #expect(try await cluster.view().history.isEmpty, "no promotion happened")

        // No member named: every replica (--role replica), one after the other; --any: one of them.
        let replicas = names.filter { $0 != leader }
        var startedBefore: [String: String] = [:]
        for name in replicas { startedBefore[name] = try await Self.startTime(cluster, name) }
        let all = try Self.baton(cluster, ["restart", "--role", "replica", "--force"])
        #expect(all.status == 0, "\(all.stdout)\(all.stderr)")
        for name in replicas {
            try await Self.waitForSQL(cluster, name)
            #expect(try await Self.startTime(cluster, name) != startedBefore[name], "\(name) was not restarted")
        }
        let one = try Self.baton(cluster, ["restart", "--role", "replica", "--any", "--force"])
        #expect(one.status == 0 && one.stdout.split(separator: "\n").count == 1, "\(one.stdout)\(one.stderr)")
        for name in replicas { try await Self.waitForSQL(cluster, name) }

        // Reinit on the leader is refused; on a replica it re-clones and streams again.
        let onLeader = try Self.baton(cluster, ["reinit", leader, "--force"])
        #expect(onLeader.status == 1)
        #expect(onLeader.stderr.contains("I am the leader, can not reinitialize"), "\(onLeader.stderr)")
        let beforeReinit = try await Self.startTime(cluster, replica)
        let reinit = try Self.baton(cluster, ["reinit", replica, "--force", "--wait"], timeout: .seconds(180))
        if reinit.status != 0 { await cluster.fail("reinit: \(reinit.stdout)\(reinit.stderr)") }
        #expect(reinit.stdout.contains("reinitialize started"), "\(reinit.stdout)")
        try await cluster.insert([4], on: leader)
        try await cluster.waitForIDs([1, 2, 3, 4], on: replica, timeout: .seconds(60))
        #expect(try await Self.startTime(cluster, replica) != beforeReinit)
        #expect(try await cluster.leader() == leader)
    }
}
