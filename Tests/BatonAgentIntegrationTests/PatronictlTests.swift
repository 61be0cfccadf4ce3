import BatonCore
import BatonTestCluster
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Patroni itself as the compatibility oracle: the real `patronictl` 4.1.5 (from PyPI, in a venv
/// cached in `.build`) drives a Baton cluster through etcd and the REST API, as an operator moving
/// over from Patroni would, and every command's effect is checked on the cluster.
@Suite(.serialized, .timeLimit(.minutes(6)))
struct PatronictlTests {
    static let version = "4.1.5"

    /// `.build/patroni-4.1.5/bin/patronictl`, installed on first use (about 10 s from PyPI).
    static func patronictl() throws -> String {
        let venv = AgentCluster.packageRoot.appendingPathComponent(".build/patroni-\(version)").path
        let binary = venv + "/bin/patronictl"
        if FileManager.default.isExecutableFile(atPath: binary) { return binary }
        let log = venv + ".install.log"
        let script =
            "rm -rf '\(venv)' && /usr/bin/python3 -m venv '\(venv)' && "
            + "'\(venv)/bin/pip' install --quiet 'patroni[etcd3,psycopg3]==\(version)'"
        let status = try run(["/bin/sh", "-c", script], output: log, timeout: .seconds(300))
        guard status == 0, FileManager.default.isExecutableFile(atPath: binary) else {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw ClusterFailure(description: "could not install patroni \(version) from PyPI: \(text.suffix(800))")
        }
        return binary
    }

    struct Output {
        var status: Int32
        var text: String
    }

    /// Runs `argv` to completion (stdin closed), output and errors in one file; the exit status.
    @discardableResult
    static func run(_ argv: [String], output: String, timeout: Duration, environment: [String: String]? = nil)
        throws -> Int32
    {
        try AgentCluster.runToCompletion(
            argv, environment: environment ?? ProcessInfo.processInfo.environment, output: output, errors: output,
            timeout: timeout)
    }

    /// `patronictl -c <a config naming the cluster's etcd> ARGS`.
    static func patronictl(
        _ cluster: AgentCluster, _ arguments: [String], timeout: Duration = .seconds(120), stopAfter seconds: Int? = nil
    ) throws -> Output {
        let config = cluster.root.appendingPathComponent("patronictl.yml").path
        if !FileManager.default.fileExists(atPath: config) {
            let hosts = cluster.endpoints.map { $0.replacingOccurrences(of: "http://", with: "") }
            let text =
                "scope: \(AgentCluster.scope)\nnamespace: /service\netcd3:\n  hosts: [\(hosts.joined(separator: ", "))]\n"
            try text.write(toFile: config, atomically: true, encoding: .utf8)
        }
        let output = cluster.root.appendingPathComponent("patronictl-\(UUID().uuidString).out").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        var environment = ProcessInfo.processInfo.environment
        environment["PGPASSWORD"] = AgentCluster.superuserPassword
        let command = [try patronictl(), "-c", config] + arguments
        let status = try run(
            seconds.map { ["/usr/bin/timeout", "-s", "INT", "-k", "2", String($0)] + command } ?? command,
            output: output, timeout: timeout,
            environment: environment)
        return Output(status: status, text: (try? String(contentsOfFile: output, encoding: .utf8)) ?? "")
    }

    static func json(_ text: String) -> JSONValue? {
        // patronictl may print warnings before the document.
        guard let start = text.firstIndex(where: { $0 == "[" || $0 == "{" }) else { return nil }
        return try? JSONDecoder().decode(JSONValue.self, from: Data(text[start...].utf8))
    }

    /// The members as `patronictl list -f json` shows them, by name.
    static func listed(_ cluster: AgentCluster) throws -> [String: [String: JSONValue]] {
        let list = try patronictl(cluster, ["list", "-f", "json"])
        guard list.status == 0, case .array(let rows)? = json(list.text) else {
            throw ClusterFailure(description: "patronictl list: \(list.text)")
        }
        var members: [String: [String: JSONValue]] = [:]
        for row in rows {
            guard let object = row.objectValue, let name = object["Member"]?.stringValue else { continue }
            members[name] = object
        }
        return members
    }

    @Test("patronictl 4.1.5 reads a Baton cluster: list (all columns, -e, -t, -W), topology, history, show-config, dsn")
    func reads() async throws {
        let cluster = try AgentCluster.start("patronictl-read")
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy()
        let names = cluster.nodes.map(\.name).sorted()
        try await cluster.createTable(on: leader)
        for name in names where name != leader { try await cluster.waitForIDs([], on: name) }

        let members = try Self.listed(cluster)
        #expect(members.keys.sorted() == names, "\(members)")
        #expect(members[leader]?["Role"]?.stringValue == "Leader", "\(members)")
        for name in names where name != leader {
            #expect(members[name]?["Role"]?.stringValue == "Replica", "\(members)")
            #expect(members[name]?["State"]?.stringValue == "streaming", "\(members)")
        }
        for name in names {
            #expect(members[name]?["Host"]?.stringValue?.hasPrefix("127.0.0.1") == true, "\(members)")
            #expect(members[name]?["TL"]?.intValue == 1, "\(members)")
        }
        for extra in [["-e"], ["-t"], ["-e", "-t"]] {
            let list = try Self.patronictl(cluster, ["list"] + extra)
            #expect(list.status == 0, "list \(extra): \(list.text)")
            #expect(names.allSatisfy { list.text.contains($0) }, "list \(extra): \(list.text)")
        }
        // -W redraws every 2 s until interrupted: stopped after 3 s, it has drawn the table.
        let watched = try Self.patronictl(cluster, ["list", "-W"], timeout: .seconds(20), stopAfter: 3)
        #expect(names.allSatisfy { watched.text.contains($0) }, "status \(watched.status): \(watched.text)")
        let topology = try Self.patronictl(cluster, ["topology"])
        #expect(topology.status == 0 && names.allSatisfy { topology.text.contains($0) }, "\(topology.text)")
        let history = try Self.patronictl(cluster, ["history", "-f", "json"])
        #expect(history.status == 0, "\(history.text)")
        let config = try Self.patronictl(cluster, ["show-config"])
        #expect(config.status == 0 && config.text.contains("loop_wait"), "\(config.text)")
        let dsn = try Self.patronictl(cluster, ["dsn", "--role", "leader"])
        #expect(dsn.status == 0, "\(dsn.text)")
        let leaderPort = try cluster.node(leader).pgPort
        #expect(dsn.text.contains("port=\(leaderPort)"), "dsn: \(dsn.text)")
    }
}

extension PatronictlTests {
    static func show(_ cluster: AgentCluster, _ name: String, _ parameter: String) async -> String? {
        (try? await cluster.execute(name, "SHOW \(parameter)").rows.first?.values.first) ?? nil
    }

    static func startTime(_ cluster: AgentCluster, _ name: String) async -> String? {
        (try? await cluster.execute(name, "SELECT pg_postmaster_start_time()::text").rows.first?.values.first) ?? nil
    }

    /// Polls `condition` every 200 ms until it holds or `timeout` passes.
    static func eventually(_ timeout: Duration = .seconds(60), _ condition: () async throws -> Bool) async rethrows
        -> Bool
    {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try? await Task.sleep(for: .milliseconds(200))
        }
        return try await condition()
    }

    @Test(
        "patronictl 4.1.5 operates a Baton cluster: edit-config, pause/resume --wait, switchover, failover, restart, reload, reinit, flush, query, remove"
    )
    func operates() async throws {
        let cluster = try AgentCluster.start("patronictl-write")
        defer { cluster.stop() }
        let first = try await cluster.waitHealthy()
        let names = cluster.nodes.map(\.name).sorted()
        let scope = AgentCluster.scope
        try await cluster.createTable(on: first)

        // edit-config -p: on every member (before: written and never applied).
        let edit = try Self.patronictl(cluster, ["edit-config", "-p", "work_mem=24MB", "--force"])
        #expect(edit.status == 0, "\(edit.text)")
        for name in names {
            let applied = await Self.eventually { await Self.show(cluster, name, "work_mem") == "24MB" }
            let shown = await Self.show(cluster, name, "work_mem")
            #expect(applied, "\(name): work_mem \(shown ?? "?")")
        }

        // pause --wait / resume --wait (before: "members didn't recognize pause state").
        let pause = try Self.patronictl(cluster, ["pause", "--wait"])
        #expect(pause.status == 0 && !pause.text.contains("didn't recogni"), "\(pause.text)")
        #expect(try await cluster.view().config?.value.pause == true)
        let resume = try Self.patronictl(cluster, ["resume", "--wait"])
        #expect(resume.status == 0 && !resume.text.contains("didn't recogni"), "\(resume.text)")
        #expect(try await cluster.view().config?.value.pause == false)

        // switchover, then failover back.
        let candidate = try #require(names.first { $0 != first })
        let switchover = try Self.patronictl(
            cluster, ["switchover", "--leader", first, "--candidate", candidate, "--force"])
        #expect(switchover.status == 0, "\(switchover.text)")
        #expect(await Self.eventually { (try? await cluster.leader()) == candidate }, "\(switchover.text)")
        _ = try await cluster.waitHealthy()
        #expect(await Self.eventually { (try? Self.listed(cluster))?.count == 3 })
        let failover = try Self.patronictl(cluster, ["failover", "--candidate", first, "--force"])
        #expect(failover.status == 0, "\(failover.text)")
        #expect(await Self.eventually { (try? await cluster.leader()) == first }, "\(failover.text)")
        let leader = try await cluster.waitHealthy()
        let replica = try #require(names.first { $0 != leader })

        // restart, reload, reinit of a replica.
        let before = await Self.startTime(cluster, replica)
        let restart = try Self.patronictl(cluster, ["restart", scope, replica, "--force"])
        #expect(restart.status == 0, "\(restart.text)")
        #expect(await Self.eventually { await Self.startTime(cluster, replica).map { $0 != before } ?? false })
        let reload = try Self.patronictl(cluster, ["reload", scope, replica, "--force"])
        #expect(reload.status == 0, "\(reload.text)")
        try await cluster.insert([1], on: leader)
        let reinit = try Self.patronictl(
            cluster, ["reinit", scope, replica, "--force", "--wait"], timeout: .seconds(180))
        #expect(reinit.status == 0, "\(reinit.text)")
        try await cluster.waitForIDs([1], on: replica, timeout: .seconds(60))

        // A scheduled restart, then flush removes it.
        let scheduled = try Self.patronictl(
            cluster, ["restart", scope, replica, "--scheduled", "2099-01-01T00:00:00+00:00", "--force"])
        #expect(scheduled.status == 0, "\(scheduled.text)")
        // The member key carries it, so that patronictl list -e shows it (as for Patroni).
        let shown = await Self.eventually(.seconds(10)) {
            (try? Self.patronictl(cluster, ["list", "-e"]))?.text.contains("2099-01-01") == true
        }
        #expect(shown, "patronictl list -e does not show the scheduled restart")
        let flush = try Self.patronictl(cluster, ["flush", scope, replica, "restart", "--force"])
        #expect(flush.status == 0 && !flush.text.lowercased().contains("failed"), "\(flush.text)")

        // query on the leader, with the superuser's password from PGPASSWORD.
        let query = try Self.patronictl(
            cluster, ["query", "--role", "leader", "-U", "postgres", "-c", "SELECT 40 + 2 AS answer"])
        #expect(query.status == 0 && query.text.contains("42"), "\(query.text)")
        #expect(try await cluster.leader() == leader)

        // remove: every agent stopped (their nodes down), then the scope's keys deleted after
        // patronictl's three confirmations (the leader's name while its key has not expired).
        for name in names { try cluster.killNode(name) }
        let config = cluster.root.appendingPathComponent("patronictl.yml").path
        let removeOutput = cluster.root.appendingPathComponent("patronictl-remove.out").path
        let answers = "\(scope)\nYes I am aware\n\(leader)\n"
        let removed = try Self.run(
            [
                "/bin/sh", "-c", "printf '\(answers)' | \"$0\" -c \"$1\" remove \"$2\"", try Self.patronictl(), config,
                scope,
            ],
            output: removeOutput, timeout: .seconds(60))
        let removeText = (try? String(contentsOfFile: removeOutput, encoding: .utf8)) ?? ""
        #expect(removed == 0, "\(removeText)")
        let after = try await cluster.view()
        #expect(
            after.initialize == nil && after.members.isEmpty && after.leader == nil && after.config == nil,
            "keys left after remove: \(cluster.describe(after))")
    }
}
