import BatonCore
import BatonTestCluster
import BatonTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `postgresql.recovery_conf` on real nodes: a replica that was down while the primary recycled
/// the WAL it needs (no slot, `wal_keep_size` 0) catches up from the archive through
/// `restore_command`, then streams again.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct ArchiveCatchUpTests {
    @Test("a replica whose WAL the primary recycled catches up from the archive")
    func replicaCatchesUpFromTheArchive() async throws {
        let work = try TestEnvironment.makeTemporaryDirectory(prefix: "baton-it-archive")
        chmod(work.path, 0o755)
        let archive = work.appendingPathComponent("archive").path
        try AgentCluster.makePostgresDirectory(archive)
        var options = ClusterOptions()
        options.nodes = 2
        options.dcsParameters = [
            "archive_mode: 'on'", "archive_command: 'test ! -f \(archive)/%f && cp %p \(archive)/%f'",
            "wal_keep_size: 0",
        ]
        let lines = ["use_slots: false", "recovery_conf: {restore_command: 'cp \(archive)/%f %p'}"]
        options.postgresqlExtra = [1: lines, 2: lines]
        let cluster = try AgentCluster.start("archive-catch-up", options)
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy()
        let replica = try #require(cluster.nodes.map(\.name).first { $0 != leader })
        try await cluster.createTable(on: leader)
        try await cluster.insert([1], on: leader)
        try await cluster.waitForIDs([1], on: replica)

        // The replica goes down; the primary writes far more WAL than it keeps.
        try cluster.killNode(replica)
        let before = try #require(
            try await cluster.execute(leader, "SELECT pg_walfile_name(pg_current_wal_lsn()) AS f").rows.first?.string(
                "f"))
        try await cluster.insert(Array(2...100), on: leader)
        for round in 0..<6 {
            _ = try await cluster.execute(
                leader,
                "CREATE TABLE filler_\(round) AS SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 40000) g")
            _ = try await cluster.execute(leader, "CHECKPOINT")
        }
        _ = try await cluster.execute(leader, "SELECT pg_switch_wal()")
        _ = try await cluster.execute(leader, "CHECKPOINT")
        let oldest = try #require(
            try await cluster.execute(
                leader, "SELECT min(name) AS f FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'"
            ).rows.first?.string("f"))
        #expect(
            oldest > before, "the primary still has \(before) (oldest \(oldest)): nothing to catch up from the archive")

        // Back up: it cannot stream from where it stopped; restore_command brings it the rest.
        try cluster.startAgent(replica)
        try await cluster.waitForIDs(Set(1...100), on: replica, timeout: .seconds(90))
        let serverLog =
            (try? String(contentsOfFile: try cluster.node(replica).dataDirectory + ".log", encoding: .utf8)) ?? ""
        #expect(serverLog.contains("restored log file"), "\(serverLog.suffix(2000))")
        _ = try await cluster.waitFor("\(replica) streaming again", timeout: .seconds(60)) { view in
            view.member(named: replica)?.replicationState == "streaming"
        }
        AgentFailoverTests.measure("archive_catch_up", ["before": before, "oldest_on_primary": oldest])
    }
}
