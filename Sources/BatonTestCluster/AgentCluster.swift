import BatonCore
import BatonEtcd
import BatonPostgres
import BatonTesting
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// What a test cluster is started with.
public struct ClusterOptions: Sendable {
    public var nodes = 3
    public var ttl = 4.0
    public var loopWait = 1.0
    public var retryTimeout = 1.5
    public var maximumLagOnFailover = 1_048_576
    public var synchronousMode = false
    /// `synchronous_mode: quorum` (quorum commit) instead of true/false.
    public var quorumCommit = false
    public var synchronousNodeCount = 1
    public var failsafeMode = false
    /// Extra YAML for a node's `tags:` section, by node index (1-based), e.g. `{nofailover: true}`.
    public var tags: [Int: String] = [:]
    /// When set, every agent's bin_dir is a copy of PostgreSQL's made of symlinks, except initdb,
    /// which sleeps this many seconds first (a slow bootstrap).
    public var initdbDelay: Double?
    /// Extra `bootstrap.dcs` lines (`member_slots_ttl: 5`) and `postgresql.parameters` entries
    /// of the DCS (`archive_mode: 'on'`).
    public var dcsExtra: [String] = []
    /// Members are named `<namePrefix>1`, `<namePrefix>2`, … (two clusters side by side, a
    /// standby cluster and its primary cluster, keep their names apart).
    public var namePrefix = "node"
    /// When set, only the first this many members start with the cluster (the test starts the
    /// others with `startAgent`, e.g. once the first one leads).
    public var startedNodes: Int?
    /// Extra `postgresql.parameters` in every member's file (`name: value`).
    public var localParameters: [String] = []
    /// Extra lines under `bootstrap:` for the member of that index (1-based).
    public var bootstrapExtra: [Int: [String]] = [:]
    /// Extra lines under `postgresql:` for the member of that index (1-based).
    public var postgresqlExtra: [Int: [String]] = [:]
    public var dcsParameters: [String] = []
    /// Extra YAML lines for every node's `restapi:` section (each indented by two spaces).
    public var restapiExtra: [String] = []
    /// When set, each node's whole configuration file (given the node and etcd's `host:port`s)
    /// instead of the generated one: a file written as an operator moving from Patroni has it.
    public var configurationText: (@Sendable (AgentNode, [String]) -> String)?

    public init() {}
}

/// A failure of the harness itself (a process that could not be started, a wait that timed out),
/// carrying the cluster state and the tail of every agent log.
public struct ClusterFailure: Error, CustomStringConvertible {
    public let description: String

    public init(description: String) { self.description = description }
}

/// One node of the test cluster: its ports, paths and configuration.
public struct AgentNode: Sendable {
    public let index: Int
    public let name: String
    public let pgPort: Int
    public let apiPort: Int
    public let directory: String
    public var dataDirectory: String { directory + "/data" }
    public let configPath: String
    public let logPath: String
}

/// Shared by the integration test targets (BatonAgentIntegrationTests, BatonClientIntegrationTests).
///
/// Three real `baton agent` processes over a real 3-member etcd, each supervising a real
/// PostgreSQL 15. Everything it starts is recorded by PID and stopped by PID in `stop()`, which is
/// synchronous so that tests can call it from `defer`.
public final class AgentCluster: @unchecked Sendable {
    public static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    public static let etcdScript = packageRoot.appendingPathComponent("etcd/local-etcd").path
    public static let binDirectory = "/usr/lib/postgresql/15/bin"
    public static let superuserPassword = "it-superuser-secret"
    public static let replicationPassword = "it-replication-secret"
    public static let scope = "it"

    public static var batonBinary: String {
        ProcessInfo.processInfo.environment["BATON_BIN"].flatMap { $0.isEmpty ? nil : $0 }
            ?? packageRoot.appendingPathComponent(".build/debug/baton").path
    }

    /// The fence guard the agents start: installed beside `baton`.
    public static var fenceGuardBinary: String {
        URL(fileURLWithPath: batonBinary).deletingLastPathComponent().appendingPathComponent("baton-fence-guard").path
    }

    public let root: URL
    public let options: ClusterOptions
    public let nodes: [AgentNode]
    public let endpoints: [String]
    public let etcdClient: EtcdClient
    public let store: EtcdClusterStore
    public let started = ContinuousClock.now

