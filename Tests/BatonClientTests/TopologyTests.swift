import BatonCore
import Foundation
import Testing

@testable import BatonClient

@Suite struct TopologyTests {
    let now = ContinuousClock.now

    static func member(
        _ name: String, port: Int, role: Member.Role, state: Member.State = .running, xlog: UInt64? = nil,
        replay: UInt64? = nil, tags: [String: JSONValue] = [:]
    ) -> Member {
        Member(
            name: name, connURL: "postgres://127.0.0.1:\(port)/postgres", apiURL: "http://127.0.0.1:8008/patroni",
            state: state, role: role, xlogLocation: xlog.map { LSN($0) }, replayLSN: replay.map { LSN($0) },
            tags: Tags(tags))
    }

    static func view(leader: String?, _ members: [Member]) -> ClusterView {
        ClusterView(
            revision: 7, leader: leader.map { LeaderLock(member: $0, session: nil, modRevision: 3) }, members: members)
    }

    @Test func theLeaderIsThePrimaryAndTheOtherReplicasCarryTheirLag() {
        var history = LagHistory()
        let view = Self.view(
            leader: "n1",
            [
                Self.member("n1", port: 5001, role: .primary, xlog: 10_000),
                Self.member("n2", port: 5002, role: .replica, xlog: 10_000, replay: 9_000),
                Self.member("n3", port: 5003, role: .replica, state: .starting, xlog: 4_000),
            ])
        let topology = Topology(view: view, lagHistory: &history, now: now)
        #expect(
            topology.primary == .member(name: "n1", endpoint: Endpoint(host: "127.0.0.1", port: 5001), confirmed: true))
        #expect(topology.replicas.map(\.name) == ["n2", "n3"])
        // The replay position counts, not the receive position.
        #expect(topology.replicas[0].lagBytes == 1_000)
        #expect(topology.replicas[1].lagBytes == 6_000 && topology.replicas[1].state == "starting")
        #expect(topology.knownEndpoints.count == 3 && topology.lagIsKnown)
    }

    @Test func aLeaderStillPromotingIsTargetedButUnconfirmed() {
        var history = LagHistory()
        let view = Self.view(
            leader: "n2",
            [
                Self.member("n1", port: 5001, role: .primary, xlog: 10),
                Self.member("n2", port: 5002, role: .replica, xlog: 10),
            ])
        let topology = Topology(view: view, lagHistory: &history, now: now)
        #expect(
            topology.primary == .member(name: "n2", endpoint: Endpoint(host: "127.0.0.1", port: 5002), confirmed: false)
        )
        // The old primary (still publishing role primary) is neither the primary nor a replica.
        #expect(topology.replicas.isEmpty)
        #expect(
            topology.primary?.poolKey
                == Topology.PrimaryTarget.member(
                    name: "n2", endpoint: Endpoint(host: "127.0.0.1", port: 5002), confirmed: true
                ).poolKey)
    }

    @Test func noLeaderKeyOrAStandbyLeaderMeansNoPrimary() {
        var history = LagHistory()
        let members = [Self.member("n1", port: 5001, role: .standbyLeader)]
        #expect(Topology(view: Self.view(leader: nil, members), lagHistory: &history, now: now).primary == nil)
        #expect(Topology(view: Self.view(leader: "n1", members), lagHistory: &history, now: now).primary == nil)
    }

    @Test func tagsMarkNoLoadBalanceAndWeight() {
        var history = LagHistory()
        let view = Self.view(
            leader: "n1",
            [
                Self.member("n1", port: 5001, role: .primary),
                Self.member("n2", port: 5002, role: .replica, tags: ["noloadbalance": .bool(true)]),
                Self.member("n3", port: 5003, role: .replica, tags: ["weight": .number(3)]),
            ])
        let topology = Topology(view: view, lagHistory: &history, now: now)
        #expect(topology.replicas[0].noLoadBalance && topology.replicas[1].weight == 3)
    }

    @Test func lagHistoryEstimatesSecondsBehindFromPositions() {
        var history = LagHistory()
        #expect(history.secondsBehind(LSN(5), now: now) == nil)
        history.record(LSN(100), at: now)
        history.record(LSN(200), at: now + .seconds(2))
        history.record(LSN(300), at: now + .seconds(4))
        let later = now + .seconds(5)
        #expect(history.secondsBehind(LSN(300), now: later) == 0)
        // The primary first showed a position past 250 at t+4: at least 1 s behind at t+5.
        #expect(history.secondsBehind(LSN(250), now: later) == 1)
        #expect(history.secondsBehind(LSN(150), now: later) == 3)
        #expect(history.secondsBehind(LSN(50), now: later) == 5)
    }

    @Test func restClusterDocumentIsRead() throws {
        let json = """
            {"scope": "demo", "members": [
              {"name": "n1", "role": "leader", "state": "running", "host": "127.0.0.1", "port": 5001, "timeline": 2},
              {"name": "n2", "role": "replica", "state": "streaming", "host": "127.0.0.1", "port": 5002,
               "lag": 2048, "lsn": "0/3000000", "tags": {"noloadbalance": true}},
              {"name": "n3", "role": "sync_standby", "state": "running", "host": "127.0.0.1", "port": 5003,
               "lag": "unknown"}
            ]}
            """
        var history = LagHistory()
        let topology = try Topology(
            clusterDocument: Data(json.utf8), from: "http://a", lagHistory: &history, now: now)
        #expect(
            topology.primary == .member(name: "n1", endpoint: Endpoint(host: "127.0.0.1", port: 5001), confirmed: true))
        #expect(topology.replicas.map(\.name) == ["n2", "n3"])
        #expect(topology.replicas[0].lagBytes == 2048 && topology.replicas[0].state == "running")
        #expect(topology.replicas[0].noLoadBalance)
        #expect(topology.replicas[1].lagBytes == nil)
        #expect(throws: BatonClientError.self) {
            try Topology(clusterDocument: Data("<html>".utf8), from: "http://a", lagHistory: &history, now: now)
        }
        // What a hostile or broken agent answers goes into the error (and the application's log)
        // as one printable line: before, a newline in it forged a second log line.
        let hostile = "<html>\n2026-12-06 level=info forged line\u{1B}[2J" + String(repeating: "x", count: 500)
        let error = #expect(throws: BatonClientError.self) {
            try Topology(clusterDocument: Data(hostile.utf8), from: "http://a", lagHistory: &history, now: now)
        }
        let message = "\(error.map { "\($0)" } ?? "")"
        #expect(message.contains("<html>\\n2026-12-06") && message.contains("\\u{1b}[2J"), "\(message)")
        #expect(!message.contains("\n") && !message.contains("\u{1B}") && message.count < 400, "\(message)")
    }

    /// Audit finding: an agent's `/cluster` with a lag beyond UInt64 trapped the client
    /// (`UInt64(1e20)`); the lag is unknown now.
    @Test func aHostileLagIsUnknown() throws {
        let json = """
            {"scope": "demo", "members": [
              {"name": "n1", "role": "leader", "state": "running", "host": "127.0.0.1", "port": 5001},
              {"name": "n2", "role": "replica", "state": "streaming", "host": "127.0.0.1", "port": 5002, "lag": 1e20}
            ]}
            """
        var history = LagHistory()
        let topology = try Topology(
            clusterDocument: Data(json.utf8), from: "http://a", lagHistory: &history, now: now)
        #expect(topology.replicas.map(\.name) == ["n2"])
        #expect(topology.replicas[0].lagBytes == nil)
    }

    @Test func fixedAndDegradedTopologiesUseMultiHost() {
        let primaries = [Endpoint(host: "a", port: 1), Endpoint(host: "b", port: 2)]
        let fixed = Topology.fixed(primaryHosts: primaries, readReplicas: [Endpoint(host: "c", port: 3)])
        #expect(fixed.primary == .anyWritable(primaries) && !fixed.lagIsKnown)
        #expect(fixed.replicas.map(\.name) == ["c:3"])
        var history = LagHistory()
        let view = Self.view(
            leader: "n1",
            [Self.member("n1", port: 5001, role: .primary), Self.member("n2", port: 5002, role: .replica)])
        let degraded = Topology(view: view, lagHistory: &history, now: now).degraded()
        #expect(
            degraded.primary
                == .anyWritable([Endpoint(host: "127.0.0.1", port: 5001), Endpoint(host: "127.0.0.1", port: 5002)]))
    }

    @Test func endpointsParse() {
        #expect(Endpoint(parsing: "db1") == Endpoint(host: "db1", port: 5432))
        #expect(Endpoint(parsing: " db1:6432 ") == Endpoint(host: "db1", port: 6432))
        #expect(Endpoint(parsing: "[::1]:7000") == Endpoint(host: "::1", port: 7000))
        #expect(Endpoint(parsing: "db1:0") == nil)
        #expect(Endpoint(parsing: "db1:x") == nil)
        #expect(Endpoint(parsing: "") == nil)
        #expect(Endpoint(host: "::1", port: 5).description == "[::1]:5")
    }
}
