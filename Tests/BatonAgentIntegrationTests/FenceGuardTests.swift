import BatonAgent
import BatonTestCluster
import Foundation
import Logging
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The fence guard process (`baton-fence-guard`), run as the agent runs it. A stand-in postmaster
/// (`sleep` started under the name `postgres`, in a stand-in data directory with a postmaster.pid)
/// keeps these tests free of PostgreSQL; what the guard checks (command name, working directory,
/// postmaster.pid) is the same.
@Suite(.serialized) struct FenceGuardTests {
    static let logger = Logger(label: "guard") { _ in SwiftLogNoOpLogHandler() }

    /// A `postgres` that is really `sleep 600`, running in `directory`, which gets its postmaster.pid.
    static func standInPostmaster(in directory: String) throws -> Process {
        let binary = directory + "/../postgres"
        unlink(binary)
        #expect(symlink("/bin/sleep", binary) == 0)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["600"]
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        try process.run()
        try "\(process.processIdentifier)\n\(directory)\n".write(
            toFile: directory + "/postmaster.pid", atomically: true, encoding: .utf8)
        return process
    }

    /// Ends a stand-in by PID (SIGKILL) and waits for it: a survivor would hold the test's output.
    static func end(_ process: Process) {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// The guard executable run directly, its standard input a pipe the test writes commands to
    /// (without `ProcessFenceGuard`, which writes only well-formed ones).
    static func bareGuard(dataDirectory: String?) throws -> (Process, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: AgentCluster.fenceGuardBinary)
        process.arguments = dataDirectory.map { ["--data-dir", $0] } ?? []
        let pipe = Pipe()
        process.standardInput = pipe
        try process.run()
        return (process, pipe)
    }

