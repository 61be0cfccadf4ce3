import BatonCore
import BatonEtcd
import Testing

/// Broken HTTP replies from a fake server on loopback: always an error, never a crash or a hang.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct MalformedReplyTests {
    static func http(_ status: String, _ body: String, contentLength: Int? = nil, extra: String = "") -> [UInt8] {
        let length = contentLength ?? body.utf8.count
        return Array(
            "HTTP/1.1 \(status)\r\nContent-Type: application/json\r\nContent-Length: \(length)\r\n\(extra)\r\n\(body)"
                .utf8)
    }

    static let cases: [(String, [UInt8], StoreError.Code)] = [
        ("not JSON", http("200 OK", "this is not json"), .malformedReply),
        ("truncated body", http("200 OK", "{\"header\":{\"revi", contentLength: 200), .malformedReply),
        ("truncated JSON", http("200 OK", "{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":"), .malformedReply),
        ("garbage status line", Array("SPAM SPAM SPAM\r\n\r\n{}".utf8), .malformedReply),
        ("wrong types", http("200 OK", "{\"header\":{\"revision\":{}},\"kvs\":[{\"key\":42}]}"), .malformedReply),
        ("bad base64", http("200 OK", "{\"kvs\":[{\"key\":\"%%%\"}]}"), .malformedReply),
        ("array instead of object", http("200 OK", "[1,2,3]"), .malformedReply),
        ("empty body", http("200 OK", ""), .malformedReply),
        ("closed without reply", [], .unavailable),
        ("HTML error page", http("502 Bad Gateway", "<html>bad gateway</html>"), .unavailable),
        (
            "gRPC error with HTTP 200", http("200 OK", "{\"error\":\"x\",\"code\":3,\"message\":\"etcdserver: bad\"}"),
            .invalidRequest
        ),
        (
            "chunked garbage",
            Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnope\r\n".utf8), .malformedReply
        ),
    ]

    @Test(arguments: cases.indices)
    func brokenReplyIsAnError(_ index: Int) async throws {
        let (name, reply, code) = Self.cases[index]
        let server = try FakeHTTPServer(.reply(reply))
        defer { server.stop() }
        let client = EtcdClient(
            configuration: EtcdConfiguration(endpoints: [server.endpoint], requestTimeout: .seconds(2)),
            logger: testLogger("fake"))
        let error = await #expect(throws: StoreError.self, "\(name)") {
            _ = try await client.range(EtcdRangeRequest(key: "/x"))
        }
        #expect(error?.code == code, "\(name): \(String(describing: error))")
        #expect(error?.endpoint == server.endpoint)
    }

    @Test func serverThatNeverAnswersTimesOutWithinTheDeadline() async throws {
        let server = try FakeHTTPServer(.silent)
        defer { server.stop() }
        let client = EtcdClient(
            configuration: EtcdConfiguration(endpoints: [server.endpoint], requestTimeout: .seconds(2)),
            logger: testLogger("silent"))
        let started = ContinuousClock.now
        let error = await #expect(throws: StoreError.self) { try await client.put("/x", "1") }
        #expect(error?.code == .timeout, "\(String(describing: error))")
        #expect(error?.message.contains("may or may not have been applied") == true)
        #expect(ContinuousClock.now - started < .seconds(3))
    }

    /// A request that waits for a worker thread past its deadline fails then, unsent: its caller
    /// hears at its deadline, not when a thread frees up, and an answer nobody waits for is not
    /// worth a transfer. Before, the queue had no deadline: the second request waited for the
    /// first (2 s) and then went out with a full timeout of its own.
    @Test func aRequestQueuedPastItsDeadlineIsNeverSent() async throws {
        let server = try FakeHTTPServer(.silent)
        defer { server.stop() }
        let client = EtcdClient(
            configuration: EtcdConfiguration(
                endpoints: [server.endpoint], requestTimeout: .seconds(2), maxConcurrentRequests: 1),
            logger: testLogger("queued"))
        async let first: Void = { _ = try? await client.range(EtcdRangeRequest(key: "/a")) }()
        try await Task.sleep(for: .milliseconds(100))
        client.setRequestTimeout(.milliseconds(500))
        let started = ContinuousClock.now
        let error = await #expect(throws: StoreError.self) { _ = try await client.range(EtcdRangeRequest(key: "/b")) }
        let waited = ContinuousClock.now - started
        #expect(error?.code == .overloaded, "\(String(describing: error))")
        #expect(error?.message.contains("not sent") == true, "\(String(describing: error))")
        #expect(waited < .milliseconds(900), "the caller waited \(waited)")
        await first
        try await Task.sleep(for: .milliseconds(300))
        #expect(server.requests == 1, "the expired request was sent anyway")
    }

    /// Past `maxQueuedRequests` waiting, a request fails at once, unsent, and is not retried on
    /// another endpoint (this process is overloaded, not etcd).
    @Test func aFullQueueRefusesAtOnce() async throws {
        let server = try FakeHTTPServer(.silent)
        defer { server.stop() }
        let client = EtcdClient(
            configuration: EtcdConfiguration(
                endpoints: [server.endpoint], requestTimeout: .seconds(2), maxConcurrentRequests: 1,
                maxQueuedRequests: 1),
            logger: testLogger("full"))
        async let first: Void = { _ = try? await client.range(EtcdRangeRequest(key: "/a")) }()
        try await Task.sleep(for: .milliseconds(100))
        async let second: Void = { _ = try? await client.range(EtcdRangeRequest(key: "/b")) }()
        try await Task.sleep(for: .milliseconds(100))
        let started = ContinuousClock.now
        let error = await #expect(throws: StoreError.self) { _ = try await client.range(EtcdRangeRequest(key: "/c")) }
        #expect(ContinuousClock.now - started < .milliseconds(200), "a full queue must refuse at once")
        #expect(error?.message.contains("already wait") == true, "\(String(describing: error))")
        await first
        await second
    }

    static let emptyRange = http("200 OK", "{\"header\":{\"revision\":\"5\"},\"count\":\"0\"}")

    /// Fault scenario 20 (etcd slow but alive): every endpoint answers after 1.5 s, within the
    /// 3 s request timeout. Before, each endpoint had only its share (1 s) and the call failed
    /// although every answer came within the deadline; a hedged read is heard.
    @Test func anEtcdSlowButWithinTheDeadlineIsHeard() async throws {
        let servers = try (0..<3).map { _ in try FakeHTTPServer(.delayed(.milliseconds(1500), Self.emptyRange)) }
        defer { for server in servers { server.stop() } }
        let client = EtcdClient(
            configuration: EtcdConfiguration(endpoints: servers.map(\.endpoint), requestTimeout: .seconds(3)),
            logger: testLogger("slow"))
        let started = ContinuousClock.now
        let reply = try await client.range(EtcdRangeRequest(key: "/x"))
        #expect(reply.header.revision == 5)
        let elapsed = ContinuousClock.now - started
        #expect(elapsed < .milliseconds(2900), "took \(elapsed)")
    }

    /// The other half of hedging: one endpoint that never answers costs a read only its share of
    /// the request timeout before another endpoint is asked.
    @Test func aSilentEndpointCostsOnlyItsShare() async throws {
        let silent = try FakeHTTPServer(.silent)
        let good = try (0..<2).map { _ in try FakeHTTPServer(.reply(Self.emptyRange)) }
        defer {
            silent.stop()
            for server in good { server.stop() }
        }
        let client = EtcdClient(
            configuration: EtcdConfiguration(
                endpoints: [silent.endpoint] + good.map(\.endpoint), requestTimeout: .seconds(3)),
            logger: testLogger("hedge"))
        let started = ContinuousClock.now
        let reply = try await client.range(EtcdRangeRequest(key: "/x"))
        #expect(reply.header.revision == 5)
        let elapsed = ContinuousClock.now - started
        #expect(elapsed < .milliseconds(2000), "took \(elapsed)")
        // The endpoint that answered is asked first next time: no second wait (less than the
        // silent endpoint's share; the preference itself is checked first, without timing).
        #expect(client.currentEndpoint != silent.endpoint, "the silent endpoint is still asked first")
        let again = ContinuousClock.now
        _ = try await client.range(EtcdRangeRequest(key: "/x"))
        let second = ContinuousClock.now - again
        #expect(second < .milliseconds(900), "the second read took \(second), current \(client.currentEndpoint ?? "-")")
    }

    /// Fault scenario 4 (one etcd member lost): the preferred endpoint refuses every connection
    /// (its etcd was killed). The next endpoint is asked as soon as the first refusal comes, not
    /// after the refusing endpoint's share: before, a lease keepalive (retry_timeout 1.5 s, share
    /// 1 s) spent 1 s retrying the dead member, and with etcd electing a new leader meanwhile the
    /// renewal could miss the leader's fencing deadline.
    @Test func aRefusingEndpointCostsNoShare() async throws {
        let refusing = try FakeHTTPServer(.silent)
        let refusedEndpoint = refusing.endpoint
        refusing.stop()  // the port is closed now: connections are refused
        let good = try FakeHTTPServer(.reply(Self.emptyRange))
        defer { good.stop() }
        let client = EtcdClient(
            configuration: EtcdConfiguration(
                endpoints: [refusedEndpoint, good.endpoint], requestTimeout: .seconds(8)),
            logger: testLogger("refused"))
        #expect(client.currentEndpoint == refusedEndpoint)
        let started = ContinuousClock.now
        let reply = try await client.range(EtcdRangeRequest(key: "/x"))
        #expect(reply.header.revision == 5)
        let elapsed = ContinuousClock.now - started
        // The share is 4 s (8 s over two endpoints): well under it means the refusal handed over.
        #expect(elapsed < .seconds(2), "took \(elapsed)")
    }

    /// The request timeout follows a dynamic `retry_timeout`: set to 10 s at start, lowered to
    /// 1 s, a call to a server that never answers ends after ~1 s. Before, the timeout was fixed
    /// when the agent started.
    @Test func theRequestTimeoutFollowsAChangedRetryTimeout() async throws {
        let server = try FakeHTTPServer(.silent)
        defer { server.stop() }
        let client = EtcdClient(
            configuration: EtcdConfiguration(endpoints: [server.endpoint], retryTimeout: .seconds(10)),
            logger: testLogger("retry-timeout"))
        #expect(client.requestTimeout == .seconds(10))
        client.setRequestTimeout(.seconds(1))
        let started = ContinuousClock.now
        let error = await #expect(throws: StoreError.self) { _ = try await client.get("/x") }
        #expect(error?.code == .timeout, "\(String(describing: error))")
        let elapsed = ContinuousClock.now - started
        #expect(elapsed < .seconds(3), "took \(elapsed) with a 1 s request timeout")
    }

    @Test func garbageWatchStreamIsRetriedNotFatal() async throws {
        let server = try FakeHTTPServer(
            .reply(
                Array(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"result\":{\"events\":[{\"kv\":7}]}}\nxx"
                        .utf8)))
        defer { server.stop() }
        let client = EtcdClient(
            configuration: EtcdConfiguration(endpoints: [server.endpoint], requestTimeout: .seconds(1)),
            logger: testLogger("watch-garbage"))
        let task = Task {
            for try await _ in client.watch(EtcdWatchRequest(prefix: "/x/")) {}
        }
        try await Task.sleep(for: .seconds(1))
        task.cancel()
        _ = try await withTimeout(.seconds(3), "watch on a garbage stream") { try await task.value }
    }

    @Test func cancellingARequestAbortsIt() async throws {
        let server = try FakeHTTPServer(.silent)
        defer { server.stop() }
        let client = EtcdClient(
            configuration: EtcdConfiguration(endpoints: [server.endpoint], requestTimeout: .seconds(30)),
            logger: testLogger("cancel"))
        let task = Task { try await client.get("/x") }
        try await Task.sleep(for: .milliseconds(300))
        let started = ContinuousClock.now
        task.cancel()
        let result = await task.result
        // The transfer sleeps in curl_multi_poll and the abort wakes it (curl_multi_wakeup): it
        // ends at once, not at libcurl's next one-second tick as with curl_easy_perform.
        #expect(ContinuousClock.now - started < .milliseconds(500))
        guard case .failure(let error) = result, error is CancellationError else {
            Issue.record("expected CancellationError, got \(result)")
            return
        }
    }

    /// A watch stream that receives nothing for `watchIdleTimeout` is dropped and opened again
    /// (an etcd member that hangs without closing). The idle limit is the transfer's own now
    /// (libcurl's low-speed limit woke the thread every second to check it).
    @Test func aSilentWatchStreamIsReconnectedAfterTheIdleLimit() async throws {
        let server = try FakeHTTPServer(.silent)
        defer { server.stop() }
        let client = EtcdClient(
            configuration: EtcdConfiguration(
                endpoints: [server.endpoint], requestTimeout: .seconds(1), watchIdleTimeout: .seconds(1)),
            logger: testLogger("watch-idle"))
        let task = Task {
            for try await _ in client.watch(EtcdWatchRequest(prefix: "/x/")) {}
        }
        defer { task.cancel() }
        let started = ContinuousClock.now
        while server.requests < 3, ContinuousClock.now - started < .seconds(10) {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(server.requests >= 3, "the silent watch was not reconnected (\(server.requests) requests in 10 s)")
        task.cancel()
        _ = try? await withTimeout(.seconds(3), "watch cancelled") { try await task.value }
    }
}
