import BatonCore
import BatonTestCluster
import BatonTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// pgBackRest (Debian's `pgbackrest`) with a real repository on the local disk, as
/// docs/runbooks.md sets it up: the primary archives through `archive-push`, a full backup is
/// taken; a replica is made by `pgbackrest restore` (`create_replica_methods`), and a new cluster
/// is bootstrapped by a restore to a target time (`bootstrap.method`): the rows written before
/// the target are there, those after are not. A standby cluster follows the repository's archive
/// only (`standby_cluster` with `restore_command`, no `host`), its leader made by a restore. Last,
/// every member is lost: one comes back from the backup with no leader (`no_leader`), recovers the
/// archive and takes over.
@Suite(.serialized, .timeLimit(.minutes(6)))
struct PgBackRestTests {
    static let pgbackrest = "/usr/bin/pgbackrest"

    /// `pgbackrest ARGS` as the postgres OS user; its output when it exits 0.
    @discardableResult
    static func run(_ arguments: [String], _ what: String) throws -> String {
        let output = NSTemporaryDirectory() + "baton-it-\(UUID().uuidString).out"
        defer { try? FileManager.default.removeItem(atPath: output) }
        let status = try AgentCluster.runToCompletion(
            ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", pgbackrest]
                + arguments,
            environment: ["PATH": "/usr/bin:/bin"], output: output, timeout: .seconds(120))
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        guard status == 0 else { throw ClusterFailure(description: "pgbackrest \(what) failed (\(status)): \(text)") }
        return text
    }

    /// A pgBackRest configuration for the stanza `main` on the local repository: `servers` as
    /// pg1, pg2, … (with `backupStandby`, the replica first, files copied from it).
    static func writeStanza(
        _ path: String, work: URL, socket: String, servers: [AgentNode], backupStandby: Bool = false
    ) throws {
        var lines = ["[global]"]
        for name in ["repo1", "log", "lock", "spool"] {
            let key = name == "repo1" ? "repo1-path" : "\(name)-path"
            lines.append("\(key)=\(work.appendingPathComponent(name == "repo1" ? "repo" : name).path)")
        }
        lines += ["log-level-console=warn", "start-fast=y"] + (backupStandby ? ["backup-standby=y"] : [])
        lines += ["", "[main]"]
        for (index, server) in servers.enumerated() {
            let prefix = "pg\(index + 1)"
            lines += [
                "\(prefix)-path=\(server.dataDirectory)", "\(prefix)-port=\(server.pgPort)",
                "\(prefix)-socket-path=\(socket)", "\(prefix)-user=postgres",
            ]
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o644)
    }

