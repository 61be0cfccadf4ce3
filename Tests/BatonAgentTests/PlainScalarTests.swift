import PropertyBased
import Testing
import Yams

@testable import BatonAgent

/// The agent types YAML's plain scalars itself (Yams' default resolver would load ICU's regex
/// engine): every scalar must get the type Yams' regular expressions give it.
@Suite struct PlainScalarTests {
    static func yamsTag(_ text: String) -> String {
        Resolver.default.resolveTag(of: Node.scalar(Node.Scalar(text))).rawValue
    }

    static let cases = [
        "", "~", "null", "Null", "NULL", "nULL", "yes", "Yes", "YES", "yEs", "on", "OFF", "y", "n", "true", "tRUE",
        "0", "-0", "+0", "00", "0_", "07", "08", "0o17", "0o", "0b101", "0b", "0b2", "0x1F", "0x", "0xg", "-0x_",
        "12", "1_000", "+12", "-12", "1:30", "1:60", "1:59:59", "190:20:30", "1:5", "1:", ":30", "01:30",
        "1.5", "-1.5", ".5", "+.5", "-.5", "1.", "1e5", "1e+5", "1.5e-3", "1E3", ".5e3", ".5e+3", "1e", "1e+",
        "1_0.0_1", "1:30.5", "1:30.", "190:20:30.15", ".inf", "-.inf", "+.Inf", ".INF", ".nan", "-.nan", ".NaN",
        "inf", "nan", "<<", "=", "==", "2026-11-22", "2026-1-2", "2026-11-22T15:00:00", "2026-11-22t15:00:00Z",
        "2026-11-22 15:00:00.123 +01:00", "2026-11-22  5:00:00-5", "2026-11-22T15:00:00+0100",
        "2026-11-22T15:00", "2026-11-22T15:00:00.", "2026-11-22T15:00:00 Z", "2026-11-22\t15:00:00\tZ",
        "20261-11-22", "2026-11-2", "64MB", "30s", "1.2.3", "- 1", "1 ", " 1", "０", "1\u{301}", "yes please",
    ]

    @Test func knownScalarsGetYamsTypes() {
        for text in Self.cases {
            #expect(PlainScalar.tag(of: text).rawValue == Self.yamsTag(text), "'\(text)'")
        }
    }

    @Test func randomScalarsGetYamsTypes() async {
        let alphabet = Array("0123456789+-._:eExXbBoOaAfFnNiIlLtTyYsSZz~<= \t")
        await propertyCheck(count: 20_000, input: Gen.int(in: 0...(alphabet.count - 1)).array(of: 0...10)) { picks in
            let text = String(picks.map { alphabet[$0] })
            #expect(PlainScalar.tag(of: text).rawValue == Self.yamsTag(text), "'\(text)'")
        }
    }

    @Test func quotedScalarsStayStringsAndPlainOnesAreTyped() throws {
        let node = try #require(try YAMLText.compose("a: 'on'\nb: on\nc: \"5\"\nd: 0x10\ne: ~\nf: !!str 7\ng: [1, x]"))
        let mapping = try #require(node.mapping)
        #expect(mapping["a"]?.bool == nil)
        #expect(mapping["a"]?.string == "on")
        #expect(mapping["b"]?.bool == true)
        #expect(mapping["c"]?.int == nil)
        #expect(mapping["c"]?.string == "5")
        #expect(mapping["d"]?.int == 16)
        #expect(mapping["e"]?.isNull == true)
        #expect(mapping["f"]?.bool == nil)
        #expect(mapping["g"]?.sequence?.first?.int == 1)
    }
}