    private let lock = NSLock()
    /// The live agent PID per node name.
    private var agents: [String: pid_t] = [:]
    /// Every agent PID ever started (for cleanup).
    private var allAgents: [pid_t] = []
    /// Processes we SIGSTOPped and not yet continued (continued before cleanup signals them).
    private var stopped: Set<pid_t> = []
    private var isStopped = false

    private init(root: URL, options: ClusterOptions, nodes: [AgentNode], endpoints: [String]) {
        self.root = root
        self.options = options
        self.nodes = nodes
        self.endpoints = endpoints
        var logger = Logger(label: "it.etcd") { _ in SwiftLogNoOpLogHandler() }
        logger.logLevel = .critical
        self.etcdClient = EtcdClient(
            configuration: EtcdConfiguration(endpoints: endpoints, requestTimeout: .seconds(2)), logger: logger)
        self.store = EtcdClusterStore(client: etcdClient, scope: Self.scope, logger: logger)
    }

    // MARK: Start and stop

    /// Starts etcd and the agents (not waiting for health).
    public static func start(_ label: String, _ options: ClusterOptions = ClusterOptions()) throws -> AgentCluster {
        guard FileManager.default.isExecutableFile(atPath: batonBinary) else {
            throw ClusterFailure(description: "no baton binary at \(batonBinary); build it or set BATON_BIN")
        }
        let root = try TestEnvironment.makeTemporaryDirectory(prefix: "baton-it-\(label)")
        let etcdDirectory = root.appendingPathComponent("etcd").path
        let etcdPorts = try TestEnvironment.freePorts(6).map(String.init).joined(separator: ",")
        let output: String
        do {
            output = try run(["/bin/bash", etcdScript, "start", etcdDirectory, "--members", "3", "--ports", etcdPorts])
        } catch {
            _ = try? run(["/bin/bash", etcdScript, "stop", etcdDirectory])
            throw error
        }
        let endpoints = output.split(separator: "\n").last.map { $0.split(separator: ",").map(String.init) } ?? []
        var nodes: [AgentNode] = []
        do {
            var binDirectory = Self.binDirectory
            if let delay = options.initdbDelay {
                binDirectory = try slowInitdbBinDirectory(root.appendingPathComponent("bin").path, delay: delay)
            }
            for index in 1...options.nodes {
                let name = "\(options.namePrefix)\(index)"
                let directory = root.appendingPathComponent(name).path
                try makePostgresDirectory(directory)
                let node = AgentNode(
                    index: index, name: name, pgPort: try TestEnvironment.freePort(),
                    apiPort: try TestEnvironment.freePort(), directory: directory,
                    configPath: root.appendingPathComponent("\(name).yml").path,
                    logPath: root.appendingPathComponent("\(name).agent.log").path)
                let hosts = endpoints.map { $0.replacingOccurrences(of: "http://", with: "") }
                let text =
                    options.configurationText?(node, hosts)
                    ?? configuration(node, endpoints: endpoints, options: options, binDirectory: binDirectory)
                try text.write(toFile: node.configPath, atomically: true, encoding: .utf8)
                nodes.append(node)
            }
        } catch {
            _ = try? run(["/bin/bash", etcdScript, "stop", etcdDirectory])
            throw error
        }
        let cluster = AgentCluster(root: root, options: options, nodes: nodes, endpoints: endpoints)
        do {
            for node in nodes.prefix(options.startedNodes ?? nodes.count) { try cluster.startAgent(node.name) }
        } catch {
            cluster.stop()
            throw error
        }
        return cluster
    }

    /// A bin directory of symlinks to PostgreSQL's programs, with an initdb that sleeps first.
    public static func slowInitdbBinDirectory(_ path: String, delay: Double) throws -> String {
        try FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        for program in try FileManager.default.contentsOfDirectory(atPath: binDirectory) where program != "initdb" {
            try FileManager.default.createSymbolicLink(
                atPath: path + "/" + program, withDestinationPath: binDirectory + "/" + program)
        }
        let script = "#!/bin/sh\nsleep \(delay)\nexec \(binDirectory)/initdb \"$@\"\n"
        try script.write(toFile: path + "/initdb", atomically: true, encoding: .utf8)
        chmod(path + "/initdb", 0o755)
        return path
    }

