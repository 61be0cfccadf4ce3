import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import NIOSSL

/// Baton's one HTTP client for calls to members' REST APIs: the agent's peer probes and failsafe
/// confirmations, the `baton` CLI, and BatonClient's REST topology source. AsyncHTTPClient
/// underneath (connection pooling, TLS, HTTP/1.1 parsing); this adds what every caller needs the
/// same way: one deadline on the whole exchange (head and body), a cap on the reply's size, no
/// redirects (a member that answers with one is not followed elsewhere with our credentials), and
/// an error that names the URL.
///
/// etcd is not called through this: the agent's etcd client is libcurl's (design card).
public enum BatonHTTP {
    /// A member's whole reply.
    public struct Reply: Sendable {
        public var status: Int
        public var body: [UInt8]
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// The process's client: created on first use, never shut down (it lives as long as the
    /// process), on NIO's shared event loops.
    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        // Idle keep-alive connections to members are closed well before a member's own idle
        // timeout (restapi.idle_timeout, 60 s by default) would close them under a request.
        configuration.connectionPool = .init(idleTimeout: .seconds(20))
        configuration.httpVersion = .http1Only
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    /// The largest reply read (a status or cluster document is a few KB).
    public static let maxReplyBytes = 1 << 20

    /// Sends one request and reads the whole reply, all within `timeout`.
    ///
    /// - Parameters:
    ///   - url: `http://host:port/path` or `https://host:port/path`.
    ///   - tls: for `https://` URLs: whom to trust and the client certificate; nil: the system's
    ///     trust store and no client certificate.
    public static func send(
        _ method: String, url: String, body: [UInt8]? = nil, headers: [(String, String)] = [],
        tls: TLSConfiguration? = nil, timeout: Duration
    ) async throws -> Reply {
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
            throw Failure("\(url) is not an http:// or https:// URL")
        }
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method)
        request.tlsConfiguration = tls
        request.headers.add(name: "User-Agent", value: "Baton")
        request.headers.add(name: "Accept", value: "application/json")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let deadline = NIODeadline.now() + .nanoseconds(nanoseconds(timeout))
        let prepared = request
        return try await withThrowingTaskGroup(of: Reply.self) { group in
            group.addTask {
                let response = try await client.execute(prepared, deadline: deadline)
                var buffer = try await response.body.collect(upTo: maxReplyBytes)
                return Reply(
                    status: Int(response.status.code), body: buffer.readBytes(length: buffer.readableBytes) ?? [])
            }
            // The client's deadline covers the reply's head; this one covers the body too.
            group.addTask {
                try await Task.sleep(for: timeout)
                throw Failure("no reply from \(url) within \(timeout)")
            }
            defer { group.cancelAll() }
            do {
                guard let reply = try await group.next() else { throw Failure("no reply from \(url)") }
                return reply
            } catch let error as Failure {
                throw error
            } catch let error as NIOTooManyBytesError {
                throw Failure("the reply from \(url) exceeds \(maxReplyBytes) bytes (\(error))")
            } catch let error as HTTPClientError where error == .deadlineExceeded || error == .connectTimeout {
                throw Failure("no reply from \(url) within \(timeout)")
            } catch {
                throw Failure("\(url): \(error)")
            }
        }
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        guard seconds < Int64.max / 1_000_000_000 - 1 else { return Int64.max / 2 }
        return max(1, seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
