import BatonPostgres

/// An error of the client itself: routing, pooling, topology, configuration, and work in flight
/// that a failover or a lost connection cut short. SQL errors of statements the application sent
/// stay `PostgresError` (with their SQLSTATE).
public struct BatonClientError: Error, CustomStringConvertible, Sendable {
    /// An extensible error code; compare with the static members.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// The configuration is invalid; the message names the setting and how to fix it.
        public static let invalidConfiguration = Code("invalidConfiguration")
        /// The initial topology could not be read from any source.
        public static let topologyUnavailable = Code("topologyUnavailable")
        /// No writable primary was published and reachable within `primaryWaitTimeout`.
        public static let noPrimary = Code("noPrimary")
        /// The server stopped being the published primary while the connection was in use; the
        /// connection was closed. See `commitOutcomeUnknown`.
        public static let primaryChanged = Code("primaryChanged")
        /// The connection failed while in use. See `commitOutcomeUnknown`.
        public static let connectionLost = Code("connectionLost")
        /// No replica was usable and the policy is `.fail`.
        public static let noReplicaAvailable = Code("noReplicaAvailable")
        /// A host's pool had no free connection within `acquireTimeout`.
        public static let acquireTimeout = Code("acquireTimeout")
        /// A server answered with a role other than the one the topology gave it.
        public static let roleMismatch = Code("roleMismatch")
        /// The client is shutting down or has shut down.
        public static let shutdown = Code("shutdown")
        /// `COMMIT` answered `ROLLBACK`: a statement of the transaction failed (and its error was
        /// caught inside the body), so the server rolled everything back. Nothing committed.
        public static let transactionRolledBack = Code("transactionRolledBack")
        /// The body returned with a transaction block still open (`BEGIN` without `COMMIT`); the
        /// client rolled it back. Nothing of it committed.
        public static let transactionLeftOpen = Code("transactionLeftOpen")
        /// A `BatonConnection` was used after the body it was lent to returned; the connection may
        /// already serve another task, so the statement was not sent.
        public static let connectionReleased = Code("connectionReleased")
    }

    public var code: Code
    public var message: String
    /// For work cut short: true when a statement that may have committed was in flight (on the
    /// primary, anything outside a transaction block, even a `SELECT` that calls a function, and a
    /// `COMMIT`), so the work may or may not have happened and the application must check before
    /// retrying; false when nothing can have committed (safe to retry).
    public var commitOutcomeUnknown: Bool
    /// The server involved (`name (host:port)`), when there is one.
    public var server: String?
    public var cause: (any Error)?

    public init(
        _ code: Code, _ message: String, commitOutcomeUnknown: Bool = false, server: String? = nil,
        cause: (any Error)? = nil
    ) {
        self.code = code
        self.message = message
        self.commitOutcomeUnknown = commitOutcomeUnknown
        self.server = server
        self.cause = cause
    }

    public var description: String {
        var text = "\(code): \(message)"
        if let server { text += " [server \(server)]" }
        if code == .primaryChanged || code == .connectionLost {
            text += commitOutcomeUnknown ? " [commit outcome unknown]" : " [nothing committed]"
        }
        if let cause { text += " (cause: \(cause))" }
        return text
    }

    static func configuration(_ message: String) -> BatonClientError {
        BatonClientError(.invalidConfiguration, message)
    }
}

extension PostgresError {
    /// Failures of the server or the path to it, as opposed to errors in the statement: these
    /// count against a replica's circuit breaker and make a connection unusable.
    var isConnectionFailure: Bool {
        switch code {
        case .connectionFailed, .connectTimeout, .connectionClosed, .serverStarting: return true
        default:
            // Class 08 (connection exception), 57P01-57P03 (admin shutdown, crash shutdown, cannot
            // connect now).
            guard let sqlState else { return false }
            return sqlState.hasPrefix("08") || sqlState == "57P01" || sqlState == "57P02" || sqlState == "57P03"
        }
    }
}
