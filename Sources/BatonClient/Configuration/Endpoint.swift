import BatonCore

/// A PostgreSQL server address: host (name, IPv4 or IPv6) and port.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int = 5432) {
        self.host = host
        self.port = port
    }

    /// Parses `host`, `host:port`, `[v6]` or `[v6]:port` (through BatonCore's `HostPort`); nil when
    /// malformed.
    public init?(parsing text: String, defaultPort: Int = 5432) {
        guard let address = HostPort(parsing: text.trimmed()) else { return nil }
        self.init(host: address.host, port: address.port ?? defaultPort)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

extension String {
    /// Without leading and trailing spaces, tabs and line breaks.
    func trimmed() -> String {
        var text = Substring(self)
        while let first = text.first, first.isWhitespace { text.removeFirst() }
        while let last = text.last, last.isWhitespace { text.removeLast() }
        return String(text)
    }
}
