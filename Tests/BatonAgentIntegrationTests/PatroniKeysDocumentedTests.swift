import BatonTestCluster
import Foundation
import Testing

/// docs/configuration.md states, for every key Patroni 4.1.5's own validator knows, what Baton
/// does with it ("same", "Baton's own" or "refused: why"): the keys come from Patroni itself
/// (scripts/lib/patroni_keys.py walks `patroni.validator.schema`), not from memory.
@Suite(.serialized)
struct PatroniKeysDocumentedTests {
    @Test("every key of Patroni 4.1.5's configuration is stated in docs/configuration.md")
    func everyPatroniKeyIsDocumented() throws {
        let python = URL(fileURLWithPath: try PatronictlTests.patronictl()).deletingLastPathComponent()
            .appendingPathComponent("python").path
        let root = AgentCluster.packageRoot
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("patroni-keys-\(UUID()).txt").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        let status = try PatronictlTests.run(
            [python, root.appendingPathComponent("scripts/lib/patroni_keys.py").path], output: output,
            timeout: .seconds(60))
        let keys = ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").split(separator: "\n").map(
            String.init)
        #expect(status == 0 && keys.count > 100, "\(keys.prefix(5))")
        let doc = try String(contentsOf: root.appendingPathComponent("docs/configuration.md"), encoding: .utf8)
        // Other stores' sections and PostgreSQL parameters Patroni checks are stated as a whole.
        let wholeSections = ["kubernetes", "consul", "zookeeper", "exhibitor", "raft", "citus", "etcd"]
        var missing: [String] = []
        for key in keys where !key.contains(".parameters.") {
            let parts = key.split(separator: ".").map(String.init)
            if let first = parts.first, wholeSections.contains(first) {
                if !doc.contains("`\(first)") { missing.append(key) }
                continue
            }
            let last = parts.last ?? key
            let stated =
                doc.contains("`\(key)`") || doc.contains("`\(key):") || doc.contains("`.\(last)`")
                || doc.contains("`\(last)`") || doc.contains("\(key)`")
            if !stated { missing.append(key) }
        }
        #expect(missing.isEmpty, "not stated in docs/configuration.md: \(missing.joined(separator: ", "))")
    }
}
