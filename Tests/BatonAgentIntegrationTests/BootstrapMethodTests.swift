import BatonCore
import BatonTestCluster
import BatonTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `bootstrap.method` on real nodes: point-in-time recovery. A primary archives its WAL
/// (`archive_command` into a directory) and a base backup is taken; rows are written before and
/// after a target time; a new cluster is bootstrapped by a restore command (it copies the base
/// backup into `--datadir`) and `recovery_conf` (`restore_command` from the archive,
/// `recovery_target_time`): its primary has the rows written before the target and none after.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct BootstrapMethodTests {
    /// Runs `argv` as the postgres OS user; throws on a non-zero exit.
    static func asPostgres(_ argv: [String], _ what: String, password: String) throws {
        let output = NSTemporaryDirectory() + "baton-it-\(UUID().uuidString).out"
        defer { try? FileManager.default.removeItem(atPath: output) }
        let status = try AgentCluster.runToCompletion(
            ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + argv,
            environment: ["PGPASSWORD": password, "PATH": "/usr/bin:/bin"], output: output,
            timeout: .seconds(120))
        guard status == 0 else {
            throw ClusterFailure(
                description:
                    "\(what) failed (\(status)): \((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")")
        }
    }

    @Test("a cluster bootstrapped by a restore to a target time has the rows before it and none after")
    func pointInTimeRecoveryBootstrap() async throws {
        let work = try TestEnvironment.makeTemporaryDirectory(prefix: "baton-it-pitr")
        chmod(work.path, 0o755)
        let archive = work.appendingPathComponent("archive").path
        let base = work.appendingPathComponent("base").path
        try AgentCluster.makePostgresDirectory(archive)
        try AgentCluster.makePostgresDirectory(base)

        var sourceOptions = ClusterOptions()
        sourceOptions.nodes = 1
        sourceOptions.namePrefix = "src"
        sourceOptions.dcsParameters = [
            "archive_mode: 'on'", "archive_command: 'test ! -f \(archive)/%f && cp %p \(archive)/%f'",
        ]
        let source = try AgentCluster.start("pitr-source", sourceOptions)
        defer { source.stop() }
        let leader = try await source.waitHealthy(nodes: 1)
        try Self.asPostgres(
            [
                AgentCluster.binDirectory + "/pg_basebackup", "-D", base + "/data", "-X", "none", "-h", "127.0.0.1",
                "-p", "\(try source.node(leader).pgPort)", "-U", "replicator", "--checkpoint=fast",
            ], "pg_basebackup", password: AgentCluster.replicationPassword)
        try await source.createTable(on: leader)
        try await source.insert(Array(1...10), on: leader)
        _ = try await source.execute(leader, "SELECT pg_sleep(1.2)")
        let target = try #require(
            try await source.execute(leader, "SELECT now()::text AS t").rows.first?.string("t"))
        _ = try await source.execute(leader, "SELECT pg_sleep(1.2)")
        try await source.insert(Array(11...20), on: leader)
        // Everything written is in the archive once the segment in use is switched out.
        let segment = try #require(
            try await source.execute(leader, "SELECT pg_walfile_name(pg_switch_wal()) AS f").rows.first?.string("f"))
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline, !FileManager.default.fileExists(atPath: archive + "/" + segment) {
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(FileManager.default.fileExists(atPath: archive + "/" + segment), "segment \(segment) not archived")

        // The restore command: the base backup into --datadir, as a backup tool would.
        let script = work.appendingPathComponent("restore-base").path
        try """
        #!/bin/sh
        for argument in "$@"; do
          case "$argument" in --datadir=*) datadir="${argument#--datadir=}" ;; esac
        done
        [ -n "$datadir" ] || exit 3
        cp -a \(base)/data/. "$datadir"/
        """.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        var options = ClusterOptions()
        options.nodes = 1
        options.namePrefix = "pitr"
        options.bootstrapExtra = [
            1: [
                "method: restore",
                "restore:",
                "  command: \(script)",
                "  recovery_conf:",
                "    restore_command: 'cp \(archive)/%f %p'",
                "    recovery_target_time: '\(target)'",
                "    recovery_target_action: promote",
            ]
        ]
        let restored = try AgentCluster.start("pitr-restored", options)
        defer { restored.stop() }
        let restoredLeader = try await restored.waitHealthy(timeout: .seconds(120), nodes: 1)
        let ids = try await restored.ids(on: restoredLeader)
        #expect(ids == Set(1...10), "rows on the restored primary: \(ids.sorted())")
        // A new timeline, writable, and the log says how it came about.
        try await restored.insert([100], on: restoredLeader)
        let log = restored.log(restoredLeader)
        #expect(log.contains("bootstrapped from a backup"), "\(log.suffix(2000))")
        AgentFailoverTests.measure("pitr_bootstrap", ["target": target, "rows": "\(ids.count)"])
    }
}
