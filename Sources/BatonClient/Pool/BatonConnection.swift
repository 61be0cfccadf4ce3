import PostgresNIO
import Synchronization
import Tracing

/// A pooled postgres-nio connection lent to one `read`, `write` or `transaction` body. It goes
/// back to its pool when the body returns; from then on every statement sent through it throws
/// `BatonClientError.connectionReleased` (the connection may already serve another task).
///
///     try await client.write { conn in
///         try await conn.query("INSERT INTO orders (id, item) VALUES (\(id), \(item))")
///     }
///     let names = try await client.read(consistency: .eventual) { conn in
///         var names: [String] = []
///         for try await (id, name) in try await conn.query("SELECT id, name FROM t").decode((Int, String).self) {
///             names.append(name)
///         }
///         return names
///     }
///
/// Statement errors are postgres-nio's `PSQLError` (SQLSTATE in `serverInfo[.sqlState]`). When
/// the connection itself fails, or the server stops being the primary while the body runs (the
/// client then cuts the connection), the error is a `BatonClientError` (`.connectionLost` /
/// `.primaryChanged`) whose `commitOutcomeUnknown` says whether the statement in flight may have
/// committed. Cancelling the task ends the statement: the connection is closed, and the server
/// stops the statement within a second.
public final class BatonConnection: Sendable {
    /// `name (host:port)` of the server.
    public let server: String
    public let role: ServerRole
    let connection: ServerConnection
    let pool: HostPool
    let pooled: PooledConnection
    private let broken = Atomic<Bool>(false)
    /// The lease: `released` (the top bit) and the number of statements in flight (the rest).
    private let lease = Atomic<UInt64>(0)
    private static let released: UInt64 = 1 << 63
    /// Set once a statement that may commit on its own (outside a transaction block, on the
    /// primary) has been sent: an error after it does not mean that nothing of the body committed.
    private let sentAutocommit = Atomic<Bool>(false)
    /// Whether the last statement sent may commit if cut short, and whether it may commit on its
    /// own (outside a block).
    private let lastMayCommit = Atomic<Bool>(false)
    private let lastAutocommit = Atomic<Bool>(false)

    init(pool: HostPool, pooled: PooledConnection) {
        self.pool = pool
        self.pooled = pooled
        self.connection = pooled.postgres
        self.server = pool.server
        self.role = pool.role
    }

    /// Runs one statement; interpolated values are sent as typed binds
    /// (`"… WHERE id = \(id)"`), never in the SQL text. Decode rows as postgres-nio does
    /// (`rows.decode((Int, String).self)`); a body must consume (or drop) the rows before it
    /// sends the next statement.
    @discardableResult
    public func query(_ query: PostgresQuery) async throws -> PostgresRowSequence {
        try await statement(query.sql) { try await self.connection.query(query, backstop: self.backstop) }
    }

    /// A span for one statement (to its first answer), when spans are on: the SQL text (values
    /// are binds, never in it), the server, the member and its role.
    private func statementSpan(_ sql: String) -> (any Span)? {
        guard let tracer = connection.settings.tracer else { return nil }
        let span = tracer.startSpan("baton.client.statement", ofKind: .client)
        span.attributes["db.system.name"] = "postgresql"
        span.attributes["db.query.text"] = sql
        span.attributes["server.address"] = connection.address
        span.attributes["baton.member"] = server
        span.attributes["baton.role"] = role.rawValue
        return span
    }

    /// Runs a prepared statement (postgres-nio's `PostgresPreparedStatement`: prepared once per
    /// connection, then executed by name) and returns its rows, decoded.
    public func execute<Statement: PostgresPreparedStatement>(
        _ statement: Statement
    ) async throws -> AsyncThrowingMapSequence<PostgresRowSequence, Statement.Row> {
        try await self.statement(Statement.sql) {
            try await self.connection.guarded(self.backstop) {
                try await self.connection.postgres.execute(statement, logger: ServerConnection.quiet)
            }
        }
    }

