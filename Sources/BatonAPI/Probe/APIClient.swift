import NIOHTTP1
import NIOSSL

/// Calls to a member's REST API for operator tools (the `baton` CLI): any method, optional JSON
/// body and Basic credentials, `http://` or `https://` (with a CA and a client certificate).
public struct APIClient: Sendable {
    public struct Reply: Sendable {
        public var status: Int
        public var body: [UInt8]
    }

    let client: PeerHTTPClient

    /// Throws when the TLS files cannot be loaded.
    public init(tls: APIClientTLS? = nil) throws {
        client = PeerHTTPClient(tls: try tls.map { try NIOSSLContext(configuration: $0.configuration()) })
    }

    /// Sends `method` to `url` (`http(s)://host:port/path`) and returns the whole reply.
    public func send(
        _ method: String, url: String, body: [UInt8]? = nil, headers: [(String, String)] = [], timeout: Duration
    ) async throws -> Reply {
        guard let target = PeerHTTPClient.Target(url) else {
            throw PeerHTTPClient.Failure(description: "\(url) is not an http:// or https:// URL")
        }
        let reply = try await client.send(
            HTTPMethod(rawValue: method), to: target, body: body, headers: headers, timeout: timeout)
        return Reply(status: reply.status, body: reply.body)
    }
}
