import BatonAPI
import BatonCore
import BatonHA
import Hummingbird
import HummingbirdTesting
import Testing

@Suite struct HealthCheckTests {
    /// Status code of every health path for a snapshot, through the router.
    func codes(_ status: HAStatus, query: String = "") async throws -> [String: UInt] {
        let source = FakeSource(status)
        let app = try Fixture.application(source)
        let paths = HealthCheck.allCases.flatMap(\.paths)
        return try await app.test(.router) { client in
            var result: [String: UInt] = [:]
            for path in paths {
                let code = try await client.execute(uri: path + query, method: .get) { UInt($0.status.code) }
                result[path] = code
            }
            return result
        }
    }

    func expect(_ codes: [String: UInt], ok: Set<String>, sourceLocation: SourceLocation = #_sourceLocation) {
        for (path, code) in codes {
            #expect(code == (ok.contains(path) ? 200 : 503), "\(path) answered \(code)", sourceLocation: sourceLocation)
        }
    }

    @Test func primary() async throws {
        expect(
            try await codes(Fixture.primary()),
            ok: [
                "/", "/primary", "/read-write", "/master", "/leader", "/read-only", "/health", "/liveness",
                "/readiness", "/read-only-sync", "/read-only-synchronous", "/read-only-quorum",
            ])
    }

    @Test func replica() async throws {
        expect(
            try await codes(Fixture.replica()),
            ok: ["/replica", "/read-only", "/asynchronous", "/async", "/health", "/liveness", "/readiness"])
    }

    @Test func laggingReplicaFailsLagLimitedChecks() async throws {
        let codes = try await codes(Fixture.laggingReplica(), query: "?lag=10MB")
        expect(codes, ok: ["/health", "/liveness"])
        // Without a limit it is still a replica, but not ready (maximum_lag_on_failover is 1 MiB).
        let unlimited = try await self.codes(Fixture.laggingReplica())
        #expect(unlimited["/replica"] == 200)
        #expect(unlimited["/readiness"] == 503)
        let generous = try await self.codes(Fixture.laggingReplica(), query: "?lag=1GB")
        #expect(generous["/replica"] == 200)
        #expect(generous["/readiness"] == 200)
    }

    @Test func stoppedPostgres() async throws {
        expect(try await codes(Fixture.stopped()), ok: ["/liveness"])
    }

    @Test func pausedClusterPrimaryStillAnswersAsPrimary() async throws {
        let codes = try await codes(Fixture.paused())
        expect(
            codes,
            ok: [
                "/", "/primary", "/read-write", "/master", "/leader", "/read-only", "/health", "/liveness",
                "/readiness", "/read-only-sync", "/read-only-synchronous", "/read-only-quorum",
            ])
    }

    @Test func livenessFailsWhenTheLoopIsStuck() async throws {
        var status = Fixture.primary()
        status.lastCycleAt = Fixture.now - .seconds(31)
        #expect(try await codes(status)["/liveness"] == 503)
        var replica = Fixture.replica()
        replica.lastCycleAt = Fixture.now - .seconds(31)
        #expect(try await codes(replica)["/liveness"] == 200, "a replica gets two ttl")
        replica.lastCycleAt = nil
        #expect(try await codes(replica)["/liveness"] == 503)
        // In maintenance mode a stuck loop is no reason to restart the agent (Patroni: 200).
        var paused = Fixture.paused()
        paused.lastCycleAt = Fixture.now - .seconds(300)
        #expect(try await codes(paused)["/liveness"] == 200)
    }

    /// `/readiness?mode=`: the replayed position by default (Patroni's apply), the received one
    /// with `mode=write`. Before, the larger of the two counted whatever was asked.
    @Test func readinessMeasuresReplayOrReceive() async throws {
        var replica = Fixture.replica()
        replica.postgres.receiveLSN = LSN(50_000_000)
        replica.postgres.replayLSN = LSN(40_000_000)
        #expect(try await codes(replica)["/readiness"] == 503)
        #expect(try await codes(replica, query: "?mode=apply")["/readiness"] == 503)
        #expect(try await codes(replica, query: "?mode=write")["/readiness"] == 200)
        #expect(try await codes(replica, query: "?lag=20MB")["/readiness"] == 200)
    }

