import BatonCore
import BatonEtcd
import BatonTesting
import Foundation
import Testing

/// The ClusterStore contract (BatonTesting) against `EtcdClusterStore` on a real etcd.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct EtcdClusterStoreContractTests {
    @Test(arguments: ClusterStoreContract.names)
    func contract(_ name: String) async throws {
        try await LocalEtcd.with(members: 1) { etcd in
            let scope = "contract-\(UUID().uuidString.prefix(8))"
            let environment = ClusterStoreContract.Environment(
                makeStores: { count in
                    (0..<count).map { index in
                        EtcdClusterStore(
                            client: etcd.client(label: "store-\(index)"), scope: scope, logger: testLogger("contract"))
                    }
                },
                advance: { duration in try await Task.sleep(for: duration) },
                minimumTTL: .seconds(2), expiryGrace: .milliseconds(1500))
            try await ClusterStoreContract.run(name, in: environment)
        }
    }

    @Test func watchFromACompactedRevisionResyncsThenContinues() async throws {
        try await LocalEtcd.with(members: 1) { etcd in
            let client = etcd.client()
            let store = EtcdClusterStore(client: client, scope: "compact", logger: testLogger("compact"))
            let start = try await store.loadCluster().revision
            #expect(try await store.claimInitialize(systemID: "1"))
            let head = try await client.put("/service/compact/status", #"{"optime":1}"#).header.revision
            try await client.compact(revision: head, physical: true)
            var iterator = store.watch(after: start).makeAsyncIterator()
            let first = await iterator.next()
            guard case .resync = first else {
                Issue.record("expected a resync first, got \(String(describing: first))")
                return
            }
            try await client.put("/service/compact/failsafe", "{}")
            var keys: [ClusterKey] = []
            while keys.last != .failsafe, let event = await iterator.next() {
                if let key = event.key { keys.append(key) }
            }
            #expect(keys.last == .failsafe, "events after the resync: \(keys)")
        }
    }

    @Test func undecodableKeysAreReportedNotFatal() async throws {
        try await LocalEtcd.with(members: 1) { etcd in
            let client = etcd.client()
            let store = EtcdClusterStore(client: client, scope: "bad", logger: testLogger("bad"))
            try await client.put("/service/bad/config", "{not json")
            try await client.put("/service/bad/members/x", "[1]")
            try await client.put("/service/bad/history", "[[1, 2, \"ok\"]]")
            try await client.put("/service/bad/optime/leader", "123")
            let view = try await store.loadCluster()
            #expect(view.config == nil && view.members.isEmpty)
            #expect(view.history.count == 1)
            #expect(view.problems.count == 2, "\(view.problems)")
            #expect(view.problems.contains { $0.hasPrefix("/service/bad/config") })
            // The unreadable config key's revision and problem, for the loop and PATCH /config.
            #expect(view.unreadableConfigRevision != nil)
            #expect(view.unreadableConfigProblem?.hasPrefix("/service/bad/config") == true)
        }
    }

    @Test func patroniWrittenKeysAreRead() async throws {
        try await LocalEtcd.with(members: 1) { etcd in
            let client = etcd.client()
            let store = EtcdClusterStore(client: client, namespace: "service", scope: "batman", logger: testLogger("p"))
            let lease = try await client.grantLease(ttl: 30)
            try await client.put("/service/batman/leader", "postgresql0", lease: lease.id)
            try await client.put("/service/batman/initialize", "7311946025236541458")
            try await client.put(
                "/service/batman/members/postgresql0",
                #"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"primary","version":"4.0.4","xlog_location":50331968,"timeline":1}"#,
                lease: lease.id)
            try await client.put(
                "/service/batman/config",
                #"{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576,"postgresql":{"use_pg_rewind":true}}"#
            )
            try await client.put(
                "/service/batman/status",
                #"{"optime":50331968,"slots":{"postgresql1":50331968},"retain_slots":["postgresql1"]}"#)
            try await client.put(
                "/service/batman/history",
                #"[[1,50331744,"no recovery target specified","2024-11-22T10:00:00.000+00:00","postgresql1"]]"#)
            try await client.put("/service/batman/sync", #"{"leader":"postgresql0","sync_standby":null}"#)
            let view = try await store.loadCluster()
            #expect(view.problems.isEmpty, "\(view.problems)")
            #expect(view.leader?.member == "postgresql0" && view.leader?.session == SessionID(rawValue: lease.id))
            #expect(view.initialize == "7311946025236541458")
            #expect(view.member(named: "postgresql0")?.role == .primary)
            #expect(view.member(named: "postgresql0")?.xlogLocation == LSN(50_331_968))
            #expect(view.dynamicConfig.ttl == .seconds(30))
            #expect(view.status?.optime == LSN(50_331_968))
            #expect(view.history.first?.newLeader == "postgresql1")
            #expect(view.sync?.value.leader == "postgresql0" && view.sync?.value.syncStandbys == [])
        }
    }
}
