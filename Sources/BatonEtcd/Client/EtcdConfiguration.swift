/// How to reach etcd: endpoints, credentials, TLS and deadlines.
public struct EtcdConfiguration: Sendable {
    /// User name and password for etcd's auth (`/v3/auth/authenticate`). The password is never logged.
    public struct Credentials: Sendable, Hashable, CustomStringConvertible {
        public var user: String
        public var password: String

        public init(user: String, password: String) {
            self.user = user
            self.password = password
        }

        public var description: String { "\(user):<redacted>" }
    }

    /// Client URLs such as `http://127.0.0.1:2379`; tried in order, the next one on failure.
    public var endpoints: [String]
    public var credentials: Credentials?
    /// nil for plain HTTP.
    public var tls: EtcdTLSConfiguration?
    /// Total deadline of one call, every retry on every endpoint included (Patroni's `retry_timeout`).
    public var requestTimeout: Duration
    /// Deadline of one TCP/TLS connect.
    public var connectTimeout: Duration
    /// A watch stream that received nothing (not even a progress notification) for this long is
    /// reconnected, resuming where it stopped; this catches members that hang without closing.
    public var watchIdleTimeout: Duration
    /// At most this many transfers run at once (one thread and one connection cache each).
    public var maxConcurrentRequests: Int
    /// At most this many requests wait for a thread; more fail at once, unsent.
    public var maxQueuedRequests: Int
    /// Linearizable reads (a quorum round) by default; serializable reads may be stale.
    public var serializableReads: Bool

    public init(
        endpoints: [String], credentials: Credentials? = nil, tls: EtcdTLSConfiguration? = nil,
        requestTimeout: Duration = .seconds(10), connectTimeout: Duration? = nil,
        watchIdleTimeout: Duration = .seconds(60), maxConcurrentRequests: Int = 16, maxQueuedRequests: Int = 256,
        serializableReads: Bool = false
    ) {
        self.endpoints = endpoints.map { Self.normalize($0, secure: tls != nil) }
        self.credentials = credentials
        self.tls = tls
        self.requestTimeout = requestTimeout
        self.connectTimeout = connectTimeout ?? min(.seconds(2), requestTimeout / 3)
        self.watchIdleTimeout = watchIdleTimeout
        self.maxConcurrentRequests = maxConcurrentRequests
        self.maxQueuedRequests = maxQueuedRequests
        self.serializableReads = serializableReads
    }

    /// Deadlines derived from the HA loop's `retry_timeout`: a call may use all of it, and a single
    /// connect a third of it (at most 2 s), so that every endpoint gets a turn.
    public init(
        endpoints: [String], retryTimeout: Duration, credentials: Credentials? = nil,
        tls: EtcdTLSConfiguration? = nil, maxConcurrentRequests: Int = 16, maxQueuedRequests: Int = 256
    ) {
        self.init(
            endpoints: endpoints, credentials: credentials, tls: tls, requestTimeout: retryTimeout,
            maxConcurrentRequests: maxConcurrentRequests, maxQueuedRequests: maxQueuedRequests)
    }

    /// `host:port` becomes `http://host:port` (or https with TLS); a trailing slash is dropped.
    static func normalize(_ endpoint: String, secure: Bool) -> String {
        var text = endpoint.trimmingSpaces()
        if !text.contains("://") { text = (secure ? "https://" : "http://") + text }
        while text.hasSuffix("/") { text.removeLast() }
        return text
    }
}

extension String {
    func trimmingSpaces() -> String {
        var text = Substring(self)
        while let first = text.first, first.isWhitespace { text.removeFirst() }
        while let last = text.last, last.isWhitespace { text.removeLast() }
        return String(text)
    }
}
