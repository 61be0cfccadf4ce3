import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A minimal HTTP/1.1 client for peer-to-peer calls: one request per connection, a hard
/// deadline on the whole exchange, a cap on the response size. `https://` URLs go through TLS
/// with the client's `tls` context (the system trust store when none was given).
struct PeerHTTPClient: Sendable {
    struct Reply: Sendable {
        var status: Int
        var body: [UInt8]
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// A parsed `http://host:port/path` or `https://host:port/path` URL.
    struct Target: Hashable, Sendable {
        var host: String
        var port: Int
        var path: String
        var secure = false

        init?(_ url: String) {
            let secure = url.hasPrefix("https://")
            guard url.hasPrefix("http://") || secure else { return nil }
            self.secure = secure
            var rest = Substring(url.dropFirst(secure ? "https://".count : "http://".count))
            var path = "/"
            if let slash = rest.firstIndex(of: "/") {
                path = String(rest[slash...])
                rest = rest[..<slash]
            }
            if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
            var port = secure ? 443 : 80
            if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
                let after = rest[rest.index(after: close)...]
                if after.hasPrefix(":") {
                    guard let value = Int(after.dropFirst()) else { return nil }
                    port = value
                }
                rest = rest[rest.index(after: rest.startIndex)..<close]
            } else if let colon = rest.lastIndex(of: ":") {
                guard let value = Int(rest[rest.index(after: colon)...]) else { return nil }
                port = value
                rest = rest[..<colon]
            }
            guard !rest.isEmpty, (1...65535).contains(port) else { return nil }
            self.host = String(rest)
            self.port = port
            self.path = path
        }

        /// The same server with another path (`/patroni` → `/failsafe`).
        func with(path: String) -> Target {
            var copy = self
            copy.path = path
            return copy
        }

        var hostHeader: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    var group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    var maxResponseBytes = 1 << 20
    /// The TLS context for `https://` targets; nil: the system's trust store, no client certificate.
    var tls: NIOSSLContext?

    init(tls: NIOSSLContext? = nil) {
        self.tls = tls
    }

    /// Sends one request and reads the whole reply, all within `timeout`.
    func send(
        _ method: HTTPMethod, to target: Target, body: [UInt8]? = nil, headers: [(String, String)] = [],
        timeout: Duration
    ) async throws -> Reply {
        try await withThrowingTaskGroup(of: Reply.self) { group in
            group.addTask { try await exchange(method, target, body: body, headers: headers, timeout: timeout) }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw Failure(description: "no reply from \(target.hostHeader) within \(timeout)")
            }
            defer { group.cancelAll() }
            guard let reply = try await group.next() else {
                throw Failure(description: "request to \(target.hostHeader) ended without a reply")
            }
            return reply
        }
    }

    private func exchange(
        _ method: HTTPMethod, _ target: Target, body: [UInt8]?, headers extra: [(String, String)], timeout: Duration
    ) async throws -> Reply {
        let milliseconds = max(
            1, timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        let context: NIOSSLContext? =
            target.secure ? try tls ?? NIOSSLContext(configuration: .makeClientConfiguration()) : nil
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(.milliseconds(milliseconds))
            .connect(host: target.host, port: target.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let context {
                        // An IP address is checked against the certificate's IP SANs; SNI only for names.
                        let isAddress = (try? SocketAddress(ipAddress: target.host, port: 0)) != nil
                        let handler = try NIOSSLClientHandler(
                            context: context, serverHostname: isAddress ? nil : target.host)
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
                        wrappingChannelSynchronously: channel)
                }
            }
        let limit = maxResponseBytes
        return try await withTaskCancellationHandler {
            try await channel.executeThenClose { inbound, outbound in
                var headers = HTTPHeaders()
                headers.add(name: "Host", value: target.hostHeader)
                headers.add(name: "User-Agent", value: "Baton")
                headers.add(name: "Connection", value: "close")
                headers.add(name: "Accept", value: "application/json")
                for (name, value) in extra { headers.add(name: name, value: value) }
                if let body {
                    headers.add(name: "Content-Type", value: "application/json")
                    headers.add(name: "Content-Length", value: String(body.count))
                }
                try await outbound.write(
                    .head(HTTPRequestHead(version: .http1_1, method: method, uri: target.path, headers: headers)))
                if let body { try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body)))) }
                try await outbound.write(.end(nil))
                var status: Int?
                var received: [UInt8] = []
                for try await part in inbound {
                    switch part {
                    case .head(let head):
                        status = Int(head.status.code)
                    case .body(let buffer):
                        guard received.count + buffer.readableBytes <= limit else {
                            throw Failure(description: "reply from \(target.hostHeader) exceeds \(limit) bytes")
                        }
                        received += buffer.readableBytesView
                    case .end:
                        guard let status else { throw Failure(description: "reply without a status line") }
                        return Reply(status: status, body: received)
                    }
                }
                throw Failure(description: "\(target.hostHeader) closed the connection before the reply ended")
            }
        } onCancel: {
            channel.channel.close(promise: nil)
        }
    }
}
