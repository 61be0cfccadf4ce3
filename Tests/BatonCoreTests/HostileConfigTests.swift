import BatonCore
import PropertyBased
import Testing

/// The `config` key is input: anyone with etcd access, patronictl or `PATCH /config` writes it, and
/// every agent reads it on every cycle. No document may trap, and only usable ones validate.
@Suite struct HostileConfigTests {
    static let numbers: [Double] = [
        0, -0.0, 1, -1, 0.4, 1.5, 4, 10, 30, 300, 86_400, 31_536_000, 31_536_001, 1e300, -1e300,
        .greatestFiniteMagnitude, -.greatestFiniteMagnitude, 1e-300, 9.0e15, 9.3e18, 1.9e19, 2_147_483_648,
    ]
    static let strings: [String] = [
        "", "nan", "NaN", "inf", "-inf", "infinity", "1e400", "1e300", "-1", "30", "30s", "9999999999999999",
        "99999999999999999999", "1.2.3", "abc", "0x10", " 5 ", "true", "null",
    ]
    static let keys = [
        "ttl", "loop_wait", "retry_timeout", "primary_start_timeout", "maximum_lag_on_failover",
        "synchronous_node_count", "synchronous_mode", "pause", "check_timeline", "failsafe_mode",
    ]
    static let durationKeys: Set = ["ttl", "loop_wait", "retry_timeout", "primary_start_timeout"]

    /// A JSON value of any kind, chosen by `pick`.
    static func value(_ pick: Int) -> JSONValue {
        let index = pick / 6
        switch pick % 6 {
        case 0, 1: return .number(numbers[index % numbers.count])
        case 2: return .string(strings[index % strings.count])
        case 3: return .bool(index % 2 == 0)
        case 4: return .null
        default: return .object(["nested": .number(numbers[index % numbers.count])])
        }
    }

    @Test func noConfigDocumentTrapsAndWhatValidatesIsUsable() async {
        await propertyCheck(
            count: 5000, input: Gen.int(in: 0...1_000_000).array(of: Self.keys.count),
            Gen.int(in: 0...((1 << Self.keys.count) - 1))
        ) { picks, mask in
            var document: [String: JSONValue] = [:]
            for (index, key) in Self.keys.enumerated() where mask & (1 << index) != 0 {
                document[key] = Self.value(picks[index])
            }
            let config = DynamicConfig(document)
            // Every accessor answers, whatever the document (before: ttl 1e300 trapped here).
            let durations = [config.ttl, config.loopWait, config.retryTimeout, config.primaryStartTimeout]
            #expect(durations.allSatisfy { $0 >= .zero })
            _ = (config.maximumLagOnFailover, config.synchronousNodeCount, config.pause, config.synchronousMode)
            let problems = config.validationErrors()
            if problems.isEmpty {
                #expect(throws: Never.self) {
                    _ = try TimingPolicy(ttl: config.ttl, loopWait: config.loopWait, retryTimeout: config.retryTimeout)
                }
                for key in Self.durationKeys {
                    guard let raw = document[key] else { continue }
                    let seconds = raw.doubleValue ?? -1
                    #expect(
                        seconds.isFinite && seconds >= 0 && seconds <= Duration.maximumSettingSeconds, "\(key): \(raw)")
                }
                if let count = document["synchronous_node_count"] { #expect(count.intValue.map { $0 >= 1 } == true) }
            } else {
                // Each problem names what is wrong: a key, or the timing rule.
                for problem in problems {
                    #expect(
                        Self.keys.contains { problem.hasPrefix($0) } || problem.contains("ttl"), "\(problem)")
                }
            }
        }
    }

    /// The values of the issue: each refused with the key named, none trapping.
    @Test func theIssuesValuesAreRefusedByName() {
        let cases: [(String, JSONValue, String)] = [
            ("ttl", .number(1e300), "ttl: must be at most 31536000 seconds"),
            ("loop_wait", .string("nan"), "loop_wait: expected a finite number"),
            ("retry_timeout", .string("-inf"), "retry_timeout: expected a finite number"),
            ("primary_start_timeout", .number(-5), "primary_start_timeout: must not be negative"),
            ("maximum_lag_on_failover", .number(1.9e19), "maximum_lag_on_failover: expected a whole number"),
            ("synchronous_node_count", .number(0), "synchronous_node_count: expected a whole number from 1"),
            ("synchronous_node_count", .number(1e300), "synchronous_node_count: expected a whole number from 1"),
        ]
        for (key, value, words) in cases {
            let problems = DynamicConfig([key: value]).validationErrors()
            #expect(problems.contains { $0.contains(words) }, "\(key)=\(value): \(problems)")
        }
        #expect(DynamicConfig(["ttl": .number(1e300)]).ttl == .seconds(30), "the default stands in")
    }

    @Test func checkedSecondsRefusesWhatCannotBeADuration() {
        #expect(Duration(checkedSeconds: 1.5) == .milliseconds(1500))
        #expect(Duration(checkedSeconds: 0) == .zero)
        for bad in [Double.nan, .infinity, -.infinity, -1, 1e300, 31_536_001] {
            #expect(Duration(checkedSeconds: bad) == nil, "\(bad)")
        }
    }
}
