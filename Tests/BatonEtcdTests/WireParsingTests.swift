import BatonCore
import Foundation
import Testing

@testable import BatonEtcd

/// The gateway's JSON encoding: base64 bytes, int64 as strings, omitted defaults, error bodies.
@Suite struct WireParsingTests {
    static func wire(_ text: String) throws -> WireObject { try WireObject(json: Array(text.utf8)) }

    static func b64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    @Test func rangeReplyDecodesBase64AndStringInt64s() throws {
        let reply = try Self.wire(
            """
            {"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"42","raft_term":"3"},
             "kvs":[{"key":"\(Self.b64("/service/b/leader"))","create_revision":"40","mod_revision":"41","version":"2",
                     "value":"\(Self.b64("node-a"))","lease":"7587869133325510148"}],"count":"1"}
            """)
        let range = try EtcdRangeResponse(wire: reply)
        #expect(range.header.revision == 42)
        #expect(range.header.clusterID == 14_841_639_068_965_178_418)
        #expect(range.count == 1 && !range.more)
        let kv = try #require(range.kvs.first)
        #expect(kv.keyString == "/service/b/leader" && kv.valueString == "node-a")
        #expect(kv.createRevision == 40 && kv.modRevision == 41 && kv.version == 2)
        #expect(kv.lease == 7_587_869_133_325_510_148)
    }

