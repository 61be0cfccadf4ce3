import BatonCore
import BatonPostgres
import BatonTestCluster
import BatonTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `baton pooler` with a real PgBouncer (Debian's `pgbouncer`, run as the postgres OS user) in
/// front of a 3-node cluster: the read-write database reaches the primary and the read-only one a
/// replica; after a planned switchover and after a whole-node crash the read-write database
/// reaches the new primary through the same PgBouncer; the pooler is listed by `baton list` and
/// its registration goes with it.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct PoolerTests {
    /// `SELECT inet_server_port(), pg_is_in_recovery()` through PgBouncer's `database`.
    static func serverBehind(_ port: Int, database: String) async throws -> (port: Int, recovery: Bool) {
        var parameters = ConnectionParameters(
            host: "127.0.0.1", port: port, user: "postgres", database: database, connectTimeout: .seconds(3),
            statementTimeout: .seconds(3))
        parameters.sendsServerOptions = false
        let connection = try await PostgresConnection.connect(parameters)
        defer { Task { await connection.close() } }
        let row = try await connection.query("SELECT inet_server_port() AS port, pg_is_in_recovery() AS r").single()
        return (try row.int("port") ?? 0, try row.bool("r") ?? true)
    }

    /// Waits until PgBouncer's `database` reaches a server on `port` (as primary when `primary`).
    static func waitBehind(
        _ bouncerPort: Int, database: String, pgPort: Int, primary: Bool, timeout: Duration = .seconds(20)
    ) async throws -> Duration {
        let started = ContinuousClock.now
        var last = "no answer yet"
        while ContinuousClock.now - started < timeout {
            do {
                let behind = try await serverBehind(bouncerPort, database: database)
                if behind.port == pgPort, behind.recovery == !primary { return ContinuousClock.now - started }
                last = "port \(behind.port), in recovery \(behind.recovery)"
            } catch {
                last = "\(error)"
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ClusterFailure(
            description: "PgBouncer's \(database) did not reach \(pgPort) (primary: \(primary)) in \(timeout): \(last)")
    }

    @Test("PgBouncer follows the primary through a switchover and a node crash")
    func pgBouncerFollowsThePrimary() async throws {
        let cluster = try AgentCluster.start("pooler")
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy()
        try await cluster.createTable(on: leader)

        let bouncer = try TestBouncer.start()
        defer { bouncer.stop() }
        let bouncerPort = bouncer.port
        let dcs = TestBouncer.dcsArguments(cluster.endpoints)
        let poolerLog = bouncer.work.appendingPathComponent("pooler.log").path
        func startPooler(ttl: Int) throws -> pid_t {
            try bouncer.startPooler(
                name: "pool1", dcs: dcs, log: poolerLog,
                extra: ["--database", "app_ro=replica:postgres", "--ttl", "\(ttl)", "--listen", "none"])
        }
        var pooler = try startPooler(ttl: 4)
        var poolerRunning = true
        defer {
            if poolerRunning {
                kill(pooler, SIGKILL)
                var status: Int32 = 0
                _ = waitpid(pooler, &status, 0)
            }
        }
        func failing(_ error: any Error) -> ClusterFailure {
            let bouncerLog = cluster.tail(bouncer.dir + "/pgbouncer.log", lines: 15)
            let log = cluster.tail(poolerLog, lines: 25)
            return ClusterFailure(description: "\(error)\n---- pooler log:\n\(log)\n---- pgbouncer log:\n\(bouncerLog)")
        }

        do {
            let primaryPort = try cluster.node(leader).pgPort
            _ = try await Self.waitBehind(bouncerPort, database: "app", pgPort: primaryPort, primary: true)
            let replicaPorts = try cluster.nodes.filter { $0.name != leader }.map { try cluster.node($0.name).pgPort }
            let readOnly = try await Self.serverBehind(bouncerPort, database: "app_ro")
            #expect(replicaPorts.contains(readOnly.port) && readOnly.recovery, "\(readOnly)")

            // Registered: baton list shows the pooler and what it points at.
            let listed = cluster.root.appendingPathComponent("list.out").path
            _ = try await cluster.waitFor("pool1 registered", timeout: .seconds(10)) {
                $0.poolers.contains { $0.name == "pool1" && $0.state == "following" }
            }
            let status = try AgentCluster.runToCompletion(
                [AgentCluster.batonBinary, "list", "-c", "/nonexistent/agent.yml"] + dcs,
                environment: ProcessInfo.processInfo.environment, output: listed, timeout: .seconds(30))
            let table = (try? String(contentsOfFile: listed, encoding: .utf8)) ?? ""
            #expect(status == 0 && table.contains("Poolers:") && table.contains("pool1"), "\(table)")
            #expect(table.contains("127.0.0.1:\(primaryPort)"), "\(table)")

            // A planned switchover under a writer that inserts every 20 ms through PgBouncer on one
            // client connection: the pooler pauses app first, so no insert fails (they wait).
            let writer = BouncerWriter(port: bouncerPort)
            let writing = Task { await writer.run() }
            try await Task.sleep(for: .seconds(1))
            let candidate = try #require(cluster.nodes.map(\.name).first { $0 != leader })
            #expect(
                try await cluster.store.writeFailover(FailoverRequest(leader: leader, member: candidate), expected: nil)
            )
            _ = try await cluster.waitFor("\(candidate) to lead", timeout: .seconds(30)) {
                cluster.primary(in: $0) == candidate
            }
            let afterSwitchover = try await Self.waitBehind(
                bouncerPort, database: "app", pgPort: try cluster.node(candidate).pgPort, primary: true)
            try await Task.sleep(for: .seconds(1))
            writing.cancel()
            let written = await writing.value
            #expect(written.failures.isEmpty, "inserts failed through PgBouncer: \(written.failures.prefix(5))")
            #expect(written.acknowledged.count > 50, "\(written.acknowledged.count) inserts")
            let stored = try await cluster.ids(on: candidate)
            #expect(written.acknowledged.isSubset(of: stored), "acknowledged inserts lost")
            let poolerText = (try? String(contentsOfFile: poolerLog, encoding: .utf8)) ?? ""
            #expect(poolerText.contains("read-write databases paused"), "\(poolerText.suffix(2000))")
            // The leader stepped down with the pooler paused (it waits for it when it is not yet).
            let leaderLog = cluster.log(leader)
            #expect(
                leaderLog.contains("switchover_stepping_down") && !leaderLog.contains("switchover_without_poolers"),
                "\(leaderLog.suffix(2000))")

            // A whole-node crash of the new primary: the next one is reached the same way.
            try cluster.killNode(candidate)
            let next = try await cluster.waitFor("a new leader", timeout: .seconds(40)) {
                guard let primary = cluster.primary(in: $0) else { return false }
                return primary != candidate
            }
            let survivor = try #require(cluster.primary(in: next))
            let afterCrash = try await Self.waitBehind(
                bouncerPort, database: "app", pgPort: try cluster.node(survivor).pgPort, primary: true)
            let log = (try? String(contentsOfFile: poolerLog, encoding: .utf8)) ?? ""
            #expect(log.contains("primary changed"), "\(log.suffix(2000))")
            // The read-only database follows the replicas: the crashed node is gone from it, and
            // the one replica left (the old leader, streaming again) takes the reads.
            let remaining = try #require(cluster.nodes.map(\.name).first { $0 != survivor && $0 != candidate })
            _ = try await cluster.waitFor("\(remaining) streaming", timeout: .seconds(60)) {
                $0.member(named: remaining)?.replicationState == "streaming"
            }
            _ = try await Self.waitBehind(
                bouncerPort, database: "app_ro", pgPort: try cluster.node(remaining).pgPort, primary: false)
            AgentFailoverTests.measure(
                "pooler",
                [
                    "switchover_repoint": seconds(afterSwitchover),
                    "switchover_inserts": "\(written.acknowledged.count)",
                    "switchover_failed": "\(written.failures.count)",
                    "switchover_max_latency": seconds(written.maxLatency),
                    "crash_repoint_after_new_leader": seconds(afterCrash),
                ])

            // Killed and started again, the pooler rewrites and reloads what it had (a crash may
            // have come between a write and a RELOAD), keeps PgBouncer on the primary and
            // registers again.
            kill(pooler, SIGKILL)
            var exitStatus: Int32 = 0
            _ = waitpid(pooler, &exitStatus, 0)
            pooler = try startPooler(ttl: 30)
            let survivorAddress = "127.0.0.1:\(try cluster.node(survivor).pgPort)"
            _ = try await cluster.waitFor("pool1 registered again", timeout: .seconds(40)) {
                $0.poolers.contains { $0.name == "pool1" && $0.primary == survivorAddress }
            }
            _ = try await Self.waitBehind(
                bouncerPort, database: "app", pgPort: try cluster.node(survivor).pgPort, primary: true)

            // Stopped, the pooler takes its registration with it: at once, not when its 30 s
            // session would expire.
            kill(pooler, SIGTERM)
            AgentCluster.waitForExit([pooler], timeout: .seconds(10))
            _ = waitpid(pooler, &exitStatus, 0)
            poolerRunning = false
            _ = try await cluster.waitFor("pool1 gone", timeout: .seconds(5)) { $0.poolers.isEmpty }
        } catch {
            throw failing(error)
        }
    }
}

