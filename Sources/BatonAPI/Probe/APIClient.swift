import BatonHTTP
import NIOSSL

/// Calls to a member's REST API for operator tools (the `baton` CLI): any method, optional JSON
/// body and Basic credentials, `http://` or `https://` (with a CA and a client certificate).
public struct APIClient: Sendable {
    public typealias Reply = BatonHTTP.Reply

    let tls: TLSConfiguration?

    /// Throws when the TLS files cannot be loaded.
    public init(tls: APIClientTLS? = nil) throws {
        self.tls = try tls?.configuration()
    }

    /// Sends `method` to `url` (`http(s)://host:port/path`) and returns the whole reply.
    public func send(
        _ method: String, url: String, body: [UInt8]? = nil, headers: [(String, String)] = [], timeout: Duration
    ) async throws -> Reply {
        try await BatonHTTP.send(method, url: url, body: body, headers: headers, tls: tls, timeout: timeout)
    }
}
