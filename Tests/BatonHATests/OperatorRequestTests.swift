import BatonCore
import BatonHA
import BatonTesting
import Synchronization
import Testing

/// Restart, reload and reinitialize carried out by the real HA loop (three agents, simulated
/// postgres, in-memory store): in each role, and without a failover.
@Suite struct OperatorRequestTests {
    /// Submits `request` to `member`'s loop and steps the cluster until the loop answers.
    static func submit(
        _ request: OperatorRequest, to member: String, in cluster: SimulatedCluster
    ) async throws -> OperatorReply {
        let loop = try #require(cluster.loop(named: member))
        let answer = Mutex<OperatorReply?>(nil)
        let task = Task {
            let reply = await loop.submit(request)
            answer.withLock { $0 = reply }
        }
        for _ in 0..<300 {
            await cluster.step()
            if let reply = answer.withLock({ $0 }) {
                await task.value
                return reply
            }
            await Task.yield()
        }
        task.cancel()
        Issue.record("no answer to \(request) within 30 simulated seconds: \(cluster.events)")
        return OperatorReply(0, "no answer")
    }

    static func roles(_ cluster: SimulatedCluster) async throws -> (primary: String, replicas: [String]) {
        let primary = try #require(cluster.writablePrimaries.first)
        return (primary, cluster.streamingReplicas().sorted())
    }

    @Test func restartingAReplicaKeepsItsRole() async throws {
        let cluster = try await SimulatedClusterTests.bootstrapped()
        let (primary, replicas) = try await Self.roles(cluster)
        let replica = try #require(replicas.first)
        let promotions = cluster.promotionCount
        let reply = try await Self.submit(.restart(RestartRequest()), to: replica, in: cluster)
        #expect(reply == OperatorReply(200, "restarted successfully"))
        #expect(cluster.postgres(named: replica)?.snapshot.restarts == 1)
        await cluster.run(seconds: 5)
        #expect(cluster.writablePrimaries == [primary])
        #expect(cluster.streamingReplicas().contains(replica))
        #expect(cluster.promotionCount == promotions, "a restart must not cause a failover: \(cluster.events)")
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
    }

    @Test func restartingThePrimaryIsNotAFailover() async throws {
        let cluster = try await SimulatedClusterTests.bootstrapped()
        let (primary, _) = try await Self.roles(cluster)
        let promotions = cluster.promotionCount
        let reply = try await Self.submit(.restart(RestartRequest(role: .primary)), to: primary, in: cluster)
        #expect(reply.status == 200, "\(reply)")
        await cluster.run(seconds: cluster.options.ttl * 2)
        #expect(cluster.writablePrimaries == [primary])
        #expect(await cluster.leaderKeyHolder() == primary)
        #expect(cluster.promotionCount == promotions, "\(cluster.events)")
        #expect(cluster.postgres(named: primary)?.snapshot.restarts == 1)
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
    }

    @Test func unmetConditionsAre503() async throws {
        let cluster = try await SimulatedClusterTests.bootstrapped()
        let (primary, replicas) = try await Self.roles(cluster)
        let replica = try #require(replicas.first)
        let wrongRole = try await Self.submit(.restart(RestartRequest(role: .replica)), to: primary, in: cluster)
        #expect(wrongRole.status == 503)
        #expect(wrongRole.message.contains("restart conditions are not satisfied"), "\(wrongRole)")
        let notPending = try await Self.submit(.restart(RestartRequest(onlyIfPending: true)), to: replica, in: cluster)
        #expect(notPending.status == 503)
        #expect(notPending.message.contains("no restart is pending"), "\(notPending)")
        let replicaAsPrimary = try await Self.submit(.restart(RestartRequest(role: .primary)), to: replica, in: cluster)
        #expect(replicaAsPrimary.status == 503)
        #expect(cluster.postgres(named: primary)?.snapshot.restarts == 0)
        #expect(cluster.postgres(named: replica)?.snapshot.restarts == 0)
    }

