import BatonAPI
import BatonCore
import BatonHA
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Synchronization
import Testing

/// Every route the router serves is described in docs/openapi.yaml, and nothing more.
@Suite struct OpenAPIDocumentTests {
    /// (method, path) pairs under `paths:`, read by indentation: two spaces for a path, four for a method.
    static func documentedOperations() throws -> Set<String> {
        let url = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/openapi.yaml")
        let text = try String(contentsOf: url, encoding: .utf8)
        var operations: Set<String> = []
        var inPaths = false
        var currentPath: String?
        let methods: Set<String> = ["get", "head", "options", "post", "put", "patch", "delete"]
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if !line.hasPrefix(" "), !line.isEmpty {
                inPaths = line == "paths:"
                continue
            }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), line.hasSuffix(":"), !line.hasPrefix("   ") {
                currentPath = String(line.dropFirst(2).dropLast())
            } else if line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":"), let currentPath {
                let method = String(line.dropFirst(4).dropLast())
                if methods.contains(method) { operations.insert("\(method.uppercased()) \(currentPath)") }
            }
        }
        return operations
    }

    @Test func everyRouteIsDocumented() throws {
        let server = BatonAPIServer(
            source: FakeSource(Fixture.primary()), configuration: APIConfiguration(), logger: Logger(label: "t"))
        let routes = Set(server.routes.map { "\($0.method.rawValue) \($0.path)" })
        let documented = try Self.documentedOperations()
        #expect(routes.count == server.routes.count, "duplicate routes")
        #expect(routes.subtracting(documented).sorted() == [], "routes missing from docs/openapi.yaml")
        #expect(documented.subtracting(routes).sorted() == [], "documented operations the router does not serve")
    }
}

