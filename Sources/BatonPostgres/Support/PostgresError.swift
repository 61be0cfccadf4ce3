/// An error from BatonPostgres: what failed (`code`), a message that says where and what to do,
/// PostgreSQL's SQLSTATE when the server sent one, and the underlying cause.
public struct PostgresError: Error, CustomStringConvertible, Sendable {
    /// An extensible error code; compare with the static members.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        public static let connectionFailed = Code("connectionFailed")
        public static let authenticationFailed = Code("authenticationFailed")
        public static let connectTimeout = Code("connectTimeout")
        public static let connectionClosed = Code("connectionClosed")
        public static let serverStarting = Code("serverStarting")
        public static let queryFailed = Code("queryFailed")
        public static let statementTimeout = Code("statementTimeout")
        public static let unexpectedResult = Code("unexpectedResult")
        public static let commandFailed = Code("commandFailed")
        public static let commandTimeout = Code("commandTimeout")
        public static let dataDirectoryMissing = Code("dataDirectoryMissing")
        public static let dataDirectoryNotInitialized = Code("dataDirectoryNotInitialized")
        public static let dataDirectoryNotEmpty = Code("dataDirectoryNotEmpty")
        public static let dataDirectoryPermissions = Code("dataDirectoryPermissions")
        public static let portInUse = Code("portInUse")
        public static let startFailed = Code("startFailed")
        public static let startTimeout = Code("startTimeout")
        public static let stopTimeout = Code("stopTimeout")
        public static let notRunning = Code("notRunning")
        public static let promoteFailed = Code("promoteFailed")
        public static let rewindNotPossible = Code("rewindNotPossible")
        public static let rewindFailed = Code("rewindFailed")
        /// The rewind source is not (yet) a primary whose pg_control names its current timeline:
        /// nothing was changed; try again later (never a reason to re-clone).
        public static let rewindSourceNotReady = Code("rewindSourceNotReady")
        public static let cloneFailed = Code("cloneFailed")
        public static let invalidConfiguration = Code("invalidConfiguration")
        public static let osUserUnknown = Code("osUserUnknown")
        public static let io = Code("io")
        /// Refused while the node is fenced (its lease deadline passed): no start as a primary, no promotion.
        public static let fenced = Code("fenced")
        /// The data directory holds something that is not a usable cluster; nothing was changed.
        public static let dataDirectoryUnusable = Code("dataDirectoryUnusable")
    }

    public var code: Code
    public var message: String
    /// SQLSTATE (e.g. `28P01`) when the server reported one.
    public var sqlState: String?
    public var cause: (any Error)?

    public init(_ code: Code, _ message: String, sqlState: String? = nil, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.sqlState = sqlState
        self.cause = cause
    }

    public var description: String {
        var text = "\(code): \(message)"
        if let sqlState { text += " [SQLSTATE \(sqlState)]" }
        if let cause { text += " (cause: \(cause))" }
        return text
    }
}

/// A failure of a system call, with errno.
struct SystemCallError: Error, CustomStringConvertible {
    var call: String
    var errno: Int32
    var description: String { "\(call) failed: \(errnoDescription(errno)) (errno \(errno))" }
}
