import BatonCore
import BatonEtcd
import BatonTestCluster
import BatonTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Patroni 4.1.5 itself as the oracle for what tools read: a real two-node Patroni cluster
/// (from the venv PatronictlTests installs, running as the postgres user on the same etcd, its
/// own scope) beside a two-node Baton cluster. The member keys, the status key, `GET /patroni`,
/// `GET /cluster` and `/metrics` are captured from both and compared field by field: every field
/// Patroni writes or answers, Baton writes or answers too, with a value of the same JSON type.
/// Fields Baton adds are allowed (tools ignore them).
@Suite(.serialized, .timeLimit(.minutes(5)))
struct PatroniGoldenTests {
    /// One Patroni node: its process (by PID), ports and files.
    struct PatroniNode {
        let name: String
        let apiPort: Int
        let pgPort: Int
        let directory: String
        let pid: pid_t
        var dataDirectory: String { directory + "/data" }
        var api: String { "http://127.0.0.1:\(apiPort)" }
    }

    static func startPatroni(_ name: String, cluster: AgentCluster, scope: String, synchronousMode: String = "true")
        throws -> PatroniNode
    {
        let patroni = URL(fileURLWithPath: try PatronictlTests.patronictl()).deletingLastPathComponent()
            .appendingPathComponent("patroni").path
        let directory = cluster.root.appendingPathComponent("patroni-\(name)").path
        try AgentCluster.makePostgresDirectory(directory)
        let apiPort = try TestEnvironment.freePort()
        let pgPort = try TestEnvironment.freePort()
        let hosts = cluster.endpoints.map { $0.replacingOccurrences(of: "http://", with: "") }
        let config = """
            scope: \(scope)
            name: \(name)
            restapi:
              listen: 127.0.0.1:\(apiPort)
              connect_address: 127.0.0.1:\(apiPort)
            etcd3:
              hosts: \(hosts.joined(separator: ","))
            bootstrap:
              dcs:
                ttl: 20
                loop_wait: 1
                retry_timeout: 5
                maximum_lag_on_failover: 1048576
                synchronous_mode: \(synchronousMode)
                failsafe_mode: true
                postgresql:
                  use_pg_rewind: true
                  pg_hba:
                  - local all all trust
                  - host all all 127.0.0.1/32 md5
                  - host replication replicator 127.0.0.1/32 md5
                  parameters: {max_connections: 30}
              initdb:
              - encoding: UTF8
              - data-checksums
            postgresql:
              listen: 127.0.0.1:\(pgPort)
              connect_address: 127.0.0.1:\(pgPort)
              data_dir: \(directory)/data
              bin_dir: \(AgentCluster.binDirectory)
              pgpass: \(directory)/pgpass
              authentication:
                replication: {username: replicator, password: \(AgentCluster.replicationPassword)}
                superuser: {username: postgres, password: \(AgentCluster.superuserPassword)}
              parameters: {unix_socket_directories: '\(directory)', shared_buffers: 16MB, fsync: 'off'}

            """
        let configPath = directory + ".yml"
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        chmod(configPath, 0o644)
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PATRONI") }
        environment["HOME"] = directory
        let pid = try AgentCluster.spawn(
            [
                "/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", patroni,
                configPath,
            ], environment: environment, output: directory + ".log")
        return PatroniNode(name: name, apiPort: apiPort, pgPort: pgPort, directory: directory, pid: pid)
    }

