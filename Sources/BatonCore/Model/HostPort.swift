/// The one parser of network addresses in Baton: `host`, `host:port`, `[v6]`, `[v6]:port`, and a
/// bare IPv6 address (more than one colon, no brackets: no port). Used for configuration values
/// (`restapi.listen`, etcd hosts), the client's endpoints and members' `conn_url`s.
public struct HostPort: Hashable, Sendable {
    public var host: String
    /// nil when the text names none.
    public var port: Int?

    public init(host: String, port: Int?) {
        self.host = host
        self.port = port
    }

    /// nil when malformed: an empty host, an unclosed bracket, a port that is not a number from 1
    /// to 65535.
    public init?(parsing text: Substring) {
        guard !text.isEmpty else { return nil }
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            var port: Int?
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let value = Self.port(rest.dropFirst()) else { return nil }
                port = value
            }
            guard !host.isEmpty else { return nil }
            self.init(host: String(host), port: port)
            return
        }
        let colons = text.reduce(0) { $0 + ($1 == ":" ? 1 : 0) }
        if colons == 1, let colon = text.firstIndex(of: ":") {
            let host = text[..<colon]
            guard !host.isEmpty, let port = Self.port(text[text.index(after: colon)...]) else { return nil }
            self.init(host: String(host), port: port)
            return
        }
        // No colon, or a bare IPv6 address (which cannot carry a port without brackets).
        self.init(host: String(text), port: nil)
    }

    public init?(parsing text: String) { self.init(parsing: Substring(text)) }

    /// A port: digits only (no sign, no spaces), 1 to 65535.
    static func port(_ text: Substring) -> Int? {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy({ $0.isASCII && $0.isNumber }),
            let value = Int(text), (1...65535).contains(value)
        else { return nil }
        return value
    }

    /// The authority of a URL (`scheme://[user@]host[:port][/path][?query]`), parsed; nil when
    /// there is no `://` or the authority is malformed.
    public init?(url: String) {
        guard let scheme = url.firstRange(of: "://") else { return nil }
        var rest = url[scheme.upperBound...]
        if let end = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) { rest = rest[..<end] }
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        self.init(parsing: rest)
    }
}
