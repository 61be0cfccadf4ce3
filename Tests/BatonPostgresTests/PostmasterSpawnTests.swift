import Foundation
import Testing

@testable import BatonPostgres

/// Regression (fault matrix soak on network namespaces): the agent was SIGKILLed and restarted,
/// and the new agent could not bind its REST API: postgres, spawned by the old agent, had
/// inherited the API's listening socket (no FD_CLOEXEC) and kept port 8008. The spawned process
/// now gets stdin, stdout and stderr only.
@Suite struct PostmasterSpawnTests {
    @Test func aSpawnedProcessInheritsNoDescriptorOfTheAgent() throws {
        let inheritable = open("/dev/null", O_RDONLY)  // no O_CLOEXEC, as the API socket was
        try #require(inheritable > 2)
        defer { close(inheritable) }
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("baton-spawn-\(getpid()).log").path
        defer { unlink(log) }
        let postmaster = try Postmaster.spawn(
            executable: "/bin/sleep", arguments: ["30"], runAs: nil, logFile: log, environment: [:], onExit: { _ in })
        defer { kill(postmaster.pid, SIGKILL) }
        var descriptors: [String] = []
        for _ in 0..<200 {
            // Until the child has exec'd sleep and sleeps: right after the exec, sleep's own
            // start-up (the locale archive) may hold a descriptor of its own for a moment.
            let command = (try? String(contentsOfFile: "/proc/\(postmaster.pid)/comm", encoding: .utf8)) ?? ""
            let stat = (try? String(contentsOfFile: "/proc/\(postmaster.pid)/stat", encoding: .utf8)) ?? ""
            let state = stat.split(separator: ")").last?.split(separator: " ").first
            if command.hasPrefix("sleep") && state == "S" {
                descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(postmaster.pid)/fd")) ?? []
                break
            }
            usleep(10_000)
        }
        #expect(descriptors.sorted() == ["0", "1", "2"], "the child holds descriptors \(descriptors.sorted())")
    }
}