    /// SIGTERM to Patroni (it stops its postgres), then to the postmaster still running, by the
    /// PIDs they wrote; SIGKILL after 20 s.
    static func stop(_ node: PatroniNode) {
        kill(node.pid, SIGTERM)
        let postmaster = (try? String(contentsOfFile: node.dataDirectory + "/postmaster.pid", encoding: .utf8))
            .flatMap { $0.split(separator: "\n").first.flatMap { pid_t($0) } }
        for _ in 0..<100 {
            var status: Int32 = 0
            if waitpid(node.pid, &status, WNOHANG) == node.pid { break }
            usleep(200_000)
        }
        kill(node.pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(node.pid, &status, 0)
        if let postmaster, kill(postmaster, 0) == 0 {
            kill(postmaster, SIGINT)
            for _ in 0..<50 where kill(postmaster, 0) == 0 { usleep(200_000) }
            if kill(postmaster, 0) == 0 { kill(postmaster, SIGKILL) }
        }
    }

    /// `curl -s URL`: the body, or nil.
    static func get(_ url: String, cluster: AgentCluster) -> String? {
        let output = cluster.root.appendingPathComponent("golden-\(UUID().uuidString).out").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        guard
            let status = try? AgentCluster.runToCompletion(
                ["/usr/bin/curl", "-s", "--max-time", "5", url], environment: ProcessInfo.processInfo.environment,
                output: output, timeout: .seconds(10)), status == 0
        else { return nil }
        return try? String(contentsOfFile: output, encoding: .utf8)
    }

    static func json(_ text: String?) -> JSONValue? {
        text.flatMap { try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8)) }
    }

    static func key(_ cluster: AgentCluster, _ path: String) async -> JSONValue? {
        guard let value = try? await cluster.etcdClient.get(path) else { return nil }
        return try? JSONDecoder().decode(JSONValue.self, from: Data(value.value))
    }

    static func kind(_ value: JSONValue) -> String {
        switch value {
        case .null: return "null"
        case .bool: return "boolean"
        case .number: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }

    /// Objects whose keys are member or slot names, not field names.
    static let mapsByMember: Set<String> = ["slots", "members"]

    /// Every field of `patroni` that `baton` lacks or holds with another JSON type, by path.
    static func differences(_ patroni: JSONValue, _ baton: JSONValue, path: String = "") -> [String] {
        switch (patroni, baton) {
        case (.object(let expected), .object(let actual)) where mapsByMember.contains(path):
            // Keyed by member or slot name (the clusters' members differ): as many entries, and
            // values of the same shape.
            guard actual.count >= expected.count else {
                return ["\(path): \(actual.count) entries (Patroni: \(expected.count))"]
            }
            guard let first = expected.values.first, let other = actual.values.first else { return [] }
            return differences(first, other, path: path + "[*]")
        case (.object(let expected), .object(let actual)):
            return expected.keys.sorted().flatMap { key -> [String] in
                let here = path.isEmpty ? key : "\(path).\(key)"
                guard let value = actual[key] else { return ["\(here): missing (Patroni: \(expected[key]!))"] }
                return differences(expected[key]!, value, path: here)
            }
        case (.array(let expected), .array(let actual)):
            // Shapes of the first elements: lists of members, of replication rows.
            guard let first = expected.first else { return [] }
            guard let other = actual.first else { return ["\(path): empty (Patroni: \(expected.count) items)"] }
            return differences(first, other, path: path + "[0]")
        case (.null, _), (_, .null):
            return []  // null where the other has a value (replayed_timestamp): the type is open
        default:
            return kind(patroni) == kind(baton) ? [] : ["\(path): \(kind(baton)) (Patroni: \(kind(patroni)))"]
        }
    }

    @Test(
        "member keys, status, /patroni, /cluster, /metrics and patronictl list as Patroni 4.1.5 writes them",
        arguments: ["true", "quorum"])
    func batonWritesWhatPatroniWrites(synchronousMode: String) async throws {
        // Both in synchronous mode (or quorum commit) with failsafe on: the sync and failsafe keys
        // are compared too.
        var options = ClusterOptions()
        options.nodes = 2
        options.synchronousMode = true
        options.quorumCommit = synchronousMode == "quorum"
        options.failsafeMode = true
        let cluster = try AgentCluster.start("golden", options)
        defer { cluster.stop() }
        let scope = "golden"
        let standbyRole = synchronousMode == "quorum" ? "quorum_standby" : "sync_standby"
        let p1 = try Self.startPatroni("p1", cluster: cluster, scope: scope, synchronousMode: synchronousMode)
        defer { Self.stop(p1) }
        let batonLeader = try await cluster.waitHealthy(nodes: 2)
        let batonReplica = try #require(cluster.nodes.map(\.name).first { $0 != batonLeader })
        // p2 joins once p1 leads, so that p1 is the one that bootstraps.
        var p1Leads = false
        for _ in 0..<150 where !p1Leads {
            p1Leads =
                Self.json(Self.get(p1.api + "/patroni", cluster: cluster))?.objectValue?["role"]?.stringValue
                == "primary"
            if !p1Leads { try await Task.sleep(for: .milliseconds(200)) }
        }
        try #require(p1Leads, "Patroni p1 did not become primary: \(cluster.tail(p1.directory + ".log", lines: 30))")
        let p2 = try Self.startPatroni("p2", cluster: cluster, scope: scope, synchronousMode: synchronousMode)
        defer { Self.stop(p2) }
        var streaming = false
        for _ in 0..<300 where !streaming {
            let member = await Self.key(cluster, "/service/\(scope)/members/p2")
            streaming = member?.objectValue?["replication_state"]?.stringValue == "streaming"
            if !streaming { try await Task.sleep(for: .milliseconds(200)) }
        }
        try #require(streaming, "Patroni p2 does not stream: \(cluster.tail(p2.directory + ".log", lines: 30))")
        // Both leaders have had a cycle with a streaming replica (status slots, xlog positions),
        // and both sync keys name their standby.
        try await Task.sleep(for: .seconds(4))
        for _ in 0..<100 {
            let patroniSync = await Self.key(cluster, "/service/\(scope)/sync")
            let batonSync = await Self.key(cluster, "/service/\(AgentCluster.scope)/sync")
            if patroniSync?.objectValue?["sync_standby"]?.stringValue != nil,
                batonSync?.objectValue?["sync_standby"]?.stringValue != nil
            {
                break
            }
            try await Task.sleep(for: .milliseconds(200))
        }

        var problems: [String] = []
        func compare(_ what: String, _ patroni: JSONValue?, _ baton: JSONValue?) {
            guard let patroni else { return problems.append("\(what): Patroni's could not be read") }
            guard let baton else { return problems.append("\(what): Baton's could not be read") }
            problems += Self.differences(patroni, baton).map { "\(what): \($0)" }
        }
        let batonPrefix = "/service/\(AgentCluster.scope)"
        compare(
            "member key (primary)", await Self.key(cluster, "/service/\(scope)/members/p1"),
            await Self.key(cluster, "\(batonPrefix)/members/\(batonLeader)"))
        compare(
            "member key (replica)", await Self.key(cluster, "/service/\(scope)/members/p2"),
            await Self.key(cluster, "\(batonPrefix)/members/\(batonReplica)"))
        for key in ["status", "sync"] {
            compare(
                "\(key) key", await Self.key(cluster, "/service/\(scope)/\(key)"),
                await Self.key(cluster, "\(batonPrefix)/\(key)"))
        }
        // failsafe: member name → api_url, so compared by shape (both clusters' names differ).
        let patroniFailsafe = await Self.key(cluster, "/service/\(scope)/failsafe")
        let batonFailsafe = await Self.key(cluster, "\(batonPrefix)/failsafe")
        compare(
            "failsafe key", patroniFailsafe.map { .object(["members": $0]) },
            batonFailsafe.map { .object(["members": $0]) })
        let batonLeaderAPI = "http://127.0.0.1:\(try cluster.node(batonLeader).apiPort)"
        let batonReplicaAPI = "http://127.0.0.1:\(try cluster.node(batonReplica).apiPort)"
        compare(
            "GET /patroni (primary)", Self.json(Self.get(p1.api + "/patroni", cluster: cluster)),
            Self.json(Self.get(batonLeaderAPI + "/patroni", cluster: cluster)))
        compare(
            "GET /patroni (replica)", Self.json(Self.get(p2.api + "/patroni", cluster: cluster)),
            Self.json(Self.get(batonReplicaAPI + "/patroni", cluster: cluster)))
        // /cluster: each role's entry separately (the order of members differs).
        let patroniCluster = Self.json(Self.get(p1.api + "/cluster", cluster: cluster))
        let batonCluster = Self.json(Self.get(batonLeaderAPI + "/cluster", cluster: cluster))
        func entry(_ document: JSONValue?, role: String) -> JSONValue? {
            guard case .array(let members)? = document?.objectValue?["members"] else { return nil }
            return members.first { $0.objectValue?["role"]?.stringValue == role }
        }
        compare(
            "GET /cluster (leader entry)", entry(patroniCluster, role: "leader"), entry(batonCluster, role: "leader"))
        compare(
            "GET /cluster (\(standbyRole) entry)", entry(patroniCluster, role: standbyRole),
            entry(batonCluster, role: standbyRole))
        // The sync key's values where both clusters must agree (a standby named, the quorum).
        let patroniSync = await Self.key(cluster, "/service/\(scope)/sync")?.objectValue
        let batonSync = await Self.key(cluster, "\(batonPrefix)/sync")?.objectValue
        #expect(
            patroniSync?["quorum"] == batonSync?["quorum"], "sync quorum: \(patroniSync ?? [:]) \(batonSync ?? [:])")
        compare(
            "GET /cluster", patroniCluster.map { .object(($0.objectValue ?? [:]).filter { $0.key != "members" }) },
            batonCluster.map { .object(($0.objectValue ?? [:]).filter { $0.key != "members" }) })
        // /metrics: every metric name Patroni exports.
        func names(_ text: String?) -> Set<String> {
            Set(
                (text ?? "").split(separator: "\n").filter { !$0.hasPrefix("#") }.compactMap {
                    $0.split(whereSeparator: { $0 == "{" || $0 == " " }).first.map(String.init)
                })
        }
        let patroniMetrics = names(Self.get(p1.api + "/metrics", cluster: cluster))
        let batonMetrics = names(Self.get(batonLeaderAPI + "/metrics", cluster: cluster))
        #expect(patroniMetrics.count > 15, "Patroni's /metrics: \(patroniMetrics)")
        for name in patroniMetrics.subtracting(batonMetrics).sorted() { problems.append("/metrics: \(name) missing") }
        // The values that say what a member is must be the same on members in the same role.
        func values(_ text: String?) -> [String: String] {
            var found: [String: String] = [:]
            for line in (text ?? "").split(separator: "\n") where !line.hasPrefix("#") {
                let parts = line.split(separator: " ")
                guard parts.count == 2, let name = parts[0].split(separator: "{").first else { continue }
                found[String(name)] = String(parts[1])
            }
            return found
        }
        let facts = [
            "patroni_primary", "patroni_replica", "patroni_standby_leader", "patroni_sync_standby",
            "patroni_quorum_standby", "patroni_postgres_running", "patroni_postgres_streaming",
            "patroni_postgres_in_archive_recovery", "patroni_postgres_timeline", "patroni_cluster_unlocked",
            "patroni_failsafe_mode_is_active", "patroni_is_paused", "patroni_pending_restart",
        ]
        for (role, patroniAPI, batonAPI) in [("leader", p1.api, batonLeaderAPI), ("replica", p2.api, batonReplicaAPI)] {
            let patroniValues = values(Self.get(patroniAPI + "/metrics", cluster: cluster))
            let batonValues = values(Self.get(batonAPI + "/metrics", cluster: cluster))
            for name in facts where patroniValues[name] != batonValues[name] {
                problems.append(
                    "/metrics (\(role)): \(name) is \(batonValues[name] ?? "missing"), Patroni's \(patroniValues[name] ?? "missing")"
                )
            }
        }
        // patronictl list: the same columns, and each role's row with the same fields and kinds.
        let patroniList = try PatronictlTests.patronictl(cluster, ["list", scope, "-f", "json"])
        let batonList = try PatronictlTests.patronictl(cluster, ["list", AgentCluster.scope, "-f", "json"])
        func row(_ output: PatronictlTests.Output, _ role: String) -> JSONValue? {
            guard case .array(let rows)? = PatronictlTests.json(output.text) else { return nil }
            return rows.first { $0.objectValue?["Role"]?.stringValue == role }
        }
        for role in ["Leader", standbyRole == "quorum_standby" ? "Quorum Standby" : "Sync Standby"] {
            compare("patronictl list (\(role))", row(patroniList, role), row(batonList, role))
        }
        func header(_ output: PatronictlTests.Output) -> String? {
            output.text.split(separator: "\n").first { $0.hasPrefix("| Member") }.map(String.init)
        }
        let patroniTable = try PatronictlTests.patronictl(cluster, ["list", scope])
        let batonTable = try PatronictlTests.patronictl(cluster, ["list", AgentCluster.scope])
        #expect(
            header(patroniTable) != nil && header(patroniTable) == header(batonTable),
            "patronictl list columns:\n\(patroniTable.text)\n\(batonTable.text)")
        #expect(
            problems.isEmpty, "\(problems.count) differences from Patroni 4.1.5:\n\(problems.joined(separator: "\n"))")
    }
}
