import NIOCore
import PostgresNIO

/// An error of the client itself: routing, pooling, topology, configuration, and work in flight
/// that a failover or a lost connection cut short. SQL errors of statements the application sent
/// stay postgres-nio's `PSQLError` (with their SQLSTATE in `serverInfo[.sqlState]`).
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
        /// A connection could not be opened (refused, unreachable, TLS or login failed, or not
        /// within `connect_timeout`); the message says which, `cause` has the driver's error.
        public static let connectFailed = Code("connectFailed")
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
        /// The body of `transaction { }` ended the transaction itself (COMMIT, ROLLBACK or PREPARE
        /// TRANSACTION); the client did not commit, and what the body committed is unknown to it.
        public static let transactionEndedInBody = Code("transactionEndedInBody")
        /// The body failed with an error that alone would be safe to retry, but one of its
        /// statements may have committed on its own before (outside a transaction block):
        /// running the body again could repeat that. `cause` has the error.
        public static let partiallyCommitted = Code("partiallyCommitted")
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

extension BatonClientError {
    /// Whether `error` is a failure of the server or the path to it, as opposed to an error in the
    /// statement: these count against a replica's circuit breaker and make a connection unusable.
    /// Class 08 (connection exception) and 57P01–57P03 (admin shutdown, crash shutdown, cannot
    /// connect now) from the server; a closed or failed channel, or a protocol error, from the
    /// driver; a failed connect.
    static func isServerFailure(_ error: any Error) -> Bool {
        if let failure = error as? BatonClientError {
            return failure.code == .connectFailed || failure.code == .connectionLost || failure.code == .roleMismatch
        }
        if let failure = error as? PSQLError {
            switch failure.code {
            case .server:
                guard let state = failure.serverInfo?[.sqlState] else { return false }
                return state.hasPrefix("08") || state == "57P01" || state == "57P02" || state == "57P03"
            case .queryCancelled, .tooManyParameters, .invalidCommandTag, .listenFailed, .unlistenFailed:
                return false
            default:
                // Closed by either side, unclean shutdown, connection error, TLS and protocol
                // failures: the connection is gone.
                return true
            }
        }
        return error is IOError || error is ChannelError || error is NotSent
    }

    /// SQLSTATE of a server error, nil for anything else.
    static func sqlState(of error: any Error) -> String? {
        (error as? PSQLError)?.serverInfo?[.sqlState]
    }
}