    public static func configuration(
        _ node: AgentNode, endpoints: [String], options: ClusterOptions, binDirectory: String
    ) -> String {
        var text = """
            scope: \(scope)
            name: \(node.name)
            etcd3:
              hosts: [\(endpoints.joined(separator: ", "))]
            restapi:
              listen: 127.0.0.1:\(node.apiPort)
            \(options.restapiExtra.map { "  " + $0 + "\n" }.joined())postgresql:
              listen: 127.0.0.1:\(node.pgPort)
              data_dir: \(node.dataDirectory)
              bin_dir: \(binDirectory)
              authentication:
                superuser: {username: postgres}
                replication: {username: replicator}
              parameters: {\((["shared_buffers: \"16MB\"", "fsync: \"off\"", "max_wal_size: \"64MB\""] + options.localParameters).joined(separator: ", "))}
            \((options.postgresqlExtra[node.index] ?? []).map { "  " + $0 + "\n" }.joined())bootstrap:
            \((options.bootstrapExtra[node.index] ?? []).map { "  " + $0 + "\n" }.joined())  dcs:
                ttl: \(options.ttl)
                loop_wait: \(options.loopWait)
                retry_timeout: \(options.retryTimeout)
                maximum_lag_on_failover: \(options.maximumLagOnFailover)
                synchronous_mode: \(options.quorumCommit ? "quorum" : "\(options.synchronousMode)")
                synchronous_node_count: \(options.synchronousNodeCount)
                failsafe_mode: \(options.failsafeMode)
                postgresql: {parameters: {\((["max_connections: 30"] + options.dcsParameters).joined(separator: ", "))}}
            \(options.dcsExtra.map { "    " + $0 + "\n" }.joined())
            log:
              level: info

            """
        if let tags = options.tags[node.index] { text += "tags: \(tags)\n" }
        return text
    }

    /// `install -d -o postgres -m 700 directory`.
    public static func makePostgresDirectory(_ path: String) throws {
        guard mkdir(path, 0o700) == 0 || errno == EEXIST else {
            throw ClusterFailure(description: "mkdir \(path): errno \(errno)")
        }
        if geteuid() == 0, let user = getpwnam("postgres") {
            guard chown(path, user.pointee.pw_uid, user.pointee.pw_gid) == 0 else {
                throw ClusterFailure(description: "chown postgres \(path): errno \(errno)")
            }
        }
        chmod(path, 0o700)
    }

    public func node(_ name: String) throws -> AgentNode {
        guard let node = nodes.first(where: { $0.name == name }) else {
            throw ClusterFailure(description: "no node named \(name)")
        }
        return node
    }

    /// Launches `baton agent -c node.yml`, output appended to the node's log.
    public func startAgent(_ name: String) throws {
        let node = try node(name)
        var environment = ProcessInfo.processInfo.environment
        environment["BATON_SUPERUSER_PASSWORD"] = Self.superuserPassword
        environment["BATON_REPLICATION_PASSWORD"] = Self.replicationPassword
        let marker = "---- \(elapsed()) test: starting agent \(name)\n"
        appendToFile(node.logPath, marker)
        let pid = try Self.spawn(
            [Self.batonBinary, "agent", "-c", node.configPath], environment: environment, output: node.logPath)
        lock.withLock {
            agents[name] = pid
            allAgents.append(pid)
        }
    }

    public func agentPID(_ name: String) -> pid_t? { lock.withLock { agents[name] } }

    /// Synchronous, idempotent teardown: agents (SIGTERM, then SIGKILL), then any postmaster still
    /// alive (SIGQUIT, then SIGKILL), then etcd; all by PID.
    public func stop() {
        let (pids, paused) = lock.withLock { () -> ([pid_t], Set<pid_t>) in
            let result = (isStopped ? [] : allAgents, stopped)
            isStopped = true
            stopped = []
            return result
        }
        for pid in paused { kill(pid, SIGCONT) }
        let live = pids.filter { Self.isAlive($0) }
        for pid in live { kill(pid, SIGTERM) }
        Self.waitForExit(live, timeout: .seconds(10))
        for pid in live where Self.isAlive(pid) {
            kill(pid, SIGKILL)
        }
        Self.waitForExit(live, timeout: .seconds(2))
        let postmasters = nodes.compactMap { postmasterPID($0.name) }
        for pid in postmasters { kill(pid, SIGQUIT) }
        Self.waitForExit(postmasters, timeout: .seconds(5))
        for pid in postmasters where Self.isPostgres(pid) { kill(pid, SIGKILL) }
        _ = try? Self.run(["/bin/bash", Self.etcdScript, "stop", root.appendingPathComponent("etcd").path])
        etcdClient.shutdown()
        if ProcessInfo.processInfo.environment["BATON_IT_KEEP"] == nil {
            try? FileManager.default.removeItem(at: root)
        } else {
            print("kept \(root.path)")
        }
    }

