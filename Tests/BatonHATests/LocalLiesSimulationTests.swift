import BatonCore
import BatonHA
import BatonTesting
import Logging
import Testing

/// The simulated cluster answering what a real node can answer: "unknown", damaged, a changed
/// ttl. Unknown is not false: each leads to the safe action, with the invariants (never two
/// writable primaries, never a promotion beyond the lag limit) checked after every tick.
@Suite struct LocalLiesSimulationTests {
    /// A leader whose status query fails (a changed password, no connection slots) keeps the key
    /// for up to ttl, never takes the promote path, then stops its postgres and lets a replica
    /// take over. Before: it decided "promote" on every cycle and kept the key for ever.
    @Test func aBlindLeaderStepsDownAfterTtlAndNeverPromotes() async throws {
        let cluster = try await SimulatedClusterTests.bootstrapped()
        let old = try #require(cluster.writablePrimaries.first)
        cluster.blind(old, for: .seconds(120))
        var waited = 0.0
        while cluster.writablePrimaries == [old] || cluster.writablePrimaries.isEmpty, waited < 30 {
            await cluster.run(seconds: 0.1)
            waited += 0.1
        }
        let new = try #require(cluster.writablePrimaries.first, "no failover: \(cluster.events.suffix(30))")
        #expect(new != old)
        // ttl of grace, one loop to notice, the replica's race.
        #expect(waited <= 2 * cluster.options.ttl + 2, "took \(waited) s")
        #expect(cluster.postgres(named: old)?.snapshot.promotions.isEmpty == true)
        await cluster.run(seconds: 10)
        #expect(cluster.writablePrimaries == [new])
        #expect(cluster.violations.isEmpty, "\(cluster.violations)\n\(cluster.events.suffix(30))")
    }

    /// A replica that cannot see its own postgres does not race when the leader dies; the other one
    /// wins. Before: its position read as zero like an empty cluster's, and with no status key it
    /// could race.
    @Test func aBlindReplicaStaysOutOfTheRace() async throws {
        let cluster = try await SimulatedClusterTests.bootstrapped()
        let old = try #require(cluster.writablePrimaries.first)
        let blind = try #require(cluster.streamingReplicas().sorted().first)
        cluster.blind(blind, for: .seconds(120))
        await cluster.run(seconds: 2)
        cluster.crashWholeNode(old)
        await cluster.run(seconds: cluster.options.ttl + 6)
        let new = try #require(cluster.writablePrimaries.first, "no failover: \(cluster.events.suffix(30))")
        #expect(new != blind && new != old)
        #expect(cluster.postgres(named: blind)?.snapshot.promotions.isEmpty == true)
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
    }

    /// PG_VERSION gone on the leader: it stops postgres and releases the key; a replica leads; the
    /// damaged node is never cloned into (its data stays), never bootstraps, never races.
    @Test func aLeaderWithADamagedDataDirectoryHandsOverAndKeepsItsData() async throws {
        let cluster = try await SimulatedClusterTests.bootstrapped()
        let old = try #require(cluster.writablePrimaries.first)
        let node = try #require(cluster.postgres(named: old))
        node.mutate { $0.dataDirectoryDamaged = true }
        await cluster.run(seconds: cluster.options.ttl + 2)
        let new = try #require(cluster.writablePrimaries.first, "no failover: \(cluster.events.suffix(30))")
        #expect(new != old)
        await cluster.run(seconds: 20)
        let state = node.snapshot
        #expect(state.hasData && state.clones == 0 && !state.running, "\(state)")
        #expect(await cluster.leaderKeyHolder() == new)
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
        // Repaired by hand: the node rejoins as a replica.
        node.mutate { $0.dataDirectoryDamaged = false }
        await cluster.run(seconds: 15)
        #expect(cluster.streamingReplicas().contains(old), "\(cluster.events.suffix(20))")
    }

