import BatonCore
import BatonPostgres
import BatonTestCluster
import BatonTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `baton pooler` and a real PgBouncer when things go wrong, on one 3-node cluster with
/// `pooler_pause_timeout: 1`: a replica past the lag limit leaves the read-only database and comes
/// back; a transaction left open makes the pause time out (the switchover is refused with
/// `pooler_pause_required`, goes on without the pooler without it); a pooler killed while
/// PgBouncer is paused for a switchover is started again and resumes on the new primary with no
/// client error; a pooler that loses etcd keeps PgBouncer's configuration and says so on its status
/// endpoint; a second pooler given the same name does not take the first one's registration.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct PoolerFaultTests {
    @Test("PgBouncer under faults: lag limit, pause timeout, pooler killed mid-switchover, etcd lost")
    func poolerUnderFaults() async throws {
        var options = ClusterOptions()
        options.dcsExtra = ["pooler_pause_timeout: 1", "pooler_pause_required: true"]
        let cluster = try AgentCluster.start("pooler-faults", options)
        defer { cluster.stop() }
        let first = try await cluster.waitHealthy()
        try await cluster.createTable(on: first)
        let bouncer = try TestBouncer.start()
        defer { bouncer.stop() }
        // The pooler reaches etcd through a forwarder the test can silence.
        let etcd = try TCPForwarder(cluster.endpoints)
        defer { etcd.stop() }
        let dcs = TestBouncer.dcsArguments(etcd.addresses)
        let statusPort = try TestEnvironment.freePort()
        let poolerLog = bouncer.work.appendingPathComponent("pooler.log").path
        func startPooler() throws -> pid_t {
            try bouncer.startPooler(
                name: "pool2", dcs: dcs, log: poolerLog,
                extra: [
                    "--database", "app_ro=replica:postgres", "--max-lag", "65536", "--ttl", "4", "--listen",
                    "127.0.0.1:\(statusPort)",
                ])
        }
        var pooler = try startPooler()
        defer {
            kill(pooler, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(pooler, &status, 0)
        }
        func status(_ path: String) -> String {
            PatroniGoldenTests.get("http://127.0.0.1:\(statusPort)\(path)", cluster: cluster) ?? ""
        }
        func health() -> PoolerHealth? {
            try? JSONDecoder().decode(PoolerHealth.self, from: Data(status("/health").utf8))
        }
        func waitForHealth(_ what: String, timeout: Duration = .seconds(20), _ accept: (PoolerHealth) -> Bool)
            async throws
        {
            let started = ContinuousClock.now
            while ContinuousClock.now - started < timeout {
                if let answer = health(), accept(answer) { return }
                try await Task.sleep(for: .milliseconds(200))
            }
            throw ClusterFailure(
                description: "the pooler's /health did not show \(what) in \(timeout): \(status("/health"))")
        }
        var stopped: pid_t?
        defer { if let stopped { kill(stopped, SIGCONT) } }
        do {
            _ = try await PoolerTests.waitBehind(
                bouncer.port, database: "app", pgPort: try cluster.node(first).pgPort, primary: true)
            try await waitForHealth("following") { $0.state == "following" }

            // 1. The lag limit: the replica app_ro uses stops receiving WAL (its WAL receiver
            //    SIGSTOPped) while the primary writes 1 MB: it leaves app_ro for the other replica,
            //    and comes back once it has caught up.
            let chosen = try await PoolerTests.serverBehind(bouncer.port, database: "app_ro")
            let replicas = cluster.nodes.map(\.name).filter { $0 != first }
            let lagging = try #require(try replicas.first { try cluster.node($0).pgPort == chosen.port })
            let other = try #require(replicas.first { $0 != lagging })
            let receiver = try #require(
                try await cluster.execute(lagging, "SELECT pid FROM pg_stat_wal_receiver").single().int("pid"))
            kill(pid_t(receiver), SIGSTOP)
            stopped = pid_t(receiver)
            _ = try await cluster.execute(
                first, "CREATE TABLE lag_filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 2000) g")
            _ = try await PoolerTests.waitBehind(
                bouncer.port, database: "app_ro", pgPort: try cluster.node(other).pgPort, primary: false)
            kill(pid_t(receiver), SIGCONT)
            stopped = nil
            _ = try await PoolerTests.waitBehind(
                bouncer.port, database: "app_ro", pgPort: try cluster.node(lagging).pgPort, primary: false)

            // 2. A pause that cannot finish: a transaction left open through app. With
            //    pooler_pause_required the switchover is refused and the primary stays; without it
            //    the switchover goes on after pooler_pause_timeout (1 s) without the pooler.
            var holderParameters = ConnectionParameters(
                host: "127.0.0.1", port: bouncer.port, user: "postgres", database: "app", connectTimeout: .seconds(3),
                statementTimeout: .seconds(30))
            holderParameters.sendsServerOptions = false
            let holder = try await PostgresConnection.connect(holderParameters)
            _ = try await holder.queryBatch("BEGIN; INSERT INTO baton_it (id) VALUES (5000001)")
            #expect(
                try await cluster.store.writeFailover(FailoverRequest(leader: first, member: other), expected: nil))
            _ = try await cluster.waitFor("the refused switchover's key cleared", timeout: .seconds(20)) {
                $0.failover == nil
            }
            #expect(try await cluster.leader() == first)
            #expect(cluster.log(first).contains("pooler_pause_required is on"), "\(cluster.log(first).suffix(1500))")
            try await waitForHealth("a failed pause") { $0.pauseFailures >= 1 }

            /// `baton edit-config -s pooler_pause_required=…`, then waits until the key says so.
            func setPauseRequired(_ required: Bool) async throws {
                let edit = cluster.root.appendingPathComponent("edit-config.out").path
                let status = try AgentCluster.runToCompletion(
                    [
                        AgentCluster.batonBinary, "edit-config", "-c", "/nonexistent/agent.yml", "-s",
                        "pooler_pause_required=\(required)", "--force", "--quiet",
                    ] + TestBouncer.dcsArguments(cluster.endpoints),
                    environment: ProcessInfo.processInfo.environment, output: edit, timeout: .seconds(30))
                #expect(status == 0, "\(cluster.tail(edit, lines: 10))")
                _ = try await cluster.waitFor("pooler_pause_required \(required)", timeout: .seconds(10)) {
                    $0.dynamicConfig.poolerPauseRequired == required
                }
            }
            try await setPauseRequired(false)
            #expect(
                try await cluster.store.writeFailover(FailoverRequest(leader: first, member: other), expected: nil))
            _ = try await cluster.waitFor("\(other) to lead", timeout: .seconds(30)) {
                cluster.primary(in: $0) == other
            }
            #expect(cluster.log(first).contains("switchover_without_poolers"), "\(cluster.log(first).suffix(1500))")
            await holder.close()
            _ = try await PoolerTests.waitBehind(
                bouncer.port, database: "app", pgPort: try cluster.node(other).pgPort, primary: true)

            // 3. The pooler killed while PgBouncer is paused for a switchover (the open transaction
            //    is gone, so the pause takes hold): started again, it finds app paused, keeps it so
            //    until the new primary leads and resumes there. The writer sees latency only.
            _ = try await cluster.waitHealthy()
            let next = try #require(cluster.nodes.map(\.name).first { $0 != other })
            let writer = BouncerWriter(port: bouncer.port)
            let writing = Task { await writer.run() }
            try await Task.sleep(for: .seconds(1))
            #expect(try await cluster.store.writeFailover(FailoverRequest(leader: other, member: next), expected: nil))
            try await Self.waitPaused(bouncer, database: "app", timeout: .seconds(10))
            kill(pooler, SIGKILL)
            var exitStatus: Int32 = 0
            _ = waitpid(pooler, &exitStatus, 0)
            _ = try await cluster.waitFor("\(next) to lead", timeout: .seconds(30)) { cluster.primary(in: $0) == next }
            try await Task.sleep(for: .seconds(1))
            pooler = try startPooler()
            _ = try await PoolerTests.waitBehind(
                bouncer.port, database: "app", pgPort: try cluster.node(next).pgPort, primary: true)
            try await Task.sleep(for: .seconds(1))
            writing.cancel()
            let written = await writing.value
            #expect(written.failures.isEmpty, "inserts failed through PgBouncer: \(written.failures.prefix(5))")
            #expect(written.acknowledged.isSubset(of: try await cluster.ids(on: next)), "acknowledged inserts lost")
            let log = (try? String(contentsOfFile: poolerLog, encoding: .utf8)) ?? ""
            #expect(log.contains("paused by an earlier run"), "\(log.suffix(2000))")

            // 3b. The pooler killed while its PAUSE still waits for a transaction left open, with
            //     pooler_pause_required on (the leader refuses the switchover and keeps its
            //     primary): started again, it finds app paused by the earlier run with a server
            //     connection busy, does not take that for a finished pause, and resumes app on the
            //     same primary once the request is gone. The open transaction commits.
            _ = try await cluster.waitHealthy()
            try await setPauseRequired(true)
            let busy = try await PostgresConnection.connect(holderParameters)
            _ = try await busy.queryBatch("BEGIN; INSERT INTO baton_it (id) VALUES (5000002)")
            let target = try #require(cluster.nodes.map(\.name).first { $0 != next })
            #expect(
                try await cluster.store.writeFailover(FailoverRequest(leader: next, member: target), expected: nil))
            try await Self.waitPaused(bouncer, database: "app", timeout: .seconds(10))
            kill(pooler, SIGKILL)
            _ = waitpid(pooler, &exitStatus, 0)
            let logBefore = ((try? String(contentsOfFile: poolerLog, encoding: .utf8)) ?? "").utf8.count
            pooler = try startPooler()
            _ = try await cluster.waitFor("the refused switchover's key cleared", timeout: .seconds(20)) {
                $0.failover == nil
            }
            #expect(try await cluster.leader() == next)
            _ = try await PoolerTests.waitBehind(
                bouncer.port, database: "app", pgPort: try cluster.node(next).pgPort, primary: true)
            _ = try await busy.queryBatch("COMMIT")
            await busy.close()
            #expect(try await cluster.ids(on: next).contains(5_000_002), "the open transaction was lost")
            let restartedLog = String(
                decoding: ((try? String(contentsOfFile: poolerLog, encoding: .utf8)) ?? "").utf8.dropFirst(logBefore),
                as: UTF8.self)
            #expect(
                restartedLog.contains("paused by an earlier run") && !restartedLog.contains("stay paused until"),
                "\(restartedLog.suffix(2500))")

            // 4. etcd silent for the pooler only: PgBouncer keeps its configuration (app still
            //    reaches the primary), /health answers 503 store_unreachable and the metric says
            //    so; when etcd answers again the pooler follows again.
            try await waitForHealth("following after the restart") { $0.state == "following" }
            etcd.suspend()
            try await waitForHealth("store_unreachable", timeout: .seconds(30)) {
                $0.state == "store_unreachable" && !$0.storeReachable
            }
            #expect(
                status("/metrics").contains("baton_pooler_store_reachable{pooler=\"pool2\"} 0"), "\(status("/metrics"))"
            )
            let during = try await PoolerTests.serverBehind(bouncer.port, database: "app")
            #expect(during.port == (try cluster.node(next).pgPort) && !during.recovery, "\(during)")
            etcd.resume()
            try await waitForHealth("following again", timeout: .seconds(30)) {
                $0.state == "following" && $0.storeReachable
            }
            // 5. A second pooler given the same name: it does not take the first one's key (the
            //    leader would otherwise wait for the wrong one) and says so.
            let twinPort = try TestEnvironment.freePort()
            let twinLog = bouncer.work.appendingPathComponent("twin.log").path
            let twin = try bouncer.startPooler(
                name: "pool2", dcs: dcs, log: twinLog, extra: ["--ttl", "4", "--listen", "127.0.0.1:\(twinPort)"])
            defer {
                kill(twin, SIGKILL)
                var status: Int32 = 0
                _ = waitpid(twin, &status, 0)
            }
            let twinStarted = ContinuousClock.now
            var twinHealth = ""
            while ContinuousClock.now - twinStarted < .seconds(20), !twinHealth.contains("name_taken") {
                try await Task.sleep(for: .milliseconds(200))
                twinHealth = PatroniGoldenTests.get("http://127.0.0.1:\(twinPort)/health", cluster: cluster) ?? ""
            }
            #expect(
                twinHealth.contains("\"state\":\"name_taken\""), "\(twinHealth) \(cluster.tail(twinLog, lines: 10))")
            #expect(cluster.tail(twinLog, lines: 50).contains("another pooler is registered as pool2"))
            let registered = try await cluster.view().poolers.filter { $0.name == "pool2" }
            #expect(registered.count == 1 && registered.first?.replicas != nil, "\(registered)")
            try await waitForHealth("the first pooler still following") { $0.state == "following" }

            AgentFailoverTests.measure(
                "pooler-faults",
                [
                    "killed_pooler_writer_inserts": "\(written.acknowledged.count)",
                    "killed_pooler_writer_failed": "\(written.failures.count)",
                    "killed_pooler_writer_max_latency": seconds(written.maxLatency),
                ])
        } catch {
            let bouncerLog = cluster.tail(bouncer.dir + "/pgbouncer.log", lines: 15)
            throw ClusterFailure(
                description:
                    "\(error)\n---- pooler log:\n\(cluster.tail(poolerLog, lines: 30))\n---- pgbouncer log:\n\(bouncerLog)"
            )
        }
    }

    /// Waits until PgBouncer's admin console shows `database` paused (polled every 10 ms).
    static func waitPaused(_ bouncer: TestBouncer, database: String, timeout: Duration) async throws {
        var parameters = ConnectionParameters(
            host: "127.0.0.1", port: bouncer.port, user: "postgres", database: "pgbouncer", connectTimeout: .seconds(3),
            statementTimeout: .seconds(3))
        parameters.sendsServerOptions = false
        let admin = try await PostgresConnection.connect(parameters)
        defer { Task { await admin.close() } }
        let started = ContinuousClock.now
        while ContinuousClock.now - started < timeout {
            let rows = try await admin.queryBatch("SHOW DATABASES").last?.rows ?? []
            if try rows.contains(where: { try $0.value("name") == database && $0.value("paused") == "1" }) { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw ClusterFailure(description: "PgBouncer's \(database) was not paused within \(timeout)")
    }
}
