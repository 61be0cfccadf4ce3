import BatonCore
import BatonHA
import BatonTesting
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing

@testable import BatonAPI

#if canImport(Glibc)
    import Glibc
#endif

/// The health checks answered on the event loop (`HealthFastPath`) must be the router's answers,
/// byte for byte, in every role; everything else, and malformed queries, must still reach the
/// router; and a pipelined connection must get its responses in request order.
@Suite struct HealthFastPathTests {
    struct Answer: Equatable, CustomStringConvertible {
        var code: Int
        var contentType: String?
        var body: String
        var description: String { "\(code) \(contentType ?? "-") \(body.prefix(60))" }
    }

    static let methods: [HTTPRequest.Method] = [.get, .head, .options]
    static let queries = ["", "?lag=10MB", "?lag=1GB", "?replication_state=streaming", "?tag_zone=a", "?lag=ten"]

    /// Every health path × method × query, through the router (`.router`) or a real socket
    /// (`.live`, where the fast path answers).
    func answers(_ app: BatonAPIApplication, _ mode: TestingSetup) async throws -> [String: Answer] {
        try await app.test(mode) { client in
            var result: [String: Answer] = [:]
            for path in HealthCheck.allCases.flatMap(\.paths) {
                for method in Self.methods {
                    for query in Self.queries {
                        result["\(method) \(path)\(query)"] = try await client.execute(
                            uri: path + query, method: method
                        ) {
                            Answer(
                                code: Int($0.status.code), contentType: $0.headers[.contentType],
                                body: String(buffer: $0.body))
                        }
                    }
                }
            }
            return result
        }
    }

    static let roles: [(String, HAStatus)] = [
        ("primary", Fixture.primary()), ("replica", Fixture.replica()), ("lagging replica", Fixture.laggingReplica()),
        ("stopped postgres", Fixture.stopped()), ("paused cluster", Fixture.paused()),
    ]

