import BatonEtcd
import BatonTesting
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// A real etcd cluster on loopback, started and stopped through `etcd/local-etcd` (which signals
/// only the PIDs it recorded).
final class LocalEtcd: Sendable {
    let directory: URL
    let endpoints: [String]
    let password: String?

    static let script: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("etcd/local-etcd").path

    struct Failure: Error, CustomStringConvertible { let description: String }

    private init(directory: URL, endpoints: [String], password: String?) {
        self.directory = directory
        self.endpoints = endpoints
        self.password = password
    }

    static func start(members: Int, auth password: String? = nil) throws -> LocalEtcd {
        let directory = try TestEnvironment.makeTemporaryDirectory(prefix: "etcd")
        let ports = try TestEnvironment.freePorts(members * 2).map(String.init).joined(separator: ",")
        var arguments = ["start", directory.path, "--members", "\(members)", "--ports", ports]
        if let password { arguments += ["--auth", password] }
        let output: String
        do {
            output = try run(arguments)
        } catch {
            _ = try? run(["stop", directory.path])
            throw error
        }
        let endpoints = output.split(separator: "\n").last.map { $0.split(separator: ",").map(String.init) } ?? []
        return LocalEtcd(directory: directory, endpoints: endpoints, password: password)
    }

    /// Runs `body` with a fresh cluster and stops it afterwards, also when `body` throws.
    static func with<T>(
        members: Int, auth: String? = nil, _ body: (LocalEtcd) async throws -> T
    ) async throws -> T {
        let etcd = try start(members: members, auth: auth)
        do {
            let result = try await body(etcd)
            etcd.stop()
            return result
        } catch {
            etcd.stop()
            throw error
        }
    }

    func stop() {
        _ = try? Self.run(["stop", directory.path])
        try? FileManager.default.removeItem(at: directory)
    }

    /// SIGKILL of member `index` (a crash).
    func kill(member index: Int) throws { _ = try Self.run(["kill", directory.path, "\(index)"]) }

    func startMember(_ index: Int) throws { _ = try Self.run(["start-member", directory.path, "\(index)"]) }

    func member(endpoint: String) -> Int? { endpoints.firstIndex(of: endpoint) }

    func client(
        endpoints: [String]? = nil, credentials: EtcdConfiguration.Credentials? = nil,
        requestTimeout: Duration = .seconds(5), label: String = "etcd-test"
    ) -> EtcdClient {
        EtcdClient(
            configuration: EtcdConfiguration(
                endpoints: endpoints ?? self.endpoints,
                credentials: credentials ?? password.map { .init(user: "root", password: $0) },
                requestTimeout: requestTimeout),
            logger: testLogger(label))
    }

    /// Runs the script with posix_spawn and waitpid (Foundation's `Process.waitUntilExit` can miss
    /// the exit of a child whose own children live on), output through files.
    @discardableResult
    static func run(_ arguments: [String]) throws -> String {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("local-etcd-\(UUID().uuidString)")
        let outPath = scratch.path + ".out"
        let errPath = scratch.path + ".err"
        defer {
            try? FileManager.default.removeItem(atPath: outPath)
            try? FileManager.default.removeItem(atPath: errPath)
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let argv = ["/bin/bash", script] + arguments
        var cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for pointer in cArguments { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, "/bin/bash", &actions, nil, &cArguments, environ)
        guard spawned == 0 else { throw Failure(description: "posix_spawn failed: \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        let output = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let errors = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        let exited = status & 0x7F == 0
        let code = (status >> 8) & 0xFF
        guard exited, code == 0 else {
            throw Failure(description: "local-etcd \(arguments.first ?? "") failed (status \(status)): \(errors)")
        }
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

func testLogger(_ label: String) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel =
        ProcessInfo.processInfo.environment["BATON_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
    return logger
}

struct TimedOut: Error, CustomStringConvertible {
    let description: String
}

/// Runs `body`, failing with `TimedOut` if it takes longer than `limit`.
func withTimeout<T: Sendable>(
    _ limit: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw TimedOut(description: "\(what) did not finish within \(limit)")
        }
        defer { group.cancelAll() }
        guard let result = try await group.next() else { throw TimedOut(description: what) }
        return result
    }
}