    /// Alive and not a zombie (an orphan's reaper may be slow, or not reap at all in a container).
    static func runs(_ pid: Int32) -> Bool {
        let state = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8))?
            .split(separator: ")").last?.split(separator: " ").first
        return state != nil && state != "Z"
    }

    static func temporaryDataDirectory(_ name: String) throws -> String {
        let root = NSTemporaryDirectory() + "baton-guard-\(getpid())-\(name)"
        try? FileManager.default.removeItem(atPath: root)
        try FileManager.default.createDirectory(atPath: root + "/data", withIntermediateDirectories: true)
        return root + "/data"
    }

    static func waitForExit(_ process: Process, within limit: Duration) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while process.isRunning, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        return !process.isRunning
    }

    /// The guard was armed with the PID of a postmaster that a restart has since replaced: at the
    /// deadline it stops the one postmaster.pid names now. Before, it signalled only the PID it was
    /// armed with (gone), and the new postmaster went on accepting writes.
    @Test func theGuardFencesThePostmasterThatReplacedTheArmedOne() async throws {
        let data = try Self.temporaryDataDirectory("replaced")
        defer { try? FileManager.default.removeItem(atPath: (data as NSString).deletingLastPathComponent) }
        let current = try Self.standInPostmaster(in: data)
        defer { Self.end(current) }
        let gone: Int32 = 999_999  // the postmaster the guard was armed with, long gone
        let guardProcess = ProcessFenceGuard(
            executable: AgentCluster.fenceGuardBinary, dataDirectory: data, postmasterPID: { gone }, logger: Self.logger
        )
        try guardProcess.start()
        defer { guardProcess.stop() }
        await guardProcess.arm(remaining: .milliseconds(300))
        #expect(await Self.waitForExit(current, within: .seconds(10)), "the current postmaster was not fenced")
    }

    /// Review finding: armed while no postmaster was known (a crash recovery, between the two halves
    /// of a restart), the guard used to be disarmed; it now fences whatever postmaster.pid names at
    /// the deadline, and a postmaster that appears in the data directory within 10 s after it.
    @Test func armedWithoutAKnownPostmasterTheGuardStillFencesAndWatchesAfter() async throws {
        let data = try Self.temporaryDataDirectory("unknown")
        defer { try? FileManager.default.removeItem(atPath: (data as NSString).deletingLastPathComponent) }
        let guardProcess = ProcessFenceGuard(
            executable: AgentCluster.fenceGuardBinary, dataDirectory: data, postmasterPID: { nil }, logger: Self.logger)
        try guardProcess.start()
        defer { guardProcess.stop() }
        let first = try Self.standInPostmaster(in: data)
        defer { Self.end(first) }
        await guardProcess.arm(remaining: .milliseconds(200))
        #expect(await Self.waitForExit(first, within: .seconds(10)), "the postmaster.pid one was not fenced")
        // A start that was under way at the deadline comes up just after it.
        let late = try Self.standInPostmaster(in: data)
        defer { Self.end(late) }
        #expect(await Self.waitForExit(late, within: .seconds(4)), "a postmaster started after the fence survived")
        // A standby started after the fence (standby.signal present) is left alone: found by the
        // client failover test, where a killed agent's guard went on killing the replica that
        // the restarted agent started.
        #expect(FileManager.default.createFile(atPath: data + "/standby.signal", contents: Data()))
        let standby = try Self.standInPostmaster(in: data)
        defer { Self.end(standby) }
        #expect(!(await Self.waitForExit(standby, within: .seconds(2))), "a standby was fenced")
    }

    /// The guard of a killed agent goes on watching after its deadline; a new agent started since
    /// then promotes its postgres (no standby.signal). That postmaster belongs to the new agent and
    /// its lease: the old guard leaves it alone. Before, it was stopped with an immediate shutdown
    /// (the client failover test's intermittent "connection refused" right after a switchover).
    @Test func aPostmasterOfANewerAgentIsLeftAlone() async throws {
        let data = try Self.temporaryDataDirectory("newer")
        defer { try? FileManager.default.removeItem(atPath: (data as NSString).deletingLastPathComponent) }
        let guardProcess = ProcessFenceGuard(
            executable: AgentCluster.fenceGuardBinary, dataDirectory: data, postmasterPID: { nil }, logger: Self.logger)
        try guardProcess.start()
        defer { guardProcess.stop() }
        await guardProcess.arm(remaining: .milliseconds(100))
        try await Task.sleep(for: .milliseconds(400))  // the deadline passed: the guard now watches
        // The "new agent": a process started after the guard, whose child is the postmaster.
        let binary = data + "/../postgres"
        unlink(binary)
        #expect(symlink("/bin/sleep", binary) == 0)
        let pidFile = data + "/../child.pid"
        let agent = Process()
        agent.executableURL = URL(fileURLWithPath: "/bin/sh")
        agent.arguments = ["-c", "\"$0\" 600 & echo $! > \"$1\"; wait", binary, pidFile]
        agent.currentDirectoryURL = URL(fileURLWithPath: data)
        try agent.run()
        defer { Self.end(agent) }
        var child: Int32?
        for _ in 0..<200 where child == nil {
            child = (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap {
                Int32($0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            if child == nil { try await Task.sleep(for: .milliseconds(10)) }
        }
        let postmaster = try #require(child, "the stand-in agent did not start its postmaster")
        defer { kill(postmaster, SIGKILL) }
        try "\(postmaster)\n\(data)\n".write(toFile: data + "/postmaster.pid", atomically: true, encoding: .utf8)
        try await Task.sleep(for: .milliseconds(1500))
        #expect(Self.runs(postmaster), "the new agent's postmaster was fenced by the old agent's guard")

        // A postmaster of the agent that armed the guard (here: the test process) is still fenced.
        let own = try Self.standInPostmaster(in: data)
        defer { Self.end(own) }
        #expect(await Self.waitForExit(own, within: .seconds(2)), "the arming agent's late postmaster survived")

        // An orphan (its starter exited: re-parented to init or a subreaper, older than the guard)
        // is fenced too.
        let orphanFile = data + "/../orphan.pid"
        let starter = Process()
        starter.executableURL = URL(fileURLWithPath: "/bin/sh")
        starter.arguments = ["-c", "\"$0\" 600 >/dev/null 2>&1 & echo $! > \"$1\"", binary, orphanFile]
        starter.currentDirectoryURL = URL(fileURLWithPath: data)
        try starter.run()
        // Not `waitUntilExit()`: Foundation would wait for the orphan too (it inherits the
        // descriptor Foundation watches), long after the guard's window.
        var found: Int32?
        for _ in 0..<200 where found == nil {
            found = (try? String(contentsOfFile: orphanFile, encoding: .utf8)).flatMap {
                Int32($0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            if found == nil { try await Task.sleep(for: .milliseconds(10)) }
        }
        let orphan = try #require(found, "the orphan did not start")
        defer { kill(orphan, SIGKILL) }
        try "\(orphan)\n\(data)\n".write(toFile: data + "/postmaster.pid", atomically: true, encoding: .utf8)
        var gone = false
        for _ in 0..<100 where !gone {
            gone = !Self.runs(orphan)
            if !gone { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(gone, "an orphaned postmaster was left alone")
    }

    /// A postmaster.pid that names a postgres running elsewhere (another data directory) is not
    /// signalled: the guard checks the process's working directory.
    @Test func theGuardLeavesAPostgresOfAnotherDataDirectoryAlone() async throws {
        let data = try Self.temporaryDataDirectory("mine")
        let other = try Self.temporaryDataDirectory("other")
        defer {
            try? FileManager.default.removeItem(atPath: (data as NSString).deletingLastPathComponent)
            try? FileManager.default.removeItem(atPath: (other as NSString).deletingLastPathComponent)
        }
        let foreign = try Self.standInPostmaster(in: other)
        defer { Self.end(foreign) }
        try "\(foreign.processIdentifier)\n".write(toFile: data + "/postmaster.pid", atomically: true, encoding: .utf8)
        let guardProcess = ProcessFenceGuard(
            executable: AgentCluster.fenceGuardBinary, dataDirectory: data, postmasterPID: { 999_999 },
            logger: Self.logger)
        try guardProcess.start()
        defer { guardProcess.stop() }
        await guardProcess.arm(remaining: .milliseconds(100))
        #expect(!(await Self.waitForExit(foreign, within: .seconds(2))), "a foreign postgres was signalled")
    }

    /// A guard process that dies is started again before the next arm, and still fences. Before, the
    /// guard was started once and never looked at again: killing it removed the backstop silently.
    @Test func aGuardThatDiedIsRestartedAndStillFences() async throws {
        let data = try Self.temporaryDataDirectory("restart")
        defer { try? FileManager.default.removeItem(atPath: (data as NSString).deletingLastPathComponent) }
        let postmaster = try Self.standInPostmaster(in: data)
        defer { Self.end(postmaster) }
        let pid = postmaster.processIdentifier
        let guardProcess = ProcessFenceGuard(
            executable: AgentCluster.fenceGuardBinary, dataDirectory: data, postmasterPID: { pid }, logger: Self.logger)
        try guardProcess.start()
        defer { guardProcess.stop() }
        let first = try #require(guardProcess.pid)
        kill(first, SIGKILL)
        for _ in 0..<100 where guardProcess.pid != nil { usleep(10_000) }
        #expect(guardProcess.isRunning, "a dead guard must be replaced")
        let second = try #require(guardProcess.pid)
        #expect(second != first)
        await guardProcess.arm(remaining: .milliseconds(200))
        #expect(await Self.waitForExit(postmaster, within: .seconds(10)), "the new guard did not fence")
    }

    /// The guard reads its pipe as bytes and takes only well-formed commands: overflowing numbers,
    /// negative or non-numeric fields, invalid UTF-8 and a 70 KB line without a newline change
    /// nothing (no trap, no deadline), and the next valid `arm` still fences.
    @Test func garbageOnThePipeIsIgnoredAndTheGuardStillFences() async throws {
        let data = try Self.temporaryDataDirectory("garbage")
        defer { try? FileManager.default.removeItem(atPath: (data as NSString).deletingLastPathComponent) }
        let postmaster = try Self.standInPostmaster(in: data)
        defer { Self.end(postmaster) }
        let (guardProcess, pipe) = try Self.bareGuard(dataDirectory: data)
        defer { Self.end(guardProcess) }
        let pid = postmaster.processIdentifier
        var garbage = [
            "arm 99999999999999999999999 \(pid)", "arm -5 \(pid)", "arm 10 abc", "arm 10 \(pid) extra",
            "arm 10 -\(pid)", "arm 10 99999999999", "ARM 10 \(pid)", "", "   ", "arm\t10\t\(pid)",
        ].map { Data(($0 + "\n").utf8) }
        garbage.append(Data([0xFF, 0xFE, 0x00, 0x0A]))
        garbage.append(Data(repeating: 0x61, count: 70_000))  // no newline: dropped, not buffered for ever
        garbage.append(Data("\n".utf8))
        for chunk in garbage { try pipe.fileHandleForWriting.write(contentsOf: chunk) }
        #expect(!(await Self.waitForExit(postmaster, within: .seconds(1))), "garbage armed the guard")
        #expect(guardProcess.isRunning, "the guard died on garbage input")
        try pipe.fileHandleForWriting.write(contentsOf: Data("arm 100 \(pid)\n".utf8))
        #expect(await Self.waitForExit(postmaster, within: .seconds(10)), "a valid arm after garbage did not fence")
    }

    /// Armed, the guard sleeps until its deadline on a CLOCK_BOOTTIME timer: it used to wake every
    /// 100 ms (poll's timeout stops during a host suspend, so it re-read the clock that often).
    @Test func anArmedGuardSleepsUntilItsDeadline() async throws {
        let (guardProcess, pipe) = try Self.bareGuard(dataDirectory: nil)
        defer { Self.end(guardProcess) }
        func wakeUps() -> Int? {
            let status = try? String(contentsOfFile: "/proc/\(guardProcess.processIdentifier)/status", encoding: .utf8)
            return status?.split(separator: "\n").first { $0.hasPrefix("voluntary_ctxt_switches:") }
                .flatMap { Int($0.split(separator: "\t").last ?? "") }
        }
        try pipe.fileHandleForWriting.write(contentsOf: Data("arm 20000 999999\n".utf8))
        try await Task.sleep(for: .milliseconds(300))
        let before = try #require(wakeUps())
        try await Task.sleep(for: .seconds(2))
        let after = try #require(wakeUps())
        #expect(after - before <= 3, "the armed guard woke \(after - before) times in 2 s")
    }

    /// Without its guard executable the agent does not start as a leader candidate: the error names
    /// the path and how to fix it. Before, the guard was a subcommand of `baton` itself.
    @Test func aMissingGuardExecutableIsAClearError() throws {
        let guardProcess = ProcessFenceGuard(
            executable: "/nonexistent/baton-fence-guard", dataDirectory: "/tmp", postmasterPID: { nil },
            logger: Self.logger)
        do {
            try guardProcess.start()
            Issue.record("a missing guard executable started")
        } catch let error as FenceGuardUnavailable {
            #expect(error.description.contains("/nonexistent/baton-fence-guard"))
            #expect(error.description.contains("fence_guard: false"))
        }
        #expect(ProcessFenceGuard.executable(besides: "/usr/local/bin/baton") == "/usr/local/bin/baton-fence-guard")
    }
}
