import BatonCore
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
        // b and c are within 1 MiB; d is stopped; e lags 64 MiB.
        #expect(
            targets["app_ro"] == [
                PoolerServer(host: "127.0.0.1", port: 5433), PoolerServer(host: "127.0.0.1", port: 5434),
            ])
        let text = PoolerPlan.includeText(databases: Self.databases, targets: targets)
        #expect(text.contains("[databases]\napp = host=127.0.0.1 port=5432 dbname=app\n"))
        #expect(text.contains("app_ro = host=127.0.0.1,127.0.0.1 port=5433,5434 dbname=app\n"))
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
