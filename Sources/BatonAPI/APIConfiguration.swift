import NIOPosix
import Synchronization

/// How the REST API listens (plain HTTP, or TLS with optional client-certificate checks) and
/// whom it lets change things.
public struct APIConfiguration: Sendable {
    /// Credentials for HTTP Basic auth on unsafe methods (PUT, POST, PATCH, DELETE).
    public struct BasicAuth: Sendable, CustomStringConvertible {
        public var username: String
        public var password: String

        public init(username: String, password: String) {
            self.username = username
            self.password = password
        }

        /// Never prints the password.
        public var description: String { "BasicAuth(username: \(username), password: <redacted>)" }
    }

    public var host: String
    public var port: Int
    /// When set, unsafe methods require these credentials (401 otherwise).
    public var auth: BasicAuth?
    /// When non-empty, unsafe methods are accepted only from clients in these networks (403 otherwise).
    public var allowlist: [CIDRNetwork]
    /// Larger request bodies are refused with 413.
    public var maxBodyBytes: Int
    /// How long `POST /switchover` and `POST /failover` wait for the new leader before answering 503.
    public var switchoverTimeout: Duration
    /// How often they look at the store while waiting.
    public var switchoverPollInterval: Duration
    /// TLS; nil for plain HTTP.
    public var tls: APIServerTLS?
    /// Event-loop threads serving connections. One (the default) serves well over 10,000 health
    /// checks a second and leaves the other cores to the HA loop, postgres and the load balancer's
    /// own work, so that request load does not slow the HA cycle.
    public var threads: Int
    /// Connection cap, request and idle timeouts.
    public var limits: ConnectionLimitSettings
    /// Headers added to every answer (Patroni's `http_extra_headers`, and with TLS also
    /// `https_extra_headers`), checked by `ExtraHeaders.problem`.
    public var extraHeaders: [(name: String, value: String)] = []
    /// Patroni's `allowlist_include_members`: unsafe methods are also accepted from the address
    /// of each member's `api_url` (an IP address; a host name there is not resolved).
    public var allowlistIncludeMembers = false
    /// Patroni's `request_queue_size`: the listen backlog (connections not yet accepted).
    public var backlog = 256

    public init(
        host: String = "127.0.0.1", port: Int = 8008, auth: BasicAuth? = nil, allowlist: [CIDRNetwork] = [],
        maxBodyBytes: Int = 64 * 1024, switchoverTimeout: Duration = .seconds(30),
        switchoverPollInterval: Duration = .milliseconds(500), tls: APIServerTLS? = nil, threads: Int = 1,
        limits: ConnectionLimitSettings = ConnectionLimitSettings()
    ) {
        self.limits = limits
        self.tls = tls
        self.threads = max(1, threads)
        self.host = host
        self.port = port
        self.auth = auth
        self.allowlist = allowlist
        self.maxBodyBytes = maxBodyBytes
        self.switchoverTimeout = switchoverTimeout
        self.switchoverPollInterval = switchoverPollInterval
    }
}

/// The event-loop groups of the REST API, one per thread count, made on first use and kept for the
/// life of the process (servers of one process share them).
enum APIEventLoops {
    private static let groups = Mutex<[Int: MultiThreadedEventLoopGroup]>([:])

    static func group(threads: Int) -> MultiThreadedEventLoopGroup {
        groups.withLock { groups in
            if let group = groups[threads] { return group }
            let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
            groups[threads] = group
            return group
        }
    }
}

/// Patroni's `http_extra_headers`/`https_extra_headers`: what a header may be.
public enum ExtraHeaders {
    /// Headers that frame or route the answer, which the server sets itself.
    static let reserved: Set<String> = [
        "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "date", "server",
        "content-type", "trailer", "te", "proxy-connection", "www-authenticate",
    ]

    /// Why `name: value` cannot be an extra header, or nil.
    public static func problem(name: String, value: String) -> String? {
        let token = "!#$%&'*+-.^_`|~"
        guard !name.isEmpty, name.utf8.count <= 100,
            name.unicodeScalars.allSatisfy({
                $0.isASCII
                    && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || token.unicodeScalars.contains($0))
            })
        else { return "'\(name)' is not a header name (letters, digits and !#$%&'*+-.^_`|~)" }
        guard !reserved.contains(name.lowercased()) else {
            return "'\(name)' is set by the server itself and cannot be replaced"
        }
        guard value.utf8.count <= 4096,
            !value.unicodeScalars.contains(where: { ($0.value < 0x20 && $0 != "\t") || $0.value == 0x7F })
        else { return "the value of '\(name)' contains a line break or another control character" }
        return nil
    }
}