    @Test func omittedFieldsTakeTheirDefaults() throws {
        let empty = try EtcdRangeResponse(wire: Self.wire(#"{"header":{"revision":"1"}}"#))
        #expect(empty.kvs.isEmpty && empty.count == 0)
        // A key with an empty value and no lease: both fields are omitted.
        let kv = try EtcdKeyValue(
            wire: Self.wire(#"{"key":"YQ==","create_revision":"2","mod_revision":"2","version":"1"}"#))
        #expect(kv.value.isEmpty && kv.lease == 0)
        // Numbers instead of strings are accepted too.
        #expect(try EtcdResponseHeader(wire: Self.wire(#"{"revision":7}"#)).revision == 7)
    }

    @Test func failedTxnHasNoSucceededField() throws {
        let failed = try EtcdTxnResponse(wire: Self.wire(#"{"header":{"revision":"9"}}"#))
        #expect(!failed.succeeded && failed.responses.isEmpty)
        let won = try EtcdTxnResponse(
            wire: Self.wire(
                #"{"header":{"revision":"10"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"10"}}},{"response_txn":{"succeeded":true,"responses":[{"response_range":{"header":{}}}]}}]}"#
            ))
        #expect(won.succeeded)
        guard case .put = won.responses[0], case .txn(let inner) = won.responses[1] else {
            Issue.record("responses: \(won.responses)")
            return
        }
        #expect(inner.succeeded)
    }

    @Test func putEventHasNoType() throws {
        let message = try EtcdWatchMessage(
            json: Array(
                """
                {"result":{"header":{"revision":"12"},"events":[
                  {"kv":{"key":"\(Self.b64("/a"))","mod_revision":"11","value":"\(Self.b64("x"))"}},
                  {"type":"DELETE","kv":{"key":"\(Self.b64("/b"))","mod_revision":"12"},"prev_kv":{"key":"\(Self.b64("/b"))","value":"\(Self.b64("y"))"}}]}}
                """.utf8))
        guard case .response(let response) = message else {
            Issue.record("\(message)")
            return
        }
        #expect(response.events.map(\.kind) == [.put, .delete])
        #expect(response.events[1].prevKV?.valueString == "y")
        #expect(response.events[1].kv.modRevision == 12)
        #expect(!response.isProgressNotify)
    }

    @Test func watchNoticesAreRecognised() throws {
        let created = try EtcdWatchResponse(wire: Self.wire(#"{"header":{"revision":"5"},"created":true}"#))
        #expect(created.created && created.events.isEmpty && !created.isProgressNotify)
        let progress = try EtcdWatchResponse(wire: Self.wire(#"{"header":{"revision":"8"}}"#))
        #expect(progress.isProgressNotify)
        let compacted = try EtcdWatchResponse(
            wire: Self.wire(#"{"header":{"revision":"80"},"compact_revision":"50","canceled":true}"#))
        #expect(compacted.compactRevision == 50 && compacted.canceled)
    }

    @Test func keepaliveWithoutTTLMeansExpired() throws {
        #expect(try EtcdKeepAliveResult(wire: Self.wire(#"{"result":{"header":{},"ID":"12345"}}"#)) == .expired)
        #expect(try EtcdKeepAliveResult(wire: Self.wire(#"{"result":{"ID":"1","TTL":"-1"}}"#)) == .expired)
        #expect(try EtcdKeepAliveResult(wire: Self.wire(#"{"result":{"ID":"1","TTL":"10"}}"#)) == .alive(ttl: 10))
        #expect(try EtcdKeepAliveResult(wire: Self.wire(#"{"ID":"1","TTL":"3"}"#)) == .alive(ttl: 3))
        let multi = EtcdClient.firstObject(Array("{\"result\":{\"TTL\":\"4\"}}\n{\"result\":{}}\n".utf8))
        #expect(try EtcdKeepAliveResult(wire: WireObject(json: multi)) == .alive(ttl: 4))
    }

    @Test func errorBodiesMapOnTheGRPCCode() throws {
        func error(_ text: String) throws -> StoreError? {
            guard let (code, message) = try Self.wire(text).gatewayError() else { return nil }
            return StoreError.etcd(code: code, message: message, endpoint: "http://e")
        }
        let unavailable = try error(#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#)
        #expect(unavailable?.code == .unavailable && unavailable?.remoteCode == 14)
        #expect(unavailable?.endpoint == "http://e")
        let token = try error(
            #"{"error":"etcdserver: invalid auth token","message":"etcdserver: invalid auth token","code":16}"#)
        #expect(token?.code == .auth && token?.isTokenRejected == true)
        let password = try error(
            #"{"error":"etcdserver: authentication failed, invalid user ID or password","message":"etcdserver: authentication failed, invalid user ID or password","code":3}"#
        )
        #expect(password?.code == .auth && password?.isTokenRejected == false)
        let lease = try error(
            #"{"error":"etcdserver: requested lease not found","code":5,"message":"etcdserver: requested lease not found"}"#
        )
        #expect(lease?.code == .leaseNotFound)
        let compacted = try error(#"{"message":"etcdserver: mvcc: required revision has been compacted","code":11}"#)
        #expect(compacted?.code == .compacted)
        let stream = try error(
            #"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#
        )
        #expect(stream?.code == .unavailable)
        #expect(try error(#"{"header":{"revision":"3"}}"#) == nil)
    }

    @Test func malformedValuesAreErrorsNotCrashes() {
        for text in [
            "", "nul", "[1]", "{\"header\":", #"{"header":{"revision":"x"}}"#, #"{"kvs":[{"key":"%%"}]}"#,
            #"{"kvs":{"key":"YQ=="}}"#, #"{"kvs":[1]}"#, #"{"header":{"revision":1e40}}"#,
        ] {
            #expect(throws: WireError.self, "\(text)") {
                try EtcdRangeResponse(wire: WireObject(json: Array(text.utf8)))
            }
        }
        #expect(throws: WireError.self) { try EtcdEvent(wire: Self.wire(#"{"type":"BOGUS","kv":{}}"#)) }
        #expect(throws: WireError.self) { try EtcdLeaseGrant(wire: Self.wire(#"{"TTL":"5"}"#)) }
    }

    @Test func prefixRangeEndIncrementsTheLastByte() {
        #expect(Array("/service/b/".utf8).prefixRangeEnd == Array("/service/b0".utf8))
        #expect([0x61, 0xFF].prefixRangeEnd == [0x62])
        #expect([0xFF, 0xFF].prefixRangeEnd == [0])
    }

    @Test func requestsEncodeAsTheGatewayExpects() throws {
        let txn = EtcdTxnRequest(
            compare: [.absent("/k"), EtcdCompare(key: "/k", .value(Array("me".utf8)), .notEqual)],
            success: [.put(EtcdPutRequest(key: "/k", value: "v", lease: 77))],
            failure: [.range(EtcdRangeRequest(key: "/k"))])
        let json = try #require(
            try JSONSerialization.jsonObject(with: Data(WireEncoding.encode(txn.wire))) as? [String: Any])
        let compares = try #require(json["compare"] as? [[String: Any]])
        #expect(compares[0]["target"] as? String == "CREATE" && compares[0]["create_revision"] as? String == "0")
        #expect(compares[1]["result"] as? String == "NOT_EQUAL" && compares[1]["value"] as? String == Self.b64("me"))
        let put = try #require((json["success"] as? [[String: Any]])?.first?["request_put"] as? [String: Any])
        #expect(put["lease"] as? String == "77" && put["key"] as? String == Self.b64("/k"))
        #expect((json["failure"] as? [[String: Any]])?.first?["request_range"] != nil)
    }
}

@Suite struct JSONObjectSplitterTests {
    @Test func objectsAreCutWhateverTheChunking() throws {
        let stream = Array("{\"result\":{\"a\":\"}{\\\"\"}}\n{\"result\":{}}\n  {\"x\":[1,{\"y\":2}]}".utf8)
        for chunk in [1, 2, 3, 7, stream.count] {
            var splitter = JSONObjectSplitter()
            var objects: [[UInt8]] = []
            var index = 0
            while index < stream.count {
                let end = min(index + chunk, stream.count)
                objects += try splitter.append(Array(stream[index..<end]))
                index = end
            }
            #expect(objects.count == 3, "chunk \(chunk)")
            #expect(String(decoding: objects[0], as: UTF8.self) == "{\"result\":{\"a\":\"}{\\\"\"}}")
            #expect(!splitter.hasPartialObject)
        }
    }

    @Test func garbageBetweenObjectsIsAnError() {
        var splitter = JSONObjectSplitter()
        #expect(throws: WireError.self) { _ = try splitter.append(Array("{}x".utf8)) }
    }
}

@Suite struct EtcdClusterStoreDecodingTests {
    static let layout = EtcdKeyLayout(scope: "b")

    static func kv(_ path: String, _ value: String, lease: Int64 = 0, revision: Int64 = 5) -> EtcdKeyValue {
        EtcdKeyValue(
            key: Array(("/service/b/" + path).utf8), value: Array(value.utf8), createRevision: revision,
            modRevision: revision, version: 1, lease: lease)
    }

    @Test func layoutNormalisesSlashes() {
        #expect(EtcdKeyLayout(namespace: "service", scope: "b").prefix == "/service/b/")
        #expect(EtcdKeyLayout(namespace: "/service/", scope: "/b/").prefix == "/service/b/")
        #expect(Self.layout.clusterKey("/service/b/members/n1") == .member("n1"))
        #expect(Self.layout.clusterKey("/service/bb/leader") == nil)
    }

    @Test func undecodableKeysBecomeProblems() throws {
        var response = try EtcdRangeResponse(wire: WireObject(json: Array(#"{"header":{"revision":"9"}}"#.utf8)))
        response.kvs = [
            Self.kv("leader", "n1", lease: 0x1F),
            Self.kv("members/n1", #"{"role":"primary","state":"running","xlog_location":100}"#),
            Self.kv("members/n2", "garbage"),
            Self.kv("config", #"{"ttl":20}"#, revision: 7),
            Self.kv("sync", #"{"leader":"n1","sync_standby":"n2,n3"}"#),
            Self.kv("history", #"[[1,100,"r"]]"#),
            Self.kv("status", #"{"optime":"nope"}"#),
            Self.kv("failsafe", #"{"n1":"http://x"}"#),
            Self.kv("initialize", "123"),
            Self.kv("optime/leader", "100"),
        ]
        let view = EtcdClusterStore.decodeView(response, layout: Self.layout)
        #expect(view.revision == 9)
        #expect(view.leader == LeaderLock(member: "n1", session: SessionID(rawValue: 0x1F), modRevision: 5))
        #expect(view.members.map(\.name) == ["n1"])
        #expect(view.config?.modRevision == 7 && view.config?.value.ttl == .seconds(20))
        #expect(view.sync?.value.syncStandbys == ["n2", "n3"])
        #expect(view.history.count == 1 && view.failsafe == ["n1": "http://x"])
        #expect(view.initialize == "123" && view.initializeRevision == 5)
        #expect(view.status == nil)
        #expect(view.problems.count == 2, "\(view.problems)")
    }

    /// A pooler's registration counts only while a session holds it: a key written without a
    /// lease (by hand, or by another tool) would outlive the pooler it names, and leaders would
    /// wait for it on every switchover.
    @Test func poolerKeysCountOnlyOnASession() throws {
        var response = try EtcdRangeResponse(wire: WireObject(json: Array(#"{"header":{"revision":"9"}}"#.utf8)))
        let record = #"{"name":"x","state":"following","databases":["app=primary"],"paused_for":12}"#
        response.kvs = [
            Self.kv("poolers/pool1", record, lease: 0x2A), Self.kv("poolers/stale", record),
            Self.kv("poolers/bad name", record, lease: 0x2B),
        ]
        let view = EtcdClusterStore.decodeView(response, layout: Self.layout)
        #expect(view.poolers.map(\.name) == ["pool1"])
        #expect(view.poolers.first?.pausedFor == 12 && view.poolers.first?.followsPrimary == true)
    }

    /// Values and keys from the store go into log lines and documents: a newline in one would
    /// forge a log line. Found by the fuzz test (raw NUL and 0xFF bytes ended up in agent logs).
    @Test func previewsArePrintableOnOneLine() {
        #expect(WireObject.printable(Array("a\nb\r\tc\u{1}\u{7F}".utf8), limit: 80) == "a\\nb\\r\\tc\\u{1}\\u{7f}")
        #expect(WireObject.printable([0xFF, 0x00, 0x41], limit: 80) == "\u{FFFD}\\u{0}A")
        #expect(WireObject.printable(Array(String(repeating: "x", count: 100).utf8), limit: 10) == "xxxxxxxxxx…")
    }

    @Test func aMemberKeyWithControlCharactersIsNoMember() {
        let layout = EtcdKeyLayout(scope: "demo")
        let body = Array(
            #"{"conn_url":"postgres://h:5432/postgres","api_url":"http://h:8008/patroni","state":"running","role":"replica"}"#
                .utf8)
        func kv(_ key: String) -> String {
            "{\"key\":\"\(Data(key.utf8).base64EncodedString())\",\"value\":\"\(Data(body).base64EncodedString())\",\"mod_revision\":\"3\"}"
        }
        let json =
            "{\"header\":{\"revision\":\"9\"},\"kvs\":[\(kv("/service/demo/members/evil\nname")),\(kv("/service/demo/members/node2"))]}"
        guard let response = try? EtcdRangeResponse(wire: WireObject(json: Array(json.utf8))) else {
            Issue.record("could not build the range response")
            return
        }
        let view = EtcdClusterStore.decodeView(response, layout: layout)
        #expect(view.members.map(\.name) == ["node2"])
        #expect(view.problems.count == 1 && !view.problems[0].contains("\n"), "\(view.problems)")
    }
}
