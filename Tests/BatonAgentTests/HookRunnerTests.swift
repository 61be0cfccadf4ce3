import Foundation
import Logging
import Testing

@testable import BatonAgent

#if canImport(Glibc)
    import Glibc
#endif

/// Hooks are bounded: a hung script (and whatever it started) is killed at the timeout, and a
/// callback never makes its caller wait. Before, a hook ran inside the HA cycle with no timeout:
/// a VIP script that hung stopped lease renewal.
@Suite struct HookRunnerTests {
    static let logger = Logger(label: "hooks") { _ in SwiftLogNoOpLogHandler() }

    static func tempFile(_ name: String) -> String {
        NSTemporaryDirectory() + "baton-hook-\(getpid())-\(name)"
    }

    @Test func aHookGetsPatronisArgumentsAndItsExitStatusIsReturned() async throws {
        let out = Self.tempFile("args")
        defer { unlink(out) }
        let status = await HookRunner.run(
            "echo \"$@\" > \(out); exit 3", arguments: ["on_role_change", "primary", "demo"], timeout: .seconds(10),
            logger: Self.logger)
        #expect(status == 3)
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "on_role_change primary demo\n")
    }

    @Test func aHungHookAndItsChildrenAreKilledAtTheTimeout() async throws {
        let pidFile = Self.tempFile("child")
        defer { unlink(pidFile) }
        let started = ContinuousClock.now
        let status = await HookRunner.run(
            "sleep 600 & echo $! > \(pidFile); wait $!; :", arguments: ["pre_promote", "primary", "demo"],
            timeout: .milliseconds(500), logger: Self.logger)
        let elapsed = ContinuousClock.now - started
        #expect(status == nil, "a hook killed at its timeout is a failure (a pre_promote veto)")
        #expect(elapsed < .seconds(10), "returned after \(elapsed)")
        let child = try #require(
            pid_t(
                try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(
                    in: .whitespacesAndNewlines)))
        var gone = false
        for _ in 0..<100 {
            // Reaped by init once killed; a zombie counts as gone.
            let state = (try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8))?
                .split(separator: ")").last?.split(separator: " ").first
            if kill(child, 0) != 0 || state == "Z" {
                gone = true
                break
            }
            usleep(20_000)
        }
        #expect(gone, "the hook's child \(child) outlived the timeout")
    }

    @Test func aCallbackReturnsAtOnce() async throws {
        let marker = Self.tempFile("late")
        defer { unlink(marker) }
        let started = ContinuousClock.now
        HookRunner.start(
            "sleep 1; touch \(marker); :", arguments: ["on_start", "replica", "demo"], timeout: .seconds(10),
            logger: Self.logger)
        #expect(ContinuousClock.now - started < .milliseconds(500))
        #expect(!FileManager.default.fileExists(atPath: marker))
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: marker) { usleep(50_000) }
        #expect(FileManager.default.fileExists(atPath: marker), "the callback still runs to its end")
    }
}

@Suite struct HookEnvironmentTests {
    /// Review finding: hooks inherited PATRONI_SUPERUSER_PASSWORD and the other secrets.
    @Test func hooksGetNoAgentSettings() {
        let cleaned = HookRunner.hookEnvironment([
            "PATH": "/usr/bin", "PATRONI_SUPERUSER_PASSWORD": "s", "BATON_ETCD_PASSWORD": "e", "HOME": "/root",
        ])
        #expect(cleaned == ["PATH": "/usr/bin", "HOME": "/root"])
    }
}
