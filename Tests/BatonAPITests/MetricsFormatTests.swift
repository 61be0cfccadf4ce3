import BatonAPI
import BatonCore
import BatonHA
import Foundation
import Hummingbird
import HummingbirdTesting
import Synchronization
import Testing

/// `GET /metrics` parsed as Prometheus' text exposition format (0.0.4): every family declared
/// once with HELP and TYPE before its samples, valid names and labels, no duplicate series,
/// histograms with cumulative buckets ending in `+Inf` == `_count`.
@Suite struct MetricsFormatTests {
    struct Sample: Hashable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    struct ParseError: Error, CustomStringConvertible {
        var description: String
    }

    /// A strict parser of the subset Baton writes (and Prometheus reads).
    static func parse(_ text: String) throws -> (types: [String: String], samples: [Sample]) {
        var types: [String: String] = [:]
        var helps: Set<String> = []
        var samples: [Sample] = []
        var seen: Set<String> = []
        var closed: Set<String> = []
        var current: String?
        let nameCharacters = CharacterSet(
            charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:")
        func validName(_ name: String) -> Bool {
            guard let first = name.unicodeScalars.first, !CharacterSet.decimalDigits.contains(first) else {
                return false
            }
            return name.unicodeScalars.allSatisfy { nameCharacters.contains($0) }
        }
        guard text.hasSuffix("\n") else { throw ParseError(description: "the text must end with a newline") }
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().enumerated() {
            let line = String(raw)
            let at = "line \(number + 1): \(line)"
            if line.hasPrefix("# HELP ") || line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ", maxSplits: 3).map(String.init)
                guard parts.count == 4, validName(parts[2]) else { throw ParseError(description: "bad comment, \(at)") }
                let family = parts[2]
                if closed.contains(family) { throw ParseError(description: "family \(family) declared twice, \(at)") }
                if let current, current != family { closed.insert(current) }
                current = family
                if parts[1] == "TYPE" {
                    guard ["gauge", "counter", "histogram", "summary", "untyped"].contains(parts[3]) else {
                        throw ParseError(description: "unknown type, \(at)")
                    }
                    if types[family] != nil { throw ParseError(description: "two TYPE lines, \(at)") }
                    types[family] = parts[3]
                } else {
                    if !helps.insert(family).inserted { throw ParseError(description: "two HELP lines, \(at)") }
                }
                continue
            }
            // Any other line starting with '#' is a comment (the format ignores it; Patroni's
            // patroni_postgres_state HELP goes on with one); empty lines are not allowed here.
            if line.hasPrefix("#") { continue }
            guard !line.isEmpty else { throw ParseError(description: "stray line, \(at)") }
            guard let brace = line.firstIndex(of: "{"), let close = line.lastIndex(of: "}") else {
                throw ParseError(description: "samples carry labels here, \(at)")
            }
            let name = String(line[..<brace])
            guard validName(name) else { throw ParseError(description: "bad metric name, \(at)") }
            var labels: [String: String] = [:]
            var rest = Substring(line[line.index(after: brace)..<close])
            while !rest.isEmpty {
                guard let equals = rest.firstIndex(of: "=") else { throw ParseError(description: "bad label, \(at)") }
                let key = String(rest[..<equals])
                guard validName(key), !key.contains(":") else { throw ParseError(description: "bad label name, \(at)") }
                rest = rest[rest.index(after: equals)...]
                guard rest.first == "\"" else { throw ParseError(description: "unquoted label value, \(at)") }
                rest = rest.dropFirst()
                var value = ""
                var escaped = false
                var ended = false
                while let character = rest.first {
                    rest = rest.dropFirst()
                    if escaped {
                        guard ["\\", "\"", "n"].contains(character) else {
                            throw ParseError(description: "bad escape, \(at)")
                        }
                        value.append(character == "n" ? "\n" : character)
                        escaped = false
                    } else if character == "\\" {
                        escaped = true
                    } else if character == "\"" {
                        ended = true
                        break
                    } else {
                        value.append(character)
                    }
                }
                guard ended else { throw ParseError(description: "unterminated label value, \(at)") }
                if labels.updateValue(value, forKey: key) != nil {
                    throw ParseError(description: "duplicate label, \(at)")
                }
                if rest.first == "," {
                    rest = rest.dropFirst()
                } else if !rest.isEmpty {
                    throw ParseError(description: "expected , between labels, \(at)")
                }
            }
            let valueText = line[line.index(after: close)...]
            guard valueText.first == " ",
                let value = Double(valueText.dropFirst()) ?? (valueText == " +Inf" ? .infinity : nil)
            else {
                throw ParseError(description: "bad value, \(at)")
            }
            let family = ["_bucket", "_sum", "_count"].reduce(name) { family, suffix in
                types[family] == nil && family.hasSuffix(suffix)
                    && types[String(family.dropLast(suffix.count))] == "histogram"
                    ? String(family.dropLast(suffix.count)) : family
            }
            guard types[family] != nil, helps.contains(family) else {
                throw ParseError(description: "sample before its HELP and TYPE, \(at)")
            }
            guard family == current else { throw ParseError(description: "sample outside its family's block, \(at)") }
            let series = name + labels.sorted { $0.key < $1.key }.description
            if !seen.insert(series).inserted { throw ParseError(description: "duplicate series, \(at)") }
            samples.append(Sample(name: name, labels: labels, value: value))
        }
        // Histograms: cumulative, ending in +Inf equal to _count.
        for (family, type) in types where type == "histogram" {
            let buckets = samples.filter { $0.name == family + "_bucket" }
            let bounds = buckets.map {
                $0.labels["le"] == "+Inf" ? Double.infinity : Double($0.labels["le"] ?? "") ?? .nan
            }
            guard !buckets.isEmpty, bounds == bounds.sorted(), bounds.last == .infinity else {
                throw ParseError(description: "\(family): buckets must ascend and end with +Inf: \(bounds)")
            }
            let counts = buckets.map(\.value)
            guard counts == counts.sorted() else { throw ParseError(description: "\(family): buckets not cumulative") }
            let count = samples.first { $0.name == family + "_count" }?.value
            guard count == counts.last, samples.contains(where: { $0.name == family + "_sum" }) else {
                throw ParseError(description: "\(family): +Inf bucket must equal _count, and _sum must exist")
            }
        }
        return (types, samples)
    }

