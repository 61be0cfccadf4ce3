import BatonCore
import BatonEtcd
import BatonPostgres
import BatonTestCluster
import Foundation
import Testing

/// Issue #4's "must show", on real processes: three `baton agent`s over a 3-member etcd, each
/// with its own PostgreSQL 15. Each test starts its own cluster (temp dir, free ports) and tears
/// it down by PID even when it fails. Timing: ttl 4, loop_wait 1, retry_timeout 1.5.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct AgentFailoverTests {
    /// Prints one measurement in a greppable form.
    static func measure(_ test: String, _ values: KeyValuePairs<String, String>) {
        print("MEASURE \(test): " + values.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
    }

    static func replicas(_ cluster: AgentCluster, except leader: String) -> [String] {
        cluster.nodes.map(\.name).filter { $0 != leader }.sorted()
    }

    /// Inserts on `name`, retrying for a while (a fresh primary may still be finishing promotion).
    static func insertEventually(
        _ cluster: AgentCluster, _ ids: [Int], on name: String, timeout: Duration = .seconds(15)
    ) async throws {
        let deadline = ContinuousClock.now + timeout
        var lastError: (any Error)?
        while ContinuousClock.now < deadline {
            do {
                try await cluster.insert(ids, on: name)
                return
            } catch {
                lastError = error
                try await Task.sleep(for: .milliseconds(150))
            }
        }
        throw ClusterFailure(
            description:
                "could not write on \(name) within \(timeout): \(lastError.map { "\($0)" } ?? "-")\n\(await cluster.report())"
        )
    }

    // MARK: 1

    @Test("bootstrap from nothing: one primary, two streaming replicas, Patroni-shaped member keys")
    func bootstrap() async throws {
        let started = ContinuousClock.now
        let cluster = try AgentCluster.start("bootstrap")
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy()
        Self.measure("bootstrap", ["healthy_after": seconds(ContinuousClock.now - started), "leader": leader])

        let prefix = "/service/\(AgentCluster.scope)/"
        let leaderValue = try await cluster.etcdClient.get(prefix + "leader").map {
            String(decoding: $0.value, as: UTF8.self)
        }
        #expect(leaderValue == leader)
        let initialize = try await cluster.etcdClient.get(prefix + "initialize").map {
            String(decoding: $0.value, as: UTF8.self)
        }
        #expect(
            initialize.map { !$0.isEmpty && $0.allSatisfy(\.isNumber) } == true,
            "initialize key: \(initialize ?? "nil")")
        let configValue = try await cluster.etcdClient.get(prefix + "config").map { Data($0.value) }
        let config = try configValue.flatMap { try JSONSerialization.jsonObject(with: $0) as? [String: Any] }
        #expect((config?["ttl"] as? NSNumber)?.doubleValue == 4, "config: \(String(describing: config))")
        #expect((config?["loop_wait"] as? NSNumber)?.doubleValue == 1)

        for node in cluster.nodes {
            guard let raw = try await cluster.etcdClient.get(prefix + "members/\(node.name)") else {
                await cluster.fail("no member key for \(node.name)")
                continue
            }
            let text = String(decoding: raw.value, as: UTF8.self)
            guard let json = try JSONSerialization.jsonObject(with: Data(raw.value)) as? [String: Any] else {
                await cluster.fail("member key of \(node.name) is not a JSON object: \(text)")
                continue
            }
            #expect(raw.lease != 0, "member key of \(node.name) must hang on the agent's lease")
            #expect(json["conn_url"] as? String == "postgres://127.0.0.1:\(node.pgPort)/postgres", "\(text)")
            #expect(json["api_url"] as? String == "http://127.0.0.1:\(node.apiPort)/patroni", "\(text)")
            #expect(json["state"] as? String == "running", "\(text)")
            #expect(json["version"] is String, "\(text)")
            #expect((json["xlog_location"] as? NSNumber).map { $0.int64Value > 0 } == true, "\(text)")
            #expect((json["timeline"] as? NSNumber)?.intValue == 1, "\(text)")
            let allowed: Set<String> = [
                "conn_url", "api_url", "state", "role", "version", "xlog_location", "receive_lsn", "replay_lsn",
                "replication_state", "timeline", "tags", "pending_restart",
            ]
            #expect(Set(json.keys).isSubset(of: allowed), "unexpected keys in \(text)")
            if node.name == leader {
                #expect(json["role"] as? String == "primary", "\(text)")
            } else {
                #expect(json["role"] as? String == "replica", "\(text)")
                #expect(json["replication_state"] as? String == "streaming", "\(text)")
                #expect(json["receive_lsn"] is NSNumber, "\(text)")
                #expect(json["replay_lsn"] is NSNumber, "\(text)")
            }
        }

        try await cluster.createTable(on: leader)
        try await cluster.insert(Array(1...50), on: leader)
        for replica in Self.replicas(cluster, except: leader) {
            try await cluster.waitForIDs(Set(1...50), on: replica, timeout: .seconds(10))
        }
    }

    // MARK: 2

    @Test("kill -9 of the primary node: a replica takes over, writes resume, the old node rejoins")
    func killPrimaryNode() async throws {
        let cluster = try AgentCluster.start("killnode")
        defer { cluster.stop() }
        let old = try await cluster.waitHealthy()
        try await cluster.createTable(on: old)
        try await cluster.insert(Array(1...100), on: old)
        for replica in Self.replicas(cluster, except: old) {
            try await cluster.waitForIDs(Set(1...100), on: replica, timeout: .seconds(10))
        }
        let oldTimeline = try await cluster.view().member(named: old)?.timeline ?? 0

        let fault = ContinuousClock.now
        try cluster.killNode(old)
        let view = try await cluster.waitFor("a new primary", timeout: .seconds(cluster.options.ttl + 12)) {
            cluster.primary(in: $0).map { $0 != old } == true
        }
        let promotion = ContinuousClock.now - fault
        let new = cluster.primary(in: view) ?? ""
        try await Self.insertEventually(cluster, Array(101...200), on: new)
        let writable = ContinuousClock.now - fault
        Self.measure("kill-node", ["promotion": seconds(promotion), "writable": seconds(writable), "new": new])
        #expect(
            promotion < .seconds(cluster.options.ttl + 5),
            "promotion took \(seconds(promotion)) (ttl \(cluster.options.ttl))")

        // The rejoin goes through pg_rewind of a crashed primary. This test found that pg_rewind
        // answered "no rewind required" while the freshly promoted PG15 primary still had the old
        // timeline in pg_control (before its first checkpoint); the agent now checkpoints the
        // source first.
        let rejoinStart = ContinuousClock.now
        try cluster.startAgent(old)
        try await cluster.waitFor("\(old) back as a streaming replica on a later timeline", timeout: .seconds(30)) {
            cluster.isHealthy($0) && cluster.primary(in: $0) == new
                && ($0.member(named: old)?.timeline ?? 0) > oldTimeline
        }
        Self.measure("kill-node", ["rejoin": seconds(ContinuousClock.now - rejoinStart)])
        try await cluster.waitForIDs(Set(1...200), on: old, timeout: .seconds(15))
        if !cluster.log(old).contains("rewind") {
            await cluster.fail("the old primary should have gone through the pg_rewind path")
        }
    }

    // MARK: 3

    @Test("kill -9 of the primary's postmaster only: writes resume")
    func killPrimaryPostmaster() async throws {
        let cluster = try AgentCluster.start("killpg")
        defer { cluster.stop() }
        let old = try await cluster.waitHealthy()
        try await cluster.createTable(on: old)
        let writer = Writer(cluster)
        writer.start()
        guard await writer.waitForAcks(20, after: .now, timeout: .seconds(10)) else {
            await writer.stop()
            await cluster.fail("the writer made no progress before the fault: \(writer.lastFailures)")
            return
        }
        let fault = ContinuousClock.now
        let killed = try cluster.killPostmaster(old)
        let resumed = await writer.waitForAcks(20, after: fault, timeout: .seconds(45))
        await writer.stop()
        guard resumed else {
            await cluster.fail("writes did not resume within 45 s: \(writer.lastFailures)")
            return
        }
        let firstAfter = writer.acks(after: fault).first
        let gap = writer.longestGap()
        let final = try await cluster.leader() ?? ""
        Self.measure(
            "kill-postmaster",
            [
                "unavailability": gap.map { seconds($0.gap) } ?? "-",
                "first_write_after_fault": firstAfter.map { seconds($0.at - fault) } ?? "-",
                "recovery": final == old ? "restart-in-place" : "failover-to-\(final)",
                "acks": "\(writer.acknowledged.count)", "failed_attempts": "\(writer.failureCount)",
            ])
        if final == old {
            #expect(cluster.postmasterPID(old) != killed, "writes resumed, yet not on a new postmaster")
        }
        let missing = writer.acknowledgedIDs.subtracting(try await cluster.ids(on: final))
        #expect(missing.isEmpty, "acknowledged ids missing on \(final): \(missing.sorted().prefix(20))")
        try await cluster.waitHealthy(timeout: .seconds(60))
    }

    // MARK: 4

    @Test("a replica lagging beyond maximum_lag_on_failover is never promoted, and says why")
    func laggingReplicaNotPromoted() async throws {
        var options = ClusterOptions()
        options.maximumLagOnFailover = 65536
        let cluster = try AgentCluster.start("lag", options)
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy()
        let replicas = Self.replicas(cluster, except: leader)
        guard replicas.count == 2 else { throw ClusterFailure(description: "expected two replicas") }
        let lagging = replicas[0]
        let other = replicas[1]
        try await cluster.createTable(on: leader)

        // Freeze the lagging replica's WAL receiver: what it has received (and so its published
        // xlog_location, max(receive, replay)) stops advancing. Pausing replay alone would not do:
        // received WAL still counts as position for a failover.
        let receiver = try await cluster.execute(lagging, "SELECT pid FROM pg_stat_wal_receiver")
        guard let pidValue = try receiver.rows.first?.int("pid") else {
            await cluster.fail("\(lagging) has no WAL receiver")
            return
        }
        let receiverPID = pid_t(pidValue)
        cluster.suspend(receiverPID)
        try await cluster.execute(leader, "INSERT INTO baton_it (id) SELECT g FROM generate_series(1, 20000) g")
        // The premise, from the processes rather than the member key: the lagging replica's own
        // received and replayed positions (what its agent compares when it races), against the
        // optime the leader published in the status key (what it compares them with). Before, the
        // test compared the replica's *published* position, which is refreshed lazily: after the
        // XLOG_SWITCH that ends a pg_basebackup it still showed the segment start, 16 MB behind,
        // while the replica had in fact everything up to the optime the leader had published
        // (the insert was not in the status key yet). The replica then raced "with lag 0" — as
        // it should, by what it could know — and the test reported a lagging replica promoted.
        func livePosition() async throws -> (lsn: LSN, text: String) {
            let own = try await cluster.execute(
                lagging, "SELECT pg_last_wal_receive_lsn() AS r, pg_last_wal_replay_lsn() AS p")
            let received = try own.rows.first?.lsn("r") ?? .zero
            let replayed = try own.rows.first?.lsn("p") ?? .zero
            return (max(received, replayed), "\(lagging) received \(received) replayed \(replayed)")
        }
        let frozen = try await livePosition()
        try await cluster.waitFor(
            "the leader's published optime to run > maximum_lag_on_failover ahead of \(lagging)'s own position",
            timeout: .seconds(15)
        ) { view in
            guard let optime = view.status?.optime else { return false }
            return optime.bytesAhead(of: frozen.lsn) > 4 * 65536
        }
        let before = try await cluster.view()
        let lastLive = try await livePosition()
        let optime = before.status?.optime ?? .zero
        guard optime.bytesAhead(of: lastLive.lsn) > 4 * 65536 else {
            await cluster.fail(
                "set-up: \(lagging) is not lagging although its WAL receiver is stopped: optime \(optime), \(lastLive.text)"
            )
            return
        }
        Self.measure("lag", ["lag_bytes": "\(optime.bytesAhead(of: lastLive.lsn))", "limit": "65536"])

        // Only the lagging replica is left.
        try cluster.killNode(other)
        let fault = ContinuousClock.now
        try cluster.killNode(leader)
        let watch = Duration.seconds(cluster.options.ttl + 8)
        while ContinuousClock.now - fault < watch {
            let view = try? await cluster.view()
            if let view, let holder = view.leader?.member, holder != leader {
                await cluster.fail(
                    """
                    \(holder) took the leader key at \(seconds(ContinuousClock.now - fault)) after the fault \
                    (just before the fault: optime \(optime), \(lastLive.text))
                    """)
                return
            }
            if let view, view.member(named: lagging)?.role == .primary {
                await cluster.fail(
                    "\(lagging) runs as primary at \(seconds(ContinuousClock.now - fault)) after the fault")
                return
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        let log = cluster.log(lagging)
        if !log.contains("exceeds maximum_lag_on_failover") {
            await cluster.fail("the lagging member's log should say why it does not race")
        }
        let final = try await cluster.view()
        #expect(final.leader == nil, "leader key: \(final.leader?.member ?? "-")")
        cluster.resume(receiverPID)
    }

    // MARK: 5

    @Test("switchover to a named candidate loses no acknowledged write")
    func switchover() async throws {
        let cluster = try AgentCluster.start("switchover")
        defer { cluster.stop() }
        let old = try await cluster.waitHealthy()
        guard let candidate = Self.replicas(cluster, except: old).last else { return }
        try await cluster.createTable(on: old)
        let writer = Writer(cluster)
        writer.start()
        guard await writer.waitForAcks(30, after: .now, timeout: .seconds(10)) else {
            await writer.stop()
            await cluster.fail("the writer made no progress: \(writer.lastFailures)")
            return
        }
        // The leader judges the candidate's lag from its member key, which a replica that just
        // started may not have refreshed yet (a request then is rejected, as Patroni's REST API
        // would reject an unhealthy candidate): wait until the published position is current.
        try await cluster.waitFor("\(candidate)'s published position to be current", timeout: .seconds(15)) {
            guard let optime = $0.status?.optime, let position = $0.member(named: candidate)?.xlogLocation else {
                return false
            }
            return optime.bytesAhead(of: position) < 65536
        }
        let requested = ContinuousClock.now
        let written = try await cluster.store.writeFailover(
            FailoverRequest(leader: old, member: candidate), expected: nil)
        #expect(written)
        do {
            try await cluster.waitFor("\(candidate) to lead", timeout: .seconds(30)) {
                cluster.primary(in: $0) == candidate
            }
        } catch {
            await writer.stop()
            throw error
        }
        let promoted = ContinuousClock.now - requested
        let resumed = await writer.waitForAcks(30, after: .now, timeout: .seconds(15))
        await writer.stop()
        #expect(resumed, "writes did not resume on \(candidate): \(writer.lastFailures)")
        let present = try await cluster.ids(on: candidate)
        let acknowledged = writer.acknowledgedIDs
        let missing = acknowledged.subtracting(present)
        Self.measure(
            "switchover",
            [
                "promotion": seconds(promoted), "unavailability": writer.longestGap().map { seconds($0.gap) } ?? "-",
                "acks": "\(acknowledged.count)", "lost": "\(missing.count)",
                "failed_attempts": "\(writer.failureCount)",
            ])
        if !missing.isEmpty {
            await cluster.fail("\(missing.count) acknowledged ids lost: \(missing.sorted().prefix(20))")
        }
        try await cluster.waitHealthy(timeout: .seconds(45))
        #expect(try await cluster.view().failover == nil, "the failover key should be consumed")
    }

    // MARK: 6

    @Test("pause stops automatic failover; resume lets a replica take over")
    func pauseStopsFailover() async throws {
        let cluster = try AgentCluster.start("pause")
        defer { cluster.stop() }
        let old = try await cluster.waitHealthy()
        let before = try await cluster.view()
        guard let config = before.config else { throw ClusterFailure(description: "no config key") }
        #expect(
            try await cluster.store.writeConfig(
                config.value.merging(patch: .object(["pause": .bool(true)])), expected: config.modRevision))
        try await Task.sleep(for: .seconds(cluster.options.loopWait * 2 + 0.5))

        try cluster.killNode(old)
        let fault = ContinuousClock.now
        let watch = Duration.seconds(cluster.options.ttl + 6)
        while ContinuousClock.now - fault < watch {
            if let view = try? await cluster.view() {
                if let holder = view.leader?.member, holder != old {
                    await cluster.fail(
                        "paused, yet \(holder) took the leader key \(seconds(ContinuousClock.now - fault)) after the fault"
                    )
                    return
                }
                if let promoted = view.members.first(where: { $0.name != old && $0.role == .primary }) {
                    await cluster.fail("paused, yet \(promoted.name) runs as primary")
                    return
                }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        let paused = try await cluster.view()
        #expect(paused.leader == nil, "the dead leader's key should have expired")

        guard let current = paused.config else { throw ClusterFailure(description: "no config key") }
        let resumedAt = ContinuousClock.now
        #expect(
            try await cluster.store.writeConfig(
                current.value.merging(patch: .object(["pause": .bool(false)])), expected: current.modRevision))
        let view = try await cluster.waitFor("a replica to take over after resume", timeout: .seconds(20)) {
            cluster.primary(in: $0).map { $0 != old } == true
        }
        let new = cluster.primary(in: view) ?? ""
        Self.measure("pause", ["takeover_after_resume": seconds(ContinuousClock.now - resumedAt), "new": new])
        try await cluster.createTable(on: new)
        try await Self.insertEventually(cluster, [1, 2, 3], on: new)
    }

    // MARK: 7

    @Test("a frozen primary agent (SIGSTOP > ttl) is fenced before another node promotes")
    func frozenAgentFencedBeforePromotion() async throws {
        let cluster = try AgentCluster.start("sigstop")
        defer { cluster.stop() }
        let old = try await cluster.waitHealthy()
        let oldTimeline = try await cluster.view().member(named: old)?.timeline ?? 0
        try await cluster.createTable(on: old)
        let probe = NodeProbe(cluster, node: old)
        probe.start(firstID: 1_000)
        try await Task.sleep(for: .milliseconds(500))
        if probe.failedAt != nil {
            await probe.stop()
            await cluster.fail("the probe could not write on \(old) before the fault: \(probe.failure)")
            return
        }

        try cluster.suspendAgent(old)
        let fault = ContinuousClock.now
        let promotedView: ClusterView
        do {
            promotedView = try await cluster.waitFor("a new primary", timeout: .seconds(cluster.options.ttl + 15)) {
                cluster.primary(in: $0).map { $0 != old } == true
            }
        } catch {
            await probe.stop()
            try cluster.resumeAgent(old)
            throw error
        }
        let promotion = ContinuousClock.now - fault
        // Keep the agent frozen past ttl, and let the probe run a little longer after the promotion.
        let hold = Duration.seconds(cluster.options.ttl + 1)
        if ContinuousClock.now - fault < hold { try await Task.sleep(for: hold - (ContinuousClock.now - fault)) }
        try await Task.sleep(for: .milliseconds(500))
        await probe.stop()
        try cluster.resumeAgent(old)

        let fence = probe.failedAt.map { $0 - fault }
        let new = cluster.primary(in: promotedView) ?? ""
        Self.measure(
            "sigstop",
            [
                "fence": fence.map(seconds) ?? "never", "promotion": seconds(promotion), "new": new,
                "probe_error": "\"\(probe.failure.prefix(80))\"",
            ])
        if let fence {
            #expect(fence < promotion, "fenced at \(seconds(fence)), promoted at \(seconds(promotion))")
        } else {
            await cluster.fail("the old primary \(old) kept accepting writes after \(new) was promoted")
        }
        let late = probe.writesAfterFailure.map { seconds($0 - fault) }
        #expect(late.isEmpty, "\(old) accepted writes again after being fenced, at \(late)")

        // The rejoin goes through pg_rewind of a fenced (SIGQUIT) primary.
        let resumedAt = ContinuousClock.now
        try await cluster.waitFor("\(old) back as a streaming replica", timeout: .seconds(30)) {
            cluster.isHealthy($0) && cluster.primary(in: $0) == new
                && ($0.member(named: old)?.timeline ?? 0) > oldTimeline
        }
        Self.measure("sigstop", ["rejoin_after_sigcont": seconds(ContinuousClock.now - resumedAt)])
    }

    // MARK: 8

    @Test("synchronous mode: no acknowledged write is lost when the primary node dies")
    func synchronousModeLosesNothing() async throws {
        var options = ClusterOptions()
        options.synchronousMode = true
        let cluster = try AgentCluster.start("sync", options)
        defer { cluster.stop() }
        let old = try await cluster.waitHealthy()
        let synced = try await cluster.waitFor("a synchronous standby in the sync key", timeout: .seconds(30)) {
            $0.sync.map { $0.value.leader == old && !$0.value.syncStandbys.isEmpty } == true
        }
        try await cluster.createTable(on: old)
        // A long statement timeout: cancelling a commit that waits for the standby would report
        // success for a write that was never replicated.
        let writer = Writer(cluster, statementTimeout: .seconds(30))
        writer.start()
        guard await writer.waitForAcks(50, after: .now, timeout: .seconds(15)) else {
            await writer.stop()
            await cluster.fail("the writer made no progress: \(writer.lastFailures)")
            return
        }
        let fault = ContinuousClock.now
        try cluster.killNode(old)
        let view: ClusterView
        do {
            view = try await cluster.waitFor("a new primary", timeout: .seconds(cluster.options.ttl + 15)) {
                cluster.primary(in: $0).map { $0 != old } == true
            }
        } catch {
            await writer.stop()
            throw error
        }
        let promotion = ContinuousClock.now - fault
        let new = cluster.primary(in: view) ?? ""
        let resumed = await writer.waitForAcks(20, after: .now, timeout: .seconds(20))
        await writer.stop()
        let acknowledged = writer.acknowledgedIDs
        let present = try await cluster.ids(on: new)
        let missing = acknowledged.subtracting(present)
        Self.measure(
            "sync",
            [
                "promotion": seconds(promotion), "unavailability": writer.longestGap().map { seconds($0.gap) } ?? "-",
                "acks": "\(acknowledged.count)", "lost": "\(missing.count)", "new": new,
                "sync_standbys_before": "\(synced.sync?.value.syncStandbys ?? [])",
            ])
        #expect(resumed, "writes did not resume on \(new): \(writer.lastFailures)")
        #expect(
            synced.sync?.value.syncStandbys.contains(new) == true, "the new primary was not the synchronous standby")
        if !missing.isEmpty {
            await cluster.fail("\(missing.count) acknowledged ids lost: \(missing.sorted().prefix(20))")
        }
    }

    // MARK: 9

    @Test("a bootstrap slower than ttl still ends with a leader (synchronous mode)")
    func slowBootstrap() async throws {
        // Found by synchronousModeLosesNothing under load: initdb took 3.2 s, longer than the
        // lease (ttl 4 − 1 s margin) of the bootstrapping member, which then fenced its fresh
        // primary ("running as primary without a valid lease"), restarted it read-only and, not in
        // the (absent) sync key, never raced: no leader, ever. Made deterministic with an initdb
        // that sleeps 6 s.
        var options = ClusterOptions()
        options.synchronousMode = true
        options.initdbDelay = 6
        let started = ContinuousClock.now
        let cluster = try AgentCluster.start("slowboot", options)
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy(timeout: .seconds(45))
        Self.measure("slow-bootstrap", ["healthy_after": seconds(ContinuousClock.now - started), "leader": leader])
        try await cluster.createTable(on: leader)
        try await cluster.insert([1, 2, 3], on: leader)
    }
}