/// Every answer the API gives is one the document promises: the status code is listed under the
/// operation, and the body has the promised form (JSON status document, JSON error with `error`,
/// plain text, or no body).
@Suite struct OpenAPIConformanceTests {
    /// "METHOD /path" → status code → the response's `$ref` name (`Error`, `Text`, …) or "" for a
    /// description-only response (no body).
    static func documentedResponses() throws -> [String: [Int: String]] {
        let url = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/openapi.yaml")
        let text = try String(contentsOf: url, encoding: .utf8)
        var result: [String: [Int: String]] = [:]
        var inPaths = false
        var path: String?
        var operation: String?
        var inResponses = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if !line.hasPrefix(" "), !line.isEmpty {
                inPaths = line == "paths:"
                continue
            }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), !line.hasPrefix("   ") {
                path = String(line.dropFirst(2).dropLast())
                operation = nil
            } else if line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":"), let path {
                operation = "\(line.dropFirst(4).dropLast().uppercased()) \(path)"
                inResponses = false
            } else if line.hasPrefix("      "), !line.hasPrefix("       ") {
                inResponses = line == "      responses:"
            } else if inResponses, line.hasPrefix("        '"), let operation {
                let code = Int(line.dropFirst(9).prefix(3)) ?? 0
                var reference = ""
                if let range = line.range(of: "#/components/responses/") {
                    reference = String(line[range.upperBound...].prefix { $0 != "'" })
                }
                result[operation, default: [:]][code] = reference
            }
        }
        return result
    }

    static let documented: [String: [Int: String]] = (try? documentedResponses()) ?? [:]

    /// Checks one exchange against the document.
    static func check(
        _ method: HTTPRequest.Method, _ path: String, _ response: TestResponse,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let bare = String(path.prefix { $0 != "?" })
        let operation = "\(method.rawValue) \(bare)"
        guard let responses = documented[operation] else {
            Issue.record("\(operation) is not in docs/openapi.yaml", sourceLocation: sourceLocation)
            return
        }
        let code = Int(response.status.code)
        guard let reference = responses[code] else {
            let listed = responses.keys.sorted().map(String.init).joined(separator: ", ")
            let message = "\(operation) answered \(code), which docs/openapi.yaml does not list (\(listed)): "
            Issue.record(Comment(rawValue: message + response.text), sourceLocation: sourceLocation)
            return
        }
        let contentType = response.headers[.contentType] ?? ""
        switch reference {
        case "":
            #expect(
                response.body.readableBytes == 0, "\(operation) \(code): no body promised",
                sourceLocation: sourceLocation)
        case "Error", "Unauthorized":
            #expect(contentType.hasPrefix("application/json"), "\(operation) \(code)", sourceLocation: sourceLocation)
            #expect(
                response.json["error"]?.stringValue?.isEmpty == false, "\(operation) \(code): \(response.text)",
                sourceLocation: sourceLocation)
        case "Text", "Metrics":
            #expect(contentType.hasPrefix("text/plain"), "\(operation) \(code)", sourceLocation: sourceLocation)
        case "NodeStatus":
            #expect(contentType.hasPrefix("application/json"), sourceLocation: sourceLocation)
            #expect(response.json["state"] != nil && response.json["role"] != nil, sourceLocation: sourceLocation)
            #expect(response.json["patroni"]?.objectValue?["name"] != nil, sourceLocation: sourceLocation)
        case "Cluster":
            let isArray: Bool
            if case .array? = response.json["members"] { isArray = true } else { isArray = false }
            #expect(isArray, "\(response.text)", sourceLocation: sourceLocation)
        case "Failsafe":
            #expect(contentType.hasPrefix("application/json"), sourceLocation: sourceLocation)
        case "Config":
            #expect(contentType.hasPrefix("application/json"), sourceLocation: sourceLocation)
            #expect(!response.json.isEmpty, "\(response.text)", sourceLocation: sourceLocation)
        case "History":
            let value = try? JSONDecoder().decode(JSONValue.self, from: Data(response.body.readableBytesView))
            let isArray: Bool
            if case .array? = value { isArray = true } else { isArray = false }
            #expect(isArray, "\(response.text)", sourceLocation: sourceLocation)
        default:
            Issue.record("unknown response reference \(reference)", sourceLocation: sourceLocation)
        }
    }

    struct Exchange: Sendable {
        var method: HTTPRequest.Method
        var path: String
        var body: String?
    }

    static func run(_ app: BatonAPIApplication, _ exchanges: [Exchange]) async throws -> Set<String> {
        let seen = Mutex<Set<String>>([])
        try await app.test(.router) { client in
            for exchange in exchanges {
                try await client.execute(
                    uri: exchange.path, method: exchange.method, body: exchange.body.map(jsonBody)
                ) { response in
                    Self.check(exchange.method, exchange.path, response)
                    let bare = String(exchange.path.prefix { $0 != "?" })
                    _ = seen.withLock { $0.insert("\(exchange.method.rawValue) \(bare)") }
                }
            }
        }
        return seen.withLock { $0 }
    }

    @Test func everyOperationAnswersAsDocumentedInEachRole() async throws {
        var reads: [Exchange] = []
        for check in HealthCheck.allCases {
            for path in check.paths {
                for method in [HTTPRequest.Method.get, .head, .options] {
                    reads.append(Exchange(method: method, path: path))
                }
            }
        }
        reads += [
            Exchange(method: .get, path: "/replica?lag=lots"), Exchange(method: .get, path: "/replica?lag=1MB"),
            Exchange(method: .get, path: "/patroni"), Exchange(method: .get, path: "/cluster"),
            Exchange(method: .get, path: "/history"), Exchange(method: .get, path: "/metrics"),
            Exchange(method: .get, path: "/config"), Exchange(method: .get, path: "/failsafe"),
        ]
        var seen: Set<String> = []
        for status in [
            Fixture.primary(), Fixture.replica(), Fixture.laggingReplica(), Fixture.stopped(), Fixture.paused(),
        ] {
            let source = try await ControlTests.seeded()
            source.update { $0 = status }
            seen.formUnion(try await Self.run(try Fixture.application(source), reads))
        }
        let writes: [Exchange] = [
            Exchange(method: .patch, path: "/config", body: #"{"loop_wait": 5}"#),
            Exchange(method: .patch, path: "/config", body: #"{"ttl": 1}"#),
            Exchange(method: .patch, path: "/config", body: #"{"#),
            Exchange(method: .put, path: "/config", body: #"{"ttl": 30, "loop_wait": 4}"#),
            Exchange(method: .put, path: "/config", body: "[]"),
            Exchange(method: .post, path: "/switchover", body: #"{"leader": "node9"}"#),
            Exchange(method: .post, path: "/switchover", body: #"{"leader": "node1", "candidate": "nobody"}"#),
            Exchange(method: .post, path: "/switchover", body: #"{"candidate": 3}"#),
            Exchange(
                method: .post, path: "/switchover",
                body: #"{"leader": "node1", "scheduled_at": "2099-01-01T00:00:00+00:00"}"#),
            Exchange(method: .delete, path: "/switchover"),
            Exchange(method: .delete, path: "/switchover"),
            Exchange(method: .post, path: "/failover", body: #"{}"#),
            Exchange(method: .post, path: "/failover", body: #"{"candidate": "nobody"}"#),
            Exchange(method: .post, path: "/failsafe", body: #"{"name": 1}"#),
            Exchange(method: .post, path: "/restart"),
            Exchange(method: .post, path: "/restart", body: #"{"role": "boss"}"#),
            Exchange(method: .post, path: "/restart", body: #"{"schedule": "2001-01-01T00:00:00+00:00"}"#),
            Exchange(method: .delete, path: "/restart"),
            Exchange(method: .post, path: "/reload"),
            Exchange(method: .post, path: "/reinitialize", body: #"{"force": "x"}"#),
            Exchange(method: .post, path: "/reinitialize"),
        ]
        // FakeSource answers operator requests as the HA loop does (see BatonHATests/OperatorRequestTests).
        let source = try await ControlTests.seeded()
        seen.formUnion(
            try await Self.run(try Fixture.application(source, configuration: ControlTests.fastConfig()), writes))
        // Unsafe methods with credentials configured and none sent: 401 as documented.
        let guarded = APIConfiguration(port: 0, auth: .init(username: "admin", password: "secret"))
        _ = try await Self.run(
            try Fixture.application(try await ControlTests.seeded(), configuration: guarded),
            writes.map { Exchange(method: $0.method, path: $0.path, body: $0.body) })
        let all = Set(Self.documented.keys)
        #expect(all.subtracting(seen).sorted() == [], "operations never exercised")
    }
}
