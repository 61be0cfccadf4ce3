import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// Runs an operator's hook (a callback, `pre_promote`, `before_stop`) as a shell command with
/// Patroni's arguments (event, role, scope), on a thread of its own, bounded by a timeout past
/// which the command and every process it started are killed. Nothing here runs on the HA loop.
enum HookRunner {
    /// Runs `command` and returns its exit status, or nil when it could not start or was killed
    /// at `timeout`.
    static func run(_ command: String, arguments: [String], timeout: Duration, logger: Logger) async -> Int32? {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(
                    returning: runBlocking(command, arguments: arguments, timeout: timeout, logger: logger))
            }
        }
    }

    /// Starts `command` and returns at once; it is waited for (and killed at `timeout`) on a
    /// thread of its own, and a non-zero exit is logged.
    static func start(_ command: String, arguments: [String], timeout: Duration, logger: Logger) {
        Thread.detachNewThread {
            let status = runBlocking(command, arguments: arguments, timeout: timeout, logger: logger)
            if let status, status != 0 {
                logger.warning("hook exited with \(status)", metadata: ["hook.command": "\(command)"])
            }
        }
    }

    /// The agent's environment without its own settings: `BATON_*` and `PATRONI_*` may hold the
    /// superuser's, etcd's or the REST API's password (Patroni removes the ones it reads too).
    static func hookEnvironment(_ environment: [String: String]) -> [String: String] {
        environment.filter { !$0.key.hasPrefix("BATON_") && !$0.key.hasPrefix("PATRONI_") }
    }

    static func runBlocking(_ command: String, arguments: [String], timeout: Duration, logger: Logger) -> Int32? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command + " \"$@\"", "baton-hook"] + arguments
        process.environment = hookEnvironment(ProcessInfo.processInfo.environment)
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        do {
            try process.run()
        } catch {
            logger.error("could not run hook '\(command)': \(error)")
            return nil
        }
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        if exited.wait(timeout: .now() + seconds) == .success { return process.terminationStatus }
        let killed = killTree(process.processIdentifier)
        _ = exited.wait(timeout: .now() + 5)
        logger.error(
            "hook did not finish within \(timeout): killed it and the \(killed - 1) process(es) it started",
            metadata: ["hook.command": "\(command)", "hook.event": "\(arguments.first ?? "")"])
        return nil
    }

    /// SIGKILLs `root` and all its descendants (collected first, so none escapes by being
    /// re-parented while the tree is killed); returns how many were signalled.
    @discardableResult
    static func killTree(_ root: pid_t) -> Int {
        guard root > 1 else { return 0 }
        var children: [pid_t: [pid_t]] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(entry),
                let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 2, let parent = pid_t(fields[1]) { children[parent, default: []].append(pid) }
        }
        var tree: [pid_t] = []
        var queue = [root]
        while let pid = queue.popLast() {
            tree.append(pid)
            queue.append(contentsOf: children[pid] ?? [])
        }
        for pid in tree { kill(pid, SIGSTOP) }
        for pid in tree { kill(pid, SIGKILL) }
        return tree.count
    }
}