    /// `ttl` changed in the config key: within one loop every member's key (and the leader key)
    /// hangs on a lease granted with the new ttl, and a whole-node crash then costs the new ttl.
    /// Before: the leases kept the ttl they were granted at start.
    @Test func aTtlChangeReGrantsEveryLeaseWithinOneLoop() async throws {
        var options = SimulatedCluster.Options()
        options.ttl = 10
        let cluster = try await SimulatedClusterTests.bootstrapped(options)
        let old = try #require(cluster.writablePrimaries.first)
        let store = try #require(cluster.store(named: old))
        let view = try await store.loadCluster()
        var config = view.dynamicConfig
        config.document["ttl"] = .number(4)
        config.document["retry_timeout"] = .number(1)
        #expect(try await store.writeConfig(config, expected: view.config?.modRevision))
        await cluster.run(seconds: 2 * options.loopWait + 0.5)
        for name in ["node1", "node2", "node3"] {
            #expect(cluster.store(named: name)?.requestTimeout == .seconds(1), "\(name)'s store requests")
        }
        #expect(cluster.backend.leaseTTL(holding: .leader) == .seconds(4))
        for name in ["node1", "node2", "node3"] {
            #expect(cluster.backend.leaseTTL(holding: .member(name)) == .seconds(4), "\(name)")
        }
        #expect(await cluster.leaderKeyHolder() == old, "the ttl change must not cost the leader its key")
        cluster.crashWholeNode(old)
        var waited = 0.0
        while cluster.writablePrimaries.isEmpty, waited < 20 {
            await cluster.run(seconds: 0.1)
            waited += 0.1
        }
        #expect(!cluster.writablePrimaries.isEmpty)
        #expect(waited <= 4 + 1.5, "failover took \(waited) s after the ttl became 4 s")
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
    }
}

/// `watchdog.mode: required` is enforced before a promotion: a watchdog that cannot be armed
/// leaves the member a standby and the leader key free. Before, the watchdog was first armed
/// after the promotion, and a failure was only logged.
@Suite struct WatchdogRequiredTests {
    struct BrokenWatchdog: Watchdog {
        func keepAlive(timeout: Duration) async throws { throw SimulationError("watchdog device gone") }
        func disarm() async throws {}
    }

    @Test func aRequiredWatchdogThatCannotBeArmedPreventsThePromotion() async throws {
        let clock = ManualClock()
        let backend = InMemoryStoreBackend(clock: clock)
        let store = backend.makeStore()
        #expect(try await store.claimInitialize(systemID: "7000"))
        let node = SimulatedPostgres(name: "node2") { _ in nil }
        node.mutate {
            $0.hasData = true
            $0.running = true
            $0.standby = true
            $0.lsn = 0x100_0000
            $0.systemID = "7000"
        }
        let loop = HALoop(
            configuration: HAConfiguration(
                name: "node2", connURL: "postgres://10.0.0.2:5432/postgres", apiURL: "http://10.0.0.2:8008/patroni",
                initialDynamicConfig: DynamicConfig([
                    "ttl": .number(10), "loop_wait": .number(1), "retry_timeout": .number(3),
                ]), watchdogRequired: true),
            store: store, node: node, clock: clock, peers: RejoinRegistrationTests.NoPeers(),
            watchdog: BrokenWatchdog(), wallClock: { 1_790_000_000 },
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        for _ in 0..<3 {
            await loop.runCycle()
            clock.advance(by: .seconds(1))
        }
        #expect(node.snapshot.standby, "promoted without the required watchdog")
        #expect(node.snapshot.promotions.isEmpty)
        #expect(try await store.loadCluster().leader == nil)
    }
}

/// `failsafe_mode` end to end: the leader writes the `failsafe` key, and while the store is gone
/// for everyone, a primary that every member still confirms keeps serving: the fence task and the
/// guard are re-armed by each confirmation. Before, the key was never written and the fence
/// stopped the confirmed primary at its lease deadline anyway.
@Suite struct FailsafeModeTests {
    /// A bootstrapped cluster with `failsafe_mode` switched on, and its primary.
    static func clusterInFailsafeMode() async throws -> (SimulatedCluster, String) {
        let cluster = try await SimulatedClusterTests.bootstrapped()
        let old = try #require(cluster.writablePrimaries.first)
        let store = try #require(cluster.store(named: old))
        let view = try await store.loadCluster()
        var config = view.dynamicConfig
        config.document["failsafe_mode"] = .bool(true)
        #expect(try await store.writeConfig(config, expected: view.config?.modRevision))
        await cluster.run(seconds: 3)
        return (cluster, old)
    }

