import BatonClient
import BatonCore
import BatonPostgres
import BatonTestCluster
import Foundation
import PostgresNIO
import Testing

/// BatonClient against a real cluster: three `baton agent`s, a 3-member etcd, PostgreSQL 15.
/// Each test starts its own cluster and tears it down by PID even when it fails.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct ClientRoutingTests {
    static func replicas(_ cluster: AgentCluster, except leader: String) -> [String] {
        cluster.nodes.map(\.name).filter { $0 != leader }.sorted()
    }

    /// Waits until the client's topology satisfies `condition`.
    static func waitForTopology(
        _ client: BatonClient, _ what: String, timeout: Duration = .seconds(20),
        _ condition: (Topology) -> Bool
    ) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition(client.topology) { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ClusterFailure(description: "the client's topology never showed \(what): \(client.topology)")
    }

    @Test("reads spread over the replicas; read-your-writes never returns stale data; a lagging replica is excluded")
    func spreadReadYourWritesAndLag() async throws {
        let cluster = try AgentCluster.start("client-routing")
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy()
        let replicas = Self.replicas(cluster, except: leader)
        let client = try await cluster.client(["max_replica_lag_bytes": "262144"])
        try await Self.waitForTopology(client, "two usable replicas") { topology in
            topology.replicas.count == 2 && client.excludedReplicas.isEmpty
        }

        // Spread: round-robin over both replicas, nothing on the primary.
        try await client.write { conn in
            try await conn.query("CREATE TABLE IF NOT EXISTS client_it (id bigint PRIMARY KEY, pad text)")
        }
        var served: [String: Int] = [:]
        for _ in 0..<60 {
            let node = try await client.read(consistency: .eventual) { try await servedBy($0, cluster) }
            served[node, default: 0] += 1
        }
        measure("spread", ["served": "\(served.sorted { $0.key < $1.key })", "excluded": "\(client.excludedReplicas)"])
        #expect(served[leader] == nil, "eventual reads reached the primary: \(served)")
        for replica in replicas {
            #expect((served[replica] ?? 0) >= 20, "\(replica) got \(served[replica] ?? 0) of 60 reads: \(served)")
        }

        // Read-your-writes: every read carrying the write's token sees the write.
        var onReplica = 0
        var stale = 0
        for id in 1...100 {
            let (_, token) = try await client.write { conn in
                try await conn.query("INSERT INTO client_it (id) VALUES (\(id))")
            }
            let (count, node) = try await client.read(consistency: .readYourWrites(token)) { conn in
                let count = try await conn.query("SELECT count(*) FROM client_it WHERE id = \(id)")
                    .firstValue(Int.self)
                return (count, try await servedBy(conn, cluster))
            }
            if count != 1 { stale += 1 }
            if node != leader { onReplica += 1 }
        }
        measure("read-your-writes", ["reads": "100", "on_replicas": "\(onReplica)", "stale": "\(stale)"])
        #expect(stale == 0, "\(stale) read-your-writes reads missed their write")
        #expect(onReplica > 0, "no read-your-writes read was served by a replica")

        // Task-local scopes route reads that name no consistency.
        let strongNode = try await client.read { try await servedBy($0, cluster) }
        #expect(strongNode == leader)
        let eventualNode = try await withConsistency(.eventual) {
            try await client.read { try await servedBy($0, cluster) }
        }
        #expect(replicas.contains(eventualNode))
        let forced = try await withConsistency(.eventual) {
            try await withPrimary { try await client.read { try await servedBy($0, cluster) } }
        }
        #expect(forced == leader)

        // Lag: pause replay on one replica and write past the limit; it is excluded, then back.
        let lagging = replicas[0]
        let other = replicas[1]
        try await cluster.execute(lagging, "SELECT pg_wal_replay_pause()")
        try await client.write { conn in
            try await conn.query("INSERT INTO client_it SELECT g, repeat('x', 500) FROM generate_series(1000, 3000) g")
        }
        try await Self.waitForTopology(client, "\(lagging) lagging over 256 kB while \(other) caught up") { topology in
            (topology.replicas.first { $0.name == lagging }?.lagBytes ?? 0) > 262_144
                && (topology.replicas.first { $0.name == other }?.lagBytes ?? .max) <= 262_144
        }
        #expect(client.excludedReplicas[lagging]?.contains("over the limit") == true, "\(client.excludedReplicas)")
        var duringLag: [String: Int] = [:]
        for _ in 0..<20 {
            let node = try await client.read(consistency: .eventual) { try await servedBy($0, cluster) }
            duringLag[node, default: 0] += 1
        }
        measure("lag", ["served_while_lagging": "\(duringLag.sorted { $0.key < $1.key })"])
        #expect(duringLag == [other: 20], "a lagging replica still got reads: \(duringLag)")
        try await cluster.execute(lagging, "SELECT pg_wal_replay_resume()")
        try await Self.waitForTopology(client, "\(lagging) caught up") { topology in
            (topology.replicas.first { $0.name == lagging }?.lagBytes ?? .max) <= 262_144
        }
        var afterLag: Set<String> = []
        for _ in 0..<10 {
            afterLag.insert(try await client.read(consistency: .eventual) { try await servedBy($0, cluster) })
        }
        #expect(afterLag.contains(lagging), "\(lagging) got no reads after catching up")
        await client.shutdown()
    }

    @Test(
        "a killed replica: its breaker opens, reads go elsewhere, it recovers through half-open; all replicas killed: per policy"
    )
    func breakerAndNoReplicaPolicy() async throws {
        let cluster = try AgentCluster.start("client-breaker")
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy()
        let replicas = Self.replicas(cluster, except: leader)
        let logs = LogCapture()
        let client = try await cluster.client([:], logs: logs)
        let strict = try await cluster.client(["no_replica_policy": "fail"])
        try await Self.waitForTopology(client, "two running replicas") { topology in
            topology.replicas.filter { $0.state == "running" }.count == 2
        }
        // Warm both replica pools.
        for _ in 0..<4 { _ = try await client.read(consistency: .eventual) { try await servedBy($0, cluster) } }

        // The victim's node is killed (agent and postgres, SIGKILL): pooled connections break,
        // connects are refused, and its member key still says `running` until its lease expires
        // (the topology is stale: the breaker must keep reads away). (Killing postgres alone is
        // not enough: its agent notices at once and the topology excludes it before any breaker
        // could trip.)
        let victim = replicas[0]
        let survivor = replicas[1]
        try cluster.killNode(victim)
        var failedReads = 0
        var servedAfterOpen: [String: Int] = [:]
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let opened = client.replicaBreakers[victim] == .open
            do {
                let node = try await client.read(consistency: .eventual) { try await servedBy($0, cluster) }
                if opened { servedAfterOpen[node, default: 0] += 1 }
            } catch {
                failedReads += 1
            }
            if opened && servedAfterOpen.values.reduce(0, +) >= 20 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        measure("breaker-open", ["failed_reads_before_open": "\(failedReads)", "after_open": "\(servedAfterOpen)"])
        #expect(logs.contains("replica circuit breaker closed → open"), "the breaker never opened")
        #expect(servedAfterOpen == [survivor: 20], "reads after the breaker opened: \(servedAfterOpen)")

        // The node comes back (its agent starts postgres again): after the open timeout a trial
        // read reaches it and closes the breaker.
        try cluster.startAgent(victim)
        let recoverBy = ContinuousClock.now + .seconds(60)
        var backOnVictim = false
        while ContinuousClock.now < recoverBy && !backOnVictim {
            if let node = try? await client.read(consistency: .eventual, { try await servedBy($0, cluster) }) {
                backOnVictim = node == victim
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        if !backOnVictim { await cluster.fail("no read reached \(victim) after it came back") }
        #expect(logs.contains("replica circuit breaker open → half-open"))
        #expect(logs.contains("replica circuit breaker half-open → closed"))
        #expect(client.replicaBreakers[victim] == .closed)

        // All replicas down: the default policy reads from the primary, `fail` says so.
        try cluster.killNode(replicas[0])
        try cluster.killNode(replicas[1])
        var fallbackNodes: Set<String> = []
        var strictErrors: [BatonClientError.Code] = []
        for _ in 0..<15 {
            if let node = try? await client.read(consistency: .eventual, { try await servedBy($0, cluster) }) {
                fallbackNodes.insert(node)
            }
            do {
                _ = try await strict.read(consistency: .eventual) { try await servedBy($0, cluster) }
            } catch let error as BatonClientError {
                strictErrors.append(error.code)
            } catch {}
            try await Task.sleep(for: .milliseconds(50))
        }
        measure("no-replica", ["fallback": "\(fallbackNodes)", "strict_errors": "\(strictErrors.count)"])
        #expect(fallbackNodes.contains(leader), "the default policy never fell back to the primary")
        let lastTen = strictErrors.suffix(10)
        #expect(lastTen.count == 10 && lastTen.allSatisfy { $0 == .noReplicaAvailable }, "\(strictErrors)")
        await client.shutdown()
        await strict.shutdown()
    }
    @Test("REST topology: the client follows GET /cluster of the first agent that answers, through a failover")
    func restTopology() async throws {
        let cluster = try AgentCluster.start("client-rest")
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy()
        let replicas = Self.replicas(cluster, except: leader)
        // The first agent listed answers nothing: the next one serves the topology.
        let agents = ["http://127.0.0.1:1"] + cluster.nodes.map { "http://127.0.0.1:\($0.apiPort)" }
        let client = try await cluster.client(
            ["agents": agents.joined(separator: ","), "poll_interval": "200ms"], without: ["etcd_hosts", "scope"])
        try await Self.waitForTopology(client, "the leader and two running replicas") { topology in
            guard case .member(leader, _, true)? = topology.primary else { return false }
            return topology.replicas.filter { $0.state == "running" }.count == 2
        }
        #expect(client.topology.source.hasSuffix("/cluster"), "source \(client.topology.source)")
        #expect(try await client.write { try await servedBy($0, cluster) }.0 == leader)
        var readers: Set<String> = []
        for _ in 0..<10 {
            readers.insert(try await client.read(consistency: .eventual) { try await servedBy($0, cluster) })
        }
        #expect(readers == Set(replicas), "eventual reads went to \(readers)")

        // The leader's node dies (its agent too, so the topology comes from another agent): writes
        // follow the new leader that the polled documents name.
        try cluster.killNode(leader)
        var newLeader: String?
        let deadline = ContinuousClock.now + .seconds(40)
        while ContinuousClock.now < deadline && newLeader == nil {
            if let (node, _) = try? await client.write({ try await servedBy($0, cluster) }), node != leader {
                newLeader = node
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        guard let newLeader else {
            await cluster.fail("no write reached a new leader within 40 s through the REST topology")
            return
        }
        #expect(replicas.contains(newLeader))
        measure("rest-topology", ["old_leader": leader, "new_leader": newLeader])
        await client.shutdown()
    }
}
