import BatonAPI
import BatonCore
import BatonHA
import BatonTesting
import Hummingbird
import HummingbirdTesting
import PropertyBased
import Testing

/// Random and adversarial bodies at the endpoints that take input: every one is answered, never
/// with a 5xx that means a bug and never by a trap, and every refusal names what is wrong.
@Suite struct HostileBodyTests {
    static let fragments: [String] = [
        "1e300", "-1e300", "1e400", "-0", "0", "9999999999999999", "99999999999999999999", "\"nan\"", "\"inf\"",
        "\"-inf\"", "\"9999999999999999\"", "\"1e300s\"", "\"60s\"", "\"15.4\"", "\"99999.99999.9999\"",
        "\"2099-01-01T00:00:00+00:00\"", "\"\"", "null", "true", "[]", "{}", "[1e300]", "{\"a\": 1e300}",
        "\"primary\"", "\"replica\"", "\"\\u0000\"",
    ]
    static let restartKeys = ["timeout", "postgres_version", "role", "schedule", "restart_pending", "x"]
    static let configKeys = [
        "ttl", "loop_wait", "retry_timeout", "maximum_lag_on_failover", "primary_start_timeout",
        "synchronous_node_count", "pause", "synchronous_mode", "postgresql",
    ]

    static func body(_ keys: [String], _ picks: [Int], mask: Int) -> String {
        let fields = keys.enumerated().filter { mask & (1 << $0.offset) != 0 }.map { index, key in
            "\"\(key)\": \(fragments[picks[index] % fragments.count])"
        }
        return "{" + fields.joined(separator: ", ") + "}"
    }

    @Test func restartBodiesNeverTrap() async throws {
        let source = FakeSource(Fixture.primary())
        try await Fixture.application(source).test(.router) { client in
            await propertyCheck(
                count: 1500, input: Gen.int(in: 0...10_000).array(of: Self.restartKeys.count),
                Gen.int(in: 1...((1 << Self.restartKeys.count) - 1))
            ) { picks, mask in
                let body = Self.body(Self.restartKeys, picks, mask: mask)
                try await client.execute(uri: "/restart", method: .post, body: jsonBody(body)) { response in
                    #expect(
                        response.status.code < 500 || response.status == .serviceUnavailable,
                        "\(body): \(response.text)")
                    if response.status.code >= 400, response.status.code < 500 {
                        let error = response.json["error"]?.stringValue ?? ""
                        #expect(
                            Self.restartKeys.contains { error.contains($0) } || error.lowercased().contains("timeout")
                                || error.contains("schedule") || error.contains("past") || error.contains("JSON"),
                            "\(body): \(error)")
                    }
                }
            }
        }
    }

    @Test func configPatchesNeverTrapAndNothingInvalidIsStored() async throws {
        let source = try await ControlTests.seeded()
        try await Fixture.application(source).test(.router) { client in
            await propertyCheck(
                count: 1500, input: Gen.int(in: 0...10_000).array(of: Self.configKeys.count),
                Gen.int(in: 1...((1 << Self.configKeys.count) - 1))
            ) { picks, mask in
                let body = Self.body(Self.configKeys, picks, mask: mask)
                try await client.execute(uri: "/config", method: .patch, body: jsonBody(body)) { response in
                    #expect(response.status.code < 500, "\(body): \(response.text)")
                    if response.status == .badRequest {
                        let error = response.json["error"]?.stringValue ?? ""
                        #expect(
                            Self.configKeys.contains { error.contains($0) } || error.contains("JSON"),
                            "\(body): \(error)")
                    }
                }
            }
        }
        // Whatever was accepted is a configuration an agent can run with.
        let stored = try #require(try await source.store.loadCluster().config?.value)
        #expect(stored.validationErrors().isEmpty, "\(stored.document)")
    }
}