    /// `COPY table (columns) FROM STDIN`: `writeData` writes the rows (postgres-nio's
    /// `PostgresCopyFromWriter`); throwing from it aborts the copy.
    public func copyFrom(
        table: String, columns: [String] = [], format: PostgresCopyFromFormat = .text(.init()),
        writeData: (PostgresCopyFromWriter) async throws -> Void
    ) async throws {
        try await statement("COPY", spanText: "COPY \(table) FROM STDIN") {
            try await self.connection.copyFrom(table: table, columns: columns, format: format, writeData: writeData)
        }
    }

    /// One statement of the body: counted in flight (refused after the lease), in a span, timed,
    /// and its failure classified with whether it may have committed.
    private func statement<T>(
        _ sql: String, spanText: String? = nil, isolation: isolated (any Actor)? = #isolation,
        _ operation: () async throws -> T
    ) async throws -> T {
        let mayCommit = try begin(sql)
        let span = statementSpan(spanText ?? sql)
        defer {
            span?.end()
            end()
        }
        let started = ContinuousClock.now
        do {
            let value = try await operation()
            recordStatement(since: started)
            succeeded()
            return value
        } catch {
            let classified = classify(error, mayCommit: mayCommit)
            span?.recordError(classified)
            throw classified
        }
    }

    /// `LISTEN channel` for the duration of `consume` (then `UNLISTEN`). On a pooled connection
    /// the subscription ends with the body; `BatonClient.notifications(channel:)` follows the
    /// primary across failovers instead.
    public func listen<Value>(
        on channel: String, consume: (PostgresNotificationSequence) async throws -> Value
    ) async throws -> Value {
        _ = try begin("LISTEN")
        defer { end() }
        do {
            return try await connection.postgres.listen(on: channel, consume: consume)
        } catch {
            throw classify(error, mayCommit: false)
        }
    }

    /// Sends `COMMIT` and returns its command tag: `COMMIT`, or `ROLLBACK` when the transaction
    /// had failed.
    func commit() async throws -> String {
        _ = try begin("COMMIT")
        defer { end() }
        do {
            let result = try await connection.guarded(backstop) {
                try await self.connection.postgres.query("COMMIT", logger: ServerConnection.quiet).get()
            }
            return result.metadata.command
        } catch {
            throw classify(error, mayCommit: role == .primary)
        }
    }

    /// The session's transaction state as the server last reported it (`unknown` while a
    /// statement is in flight).
    public var transactionState: SessionTransactionState { connection.tracker.transaction }

    /// A statement's backstop: the session's statement_timeout ends a slow statement on the
    /// server; a server that does not answer within it plus a second gets its connection cut.
    private var backstop: Duration { connection.settings.statementTimeout + .seconds(1) }

    private func recordStatement(since started: ContinuousClock.Instant) {
        pool.metrics.statement.recordNanoseconds((ContinuousClock.now - started).inNanoseconds)
        pool.metrics.queries.increment()
    }

    /// Whether the connection failed (it is then closed, not returned to the pool).
    var isBroken: Bool { broken.load(ordering: .relaxed) }

    func markBroken() { broken.store(true, ordering: .relaxed) }

    /// Ends the lease: every later statement throws `.connectionReleased`. Returns false when a
    /// statement was still in flight (sent from a task that outlived the body): the connection
    /// must not serve anyone else then.
    @discardableResult
    func endLease() -> Bool {
        lease.bitwiseOr(Self.released, ordering: .acquiringAndReleasing).oldValue & ~Self.released == 0
    }

    /// Whether the last statement sent may commit if cut short.
    var lastStatementMayCommit: Bool { lastMayCommit.load(ordering: .relaxed) }