    @Test(arguments: 0..<5) func theFastPathAnswersAsTheRouterDoes(role: Int) async throws {
        let (name, status) = Self.roles[role]
        let source = FakeSource(status)
        let server = BatonAPIServer(
            source: source, configuration: APIConfiguration(port: 0), logger: Logger(label: "t"))
        let viaRouter = try await answers(try server.makeApplication(), .router)
        let before = server.fastPathAnswers.value
        let live = try await answers(try server.makeApplication(), .live)
        #expect(viaRouter.count == live.count)
        for (request, var expected) in viaRouter {
            // A response to HEAD has no body on the wire, whoever answers.
            if request.hasPrefix("HEAD ") { expected.body = "" }
            #expect(
                live[request] == expected,
                "\(name): \(request): live \(live[request].map(\.description) ?? "none"), router \(expected)")
        }
        // Every request but the malformed-lag ones was the fast path's; those got the router's 400.
        let malformed = viaRouter.keys.filter { $0.hasSuffix("?lag=ten") }.count
        #expect(malformed > 0 && viaRouter.filter { $0.key.hasSuffix("?lag=ten") }.allSatisfy { $0.value.code == 400 })
        #expect(server.fastPathAnswers.value - before == viaRouter.count - malformed)
    }

    /// Patroni's http_extra_headers (before: refused at load): on every answer, the fast path's
    /// health checks as well as the router's answers and its errors.
    @Test func extraHeadersAreOnEveryAnswer() async throws {
        var configuration = APIConfiguration(port: 0)
        configuration.extraHeaders = [("X-Frame-Options", "DENY"), ("Strict-Transport-Security", "max-age=31536000")]
        let source = FakeSource(Fixture.primary())
        let server = BatonAPIServer(source: source, configuration: configuration, logger: Logger(label: "t"))
        for mode in [TestingSetup.router, .live] {
            try await server.makeApplication().test(mode) { client in
                for path in ["/primary", "/health", "/patroni", "/nowhere"] {
                    try await client.execute(uri: path, method: .get) { response in
                        #expect(response.headers[HTTPField.Name("X-Frame-Options")!] == "DENY", "\(mode) \(path)")
                        #expect(
                            response.headers[HTTPField.Name("Strict-Transport-Security")!] == "max-age=31536000",
                            "\(mode) \(path)")
                    }
                }
            }
        }
        #expect(server.fastPathAnswers.value > 0, "the fast path answered some of them")
        #expect(ExtraHeaders.problem(name: "Content-Length", value: "1")?.contains("set by the server") == true)
        #expect(ExtraHeaders.problem(name: "X-A", value: "a\r\nSet-Cookie: x")?.contains("line break") == true)
        #expect(ExtraHeaders.problem(name: "X A", value: "b")?.contains("not a header name") == true)
    }

    /// Raw HTTP/1.1 over one socket: requests written at once, responses read back in order.
    /// Runs on a thread of its own: its blocking socket calls must not hold one of the few threads
    /// of the concurrency pool, which the server's router needs (on two cores, two such tests at
    /// once would starve it until their reads time out).
    static func exchange(port: Int, _ requests: [String], expecting count: Int, splitAt: Int? = nil) async throws
        -> [String]
    {
        let result = await withCheckedContinuation {
            (continuation: CheckedContinuation<Result<[String], any Error>, Never>) in
            Thread {
                continuation.resume(
                    returning: Result { try blockingExchange(port: port, requests, expecting: count, splitAt: splitAt) }
                )
            }.start()
        }
        return try result.get()
    }

    static func blockingExchange(port: Int, _ requests: [String], expecting count: Int, splitAt: Int?) throws
        -> [String]
    {
        let fd = try #require(RawTCP.connect(port: port, timeout: .seconds(5)))
        defer { close(fd) }
        let text = Array(requests.joined().utf8)
        // With `splitAt`, the bytes go in two sends 50 ms apart (a head cut in two).
        let cut = min(splitAt ?? text.count, text.count)
        try #require(RawTCP.sendAll(fd, Array(text[..<cut])))
        if cut < text.count {
            usleep(50_000)
            try #require(RawTCP.sendAll(fd, Array(text[cut...])))
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        // Bounded: until `count` complete responses are in, the peer closes, or a read waits 5 s.
        for _ in 0..<1000 {
            if Self.responses(received).count >= count { break }
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            received += buffer[0..<n]
        }
        return Self.responses(received)
    }

    /// The status lines of the complete responses in `bytes` (each framed by Content-Length).
    static func responses(_ bytes: [UInt8]) -> [String] {
        var lines: [String] = []
        var rest = bytes[...]
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        while let end = rest.firstRange(of: separator) {
            let head = String(decoding: rest[..<end.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
            let length =
                head.dropFirst().compactMap { line -> Int? in
                    let parts = line.split(separator: ":", maxSplits: 1)
                    guard parts.count == 2, parts[0].lowercased() == "content-length" else { return nil }
                    return Int(parts[1].trimmingCharacters(in: .whitespaces))
                }.first ?? 0
            guard rest.distance(from: end.upperBound, to: rest.endIndex) >= length else { break }
            lines.append(head[0])
            rest = rest[(end.upperBound + length)...]
        }
        return lines
    }

    /// An API server whose member is a streaming replica (or whatever `source` shows).
    static func replicaServer(_ source: FakeSource = FakeSource(Fixture.replica())) -> BatonAPIServer {
        BatonAPIServer(source: source, configuration: APIConfiguration(port: 0), logger: Logger(label: "t"))
    }

    /// A plain kept-alive HTTP/1.1 GET of `path`.
    static func get(_ path: String) -> String { "GET \(path) HTTP/1.1\r\nHost: t\r\n\r\n" }

    @Test func pipelinedRequestsGetTheirResponsesInOrder() async throws {
        let server = Self.replicaServer()
        try await server.makeApplication().test(.live) { client in
            let port = try #require(client.port)
            // Router, fast path, router, fast path, unknown path (router's 404), fast path.
            let plain = try await Self.exchange(port: port, [Self.get("/patroni"), Self.get("/cluster")], expecting: 2)
            #expect(plain == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"])
            let lines = try await Self.exchange(
                port: port,
                [
                    Self.get("/patroni"), Self.get("/primary"), Self.get("/cluster"), Self.get("/replica"),
                    Self.get("/nope"), Self.get("/health"),
                ],
                expecting: 6)
            #expect(
                lines == [
                    "HTTP/1.1 200 OK", "HTTP/1.1 503 Service Unavailable", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK",
                    "HTTP/1.1 404 Not Found", "HTTP/1.1 200 OK",
                ])
            // Connection: close is honoured by the fast path too.
            let closing = try await Self.exchange(
                port: port, ["GET /replica HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", Self.get("/replica")],
                expecting: 2)
            #expect(closing == ["HTTP/1.1 200 OK"])
        }
    }

    @Test func healthChecksAreAnsweredOnTheEventLoopAndPipelinedOnesInOrder() async throws {
        let server = Self.replicaServer()
        try await server.makeApplication().test(.live) { client in
            let port = try #require(client.port)
            let before = server.fastPathAnswers.value
            // Health checks first (answered on the event loop), then a status request (the router),
            // then health checks pipelined behind it (the router too, to keep the order).
            let lines = try await Self.exchange(
                port: port,
                [
                    Self.get("/primary"), Self.get("/replica?lag=1MB"), Self.get("/patroni"), Self.get("/primary"),
                    Self.get("/nope"),
                    Self.get("/health"),
                ],
                expecting: 6)
            #expect(
                lines == [
                    "HTTP/1.1 503 Service Unavailable", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK",
                    "HTTP/1.1 503 Service Unavailable", "HTTP/1.1 404 Not Found", "HTTP/1.1 200 OK",
                ])
            // The first two on the event loop; the rest came pipelined behind /patroni, so the router
            // answered them, in order.
            #expect(server.fastPathAnswers.value - before == 2)
            // A head cut in two sends (inside the request line, then inside a header) is answered
            // once whole.
            for cut in [7, 30] {
                let split = try await Self.exchange(
                    port: port, [Self.get("/replica") + Self.get("/read-only")], expecting: 2, splitAt: cut)
                #expect(split == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"], "cut at \(cut)")
            }
            // HEAD gets the headers only; a malformed query goes to the router (400).
            let head = try await Self.exchange(
                port: port, ["HEAD /replica HTTP/1.1\r\n\r\n", Self.get("/replica?lag=ten"), Self.get("/replica")],
                expecting: 3)
            #expect(head == ["HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request", "HTTP/1.1 200 OK"])
            // Bare-LF line ends and HTTP/1.0 are the codec's to judge (answered, not left waiting
            // for a CRLF CRLF that never comes).
            let odd = try await Self.exchange(
                port: port, ["GET /replica HTTP/1.1\nHost: t\n\n"], expecting: 1)
            #expect(odd.count == 1)
            let old = try await Self.exchange(port: port, ["GET /replica HTTP/1.0\r\n\r\n"], expecting: 1)
            #expect(old == ["HTTP/1.1 200 OK"])
        }
    }

    /// A connection's last answer is sent again only while the request, the snapshot's generation
    /// and the second are the same; a new snapshot changes the answer at once.
    @Test func aConnectionReusesItsLastAnswerOnlyWhileNothingItDependsOnChanged() throws {
        var replica = Fixture.replica()
        replica.generation = 7
        let source = FakeSource(replica)
        let server = Self.replicaServer(source)
        var memo: HealthAnswerMemo?
        func answer(_ target: String, _ method: HTTPRequest.Method = .get) throws -> HTTPResponse {
            let request = HTTPRequest(method: method, scheme: nil, authority: nil, path: target)
            return try #require(server.fastHealthAnswer(request, memo: &memo)).0
        }
        let counted = server.fastPathAnswers.value
        #expect(try answer("/replica").status == .ok)
        #expect(memo?.generation == 7 && memo?.target == "/replica")
        #expect(try answer("/replica").status == .ok)
        #expect(server.fastPathAnswers.value - counted == 2)
        // Another path, or another method, is answered afresh.
        #expect(try answer("/primary").status == .serviceUnavailable)
        #expect(memo?.target == "/primary")
        _ = try answer("/primary", .head)
        #expect(memo?.method == .head)
        // A new snapshot (postgres stopped) changes the answer at once on the same connection.
        _ = try answer("/replica")
        source.update {
            $0.postgres.process = .stopped
            $0.generation = 8
        }
        #expect(try answer("/replica").status == .serviceUnavailable)
        #expect(memo?.generation == 8)
        // /liveness depends on the time since the last cycle: never reused.
        _ = try answer("/liveness")
        #expect(memo == nil)
        // A source without generations (0 here) gets no reuse either.
        source.update { $0.generation = 0 }
        _ = try answer("/replica")
        #expect(memo == nil)
        // A request the router must answer (a malformed query) leaves nothing behind.
        source.update { $0.generation = 9 }
        _ = try answer("/replica")
        #expect(memo?.generation == 9)
        let malformed = HTTPRequest(method: .get, scheme: nil, authority: nil, path: "/replica?lag=ten")
        #expect(server.fastHealthAnswer(malformed, memo: &memo) == nil)
        #expect(memo == nil)
    }
}