/// Inserts into baton_it every 20 ms through PgBouncer's `app` on one client connection (as an
/// application behind PgBouncer does), until cancelled: what was acknowledged, what failed, and
/// the longest insert.
struct BouncerWriter {
    let port: Int

    struct Result {
        var acknowledged: Set<Int> = []
        var failures: [String] = []
        var maxLatency: Duration = .zero
    }

    func run() async -> Result {
        var result = Result()
        var parameters = ConnectionParameters(
            host: "127.0.0.1", port: port, user: "postgres", database: "app", connectTimeout: .seconds(5),
            statementTimeout: .seconds(30))
        parameters.sendsServerOptions = false
        var connection: PostgresConnection?
        var id = 1_000_000
        while !Task.isCancelled {
            id += 1
            let started = ContinuousClock.now
            do {
                if connection == nil { connection = try await PostgresConnection.connect(parameters) }
                _ = try await connection?.query(
                    "INSERT INTO baton_it (id) VALUES ($1)", [String(id)], timeout: .seconds(30))
                result.acknowledged.insert(id)
            } catch {
                result.failures.append("\(id): \(error)")
                if let old = connection { await old.close() }
                connection = nil
            }
            result.maxLatency = max(result.maxLatency, ContinuousClock.now - started)
            try? await Task.sleep(for: .milliseconds(20))
        }
        if let connection { await connection.close() }
        return result
    }
}

