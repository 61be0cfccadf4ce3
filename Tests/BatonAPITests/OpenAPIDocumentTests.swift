import BatonAPI
import Foundation
import Logging
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
