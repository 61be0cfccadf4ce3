import BatonCore
import BatonEtcd
import BatonTesting
import Foundation
import Testing

/// The client against a real 3-member etcd 3.4 started by `etcd/local-etcd`.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct EtcdClientIntegrationTests {
    @Test func tenConcurrentLeaderRacesHaveExactlyOneWinnerEachRound() async throws {
        try await LocalEtcd.with(members: 3) { etcd in
            let stores = (0..<10).map { index in
                EtcdClusterStore(
                    client: etcd.client(endpoints: rotated(etcd.endpoints, by: index)), scope: "race",
                    logger: testLogger("race"))
            }
            for round in 0..<3 {
                var sessions: [SessionID] = []
                for store in stores { sessions.append(try await store.createSession(ttl: .seconds(10))) }
                let sessionList = sessions
                let winners = try await withThrowingTaskGroup(of: Int?.self) { group in
                    for index in stores.indices {
                        group.addTask {
                            try await stores[index].acquireLeader(member: "m\(index)", session: sessionList[index])
                                ? index : nil
                        }
                    }
                    return try await group.reduce(into: [Int]()) { if let index = $1 { $0.append(index) } }
                }
                #expect(winners.count == 1, "round \(round): winners \(winners)")
                let winner = try #require(winners.first)
                let view = try await stores[0].loadCluster()
                #expect(view.leader?.member == "m\(winner)")
                #expect(view.leader?.session == sessionList[winner])
                #expect(try await stores[winner].releaseLeader(member: "m\(winner)"))
                for (index, store) in stores.enumerated() { try await store.revokeSession(sessionList[index]) }
            }
        }
    }

    @Test func expiringLeaseDeletesItsKeysWhileKeepaliveKeepsThem() async throws {
        try await LocalEtcd.with(members: 3) { etcd in
            let client = etcd.client()
            let idle = try await client.grantLease(ttl: 2)
            let kept = try await client.grantLease(ttl: 2)
            #expect(idle.ttl >= 2 && kept.ttl >= 2)
            try await client.put("/t/idle", "x", lease: idle.id)
            try await client.put("/t/kept", "y", lease: kept.id)
            let started = ContinuousClock.now
            while ContinuousClock.now - started < .seconds(5) {
                let result = try await client.keepAlive(lease: kept.id)
                guard case .alive(let ttl) = result else {
                    Issue.record("keepalive of a live lease: \(result)")
                    return
                }
                #expect(ttl >= 2)
                try await Task.sleep(for: .milliseconds(500))
            }
            #expect(try await client.get("/t/idle") == nil, "key of the expired lease survived")
            #expect(try await client.get("/t/kept")?.valueString == "y", "key of the kept lease vanished")
            #expect(try await client.keepAlive(lease: idle.id) == .expired)
            #expect(try await client.leaseTimeToLive(idle.id).ttl == -1)
            let live = try await client.leaseTimeToLive(kept.id, keys: true)
            #expect(live.ttl > 0 && live.keys == [Array("/t/kept".utf8)])
            #expect(try await client.revokeLease(kept.id))
            #expect(try await client.get("/t/kept") == nil)
            #expect(!(try await client.revokeLease(kept.id)), "revoking twice reports the lease gone")
        }
    }

    @Test func watchSeesPutsAndDeletesInOrderAcrossAKilledMember() async throws {
        try await LocalEtcd.with(members: 3) { etcd in
            let watcher = etcd.client(label: "watcher")
            let writer = etcd.client(endpoints: Array(etcd.endpoints.dropFirst()), label: "writer")
            let start = try await writer.range(EtcdRangeRequest(key: "/w/")).header.revision
            var iterator = watcher.watch(EtcdWatchRequest(prefix: "/w/", startRevision: start + 1))
                .makeAsyncIterator()
            // Expected events, written in two halves around the crash.
            var expected: [(EtcdEvent.Kind, String, Int64)] = []
            func write(_ range: Range<Int>) async throws {
                for i in range {
                    let put = try await writer.put("/w/k\(i)", "v\(i)")
                    expected.append((.put, "/w/k\(i)", put.header.revision))
                    if i % 3 == 2 {
                        let delete = try await writer.delete("/w/k\(i - 1)")
                        expected.append((.delete, "/w/k\(i - 1)", delete.header.revision))
                    }
                }
            }
            var seen: [(EtcdEvent.Kind, String, Int64)] = []
            func read(until count: Int) async throws {
                while seen.count < count {
                    guard let response = try await iterator.next() else { throw TimedOut(description: "watch ended") }
                    #expect(response.compactRevision == 0)
                    for event in response.events {
                        seen.append((event.kind, event.kv.keyString, event.kv.modRevision))
                    }
                }
            }
            try await write(0..<12)
            try await read(until: expected.count)
            let connected = try #require(iterator.connectedEndpoint)
            let victim = try #require(etcd.member(endpoint: connected))
            try etcd.kill(member: victim)
            let survivors = etcd.endpoints.enumerated().filter { $0.offset != victim }.map(\.element)
            let writer2 = etcd.client(endpoints: survivors, label: "writer2")
            for i in 12..<24 {
                let put = try await writer2.put("/w/k\(i)", "v\(i)")
                expected.append((.put, "/w/k\(i)", put.header.revision))
                if i % 3 == 2 {
                    let delete = try await writer2.delete("/w/k\(i - 1)")
                    expected.append((.delete, "/w/k\(i - 1)", delete.header.revision))
                }
            }
            let total = expected.count
            try await read(until: total)
            #expect(seen.count == total, "events seen \(seen.count), written \(total)")
            for (index, (got, want)) in zip(seen, expected).enumerated() {
                #expect(
                    got.0 == want.0 && got.1 == want.1 && got.2 == want.2, "event \(index): got \(got), want \(want)")
            }
            #expect(iterator.connectedEndpoint != connected, "watch still on the killed member")
        }
    }

    @Test func authOnWorksAndWrongPasswordIsAClearAuthError() async throws {
        try await LocalEtcd.with(members: 1, auth: "s3cret-pw") { etcd in
            let client = etcd.client()
            try await client.put("/a/x", "1")
            #expect(try await client.get("/a/x")?.valueString == "1")

            let wrong = etcd.client(credentials: .init(user: "root", password: "wrong"))
            let error = await #expect(throws: StoreError.self) { try await wrong.get("/a/x") }
            #expect(error?.code == .auth)
            #expect(error?.message.contains("authentication failed") == true, "\(String(describing: error))")
            #expect(error?.description.contains("wrong") == false, "the password leaked into the error")

            let anonymous = EtcdClient(
                configuration: EtcdConfiguration(endpoints: etcd.endpoints), logger: testLogger("anonymous"))
            let anonymousError = await #expect(throws: StoreError.self) { try await anonymous.get("/a/x") }
            #expect(anonymousError?.code == .auth)

            // A watch authenticates too.
            let start = try await client.range(EtcdRangeRequest(key: "/a/x")).header.revision
            var iterator = client.watch(EtcdWatchRequest(prefix: "/a/", startRevision: start + 1)).makeAsyncIterator()
            try await client.put("/a/y", "2")
            let response = try await iterator.next()
            #expect(response?.events.first?.kv.keyString == "/a/y")
        }
    }

    @Test func rejectedTokenIsRenewedOnceAndTheCallRetried() async throws {
        try await LocalEtcd.with(members: 1, auth: "pw") { etcd in
            let client = etcd.client()
            try await client.authenticate()
            // etcd forgets simple tokens on restart: restart the member to invalidate ours.
            try etcd.kill(member: 0)
            try etcd.startMember(0)
            try await client.put("/r/x", "1")
            #expect(try await client.get("/r/x")?.valueString == "1")
        }
    }

    @Test func unreachableEndpointFailsAsUnavailableWithinTheDeadline() async throws {
        let port = try TestEnvironment.freePort()
        let client = EtcdClient(
            configuration: EtcdConfiguration(endpoints: ["127.0.0.1:\(port)"], requestTimeout: .seconds(2)),
            logger: testLogger("unreachable"))
        let started = ContinuousClock.now
        let error = await #expect(throws: StoreError.self) { try await client.get("/x") }
        let elapsed = ContinuousClock.now - started
        #expect(error?.code == .unavailable, "\(String(describing: error))")
        #expect(error?.endpoint == "http://127.0.0.1:\(port)")
        #expect(elapsed < .seconds(3), "took \(elapsed)")
    }

    @Test func failsOverToTheNextEndpoint() async throws {
        try await LocalEtcd.with(members: 3) { etcd in
            let dead = "http://127.0.0.1:\(try TestEnvironment.freePort())"
            let client = etcd.client(endpoints: [dead] + etcd.endpoints)
            try await client.put("/f/x", "1")
            #expect(client.currentEndpoint == etcd.endpoints[0])
            try etcd.kill(member: 0)
            let started = ContinuousClock.now
            #expect(try await client.get("/f/x")?.valueString == "1")
            #expect(ContinuousClock.now - started < .seconds(5))
            #expect(client.currentEndpoint != etcd.endpoints[0])
        }
    }

    @Test func discoversMembersAndChecksTheVersion() async throws {
        try await LocalEtcd.with(members: 3) { etcd in
            let client = etcd.client(endpoints: [etcd.endpoints[1]])
            let version = try await client.checkVersion()
            #expect(version.supportsV3Gateway)
            let found = try await client.discoverEndpoints()
            #expect(Set(found) == Set(etcd.endpoints))
            #expect(Set(client.endpoints) == Set(etcd.endpoints))
        }
    }

    @Test func cancellingTheWatchingTaskEndsTheStreamPromptly() async throws {
        try await LocalEtcd.with(members: 1) { etcd in
            let client = etcd.client()
            let task = Task {
                var count = 0
                for try await response in client.watch(EtcdWatchRequest(prefix: "/c/")) {
                    count += response.events.count
                }
                return count
            }
            try await Task.sleep(for: .milliseconds(500))
            let started = ContinuousClock.now
            task.cancel()
            _ = try await withTimeout(.seconds(3), "cancelled watch") { try await task.value }
            #expect(ContinuousClock.now - started < .seconds(2))
        }
    }

    @Test func txnSupportsEveryCompareTargetAndNestedTransactions() async throws {
        try await LocalEtcd.with(members: 1) { etcd in
            let client = etcd.client()
            let lease = try await client.grantLease(ttl: 30)
            let put = try await client.put(EtcdPutRequest(key: "/x/a", value: "1", lease: lease.id))
            let revision = put.header.revision
            let compares: [(EtcdCompare, Bool)] = [
                (EtcdCompare(key: "/x/a", .createRevision(revision)), true),
                (EtcdCompare(key: "/x/a", .modRevision(revision), .notEqual), false),
                (EtcdCompare(key: "/x/a", .version(1)), true),
                (EtcdCompare(key: "/x/a", .version(0), .greater), true),
                (EtcdCompare(key: "/x/a", .value(Array("2".utf8)), .less), true),
                (EtcdCompare(key: "/x/a", .lease(lease.id)), true),
                (EtcdCompare(key: "/x/missing", .value(Array("".utf8))), false),
            ]
            for (compare, expected) in compares {
                let response = try await client.txn(EtcdTxnRequest(compare: [compare], success: [], failure: []))
                #expect(response.succeeded == expected, "\(compare)")
            }
            let nested = try await client.txn(
                EtcdTxnRequest(
                    compare: [.absent("/x/b")],
                    success: [
                        .txn(
                            EtcdTxnRequest(
                                compare: [.value("/x/a", equals: "1")],
                                success: [
                                    .put(EtcdPutRequest(key: "/x/b", value: "2")),
                                    .range(EtcdRangeRequest(key: "/x/a")),
                                ]))
                    ]))
            #expect(nested.succeeded)
            guard case .txn(let inner)? = nested.responses.first else {
                Issue.record("nested txn response: \(nested.responses)")
                return
            }
            #expect(inner.succeeded && inner.responses.count == 2)
            if case .range(let range)? = inner.responses.last { #expect(range.kvs.first?.valueString == "1") }
            let all = try await client.range(EtcdRangeRequest(prefix: "/x/", limit: 1))
            #expect(all.kvs.count == 1 && all.more && all.count == 2)
            let old = try await client.range(EtcdRangeRequest(key: Array("/x/b".utf8), revision: revision))
            #expect(old.kvs.isEmpty, "read at an older revision")
            let deleted = try await client.delete(EtcdDeleteRequest(prefix: "/x/", prevKV: true))
            #expect(deleted.deleted == 2 && deleted.prevKVs.count == 2)
        }
    }
}

func rotated<T>(_ array: [T], by offset: Int) -> [T] {
    guard !array.isEmpty else { return array }
    let shift = offset % array.count
    return Array(array[shift...] + array[..<shift])
}