    @Test("a replica restored by pgBackRest, and a cluster bootstrapped by a pgBackRest restore to a time")
    func pgBackRestReplicaAndPointInTimeBootstrap() async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.pgbackrest) else {
            throw ClusterFailure(description: "pgbackrest is not installed (scripts/test installs it)")
        }
        let work = try TestEnvironment.makeTemporaryDirectory(prefix: "baton-it-pgbackrest")
        chmod(work.path, 0o755)
        for name in ["repo", "log", "lock", "spool", "socket"] {
            try AgentCluster.makePostgresDirectory(work.appendingPathComponent(name).path)
        }
        let socket = work.appendingPathComponent("socket").path
        let conf = work.appendingPathComponent("pgbackrest.conf").path
        // The cluster's members are made first (their data directories and ports name the stanza).
        var options = ClusterOptions()
        options.nodes = 2
        options.startedNodes = 1
        options.localParameters = ["unix_socket_directories: '\(socket)'"]
        options.dcsParameters = [
            "archive_mode: 'on'",
            "archive_command: '\(Self.pgbackrest) --config=\(conf) --stanza=main archive-push %p'",
        ]
        let restoreCommand = "\(Self.pgbackrest) --config=\(conf) --stanza=main restore"
        let archiveGet = "\(Self.pgbackrest) --config=\(conf) --stanza=main --pg1-path=__DATA__ archive-get %f \"%p\""
        options.postgresqlExtra = [
            2: [
                "create_replica_methods: [pgbackrest, basebackup]",
                "pgbackrest: {command: '\(restoreCommand) --pg1-path=__DATA__', keep_data: true, no_params: true, no_leader: true}",
                "recovery_conf: {restore_command: '\(archiveGet)'}",
            ]
        ]
        // The member's own data directory is only known once the cluster's layout is: the
        // placeholder is replaced in its file before it starts.
        let cluster = try AgentCluster.start("pgbackrest", options)
        defer { cluster.stop() }
        let node1 = try cluster.node("node1")
        let node2 = try cluster.node("node2")
        let node2Config = try String(contentsOfFile: node2.configPath, encoding: .utf8)
        try node2Config.replacingOccurrences(of: "__DATA__", with: node2.dataDirectory).write(
            toFile: node2.configPath, atomically: true, encoding: .utf8)
        try Self.writeStanza(conf, work: work, socket: socket, servers: [node1])

        let leader = try await cluster.waitHealthy(nodes: 1)
        #expect(leader == "node1")
        try Self.run(["--config=\(conf)", "--stanza=main", "stanza-create"], "stanza-create")
        try Self.run(["--config=\(conf)", "--stanza=main", "check"], "check")
        try await cluster.createTable(on: leader)
        try await cluster.insert(Array(1...10), on: leader)
        try Self.run(["--config=\(conf)", "--stanza=main", "--type=full", "backup"], "backup")

        // A replica made by pgbackrest restore; it then streams from the leader.
        try cluster.startAgent("node2")
        _ = try await cluster.waitHealthy()
        try await cluster.waitForIDs(Set(1...10), on: "node2")
        let log2 = cluster.log("node2")
        #expect(log2.contains("replica created") && log2.contains("pg.method=pgbackrest"), "\(log2.suffix(3000))")

        // A backup taken from the replica (as docs/runbooks.md sets it up: both servers in the
        // stanza, the replica first, backup-standby): the files come from node2, the primary
        // only starts and stops the backup.
        let standbyConf = work.appendingPathComponent("pgbackrest-standby.conf").path
        try Self.writeStanza(standbyConf, work: work, socket: socket, servers: [node2, node1], backupStandby: true)
        try Self.run(["--config=\(standbyConf)", "--stanza=main", "--type=incr", "backup"], "backup from the replica")
        let info = try Self.run(["--config=\(conf)", "--stanza=main", "info"], "info")
        #expect(info.contains("full backup") && info.contains("incr backup"), "\(info)")

        // Rows before and after a target time; the WAL after it reaches the repository.
        _ = try await cluster.execute(leader, "SELECT pg_sleep(1.2)")
        let target = try #require(try await cluster.execute(leader, "SELECT now()::text AS t").rows.first?.string("t"))
        _ = try await cluster.execute(leader, "SELECT pg_sleep(1.2)")
        try await cluster.insert(Array(11...20), on: leader)
        _ = try await cluster.execute(leader, "SELECT pg_switch_wal()")
        _ = try await cluster.execute(leader, "CHECKPOINT")
        try Self.run(["--config=\(conf)", "--stanza=main", "check"], "check after the target")

        var restoredOptions = ClusterOptions()
        restoredOptions.nodes = 1
        restoredOptions.namePrefix = "pitr"
        restoredOptions.localParameters = ["unix_socket_directories: '\(socket)'"]
        restoredOptions.bootstrapExtra = [
            1: [
                "method: pgbackrest",
                "pgbackrest:",
                "  command: '\(restoreCommand) --pg1-path=__DATA__'",
                "  no_params: true",
                "  recovery_conf:",
                "    restore_command: '\(Self.pgbackrest) --config=\(conf) --stanza=main --pg1-path=__DATA__ archive-get %f \"%p\"'",
                "    recovery_target_time: '\(target)'",
            ]
        ]
        restoredOptions.startedNodes = 0
        let restored = try AgentCluster.start("pgbackrest-pitr", restoredOptions)
        defer { restored.stop() }
        let pitr = try restored.node("pitr1")
        let pitrConfig = try String(contentsOfFile: pitr.configPath, encoding: .utf8)
        try pitrConfig.replacingOccurrences(of: "__DATA__", with: pitr.dataDirectory).write(
            toFile: pitr.configPath, atomically: true, encoding: .utf8)
        try restored.startAgent("pitr1")
        let restoredLeader = try await restored.waitHealthy(timeout: .seconds(150), nodes: 1)
        let ids = try await restored.ids(on: restoredLeader)
        #expect(ids == Set(1...10), "rows after the pgBackRest restore to \(target): \(ids.sorted())")
        try await restored.insert([100], on: restoredLeader)

        // A standby cluster that follows the archive only: its leader is made by a restore (a
        // method with no_leader, named by standby_cluster.create_replica_methods) and replays what
        // the primary cluster archives.
        var drOptions = ClusterOptions()
        drOptions.nodes = 1
        drOptions.namePrefix = "dr"
        drOptions.startedNodes = 0
        drOptions.localParameters = ["unix_socket_directories: '\(socket)'"]
        drOptions.dcsExtra = [
            "standby_cluster: {restore_command: '\(archiveGet)', create_replica_methods: [pgbackrest]}"
        ]
        drOptions.postgresqlExtra = [
            1: ["pgbackrest: {command: '\(restoreCommand) --pg1-path=__DATA__', no_params: true, no_leader: true}"]
        ]
        let dr = try AgentCluster.start("pgbackrest-dr", drOptions)
        defer { dr.stop() }
        let dr1 = try dr.node("dr1")
        let dr1Config = try String(contentsOfFile: dr1.configPath, encoding: .utf8)
        try dr1Config.replacingOccurrences(of: "__DATA__", with: dr1.dataDirectory).write(
            toFile: dr1.configPath, atomically: true, encoding: .utf8)
        try dr.startAgent("dr1")
        _ = try await dr.waitFor("dr1 to run as the standby leader", timeout: .seconds(150)) {
            $0.leaderMember?.name == "dr1" && $0.leaderMember?.role == .standbyLeader
                && $0.leaderMember?.state == .running
        }
        try await cluster.insert([30, 31, 32], on: leader)
        _ = try await cluster.execute(leader, "SELECT pg_switch_wal()")
        try await dr.waitForIDs(Set(1...20).union([30, 31, 32]), on: "dr1", timeout: .seconds(60))
        await #expect(throws: (any Error).self) { try await dr.insert([33], on: "dr1") }
        let drLog = dr.log("dr1")
        #expect(drLog.contains("pg.method=pgbackrest"), "\(drLog.suffix(3000))")
        dr.stop()

        // Every member lost: node2's data directory is gone and node1 is down. With no leader,
        // node2 is restored from the backup (no_leader), replays the archive and takes over.
        _ = try await cluster.execute(leader, "SELECT pg_switch_wal()")
        try Self.run(["--config=\(conf)", "--stanza=main", "check"], "check before the loss")
        try cluster.killNode("node2")
        try cluster.killNode("node1")
        try FileManager.default.removeItem(atPath: node2.dataDirectory)
        _ = try await cluster.waitFor("the leader key to expire", timeout: .seconds(30)) { $0.leader == nil }
        try cluster.startAgent("node2")
        _ = try await cluster.waitFor("node2 to lead", timeout: .seconds(150)) {
            $0.leaderMember?.name == "node2" && $0.leaderMember?.role == .primary && $0.leaderMember?.state == .running
        }
        let recovered = try await cluster.ids(on: "node2")
        #expect(recovered.isSuperset(of: Set(1...20).union([30, 31, 32])), "\(recovered.sorted())")
        let lostLog = cluster.log("node2")
        #expect(lostLog.contains("restoring this member from a backup"), "\(lostLog.suffix(3000))")
        AgentFailoverTests.measure(
            "pgbackrest", ["target": target, "rows": "\(ids.count)", "recovered_rows": "\(recovered.count)"])
    }
}
