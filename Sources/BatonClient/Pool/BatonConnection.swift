import BatonPostgres
import Synchronization

/// A pooled connection lent to one `read`, `write` or `transaction` body. Use it only inside the
/// body; it goes back to its pool when the body returns.
///
/// Statement errors are `PostgresError` (with SQLSTATE). When the connection itself fails, or the
/// server stops being the primary while the body runs (the client then cuts the connection), the
/// error is a `BatonClientError` (`.connectionLost` / `.primaryChanged`) whose
/// `commitOutcomeUnknown` says whether the statement in flight may have committed.
public final class BatonConnection: Sendable {
    /// The libpq connection, for what this type does not forward (escaping). Statements sent
    /// through it bypass the failure classification above.
    public let postgres: PostgresConnection
    /// `name (host:port)` of the server.
    public let server: String
    public let role: ServerRole
    let pool: HostPool
    let pooled: PooledConnection
    private let broken = Atomic<Bool>(false)

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
        let inTransaction = postgres.isInTransaction
        do {
            let result = try await postgres.query(sql, parameters, timeout: timeout)
            pool.metrics.queries.increment()
            return result
        } catch {
            throw classify(error, mayCommit: Self.mayCommit(sql, inTransaction: inTransaction))
        }
    }

    /// Runs several `;`-separated statements in one round trip (no parameters).
    @discardableResult
    public func queryBatch(_ sql: String, timeout: Duration? = nil) async throws -> [QueryResult] {
        let inTransaction = postgres.isInTransaction
        do {
            let results = try await postgres.queryBatch(sql, timeout: timeout)
            pool.metrics.queries.increment()
            return results
        } catch {
            let mayCommit = !inTransaction || sql.uppercased().contains("COMMIT") || sql.uppercased().contains("END")
            throw classify(error, mayCommit: mayCommit)
        }
    }

    /// Whether the connection failed (it is then closed, not returned to the pool).
    var isBroken: Bool { broken.load(ordering: .relaxed) }

    func markBroken() { broken.store(true, ordering: .relaxed) }

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

    /// Whether a statement cut short may have committed: a COMMIT (or END, PREPARE TRANSACTION,
    /// COMMIT PREPARED) always; outside a transaction block anything but a plain read or a
    /// transaction-control statement that commits nothing.
    static func mayCommit(_ sql: String, inTransaction: Bool) -> Bool {
        let keyword = firstKeyword(sql)
        switch keyword {
        case "COMMIT", "END", "PREPARE": return true
        case "BEGIN", "START", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE", "SET", "RESET", "SHOW": return false
        case "SELECT", "VALUES", "TABLE", "EXPLAIN": return false
        default: return !inTransaction
        }
    }

    static func firstKeyword(_ sql: String) -> String {
        var keyword = ""
        var started = false
        for character in sql.unicodeScalars {
            if character.properties.isAlphabetic {
                started = true
                keyword.unicodeScalars.append(character)
                if keyword.count > 10 { break }
            } else if started {
                break
            }
        }
        return keyword.uppercased()
    }
}