    // MARK: Faults

    /// SIGKILL of the node's agent and its postmaster (a whole-node crash).
    public func killNode(_ name: String) throws {
        let postmaster = postmasterPID(name)
        if let pid = agentPID(name) {
            kill(pid, SIGKILL)
            Self.waitForExit([pid], timeout: .seconds(2))
        }
        if let postmaster { kill(postmaster, SIGKILL) }
        if let postmaster { Self.waitForExit([postmaster], timeout: .seconds(2)) }
        note(name, "killed (agent and postmaster \(postmaster.map(String.init) ?? "none"), SIGKILL)")
    }

    /// SIGKILL of the node's postmaster only; returns its PID.
    @discardableResult
    public func killPostmaster(_ name: String) throws -> pid_t {
        guard let pid = postmasterPID(name) else {
            throw ClusterFailure(description: "\(name) has no live postmaster")
        }
        kill(pid, SIGKILL)
        note(name, "postmaster \(pid) killed (SIGKILL)")
        return pid
    }

    /// SIGSTOP of any process we are responsible for (resumed before cleanup).
    public func suspend(_ pid: pid_t) {
        lock.withLock { _ = stopped.insert(pid) }
        kill(pid, SIGSTOP)
    }

    public func resume(_ pid: pid_t) {
        kill(pid, SIGCONT)
        lock.withLock { _ = stopped.remove(pid) }
    }

    public func suspendAgent(_ name: String) throws {
        guard let pid = agentPID(name) else { throw ClusterFailure(description: "\(name) has no agent") }
        suspend(pid)
        note(name, "agent \(pid) SIGSTOP")
    }

    public func resumeAgent(_ name: String) throws {
        guard let pid = agentPID(name) else { throw ClusterFailure(description: "\(name) has no agent") }
        resume(pid)
        note(name, "agent \(pid) SIGCONT")
    }

    /// The live postmaster of a node, from the first line of its postmaster.pid, if that process
    /// is a postgres.
    public func postmasterPID(_ name: String) -> pid_t? {
        guard let node = try? node(name),
            let text = try? String(contentsOfFile: node.dataDirectory + "/postmaster.pid", encoding: .utf8),
            let line = text.split(separator: "\n").first, let pid = pid_t(line.trimmingCharacters(in: .whitespaces)),
            pid > 0, Self.isPostgres(pid)
        else { return nil }
        return pid
    }

    private func note(_ name: String, _ text: String) {
        if let node = try? node(name) { appendToFile(node.logPath, "---- \(elapsed()) test: \(text)\n") }
    }

