import BatonPostgres
import Synchronization

/// A pooled connection lent to one `read`, `write` or `transaction` body. It goes back to its pool
/// when the body returns; from then on every statement sent through it throws
/// `BatonClientError.connectionReleased` (the connection may already serve another task).
///
/// Statement errors are `PostgresError` (with SQLSTATE). When the connection itself fails, or the
/// server stops being the primary while the body runs (the client then cuts the connection), the
/// error is a `BatonClientError` (`.connectionLost` / `.primaryChanged`) whose
/// `commitOutcomeUnknown` says whether the statement in flight may have committed. Cancelling the
/// task cancels the statement running on the server.
public final class BatonConnection: Sendable {
    /// `name (host:port)` of the server.
    public let server: String
    public let role: ServerRole
    let postgres: PostgresConnection
    let pool: HostPool
    let pooled: PooledConnection
    private let broken = Atomic<Bool>(false)
    private let released = Atomic<Bool>(false)

    init(pool: HostPool, pooled: PooledConnection) {
        self.pool = pool
        self.pooled = pooled
        self.postgres = pooled.postgres
        self.server = pool.server
        self.role = pool.role
    }

    /// Runs one parameterised statement (`$1`, `$2`, … bound to `parameters`; nil is NULL).
    @discardableResult
    public func query(_ sql: String, _ parameters: [String?] = [], timeout: Duration? = nil) async throws -> QueryResult
    {
        try checkLease()
        let inTransaction = postgres.isInTransaction
        let started = ContinuousClock.now
        do {
            let result = try await postgres.query(sql, parameters, timeout: timeout)
            pool.metrics.statement.recordNanoseconds((ContinuousClock.now - started).inNanoseconds)
            pool.metrics.queries.increment()
            return result
        } catch {
            throw classify(error, mayCommit: Self.mayCommit(sql, inTransaction: inTransaction, role: role))
        }
    }

    /// Runs several `;`-separated statements in one round trip (no parameters).
    @discardableResult
    public func queryBatch(_ sql: String, timeout: Duration? = nil) async throws -> [QueryResult] {
        try checkLease()
        let inTransaction = postgres.isInTransaction
        let started = ContinuousClock.now
        do {
            let results = try await postgres.queryBatch(sql, timeout: timeout)
            pool.metrics.statement.recordNanoseconds((ContinuousClock.now - started).inNanoseconds)
            pool.metrics.queries.increment()
            return results
        } catch {
            throw classify(error, mayCommit: Self.batchMayCommit(sql, inTransaction: inTransaction, role: role))
        }
    }

    /// Whether the session is inside a transaction block (also a failed one) after the last
    /// statement that finished.
    public var isInTransaction: Bool { postgres.isInTransaction }

    /// Whether the connection failed (it is then closed, not returned to the pool).
    var isBroken: Bool { broken.load(ordering: .relaxed) }

    func markBroken() { broken.store(true, ordering: .relaxed) }

    /// Ends the lease: every later statement throws `.connectionReleased`.
    func endLease() { released.store(true, ordering: .releasing) }

    private func checkLease() throws {
        guard !released.load(ordering: .acquiring) else {
            throw BatonClientError(
                .connectionReleased,
                "this connection to \(server) was used after the body it was lent to returned, so the statement "
                    + "was not sent (the connection may serve another task now); use it only inside the body",
                server: server)
        }
    }

    private func classify(_ error: any Error, mayCommit: Bool) -> any Error {
        pool.metrics.errors.increment()
        guard let failure = error as? PostgresError, failure.isConnectionFailure else { return error }
        markBroken()
        if let reason = pool.closedReason {
            return BatonClientError(
                reason.code == .primaryChanged ? .primaryChanged : .connectionLost,
                "\(reason.message); the statement in flight was cut short", commitOutcomeUnknown: mayCommit,
                server: server, cause: failure)
        }
        return BatonClientError(
            .connectionLost, "the connection to \(server) failed while in use", commitOutcomeUnknown: mayCommit,
            server: server, cause: failure)
    }

    /// Whether a statement cut short may have committed. On a replica nothing can (a hot standby
    /// writes nothing). Inside a transaction block only a statement that ends it can (`COMMIT`,
    /// `END`, `PREPARE TRANSACTION`); outside one anything can — a `SELECT` may call a function
    /// that writes, `WITH` may hold an `INSERT`, `EXPLAIN ANALYZE` runs its statement — except the
    /// statements that write nothing: transaction control, `SET`/`RESET`/`SHOW`.
    static func mayCommit(_ sql: String, inTransaction: Bool, role: ServerRole = .primary) -> Bool {
        guard role == .primary else { return false }
        let keyword = firstKeyword(sql)
        if inTransaction { return keyword == "COMMIT" || keyword == "END" || keyword == "PREPARE" }
        switch keyword {
        case "BEGIN", "START", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE", "SET", "RESET", "SHOW": return false
        default: return true
        }
    }

    /// `mayCommit` for several statements in one string: outside a transaction block always (each
    /// statement may commit on its own); inside one when any word of it could end the block with
    /// a commit.
    static func batchMayCommit(_ sql: String, inTransaction: Bool, role: ServerRole = .primary) -> Bool {
        guard role == .primary else { return false }
        guard inTransaction else { return true }
        let words = sql.uppercased().split { !$0.isLetter }
        return words.contains { $0 == "COMMIT" || $0 == "END" || $0 == "PREPARE" }
    }

    /// The first SQL keyword, after blanks, `--` and (nested) `/* */` comments and opening
    /// parentheses; uppercased, at most 11 letters.
    static func firstKeyword(_ sql: String) -> String {
        let scalars = Array(sql.unicodeScalars.prefix(4096))
        var index = 0
        var depth = 0
        while index < scalars.count {
            let scalar = scalars[index]
            let next = index + 1 < scalars.count ? scalars[index + 1] : " "
            if depth > 0 {
                if scalar == "*" && next == "/" {
                    depth -= 1
                    index += 2
                } else if scalar == "/" && next == "*" {
                    depth += 1
                    index += 2
                } else {
                    index += 1
                }
            } else if scalar == "/" && next == "*" {
                depth = 1
                index += 2
            } else if scalar == "-" && next == "-" {
                while index < scalars.count && scalars[index] != "\n" { index += 1 }
            } else if scalar.properties.isWhitespace || scalar == "(" || scalar == ";" {
                index += 1
            } else {
                break
            }
        }
        var keyword = ""
        while index < scalars.count, scalars[index].properties.isAlphabetic, keyword.unicodeScalars.count <= 10 {
            keyword.unicodeScalars.append(scalars[index])
            index += 1
        }
        return keyword.uppercased()
    }
}
