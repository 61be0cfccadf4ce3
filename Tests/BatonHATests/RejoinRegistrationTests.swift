import BatonCore
import BatonTesting
import Foundation
import Logging
import Testing

@testable import BatonHA

/// Regression (fault matrix scenarios 6 and 7a on network namespaces): an old primary cut from
/// etcd is fenced, its lease expires, and when the partition heals it rejoins with pg_rewind. Its
/// session was found lost only while publishing before the rewind, so postgres was started as a
/// standby without a member key: the new leader never created its replication slot, the standby
/// could not stream nor open, and the agent's cycle waited 60 s for it.
@Suite struct RejoinRegistrationTests {
    struct NoPeers: PeerProbe {
        func status(of members: [Member]) async -> [PeerStatus] {
            members.map { PeerStatus(name: $0.name, reachable: false) }
        }
        func confirmFailsafe(leader: String, connURL: String, apiURL: String, members: [String: String]) async -> Bool {
            false
        }
    }

    final class Box<T: Sendable>: @unchecked Sendable {
        var value: T
        init(_ value: T) { self.value = value }
    }

    /// The agent under test: node2, fast timing (ttl 10, loop_wait 1, retry_timeout 3) plus `extra`.
    static func node2Loop(
        store: any ClusterStore, node: SimulatedPostgres, clock: ManualClock, extra: [String: JSONValue] = [:]
    ) -> HALoop {
        var settings: [String: JSONValue] = ["ttl": .number(10), "loop_wait": .number(1), "retry_timeout": .number(3)]
        settings.merge(extra) { _, new in new }
        return HALoop(
            configuration: HAConfiguration(
                name: "node2", connURL: "postgres://10.0.0.2:5432/postgres", apiURL: "http://10.0.0.2:8008/patroni",
                initialDynamicConfig: DynamicConfig(settings)),
            store: store, node: node, clock: clock, peers: NoPeers(), wallClock: { 1_790_000_000 },
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    /// node1, running as primary on timeline 2, and node2, the old primary: stopped on timeline 1
    /// with its WAL at `oldPrimaryLSN`. Returns node2 (the member under test); node1 serves it as
    /// rewind and replication source.
    static func oldPrimaryBesideNewPrimary(oldPrimaryLSN: UInt64) -> SimulatedPostgres {
        let nodes = Box<[String: SimulatedPostgres]>([:])
        let primary = SimulatedPostgres(name: "node1") { nodes.value[$0] }
        primary.mutate {
            $0.hasData = true
            $0.running = true
            $0.timeline = 2
            $0.lsn = 0x100_0000
            $0.systemID = "7000"
        }
        let node = SimulatedPostgres(name: "node2") { nodes.value[$0] }
        node.mutate {
            $0.hasData = true
            $0.timeline = 1
            $0.lsn = oldPrimaryLSN
            $0.systemID = "7000"
        }
        nodes.value = ["node1": primary, "node2": node]
        return node
    }

    /// node1's member key: running as primary at 0x100_0000 on `timeline`.
    static func publishNode1AsPrimary(_ store: any ClusterStore, session: SessionID, timeline: Int) async throws {
        try await store.publishMember(
            Member(
                name: "node1", connURL: "postgres://10.0.0.1:5432/postgres", apiURL: "http://10.0.0.1:8008/patroni",
                state: .running, role: .primary, xlogLocation: LSN(0x100_0000), timeline: timeline),
            session: session)
    }

    /// node1 takes the leader key under a session of its own and publishes itself as primary on
    /// timeline 2.
    static func node1Leads(_ backend: InMemoryStoreBackend) async throws {
        let leaderStore = backend.makeStore()
        let leaderSession = try await leaderStore.createSession(ttl: .seconds(30))
        #expect(try await leaderStore.acquireLeader(member: "node1", session: leaderSession))
        try await Self.publishNode1AsPrimary(leaderStore, session: leaderSession, timeline: 2)
    }

    @Test func aMemberWhoseSessionIsLostDuringARewindRegistersAgainBeforeStartingAsAStandby() async throws {
        let clock = ManualClock()
        let backend = InMemoryStoreBackend(clock: clock)
        // node1 is the primary, holding the leader key.
        try await Self.node1Leads(backend)
        // node2: the old primary, stopped after it fenced itself.
        let node = Self.oldPrimaryBesideNewPrimary(oldPrimaryLSN: 0x100_0000)

        // The lease of node2 runs out while the rewind runs; then record whether node2 is
        // registered when postgres starts as a standby.
        let registeredAtStart = Box<Bool?>(nil)
        let observer = backend.makeStore()
        var hooks = SimulatedPostgres.Hooks()
        hooks.beforeRewind = { backend.expireSession(holding: .member("node2")) }
        hooks.beforeStart = { source in
            guard source != nil else { return }
            registeredAtStart.value = (try? await observer.loadCluster().member(named: "node2")) != nil
        }
        node.setHooks(hooks)

        let loop = Self.node2Loop(store: backend.makeStore(), node: node, clock: clock)
        await loop.runCycle()

        #expect(node.snapshot.running && node.snapshot.standby, "node2 did not start as a standby")
        #expect(registeredAtStart.value == true, "postgres started as a standby while the member key was missing")
        let view = try await observer.loadCluster()
        #expect(view.member(named: "node2") != nil, "node2 is not registered after the cycle")
    }

    /// A store whose next keepalive waits until the test releases it: the answer about a session
    /// then arrives after the loop has replaced that session.
    final class GatedStore: ForwardingClusterStore, @unchecked Sendable {
        let base: InMemoryClusterStore
        private let lock = NSLock()
        private var gate: CheckedContinuation<Void, Never>?
        private var armed = false
        private var held = false
        init(_ base: InMemoryClusterStore) { self.base = base }

        func holdNextKeepAlive() { lock.withLock { armed = true } }
        var isHolding: Bool { lock.withLock { held } }
        func release() {
            let continuation = lock.withLock { () -> CheckedContinuation<Void, Never>? in
                defer { gate = nil }
                return gate
            }
            continuation?.resume()
        }

        func keepAlive(_ session: SessionID) async throws -> SessionStatus {
            let hold = lock.withLock { () -> Bool in
                defer { armed = false }
                return armed
            }
            if hold {
                await withCheckedContinuation { continuation in
                    lock.withLock {
                        gate = continuation
                        held = true
                    }
                }
            }
            return try await base.keepAlive(session)
        }
    }

    /// Regression (scenario 7a on network namespaces): the background keepalive of a replica sent
    /// a renewal of its old session; meanwhile the cycle found that session lost and registered a
    /// new one; the answer "expired" about the old session then cleared the new one, whose lease
    /// ran out, and the leader dropped the slot of the member that was just rejoining.
    @Test func anExpiredAnswerAboutAReplacedSessionLeavesTheNewSessionAlone() async throws {
        let clock = ManualClock()
        let backend = InMemoryStoreBackend(clock: clock)
        let leaderStore = backend.makeStore()
        let leaderSession = try await leaderStore.createSession(ttl: .seconds(30))
        #expect(try await leaderStore.acquireLeader(member: "node1", session: leaderSession))
        let nodes = Box<[String: SimulatedPostgres]>([:])
        let primary = SimulatedPostgres(name: "node1") { nodes.value[$0] }
        primary.mutate {
            $0.hasData = true
            $0.running = true
            $0.lsn = 0x100_0000
            $0.systemID = "7000"
        }
        try await Self.publishNode1AsPrimary(leaderStore, session: leaderSession, timeline: 1)
        let node = SimulatedPostgres(name: "node2") { nodes.value[$0] }
        node.mutate {
            $0.hasData = true
            $0.standby = true
            $0.lsn = 0x100_0000
            $0.systemID = "7000"
        }
        nodes.value = ["node1": primary, "node2": node]
        let store = GatedStore(backend.makeStore())
        let loop = Self.node2Loop(store: store, node: node, clock: clock)
        await loop.runCycle()
        let first = try #require(await loop.session, "no session after the first cycle")

        // The background keepalive sends a renewal of the first session and waits for its answer.
        store.holdNextKeepAlive()
        let background = Task { await loop.keepSessionAlive() }
        for _ in 0..<500 where !store.isHolding { try await Task.sleep(for: .milliseconds(2)) }
        try #require(store.isHolding)
        // Its lease runs out; another keepalive finds it lost, and the cycle registers again with
        // a new session.
        backend.expireSession(holding: .member("node2"))
        await loop.keepSessionAlive()
        await loop.runCycle()
        let second = try #require(await loop.session, "the cycle did not create a new session")
        #expect(second != first)
        // Now the answer about the first session arrives: expired.
        store.release()
        await background.value
        #expect(await loop.session == second, "the answer about the old session cleared the new one")
    }

    /// Regression (soak on network namespaces): an old primary whose agent was killed came back
    /// with no leader in view and started read-only; when a new leader appeared it was only
    /// re-pointed, although it held WAL past the fork point, and postgres refused the new
    /// timeline for ever. It must go through pg_rewind before following.
    @Test func anOldPrimaryStartedReadOnlyIsRewoundBeforeItFollowsANewLeader() async throws {
        let clock = ManualClock()
        let backend = InMemoryStoreBackend(clock: clock)
        // node2: the old primary on timeline 1, stopped (its agent was killed and it was fenced).
        let node = Self.oldPrimaryBesideNewPrimary(oldPrimaryLSN: 0x100_0100)
        let rewinds = Box<Int>(0)
        var hooks = SimulatedPostgres.Hooks()
        hooks.beforeRewind = { rewinds.value += 1 }
        node.setHooks(hooks)
        let loop = Self.node2Loop(
            store: backend.makeStore(), node: node, clock: clock, extra: ["synchronous_mode": .bool(true)])
        // No leader in view, and not the synchronous standby: it starts read-only.
        let sync = backend.makeStore()
        _ = try await sync.writeSync(SyncState(leader: "node1", syncStandbys: ["node3"]), expected: nil)
        await loop.runCycle()
        #expect(node.snapshot.running && node.snapshot.standby, "node2 did not start read-only")
        #expect(node.snapshot.upstream == nil)
        // A new leader appears.
        try await Self.node1Leads(backend)
        await loop.runCycle()
        #expect(node.snapshot.upstream == "node1", "node2 does not follow node1")
        #expect(rewinds.value == 1, "node2 followed the new leader without pg_rewind")
    }

    /// Fault scenario 17c: after a fence, the stopped backend kept the old shared memory attached,
    /// every pg_rewind failed, and the cycle retried it eight times in a row (23 attempts in 3 s,
    /// each asking the new primary for a checkpoint). A failed action on postgres now ends the
    /// cycle's immediate rechecks: one attempt per cycle.
    @Test func aFailingRewindIsTriedOncePerCycle() async throws {
        let clock = ManualClock()
        let backend = InMemoryStoreBackend(clock: clock)
        try await Self.node1Leads(backend)
        // node2 has data of its own but cannot reach its rewind source: every rewind fails.
        let node = SimulatedPostgres(name: "node2") { _ in nil }
        node.mutate {
            $0.hasData = true
            $0.lsn = 0x100_0000
            $0.systemID = "7000"
        }
        let rewinds = Box<Int>(0)
        var hooks = SimulatedPostgres.Hooks()
        hooks.beforeRewind = { rewinds.value += 1 }
        node.setHooks(hooks)
        let loop = Self.node2Loop(store: backend.makeStore(), node: node, clock: clock)
        await loop.runCycle()
        #expect(rewinds.value == 1, "pg_rewind was tried \(rewinds.value) times in one cycle")
        await loop.runCycle()
        #expect(rewinds.value == 2)
    }
}
