import BatonCore
import BatonHA
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// The fence backstop as a separate OS process (`baton fence-guard --data-dir DIR`), so that it
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
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["fence-guard", "--data-dir", dataDirectory]
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

/// The body of `baton fence-guard`: reads commands from standard input, fences at deadlines.
public enum FenceGuardMain {
    public static func run(dataDirectory configured: String? = nil) -> Int32 {
        signal(SIGINT, SIG_IGN)
        signal(SIGPIPE, SIG_IGN)
        // postmaster's working directory is the resolved path: compare with the resolved data_dir.
        let dataDirectory = configured.map(resolvedPath)
        let owner = Ownership(guardStart: startTime(getpid()) ?? .max)
        var deadline: UInt64?
        /// After a fence, until when a postmaster that appears in the data directory is fenced too
        /// (a start that was already under way when the deadline passed).
        var watchUntil: UInt64?
        var pid: Int32 = 0
        var buffer = [UInt8]()
        var inputOpen = true
        while true {
            let now = monotonicMilliseconds()
            // poll's own timeout does not advance while the host is suspended: wake at least every
            // 100 ms to read CLOCK_BOOTTIME again, so a resume past the deadline fences within 100 ms.
            var timeout: Int32 = -1
            if let deadline { timeout = deadline > now ? Int32(min(deadline - now, 100)) : 0 }
            if let until = watchUntil {
                if now >= until { watchUntil = nil } else { timeout = timeout < 0 ? 100 : min(timeout, 100) }
            }
            if !inputOpen {
                guard deadline != nil || watchUntil != nil else { return 0 }
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
                            // At most a day ahead: a garbled line cannot overflow the deadline.
                            deadline = monotonicMilliseconds() + min(milliseconds, 86_400_000)
                            pid = target
                            watchUntil = nil
                        }
                    case "disarm":
                        deadline = nil
                        watchUntil = nil
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
                // The postmaster of the data directory now, when another one replaced the armed
                // PID (a restart, a start in flight) since the last arm.
                if let dataDirectory, let now = postmasterOf(dataDirectory), now != pid, !isStandby(dataDirectory),
                    owner.mayFence(now)
                {
                    fence(now)
                }
                deadline = nil
                if dataDirectory != nil { watchUntil = monotonicMilliseconds() + 5_000 }
            } else if watchUntil != nil, let dataDirectory, !isStandby(dataDirectory),
                let late = postmasterOf(dataDirectory), owner.mayFence(late)
            {
                fence(late)
            }
        }
    }

    /// Whose postmasters this guard may stop besides the PID it was armed with. The guard outlives
    /// the agent that started it (that is its purpose), so when the agent was killed and a new one
    /// started, a postmaster in the same data directory may be the new agent's, promoted under a
    /// lease of its own: the old guard must leave that one alone. Found by the client failover
    /// test: the killed agent's guard, still watching after its deadline, stopped the node's new
    /// primary right after a switchover promoted it.
    struct Ownership {
        /// This guard's start, in clock ticks after boot (/proc/PID/stat); unknown reads as "now
        /// and for ever", so that no postmaster looks newer than the guard.
        let guardStart: UInt64

        /// False only for a postmaster whose parent is a live process that started after this
        /// guard: a supervisor that came later (a new agent). The agent that started the guard
        /// started before it (even when a new agent has since reused its PID, the start time tells
        /// them apart); an orphan is re-parented to init or a subreaper, which started before too;
        /// a parent that cannot be read is not "someone else's": all of those are fenced.
        func mayFence(_ postmaster: Int32) -> Bool {
            guard let parent = parentOf(postmaster), parent > 1, let parentStart = startTime(parent),
                parentStart > guardStart,
                parentOf(postmaster) == parent  // the parent did not die and its PID get reused meanwhile
            else { return true }
            FenceGuardMain.logOnce(
                postmaster,
                "postmaster \(postmaster) is supervised by process \(parent), started after this guard "
                    + "(a new agent): left alone")
            return false
        }
    }

    nonisolated(unsafe) private static var loggedPostmasters = Set<Int32>()

    static func logOnce(_ pid: Int32, _ message: String) {
        guard loggedPostmasters.insert(pid).inserted else { return }
        log(message)
    }

    /// Fields after the command of /proc/PID/stat (the command may contain spaces and parentheses).
    static func statFields(_ pid: Int32) -> [Substring]? {
        guard let data = readSmallRegularFile("/proc/\(pid)/stat") else { return nil }
        let text = String(decoding: data, as: UTF8.self)
        guard let close = text.lastIndex(of: ")") else { return nil }
        return text[text.index(after: close)...].split(separator: " ")
    }

    /// The parent PID (field 4 of /proc/PID/stat).
    static func parentOf(_ pid: Int32) -> Int32? {
        guard let fields = statFields(pid), fields.count > 1 else { return nil }
        return Int32(fields[1])
    }

    /// The start time in clock ticks after boot (field 22 of /proc/PID/stat).
    static func startTime(_ pid: Int32) -> UInt64? {
        guard let fields = statFields(pid), fields.count > 19 else { return nil }
        return UInt64(fields[19])
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

    /// A postmaster started with standby.signal is a standby: it accepts no write unless promoted,
    /// which only an agent holding the key does. The agent (a new one, after a crash) restarts a
    /// fenced node that way; the guard must leave it alone.
    static func isStandby(_ dataDirectory: String) -> Bool {
        var info = stat()
        return lstat(dataDirectory + "/standby.signal", &info) == 0
    }

    /// The PID in `<dataDirectory>/postmaster.pid` when that process is a postgres whose working
    /// directory is the data directory (guards against a stale file and a reused PID).
    static func postmasterOf(_ dataDirectory: String) -> Int32? {
        guard let data = readSmallRegularFile(dataDirectory + "/postmaster.pid"),
            let line = String(decoding: data, as: UTF8.self).split(separator: "\n").first,
            let pid = Int32(line.trimmingCharacters(in: .whitespaces)), pid > 0, isPostgres(pid),
            let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd"),
            resolvedPath(cwd) == dataDirectory
        else { return nil }
        return pid
    }

    /// The first 4 KiB of a regular file, opened without following a symbolic link and without
    /// blocking (the guard runs as root; the data directory belongs to the postgres user, who could
    /// plant a link or a FIFO there).
    static func readSmallRegularFile(_ path: String) -> [UInt8]? {
        let descriptor = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = read(descriptor, &buffer, buffer.count)
        return count > 0 ? Array(buffer[0..<count]) : nil
    }

    static func resolvedPath(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Milliseconds on CLOCK_BOOTTIME, which, unlike CLOCK_MONOTONIC, goes on while the host is
    /// suspended: a deadline that passed during a suspend has passed on resume.
    static func monotonicMilliseconds() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_BOOTTIME, &spec)
        return UInt64(spec.tv_sec) * 1000 + UInt64(spec.tv_nsec) / 1_000_000
    }

    static func log(_ message: String) {
        FileHandle.standardError.write(Data("baton fence-guard: \(message)\n".utf8))
    }
}