    /// The error for a body that returned before its last statement's answer was in, when the
    /// connection then failed: whatever the body returned, that statement's outcome is unknown.
    func cutShortError() -> BatonClientError {
        let what =
            connection.isClosed
            ? "the connection to \(server) failed before the body's last statement finished"
            : "the body's last statement on \(server) did not finish within statement_timeout + 1 s; the connection was closed"
        return BatonClientError(
            .connectionLost,
            what + " (its rows were not read to the end; session: \(connection.tracker.counts))",
            commitOutcomeUnknown: lastStatementMayCommit || mayHaveCommitted, server: server)
    }

    /// Waits for the answer to the last statement when the body returned before it was in (its
    /// rows not read to the end); throws `cutShortError()` when the connection failed first or no
    /// answer came within the backstop.
    func awaitLastStatement() async throws {
        let tracker = connection.tracker
        guard tracker.transaction == .unknown else { return }
        let server = connection
        if await tracker.settled(within: backstop, while: { !server.isClosed }) == .unknown {
            markBroken()
            throw cutShortError()
        }
    }

    /// Whether a statement that may commit on its own was sent (see `sentAutocommit`).
    var mayHaveCommitted: Bool { sentAutocommit.load(ordering: .relaxed) }

    /// Counts a statement in flight, refused once the lease ended; returns whether it may commit
    /// if cut short (decided from the transaction state before it).
    private func begin(_ sql: String) throws -> Bool {
        let now = lease.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue
        guard now & Self.released == 0 else {
            lease.wrappingSubtract(1, ordering: .acquiringAndReleasing)
            throw BatonClientError(
                .connectionReleased,
                "this connection to \(server) was used after the body it was lent to returned, so the statement "
                    + "was not sent (the connection may serve another task now); use it only inside the body",
                server: server)
        }
        // With another statement of the body still in flight (`async let`), the state the server
        // last reported may not be the one this statement meets: count it as outside a block.
        let inBlock = now == 1 && connection.tracker.transaction.isBlock
        let mayCommit = Self.mayCommit(sql, inTransaction: inBlock, role: role)
        lastMayCommit.store(mayCommit, ordering: .relaxed)
        lastAutocommit.store(mayCommit && !inBlock, ordering: .relaxed)
        return mayCommit
    }

    /// A statement was handed to the server and answered without error: if it may commit on its
    /// own, an error after it does not mean nothing of the body committed.
    private func succeeded() {
        if lastAutocommit.load(ordering: .relaxed) { sentAutocommit.store(true, ordering: .relaxed) }
    }

    private func end() { lease.wrappingSubtract(1, ordering: .acquiringAndReleasing) }

    /// An error the body let out. A connection failure met while reading a statement's rows (the
    /// statement itself was handed over without error) becomes a `BatonClientError` as the
    /// statement's own would: `.connectionLost`/`.primaryChanged`, with whether the last
    /// statement may have committed. Anything else is returned as it is.
    func escaped(_ error: any Error) -> any Error {
        guard !(error is BatonClientError), !(error is CancellationError), BatonClientError.isServerFailure(error)
        else { return error }
        return classify(error, mayCommit: lastStatementMayCommit)
    }

    private func classify(_ error: any Error, mayCommit: Bool) -> any Error {
        pool.metrics.errors.increment()
        if error is CancellationError {
            // The connection was closed to stop the statement.
            markBroken()
            guard mayCommit else { return error }
            return BatonClientError(
                .connectionLost,
                "the task was cancelled while a statement that may commit was in flight; the connection to "
                    + "\(server) was closed to stop it, so whether it committed is unknown",
                commitOutcomeUnknown: true, server: server, cause: error)
        }
        if let notSent = error as? NotSent {
            markBroken()
            // Cancelled before it went out: the cancellation handler is closing the connection.
            if notSent.cancelled { return CancellationError() }
            return BatonClientError(.connectionLost, "\(notSent)", commitOutcomeUnknown: false, server: server)
        }
        guard BatonClientError.isServerFailure(error) else { return error }
        markBroken()
        if let reason = pool.closedReason {
            return BatonClientError(
                reason.code == .primaryChanged ? .primaryChanged : .connectionLost,
                "\(reason.message); the statement in flight was cut short", commitOutcomeUnknown: mayCommit,
                server: server, cause: error)
        }
        return BatonClientError(
            .connectionLost,
            "the connection to \(server) failed while in use (\(ServerConnection.describe(error)))",
            commitOutcomeUnknown: mayCommit, server: server, cause: error)
    }

