import BatonAPI
import BatonCore
import BatonHA
import BatonTesting
import Hummingbird
import HummingbirdTesting
import Logging
import Synchronization
import Testing

/// `POST /restart`, `DELETE /restart`, `POST /reload`, `POST /reinitialize`: body checks against a
/// canned source, then the codes of the real HA loop (simulated three-member cluster) per role.
@Suite struct OperatorEndpointTests {
    @Test func restartBodiesAreChecked() async throws {
        let source = FakeSource(Fixture.primary())
        try await Fixture.application(source).test(.router) { client in
            let refused: [(String, HTTPResponse.Status, String)] = [
                (#"{"role": "leader"}"#, .badRequest, "role"),
                (#"{"postgres_version": "fifteen"}"#, .badRequest, "postgres_version"),
                (#"{"postgres_version": 15}"#, .badRequest, "postgres_version"),
                (#"{"timeout": -1}"#, .badRequest, "Timeout should be a positive number"),
                (#"{"timeout": "soon"}"#, .badRequest, "Timeout"),
                (#"{"restart_pending": "perhaps"}"#, .badRequest, "restart_pending"),
                (#"{"reboot": true}"#, .badRequest, "Unknown filter for the scheduled restart: reboot"),
                (#"{"schedule": "2020-01-01T00:00:00+00:00"}"#, .unprocessableContent, "in the past"),
                (#"{"schedule": "2099-01-01T00:00:00"}"#, .badRequest, "Timezone information is mandatory"),
                (#"{"schedule": "tomorrow"}"#, .unprocessableContent, "unable to parse"),
                (#"{"schedule": 5}"#, .badRequest, "schedule"),
                (#"{"role": "#, .badRequest, "not valid JSON"),
                (#"[1, 2]"#, .badRequest, "must be a JSON object"),
            ]
            for (body, status, words) in refused {
                try await client.execute(uri: "/restart", method: .post, body: jsonBody(body)) { response in
                    #expect(response.status == status, "\(body): \(response.text)")
                    #expect(response.json["error"]?.stringValue?.contains(words) == true, "\(body): \(response.text)")
                }
            }
            try await client.execute(uri: "/reinitialize", method: .post, body: jsonBody(#"{"force": "maybe"}"#)) {
                #expect($0.status == .badRequest)
            }
            try await client.execute(uri: "/reinitialize", method: .post, body: jsonBody(#"{"wipe": true}"#)) {
                #expect($0.status == .badRequest)
            }
            // Oversize bodies are refused before they reach the loop.
            let big = "{\"role\": \"" + String(repeating: "x", count: 70 * 1024) + "\"}"
            try await client.execute(uri: "/restart", method: .post, body: jsonBody(big)) {
                #expect($0.status == .contentTooLarge)
            }
        }
        #expect(source.operatorRequests.isEmpty, "refused bodies must not reach the HA loop")
    }

    @Test func restartBodiesReachTheLoopParsed() async throws {
        let source = FakeSource(Fixture.primary())
        try await Fixture.application(source).test(.router) { client in
            try await client.execute(uri: "/restart", method: .post) { #expect($0.status == .ok) }
            try await client.execute(
                uri: "/restart", method: .post,
                body: jsonBody(
                    #"{"role": "master", "postgres_version": "16.1", "timeout": "90s", "restart_pending": true, "#
                        + #""schedule": "2099-01-01T00:00:00+00:00"}"#)
            ) { #expect($0.status == .accepted) }
            try await client.execute(uri: "/reinitialize", method: .post, body: jsonBody(#"{"force": true}"#)) {
                #expect($0.status == .ok)
            }
            try await client.execute(uri: "/reload", method: .post) { #expect($0.status == .accepted) }
            try await client.execute(uri: "/restart", method: .delete) { #expect($0.status == .notFound) }
        }
        let requests = source.operatorRequests
        #expect(requests.count == 5)
        #expect(requests.first == .restart(RestartRequest()))
        guard requests.count == 5, case .restart(let parsed) = requests[1] else { return }
        #expect(parsed.role == .primary)
        #expect(parsed.postgresVersionBelow == 160_001)
        #expect(parsed.timeout == .seconds(90))
        #expect(parsed.onlyIfPending)
        #expect(parsed.scheduledAtText == "2099-01-01T00:00:00+00:00")
        #expect(requests[2] == .reinitialize(force: true))
        #expect(requests[3] == .reload)
        #expect(requests[4] == .cancelScheduledRestart)
    }

    @Test func postgresVersionsAsServerVersionNum() {
        #expect(BatonAPIServer.postgresVersionNumber("15.4") == 150_004)
        #expect(BatonAPIServer.postgresVersionNumber("9.6.3") == 90603)
        #expect(BatonAPIServer.postgresVersionNumber("16") == 160_000)
        #expect(BatonAPIServer.postgresVersionNumber("9") == nil)
        #expect(BatonAPIServer.postgresVersionNumber("15.4.1") == nil)
        #expect(BatonAPIServer.postgresVersionNumber("x.1") == nil)
    }

    // MARK: The real HA loop behind the API

    /// A bootstrapped simulated cluster, stepped in the background while requests are served.
    final class Running: Sendable {
        let cluster: SimulatedCluster
        let driver: Task<Void, Never>

        init() async throws {
            let cluster = SimulatedCluster()
            for _ in 0..<300 {
                await cluster.step()
                if cluster.writablePrimaries.count == 1, cluster.streamingReplicas().count == 2 { break }
            }
            try #require(cluster.writablePrimaries.count == 1 && cluster.streamingReplicas().count == 2)
            self.cluster = cluster
            self.driver = Task {
                for _ in 0..<20_000 where !Task.isCancelled {
                    await cluster.step()
                    await Task.yield()
                }
            }
        }

        func application(_ member: String) throws -> BatonAPIApplication {
            let loop = try #require(cluster.loop(named: member))
            let store = try #require(cluster.store(named: member))
            let source = HALoopStateSource(
                loop: loop, memberName: member, scope: "demo", store: store, clock: cluster.clock,
                wallClock: { 1_790_000_000 })
            return try BatonAPIServer(
                source: source, configuration: APIConfiguration(port: 0), logger: Logger(label: "t")
            )
            .makeApplication()
        }

        deinit { driver.cancel() }
    }

    @Test func codesFromTheLoopInEachRole() async throws {
        let running = try await Running()
        let cluster = running.cluster
        let primary = try #require(cluster.writablePrimaries.first)
        let replica = try #require(cluster.streamingReplicas().sorted().first)
        try await running.application(primary).test(.router) { client in
            try await client.execute(uri: "/reinitialize", method: .post) { response in
                OpenAPIConformanceTests.check(.post, "/reinitialize", response)
                #expect(response.status == .serviceUnavailable)
                #expect(response.json["error"]?.stringValue == "I am the leader, can not reinitialize")
            }
            try await client.execute(uri: "/restart", method: .post, body: jsonBody(#"{"role": "replica"}"#)) {
                #expect($0.status == .serviceUnavailable)
                #expect($0.json["error"]?.stringValue?.contains("restart conditions are not satisfied") == true)
            }
            try await client.execute(uri: "/restart", method: .post, body: jsonBody(#"{"role": "primary"}"#)) {
                #expect($0.status == .ok, "\($0.text)")
                #expect($0.text == "restarted successfully")
            }
            try await client.execute(uri: "/reload", method: .post) {
                OpenAPIConformanceTests.check(.post, "/reload", $0)
                #expect($0.status == .accepted, "\($0.text)")
            }
            try await client.execute(uri: "/restart", method: .delete) {
                OpenAPIConformanceTests.check(.delete, "/restart", $0)
                #expect($0.status == .notFound)
            }
        }
        try await running.application(replica).test(.router) { client in
            try await client.execute(
                uri: "/restart", method: .post, body: jsonBody(#"{"schedule": "2030-01-01T00:00:00+00:00"}"#)
            ) { #expect($0.status == .accepted, "\($0.text)") }
            try await client.execute(
                uri: "/restart", method: .post, body: jsonBody(#"{"schedule": "2030-01-02T00:00:00+00:00"}"#)
            ) {
                OpenAPIConformanceTests.check(.post, "/restart", $0)
                #expect($0.status == .conflict, "\($0.text)")
            }
            try await client.execute(uri: "/restart", method: .delete) { #expect($0.status == .ok) }
            try await client.execute(uri: "/reinitialize", method: .post, body: jsonBody(#"{"force": true}"#)) {
                #expect($0.status == .ok, "\($0.text)")
                #expect($0.text == "reinitialize started")
            }
        }
        running.driver.cancel()
        #expect(cluster.postgres(named: primary)?.snapshot.restarts == 1)
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
    }
}
