import BatonAPI
import BatonCore
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Synchronization
import Testing

/// `baton pooler`'s status endpoint: `/health` is 200 only while the pooler follows the cluster
/// (503 before its first read, without etcd, without PgBouncer), `/metrics` is valid Prometheus
/// text.
@Suite struct PoolerStatusServerTests {
    final class State: Sendable {
        let health = Mutex(PoolerHealth(name: "pool1", pausesForSwitchover: true))
    }

    @Test func healthFollowsTheStateAndMetricsParse() async throws {
        let state = State()
        let app = PoolerStatusServer.makeService(host: "127.0.0.1", port: 0, logger: Logger(label: "test")) {
            state.health.withLock { $0 }
        }
        try await app.test(.router) { client in
            try await client.execute(uri: "/health", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(response.json["state"] == .string("starting"))
            }
            state.health.withLock {
                $0.state = "following"
                $0.storeReachable = true
                $0.pgbouncerReachable = true
                $0.primary = "10.0.0.1:5432"
                $0.topologyAgeSeconds = 20
            }
            // Following, but its last read is older than its passes allow: stuck, not healthy.
            try await client.execute(uri: "/health", method: .get) { #expect($0.status == .serviceUnavailable) }
            state.health.withLock { $0.topologyAgeSeconds = 0.5 }
            try await client.execute(uri: "/health", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.json["primary"] == .string("10.0.0.1:5432"))
                #expect(response.json["store_reachable"] == .bool(true))
            }
            try await client.execute(uri: "/health", method: .head) { #expect($0.status == .ok) }
            state.health.withLock {
                $0.state = "store_unreachable"
                $0.storeReachable = false
                $0.topologyAgeSeconds = 42
            }
            try await client.execute(uri: "/health", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(response.json["state"] == .string("store_unreachable"))
            }
            try await client.execute(uri: "/metrics", method: .get) { response in
                #expect(response.status == .ok)
                let parsed = try MetricsFormatTests.parse(response.text)
                #expect(parsed.types["baton_pooler_store_reachable"] == "gauge")
                #expect(
                    parsed.samples.contains {
                        $0.name == "baton_pooler_store_reachable" && $0.labels == ["pooler": "pool1"] && $0.value == 0
                    })
            }
            try await client.execute(uri: "/config", method: .get) { #expect($0.status == .notFound) }
        }
    }
}