    /// Whether a statement cut short may have committed. On a replica nothing can (a hot standby
    /// writes nothing). Inside a transaction block only a statement that ends it can (`COMMIT`,
    /// `END`, `PREPARE TRANSACTION`); outside one anything can — a `SELECT` may call a function
    /// that writes, `WITH` may hold an `INSERT`, `EXPLAIN ANALYZE` runs its statement — except the
    /// statements that write nothing: transaction control, `SET`/`RESET`/`SHOW`.
    static func mayCommit(_ sql: String, inTransaction: Bool, role: ServerRole = .primary) -> Bool {
        guard role == .primary else { return false }
        let keyword = firstKeyword(sql)
        // No keyword found (a comment longer than the scan, say): unknown is not "nothing".
        if keyword.isEmpty { return true }
        if inTransaction { return keyword == "COMMIT" || keyword == "END" || keyword == "PREPARE" }
        switch keyword {
        case "BEGIN", "START", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE", "SET", "RESET", "SHOW", "LISTEN",
            "UNLISTEN":
            return false
        default: return true
        }
    }

    /// The first SQL keyword, after blanks, `--` and (nested) `/* */` comments and opening
    /// parentheses and semicolons, within the first 4096 bytes; uppercased, at most 11 letters.
    /// Blanks are PostgreSQL's (`[ \t\n\r\f\v]`); a keyword is ASCII letters, so text that starts
    /// with anything else has none (empty).
    static func firstKeyword(_ sql: String) -> String {
        if let keyword = sql.utf8.withContiguousStorageIfAvailable({ firstKeyword(bytes: $0) }) { return keyword }
        return Array(sql.utf8.prefix(4096)).withUnsafeBufferPointer { firstKeyword(bytes: $0) }
    }

    private static func firstKeyword(bytes all: UnsafeBufferPointer<UInt8>) -> String {
        let bytes = UnsafeBufferPointer(rebasing: all.prefix(4096))
        let (slash, star, dash, newline) = (UInt8(ascii: "/"), UInt8(ascii: "*"), UInt8(ascii: "-"), UInt8(ascii: "\n"))
        var index = 0
        var depth = 0
        while index < bytes.count {
            let byte = bytes[index]
            let next = index + 1 < bytes.count ? bytes[index + 1] : 0
            if depth > 0 {
                if byte == star && next == slash {
                    depth -= 1
                    index += 2
                } else if byte == slash && next == star {
                    depth += 1
                    index += 2
                } else {
                    index += 1
                }
            } else if byte == slash && next == star {
                depth = 1
                index += 2
            } else if byte == dash && next == dash {
                while index < bytes.count && bytes[index] != newline { index += 1 }
            } else if byte == 0x20 || (0x09...0x0D).contains(byte) || byte == UInt8(ascii: "(")
                || byte == UInt8(ascii: ";")
            {
                index += 1
            } else {
                break
            }
        }
        var keyword: (UInt64, UInt64) = (0, 0)
        var length = 0
        while index < bytes.count, length < 11 {
            let upper = bytes[index] & 0xDF
            guard upper >= UInt8(ascii: "A") && upper <= UInt8(ascii: "Z") else { break }
            withUnsafeMutableBytes(of: &keyword) { $0[length] = upper }
            length += 1
            index += 1
        }
        return withUnsafeBytes(of: keyword) { String(decoding: $0.prefix(length), as: UTF8.self) }
    }
}

extension SessionTransactionState {
    /// Inside a transaction block (also a failed one). `unknown` counts as outside: the more
    /// cautious answer for "may it have committed".
    var isBlock: Bool { self == .open || self == .failed }
}