    @Test func aConfirmedPrimarySurvivesAStoreOutageAndKeepsTheKeyAfter() async throws {
        let (cluster, old) = try await Self.clusterInFailsafeMode()
        let store = try #require(cluster.store(named: old))
        let failsafe = try await store.loadCluster().failsafe
        #expect(
            failsafe?.keys.sorted() == ["node1", "node2", "node3"], "failsafe key: \(String(describing: failsafe))")

        for name in ["node1", "node2", "node3"] { cluster.store(named: name)?.partitioned = true }
        var alwaysServed = true
        for _ in 0..<Int(cluster.options.ttl * 3 * 10) {
            await cluster.run(seconds: 0.1)
            if cluster.writablePrimaries != [old] { alwaysServed = false }
        }
        #expect(alwaysServed, "the confirmed primary was fenced during the outage: \(cluster.events.suffix(20))")
        #expect(cluster.backstopFirings == 0)
        cluster.healAll()
        await cluster.run(seconds: 10)
        #expect(cluster.writablePrimaries == [old])
        #expect(await cluster.leaderKeyHolder() == old)
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
    }

    /// The same outage with one member unreachable over REST too: no confirmation, so the primary is
    /// fenced at its deadline as without failsafe mode.
    @Test func withoutEveryConfirmationThePrimaryIsFencedAtItsDeadline() async throws {
        let (cluster, _) = try await Self.clusterInFailsafeMode()
        let silent = try #require(cluster.streamingReplicas().first)
        cluster.freeze(silent, seconds: cluster.options.ttl * 4)
        for name in ["node1", "node2", "node3"] { cluster.store(named: name)?.partitioned = true }
        await cluster.run(seconds: cluster.options.ttl + 1)
        #expect(cluster.writablePrimaries.isEmpty, "a primary not confirmed by every member kept serving")
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
    }

    /// A hostile or mistaken `config` key (written with etcdctl, patronictl or a newer tool): ttl
    /// 1e300 trapped in every agent on every cycle. Now it is refused with the key named, the last
    /// valid configuration stays in force, and the cluster goes on as it was.
    @Test func anInvalidConfigKeyIsIgnoredInFavourOfTheLastValidOne() async throws {
        let cluster = try await SimulatedClusterTests.bootstrapped()
        let primary = try #require(cluster.writablePrimaries.first)
        let promotions = cluster.promotionCount
        let writer = cluster.backend.makeStore()
        let current = try #require(try await writer.loadCluster().config)
        var hostile = current.value
        hostile.document["ttl"] = .number(1e300)
        hostile.document["loop_wait"] = .string("nan")
        #expect(try await writer.writeConfig(hostile, expected: current.modRevision))
        await cluster.run(seconds: 10)
        #expect(cluster.writablePrimaries == [primary])
        #expect(cluster.promotionCount == promotions)
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
        let status = try #require(await cluster.loop(named: primary)?.snapshot())
        #expect(status.config.ttl == .seconds(4), "the last valid ttl stays in force")
        #expect(status.configProblems.contains { $0.hasPrefix("ttl:") }, "\(status.configProblems)")
        #expect(status.configProblems.contains { $0.hasPrefix("loop_wait:") }, "\(status.configProblems)")
        // A valid key is taken again at once.
        var fixed = current.value
        fixed.document["loop_wait"] = .number(0.5)
        let revision = try #require(try await writer.loadCluster().config?.modRevision)
        #expect(try await writer.writeConfig(fixed, expected: revision))
        await cluster.run(seconds: 2)
        let after = try #require(await cluster.loop(named: primary)?.snapshot())
        #expect(after.config.loopWait == .milliseconds(500))
        #expect(after.configProblems.isEmpty)
    }
}