    static func metrics(_ status: HAStatus, store: StoreRequestStats?) async throws -> String {
        let source = FakeSource(status)
        source.storeStats.withLock { $0 = store }
        let text = Mutex("")
        try await Fixture.application(source).test(.router) { client in
            try await client.execute(uri: "/metrics", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType]?.hasPrefix("text/plain; version=0.0.4") == true)
                text.withLock { $0 = response.text }
            }
        }
        return text.withLock { $0 }
    }

    @Test func everyRoleParses() async throws {
        for status in [
            Fixture.primary(), Fixture.replica(), Fixture.laggingReplica(), Fixture.stopped(), Fixture.paused(),
        ] {
            let text = try await Self.metrics(status, store: nil)
            let parsed = try Self.parse(text)
            #expect(parsed.types["baton_role"] == "gauge")
            #expect(parsed.types["baton_ha_cycle_duration_seconds"] == "histogram")
        }
    }

    @Test func histogramsCountersAndStoreMetrics() async throws {
        var status = Fixture.primary()
        status.cycleDurations.observe(.milliseconds(3))
        status.cycleDurations.observe(.milliseconds(40))
        status.cycleDurations.observe(.seconds(30))
        status.decisions = ["holding_lock": 41, "racing": 1]
        status.failovers = 1
        var store = StoreRequestStats()
        store.latency.observe(.microseconds(800))
        store.latency.observe(.milliseconds(7))
        store.errors = ["unavailable": 2, "lease not found": 1]
        let text = try await Self.metrics(status, store: store)
        let (types, samples) = try Self.parse(text)
        func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
            samples.first { sample in
                sample.name == name && labels.allSatisfy { key, value in sample.labels[key] == value }
            }?.value
        }
        #expect(types["baton_decisions_total"] == "counter")
        #expect(value("baton_decisions_total", ["reason": "holding_lock"]) == 41)
        #expect(value("baton_failovers_total") == 1)
        #expect(value("baton_ha_cycle_duration_seconds_count") == 3)
        #expect(value("baton_ha_cycle_duration_seconds_bucket", ["le": "0.005"]) == 1)
        #expect(value("baton_ha_cycle_duration_seconds_bucket", ["le": "0.05"]) == 2)
        #expect(value("baton_ha_cycle_duration_seconds_bucket", ["le": "10"]) == 2)
        #expect(value("baton_ha_cycle_duration_seconds_bucket", ["le": "+Inf"]) == 3)
        #expect(abs((value("baton_ha_cycle_duration_seconds_sum") ?? 0) - 30.043) < 1e-9)
        #expect(value("baton_store_request_duration_seconds_bucket", ["le": "0.001"]) == 1)
        #expect(value("baton_store_request_duration_seconds_count") == 2)
        #expect(value("baton_store_request_errors_total", ["kind": "lease not found"]) == 1)
        #expect(value("baton_store_request_errors_total", ["kind": "unavailable"]) == 2)
        #expect(value("baton_lease_seconds_remaining") == 20)
    }

    @Test func theParserRejectsBrokenText() {
        #expect(throws: ParseError.self) { try Self.parse("baton_x{a=\"1\"} 1\n") }
        #expect(throws: ParseError.self) { try Self.parse("# HELP a h\n# TYPE a gauge\na{b=\"1} 1\n") }
        #expect(throws: ParseError.self) { try Self.parse("# HELP a h\n# TYPE a gauge\na{b=\"1\"} one\n") }
        #expect(throws: ParseError.self) {
            try Self.parse("# HELP a h\n# TYPE a gauge\na{b=\"1\"} 1\na{b=\"1\"} 2\n")
        }
        #expect(throws: ParseError.self) {
            try Self.parse(
                "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum{} 1\nh_count{} 1\n"
            )
        }
    }
}
