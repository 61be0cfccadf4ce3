import Foundation
import Logging
import Testing

@testable import BatonPostgres

#if canImport(Glibc)
    import Glibc
#endif

/// A command that exceeds its timeout ends with its children (a replica method's wrapper script
/// and the backup tool it started), not only the process Baton started.
@Suite struct CommandRunnerTests {
    @Test func aTimeoutEndsTheCommandsChildrenToo() async throws {
        let marker = NSTemporaryDirectory() + "baton-runner-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: marker) }
        let runner = CommandRunner(runAs: nil, logger: Logger(label: "test"))
        // The child writes its pid, then sleeps; the shell waits for it.
        let started = ContinuousClock.now
        await #expect(throws: PostgresError.self) {
            _ = try await runner.run(
                "/bin/sh", ["-c", "sleep 30 & echo $! > \(marker); wait"], timeout: .milliseconds(500))
        }
        #expect(ContinuousClock.now - started < .seconds(10))
        let child = try #require(
            Int32(
                try String(contentsOfFile: marker, encoding: .utf8).trimmingCharacters(
                    in: .whitespacesAndNewlines)))
        // Reaped by init once killed; give it a moment.
        var alive = true
        for _ in 0..<50 where alive {
            alive = kill(child, 0) == 0
            if alive { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(!alive, "the command's child \(child) outlived the timeout")
    }
}
