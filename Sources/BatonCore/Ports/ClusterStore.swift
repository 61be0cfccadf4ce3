/// The port to the distributed configuration store (etcd in production, an in-memory store with
/// TTLs on an injected clock in tests). Both implementations pass one contract suite
/// (`BatonTesting.ClusterStoreContract`).
///
/// The contract, after Patroni's: losing a race or a compare-and-swap is a *return value*
/// (`false`); an unreachable or misbehaving store is an *error* (`StoreError`). Every call returns
/// or throws within the store's deadline; none hangs its caller.
public protocol ClusterStore: Sendable {
    /// Reads the whole scope in one consistent snapshot.
    func loadCluster() async throws -> ClusterView

    // MARK: Sessions (etcd leases)

    /// Creates a session that expires `ttl` after its last renewal unless kept alive.
    func createSession(ttl: Duration) async throws -> SessionID
    /// Renews a session; `.expired` when the store no longer knows it.
    func keepAlive(_ session: SessionID) async throws -> SessionStatus
    /// Ends a session at once, deleting every key attached to it. Unknown sessions are not an error.
    func revokeSession(_ session: SessionID) async throws

    // MARK: Leader key

    /// Creates the leader key with `member` on `session` if no leader key exists.
    func acquireLeader(member: String, session: SessionID) async throws -> Bool
    /// Rewrites the leader key onto `session` only if it still names `member`.
    func reattachLeader(member: String, session: SessionID) async throws -> Bool
    /// Deletes the leader key only if it still names `member`.
    func releaseLeader(member: String) async throws -> Bool

    // MARK: Member keys

    /// Writes `members/<name>` on `session`.
    func publishMember(_ member: Member, session: SessionID) async throws
    func removeMember(name: String) async throws

    // MARK: Cluster-wide keys (compare-and-swap on the modification revision)

    /// Creates the `initialize` key with `systemID` if it does not exist (the bootstrap race).
    func claimInitialize(systemID: String) async throws -> Bool
    /// Overwrites the `initialize` key if its revision is still `expected`.
    func updateInitialize(systemID: String, expected: Int64) async throws -> Bool
    /// Deletes the `initialize` key (a failed bootstrap lets the next node try).
    func cancelInitialize() async throws

    /// Writes the `config` key; `expected` nil means it must not exist yet.
    func writeConfig(_ config: DynamicConfig, expected: Int64?) async throws -> Bool
    /// Writes the `failover` key; `expected` nil means it must not exist yet.
    func writeFailover(_ request: FailoverRequest, expected: Int64?) async throws -> Bool
    /// Deletes the `failover` key; with `expected`, only if its revision is still that.
    func deleteFailover(expected: Int64?) async throws -> Bool
    /// Writes the `sync` key; `expected` nil means it must not exist yet.
    func writeSync(_ state: SyncState, expected: Int64?) async throws -> Bool
    func deleteSync(expected: Int64?) async throws -> Bool

    /// Unconditional writes of keys only the leader writes.
    func writeHistory(_ history: [HistoryEntry]) async throws
    func writeStatus(_ status: LeaderStatus) async throws
    func writeFailsafe(_ members: [String: String]?) async throws

    /// Changes under the scope after `revision`, in order, without gaps or repeats; the stream
    /// resumes by itself after dropped connections, and yields `.resync` when events were lost
    /// (compaction) so the caller re-reads with `loadCluster()`. Ends when the task is cancelled.
    func watch(after revision: Int64) -> AsyncStream<StoreEvent>
    /// Bounds every later request by `timeout` (the dynamic `retry_timeout` in force).
    func setRequestTimeout(_ timeout: Duration)
}

/// The state of a session after a keepalive.
public enum SessionStatus: Hashable, Sendable {
    case alive(ttl: Duration)
    case expired
}

/// A change under the scope.
public enum StoreEvent: Hashable, Sendable {
    case put(key: ClusterKey, revision: Int64)
    case delete(key: ClusterKey, revision: Int64)
    /// Events were lost (compaction, or a gap the store could not bridge): re-read everything.
    case resync(reason: String)

    public var key: ClusterKey? {
        switch self {
        case .put(let key, _), .delete(let key, _): return key
        case .resync: return nil
        }
    }
}

/// The keys of a scope, in Patroni's layout.
public enum ClusterKey: Hashable, Sendable, CustomStringConvertible {
    case leader, initialize, config, failover, sync, history, status, failsafe
    case member(String)
    case other(String)

    /// The path below `/<namespace>/<scope>/`.
    public var path: String {
        switch self {
        case .leader: return "leader"
        case .initialize: return "initialize"
        case .config: return "config"
        case .failover: return "failover"
        case .sync: return "sync"
        case .history: return "history"
        case .status: return "status"
        case .failsafe: return "failsafe"
        case .member(let name): return "members/" + name
        case .other(let path): return path
        }
    }

    public init(path: String) {
        switch path {
        case "leader": self = .leader
        case "initialize": self = .initialize
        case "config": self = .config
        case "failover": self = .failover
        case "sync": self = .sync
        case "history": self = .history
        case "status": self = .status
        case "failsafe": self = .failsafe
        default:
            if path.hasPrefix("members/"), path.count > "members/".count {
                self = .member(String(path.dropFirst("members/".count)))
            } else {
                self = .other(path)
            }
        }
    }

    public var description: String { path }
}

/// Why a store operation failed. Losing a compare-and-swap is never a `StoreError`.
public struct StoreError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        /// No endpoint answered (connection refused, timed out, or every member unavailable).
        public static let unavailable = Code(rawValue: "unavailable")
        /// The request did not complete within its deadline.
        public static let timeout = Code(rawValue: "timeout")
        /// Never sent: this process had too many requests waiting for the store already.
        public static let overloaded = Code(rawValue: "overloaded")
        public static let leaseNotFound = Code(rawValue: "lease not found")
        /// The requested revision was compacted away.
        public static let compacted = Code(rawValue: "compacted")
        /// Credentials refused, or permission denied.
        public static let auth = Code(rawValue: "auth")
        /// The reply could not be understood (truncated, not JSON, missing fields).
        public static let malformedReply = Code(rawValue: "malformed reply")
        /// The store refused the request as invalid.
        public static let invalidRequest = Code(rawValue: "invalid request")
        /// TLS setup or verification failed.
        public static let tls = Code(rawValue: "tls")
        public static let other = Code(rawValue: "other")
        public var description: String { rawValue }
    }

    public var code: Code
    /// What failed, in words an operator can act on.
    public var message: String
    /// The endpoint involved, if any.
    public var endpoint: String?
    /// The store's own error code (gRPC code for etcd), if any.
    public var remoteCode: Int?

    public init(_ code: Code, _ message: String, endpoint: String? = nil, remoteCode: Int? = nil) {
        self.code = code
        self.message = message
        self.endpoint = endpoint
        self.remoteCode = remoteCode
    }

    public var description: String {
        var text = "store \(code): \(message)"
        if let endpoint { text += " (endpoint \(endpoint))" }
        if let remoteCode { text += " [code \(remoteCode)]" }
        return text
    }
}

extension ClusterStore {
    public func setRequestTimeout(_ timeout: Duration) {}
}
