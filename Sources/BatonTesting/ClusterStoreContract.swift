import BatonCore
import Foundation

/// The behaviour every `ClusterStore` must have, as named checks that run against any
/// implementation: the in-memory store (in `BatonTestingTests`) and `EtcdClusterStore` on a real
/// etcd (in `BatonEtcdIntegrationTests`). One suite for both keeps the fake from drifting.
public enum ClusterStoreContract {
    /// What a check needs from the implementation under test.
    public struct Environment: Sendable {
        /// `count` clients of one fresh, empty scope (as if on `count` different agents).
        public var makeStores: @Sendable (_ count: Int) async throws -> [any ClusterStore]
        /// Lets `duration` of lease time pass (a manual clock advances; real etcd sleeps).
        public var advance: @Sendable (_ duration: Duration) async throws -> Void
        /// The shortest session TTL the store grants.
        public var minimumTTL: Duration
        /// How long after a TTL runs out the store may still take to delete the keys.
        public var expiryGrace: Duration

        public init(
            makeStores: @escaping @Sendable (Int) async throws -> [any ClusterStore],
            advance: @escaping @Sendable (Duration) async throws -> Void,
            minimumTTL: Duration, expiryGrace: Duration
        ) {
            self.makeStores = makeStores
            self.advance = advance
            self.minimumTTL = minimumTTL
            self.expiryGrace = expiryGrace
        }
    }

    /// A broken expectation, with what was expected and what was seen.
    public struct Violation: Error, CustomStringConvertible {
        public let description: String
    }

    public typealias Check = @Sendable (Environment) async throws -> Void

    /// The names of every check, for parameterised tests.
    public static var names: [String] { checks.map(\.name) }

    /// Runs the check called `name`.
    public static func run(_ name: String, in environment: Environment) async throws {
        guard let check = checks.first(where: { $0.name == name }) else {
            throw Violation(description: "no contract check named \(name)")
        }
        try await check.body(environment)
    }

    static func expect(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        if !condition { throw Violation(description: message()) }
    }

    static func single(_ environment: Environment) async throws -> any ClusterStore {
        guard let store = try await environment.makeStores(1).first else {
            throw Violation(description: "makeStores(1) returned no store")
        }
        return store
    }

    static let sampleMember = Member(
        name: "node-a", connURL: "postgres://127.0.0.1:5432/postgres", apiURL: "http://127.0.0.1:8008/patroni",
        state: .running, role: .replica, version: "0.1.0", xlogLocation: LSN(0x3000_0060),
        receiveLSN: LSN(0x3000_0060), replayLSN: LSN(0x3000_0000), replicationState: "streaming", timeline: 2,
        tags: Tags(["nofailover": .bool(false), "failover_priority": .number(3), "zone": .string("b")]),
        pendingRestart: true, paused: true,
        pendingRestartReason: ["max_connections": PendingChange(oldValue: "100", newValue: "200")])

