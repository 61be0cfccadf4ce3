import BatonCore
import BatonTestCluster
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Live migration from Patroni (issue 20), first steps: a real Patroni 4.1.5 cluster (from PyPI,
/// the venv PatronictlTests caches), one replica moved to Baton with the same configuration file
/// on the same data directory, the cluster mixed: the Baton member streams from the Patroni
/// leader and is listed by patronictl; a switchover from the Patroni leader to the Baton member;
/// the old Patroni leader follows it; and the rollback: a Baton member moved back to Patroni.
@Suite(.serialized, .timeLimit(.minutes(8)))
struct PatroniMigrationTests {
    /// Patroni's configuration for a node, which Baton reads too (Patroni's minimum ttl is 20 s).
    static func configuration(
        _ node: AgentNode, _ hosts: [String], tags: String? = nil, synchronous: Bool = false, failsafe: Bool = false
    ) -> String {
        """
        scope: \(AgentCluster.scope)
        namespace: /service/
        name: \(node.name)
        restapi:
          listen: 127.0.0.1:\(node.apiPort)
          connect_address: 127.0.0.1:\(node.apiPort)
        etcd3:
          hosts: [\(hosts.joined(separator: ", "))]
        bootstrap:
          dcs:
            ttl: 20
            loop_wait: 2
            retry_timeout: 5
            maximum_lag_on_failover: 1048576
            synchronous_mode: \(synchronous)
            failsafe_mode: \(failsafe)
            postgresql:
              use_pg_rewind: true
              parameters: {max_connections: 30, wal_log_hints: 'on'}
        postgresql:
          listen: 127.0.0.1:\(node.pgPort)
          connect_address: 127.0.0.1:\(node.pgPort)
          data_dir: \(node.dataDirectory)
          bin_dir: \(AgentCluster.binDirectory)
          pgpass: \(node.directory)/pgpass
          authentication:
            superuser: {username: postgres, password: \(AgentCluster.superuserPassword)}
            replication: {username: replicator, password: \(AgentCluster.replicationPassword)}
          parameters: {shared_buffers: 16MB, fsync: 'off', max_wal_size: 64MB, unix_socket_directories: '\(node.directory)'}
          pg_hba:
            - local all all trust
            - host all all 127.0.0.1/32 scram-sha-256
            - host replication replicator 127.0.0.1/32 scram-sha-256
        log:
          level: INFO
        \(tags.map { "tags: \($0)\n" } ?? "")
        """
    }

    /// Patroni processes by node name, run as the postgres OS user on a copy of the node's file it
    /// can read; stopped by PID.
    final class PatroniAgents: @unchecked Sendable {
        let cluster: AgentCluster
        var pids: [String: pid_t] = [:]

        init(_ cluster: AgentCluster) { self.cluster = cluster }

        func start(_ name: String) throws {
            let node = try cluster.node(name)
            let patroni = URL(fileURLWithPath: try PatronictlTests.patronictl()).deletingLastPathComponent()
                .appendingPathComponent("patroni").path
            let config = node.directory + "/patroni.yml"
            try String(contentsOfFile: node.configPath, encoding: .utf8).write(
                toFile: config, atomically: true, encoding: .utf8)
            if let user = getpwnam("postgres") { chown(config, user.pointee.pw_uid, user.pointee.pw_gid) }
            chmod(config, 0o600)
            appendToFile(node.logPath, "---- \(cluster.elapsed()) test: starting Patroni on \(name)\n")
            let pid = try AgentCluster.spawn(
                [
                    "/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", patroni,
                    config,
                ], environment: ["PATH": "/usr/bin:/bin", "HOME": node.directory, "LANG": "C.UTF-8"],
                output: node.logPath)
            pids[name] = pid
        }

        /// SIGTERM, as systemd stops Patroni: it stops its postgres and, as leader, frees the key.
        func stop(_ name: String) {
            guard let pid = pids.removeValue(forKey: name) else { return }
            appendToFile(try! cluster.node(name).logPath, "---- \(cluster.elapsed()) test: stopping Patroni\n")
            kill(pid, SIGTERM)
            AgentCluster.waitForExit([pid], timeout: .seconds(30))
            kill(pid, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
        }

        /// SIGKILL of Patroni and its postmaster: a whole-node crash.
        func crash(_ name: String) {
            appendToFile(try! cluster.node(name).logPath, "---- \(cluster.elapsed()) test: crashing the node\n")
            let postmaster = cluster.postmasterPID(name)
            if let pid = pids.removeValue(forKey: name) {
                kill(pid, SIGKILL)
                var status: Int32 = 0
                _ = waitpid(pid, &status, 0)
            }
            if let postmaster { kill(postmaster, SIGKILL) }
        }

        /// Reaps a Patroni that someone else (`baton migrate`) stopped.
        func forget(_ name: String) {
            guard let pid = pids.removeValue(forKey: name) else { return }
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
        }

        func stopAll() {
            for name in pids.keys.sorted() { stop(name) }
        }
    }

    /// etcd and a Patroni cluster on it, node1 bootstrapping and the others cloning from it, each
    /// node's file written by `configuration`; healthy when it returns.
    static func startPatroniCluster(
        _ label: String, configuration: @escaping @Sendable (AgentNode, [String]) -> String
    ) async throws -> (AgentCluster, PatroniAgents) {
        var options = ClusterOptions()
        options.startedNodes = 0
        options.configurationText = configuration
        let cluster = try AgentCluster.start(label, options)
        let patroni = PatroniAgents(cluster)
        do {
            try patroni.start("node1")
            _ = try await cluster.waitFor("node1 to lead under Patroni", timeout: .seconds(90)) {
                cluster.primary(in: $0) == "node1"
            }
            try patroni.start("node2")
            try patroni.start("node3")
            _ = try await cluster.waitHealthy(timeout: .seconds(120))
            return (cluster, patroni)
        } catch {
            let report = await cluster.report(logLines: 40)
            patroni.stopAll()
            cluster.stop()
            throw ClusterFailure(description: "\(error)\n\(report)")
        }
    }

    /// A Patroni cluster for `body`, stopped by PID afterwards; a failure comes with the cluster's
    /// state and each node's last log lines.
    static func withPatroniCluster(
        _ label: String, configuration: @escaping @Sendable (AgentNode, [String]) -> String,
        body: (AgentCluster, PatroniAgents) async throws -> Void
    ) async throws {
        let (cluster, patroni) = try await startPatroniCluster(label, configuration: configuration)
        defer {
            patroni.stopAll()
            cluster.stop()
        }
        do {
            try await body(cluster, patroni)
        } catch {
            throw ClusterFailure(description: "\(error)\n\(await cluster.report(logLines: 40))")
        }
    }

    /// Patroni stopped on `name` (its postgres with it), the Baton agent started with the same
    /// file on the same data directory; returns once it streams under Baton.
    static func moveToBaton(_ name: String, _ cluster: AgentCluster, _ patroni: PatroniAgents) async throws
        -> ClusterView
    {
        patroni.stop(name)
        try cluster.startAgent(name)
        return try await cluster.waitFor("\(name) streaming under Baton", timeout: .seconds(90)) { view in
            guard let member = view.member(named: name) else { return false }
            return member.replicationState == "streaming" && member.version == BatonCore.version
                && cluster.isHealthy(view)
        }
    }

    /// `baton migrate` on `name`, as an operator runs it: `--start` touches a marker, on which the
    /// test starts the agent, as systemd would on `systemctl start`. Its exit status and output.
    static func migrate(
        _ name: String, _ cluster: AgentCluster, _ patroni: PatroniAgents, patroniPID: pid_t? = nil,
        extra: [String] = []
    ) async throws -> (status: Int32, text: String) {
        let node = try cluster.node(name)
        let pid = try #require(patroniPID ?? patroni.pids[name], "no Patroni runs on \(name)")
        let marker = node.directory + "/start-baton"
        try? FileManager.default.removeItem(atPath: marker)
        let output = node.directory + "/migrate-\(UUID().uuidString).out"
        let argv =
            [
                AgentCluster.batonBinary, "migrate", "-c", node.configPath, "--patroni-pid", String(pid), "--start",
                "touch \(marker)", "--force", "--timeout", "150",
            ] + extra
        appendToFile(node.logPath, "---- \(cluster.elapsed()) test: \(argv.dropFirst().joined(separator: " "))\n")
        let child = try AgentCluster.spawn(argv, environment: ProcessInfo.processInfo.environment, output: output)
        // Waited for on a thread of its own: starting the agent and reaping are blocking calls.
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            Thread {
                continuation.resume(
                    with: Result {
                        let deadline = ContinuousClock.now + .seconds(240)
                        var started = false
                        var status: Int32 = 0
                        while waitpid(child, &status, WNOHANG) != child {
                            if !started, FileManager.default.fileExists(atPath: marker) {
                                started = true
                                patroni.forget(name)
                                try cluster.startAgent(name)
                            }
                            if ContinuousClock.now > deadline {
                                kill(child, SIGKILL)
                                _ = waitpid(child, &status, 0)
                                throw ClusterFailure(description: "baton migrate \(name) did not finish in 240 s")
                            }
                            usleep(50_000)
                        }
                        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
                    })
            }.start()
        }
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        appendToFile(node.logPath, "---- \(cluster.elapsed()) test: baton migrate exited \(status):\n\(text)")
        return (status, text)
    }

    @Test("baton migrate: a 3-node Patroni cluster in synchronous mode moved live, leader last; then a crash")
    func liveMigration() async throws {
        try await Self.withPatroniCluster("patroni-live-migration") { node, hosts in
            Self.configuration(node, hosts, synchronous: true)
        } body: { cluster, patroni in
            let names = ["node1", "node2", "node3"]
            let leader = try #require(try await cluster.leader())
            try await cluster.createTable(on: leader)
            let probes = SplitBrainProbes(cluster, nodes: names)
            probes.start(limit: .seconds(420))
            let writer = Writer(cluster, limit: .seconds(420))
            writer.start()
            try await Task.sleep(for: .seconds(1))

            // Synchronous mode: the leader can only hand over to the standby its sync key names.
            _ = try await cluster.waitFor("\(leader)'s sync key naming a standby", timeout: .seconds(60)) {
                $0.sync?.value.leader == leader && !($0.sync?.value.syncStandbys.isEmpty ?? true)
            }

            // Refused before anything is touched: another node's Patroni named as this one's.
            let other = names.first { $0 != leader }!
            let wrong = try await Self.migrate(
                leader, cluster, patroni, patroniPID: patroni.pids[other] ?? 1)
            #expect(wrong.status == 2 && wrong.text.contains("runs member '\(other)'"), "\(wrong.text)")
            #expect(patroni.pids[leader] != nil && patroni.pids[other] != nil)
            let dryRun = try await Self.migrate(leader, cluster, patroni, extra: ["--dry-run"])
            #expect(dryRun.status == 0 && dryRun.text.contains("switch over"), "\(dryRun.text)")

            // The replicas, then the leader (through a switchover to a member on Baton).
            var steps: [(name: String, from: ContinuousClock.Instant, to: ContinuousClock.Instant)] = []
            for name in names.filter({ $0 != leader }) + [leader] {
                let from = ContinuousClock.now
                let before = cluster.postmasterPID(name)
                let moved = try await Self.migrate(name, cluster, patroni)
                steps.append((name == leader ? "leader_\(name)" : "replica_\(name)", from, .now))
                print("baton migrate on \(name) (exit \(moved.status)):\n\(moved.text)")
                #expect(moved.status == 0, "\(moved.text)")
                #expect(moved.text.contains("postgres not restarted"), "\(moved.text)")
                if name == leader {
                    #expect(moved.text.contains("switchover") && moved.text.contains("\(name) →"), "\(moved.text)")
                } else {
                    #expect(cluster.postmasterPID(name) == before, "\(name)'s postgres was restarted")
                }
            }
            let allBaton = try await cluster.waitFor("every member on Baton", timeout: .seconds(60)) { view in
                names.allSatisfy { view.member(named: $0)?.version == BatonCore.version } && cluster.isHealthy(view)
            }
            let again = try await Self.migrate(leader, cluster, patroni, patroniPID: 999_999)
            #expect(again.status == 0 && again.text.contains("already runs Baton"), "\(again.text)")

            // A whole-node crash of the leader once every node runs Baton.
            let crashed = try #require(allBaton.leader?.member)
            let standby = try #require(
                try await cluster.waitFor("a synchronous standby of \(crashed)", timeout: .seconds(60)) {
                    $0.sync?.value.leader == crashed && !($0.sync?.value.syncStandbys.isEmpty ?? true)
                }.sync?.value.syncStandbys.first)
            let crash = ContinuousClock.now
            try cluster.killNode(crashed)
            _ = try await cluster.waitFor("a new leader after \(crashed)'s crash", timeout: .seconds(90)) {
                guard let now = cluster.primary(in: $0) else { return false }
                return now != crashed
            }
            let promoted = ContinuousClock.now - crash
            try cluster.startAgent(crashed)
            _ = try await cluster.waitHealthy(timeout: .seconds(120))
            steps.append(("crash_all_baton", crash, .now))
            try await Task.sleep(for: .seconds(1))
            await writer.stop()
            await probes.stop()

            let acks = writer.acknowledged.sorted { $0.at < $1.at }
            let measured = steps.map { step -> String in
                "\(step.name)=\(seconds(step.to - step.from)) "
                    + "\(step.name)_U=\(seconds(writer.longestGap(from: step.from, to: step.to)))"
            }
            let final = try #require(try await cluster.leader())
            let stored = try await cluster.ids(on: final)
            let lost = Set(acks.map(\.id)).subtracting(stored)
            let splitBrain = probes.overlap()
            print(
                "MEASURE patroni-live-migration: acknowledged=\(acks.count) lost=\(lost.count) "
                    + "D2=\(seconds(splitBrain.total)) probe_accepts=\(probes.acceptedByNode.sorted { $0.key < $1.key }) crash_P=\(seconds(promoted)) sync_standby=\(standby) "
                    + measured.joined(separator: " "))
            #expect(lost.isEmpty, "acknowledged writes lost: \(lost.sorted().prefix(10))")
            #expect(splitBrain.total == .zero, "two nodes accepted writes at once: \(splitBrain.cases)")
            #expect(probes.interleaved().isEmpty, "\(probes.interleaved().prefix(5))")
            let accepting = probes.acceptedByNode.filter { $0.value > 0 }
            #expect(accepting.count >= 2, "the probes saw fewer than two primaries: \(probes.acceptedByNode)")
            #expect(acks.count > 300, "\(acks.count) writes acknowledged; last failures \(writer.lastFailures)")
        }
    }

    /// `body` until it does not throw, at most 30 s (the last error is thrown).
    static func retrying<T>(_ body: () async throws -> T) async throws -> T {
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            do {
                return try await body()
            } catch  where ContinuousClock.now < deadline {
                try await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Every etcd member frozen (SIGSTOP) for `duration`: requests hang, as in a network outage.
    /// `midway` runs once `duration` − 10 s have passed (more than ttl when duration is 45 s).
    static func etcdOutage(
        _ cluster: AgentCluster, for duration: Duration, midway: () async -> Void = {}
    ) async throws {
        let pids = (0..<3).compactMap { index in
            (try? String(
                contentsOfFile: cluster.root.appendingPathComponent("etcd/m\(index).pid").path, encoding: .utf8))
                .flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        #expect(pids.count == 3, "etcd member PIDs: \(pids)")
        for pid in pids { cluster.suspend(pid) }
        let started = ContinuousClock.now
        try await Task.sleep(for: duration - .seconds(10))
        await midway()
        try await Task.sleep(until: started + duration)
        for pid in pids { cluster.resume(pid) }
    }

    @Test("failsafe_mode in a mixed cluster: with etcd gone, a Patroni leader and a Baton leader each keep serving")
    func mixedClusterFailsafe() async throws {
        try await Self.withPatroniCluster("patroni-mixed-failsafe") { node, hosts in
            Self.configuration(node, hosts, failsafe: true)
        } body: { cluster, patroni in
            let names = ["node1", "node2", "node3"]
            let leader = try #require(try await cluster.leader())
            let moved = try #require(names.first { $0 != leader })
            try await cluster.createTable(on: leader)
            let migrated = try await Self.migrate(moved, cluster, patroni)
            #expect(migrated.status == 0, "\(migrated.text)")
            let probes = SplitBrainProbes(cluster, nodes: names)
            probes.start(limit: .seconds(400))
            let writer = Writer(cluster, limit: .seconds(400))
            writer.start()
            // The failsafe key lists every member (written by whoever leads) before etcd goes.
            func waitFailsafe(_ who: String) async throws {
                _ = try await cluster.waitFor("\(who)'s failsafe key naming every member", timeout: .seconds(60)) {
                    cluster.primary(in: $0) == who && Set(($0.failsafe ?? [:]).keys).isSuperset(of: names)
                }
            }
            let outage = Duration.seconds(45)  // more than twice ttl (20 s)
            var lines: [String] = []
            for (round, who) in [(1, leader), (2, moved)] {
                if round == 2 {
                    // The Baton member leads through a switchover, then etcd goes again.
                    let switched = try PatronictlTests.patronictl(
                        cluster, ["switchover", "--leader", leader, "--candidate", moved, "--force"])
                    #expect(switched.status == 0, "\(switched.text)")
                    _ = try await cluster.waitHealthy(timeout: .seconds(90))
                }
                try await waitFailsafe(who)
                let timelineQuery = "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) AS t"
                let timeline = try await cluster.execute(who, timelineQuery).rows.first?.string("t")
                let postmaster = cluster.postmasterPID(who)
                // 35 s into the outage (beyond ttl, when a leader without failsafe would have
                // stepped down): a write straight to the leader, on a connection of its own.
                var midwayWrite = "not tried"
                var midwayPostmaster: pid_t?
                try await Self.etcdOutage(cluster, for: outage) {
                    midwayPostmaster = cluster.postmasterPID(who)
                    do {
                        try await cluster.insert([90_000_000 + round], on: who)
                        midwayWrite = "accepted"
                    } catch {
                        midwayWrite = "\(error)"
                    }
                }
                // The leader served through the outage: not fenced (the same postmaster), and it
                // took a write 35 s in. Once etcd answers it leads again.
                #expect(midwayWrite == "accepted", "\(who) refused a write 35 s into the outage: \(midwayWrite)")
                #expect(midwayPostmaster == postmaster, "\(who)'s postgres was stopped during the outage")
                _ = try await cluster.waitFor("\(who) to lead again", timeout: .seconds(90)) {
                    cluster.primary(in: $0) == who && cluster.isHealthy($0)
                }
                // A Baton leader whose lease expired may still be restarting when the view first
                // names it again: the query is retried for up to 30 s.
                let after = try await Self.retrying {
                    try await cluster.execute(who, timelineQuery).rows.first?.string("t")
                }
                if round == 1 {
                    // Patroni takes the leader key again in place.
                    #expect(after == timeline, "\(who)'s timeline moved from \(timeline ?? "?") to \(after ?? "?")")
                }
                // Baton (a known difference, docs/runbooks.md): its lease expired during the outage,
                // so when etcd answers it fences, restarts read-only and promotes again.
                lines.append(
                    "\(round == 1 ? "patroni" : "baton")_leader_midway_write=\(midwayWrite == "accepted") "
                        + "\(round == 1 ? "patroni" : "baton")_timeline_after=\(timeline ?? "?")→\(after ?? "?")")
            }
            await writer.stop()
            await probes.stop()
            let acks = writer.acknowledged
            _ = try await cluster.waitHealthy(timeout: .seconds(90))
            let final = try #require(try await cluster.leader())
            let stored = try await Self.retrying { try await cluster.ids(on: final) }
            let lost = Set(acks.map(\.id)).subtracting(stored)
            print(
                "MEASURE patroni-mixed-failsafe: acknowledged=\(acks.count) lost=\(lost.count) "
                    + "D2=\(seconds(probes.overlap().total)) outage=\(seconds(outage)) " + lines.joined(separator: " "))
            #expect(lost.isEmpty, "acknowledged writes lost: \(lost.sorted().prefix(10))")
            #expect(probes.overlap().total == .zero && probes.interleaved().isEmpty, "\(probes.overlap().cases)")
        }
    }

    @Test("a Patroni 4.1.5 cluster: a replica moved to Baton streams, takes a switchover, and moves back")
    func mixedCluster() async throws {
        try await Self.withPatroniCluster("patroni-migration") { node, hosts in
            Self.configuration(node, hosts)
        } body: { cluster, patroni in
            let leader = try #require(try await cluster.leader())
            try await cluster.createTable(on: leader)

            // node3 moves to Baton: Patroni stopped (its postgres with it), the Baton agent started
            // with the same file on the same data directory.
            let moved = "node3"
            // A writer inserts every 20 ms into whoever leads, through every step.
            let writer = Writer(cluster, limit: .seconds(400))
            writer.start()
            var steps: [(name: String, from: ContinuousClock.Instant, to: ContinuousClock.Instant)] = []
            var stepStarted = ContinuousClock.now
            func step(_ name: String) {
                steps.append((name, stepStarted, ContinuousClock.now))
                stepStarted = ContinuousClock.now
            }
            let mixed = try await Self.moveToBaton(moved, cluster, patroni)
            step("patroni_to_baton_replica")
            #expect(cluster.primary(in: mixed) == leader)
            try await cluster.insert([1, 2, 3], on: leader)
            try await cluster.waitForIDs([1, 2, 3], on: moved)
            // patronictl lists the Baton member streaming. Polled: its walreceiver may restart once
            // after the agent's first reload (a CI run caught "in archive recovery" in between).
            var listed = try PatronictlTests.listed(cluster)
            let listDeadline = ContinuousClock.now + .seconds(30)
            while listed[moved]?["State"]?.stringValue != "streaming", ContinuousClock.now < listDeadline {
                try await Task.sleep(for: .seconds(1))
                listed = try PatronictlTests.listed(cluster)
            }
            #expect(listed[moved]?["State"]?.stringValue == "streaming", "\(listed)")

            /// `patronictl switchover --leader FROM --candidate TO`, then waits until TO leads.
            func switchOver(from: String, to: String) async throws {
                let switched = try PatronictlTests.patronictl(
                    cluster, ["switchover", "--leader", from, "--candidate", to, "--force"])
                #expect(switched.status == 0, "\(switched.text)")
                _ = try await cluster.waitFor("\(to) to lead", timeout: .seconds(60)) { cluster.primary(in: $0) == to }
            }

            // A switchover from the Patroni leader to the Baton member, asked through patronictl.
            try await switchOver(from: leader, to: moved)
            step("switchover_patroni_to_baton")
            _ = try await cluster.waitHealthy(timeout: .seconds(90))
            step("patroni_leader_follows_baton")
            try await cluster.insert([4], on: moved)
            try await cluster.waitForIDs([1, 2, 3, 4], on: leader)

            // Rollback: node3 back to Patroni (a switchover away first, as the runbook says).
            try await switchOver(from: moved, to: leader)
            step("switchover_baton_to_patroni")
            _ = try await cluster.waitHealthy(timeout: .seconds(90))
            stepStarted = ContinuousClock.now
            if let pid = cluster.agentPID(moved) {
                kill(pid, SIGTERM)
                AgentCluster.waitForExit([pid], timeout: .seconds(30))
            }
            try patroni.start(moved)
            _ = try await cluster.waitFor("\(moved) streaming under Patroni again", timeout: .seconds(90)) { view in
                guard let member = view.member(named: moved) else { return false }
                return member.replicationState == "streaming" && member.version != BatonCore.version
                    && cluster.isHealthy(view)
            }
            step("baton_to_patroni_replica")
            try await cluster.insert([5], on: leader)
            try await cluster.waitForIDs([1, 2, 3, 4, 5], on: moved)
            await writer.stop()
            // U per step: the longest gap between two acknowledged writes ending inside the step.
            let acks = writer.acknowledged.sorted { $0.at < $1.at }
            let measured = steps.map { step -> String in
                "\(step.name)=\(seconds(step.to - step.from)) "
                    + "\(step.name)_U=\(seconds(writer.longestGap(from: step.from, to: step.to)))"
            }
            print("MEASURE patroni-migration: acknowledged=\(acks.count) " + measured.joined(separator: " "))
            let stored = try await cluster.ids(on: leader)
            let lost = Set(acks.map(\.id)).subtracting(stored)
            #expect(lost.isEmpty, "acknowledged writes lost: \(lost.sorted().prefix(10))")
            #expect(acks.count > 1000, "\(acks.count) writes acknowledged; last failures \(writer.lastFailures)")
        }
    }

    @Test("a mixed cluster in synchronous mode fails over both ways: Patroni leader → Baton, Baton leader → Patroni")
    func mixedClusterCrashes() async throws {
        // node3 (Patroni) never takes over: the winners are the Baton member, then a Patroni one.
        try await Self.withPatroniCluster("patroni-mixed-crash") { node, hosts in
            Self.configuration(
                node, hosts, tags: node.name == "node3" ? "{nofailover: true}" : nil, synchronous: true)
        } body: { cluster, patroni in
            try await cluster.createTable(on: "node1")
            _ = try await Self.moveToBaton("node2", cluster, patroni)
            let writer = Writer(cluster, limit: .seconds(400))
            writer.start()
            try await Task.sleep(for: .seconds(2))
            // Synchronous mode: a crash is only survivable once the leader's sync key names a
            // standby that may take over (until then nobody may promote: the safe side).
            func waitSynchronous(_ leader: String, _ standby: String) async throws {
                _ = try await cluster.waitFor("\(leader)'s sync key naming \(standby)", timeout: .seconds(60)) {
                    $0.sync?.value.leader == leader && $0.sync?.value.syncStandbys == [standby]
                }
            }
            try await waitSynchronous("node1", "node2")

            // The Patroni leader's node dies: the Baton replica takes over; Patroni, started again
            // on the old leader, rejoins under it.
            let firstCrash = ContinuousClock.now
            patroni.crash("node1")
            _ = try await cluster.waitFor("node2 (Baton) to lead", timeout: .seconds(90)) {
                cluster.primary(in: $0) == "node2"
            }
            let firstPromoted = ContinuousClock.now - firstCrash
            try patroni.start("node1")
            _ = try await cluster.waitHealthy(timeout: .seconds(120))
            let firstRejoined = ContinuousClock.now - firstCrash

            // The Baton leader's node dies: a Patroni replica takes over; Baton, started again,
            // rejoins under it. Baton chose node1, not node3 (nofailover), as Patroni would.
            try await waitSynchronous("node2", "node1")
            let secondCrash = ContinuousClock.now
            try cluster.killNode("node2")
            _ = try await cluster.waitFor("node1 (Patroni) to lead", timeout: .seconds(90)) {
                cluster.primary(in: $0) == "node1"
            }
            let secondPromoted = ContinuousClock.now - secondCrash
            try cluster.startAgent("node2")
            _ = try await cluster.waitHealthy(timeout: .seconds(120))
            let secondRejoined = ContinuousClock.now - secondCrash
            try await Task.sleep(for: .seconds(1))
            await writer.stop()

            let acks = writer.acknowledged.sorted { $0.at < $1.at }
            func longestGap(after instant: ContinuousClock.Instant, before end: ContinuousClock.Instant) -> Duration {
                writer.longestGap(from: instant, to: end)
            }
            let stored = try await cluster.ids(on: "node1")
            let lost = Set(acks.map(\.id)).subtracting(stored)
            print(
                "MEASURE patroni-mixed-crash: acknowledged=\(acks.count) lost=\(lost.count) "
                    + "patroni_leader_crash_U=\(seconds(longestGap(after: firstCrash, before: secondCrash))) "
                    + "patroni_leader_crash_P=\(seconds(firstPromoted)) patroni_leader_crash_Z=\(seconds(firstRejoined)) "
                    + "baton_leader_crash_U=\(seconds(longestGap(after: secondCrash, before: acks.last?.at ?? .now))) "
                    + "baton_leader_crash_P=\(seconds(secondPromoted)) baton_leader_crash_Z=\(seconds(secondRejoined))")
            // Synchronous mode: no acknowledged write may be lost.
            #expect(lost.isEmpty, "acknowledged writes lost: \(lost.sorted().prefix(10))")
        }
    }
}
