import BatonCore
import Foundation
import Testing

private typealias F = Fixture

/// What `baton pooler` tells PgBouncer, from the cluster view alone.
@Suite struct PoolerPlanTests {
    static let databases = [
        PoolerDatabase(name: "app", dbname: "app", role: .primary),
        PoolerDatabase(name: "app_ro", dbname: "app", role: .replica),
    ]

    @Test func databasesAreReadFromTheCommandLine() throws {
        #expect(
            try PoolerDatabase.parse("app=primary").get() == PoolerDatabase(name: "app", dbname: "app", role: .primary))
        #expect(
            try PoolerDatabase.parse("app_ro=replica:app").get()
                == PoolerDatabase(name: "app_ro", dbname: "app", role: .replica))
        for bad in ["app", "app=leader", "app=primary:", "a b=primary", "app=primary:x;host=evil", "=primary"] {
            if case .success(let parsed) = PoolerDatabase.parse(bad) { Issue.record("\(bad) accepted as \(parsed)") }
        }
    }

    @Test func theReadWriteDatabaseFollowsThePrimaryAndTheReadOnlyOneTheReplicas() {
        let view = F.cluster(
            leader: "a",
            members: [
                F.member("a", role: .primary), F.member("b", lsn: 0x500_0000), F.member("c", lsn: 0x4F8_0000),
                F.member("d", state: .stopped), F.member("e", lsn: 0x100_0000),
            ])
        let targets = PoolerPlan.targets(view, databases: Self.databases, maxLagBytes: 1_048_576)
        #expect(targets["app"] == [PoolerServer(host: "127.0.0.1", port: 5432)])
        // b and c are within 1 MiB; d is stopped; e lags 64 MiB. PgBouncer takes one port for a
        // host list: on a tie, the lowest port's replicas.
        #expect(targets["app_ro"] == [PoolerServer(host: "127.0.0.1", port: 5433)])
        let text = PoolerPlan.includeText(databases: Self.databases, targets: targets)
        #expect(text.contains("[databases]\napp = host=127.0.0.1 port=5432 dbname=app\n"))
        #expect(text.contains("app_ro = host=127.0.0.1 port=5433 dbname=app\n"))
        // Replicas on one port make a round-robin list; one on another port is left out.
        var b = F.member("b")
        b.connURL = "postgres://10.0.0.2:5432/postgres"
        var c = F.member("c")
        c.connURL = "postgres://10.0.0.3:5432/postgres"
        var odd = F.member("d")
        odd.connURL = "postgres://10.0.0.4:6000/postgres"
        let same = F.cluster(leader: "a", members: [F.member("a", role: .primary), b, c, odd])
        let list = PoolerPlan.targets(same, databases: Self.databases, maxLagBytes: 1_048_576)
        #expect(
            list["app_ro"] == [PoolerServer(host: "10.0.0.2", port: 5432), PoolerServer(host: "10.0.0.3", port: 5432)])
        let written = PoolerPlan.includeText(databases: Self.databases, targets: list)
        #expect(written.contains("app_ro = host=10.0.0.2,10.0.0.3 port=5432 dbname=app\n"), "\(written)")
        // A pooler that restarts reads back what it told PgBouncer.
        #expect(PoolerPlan.parseInclude(written, databases: Self.databases) == list)
        #expect(
            PoolerPlan.parseInclude("[databases]\napp = host=x;y port=1 dbname=app\n", databases: Self.databases)
                .isEmpty)
    }

    /// Unknown is not "nowhere": with no leader (or a leader not running as primary) the
    /// read-write database keeps its last target; with no usable replica, the read-only one goes
    /// to the primary.
    @Test func unknownKeepsTheLastTarget() {
        let noLeader = F.cluster(leader: nil, members: [F.member("a"), F.member("b")])
        let targets = PoolerPlan.targets(noLeader, databases: Self.databases, maxLagBytes: 1_048_576)
        #expect(targets["app"] == nil)
        let starting = F.cluster(leader: "a", members: [F.member("a", role: .primary, state: .starting)])
        #expect(PoolerPlan.targets(starting, databases: Self.databases, maxLagBytes: 0)["app"] == nil)
        let alone = F.cluster(leader: "a", members: [F.member("a", role: .primary), F.member("b", lsn: 0x100_0000)])
        let fallback = PoolerPlan.targets(alone, databases: Self.databases, maxLagBytes: 1024)
        #expect(fallback["app_ro"] == [PoolerServer(host: "127.0.0.1", port: 5432)])
        // A replica whose position is unknown is left out (lag unknown is not "no lag").
        var unknown = F.member("b")
        unknown.xlogLocation = nil
        let blind = F.cluster(leader: "a", members: [F.member("a", role: .primary), unknown])
        #expect(
            PoolerPlan.targets(blind, databases: Self.databases, maxLagBytes: 1 << 30)["app_ro"]
                == [PoolerServer(host: "127.0.0.1", port: 5432)])
    }

    /// A hostile member key cannot add a setting to PgBouncer's file through its address.
    @Test func aHostileAddressIsLeftOut() {
        var evil = F.member("a", role: .primary)
        evil.connURL = "postgres://10.0.0.1 auth_user=x:5432/postgres"
        let view = F.cluster(leader: "a", members: [evil])
        #expect(PoolerPlan.targets(view, databases: Self.databases, maxLagBytes: 0)["app"] == nil)
        #expect(PoolerRecord.isName("pool-1.example") && !PoolerRecord.isName("pool 1") && !PoolerRecord.isName(""))
    }
}

