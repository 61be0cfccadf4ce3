import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// Runs PostgreSQL's tools (initdb, pg_basebackup, pg_rewind, pg_controldata) to completion as the
/// configured OS user: when the agent runs as root they go through
/// `setpriv --reuid=U --regid=G --init-groups --`, because PostgreSQL refuses to run as root.
///
/// Output (stdout and stderr together) is read on a dedicated thread, split into lines at `\n` and
/// `\r` and handed to `onLine`; the caller's task waits without blocking the cooperative pool.
/// Secrets go through the environment or a passfile, never through `arguments`.
struct CommandRunner: Sendable {
    var runAs: OSUser?
    var logger: Logger

    struct Output: Sendable {
        var status: Int32
        var exitedBySignal: Bool
        /// The last 64 KiB of output.
        var text: String
        var succeeded: Bool { status == 0 && !exitedBySignal }
    }

    /// Runs `executable` and waits for it; throws only when it cannot be started or exceeds
    /// `timeout` (then it is terminated, then killed).
    func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:],
        timeout: Duration, onLine: (@Sendable (String) -> Void)? = nil
    ) async throws -> Output {
        let process = Process()
        if geteuid() == 0, let user = runAs, user.uid != 0 {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            process.arguments =
                ["--reuid=\(user.uid)", "--regid=\(user.gid)", "--init-groups", "--", executable] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        }
        process.environment = CommandRunner.baseEnvironment.merging(environment) { $1 }
        process.currentDirectoryURL = URL(fileURLWithPath: "/")
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        do {
            try process.run()
        } catch {
            throw PostgresError(
                .commandFailed, "could not start \(executable); check bin_dir and that the file is executable",
                cause: error)
        }
        try? pipe.fileHandleForWriting.close()
        let pid = process.processIdentifier
        let box = ProcessBox(process)
        let timedOut = TimeoutFlag()
        // Foundation starts the child in a process group of its own (its pid): a timeout ends
        // the whole group — a script's children too (a backup tool under a wrapper), which would
        // otherwise go on writing into a data directory Baton then clears.
        let timer = DispatchWorkItem {
            timedOut.set()
            if getpgid(pid) == pid { kill(-pid, SIGTERM) }
            kill(pid, SIGTERM)
            CommandRunner.timerQueue.asyncAfter(deadline: .now() + 5) {
                if getpgid(pid) == pid || box.process.isRunning { kill(-pid, SIGKILL) }
                if box.process.isRunning { kill(pid, SIGKILL) }
            }
        }
        CommandRunner.timerQueue.asyncAfter(deadline: .now() + timeout.secondsDouble, execute: timer)
        defer { timer.cancel() }

        let reader = pipe.fileHandleForReading
        let output: Output = await withCheckedContinuation { continuation in
            let thread = Thread {
                let text = CommandRunner.readLines(fd: reader.fileDescriptor, onLine: onLine)
                try? reader.close()
                exited.wait()
                let reason = box.process.terminationReason
                continuation.resume(
                    returning: Output(
                        status: box.process.terminationStatus, exitedBySignal: reason == .uncaughtSignal, text: text))
            }
            thread.name = "baton.pg.cmd \(pid)"
            thread.start()
        }
        if timedOut.isSet {
            throw PostgresError(
                .commandTimeout,
                "\((executable as NSString).lastPathComponent) did not finish within \(timeout) and was terminated; "
                    + "output: \(output.text.suffix(500))")
        }
        return output
    }

    /// Reads `fd` to EOF, reporting complete lines; returns the last 64 KiB of text.
    static func readLines(fd: Int32, onLine: (@Sendable (String) -> Void)?) -> String {
        var buffer = [UInt8](repeating: 0, count: 8192)
        var kept: [UInt8] = []
        var line: [UInt8] = []
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            kept.append(contentsOf: buffer[0..<count])
            if kept.count > 131_072 { kept.removeFirst(kept.count - 65_536) }
            for byte in buffer[0..<count] {
                if byte == 0x0A || byte == 0x0D {
                    if !line.isEmpty { onLine?(String(decoding: line, as: UTF8.self)) }
                    line.removeAll(keepingCapacity: true)
                } else {
                    line.append(byte)
                }
            }
        }
        if !line.isEmpty { onLine?(String(decoding: line, as: UTF8.self)) }
        if kept.count > 65_536 { kept.removeFirst(kept.count - 65_536) }
        return String(decoding: kept, as: UTF8.self)
    }

    static let timerQueue = DispatchQueue(label: "baton.pg.command-timers")

    /// A small, predictable environment for the tools (no inherited PG* variables).
    static var baseEnvironment: [String: String] {
        let inherited = ProcessInfo.processInfo.environment
        var environment: [String: String] = [
            "PATH": inherited["PATH"] ?? "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
        ]
        if let tz = inherited["TZ"] { environment["TZ"] = tz }
        return environment
    }
}

/// `Process` is not Sendable; it is only read after it has exited (or to check `isRunning`).
private final class ProcessBox: @unchecked Sendable {
    let process: Process
    init(_ process: Process) { self.process = process }
}

final class TimeoutFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() {
        lock.lock()
        value = true
        lock.unlock()
    }
    var isSet: Bool {
        lock.lock()
        defer { lock.unlock() }
        return value
    }
}
