import BatonCore
import BatonTesting
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Testing

@testable import BatonAPI

#if canImport(Glibc)
    import Glibc
#endif

struct ConnectionLimitFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The REST server's limits, on a real socket: a request must arrive whole in time (slowloris), an
/// idle connection is closed, connections are capped, and a client that pipelines requests without
/// reading the answers is not answered faster than it reads.
@Suite(.serialized) struct ConnectionLimitTests {
    static func server(_ limits: ConnectionLimitSettings) -> BatonAPIServer {
        BatonAPIServer(
            source: FakeSource(Fixture.replica()), configuration: APIConfiguration(port: 0, limits: limits),
            logger: Logger(label: "limits") { _ in SwiftLogNoOpLogHandler() })
    }

    /// Runs `body` on a thread of its own (the tests block on sockets).
    static func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, any Error>, Never>) in
            Thread { continuation.resume(returning: Result { try body() }) }.start()
        }
        return try result.get()
    }

    /// A client that sends a request head a byte at a time, one every 100 ms, is closed at the
    /// request timeout. Before, it kept the connection (and its buffer) for as long as it liked.
    @Test func aSlowlorisClientIsClosedAtTheRequestTimeout() async throws {
        let server = Self.server(ConnectionLimitSettings(requestTimeout: .seconds(1), idleTimeout: .seconds(30)))
        try await server.makeApplication().test(.live) { client in
            let port = try #require(client.port)
            let (closed, elapsed) = try await Self.blocking { () -> (Bool, Duration) in
                let connection = try RawConnection(port: port)
                let started = ContinuousClock.now
                let head = Array("GET /replica HTTP/1.1\r\nHost: t\r\nX-Slow: " + String(repeating: "a", count: 60))
                for character in head {
                    guard connection.send(String(character)) else { return (true, ContinuousClock.now - started) }
                    if connection.readUntilClosed(within: .milliseconds(100)).closed {
                        return (true, ContinuousClock.now - started)
                    }
                }
                return (false, ContinuousClock.now - started)
            }
            #expect(closed, "a trickling client kept its connection for \(elapsed)")
            #expect(elapsed < .seconds(4))
        }
    }

    /// A connection that sends nothing (a TLS handshake that never comes counts the same) is closed
    /// at the request timeout; one that goes quiet after an answer, at the idle timeout.
    @Test func silentAndIdleConnectionsAreClosed() async throws {
        let server = Self.server(ConnectionLimitSettings(requestTimeout: .seconds(1), idleTimeout: .seconds(2)))
        try await server.makeApplication().test(.live) { client in
            let port = try #require(client.port)
            let silent = try await Self.blocking { () -> (Bool, Duration) in
                let connection = try RawConnection(port: port)
                let started = ContinuousClock.now
                let closed = connection.readUntilClosed(within: .seconds(4)).closed
                return (closed, ContinuousClock.now - started)
            }
            #expect(silent.0, "a silent connection stayed open")
            #expect(silent.1 < .seconds(3))
            let idle = try await Self.blocking { () -> (String, Bool, Duration) in
                let connection = try RawConnection(port: port)
                connection.send("GET /replica HTTP/1.1\r\nHost: t\r\n\r\n")
                let started = ContinuousClock.now
                let (bytes, closed) = connection.readUntilClosed(within: .seconds(5))
                return (String(decoding: bytes, as: UTF8.self), closed, ContinuousClock.now - started)
            }
            #expect(idle.0.hasPrefix("HTTP/1.1 200 OK"), "no answer before the idle close: \(idle.0.prefix(40))")
            #expect(idle.1, "an idle connection stayed open")
            // Kept for the idle timeout (2 s), not closed at the request timeout (1 s).
            #expect(idle.2 > .milliseconds(1500) && idle.2 < .milliseconds(4000), "closed after \(idle.2)")
        }
    }

    /// Review findings: (a) a router request whose response ended before its body did (a body
    /// the route never reads) left the connection counted as "response owed" for ever, and
    /// (b) a router response blocked on a peer that does not read never ended: either way the
    /// idle timer was off and the connection held its slot for ever. Both are closed now.
    @Test func routerRequestsCannotPinAConnection() async throws {
        let server = Self.server(ConnectionLimitSettings(requestTimeout: .seconds(10), idleTimeout: .seconds(2)))
        try await server.makeApplication().test(.live) { client in
            let port = try #require(client.port)
            let (bodyLate, blocked) = try await Self.blocking { () -> ((Bool, Duration), (Bool, Duration)) in
                let first = try RawConnection(port: port)
                first.send("GET /patroni HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\n")
                usleep(300_000)
                first.send("x")
                let started = ContinuousClock.now
                let a = first.readUntilClosed(within: .seconds(6)).closed
                let bodyLate = (a, ContinuousClock.now - started)
                let second = try RawConnection(port: port)
                let pipelined = String(repeating: "GET /patroni HTTP/1.1\r\nHost: t\r\n\r\n", count: 5000)
                _ = fcntl(second.fd, F_SETFL, fcntl(second.fd, F_GETFL) | O_NONBLOCK)
                _ = Array(pipelined.utf8).withUnsafeBytes {
                    Glibc.send(second.fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL))
                }
                // Never read: wait for the close by watching for an error on a 1-byte send.
                let blockedStart = ContinuousClock.now
                var closed = false
                while !closed, ContinuousClock.now - blockedStart < .seconds(8) {
                    usleep(200_000)
                    var info = tcp_info()
                    var length = socklen_t(MemoryLayout<tcp_info>.size)
                    if getsockopt(second.fd, Int32(IPPROTO_TCP), TCP_INFO, &info, &length) == 0,
                        info.tcpi_state != UInt8(TCP_ESTABLISHED)
                    {
                        closed = true
                    }
                }
                return (bodyLate, (closed, ContinuousClock.now - blockedStart))
            }
            #expect(bodyLate.0, "a request whose body came after its answer pinned the connection")
            #expect(blocked.0, "a peer that never reads its router answers kept its connection for \(blocked.1)")
        }
    }

    /// Review finding: a client that half-closes after pipelining health checks gets every answer
    /// (the close waits for them).
    @Test func aHalfCloseWaitsForTheHeldAnswers() async throws {
        let server = Self.server(ConnectionLimitSettings())
        try await server.makeApplication().test(.live) { client in
            let port = try #require(client.port)
            let answers = try await Self.blocking { () -> Int in
                let connection = try RawConnection(port: port)
                connection.send(String(repeating: "GET /replica HTTP/1.1\r\nHost: t\r\n\r\n", count: 200))
                shutdown(connection.fd, Int32(SHUT_WR))
                let bytes = connection.readUntilClosed(within: .seconds(5)).bytes
                return String(decoding: bytes, as: UTF8.self).components(separatedBy: "HTTP/1.1 200 OK").count - 1
            }
            #expect(answers == 200, "\(answers) of 200 pipelined health checks answered before the close")
        }
    }

    /// Over the cap, a new connection is closed at once; once one closes, a new one is served.
    /// (Served with `runService`, not the testing client, whose own connection would take a slot.)
    @Test func connectionsAreCapped() async throws {
        let port = try TestEnvironment.freePort()
        let server = BatonAPIServer(
            source: FakeSource(Fixture.replica()),
            configuration: APIConfiguration(
                port: port,
                limits: ConnectionLimitSettings(
                    maxConnections: 3, requestTimeout: .seconds(20), idleTimeout: .seconds(20))),
            logger: Logger(label: "limits") { _ in SwiftLogNoOpLogHandler() })
        let app = try server.makeApplication()
        let service = Task { try await app.runService(gracefulShutdownSignals: []) }
        defer { service.cancel() }
        do {
            // The listener is up once a connection is accepted (and counted); it is let go at once.
            for _ in 0..<100 {
                if let probe = try? RawConnection(port: port) {
                    probe.send("GET /replica HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    if probe.readUntilClosed(within: .seconds(1)).bytes.count > 0 { break }
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            for _ in 0..<100 where server.connections.count > 0 { try await Task.sleep(for: .milliseconds(20)) }
            // Expectations stay on the test's task: recorded from another thread, they would be
            // attributed to no test (or to whichever test is watching for issues).
            let (counted, refusedClosed, answer, openAfter) = try await Self.blocking {
                () -> (Int, Bool, String, Int) in
                var held = try (0..<3).map { _ in try RawConnection(port: port) }
                // Each held connection is accepted (counted) before the next step.
                for _ in 0..<250 where server.connections.count < 3 { usleep(20_000) }
                let counted = server.connections.count
                let refused = try RawConnection(port: port)
                let refusedClosed = refused.readUntilClosed(within: .seconds(2)).closed
                // One held connection asks for an answer and to close: the server closes it on the
                // event loop (a client's own close is noticed when its connection task reads, which
                // a busy concurrency pool can delay).
                let leaving = held.removeLast()
                leaving.send("GET /replica HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                let left = leaving.readUntilClosed(within: .seconds(2))
                let countAfterLeaving = server.connections.count
                for _ in 0..<250 where server.connections.count > 2 { usleep(20_000) }
                _ = (left, countAfterLeaving)
                let served = try RawConnection(port: port)
                served.send("GET /replica HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                let answer = String(decoding: served.readUntilClosed(within: .seconds(2)).bytes, as: UTF8.self)
                _ = held
                return (counted, refusedClosed, answer, server.connections.count)
            }
            #expect(counted == 3)
            #expect(refusedClosed, "a fourth connection was kept")
            #expect(answer.hasPrefix("HTTP/1.1 200 OK"), "\(answer.prefix(40)); open connections: \(openAfter)")
        }
    }

    /// A client pipelines health checks as fast as it can and never reads an answer: the server
    /// stops reading once its answers wait for the peer. Before, it answered every request it
    /// received into memory (hundreds of thousands in a few seconds, without bound).
    /// Both before and after a routed status request on the same connection.
    @Test(arguments: [false, true])
    func aClientThatNeverReadsIsNotAnsweredWithoutBound(handedOver: Bool) async throws {
        let server = Self.server(ConnectionLimitSettings(requestTimeout: .seconds(30), idleTimeout: .seconds(30)))
        try await server.makeApplication().test(.live) { client in
            let port = try #require(client.port)
            let before = server.fastPathAnswers.value
            // Meanwhile, another client's health checks are answered promptly.
            // (On a thread: blocking calls on the concurrency pool would stall the server's accept loop.)
            async let probe = Self.blocking { () -> Duration in
                var worst = Duration.zero
                for _ in 0..<25 {
                    let started = ContinuousClock.now
                    if let connection = try? RawConnection(port: port) {
                        connection.send("GET /replica HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                        _ = connection.readUntilClosed(within: .seconds(5))
                    }
                    worst = max(worst, ContinuousClock.now - started)
                    usleep(100_000)
                }
                return worst
            }
            let sentRequests = try await Self.blocking { () -> Int in
                let connection = try RawConnection(port: port)
                if handedOver { connection.send("GET /patroni HTTP/1.1\r\nHost: t\r\n\r\n") }
                _ = fcntl(connection.fd, F_SETFL, fcntl(connection.fd, F_GETFL) | O_NONBLOCK)
                let request = Array("GET /replica HTTP/1.1\r\nHost: t\r\n\r\n".utf8)
                let batch = Array((0..<2000).map { _ in request }.joined())
                var sent = 0
                let deadline = ContinuousClock.now + .seconds(3)
                while ContinuousClock.now < deadline {
                    let count = batch.withUnsafeBytes {
                        Glibc.send(connection.fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL))
                    }
                    if count > 0 {
                        sent += count
                    } else {
                        usleep(10_000)
                    }
                }
                return sent / request.count
            }
            let answered = server.fastPathAnswers.value - before
            let worst = try await probe
            print(
                "MEASURE never-reading client: handed_over=\(handedOver) sent=\(sentRequests) answered=\(answered) "
                    + "worst_other_check=\(worst)")
            // Starved would be never (each probe gives up after 5 s); a loaded 2-core machine (CI
            // beside builds) has measured 2.2 s, so the bound is what starvation is not.
            #expect(worst < .seconds(4), "another client's health check took \(worst)")
            // Bounded by the socket buffers and one read's worth, not by what the client sent.
            #expect(answered < 5_000, "\(answered) answers written for a client that reads none (sent \(sentRequests))")
        }
    }
}