    /// The synchronous and quorum read-only checks Patroni 4 answers (before: 404).
    @Test func readOnlySyncAndQuorum() async throws {
        var synchronous = Fixture.replica()
        synchronous.cluster = Fixture.cluster(sync: ["node2"])
        synchronous.config = synchronous.cluster?.dynamicConfig ?? DynamicConfig()
        let sync = try await codes(synchronous)
        #expect(sync["/read-only-sync"] == 200 && sync["/read-only-synchronous"] == 200)
        #expect(sync["/quorum"] == 503 && sync["/read-only-quorum"] == 503)
        let asynchronous = try await codes(Fixture.replica())
        #expect(asynchronous["/read-only-sync"] == 503)
    }

    @Test func failsafeMembersAreAnsweredAsPatroniDoes() async throws {
        var status = Fixture.primary()
        let app = try Fixture.application(FakeSource(status))
        try await app.test(.router) { client in
            try await client.execute(uri: "/failsafe", method: .get) { #expect($0.status == .badGateway) }
        }
        status.cluster?.failsafe = ["node1": "http://10.0.0.1:8008/patroni", "node2": "http://10.0.0.2:8008/patroni"]
        let withKey = try Fixture.application(FakeSource(status))
        try await withKey.test(.router) { client in
            try await client.execute(uri: "/failsafe", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.json["node2"] == .string("http://10.0.0.2:8008/patroni"))
            }
        }
    }

    @Test func synchronousStandby() async throws {
        var status = Fixture.replica()
        status.cluster = Fixture.cluster(sync: ["node2"])
        status.config = status.cluster?.dynamicConfig ?? DynamicConfig()
        let codes = try await codes(status)
        #expect(codes["/synchronous"] == 200)
        #expect(codes["/sync"] == 200)
        #expect(codes["/asynchronous"] == 503)
        #expect(codes["/async"] == 503)
    }

    @Test func standbyLeader() async throws {
        var status = Fixture.replica()
        status.holdsLeaderKey = true
        let codes = try await codes(status)
        #expect(codes["/standby-leader"] == 200)
        #expect(codes["/leader"] == 200)
        #expect(codes["/primary"] == 503)
        #expect(codes["/replica"] == 503)
        #expect(codes["/read-only"] == 200)
    }

    @Test func replicaFilters() async throws {
        #expect(try await codes(Fixture.replica(), query: "?tag_zone=a")["/replica"] == 200)
        #expect(try await codes(Fixture.replica(), query: "?tag_zone=b")["/replica"] == 503)
        #expect(try await codes(Fixture.replica(), query: "?tag_rack=1")["/replica"] == 503)
        #expect(try await codes(Fixture.replica(), query: "?replication_state=streaming")["/replica"] == 200)
        let archive = Fixture.replica(streaming: false)
        #expect(try await codes(archive, query: "?replication_state=streaming")["/replica"] == 503)
        #expect(try await codes(archive)["/readiness"] == 503)
        var noLoadBalance = Fixture.replica()
        noLoadBalance.published?.tags = Tags(["noloadbalance": .bool(true)])
        #expect(try await codes(noLoadBalance)["/replica"] == 503)
    }

    @Test func headAndOptionsAnswerTheCodeWithoutBody() async throws {
        let app = try Fixture.application(FakeSource(Fixture.replica()))
        try await app.test(.router) { client in
            for method in [HTTPRequest.Method.head, .options] {
                try await client.execute(uri: "/replica", method: method) { response in
                    #expect(response.status == .ok)
                    #expect(response.body.readableBytes == 0)
                }
                try await client.execute(uri: "/primary", method: method) { response in
                    #expect(response.status == .serviceUnavailable)
                }
            }
            try await client.execute(uri: "/primary", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(response.json["role"] == .string("replica"))
            }
        }
    }

    @Test func malformedLagIsABadRequest() async throws {
        let app = try Fixture.application(FakeSource(Fixture.replica()))
        try await app.test(.router) { client in
            try await client.execute(uri: "/replica?lag=lots", method: .get) { response in
                #expect(response.status == .badRequest)
                #expect(response.json["error"]?.stringValue?.contains("16kB") == true)
            }
        }
    }

    @Test func sizes() {
        #expect(HealthQuery.parseSize("1048576") == 1_048_576)
        #expect(HealthQuery.parseSize("16kB") == 16 * 1024)
        #expect(HealthQuery.parseSize("10MB") == 10 * 1024 * 1024)
        #expect(HealthQuery.parseSize("1GB") == 1 << 30)
        #expect(HealthQuery.parseSize("1gb") == 1 << 30)
        #expect(HealthQuery.parseSize("1 TB") == 1 << 40)
        #expect(HealthQuery.parseSize("MB") == nil)
        #expect(HealthQuery.parseSize("-1") == nil)
        #expect(HealthQuery.parseSize("99999999999999TB") == nil)
    }
}
