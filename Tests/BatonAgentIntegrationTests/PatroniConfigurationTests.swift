import BatonCore
import BatonTestCluster
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `baton agent -c` on a configuration written the way Patroni's own example (`postgres0.yml`)
/// writes it: `bootstrap.dcs.postgresql.pg_hba` without a `local` line, `bootstrap.initdb` as a
/// list, `postgresql.pgpass`, passwords in the file, a rewind role, a relative
/// `unix_socket_directories`, the four example tags. Before, the file was refused at load
/// (`pg_hba`, `initdb`, `pgpass` were unknown keys). Differences from the example, each forced:
/// `etcd3:` for `etcd:` (Baton speaks etcd's v3 API only), the test's ports and directories, and
/// shorter timings.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct PatroniConfigurationTests {
    static let hba = ["host replication replicator 127.0.0.1/32 md5", "host all all 0.0.0.0/0 md5"]

    static func postgresYML(_ node: AgentNode, hosts: [String], root: String) -> String {
        """
        scope: \(AgentCluster.scope)
        #namespace: /service/
        name: \(node.name)

        restapi:
          listen: 127.0.0.1:\(node.apiPort)
          connect_address: 127.0.0.1:\(node.apiPort)

        etcd3:
          #Provide host to do the initial discovery of the cluster topology:
          host: \(hosts[0])

        bootstrap:
          dcs:
            ttl: 10
            loop_wait: 1
            retry_timeout: 2
            maximum_lag_on_failover: 1048576
            postgresql:
              use_pg_rewind: true
              pg_hba:
              - \(hba[0])
              - \(hba[1])
          initdb:  # Note: It needs to be a list (some options need values, others are switches)
          - encoding: UTF8
          - data-checksums

        postgresql:
          listen: 127.0.0.1:\(node.pgPort)
          connect_address: 127.0.0.1:\(node.pgPort)
          data_dir: \(node.dataDirectory)
          bin_dir: \(AgentCluster.binDirectory)
          pgpass: \(root)/pgpass\(node.index)
          authentication:
            replication:
              username: replicator
              password: \(AgentCluster.replicationPassword)
            superuser:
              username: postgres
              password: \(AgentCluster.superuserPassword)
            rewind:  # Has no effect on postgres 10 and lower
              username: rewind_user
              password: rewind_password
          parameters:
            unix_socket_directories: '..'  # parent directory of data_dir

        tags:
            noloadbalance: false
            clonefrom: false
            nosync: false
            nostream: false

        """
    }

    @Test("a postgres0.yml-style Patroni configuration starts a working cluster")
    func patronisExampleConfigurationRuns() async throws {
        var options = ClusterOptions()
        options.nodes = 2
        options.configurationText = { node, hosts in
            // The passfiles go beside the nodes' directories, in the cluster's root.
            Self.postgresYML(
                node, hosts: hosts, root: URL(fileURLWithPath: node.directory).deletingLastPathComponent().path)
        }
        let cluster = try AgentCluster.start("patroni-yml", options)
        defer { cluster.stop() }
        let leader: String
        do {
            leader = try await cluster.waitHealthy(nodes: 2)
        } catch {
            await cluster.fail("the cluster did not become healthy: \(error)")
            throw error
        }
        let replica = try #require(cluster.nodes.map(\.name).first { $0 != leader })
        try await cluster.createTable(on: leader)
        try await cluster.insert([1, 2], on: leader)
        try await cluster.waitForIDs([1, 2], on: replica)

        for node in cluster.nodes {
            // The cluster-wide pg_hba is the file PostgreSQL reads, on the clone too.
            let rules = try await cluster.execute(
                node.name,
                "SELECT type, database[1] AS db, user_name[1] AS who FROM pg_hba_file_rules ORDER BY line_number")
            let read = rules.rows.map { row in
                [(try? row.string("type")) ?? nil, (try? row.string("db")) ?? nil, (try? row.string("who")) ?? nil]
                    .map { $0 ?? "-" }.joined(separator: " ")
            }
            #expect(read == ["host replication replicator", "host all all"], "\(node.name): \(read)")
            let settings = try await cluster.execute(
                node.name,
                "SELECT current_setting('data_checksums') AS checksums, current_setting('server_encoding') AS encoding, "
                    + "current_setting('unix_socket_directories') AS sockets, "
                    + "(SELECT count(*) FROM pg_roles WHERE rolname = 'rewind_user')::text AS rewind")
            let row = try settings.single()
            #expect(try row.string("checksums") == "on", "\(node.name)")
            #expect(try row.string("encoding") == "UTF8", "\(node.name)")
            #expect(try row.string("sockets") == "..", "\(node.name)")
            #expect(try row.string("rewind") == "1", "\(node.name)")
            // The passfile where the file says, 0600; none at Baton's default place.
            let pgpass = cluster.root.appendingPathComponent("pgpass\(node.index)").path
            var info = stat()
            #expect(stat(pgpass, &info) == 0 && info.st_mode & 0o777 == 0o600, "\(pgpass)")
            #expect(!FileManager.default.fileExists(atPath: node.dataDirectory + ".pgpass"))
        }
    }
}
