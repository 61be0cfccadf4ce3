import BatonCore
import BatonTestCluster
import BatonTesting
import Foundation
import Testing

/// `create_replica_methods` on real nodes: a member whose first method fails falls back to the
/// next, a custom command (the WAL-G way: it fills the data directory itself, here with its own
/// pg_basebackup from `--connstring`); another member clones with pg_basebackup and the
/// operator's `basebackup` options.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct ReplicaMethodTests {
    // Also: `bootstrap.post_bootstrap` on the member that makes the cluster.
    @Test("replicas made by a custom command after a failed method, and by pg_basebackup with options")
    func customCommandAndBasebackupOptions() async throws {
        // The script is written before the cluster exists: in a directory of its own.
        let scripts = try TestEnvironment.makeTemporaryDirectory(prefix: "baton-it-methods")
        chmod(scripts.path, 0o755)
        let script = scripts.appendingPathComponent("clone-with-marker").path
        try """
        #!/bin/sh
        # A replica method as Patroni calls one: --scope, --datadir, --role, --connstring.
        for argument in "$@"; do
          case "$argument" in
            --datadir=*) datadir="${argument#--datadir=}" ;;
            --connstring=*) connstring="${argument#--connstring=}" ;;
            --role=*) role="${argument#--role=}" ;;
          esac
        done
        [ "$role" = replica ] || exit 3
        \(AgentCluster.binDirectory)/pg_basebackup -D "$datadir" -X stream --no-password -d "$connstring" || exit 4
        echo "made by clone-with-marker for $role" > "$datadir/custom_marker"
        """.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)

        // post_bootstrap on the member that makes the cluster: it gets the superuser's URL (the
        // password in PGPASSFILE) and creates a table every member then has.
        let post = scripts.appendingPathComponent("post-bootstrap").path
        try """
        #!/bin/sh
        case "$1" in postgres://*) ;; *) exit 3 ;; esac
        \(AgentCluster.binDirectory)/psql "$1" -v ON_ERROR_STOP=1 -c 'CREATE TABLE made_by_post_bootstrap (id int)'
        """.write(toFile: post, atomically: true, encoding: .utf8)
        chmod(post, 0o755)
        var options = ClusterOptions()
        options.bootstrapExtra = [1: ["post_bootstrap: \(post)"]]
        options.postgresqlExtra = [
            2: [
                "create_replica_methods: [broken, custom]", "broken: {command: /bin/false}",
                "custom: {command: \(script)}",
            ],
            3: ["basebackup: [{max-rate: 64M}, verbose]"],
        ]
        // node1 bootstraps alone; the others join once it leads, and clone.
        options.startedNodes = 1
        let cluster = try AgentCluster.start("replica-methods", options)
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy(nodes: 1)
        try cluster.startAgent("node2")
        try cluster.startAgent("node3")
        _ = try await cluster.waitHealthy()
        try await cluster.createTable(on: leader)
        try await cluster.insert([1, 2, 3], on: leader)
        for node in ["node2", "node3"] { try await cluster.waitForIDs([1, 2, 3], on: node) }
        for node in ["node1", "node2", "node3"] {
            let made = try await cluster.execute(
                node, "SELECT to_regclass('made_by_post_bootstrap') IS NOT NULL AS made")
            #expect(try made.rows.first?.bool("made") == true, "\(node) lacks the post_bootstrap table")
        }

        // node2: the failed method first, then the custom command; what the first left was cleared.
        let marker = try cluster.node("node2").dataDirectory + "/custom_marker"
        let text = try String(contentsOfFile: marker, encoding: .utf8)
        #expect(text.contains("made by clone-with-marker for replica"))
        let log2 = cluster.log("node2")
        #expect(log2.contains("replica method failed") && log2.contains("pg.method=broken"), "\(log2.suffix(3000))")
        #expect(log2.contains("replica created") && log2.contains("pg.method=custom"), "\(log2.suffix(3000))")
        // node3: pg_basebackup with the operator's options.
        let log3 = cluster.log("node3")
        #expect(log3.contains("pg.options=--max-rate=64M --verbose"), "\(log3.suffix(3000))")
        #expect(
            !Foundation.FileManager.default.fileExists(
                atPath: try cluster.node("node3").dataDirectory + "/custom_marker"))
    }

    /// While a replica is being created, `baton list` shows how far the copy is (from the member
    /// key's `clone_progress`): percent, size, rate.
    @Test("baton list shows a clone's progress while it runs")
    func cloneProgressInBatonList() async throws {
        var options = ClusterOptions()
        options.nodes = 2
        options.startedNodes = 1
        options.postgresqlExtra = [2: ["basebackup: {max-rate: 4M}"]]
        let cluster = try AgentCluster.start("clone-progress", options)
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy(nodes: 1)
        _ = try await cluster.execute(
            leader, "CREATE TABLE ballast AS SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 30000) g")
        try cluster.startAgent("node2")
        var seen: String?
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline, seen == nil {
            let list = try OperatorCLITests.baton(cluster, ["list"], timeout: .seconds(20))
            if let line = list.stdout.split(separator: "\n").first(where: {
                $0.contains("node2") && $0.contains("creating replica (") && $0.contains("MB/s")
            }) {
                seen = String(line)
            }
            if seen == nil { try await Task.sleep(for: .milliseconds(300)) }
        }
        #expect(seen != nil, "baton list never showed node2's clone progress")
        #expect(seen?.contains("% of ") == true, "\(seen ?? "")")
        _ = try await cluster.waitHealthy(timeout: .seconds(120))
        // Done: the member key no longer carries it.
        #expect(try await cluster.view().member(named: "node2")?.cloneProgress == nil)
        AgentFailoverTests.measure("clone_progress", ["line": seen ?? "-"])
    }
}
