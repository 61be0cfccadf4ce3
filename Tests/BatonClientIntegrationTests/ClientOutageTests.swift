import BatonClient
import BatonCore
import BatonEtcd
import BatonPostgres
import BatonTestCluster
import Foundation
import Metrics
import MetricsTestKit
import Synchronization
import Testing

/// The client's topology sources failing for real: the client reaches etcd and the agents' REST
/// APIs through forwarders that the test silences (SIGSTOP: no answer, no error, as when hosts
/// vanish), while the cluster itself keeps its etcd and fails over.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct ClientOutageTests {
    /// Waits until the client's topology status satisfies `condition`; returns when it did.
    static func waitForStatus(
        _ client: BatonClient, _ what: String, timeout: Duration, _ condition: (TopologyStatus) -> Bool
    ) async throws -> ContinuousClock.Instant {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition(client.topologyStatus) { return .now }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ClusterFailure(
            description: "the client never showed \(what): \(client.topologyStatus), \(client.topology)")
    }

    @Test("etcd unreachable for 3 × degraded_after with a failover inside: REST fallback, then multi-host, then etcd")
    func etcdOutageWithFailover() async throws {
        let metrics = TestMetricsBackend.shared
        let cluster = try AgentCluster.start("client-outage")
        defer { cluster.stop() }
        let oldLeader = try await cluster.waitHealthy()
        let etcd = try TCPForwarder(cluster.endpoints)
        defer { etcd.stop() }
        let agents = try TCPForwarder(cluster.nodes.map { "127.0.0.1:\($0.apiPort)" })
        defer { agents.stop() }
        let degradedAfter = Duration.seconds(2)
        let logs = LogCapture()
        let client = try await cluster.client(
            [
                "etcd_hosts": etcd.addresses.joined(separator: ","),
                "agents": agents.addresses.map { "http://\($0)" }.joined(separator: ","),
                "degraded_after": "2s", "poll_interval": "500ms", "etcd_check_interval": "500ms",
                "etcd_request_timeout": "1s", "primary_wait_timeout": "30s", "statement_timeout": "2s",
            ], logs: logs)
        defer { Task { await client.shutdown() } }
        try await client.write { conn in
            try await conn.query("CREATE TABLE IF NOT EXISTS client_outage (id bigint PRIMARY KEY)")
        }
        #expect(client.topologyStatus.source == .etcd)

        let ledger = ClientFailoverTests.Ledger()
        let reads = Mutex((ok: 0, failed: 0))
        let writer = Task { await ClientFailoverTests.write(client, cluster, ledger, table: "client_outage") }
        let reader = Task {
            while !Task.isCancelled {
                do {
                    _ = try await client.read(consistency: .eventual) { conn in try await conn.query("SELECT 1") }
                    reads.withLock { $0.ok += 1 }
                } catch {
                    reads.withLock { $0.failed += 1 }
                }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        defer {
            writer.cancel()
            reader.cancel()
        }
        try await Task.sleep(for: .milliseconds(500))

        // Phase 1: etcd silent. The check notices within its request timeout; the REST agents
        // take over.
        let outageStarted = ContinuousClock.now
        etcd.suspend()
        let onREST = try await Self.waitForStatus(client, "the REST source", timeout: .seconds(10)) {
            $0.source == .rest
        }
        let readsBeforeFailover = reads.withLock { $0.ok }

        // A failover during the outage: the leader's whole node dies; the cluster (whose etcd is
        // fine) promotes another member; the client learns of it only through REST.
        let revision = try await cluster.view().revision
        async let change = ClientFailoverTests.watchLeaderChange(cluster, from: oldLeader, after: revision)
        try cluster.killNode(oldLeader)
        let killed = ContinuousClock.now
        guard let (newLeader, promoted) = await change else {
            await cluster.fail("no new leader after \(oldLeader) died")
            return
        }
        // Writes resume on the new primary.
        let deadline = ContinuousClock.now + .seconds(20)
        var resumed: ContinuousClock.Instant?
        while resumed == nil, ContinuousClock.now < deadline {
            resumed = ledger.acks.withLock { acks in acks.first { $0.node == newLeader && $0.at >= killed }?.at }
            if resumed == nil { try await Task.sleep(for: .milliseconds(20)) }
        }
        guard let resumed else {
            let activity = try? await cluster.execute(
                newLeader,
                "SELECT string_agg(concat_ws(' ', pid, state, wait_event_type, wait_event, left(query, 80)), ' | ') AS a "
                    + "FROM pg_stat_activity WHERE application_name = 'baton-client-it'")
            print("ACTIVITY on \(newLeader): \(String(describing: try? activity?.single().string("a")))")
            let errors =
                ledger.errors.withLock { $0.suffix(5).map { "\($0)" } } + ledger.otherErrors.withLock { $0.suffix(5) }
            await cluster.fail(
                "no write acknowledged by \(newLeader) within 20 s of its promotion; \(client.topology); last errors: \(errors)\n"
                    + logs.all.filter {
                        !$0.hasPrefix("read routed") && !$0.hasPrefix("read on the primary")
                            && !$0.hasPrefix("etcd call failed")
                    }.suffix(60).map { String($0.prefix(250)) }.joined(separator: "\n"))
            return
        }
        let resumeAfterPromotion = resumed - promoted
        #expect(client.topologyStatus.source == .rest)

        // Keep etcd silent for at least 3 × degraded_after in all.
        let outageEnd = outageStarted + degradedAfter * 3
        if ContinuousClock.now < outageEnd { try await Task.sleep(until: outageEnd, clock: .continuous) }

        // Phase 2: the agents fall silent too. Once no source has answered for degraded_after the
        // client stops trusting the last primary and writes go to whichever member is writable.
        agents.suspend()
        let agentsSilent = ContinuousClock.now
        let degraded = try await Self.waitForStatus(client, "the degraded path", timeout: .seconds(15)) {
            $0.source == .degraded
        }
        let writesBeforeDegraded = ledger.acks.withLock { $0.count }
        try await Task.sleep(for: .seconds(1))
        let degradedStatus = client.topologyStatus
        let writesWhileDegraded = ledger.acks.withLock { $0.count } - writesBeforeDegraded

        // Phase 3: everything answers again; the client follows etcd (and its watch) again.
        agents.resume()
        etcd.resume()
        let resumedAll = ContinuousClock.now
        let back = try await Self.waitForStatus(client, "etcd again", timeout: .seconds(10)) { $0.source == .etcd }
        // The watch is live again: a change published now reaches the client quickly.
        try await Task.sleep(for: .milliseconds(300))
        writer.cancel()
        reader.cancel()
        _ = await (writer.value, reader.value)
        let readsOK = reads.withLock { $0.ok }

        let sourceGauge = { (source: String) in
            (try? metrics.expectGauge("baton_client_topology_source", [("source", source)]))?.values ?? []
        }
        let ages = (try? metrics.expectGauge("baton_client_topology_age_seconds"))?.values ?? []
        let etcdFailures =
            (try? metrics.expectCounter("baton_client_topology_source_failures_total", [("source", "etcd")]))?
            .totalValue ?? 0
        measure(
            "etcd-outage",
            [
                "rest_after_outage_start": seconds(onREST - outageStarted),
                "promotion_after_kill": seconds(promoted - killed),
                "writes_resumed_after_promotion": seconds(resumeAfterPromotion),
                "degraded_after_agents_silent": seconds(degraded - agentsSilent),
                "writes_while_degraded_1s": "\(writesWhileDegraded)",
                "etcd_again_after_resume": seconds(back - resumedAll),
                "max_topology_age_metric": "\(ages.max() ?? -1)",
                "etcd_failures_metric": "\(etcdFailures)", "reads_ok": "\(readsOK)",
                "write_errors": "\(ledger.errors.withLock { $0.count })",
            ])

        #expect(newLeader != oldLeader)
        #expect(
            resumeAfterPromotion <= degradedAfter + .seconds(2),
            "writes resumed \(resumeAfterPromotion) after the promotion; at most degraded_after + 2 s")
        #expect(readsOK > readsBeforeFailover, "reads stopped during the outage")
        #expect(degradedStatus.age >= degradedAfter, "topology age \(degradedStatus.age) while degraded")
        #expect(degraded - agentsSilent <= degradedAfter + .seconds(3))
        #expect(writesWhileDegraded > 0, "no write succeeded on the degraded (multi-host) path")
        #expect(ledger.otherErrors.withLock { $0 }.isEmpty, "\(ledger.otherErrors.withLock { $0 })")
        // The metrics show the outage: the source in use went etcd → rest → degraded → etcd, the
        // topology's age passed degraded_after, and etcd's failed reads were counted.
        #expect(sourceGauge("rest").contains(1) && sourceGauge("degraded").contains(1))
        #expect(sourceGauge("etcd").last == 1 && sourceGauge("rest").last == 0 && sourceGauge("degraded").last == 0)
        #expect((ages.max() ?? 0) >= degradedAfter.inSecondsForTest, "ages recorded: \(ages.suffix(20))")
        #expect(etcdFailures > 0)
    }
}

extension Duration {
    var inSecondsForTest: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