    public func elapsed() -> String {
        let duration = ContinuousClock.now - started
        return String(
            format: "t+%.2fs", Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
    }

    // MARK: Cluster state

    public func view() async throws -> ClusterView { try await store.loadCluster() }

    /// The member that holds the leader key and publishes role primary, state running.
    public func primary(in view: ClusterView) -> String? {
        guard let leader = view.leader?.member, let member = view.member(named: leader),
            member.role == .primary, member.state == .running
        else { return nil }
        return leader
    }

    public func isHealthy(_ view: ClusterView, nodes expected: Int? = nil) -> Bool {
        guard let leader = primary(in: view) else { return false }
        let replicas = view.members.filter {
            $0.name != leader && $0.role == .replica && $0.state == .running && $0.replicationState == "streaming"
        }
        return replicas.count == (expected ?? nodes.count) - 1
    }

    /// Waits for one primary and N−1 streaming replicas; returns the primary's name.
    @discardableResult
    public func waitHealthy(timeout: Duration = .seconds(90), nodes expected: Int? = nil) async throws -> String {
        let view = try await waitFor(
            "a primary and \((expected ?? nodes.count) - 1) streaming replicas", timeout: timeout
        ) {
            self.isHealthy($0, nodes: expected)
        }
        guard let leader = primary(in: view) else { throw ClusterFailure(description: "no primary") }
        return leader
    }

    /// The current primary (leader key holder running as primary).
    public func leader() async throws -> String? { primary(in: try await view()) }

    /// Polls the cluster view every 150 ms until `condition` holds; throws with a report on timeout.
    @discardableResult
    public func waitFor(
        _ what: String, timeout: Duration, _ condition: @escaping (ClusterView) -> Bool
    ) async throws -> ClusterView {
        let deadline = ContinuousClock.now + timeout
        var lastError: (any Error)?
        while ContinuousClock.now < deadline {
            do {
                let view = try await view()
                if condition(view) { return view }
            } catch {
                lastError = error
            }
            try await Task.sleep(for: .milliseconds(150))
        }
        let suffix = lastError.map { " (last etcd error: \($0))" } ?? ""
        throw ClusterFailure(description: "timed out after \(timeout) waiting for \(what)\(suffix)\n\(await report())")
    }

    /// The cluster as etcd shows it, and the tail of each agent log.
    public func report(logLines: Int = 25) async -> String {
        var text = "---- cluster at \(elapsed()):\n"
        if let view = try? await view() {
            text += describe(view)
        } else {
            text += "  (etcd unreadable)\n"
        }
        for node in nodes {
            text += "---- \(node.name) agent log (last \(logLines) lines):\n"
            text += tail(node.logPath, lines: logLines)
        }
        return text
    }

    public func describe(_ view: ClusterView) -> String {
        var text = "  leader: \(view.leader?.member ?? "none")"
        text += "  optime: \(view.status.map { String($0.optime.rawValue) } ?? "-")"
        if let failover = view.failover?.value {
            text += "  failover: \(failover.leader ?? "-")→\(failover.member ?? "-")"
        }
        if let sync = view.sync?.value { text += "  sync: \(sync.leader ?? "-")/\(sync.syncStandbys)" }
        text += "  pause: \(view.dynamicConfig.pause)\n"
        for member in view.members.sorted(by: { $0.name < $1.name }) {
            text += "  \(member.name): role=\(member.role) state=\(member.state)"
            text += " repl=\(member.replicationState ?? "-") tl=\(member.timeline.map(String.init) ?? "-")"
            text += " xlog=\(member.xlogLocation.map { String($0.rawValue) } ?? "-")\n"
        }
        return text
    }

    public func tail(_ path: String, lines: Int) -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return "  (no log)\n" }
        let all = text.split(separator: "\n", omittingEmptySubsequences: false)
        return all.suffix(lines).map { "  " + $0 }.joined(separator: "\n") + "\n"
    }

    public func log(_ name: String) -> String {
        guard let node = try? node(name) else { return "" }
        return (try? String(contentsOfFile: node.logPath, encoding: .utf8)) ?? ""
    }

    // MARK: SQL

    public func connect(_ name: String, timeout: Duration = .seconds(2), statementTimeout: Duration = .seconds(3))
        async throws -> PostgresConnection
    {
        let node = try node(name)
        return try await PostgresConnection.connect(
            ConnectionParameters(
                host: "127.0.0.1", port: node.pgPort, user: "postgres", password: Self.superuserPassword,
                applicationName: "baton-it", connectTimeout: timeout, statementTimeout: statementTimeout))
    }

    /// Runs one statement on a fresh connection to `name`.
    @discardableResult
    public func execute(_ name: String, _ sql: String) async throws -> QueryResult {
        let connection = try await connect(name)
        defer { Task { await connection.close() } }
        return try await connection.query(sql)
    }

    public func createTable(on name: String) async throws {
        try await execute(
            name, "CREATE TABLE IF NOT EXISTS baton_it (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")
    }

    /// Inserts ids on `name`.
    public func insert(_ ids: [Int], on name: String) async throws {
        guard !ids.isEmpty else { return }
        try await execute(name, "INSERT INTO baton_it (id) VALUES " + ids.map { "(\($0))" }.joined(separator: ","))
    }

    public func ids(on name: String) async throws -> Set<Int> {
        let result = try await execute(name, "SELECT id FROM baton_it")
        return Set(try result.rows.compactMap { try $0.int("id") })
    }

    /// Waits until `name` returns every id of `expected` (a replica catching up).
    public func waitForIDs(_ expected: Set<Int>, on name: String, timeout: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + timeout
        var last: Set<Int> = []
        var lastError: (any Error)?
        while ContinuousClock.now < deadline {
            do {
                last = try await ids(on: name)
                if expected.isSubset(of: last) { return }
            } catch {
                lastError = error
            }
            try await Task.sleep(for: .milliseconds(150))
        }
        let missing = expected.subtracting(last).sorted().prefix(20)
        throw ClusterFailure(
            description:
                "\(name) lacks \(expected.subtracting(last).count) ids (first: \(Array(missing))); last error: \(lastError.map { "\($0)" } ?? "none")\n\(await report())"
        )
    }

    // MARK: Processes

    /// Whether `pid` (a child of ours, or any process) is alive; reaps it if it is our exited child.
    public static func isAlive(_ pid: pid_t) -> Bool {
        var status: Int32 = 0
        let reaped = waitpid(pid, &status, WNOHANG)
        if reaped == pid { return false }
        if kill(pid, 0) != 0 { return false }
        return !isZombie(pid)
    }

    public static func isZombie(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return true }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    /// Guards against PID reuse: only a live process whose command is postgres counts.
    public static func isPostgres(_ pid: pid_t) -> Bool {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !isZombie(pid) else {
            return false
        }
        let command = String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)
        return command.hasSuffix("postgres") || command.hasSuffix("postmaster")
    }

    /// Polls (every 50 ms) until every pid has exited or `timeout` passes.
    public static func waitForExit(_ pids: [pid_t], timeout: Duration) {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, pids.contains(where: { isAlive($0) }) {
            usleep(50_000)
        }
    }

    /// posix_spawn with stdin from /dev/null and stdout+stderr appended to `output` (or stderr to
    /// `errors`).
    public static func spawn(
        _ argv: [String], environment: [String: String], output: String, errors: String? = nil
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        if let errors {
            posix_spawn_file_actions_addopen(&actions, 2, errors, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        var cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for pointer in cArguments { free(pointer) } }
        var cEnvironment: [UnsafeMutablePointer<CChar>?] =
            environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in cEnvironment { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, &cArguments, &cEnvironment)
        guard spawned == 0 else {
            throw ClusterFailure(description: "posix_spawn \(argv[0]) failed: \(spawned)")
        }
        return pid
    }

    /// Spawns `argv` (stdin closed, output as `spawn` writes it) and waits for it; killed with
    /// SIGKILL and reported as a failure past `timeout`. The exit status, or 128 + the signal.
    public static func runToCompletion(
        _ argv: [String], environment: [String: String], output: String, errors: String? = nil,
        timeout: Duration
    ) throws -> Int32 {
        let pid = try spawn(argv, environment: environment, output: output, errors: errors)
        let deadline = ContinuousClock.now + timeout
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) != pid {
            if ContinuousClock.now > deadline {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                throw ClusterFailure(description: "\(argv.joined(separator: " ")) did not finish within \(timeout)")
            }
            usleep(50_000)
        }
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// Runs a command to completion (output through a file), throwing on a non-zero exit.
    @discardableResult
    public static func run(_ argv: [String]) throws -> String {
        let outPath = NSTemporaryDirectory() + "baton-it-\(UUID().uuidString).out"
        let errPath = outPath + ".err"
        defer {
            try? FileManager.default.removeItem(atPath: outPath)
            try? FileManager.default.removeItem(atPath: errPath)
        }
        let pid = try spawn(argv, environment: ProcessInfo.processInfo.environment, output: outPath, errors: errPath)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        let output = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let errors = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        guard status & 0x7F == 0, (status >> 8) & 0xFF == 0 else {
            throw ClusterFailure(
                description: "\(argv.joined(separator: " ")) failed (status \(status)): \(output)\n\(errors)")
        }
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

public func appendToFile(_ path: String, _ text: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o600)
    guard fd >= 0 else { return }
    defer { close(fd) }
    _ = text.withCString { write(fd, $0, strlen($0)) }
}

/// Seconds as a short decimal, for printed measurements.
public func seconds(_ duration: Duration) -> String {
    String(
        format: "%.2fs", Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
}
