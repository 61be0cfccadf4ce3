import BatonCore
import BatonHA
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// The fence backstop as a separate OS process (`baton fence-guard`), so that it keeps running
/// when the agent is frozen (SIGSTOP) or killed (SIGKILL). The agent sends it, over a pipe,
/// `arm <milliseconds> <postmaster pid>` after each lease renewal while primary and `disarm`
/// otherwise. When a deadline passes without a re-arm, the guard stops postgres with an
/// immediate shutdown (SIGQUIT, then SIGKILL after one second). Remaining time, not an instant,
/// crosses the pipe, and each side measures it on its own monotonic clock.
public final class ProcessFenceGuard: FenceGuard, @unchecked Sendable {
    private let lock = NSLock()
    private var process: Process?
    private var pipe: Pipe?
    private let executable: String
    private let postmasterPID: @Sendable () -> Int32?
    private let logger: Logger

    public init(executable: String, postmasterPID: @escaping @Sendable () -> Int32?, logger: Logger) {
        self.executable = executable
        self.postmasterPID = postmasterPID
        self.logger = logger
    }

    /// Starts the guard process.
    public func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["fence-guard"]
        let pipe = Pipe()
        process.standardInput = pipe
        try process.run()
        lock.withLock {
            self.process = process
            self.pipe = pipe
        }
        logger.info("fence guard started", metadata: ["ha.fence_guard_pid": "\(process.processIdentifier)"])
    }

    public func arm(remaining: Duration) async {
        guard let pid = postmasterPID() else {
            send("disarm")
            return
        }
        let milliseconds = max(
            0, remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000)
        send("arm \(milliseconds) \(pid)")
    }

    public func disarm() async { send("disarm") }

    /// Tells the guard to exit (graceful agent shutdown, after postgres was dealt with).
    public func stop() {
        send("exit")
        lock.withLock {
            try? pipe?.fileHandleForWriting.close()
            pipe = nil
        }
    }

    private func send(_ line: String) {
        lock.withLock {
            guard let handle = pipe?.fileHandleForWriting else { return }
            do {
                try handle.write(contentsOf: Data((line + "\n").utf8))
            } catch {
                logger.error("fence guard pipe write failed: \(error)")
            }
        }
    }
}

/// The body of `baton fence-guard`: reads commands from standard input, fences at deadlines.
public enum FenceGuardMain {
    public static func run() -> Int32 {
        signal(SIGINT, SIG_IGN)
        signal(SIGPIPE, SIG_IGN)
        var deadline: UInt64?
        var pid: Int32 = 0
        var buffer = [UInt8]()
        var inputOpen = true
        while true {
            let now = monotonicMilliseconds()
            var timeout: Int32 = -1
            if let deadline { timeout = deadline > now ? Int32(min(deadline - now, 60_000)) : 0 }
            if !inputOpen {
                guard deadline != nil else { return 0 }
            }
            var descriptor = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
            let ready =
                inputOpen
                ? poll(&descriptor, 1, timeout)
                : {
                    usleep(UInt32(max(timeout, 1)) * 1000)
                    return Int32(0)
                }()
            if ready > 0 {
                var chunk = [UInt8](repeating: 0, count: 4096)
                let count = read(0, &chunk, chunk.count)
                if count <= 0 {
                    inputOpen = false
                    continue
                }
                buffer.append(contentsOf: chunk[0..<count])
                while let newline = buffer.firstIndex(of: 10) {
                    let line = String(decoding: buffer[..<newline], as: UTF8.self)
                    buffer.removeSubrange(...newline)
                    let words = line.split(separator: " ")
                    switch words.first {
                    case "arm" where words.count == 3:
                        if let milliseconds = UInt64(words[1]), let target = Int32(words[2]) {
                            deadline = monotonicMilliseconds() + milliseconds
                            pid = target
                        }
                    case "disarm":
                        deadline = nil
                    case "exit":
                        return 0
                    default:
                        break
                    }
                }
                continue
            }
            if let current = deadline, monotonicMilliseconds() >= current {
                fence(pid)
                deadline = nil
                if !inputOpen { return 0 }
            }
        }
    }

    static func fence(_ pid: Int32) {
        guard pid > 0, isPostgres(pid) else { return }
        log("lease deadline passed without renewal: immediate shutdown of postmaster \(pid)")
        kill(pid, SIGQUIT)
        for _ in 0..<100 {
            if kill(pid, 0) != 0 { return }
            usleep(10_000)
        }
        if isPostgres(pid) {
            log("postmaster \(pid) still alive after SIGQUIT: SIGKILL")
            kill(pid, SIGKILL)
        }
    }

    /// Guards against PID reuse: only a process whose command is postgres is signalled.
    static func isPostgres(_ pid: Int32) -> Bool {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        let command = String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)
        return command.hasSuffix("postgres") || command.hasSuffix("postmaster")
    }

    static func monotonicMilliseconds() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) * 1000 + UInt64(spec.tv_nsec) / 1_000_000
    }

    static func log(_ message: String) {
        FileHandle.standardError.write(Data("baton fence-guard: \(message)\n".utf8))
    }
}
