import BatonCore
import PropertyBased
import Testing

/// History timestamps are written without Foundation's formatters (which load ICU into the agent):
/// what `ISO8601.string` writes, `ISO8601.secondsSince1970` (and Patroni) reads back.
@Suite struct ISO8601Tests {
    @Test func knownInstantsAreWrittenAsPatroniWritesThem() {
        #expect(ISO8601.string(secondsSince1970: 0) == "1970-01-01T00:00:00.000+00:00")
        #expect(ISO8601.string(secondsSince1970: 1_795_359_600.25) == "2026-11-22T15:00:00.250+00:00")
        #expect(ISO8601.string(secondsSince1970: -0.001) == "1969-12-31T23:59:59.999+00:00")
        #expect(ISO8601.string(secondsSince1970: 1_709_164_800) == "2024-02-29T00:00:00.000+00:00")
        #expect(ISO8601.string(secondsSince1970: 253_402_300_799.999) == "9999-12-31T23:59:59.999+00:00")
        #expect(ISO8601.string(secondsSince1970: -62_135_596_800) == "0001-01-01T00:00:00.000+00:00")
    }

    @Test func timesThatAreNoTimestampAreRefused() {
        for seconds in [Double.nan, .infinity, -.infinity, 1e300, -1e300, 253_402_300_800, -62_135_596_801] {
            #expect(ISO8601.string(secondsSince1970: seconds) == nil, "\(seconds)")
        }
    }

    @Test func whatIsWrittenReadsBackToTheMillisecond() async {
        await propertyCheck(count: 5000, input: Gen.int(in: -62_135_596_800_000...253_402_300_799_999)) { ms in
            let seconds = Double(ms) / 1000
            guard let text = ISO8601.string(secondsSince1970: seconds),
                let back = ISO8601.secondsSince1970(text)
            else {
                Issue.record("\(ms) ms did not round-trip")
                return
            }
            #expect(abs(back - seconds) < 0.0015, "\(ms) ms → \(text) → \(back)")
        }
    }
}