    @Test func scheduledRestartRunsWhenDueAndCanBeCancelled() async throws {
        let cluster = try await SimulatedClusterTests.bootstrapped()
        let (_, replicas) = try await Self.roles(cluster)
        let replica = try #require(replicas.first)
        let wallNow = 1_790_000_000.0  // the simulated cluster's wall clock
        let later = RestartRequest(scheduledAt: wallNow + 3600, scheduledAtText: "in an hour")
        #expect(try await Self.submit(.restart(later), to: replica, in: cluster).status == 202)
        #expect(try await Self.submit(.restart(later), to: replica, in: cluster).status == 409)
        #expect(await cluster.loop(named: replica)?.snapshot().scheduledRestart == later)
        #expect(try await Self.submit(.cancelScheduledRestart, to: replica, in: cluster).status == 200)
        #expect(try await Self.submit(.cancelScheduledRestart, to: replica, in: cluster).status == 404)
        // Due at once: it runs at the start of a following cycle.
        let due = RestartRequest(scheduledAt: wallNow, scheduledAtText: "now")
        #expect(try await Self.submit(.restart(due), to: replica, in: cluster).status == 202)
        await cluster.run(seconds: 3)
        #expect(cluster.postgres(named: replica)?.snapshot.restarts == 1)
        #expect(await cluster.loop(named: replica)?.snapshot().scheduledRestart == nil)
    }

    @Test func pausedClusterRestartsNowButDoesNotSchedule() async throws {
        let cluster = try await SimulatedClusterTests.bootstrapped()
        let (primary, replicas) = try await Self.roles(cluster)
        let replica = try #require(replicas.first)
        let store = try #require(cluster.store(named: primary))
        let view = try await store.loadCluster()
        var config = view.dynamicConfig
        config.document["pause"] = .bool(true)
        #expect(try await store.writeConfig(config, expected: view.config?.modRevision))
        await cluster.run(seconds: 2)
        let scheduled = try await Self.submit(
            .restart(RestartRequest(scheduledAt: 1_790_003_600, scheduledAtText: "later")), to: replica, in: cluster)
        #expect(scheduled.status == 409)
        #expect(scheduled.message.contains("paused"), "\(scheduled)")
        // Stopped postgres in a paused cluster: the loop leaves it stopped, a restart starts it.
        try await cluster.postgres(named: replica)?.stop(mode: .fast, timeout: .seconds(1))
        await cluster.run(seconds: 2)
        #expect(!cluster.streamingReplicas().contains(replica))
        let now = try await Self.submit(.restart(RestartRequest()), to: replica, in: cluster)
        #expect(now.status == 200, "\(now)")
        #expect(cluster.postgres(named: replica)?.snapshot.running == true)
    }

    @Test func reinitializeReclonesAReplicaAndRefusesOnTheLeader() async throws {
        let cluster = try await SimulatedClusterTests.bootstrapped()
        let (primary, replicas) = try await Self.roles(cluster)
        let replica = try #require(replicas.first)
        let clonesBefore = cluster.postgres(named: replica)?.snapshot.clones ?? 0
        let onLeader = try await Self.submit(.reinitialize(force: false), to: primary, in: cluster)
        #expect(onLeader == OperatorReply(503, "I am the leader, can not reinitialize"))
        let reply = try await Self.submit(.reinitialize(force: true), to: replica, in: cluster)
        #expect(reply == OperatorReply(200, "reinitialize started"))
        await cluster.run(seconds: 3)
        #expect(cluster.postgres(named: replica)?.snapshot.clones == clonesBefore + 1)
        #expect(cluster.streamingReplicas().contains(replica), "\(cluster.events)")
        #expect(cluster.writablePrimaries == [primary])
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
    }

    @Test func reloadReloadsPostgres() async throws {
        let cluster = try await SimulatedClusterTests.bootstrapped()
        let (primary, _) = try await Self.roles(cluster)
        let reply = try await Self.submit(.reload, to: primary, in: cluster)
        #expect(reply.status == 202)
        #expect(reply.message.contains("postgres reloaded"), "\(reply)")
        #expect(cluster.postgres(named: primary)?.snapshot.reloads == 1)
    }
}
