import BatonClient
import BatonCore
import BatonEtcd
import BatonPostgres
import BatonTestCluster
import Foundation
import PostgresNIO
import Synchronization
import Testing

/// Writes through the pool while the primary dies and, later, while a switchover demotes it.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct ClientFailoverTests {
    /// What the writer saw: each acknowledged id with the node that acknowledged it and when.
    final class Ledger: Sendable {
        struct Ack: Sendable {
            let id: Int
            let node: String
            let at: ContinuousClock.Instant
        }
        let acks = Mutex<[Ack]>([])
        let errors = Mutex<[BatonClientError]>([])
        let otherErrors = Mutex<[String]>([])
    }

    /// Inserts one id every 10 ms through `client.write` until cancelled.
    static func write(
        _ client: BatonClient, _ cluster: AgentCluster, _ ledger: Ledger, table: String = "client_failover"
    ) async {
        var id = 0
        while !Task.isCancelled {
            id += 1
            do {
                var bindings = PostgresBindings()
                bindings.append(id)
                let insert = PostgresQuery(
                    unsafeSQL: "INSERT INTO \(table) (id) VALUES ($1) RETURNING inet_server_port()", binds: bindings)
                let (port, _) = try await client.write { conn in
                    try await conn.query(insert).firstValue(Int.self)
                }
                let node = cluster.nodesByPort[port ?? -1] ?? "port \(port ?? -1)"
                ledger.acks.withLock { $0.append(.init(id: id, node: node, at: .now)) }
            } catch let error as BatonClientError {
                ledger.errors.withLock { $0.append(error) }
            } catch is CancellationError {
                return
            } catch {
                ledger.otherErrors.withLock { $0.append(String(reflecting: error)) }
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// When the leader key next names someone other than `old`, as seen by a watch of our own.
    static func watchLeaderChange(_ cluster: AgentCluster, from old: String, after revision: Int64)
        async -> (String, ContinuousClock.Instant)?
    {
        for await event in cluster.store.watch(after: revision) {
            guard case .put(let key, _) = event, key == .leader else { continue }
            if let leader = try? await cluster.view().leader?.member, leader != old {
                return (leader, .now)
            }
        }
        return nil
    }

    /// The watcher's answer, or nil after `timeout` (the watcher is then cancelled).
    static func result(
        of watcher: Task<(String, ContinuousClock.Instant)?, Never>, within timeout: Duration
    ) async -> (String, ContinuousClock.Instant)? {
        await withTaskGroup(of: (String, ContinuousClock.Instant)?.self) { group in
            group.addTask { await watcher.value }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let result = await group.next() ?? nil
            group.cancelAll()
            watcher.cancel()
            return result
        }
    }

    static func milliseconds(_ duration: Duration) -> String { "\(Int(duration / .milliseconds(1)))" }

    @Test(
        "failover and switchover: no write acknowledged by a demoted primary; writes resume as soon as the new primary is published"
    )
    func writesThroughFailover() async throws {
        let cluster = try AgentCluster.start("client-failover")
        defer { cluster.stop() }
        let first = try await cluster.waitHealthy()
        let client = try await cluster.client(["max_connections": "2"])
        try await client.write { conn in
            try await conn.query("CREATE TABLE IF NOT EXISTS client_failover (id bigint PRIMARY KEY)")
        }
        let ledger = Ledger()
        let writer = Task { await Self.write(client, cluster, ledger) }
        defer { writer.cancel() }
        try await Task.sleep(for: .seconds(1))

        // 1. Crash of the primary node.
        let revision = try await cluster.view().revision
        let watcher = Task { await Self.watchLeaderChange(cluster, from: first, after: revision) }
        try cluster.killNode(first)
        guard let (second, keyAt) = await Self.result(of: watcher, within: .seconds(40)) else {
            await cluster.fail("no new leader within 40 s")
            return
        }
        let resumedBy = ContinuousClock.now + .seconds(20)
        var firstAck: Ledger.Ack?
        while ContinuousClock.now < resumedBy && firstAck == nil {
            firstAck = ledger.acks.withLock { acks in acks.first { $0.at > keyAt && $0.node == second } }
            try await Task.sleep(for: .milliseconds(20))
        }
        guard let firstAck else {
            await cluster.fail(
                "no write acknowledged by \(second) within 20 s: \(ledger.errors.withLock { $0.suffix(3) })")
            return
        }
        let afterKey = ledger.acks.withLock { $0.filter { $0.at > keyAt } }
        #expect(
            afterKey.allSatisfy { $0.node == second }, "acks after the new leader key from \(Set(afterKey.map(\.node)))"
        )
        let failoverErrors = ledger.errors.withLock { $0 }
        measure(
            "failover",
            [
                "leader_key_to_first_ack_ms": Self.milliseconds(firstAck.at - keyAt),
                "errors": "\(failoverErrors.count)",
                "codes": "\(Set(failoverErrors.map(\.code.rawValue)))",
            ])
        #expect(firstAck.at - keyAt < .seconds(3), "writes resumed \(firstAck.at - keyAt) after the new leader key")
        #expect(ledger.otherErrors.withLock { $0.isEmpty }, "\(ledger.otherErrors.withLock { $0.prefix(3) })")
        #expect(
            failoverErrors.allSatisfy {
                [BatonClientError.Code.noPrimary, .primaryChanged, .connectionLost].contains($0.code)
            })

        // 2. The old node rejoins; a switchover then demotes the live primary.
        try cluster.startAgent(first)
        try await cluster.waitHealthy(timeout: .seconds(60))
        try await cluster.waitFor("\(first)'s published position to be current", timeout: .seconds(20)) {
            guard let optime = $0.status?.optime, let position = $0.member(named: first)?.xlogLocation else {
                return false
            }
            return optime.bytesAhead(of: position) < 65536
        }
        let switchRevision = try await cluster.view().revision
        let switchWatcher = Task { await Self.watchLeaderChange(cluster, from: second, after: switchRevision) }
        #expect(try await cluster.store.writeFailover(FailoverRequest(leader: second, member: first), expected: nil))
        let switched = await Self.result(of: switchWatcher, within: .seconds(40))
        try await cluster.waitFor("\(first) to lead again", timeout: .seconds(40)) { cluster.primary(in: $0) == first }
        try await Task.sleep(for: .seconds(2))
        writer.cancel()
        _ = await writer.value
        guard let (_, switchKeyAt) = switched else {
            await cluster.fail("the switchover's leader change was not seen")
            return
        }
        let late = ledger.acks.withLock { $0.filter { $0.at > switchKeyAt && $0.node == second } }
        #expect(late.isEmpty, "\(late.count) writes acknowledged by the demoted \(second) after the leader key moved")
        let resumed = ledger.acks.withLock { $0.first { $0.at > switchKeyAt && $0.node == first } }
        #expect(resumed != nil, "writes did not resume on \(first) after the switchover")
        if let resumed {
            measure("switchover", ["leader_key_to_first_ack_ms": Self.milliseconds(resumed.at - switchKeyAt)])
        }
        // Every id acknowledged after the failover is on the final primary (switchover loses nothing).
        let rows = try await cluster.execute(first, "SELECT id FROM client_failover").rows
        let present = Set(try rows.compactMap { try $0.int("id") })
        let acknowledged = Set(ledger.acks.withLock { $0.filter { $0.at > keyAt }.map(\.id) })
        let missing = acknowledged.subtracting(present)
        #expect(missing.isEmpty, "\(missing.count) acknowledged ids missing: \(missing.sorted().prefix(10))")
        await client.shutdown()
    }
}
