import BatonCore
import BatonTesting
import Foundation
import Logging
import Synchronization
import Testing

@testable import BatonHA

/// The lease keeper renews beside the cycle: a leader whose store answers every call slowly (but
/// within retry_timeout) keeps its lease, and a leader whose cycle is stuck loses it. These run
/// the real `HALoop.run()` on the real clock (seconds, not minutes): latency is what they are about.
@Suite(.serialized) struct LeaseKeeperTests {
    struct NoPeers: PeerProbe {
        func status(of members: [Member]) async -> [PeerStatus] {
            members.map { PeerStatus(name: $0.name, reachable: false) }
        }
        func confirmFailsafe(leader: String, connURL: String, apiURL: String, members: [String: String]) async -> Bool {
            false
        }
    }

    struct Setup {
        let backend: InMemoryStoreBackend
        let store: InMemoryClusterStore
        let node: SimulatedPostgres
        let loop: HALoop
        let task: Task<Void, Never>
    }

    /// node1 alone, leading a cluster it bootstrapped with a store that answers at once.
    static func leader(ttl: Double, loopWait: Double, retryTimeout: Double, stepAllowance: Duration = .seconds(5))
        async throws -> Setup
    {
        let clock = SystemMonotonicClock()
        let backend = InMemoryStoreBackend(clock: clock)
        let store = backend.makeStore()
        let node = SimulatedPostgres(name: "node1") { _ in nil }
        var configuration = HAConfiguration(
            name: "node1", connURL: "postgres://10.0.0.1:5432/postgres", apiURL: "http://10.0.0.1:8008/patroni",
            initialDynamicConfig: DynamicConfig([
                "ttl": .number(ttl), "loop_wait": .number(loopWait), "retry_timeout": .number(retryTimeout),
            ]))
        configuration.stepAllowance = stepAllowance
        let logger: Logger = {
            guard ProcessInfo.processInfo.environment["BATON_SIM_LOG"] != nil else {
                return Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
            }
            var logger = Logger(label: "lease-keeper", factory: { StreamLogHandler.standardError(label: $0) })
            logger.logLevel = .debug
            return logger
        }()
        let loop = HALoop(
            configuration: configuration, store: store, node: node, clock: clock, peers: NoPeers(),
            wallClock: { Date().timeIntervalSince1970 }, logger: logger)
        let task = Task { await loop.run() }
        let observer = backend.makeStore()
        for _ in 0..<150 {
            if node.isWritablePrimary, try await observer.loadCluster().leader?.member == "node1" { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        try #require(node.isWritablePrimary, "node1 did not bootstrap within 15 s")
        return Setup(backend: backend, store: store, node: node, loop: loop, task: task)
    }

    /// etcd slow but alive (fault matrix scenario 20): every store call takes 1.5–1.9 s with
    /// retry_timeout 2 s and ttl 6 s. Before the lease keeper, the leader renewed only at the start
    /// of each cycle and once more in it; a cycle of four slow calls plus loop_wait outlasted the
    /// lease minus the fencing margin, and the healthy leader fenced itself.
    @Test func aLeaderKeepsItsLeaseWhenEveryStoreCallIsSlow() async throws {
        let setup = try await Self.leader(ttl: 6, loopWait: 2, retryTimeout: 2)
        defer { setup.task.cancel() }
        let calls = Atomic<Int>(0)
        let delays: [Duration] = [.milliseconds(1500), .milliseconds(1900), .milliseconds(1700), .milliseconds(1800)]
        setup.store.latency = {
            let n = calls.add(1, ordering: .relaxed).newValue
            return delays[n % delays.count]
        }
        let observer = setup.backend.makeStore()
        let started = ContinuousClock.now
        var lost: String?
        while ContinuousClock.now - started < .seconds(16), lost == nil {
            try await Task.sleep(for: .milliseconds(100))
            if setup.node.snapshot.fences > 0 {
                lost = "the leader fenced itself"
            } else if !setup.node.isWritablePrimary {
                lost = "postgres is no longer a writable primary"
            } else if try await observer.loadCluster().leader?.member != "node1" {
                lost = "the leader key is gone"
            }
        }
        #expect(lost == nil, "\(lost ?? "") after \(ContinuousClock.now - started)")
        // The store really was slow all along: at least one call per ~1.9 s.
        #expect(calls.load(ordering: .relaxed) >= 8, "only \(calls.load(ordering: .relaxed)) slow calls")
    }

    /// A cycle stuck in one step (here a status query that never answers) for longer than ttl plus
    /// the step allowance is not kept alive by the lease keeper: the lease runs out and the fence
    /// stops postgres, as when the whole agent is frozen.
    @Test func aStuckLeaderCycleLosesItsLeaseAndIsFenced() async throws {
        let setup = try await Self.leader(ttl: 4, loopWait: 1, retryTimeout: 1, stepAllowance: .milliseconds(500))
        defer { setup.task.cancel() }
        setup.node.mutate { $0.answer = .slow(.seconds(600)) }
        let started = ContinuousClock.now
        while ContinuousClock.now - started < .seconds(15), setup.node.snapshot.fences == 0 {
            try await Task.sleep(for: .milliseconds(100))
        }
        let elapsed = ContinuousClock.now - started
        #expect(setup.node.snapshot.fences > 0, "a stuck leader cycle kept its lease for \(elapsed)")
        #expect(!setup.node.isWritablePrimary)
        // ttl + allowance of silence, then at most ttl − margin of lease left.
        #expect(elapsed < .seconds(10), "fenced only after \(elapsed)")
        // Review finding: once fenced, the keeper took the member for a non-leader and renewed the
        // session that still held the leader key, which then never expired. The key must expire
        // soon (stuck allowance plus the lease's ttl, counted from the stall: 8.5 s here; under a
        // loaded test run the fence can come before the stall is noticed, so 15 s from the fence),
        // so that a replica can take over.
        let observer = setup.backend.makeStore()
        let fenced = ContinuousClock.now
        var holder = try await observer.loadCluster().leader?.member
        while holder != nil, ContinuousClock.now - fenced < .seconds(15) {
            try await Task.sleep(for: .milliseconds(100))
            holder = try await observer.loadCluster().leader?.member
        }
        #expect(holder == nil, "the leader key of a fenced, stuck leader stayed alive")
    }

    /// node1 alone on a manual clock (ttl 10, loop_wait 1), with data and postgres running as a
    /// standby or a primary; nothing runs until the test drives it.
    static func manualNode1(standby: Bool) -> (InMemoryStoreBackend, InMemoryClusterStore, SimulatedPostgres, HALoop) {
        let clock = ManualClock()
        let backend = InMemoryStoreBackend(clock: clock)
        let store = backend.makeStore()
        let node = SimulatedPostgres(name: "node1") { _ in nil }
        node.mutate {
            $0.hasData = true
            $0.running = true
            $0.standby = standby
            $0.systemID = "7000"
        }
        let loop = HALoop(
            configuration: HAConfiguration(
                name: "node1", connURL: "postgres://10.0.0.1:5432/postgres", apiURL: "http://10.0.0.1:8008/patroni",
                initialDynamicConfig: DynamicConfig(["ttl": .number(10), "loop_wait": .number(1)])),
            store: store, node: node, clock: clock, peers: NoPeers(), wallClock: { 1_790_000_000 },
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        return (backend, store, node, loop)
    }

    /// Review finding: a member that promoted but whose status query did not answer afterwards
    /// still counted as "last seen as a replica", and after a fence could follow the next leader
    /// without pg_rewind (with the same timeline number, nothing would notice the divergence).
    @Test func aPromotionCountsAsRunningAsPrimaryWithoutAStatusRead() async throws {
        let (_, _, node, loop) = Self.manualNode1(standby: true)
        let observation = await loop.observe(peers: nil, failsafe: nil)
        let registered = await loop.execute([.createSession, .acquireLeader], observation: observation)
        try #require(registered.completed)
        await loop.publish(after: observation)
        #expect(await loop.lastRunningRole == .replica)
        node.mutate { $0.answer = .unknown("simulated: connection slots exhausted") }
        let outcome = await loop.execute([.promote], observation: observation)
        #expect(outcome.completed)
        #expect(node.isWritablePrimary)
        #expect(await loop.lastRunningRole == .primary)
    }

    /// Review finding: a lease found gone (session expired, or revoked) cleared the deadline, and
    /// with it the in-process fence: a primary whose cycle then stalled had only the guard process
    /// left. Now the deadline moves to now and the fence acts at once.
    @Test func aLostLeaseFencesAPrimaryAtOnce() async throws {
        let (backend, store, node, loop) = Self.manualNode1(standby: false)
        await loop.runCycle()
        #expect(try await store.loadCluster().leader?.member == "node1")
        #expect(node.isWritablePrimary)
        // The lease is revoked behind the agent's back (an operator, an etcd restore).
        backend.expireSession(holding: .leader)
        await loop.keepSessionAlive()
        await loop.checkFence()
        #expect(node.snapshot.fences == 1, "the primary was not fenced after its lease was found gone")
        #expect(!node.isWritablePrimary)
    }

    /// The fence task sleeps until the lease deadline instead of polling: an idle leader used to
    /// wake it every 100 ms (10 times a second, most of an idle agent's CPU). It follows a deadline
    /// that moves earlier and fences at the deadline.
    @Test func theFenceTaskSleepsUntilTheDeadlineAndFollowsItWhenItMoves() async throws {
        let (_, _, node, loop) = Self.manualNode1(standby: false)
        await loop.runCycle()
        #expect(node.isWritablePrimary)
        let loopClock = await loop.clock
        let clock = try #require(loopClock as? ManualClock)
        let fenceTask = Task { await loop.fenceGuard() }
        defer { fenceTask.cancel() }
        func settle() async {
            for _ in 0..<200 where clock.sleeperCount == 0 { try? await Task.sleep(for: .milliseconds(1)) }
            try? await Task.sleep(for: .milliseconds(5))
        }
        await settle()
        await loop.moveLeaseDeadline(to: clock.now + .seconds(60))
        await settle()
        let before = clock.sleepsStarted
        for _ in 0..<100 {  // 5 s of manual time in 50 ms steps
            clock.advance(by: .milliseconds(50))
            await settle()
        }
        let wakes = clock.sleepsStarted - before
        #expect(wakes <= 2, "the fence task woke \(wakes) times in 5 s of idle leadership")
        #expect(node.snapshot.fences == 0)
        // The deadline moves earlier (a shorter ttl, a lease found gone): the fence follows it.
        await loop.moveLeaseDeadline(to: clock.now + .milliseconds(300))
        await settle()
        clock.advance(by: .milliseconds(300))
        for _ in 0..<500 where node.snapshot.fences == 0 { try await Task.sleep(for: .milliseconds(2)) }
        #expect(node.snapshot.fences == 1, "the primary was not fenced at a deadline that moved earlier")
    }

    /// A postgres that cannot start (here the leader's, restarted in place; a replica's takes the
    /// same path): the loop does not retry faster than the backoff, however often it is woken (a
    /// dying postmaster wakes it), and tries again once the backoff passed.
    @Test func aPostgresThatCannotStartIsNotRestartedInATightLoop() async throws {
        let (_, _, node, loop) = Self.manualNode1(standby: false)
        await loop.runCycle()
        let loopClock = await loop.clock
        let clock = try #require(loopClock as? ManualClock)
        node.mutate {
            $0.running = false
            $0.crashed = true
            $0.startFailure = "simulated: FATAL: requested timeline 6 does not contain minimum recovery point"
        }
        let before = node.snapshot.starts
        for _ in 0..<20 { await loop.runCycle() }  // twenty wake-ups within the same second
        let tight = node.snapshot.starts - before
        #expect(tight <= 2, "\(tight) starts in one second")
        clock.advance(by: .seconds(2))  // past loop_wait (1 s) after the first failure
        await loop.runCycle()
        #expect(node.snapshot.starts > before + tight, "no new attempt after the backoff")
    }
}

extension HALoop {
    func moveLeaseDeadline(to deadline: MonotonicInstant) { leaseDeadline = deadline }
}
