import BatonAPI
import BatonCore
import BatonHA
import BatonTesting
import Hummingbird
import HummingbirdTesting
import Testing

@Suite struct ControlTests {
    /// A store holding a config key and a cluster led by node1 with members node2 and node3.
    static func seeded() async throws -> FakeSource {
        let source = FakeSource(Fixture.primary())
        let store = source.memoryStore
        #expect(
            try await store.writeConfig(DynamicConfig(["ttl": .number(30), "loop_wait": .number(10)]), expected: nil))
        for member in Fixture.members {
            let session = try await store.createSession(ttl: .seconds(30))
            try await store.publishMember(member, session: session)
            if member.name == "node1" {
                #expect(try await store.acquireLeader(member: "node1", session: session))
            }
        }
        return source
    }

    static func fastConfig() -> APIConfiguration {
        APIConfiguration(port: 0, switchoverTimeout: .milliseconds(300), switchoverPollInterval: .milliseconds(20))
    }

    @Test func patchMergesValidatesAndWrites() async throws {
        let source = try await Self.seeded()
        let app = try Fixture.application(source)
        try await app.test(.router) { client in
            try await client.execute(
                uri: "/config", method: .patch,
                body: jsonBody(#"{"loop_wait": 5, "postgresql": {"parameters": {"work_mem": "8MB"}}}"#)
            ) { response in
                #expect(response.status == .ok)
                #expect(response.json["loop_wait"] == .number(5))
                #expect(response.json["ttl"] == .number(30))
            }
            try await client.execute(uri: "/config", method: .patch, body: jsonBody(#"{"loop_wait": null}"#)) {
                #expect($0.status == .ok)
                #expect($0.json["loop_wait"] == nil)
            }
            try await source.refreshFromStore()
            try await client.execute(uri: "/config", method: .get) { response in
                #expect(response.json["postgresql"] == .object(["parameters": .object(["work_mem": .string("8MB")])]))
            }
            try await client.execute(uri: "/config", method: .patch, body: jsonBody(#"{"ttl": 2}"#)) { response in
                #expect(response.status == .badRequest)
                #expect(response.json["error"]?.stringValue?.contains("ttl") == true)
            }
            try await client.execute(uri: "/config", method: .patch, body: jsonBody(#"{"pause": "maybe"}"#)) {
                #expect($0.status == .badRequest)
            }
        }
        let stored = try await source.store.loadCluster().config?.value
        #expect(stored?.document["ttl"] == .number(30))
        #expect(!source.wakeReasons.isEmpty)
    }

    /// `GET /config` needs no authentication: it answers from the cluster the HA loop last read and
    /// never asks the store, so a flood of it costs etcd nothing. Before, each request was a
    /// linearizable read on the agent's own etcd client, ahead of its lease keepalives.
    @Test func getConfigAnswersFromTheLoopsViewWithoutTheStore() async throws {
        let source = try await Self.seeded()
        try await source.refreshFromStore()
        source.memoryStore.partitioned = true
        try await Fixture.application(source).test(.router) { client in
            try await client.execute(uri: "/config", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.json["ttl"] == .number(30))
            }
        }
        source.update { $0.cluster = nil }
        try await Fixture.application(source).test(.router) { client in
            try await client.execute(uri: "/config", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(response.json["error"]?.stringValue?.contains("not read the cluster") == true)
            }
        }
    }

    /// `GET /cluster` before the HA loop's first read (an agent just started): one read of the
    /// store, as Patroni answers it from etcd (before: 503 until the first cycle); 503 when the
    /// store cannot be read either.
    @Test func clusterBeforeTheLoopsFirstReadAsksTheStore() async throws {
        let source = try await Self.seeded()
        source.update { $0.cluster = nil }
        try await Fixture.application(source).test(.router) { client in
            try await client.execute(uri: "/cluster", method: .get) { response in
                #expect(response.status == .ok, "\(response.text)")
                #expect(response.text.contains("node1"), "\(response.text)")
            }
        }
        source.memoryStore.partitioned = true
        try await Fixture.application(source).test(.router) { client in
            try await client.execute(uri: "/cluster", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(response.json["error"]?.stringValue?.contains("not read the cluster") == true)
            }
        }
    }

    @Test func putReplaces() async throws {
        let source = try await Self.seeded()
        try await Fixture.application(source).test(.router) { client in
            try await client.execute(uri: "/config", method: .put, body: jsonBody(#"{"ttl": 30, "loop_wait": 4}"#)) {
                #expect($0.status == .ok)
            }
        }
        #expect(
            try await source.store.loadCluster().config?.value
                == DynamicConfig(["ttl": .number(30), "loop_wait": .number(4)]))
    }

    @Test func concurrentConfigChangeIsAConflict() async throws {
        // A store whose config changes between our read and our write.
        let source = try await Self.seeded()
        let racing = RacingStore(base: source.memoryStore)
        let racingSource = FakeSourceWithStore(base: source, store: racing)
        let app = try BatonAPIServer(source: racingSource, configuration: Self.fastConfig(), logger: .init(label: "t"))
            .makeApplication()
        try await app.test(.router) { client in
            try await client.execute(uri: "/config", method: .patch, body: jsonBody(#"{"loop_wait": 5}"#)) { response in
                #expect(response.status == .conflict)
                #expect(response.json["error"]?.stringValue?.contains("GET /config") == true)
            }
        }
    }

    @Test func badBodies() async throws {
        let source = try await Self.seeded()
        try await Fixture.application(source).test(.router) { client in
            for body in ["{", "[1]", "", "\"text\"", #"{"leader": 1}"#, #"{"leader": "node1", "cadidate": "x"}"#] {
                try await client.execute(uri: "/switchover", method: .post, body: jsonBody(body)) { response in
                    #expect(response.status == .badRequest, "\(body)")
                    #expect(response.json["error"] != nil, "\(body): \(response.text)")
                }
            }
            try await client.execute(uri: "/config", method: .patch, body: jsonBody("{\"a\": [")) {
                #expect($0.status == .badRequest)
            }
            let huge = "{\"x\": \"" + String(repeating: "a", count: 70 * 1024) + "\"}"
            try await client.execute(uri: "/config", method: .patch, body: jsonBody(huge)) { response in
                #expect(response.status == .contentTooLarge)
                #expect(response.json["error"]?.stringValue?.contains("KiB") == true)
            }
        }
    }

    @Test func switchoverValidation() async throws {
        let source = try await Self.seeded()
        try await Fixture.application(source, configuration: Self.fastConfig()).test(.router) { client in
            let cases: [(String, UInt, String)] = [
                (#"{"leader": "node2"}"#, 412, "leader name does not match"),
                (#"{"leader": "node1", "candidate": "node9"}"#, 412, "does not exist"),
                (#"{"leader": "node1", "candidate": "node1"}"#, 412, "already the leader"),
                (#"{"candidate": "node2"}"#, 400, "specific leader"),
                (#"{"leader": "node1", "scheduled_at": "yesterday"}"#, 400, "unable to parse"),
                (#"{"leader": "node1", "scheduled_at": "2020-01-01T00:00:00+00:00"}"#, 422, "past"),
                (#"{"leader": "node1", "scheduled_at": "2099-01-01T00:00:00"}"#, 400, "time zone"),
            ]
            for (body, code, text) in cases {
                try await client.execute(uri: "/switchover", method: .post, body: jsonBody(body)) { response in
                    #expect(UInt(response.status.code) == code, "\(body): \(response.text)")
                    #expect(response.text.contains(text), "\(body): \(response.text)")
                }
            }
            try await client.execute(uri: "/failover", method: .post, body: jsonBody(#"{}"#)) { response in
                #expect(response.status == .badRequest)
            }
        }
        #expect(try await source.store.loadCluster().failover == nil)
    }

    @Test func scheduledSwitchoverAndCancel() async throws {
        let source = try await Self.seeded()
        try await Fixture.application(source, configuration: Self.fastConfig()).test(.router) { client in
            try await client.execute(uri: "/switchover", method: .delete) { #expect($0.status == .notFound) }
            let body = #"{"leader": "node1", "candidate": "node2", "scheduled_at": "2099-01-01T00:00:00+00:00"}"#
            try await client.execute(uri: "/switchover", method: .post, body: jsonBody(body)) { response in
                #expect(response.status == .accepted, "\(response.text)")
                #expect(response.text == "Switchover scheduled")
            }
            let key = try await source.store.loadCluster().failover?.value
            #expect(key == FailoverRequest(leader: "node1", member: "node2", scheduledAt: "2099-01-01T00:00:00+00:00"))
            try await client.execute(uri: "/switchover", method: .post, body: jsonBody(body)) { response in
                #expect(response.status == .conflict, "already scheduled")
            }
            try await client.execute(uri: "/switchover", method: .delete) { #expect($0.status == .ok) }
        }
        #expect(try await source.store.loadCluster().failover == nil)
        #expect(source.wakeReasons.count == 2)
    }

    @Test func immediateSwitchoverWaitsForTheNewLeader() async throws {
        let source = try await Self.seeded()
        let store = source.memoryStore
        try await Fixture.application(source, configuration: Self.fastConfig()).test(.router) { client in
            async let answer = client.execute(
                uri: "/switchover", method: .post, body: jsonBody(#"{"leader": "node1", "candidate": "node2"}"#)
            ) { ($0.status, $0.text) }
            // Play the HA loops: wait for the key, hand the leader key over, clear the request.
            for _ in 0..<100 {
                if try await store.loadCluster().failover != nil { break }
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(try await store.releaseLeader(member: "node1"))
            let session = try await store.createSession(ttl: .seconds(30))
            #expect(try await store.acquireLeader(member: "node2", session: session))
            _ = try await store.deleteFailover(expected: nil)
            let (status, text) = try await answer
            #expect(status == .ok)
            #expect(text == #"Successfully switched over to "node2""#)
        }
    }

    @Test func unconfirmedSwitchoverIs503() async throws {
        let source = try await Self.seeded()
        try await Fixture.application(source, configuration: Self.fastConfig()).test(.router) { client in
            try await client.execute(
                uri: "/switchover", method: .post, body: jsonBody(#"{"leader": "node1"}"#)
            ) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(response.text.contains("status unknown"))
            }
        }
    }

    @Test func failoverWithoutLeaderWritesTheKey() async throws {
        let source = try await Self.seeded()
        _ = try await source.memoryStore.releaseLeader(member: "node1")
        try await Fixture.application(source, configuration: Self.fastConfig()).test(.router) { client in
            try await client.execute(uri: "/failover", method: .post, body: jsonBody(#"{"candidate": "node3"}"#)) {
                #expect($0.status == .serviceUnavailable, "nobody takes over in this test: \($0.text)")
            }
        }
        #expect(try await source.store.loadCluster().failover?.value == FailoverRequest(member: "node3"))
    }
}

/// A source like `base` but with another store.
struct FakeSourceWithStore: APIStateSource {
    let base: FakeSource
    let store: any ClusterStore
    var memberName: String { base.memberName }
    var scope: String { base.scope }
    var clock: any MonotonicClock { base.clock }
    func wallClockSeconds() -> Double { base.wallClockSeconds() }
    func status() async -> HAStatus { await base.status() }
    func wake(_ reason: String) { base.wake(reason) }
    func submit(_ request: OperatorRequest) async -> OperatorReply { await base.submit(request) }
}

/// Delegates to an in-memory store, but changes the config key right after every read of the
/// cluster, so that every compare-and-swap on it loses.
struct RacingStore: ForwardingClusterStore {
    let base: InMemoryClusterStore

    func loadCluster() async throws -> ClusterView {
        let view = try await base.loadCluster()
        _ = try await base.writeConfig(
            view.dynamicConfig.merging(patch: .object(["retry_timeout": .number(9)])),
            expected: view.config?.modRevision)
        return view
    }
}
