import BatonCore
import BatonHA
import Foundation
import Logging

/// The fence backstop as a separate OS process (`baton-fence-guard --data-dir DIR`, its own small
/// executable installed beside `baton`: Sources/baton-fence-guard), so that it
/// keeps running when the agent is frozen (SIGSTOP) or killed (SIGKILL). The agent sends it, over
/// a pipe, `arm <milliseconds> <postmaster pid>` after each lease renewal while primary and
/// `disarm` otherwise. When a deadline passes without a re-arm, the guard stops with an immediate
/// shutdown (SIGQUIT, then SIGKILL after one second) the postmaster it was told about *and* the
/// one postmaster.pid names at that moment (a restart may have replaced it since the last arm).
/// Remaining time, not an instant, crosses the pipe, and each side measures it on its own clock
/// (CLOCK_BOOTTIME: it goes on while the host is suspended).
///
/// Supervised: every arm or disarm first checks that the guard process lives and starts a new one
/// when it died (logged); `isRunning` tells the HA loop, which does not lead without a guard.
public final class ProcessFenceGuard: FenceGuard, @unchecked Sendable {
    private let lock = NSLock()
    private var process: Process?
    private var pipe: Pipe?
    private var restarts = 0
    private let executable: String
    private let dataDirectory: String
    private let postmasterPID: @Sendable () -> Int32?
    private let logger: Logger

    /// Where the guard is installed: beside the `baton` binary.
    public static func executable(besides baton: String) -> String {
        URL(fileURLWithPath: baton).deletingLastPathComponent().appendingPathComponent("baton-fence-guard").path
    }

    public init(
        executable: String, dataDirectory: String, postmasterPID: @escaping @Sendable () -> Int32?, logger: Logger
    ) {
        self.executable = executable
        self.dataDirectory = dataDirectory
        self.postmasterPID = postmasterPID
        self.logger = logger
    }

    /// Starts the guard process.
    public func start() throws {
        try lock.withLock { try startLocked() }
    }

    private func startLocked() throws {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw FenceGuardUnavailable(
                description: """
                    fence_guard is on but \(executable) is missing or not executable: install baton-fence-guard \
                    beside baton (both come from the same build: swift build --product baton-fence-guard), or set \
                    fence_guard: false (a frozen or killed agent then leaves its primary running)
                    """)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["--data-dir", dataDirectory]
        let pipe = Pipe()
        process.standardInput = pipe
        try process.run()
        self.process = process
        self.pipe = pipe
        logger.info("fence guard started", metadata: ["ha.fence_guard_pid": "\(process.processIdentifier)"])
    }

    /// The guard's PID while it runs.
    public var pid: Int32? {
        lock.withLock { process.flatMap { $0.isRunning ? $0.processIdentifier : nil } }
    }

    /// Whether a guard runs, after restarting one that died.
    public var isRunning: Bool { lock.withLock { ensureRunningLocked() } }

    /// Restarts a guard that died; false when none runs and none could be started.
    private func ensureRunningLocked() -> Bool {
        guard pipe != nil else { return false }  // stopped on purpose
        if let process, process.isRunning { return true }
        restarts += 1
        logger.error(
            "fence guard process is gone: starting a new one",
            metadata: [
                "ha.fence_guard_pid": "\(process?.processIdentifier ?? 0)", "ha.fence_guard_restarts": "\(restarts)",
            ])
        try? pipe?.fileHandleForWriting.close()
        do {
            try startLocked()
            return true
        } catch {
            logger.critical("could not start a new fence guard process: \(error)")
            return false
        }
    }

    /// Arms even when no postmaster is known right now (a crash recovery or a restart between two
    /// postmasters): PID 0 makes the guard fence whatever postmaster.pid names at the deadline.
    public func arm(remaining: Duration) async {
        let pid = postmasterPID() ?? 0
        let milliseconds = max(
            0, remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000)
        send("arm \(milliseconds) \(pid)")
    }

    public func disarm() async { send("disarm") }

    /// Tells the guard to exit (graceful agent shutdown, after postgres was dealt with).
    public func stop() {
        lock.withLock {
            if let handle = pipe?.fileHandleForWriting { try? handle.write(contentsOf: Data("exit\n".utf8)) }
            try? pipe?.fileHandleForWriting.close()
            pipe = nil
        }
    }

    private func send(_ line: String) {
        lock.withLock {
            guard ensureRunningLocked(), let handle = pipe?.fileHandleForWriting else { return }
            do {
                try handle.write(contentsOf: Data((line + "\n").utf8))
            } catch {
                logger.error("fence guard pipe write failed: \(error)")
            }
        }
    }
}

/// The guard cannot be started: the agent does not run as a leader candidate without it.
public struct FenceGuardUnavailable: Error, CustomStringConvertible {
    public let description: String
}
