import BatonTestCluster
import Foundation
import Testing

/// Arguments of the `baton` CLI refused before anything is read or written (the real binary).
@Suite struct CLIValidationTests {
    static func refusal(_ arguments: [String]) -> String? {
        do {
            _ = try AgentCluster.run([AgentCluster.batonBinary] + arguments)
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// Audit finding: `--scheduled` was only checked to parse. Without a zone it was read as UTC,
    /// and a past time meant "now", when no REST API answered and the value went into the
    /// failover key as given.
    @Test func scheduledNeedsAZoneAndAFutureTime() {
        let noZone = Self.refusal(["switchover", "-c", "/nonexistent.yml", "--scheduled", "2099-11-22T15:00:00"])
        #expect(noZone?.contains("with its zone") == true, "\(noZone ?? "accepted")")
        let past = Self.refusal(["switchover", "-c", "/nonexistent.yml", "--scheduled", "2001-11-22T15:00:00+00:00"])
        #expect(past?.contains("in the past") == true, "\(past ?? "accepted")")
        let notADay = Self.refusal(["switchover", "-c", "/nonexistent.yml", "--scheduled", "2099-02-31T15:00:00Z"])
        #expect(notADay?.contains("ISO 8601") == true, "\(notADay ?? "accepted")")
    }

    /// Audit finding: a patch file that is not UTF-8 was decoded with U+FFFD in place of the bad
    /// bytes and written into the cluster's configuration as such.
    @Test func editConfigRefusesAPatchThatIsNotUTF8() throws {
        let path = NSTemporaryDirectory() + "baton-cli-latin1-\(getpid()).yml"
        defer { try? FileManager.default.removeItem(atPath: path) }
        // "postgresql: {parameters: {application_name: 'caf\xe9'}}" in Latin-1
        try Data(Array("postgresql: {parameters: {application_name: 'caf".utf8) + [0xE9] + Array("'}}\n".utf8))
            .write(to: URL(fileURLWithPath: path))
        let refused = Self.refusal(["edit-config", "-c", "/nonexistent.yml", "--apply", path])
        #expect(refused?.contains("is not valid UTF-8") == true, "\(refused ?? "accepted")")
    }
}
