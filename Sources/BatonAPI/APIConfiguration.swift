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

    public init(
        host: String = "127.0.0.1", port: Int = 8008, auth: BasicAuth? = nil, allowlist: [CIDRNetwork] = [],
        maxBodyBytes: Int = 64 * 1024, switchoverTimeout: Duration = .seconds(30),
        switchoverPollInterval: Duration = .milliseconds(500), tls: APIServerTLS? = nil
    ) {
        self.tls = tls
        self.host = host
        self.port = port
        self.auth = auth
        self.allowlist = allowlist
        self.maxBodyBytes = maxBodyBytes
        self.switchoverTimeout = switchoverTimeout
        self.switchoverPollInterval = switchoverPollInterval
    }
}
