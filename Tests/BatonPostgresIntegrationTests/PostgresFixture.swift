import BatonCore
import BatonPostgres
import BatonTesting
import Foundation
import Logging
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Real PostgreSQL 15 processes for one test: data directories under a fresh temp dir, copies of a
/// once-per-process bootstrapped template, and cleanup that kills every postmaster it saw, by PID.
final class PostgresFixture: @unchecked Sendable {
    static let binDirectory = "/usr/lib/postgresql/15/bin"
    static let superuser = Credentials(username: "postgres", password: "super secret'pw")
    static let replication = Credentials(username: "replicator", password: "repl:secret")
    static let rewind = Credentials(username: "rewinder", password: "rewind-secret")

    let root: URL
    private let lock = NSLock()
    private var nodes: [LocalPostgresNode] = []

    init(_ name: String) throws {
        root = try TestEnvironment.makeTemporaryDirectory(prefix: "baton-pg-\(name)")
    }

    static func logger(_ label: String) -> Logger {
        var logger = Logger(label: "pg.\(label)") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = ProcessInfo.processInfo.environment["BATON_TEST_LOG"] == "debug" ? .debug : .info
        return logger
    }

    func configuration(_ member: String, port: Int? = nil, superuser: Credentials = PostgresFixture.superuser) throws
        -> LocalPostgresConfiguration
    {
        LocalPostgresConfiguration(
            memberName: member, dataDirectory: root.appendingPathComponent(member).path,
            binDirectory: Self.binDirectory,
            port: try port ?? TestEnvironment.freePort(), superuser: superuser, replication: Self.replication,
            rewind: Self.rewind,
            parameters: ["shared_buffers": "16MB", "max_connections": "20", "fsync": "off", "wal_keep_size": "64MB"],
            connectTimeout: .seconds(3), startTimeout: .seconds(30), cloneTimeout: .seconds(120))
    }

    /// A node (registered for cleanup).
    func node(_ configuration: LocalPostgresConfiguration) throws -> LocalPostgresNode {
        let node = try LocalPostgresNode(configuration: configuration, logger: Self.logger(configuration.memberName))
        lock.withLock { nodes.append(node) }
        return node
    }

    /// A node whose data directory is a copy of the bootstrapped template (stopped primary).
    func nodeFromTemplate(_ member: String, port: Int? = nil) async throws -> LocalPostgresNode {
        let template = try await Template.shared.path()
        let configuration = try configuration(member, port: port)
        try Self.shell("/bin/cp", ["-a", template, configuration.dataDirectory])
        return try node(configuration)
    }

    func source(_ node: LocalPostgresNode) -> ReplicationSource {
        ReplicationSource(member: node.configuration.memberName, host: "127.0.0.1", port: node.configuration.port)
    }

    /// A separate superuser session for checking what the node says.
    func connect(_ node: LocalPostgresNode) async throws -> PostgresConnection {
        try await PostgresConnection.connect(
            ConnectionParameters(
                host: "127.0.0.1", port: node.configuration.port, user: Self.superuser.username,
                password: Self.superuser.password))
    }

    /// Kills every postmaster this test started or adopted (SIGQUIT, then SIGKILL), by PID, and
    /// removes the temp dir. Synchronous so that it can run from `defer`.
    func cleanUp() {
        let nodes = lock.withLock { self.nodes }
        var pids: Set<Int32> = []
        for node in nodes {
            if let pid = node.postmasterPID { pids.insert(pid) }
            let pidFile = node.configuration.dataDirectory + "/postmaster.pid"
            if let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
                let line = text.split(separator: "\n").first, let pid = Int32(line),
                Self.isPostgres(pid, dataDirectory: node.configuration.dataDirectory)
            {
                pids.insert(pid)
            }
        }
        for pid in pids { kill(pid, SIGQUIT) }
        for pid in pids {
            for _ in 0..<100 where kill(pid, 0) == 0 && !Self.isZombie(pid) { usleep(20_000) }
            if kill(pid, 0) == 0 && !Self.isZombie(pid) { kill(pid, SIGKILL) }
        }
        try? FileManager.default.removeItem(at: root)
    }

    static func isZombie(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return true }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    static func isPostgres(_ pid: Int32, dataDirectory: String) -> Bool {
        guard let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd") else {
            return false
        }
        return cwd == dataDirectory
    }

    static func shell(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw PostgresError(
                .commandFailed, "\(executable) \(arguments.joined(separator: " ")) exited \(process.terminationStatus)")
        }
    }

    /// Polls `condition` every 20 ms until it holds or `timeout` passes.
    static func eventually(
        _ what: String, timeout: Duration = .seconds(20), _ condition: () async throws -> Bool
    ) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw PostgresError(.commandTimeout, "timed out after \(timeout) waiting for: \(what)")
    }
}

/// The once-per-process bootstrapped template: initdb, roles, hba; then stopped.
actor Template {
    static let shared = Template()
    private var task: Task<String, any Error>?

    func path() async throws -> String {
        if let task { return try await task.value }
        let task = Task<String, any Error> {
            let fixture = try PostgresFixture("template")
            let node = try fixture.node(try fixture.configuration("template"))
            do {
                _ = try await node.bootstrap()
                try await node.stop(mode: .fast, timeout: .seconds(30))
            } catch {
                fixture.cleanUp()
                throw error
            }
            Template.registerRemoval(fixture.root.path)
            // Leave nothing that would identify the template's member in the copies.
            unlink(node.configuration.dataDirectory + "/postmaster.opts")
            return node.configuration.dataDirectory
        }
        self.task = task
        return try await task.value
    }

    nonisolated(unsafe) private static var removals: [String] = []

    private static func registerRemoval(_ path: String) {
        removals.append(path)
        atexit {
            for path in Template.removals { try? FileManager.default.removeItem(atPath: path) }
        }
    }
}