    static let checks: [(name: String, body: Check)] = [
        (
            "empty scope reads as an empty cluster",
            { env in
                let store = try await single(env)
                let view = try await store.loadCluster()
                try expect(view.leader == nil, "leader in an empty scope: \(String(describing: view.leader))")
                try expect(view.members.isEmpty, "members in an empty scope: \(view.members)")
                try expect(
                    view.initialize == nil && view.config == nil && view.failover == nil && view.sync == nil,
                    "cluster-wide keys in an empty scope")
                try expect(view.revision > 0, "revision should be positive, got \(view.revision)")
            }
        ),
        (
            "bootstrap race has exactly one winner",
            { env in
                let stores = try await env.makeStores(5)
                let wins = try await withThrowingTaskGroup(of: Bool.self) { group in
                    for (index, store) in stores.enumerated() {
                        group.addTask { try await store.claimInitialize(systemID: "") }
                    }
                    return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
                }
                try expect(wins == 1, "claimInitialize winners: \(wins), expected 1")
                let view = try await stores[0].loadCluster()
                try expect(view.initialize == "", "initialize after the race: \(String(describing: view.initialize))")
                try await stores[1].cancelInitialize()
                let after = try await stores[2].loadCluster()
                try expect(after.initialize == nil, "initialize not deleted by cancelInitialize")
                try expect(try await stores[3].claimInitialize(systemID: "7311"), "claim after cancel should win")
            }
        ),
        (
            "initialize is updated by compare-and-swap",
            { env in
                let store = try await single(env)
                try expect(try await store.claimInitialize(systemID: ""), "first claim should win")
                let view = try await store.loadCluster()
                try expect(
                    !(try await store.updateInitialize(systemID: "1", expected: view.revision + 100)),
                    "update with a wrong revision should lose")
                guard let revision = try await store.loadCluster().initializeRevision else {
                    throw Violation(description: "loadCluster() did not report the initialize key's revision")
                }
                try expect(
                    try await store.updateInitialize(systemID: "7311", expected: revision),
                    "update with the current revision should win")
                try expect(try await store.loadCluster().initialize == "7311", "initialize not updated")
            }
        ),
        (
            "leader race has exactly one winner, on its session",
            { env in
                let stores = try await env.makeStores(8)
                var sessions: [SessionID] = []
                for store in stores { sessions.append(try await store.createSession(ttl: env.minimumTTL * 4)) }
                let sessionList = sessions
                let winners = try await withThrowingTaskGroup(of: String?.self) { group in
                    for index in stores.indices {
                        group.addTask {
                            try await stores[index].acquireLeader(member: "m\(index)", session: sessionList[index])
                                ? "m\(index)" : nil
                        }
                    }
                    return try await group.reduce(into: [String]()) { if let name = $1 { $0.append(name) } }
                }
                try expect(winners.count == 1, "leader race winners: \(winners), expected exactly one")
                let view = try await stores[0].loadCluster()
                try expect(
                    view.leader?.member == winners.first, "leader key \(String(describing: view.leader)) ≠ winner")
                let winnerIndex = Int(winners[0].dropFirst()) ?? -1
                try expect(view.leader?.session == sessionList[winnerIndex], "leader key not on the winner's session")
                for (index, store) in stores.enumerated() { try await store.revokeSession(sessionList[index]) }
            }
        ),
        (
            "release and reattach are guarded by the holder's name",
            { env in
                let stores = try await env.makeStores(2)
                let sessionA = try await stores[0].createSession(ttl: env.minimumTTL * 4)
                let sessionB = try await stores[1].createSession(ttl: env.minimumTTL * 4)
                try expect(try await stores[0].acquireLeader(member: "a", session: sessionA), "a should acquire")
                try expect(!(try await stores[1].acquireLeader(member: "b", session: sessionB)), "b must not acquire")
                try expect(!(try await stores[1].releaseLeader(member: "b")), "b must not release a's key")
                try expect(!(try await stores[1].reattachLeader(member: "b", session: sessionB)), "b must not reattach")
                try expect(try await stores[1].loadCluster().leader?.member == "a", "a's key was disturbed")
                let sessionA2 = try await stores[0].createSession(ttl: env.minimumTTL * 4)
                try expect(try await stores[0].reattachLeader(member: "a", session: sessionA2), "a should reattach")
                try expect(
                    try await stores[0].loadCluster().leader?.session == sessionA2, "reattach kept the old session")
                try await stores[0].revokeSession(sessionA)
                try expect(
                    try await stores[1].loadCluster().leader?.member == "a",
                    "revoking the old session deleted the reattached key")
                try expect(try await stores[0].releaseLeader(member: "a"), "a should release")
                try expect(try await stores[1].loadCluster().leader == nil, "leader key still there after release")
                try expect(
                    try await stores[1].acquireLeader(member: "b", session: sessionB), "b should acquire after release")
                try await stores[0].revokeSession(sessionA2)
                try await stores[1].revokeSession(sessionB)
            }
        ),
        (
            "member keys round-trip every field",
            { env in
                let store = try await single(env)
                let session = try await store.createSession(ttl: env.minimumTTL * 4)
                try await store.publishMember(sampleMember, session: session)
                var other = sampleMember
                other.name = "node-b"
                other.role = .primary
                other.tags = Tags()
                other.receiveLSN = nil
                other.replayLSN = nil
                other.replicationState = nil
                other.pendingRestart = false
                try await store.publishMember(other, session: session)
                let view = try await store.loadCluster()
                try expect(view.members.count == 2, "expected 2 members, got \(view.members.map(\.name))")
                try expect(
                    view.member(named: "node-a") == sampleMember,
                    "member round trip: wrote \(sampleMember), read \(String(describing: view.member(named: "node-a")))"
                )
                try expect(view.member(named: "node-b") == other, "second member round trip")
                try await store.removeMember(name: "node-b")
                try expect(try await store.loadCluster().members.map(\.name) == ["node-a"], "removeMember")
                try await store.revokeSession(session)
            }
        ),
        (
            "an expired session deletes its keys; keepalive reports it",
            { env in
                let stores = try await env.makeStores(2)
                let session = try await stores[0].createSession(ttl: env.minimumTTL)
                try expect(try await stores[0].acquireLeader(member: "a", session: session), "acquire")
                try await stores[0].publishMember(sampleMember, session: session)
                try await env.advance(env.minimumTTL + env.expiryGrace)
                let view = try await stores[1].loadCluster()
                try expect(view.leader == nil, "leader key survived its session's expiry")
                try expect(view.members.isEmpty, "member key survived its session's expiry")
                try expect(try await stores[0].keepAlive(session) == .expired, "keepalive of an expired session")
                let other = try await stores[1].createSession(ttl: env.minimumTTL * 4)
                try expect(
                    try await stores[1].acquireLeader(member: "b", session: other), "b should acquire after expiry")
                try await stores[1].revokeSession(other)
            }
        ),
        (
            "keepalive keeps a session's keys past its ttl",
            { env in
                let store = try await single(env)
                let session = try await store.createSession(ttl: env.minimumTTL)
                try expect(try await store.acquireLeader(member: "a", session: session), "acquire")
                for _ in 0..<4 {
                    try await env.advance(env.minimumTTL / 2)
                    let status = try await store.keepAlive(session)
                    guard case .alive(let ttl) = status else {
                        throw Violation(description: "keepalive of a live session returned \(status)")
                    }
                    try expect(ttl >= env.minimumTTL, "keepalive ttl \(ttl) < granted \(env.minimumTTL)")
                }
                try expect(try await store.loadCluster().leader?.member == "a", "leader key lost despite keepalive")
                try await store.revokeSession(session)
                try expect(try await store.loadCluster().leader == nil, "revoke did not delete the leader key")
                try expect(try await store.keepAlive(session) == .expired, "keepalive after revoke")
            }
        ),
        (
            "keepalive of an unknown session reports it expired",
            { env in
                let store = try await single(env)
                try expect(try await store.keepAlive(SessionID(rawValue: 0x7777_1234)) == .expired, "unknown session")
            }
        ),
        (
            "config, failover and sync are compare-and-swap",
            { env in
                let store = try await single(env)
                let config = DynamicConfig([
                    "ttl": .number(20), "loop_wait": .number(5),
                    "postgresql": .object(["parameters": .object(["max_connections": .number(100)])]),
                ])
                try expect(try await store.writeConfig(config, expected: nil), "create config")
                try expect(!(try await store.writeConfig(config, expected: nil)), "config created twice")
                let first = try await store.loadCluster()
                try expect(first.config?.value == config, "config round trip: \(String(describing: first.config))")
                let revision = first.config?.modRevision ?? -1
                let patched = config.merging(patch: .object(["loop_wait": .number(3)]))
                try expect(try await store.writeConfig(patched, expected: revision), "CAS with the current revision")
                try expect(!(try await store.writeConfig(config, expected: revision)), "CAS with a stale revision won")
                try expect(try await store.loadCluster().config?.value.loopWait == .seconds(3), "patched config")

                let request = FailoverRequest(leader: "a", member: "b", scheduledAt: "2026-11-22T15:00:00+00:00")
                try expect(try await store.writeFailover(request, expected: nil), "create failover")
                let failover = try await store.loadCluster().failover
                try expect(failover?.value == request, "failover round trip: \(String(describing: failover))")
                try expect(
                    !(try await store.deleteFailover(expected: (failover?.modRevision ?? 0) + 1000)),
                    "delete with a wrong revision")
                try expect(try await store.deleteFailover(expected: failover?.modRevision), "delete with its revision")
                try expect(try await store.loadCluster().failover == nil, "failover still there")
                try expect(
                    !(try await store.deleteFailover(expected: nil)), "deleting an absent key should report false")

                let sync = SyncState(leader: "a", syncStandbys: ["c", "b"])
                try expect(try await store.writeSync(sync, expected: nil), "create sync")
                let read = try await store.loadCluster().sync
                try expect(read?.value.syncStandbys == ["b", "c"], "sync round trip: \(String(describing: read))")
                try expect(
                    !(try await store.writeSync(SyncState(leader: "b", syncStandbys: []), expected: nil)),
                    "sync created twice")
                try expect(
                    try await store.writeSync(SyncState(leader: "b", syncStandbys: []), expected: read?.modRevision),
                    "sync CAS")
                try expect(try await store.deleteSync(expected: nil), "delete sync")
            }
        ),
        (
            "history, status and failsafe round-trip",
            { env in
                let store = try await single(env)
                let history = [
                    HistoryEntry(
                        timeline: 1, lsn: LSN(0x3000_0060), reason: "no recovery target specified",
                        timestamp: "2026-11-22T14:00:00+00:00", newLeader: "b"),
                    HistoryEntry(timeline: 2, lsn: LSN(0x5000_0000), reason: "switchover"),
                ]
                try await store.writeHistory(history)
                try await store.writeStatus(LeaderStatus(optime: LSN(0x5000_1000), slots: ["node_b": LSN(0x5000_0000)]))
                try await store.writeFailsafe(["a": "http://127.0.0.1:8008/patroni"])
                let view = try await store.loadCluster()
                try expect(view.history == history, "history round trip: \(view.history)")
                try expect(
                    view.status?.optime == LSN(0x5000_1000), "status round trip: \(String(describing: view.status))")
                try expect(view.failsafe == ["a": "http://127.0.0.1:8008/patroni"], "failsafe round trip")
                try await store.writeFailsafe(nil)
                try expect(try await store.loadCluster().failsafe == nil, "failsafe not deleted")
            }
        ),
        (
            "watch delivers every change after a revision, in order",
            { env in
                let stores = try await env.makeStores(2)
                let start = try await stores[0].loadCluster().revision
                let stream = stores[1].watch(after: start)
                let session = try await stores[0].createSession(ttl: env.minimumTTL * 4)
                try expect(try await stores[0].acquireLeader(member: "a", session: session), "acquire")
                try await stores[0].publishMember(sampleMember, session: session)
                try expect(try await stores[0].releaseLeader(member: "a"), "release")
                try expect(
                    try await stores[0].writeConfig(DynamicConfig(["ttl": .number(10)]), expected: nil), "config")
                var seen: [StoreEvent] = []
                var iterator = stream.makeAsyncIterator()
                while seen.count < 4, let event = await iterator.next() {
                    if case .resync = event { continue }
                    seen.append(event)
                }
                let keys = seen.map { "\($0.key?.path ?? "?")" }
                try expect(keys == ["leader", "members/node-a", "leader", "config"], "watched keys in order: \(keys)")
                guard case .put = seen[0], case .put = seen[1], case .delete = seen[2], case .put = seen[3] else {
                    throw Violation(description: "watched kinds: \(seen)")
                }
                let revisions = seen.compactMap { event -> Int64? in
                    switch event {
                    case .put(_, let revision), .delete(_, let revision): return revision
                    case .resync: return nil
                    }
                }
                try expect(
                    revisions == revisions.sorted() && Set(revisions).count == revisions.count,
                    "watch revisions not strictly increasing: \(revisions)")
                try expect((revisions.first ?? 0) > start, "watch delivered an event at or before its start revision")
                try await stores[0].revokeSession(session)
            }
        ),
    ]
}