/// A switchover waits (bounded) for the registered poolers to pause their read-write databases.
@Suite struct PoolerSwitchoverTests {
    static func pooler(_ name: String, pausedFor: Int64? = nil, failedFor: Int64? = nil, state: String = "following")
        -> PoolerRecord
    {
        var record = PoolerRecord(
            name: name, state: state, primary: "127.0.0.1:5432", replicas: nil, databases: ["app=primary"])
        record.pausedFor = pausedFor
        record.pauseFailedFor = failedFor
        return record
    }

    static func decide(
        _ poolers: [PoolerRecord], at now: MonotonicInstant = F.t0, memory: HAMemory = HAMemory(),
        required: Bool = false
    ) -> Decision {
        var cluster = F.cluster(
            members: [F.member("a", role: .primary), F.member("b")], failover: FailoverRequest(leader: "a", member: "b")
        )
        cluster.poolers = poolers
        var extra: [String: JSONValue] = ["pooler_pause_timeout": .number(5)]
        if required { extra["pooler_pause_required"] = .bool(true) }
        return HADecider.decide(
            F.observe(
                "a", cluster: cluster, postgres: F.primary, config: F.config(extra),
                peers: F.peers([("b", 0x500_0000)]),
                memory: memory, now: now))
    }

    @Test func theLeaderStepsDownOnceEveryPoolerPaused() {
        let waiting = Self.decide([Self.pooler("p1", pausedFor: 77), Self.pooler("p2")])
        #expect(waiting.reason == .waitingForPoolers(["p2"]) && !waiting.actions.contains(.demote(.graceful)))
        #expect(waiting.recheckAfter == .seconds(5))
        let ready = Self.decide(
            [Self.pooler("p1", pausedFor: 77), Self.pooler("p2", pausedFor: 77)], memory: waiting.memory)
        #expect(ready.actions == [.demote(.graceful)] && ready.reason == .switchoverSteppingDown(candidate: "b"))
        // A pooler that cannot reach PgBouncer, or follows only replicas, is not waited for.
        var replicasOnly = Self.pooler("p3")
        replicasOnly.databases = ["app_ro=replica"]
        let others = Self.decide([Self.pooler("p4", state: "pgbouncer_unreachable"), replicasOnly])
        #expect(others.actions == [.demote(.graceful)])
        // Nor one that does not pause for switchovers (--no-pause-on-switchover).
        var noPause = Self.pooler("p5")
        noPause.pauses = false
        #expect(Self.decide([noPause]).actions == [.demote(.graceful)])
        let decoded = try? JSONDecoder().decode(
            PoolerRecord.self,
            from: Data(#"{"name":"p6","state":"following","databases":["app=primary"],"pauses":false}"#.utf8))
        #expect(decoded?.pausesForSwitchover == false)
    }

    @Test func thePoolersStatusReadsAsPrometheusText() {
        var health = PoolerHealth(name: "pool-1", pausesForSwitchover: true)
        #expect(!health.healthy && health.state == "starting")
        health.state = "store_unreachable"
        health.topologyAgeSeconds = 12.3456
        health.switchoverPauses = 3
        let text = health.prometheusText
        #expect(text.contains("baton_pooler_following{pooler=\"pool-1\"} 0\n"))
        #expect(text.contains("baton_pooler_topology_age_seconds{pooler=\"pool-1\"} 12.346\n"))
        #expect(
            text.contains(
                "# TYPE baton_pooler_switchover_pauses_total counter\nbaton_pooler_switchover_pauses_total{pooler=\"pool-1\"} 3\n"
            ))
        health.state = "following"
        health.topologyAgeSeconds = nil
        #expect(health.healthy == false, "no read yet")
        health.topologyAgeSeconds = 16
        #expect(health.healthy == false, "a read older than its passes allow")
        health.topologyAgeSeconds = 1
        #expect(health.healthy)
    }

    @Test func aPoolerThatDoesNotPauseInTimeIsLeftBehindOrStopsTheSwitchover() {
        let first = Self.decide([Self.pooler("p1")])
        let later = Self.decide([Self.pooler("p1")], at: F.t0 + .seconds(6), memory: first.memory)
        #expect(later.actions == [.demote(.graceful)] && later.reason == .switchoverWithoutPoolers(["p1"]))
        let failed = Self.decide([Self.pooler("p1", failedFor: 77)])
        #expect(failed.reason == .switchoverWithoutPoolers(["p1"]))
        let required = Self.decide([Self.pooler("p1", failedFor: 77)], required: true)
        #expect(
            required.actions.contains(.clearFailover(expected: 77)) && !required.actions.contains(.demote(.graceful)))
        if case .switchoverRejected = required.reason {} else { Issue.record("\(required.reason)") }
        // A pause acknowledged for another request does not count.
        #expect(Self.decide([Self.pooler("p1", pausedFor: 12)]).reason == .waitingForPoolers(["p1"]))
    }
}

/// The pooler's settings in the config key are bounded: a leader holds its sync-standby upkeep
/// while it waits.
@Suite struct PoolerSettingsTests {
    @Test func thePauseTimeoutIsBounded() {
        for bad: JSONValue in [.number(0), .number(31), .number(3_600), .string("soon")] {
            #expect(!F.config(["pooler_pause_timeout": bad]).validationErrors().isEmpty, "\(bad)")
        }
        #expect(F.config(["pooler_pause_timeout": .number(2.5)]).validationErrors().isEmpty)
        #expect(F.config(["pooler_pause_timeout": .number(2.5)]).poolerPauseTimeout == .milliseconds(2500))
        #expect(!F.config(["pooler_pause_required": .string("maybe")]).validationErrors().isEmpty)
    }
}