/// A real PgBouncer (Debian's `pgbouncer`) run as the postgres OS user on a free port, its
/// `[databases]` section in an include file that `baton pooler` writes; trust authentication for
/// clients, the cluster's superuser password for the servers. Stopped by PID.
final class TestBouncer {
    static let binary = "/usr/sbin/pgbouncer"
    let work: URL
    let dir: String
    let include: String
    let port: Int
    let pid: pid_t

    private init(work: URL, dir: String, include: String, port: Int, pid: pid_t) {
        self.work = work
        self.dir = dir
        self.include = include
        self.port = port
        self.pid = pid
    }

    /// `poolMode`: `transaction` or `session`.
    static func start(poolMode: String = "transaction") throws -> TestBouncer {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw ClusterFailure(description: "pgbouncer is not installed (scripts/test installs it)")
        }
        let work = try TestEnvironment.makeTemporaryDirectory(prefix: "baton-it-pgbouncer")
        chmod(work.path, 0o755)
        let dir = work.appendingPathComponent("pgbouncer").path
        try AgentCluster.makePostgresDirectory(dir)
        let include = dir + "/baton.ini"
        let port = try TestEnvironment.freePort()
        try "[databases]\n".write(toFile: include, atomically: true, encoding: .utf8)
        try """
        [pgbouncer]
        listen_addr = 127.0.0.1
        listen_port = \(port)
        unix_socket_dir = \(dir)
        auth_type = trust
        auth_file = \(dir)/userlist.txt
        admin_users = postgres
        pool_mode = \(poolMode)
        ignore_startup_parameters = extra_float_digits
        logfile = \(dir)/pgbouncer.log
        server_connect_timeout = 3
        server_login_retry = 0.2
        %include \(include)

        """.write(toFile: dir + "/pgbouncer.ini", atomically: true, encoding: .utf8)
        try "\"postgres\" \"\(AgentCluster.superuserPassword)\"\n".write(
            toFile: dir + "/userlist.txt", atomically: true, encoding: .utf8)
        for file in ["baton.ini", "pgbouncer.ini", "userlist.txt"] {
            chmod(dir + "/" + file, 0o644)
        }
        let pid = try AgentCluster.spawn(
            [
                "/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", binary,
                dir + "/pgbouncer.ini",
            ], environment: ["PATH": "/usr/bin:/bin"], output: work.appendingPathComponent("pgbouncer.out").path)
        return TestBouncer(work: work, dir: dir, include: include, port: port, pid: pid)
    }

    func stop() {
        kill(pid, SIGTERM)
        AgentCluster.waitForExit([pid], timeout: .seconds(5))
        kill(pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)
    }

    /// `--dcs-url etcd3://… --scope …`: etcd and scope on the command line, as an operator on a
    /// pooler host gives them.
    static func dcsArguments(_ endpoints: [String]) -> [String] {
        let hosts = endpoints.map { $0.replacingOccurrences(of: "http://", with: "") }
        return ["--dcs-url", "etcd3://" + hosts.joined(separator: ","), "--scope", AgentCluster.scope]
    }

    /// `baton pooler` for this PgBouncer, managing `app=primary:postgres` and whatever `extra`
    /// adds; its output appended to `log`.
    func startPooler(name: String, dcs: [String], log: String, extra: [String] = []) throws -> pid_t {
        try AgentCluster.spawn(
            [
                AgentCluster.batonBinary, "pooler", "-c", "/nonexistent/agent.yml", "--name", name,
                "--include-file", include, "--admin-port", "\(port)", "--admin-user", "postgres",
                "--database", "app=primary:postgres",
            ] + extra + dcs, environment: ProcessInfo.processInfo.environment, output: log)
    }
}
