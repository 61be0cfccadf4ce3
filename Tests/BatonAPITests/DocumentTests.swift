import BatonAPI
import BatonCore
import BatonHA
import Hummingbird
import HummingbirdTesting
import Testing

@Suite struct DocumentTests {
    func get(_ path: String, _ status: HAStatus) async throws -> TestResponse {
        let app = try Fixture.application(FakeSource(status))
        return try await app.test(.router) { client in
            try await client.execute(uri: path, method: .get) { $0 }
        }
    }

    @Test func patroniOnPrimary() async throws {
        let response = try await get("/patroni", Fixture.primary())
        #expect(response.status == .ok)
        let json = response.json
        #expect(json["state"] == .string("running"))
        #expect(json["role"] == .string("primary"))
        #expect(json["server_version"] == .number(150_004))
        #expect(json["xlog"] == .object(["location": .number(50_000_000)]))
        #expect(json["timeline"] == .number(3))
        #expect(json["database_system_identifier"] == .string("7000000000000000001"))
        #expect(json["dcs_last_seen"] == .number(FakeSource.wallNow - 2))
        #expect(
            json["patroni"]
                == .object(["version": .string(BatonCore.version), "scope": .string("demo"), "name": .string("node1")]))
        let rows = json["replication"]
        #expect(
            rows
                == .array([
                    .object([
                        "application_name": .string("node2"), "client_addr": .string("10.0.0.2"),
                        "state": .string("streaming"), "sync_state": .string("async"),
                    ])
                ]))
        #expect(json["cluster_unlocked"] == nil)
        #expect(json["pause"] == nil)
        #expect(json["config_problems"] == nil)
    }

    /// An invalid config key is not in force; `GET /cluster` says why, so that dashboards and
    /// `curl` show it without reading the agent's log.
    @Test func clusterReportsAnInvalidConfigKey() async throws {
        var status = Fixture.primary()
        status.cluster = Fixture.cluster(sync: [])
        status.configProblems = ["ttl: must be at most 31536000 seconds (one year), got 1e+300"]
        let json = try await get("/cluster", status).json
        #expect(
            json["config_problems"] == .array([.string("ttl: must be at most 31536000 seconds (one year), got 1e+300")])
        )
    }

    @Test func patroniOnReplica() async throws {
        var status = Fixture.replica()
        status.cluster = Fixture.cluster(leader: nil, pause: true)
        status.config = status.cluster?.dynamicConfig ?? DynamicConfig()
        let json = try await get("/patroni", status).json
        #expect(json["role"] == .string("replica"))
        #expect(
            json["xlog"]
                == .object([
                    "received_location": .number(49_999_000), "replayed_location": .number(49_999_000),
                    "replayed_timestamp": .null, "paused": .bool(false),
                ]))
        #expect(json["replication_state"] == .string("streaming"))
        #expect(json["cluster_unlocked"] == .bool(true))
        #expect(json["pause"] == .bool(true))
        #expect(json["tags"] == .object(["zone": .string("a")]))
    }

    @Test func cluster() async throws {
        var status = Fixture.primary()
        var view = Fixture.cluster(sync: ["node2"])
        view.failover = Versioned(
            FailoverRequest(leader: "node1", member: "node2", scheduledAt: "2027-01-01T00:00:00+00:00"), modRevision: 9)
        status.cluster = view
        status.config = view.dynamicConfig
        let json = try await get("/cluster", status).json
        #expect(json["scope"] == .string("demo"))
        guard case .array(let members)? = json["members"] else {
            Issue.record("no members: \(json)")
            return
        }
        #expect(members.count == 3)
        #expect(
            members.first
                == .object([
                    "name": .string("node1"), "role": .string("leader"), "state": .string("running"),
                    "api_url": .string("http://10.0.0.1:8008/patroni"), "host": .string("10.0.0.1"),
                    "port": .number(5432), "timeline": .number(3),
                ]))
        let node2 = members[1].objectValue ?? [:]
        #expect(node2["role"] == .string("sync_standby"))
        #expect(node2["lag"] == .number(1_000_000))
        #expect(node2["port"] == .number(5433))
        #expect(node2["tags"] == .object(["zone": .string("a")]))
        // As Patroni 4 shows replicas: how they replicate, and where each position is (before:
        // "running", and no receive/replay positions).
        #expect(node2["state"] == .string("streaming"))
        #expect(node2["lsn"] == .string(LSN(49_000_000).description))
        #expect(
            node2["receive_lsn"] == .string(LSN(49_500_000).description) && node2["receive_lag"] == .number(500_000))
        #expect(
            node2["replay_lsn"] == .string(LSN(49_000_000).description) && node2["replay_lag"] == .number(1_000_000))
        let node3 = members[2].objectValue ?? [:]
        #expect(node3["role"] == .string("replica"))
        #expect(node3["state"] == .string("running"))
        #expect(node3["lag"] == .string("unknown") && node3["lsn"] == .string("unknown"))
        #expect(node3["receive_lag"] == .string("unknown") && node3["replay_lsn"] == .string("unknown"))
        #expect(
            json["scheduled_switchover"]
                == .object([
                    "at": .string("2027-01-01T00:00:00+00:00"), "from": .string("node1"), "to": .string("node2"),
                ]))
        #expect(json["pause"] == nil)
    }

    @Test func history() async throws {
        let response = try await get("/history", Fixture.primary())
        #expect(response.text == #"[[2,40000000,"no recovery target specified","2026-01-01T00:00:00+00:00","node1"]]"#)
    }

    @Test func metrics() async throws {
        let response = try await get("/metrics", Fixture.primary())
        #expect(response.status == .ok)
        let text = response.text
        #expect(text.contains(#"baton_role{name="node1",role="primary",scope="demo"} 1"#))
        #expect(text.contains(#"baton_role{name="node1",role="replica",scope="demo"} 0"#))
        #expect(text.contains(#"baton_is_leader{name="node1",scope="demo"} 1"#))
        #expect(text.contains(#"baton_timeline{name="node1",scope="demo"} 3"#))
        #expect(text.contains(#"baton_xlog_location{name="node1",scope="demo"} 50000000"#))
        #expect(text.contains(#"baton_lease_seconds_remaining{name="node1",scope="demo"} 20"#))
        #expect(text.contains(#"baton_promotions_total{name="node1",scope="demo"} 1"#))
        #expect(text.contains(#"baton_postgres_running{name="node1",scope="demo"} 1"#))
        #expect(text.contains("# TYPE baton_promotions_total counter"))
        let replica = try await get("/metrics", Fixture.laggingReplica()).text
        #expect(replica.contains(#"baton_lag_bytes{name="node2",scope="demo"} 40000000"#))
        // Patroni 4's metric set beside Baton's, same names and labels, so that Patroni's
        // dashboards and alerts keep working (before: baton_* only).
        for name in [
            "patroni_version", "patroni_postgres_running", "patroni_postmaster_start_time", "patroni_primary",
            "patroni_xlog_location", "patroni_standby_leader", "patroni_replica", "patroni_sync_standby",
            "patroni_quorum_standby", "patroni_xlog_received_location", "patroni_xlog_replayed_location",
            "patroni_xlog_replayed_timestamp", "patroni_xlog_paused", "patroni_postgres_streaming",
            "patroni_postgres_in_archive_recovery", "patroni_postgres_server_version", "patroni_cluster_unlocked",
            "patroni_failsafe_mode_is_active", "patroni_postgres_timeline", "patroni_dcs_last_seen",
            "patroni_pending_restart", "patroni_is_paused", "patroni_postgres_state",
        ] {
            #expect(text.contains("# TYPE \(name) "), "\(name) is missing")
            #expect(text.contains("\(name){name=\"node1\",scope=\"demo\"} "), "\(name) has no sample")
        }
        #expect(text.contains(#"patroni_primary{name="node1",scope="demo"} 1"#))
        #expect(text.contains(#"patroni_xlog_location{name="node1",scope="demo"} 50000000"#))
        #expect(text.contains(#"patroni_postgres_timeline{name="node1",scope="demo"} 3"#))
        #expect(text.contains(#"patroni_postgres_state{name="node1",scope="demo"} 5"#))
        #expect(replica.contains(#"patroni_replica{name="node2",scope="demo"} 1"#))
        #expect(replica.contains(#"patroni_primary{name="node2",scope="demo"} 0"#))
    }

    @Test func unknownPathIsAJSON404() async throws {
        let response = try await get("/nope", Fixture.primary())
        #expect(response.status == .notFound)
        #expect(response.json["error"]?.stringValue?.contains("/nope") == true)
    }
}
