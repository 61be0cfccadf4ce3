import CLibPQ
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One libpq connection. Every libpq call on its `PGconn` runs on the connection's own thread (one
/// owner per handle, never Swift's cooperative pool); callers simply `await`.
///
/// Deadlines: connecting is a `PQconnectStartParams`/`PQconnectPoll` loop waiting on the socket with
/// `poll(2)` until `connectTimeout`; statements run under the session's `statement_timeout`, and a
/// client-side `PQcancel` fires shortly after it when the server stays silent.
public final class PostgresConnection: Sendable {
    public let parameters: ConnectionParameters
    /// The server this connection reached (`host:port`): with `alternateHosts`, the one libpq chose.
    public let server: String
    private let thread: BlockingThread
    private let handle: Handle
    private let canceller: Canceller

    private init(
        parameters: ConnectionParameters, server: String, thread: BlockingThread, handle: Handle, canceller: Canceller
    ) {
        self.parameters = parameters
        self.server = server
        self.thread = thread
        self.handle = handle
        self.canceller = canceller
    }

    deinit {
        let handle = self.handle
        let canceller = self.canceller
        thread.submit {
            canceller.free()
            handle.finish()
        }
        thread.stop()
    }

    /// Connects, or throws a `PostgresError` naming the server, the user and what to check.
    public static func connect(_ parameters: ConnectionParameters) async throws -> PostgresConnection {
        let thread = BlockingThread(name: "baton.pg \(parameters.host):\(parameters.port)")
        let handle = Handle()
        let canceller = Canceller()
        let server: String
        do {
            server = try await thread.run {
                let conn = try Handle.open(parameters)
                handle.conn = conn
                canceller.set(PQgetCancel(conn), socket: PQsocket(conn))
                let host = PQhost(conn).map { String(cString: $0) } ?? parameters.host
                let port = PQport(conn).map { String(cString: $0) } ?? String(parameters.port)
                return "\(host):\(port)"
            }
        } catch {
            thread.stop()
            throw error
        }
        return PostgresConnection(
            parameters: parameters, server: server, thread: thread, handle: handle, canceller: canceller)
    }

    /// Cuts the connection from any thread at once: the socket is shut down, so a statement in
    /// flight fails now with `connectionClosed` (instead of waiting for the server or TCP
    /// keepalives) and so does every later one. Used to abandon a server that is no longer wanted.
    public func interrupt() {
        canceller.shutdownSocket()
    }

    /// Runs one parameterised statement (`$1`, `$2`, … bound to `parameters`; nil is NULL).
    public func query(_ sql: String, _ parameters: [String?] = [], timeout: Duration? = nil) async throws -> QueryResult
    {
        let handle = self.handle
        let deadline = cancelDeadline(timeout)
        return try await thread.run {
            defer { handle.noteTransactionStatus() }
            return try deadline.guarding { try handle.execParams(sql, parameters) }
        }
    }

    /// Whether the session is inside a transaction block (also a failed one) after the last
    /// statement that finished: libpq's `PQtransactionStatus`.
    public var isInTransaction: Bool { handle.transactionOpen.load(ordering: .acquiring) }

    /// Runs several `;`-separated statements in one round trip (simple query protocol, no
    /// parameters) and returns one result per statement.
    public func queryBatch(_ sql: String, timeout: Duration? = nil) async throws -> [QueryResult] {
        let handle = self.handle
        let deadline = cancelDeadline(timeout)
        return try await thread.run {
            defer { handle.noteTransactionStatus() }
            return try deadline.guarding { try handle.execBatch(sql) }
        }
    }

    /// Quotes `text` as an SQL literal, for the few statements that take no parameters
    /// (`CREATE ROLE … PASSWORD`).
    public func escapeLiteral(_ text: String) async throws -> String {
        let handle = self.handle
        return try await thread.run { try handle.escape(text, identifier: false) }
    }

    /// The SCRAM-SHA-256 verifier of `password` for `user`, computed here by libpq
    /// (`PQencryptPasswordConn`): what `CREATE/ALTER ROLE … PASSWORD` is given instead of the
    /// password, so that the password never appears in SQL text (a statement log, pg_stat_statements,
    /// pg_stat_activity).
    public func scramVerifier(password: String, user: String) async throws -> String {
        let handle = self.handle
        return try await thread.run { try handle.encryptPassword(password, user: user) }
    }

    /// Creates the role or sets its password, sending only the SCRAM verifier.
    public func setRolePassword(_ role: String, password: String, attributes: String, create: Bool) async throws {
        let verifier = try await scramVerifier(password: password, user: role)
        let name = try await escapeIdentifier(role)
        let literal = try await escapeLiteral(verifier)
        _ = try await query("\(create ? "CREATE" : "ALTER") ROLE \(name) WITH \(attributes) PASSWORD \(literal)")
    }

    public func escapeIdentifier(_ text: String) async throws -> String {
        let handle = self.handle
        return try await thread.run { try handle.escape(text, identifier: true) }
    }

    /// True while libpq considers the connection usable.
    public func isHealthy() async -> Bool {
        let handle = self.handle
        return (try? await thread.run { handle.isHealthy }) ?? false
    }

    public func close() async {
        let handle = self.handle
        let canceller = self.canceller
        _ = try? await thread.run {
            canceller.free()
            handle.finish()
        }
    }

    private func cancelDeadline(_ timeout: Duration?) -> CancelDeadline {
        // The server's statement_timeout normally ends a slow statement; PQcancel is the backstop.
        CancelDeadline(limit: (timeout ?? parameters.statementTimeout) + .milliseconds(500), canceller: canceller)
    }
}

/// Arms a PQcancel timer while one statement runs on the connection's thread (armed when the
/// statement starts, not when it is queued, so it can never cancel a later statement).
struct CancelDeadline: Sendable {
    let limit: Duration
    let canceller: PostgresConnection.Canceller

    func guarding<T>(_ body: () throws -> T) rethrows -> T {
        let canceller = self.canceller
        let item = DispatchWorkItem { canceller.cancel() }
        PostgresConnection.Canceller.timerQueue.asyncAfter(deadline: .now() + limit.secondsDouble, execute: item)
        defer { item.cancel() }
        return try body()
    }
}

extension PostgresConnection {
    /// The `PGconn`; touched only on the connection's thread.
    final class Handle: @unchecked Sendable {
        var conn: OpaquePointer?
        /// `PQtransactionStatus` after the last statement, readable from any thread.
        let transactionOpen = Atomic<Bool>(false)

        func noteTransactionStatus() {
            let status = conn.map { PQtransactionStatus($0) }
            transactionOpen.store(status == PQTRANS_INTRANS || status == PQTRANS_INERROR, ordering: .releasing)
        }

        var isHealthy: Bool {
            guard let conn else { return false }
            return PQstatus(conn) == CONNECTION_OK
        }

        func finish() {
            if let conn { PQfinish(conn) }
            conn = nil
        }

        static func open(_ parameters: ConnectionParameters) throws -> OpaquePointer {
            let deadline = ContinuousClock.now + parameters.connectTimeout
            let pairs = parameters.keywordValues
            let keys = pairs.map { strdup($0.0) }
            let values = pairs.map { strdup($0.1) }
            defer {
                for key in keys { free(key) }
                for value in values { free(value) }
            }
            let keyPointers: [UnsafePointer<CChar>?] = keys.map { UnsafePointer($0) } + [nil]
            let valuePointers: [UnsafePointer<CChar>?] = values.map { UnsafePointer($0) } + [nil]
            guard let conn = PQconnectStartParams(keyPointers, valuePointers, 0) else {
                throw PostgresError(.connectionFailed, "libpq could not allocate a connection to \(parameters)")
            }
            if PQstatus(conn) == CONNECTION_BAD {
                let error = connectError(conn, parameters)
                PQfinish(conn)
                throw error
            }
            var state = PGRES_POLLING_WRITING
            // Bounded by `deadline`: each turn waits on the socket at most until then.
            while true {
                if state == PGRES_POLLING_OK {
                    PQsetNoticeProcessor(conn, { _, _ in }, nil)
                    return conn
                }
                if state == PGRES_POLLING_FAILED {
                    let error = connectError(conn, parameters)
                    PQfinish(conn)
                    throw error
                }
                let remaining = deadline - ContinuousClock.now
                if remaining <= .zero {
                    PQfinish(conn)
                    throw PostgresError(
                        .connectTimeout,
                        "connecting to \(parameters) took longer than \(parameters.connectTimeout); "
                            + "check that PostgreSQL is up and the address is reachable")
                }
                var descriptor = pollfd(
                    fd: PQsocket(conn),
                    events: Int16(state == PGRES_POLLING_READING ? POLLIN : POLLOUT),
                    revents: 0)
                let ready = poll(&descriptor, 1, Int32(clamping: max(1, remaining.milliseconds)))
                if ready < 0 && errno != EINTR {
                    let code = errno
                    PQfinish(conn)
                    throw PostgresError(
                        .connectionFailed, "waiting for the connection to \(parameters) failed",
                        cause: SystemCallError(call: "poll", errno: code))
                }
                if ready > 0 { state = PQconnectPoll(conn) }
            }
        }

        /// Classifies libpq's connection error text into a code, an SQLSTATE and advice.
        static func connectError(_ conn: OpaquePointer, _ parameters: ConnectionParameters) -> PostgresError {
            let text = String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines)
            return classifyConnectError(text, parameters)
        }

        func execParams(_ sql: String, _ parameters: [String?]) throws -> QueryResult {
            guard let conn else { throw PostgresError(.connectionClosed, "the connection is closed; reconnect") }
            let values = parameters.map { $0.map { strdup($0) } ?? nil }
            defer { for value in values { free(value) } }
            let pointers: [UnsafePointer<CChar>?] = values.map { $0.map { UnsafePointer($0) } }
            let result = pointers.withUnsafeBufferPointer { buffer in
                PQexecParams(conn, sql, Int32(parameters.count), nil, buffer.baseAddress, nil, nil, 0)
            }
            guard let result else { throw lostConnection(conn) }
            defer { PQclear(result) }
            return try Handle.decode(result, conn: conn)
        }

        func execBatch(_ sql: String) throws -> [QueryResult] {
            guard let conn else { throw PostgresError(.connectionClosed, "the connection is closed; reconnect") }
            guard PQsendQuery(conn, sql) == 1 else { throw lostConnection(conn) }
            var results: [QueryResult] = []
            var firstError: (any Error)?
            // PQgetResult returns nil after the last result; 1000 is far above any batch we send.
            for _ in 0..<1000 {
                guard let result = PQgetResult(conn) else { break }
                do { results.append(try Handle.decode(result, conn: conn)) } catch {
                    if firstError == nil { firstError = error }
                }
                PQclear(result)
            }
            if let firstError { throw firstError }
            if PQstatus(conn) != CONNECTION_OK { throw lostConnection(conn) }
            return results
        }

        func escape(_ text: String, identifier: Bool) throws -> String {
            guard let conn else { throw PostgresError(.connectionClosed, "the connection is closed; reconnect") }
            let bytes = Array(text.utf8CString)
            let escaped = bytes.withUnsafeBufferPointer { buffer in
                identifier
                    ? PQescapeIdentifier(conn, buffer.baseAddress, bytes.count - 1)
                    : PQescapeLiteral(conn, buffer.baseAddress, bytes.count - 1)
            }
            guard let escaped else {
                throw PostgresError(.queryFailed, "could not escape a value: \(String(cString: PQerrorMessage(conn)))")
            }
            defer { PQfreemem(escaped) }
            return String(cString: escaped)
        }

        func encryptPassword(_ password: String, user: String) throws -> String {
            guard let conn else { throw PostgresError(.connectionClosed, "the connection is closed; reconnect") }
            guard let encrypted = PQencryptPasswordConn(conn, password, user, "scram-sha-256") else {
                throw PostgresError(
                    .queryFailed,
                    "could not compute the SCRAM verifier of \(user)'s password: "
                        + String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines))
            }
            defer { PQfreemem(encrypted) }
            return String(cString: encrypted)
        }

        private func lostConnection(_ conn: OpaquePointer) -> PostgresError {
            let text = String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines)
            return PostgresError(.connectionClosed, "the connection to PostgreSQL was lost: \(text); reconnect")
        }

        static func decode(_ result: OpaquePointer, conn: OpaquePointer) throws -> QueryResult {
            let status = PQresultStatus(result)
            switch status {
            case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_SINGLE_TUPLE:
                let columnCount = PQnfields(result)
                let rowCount = PQntuples(result)
                let columns = (0..<columnCount).map { String(cString: PQfname(result, $0)) }
                var rows: [[String?]] = []
                rows.reserveCapacity(Int(rowCount))
                for row in 0..<rowCount {
                    rows.append(
                        (0..<columnCount).map { column in
                            PQgetisnull(result, row, column) == 1
                                ? nil : String(cString: PQgetvalue(result, row, column))
                        })
                }
                return QueryResult(columns: columns, rows: rows, commandTag: String(cString: PQcmdStatus(result)))
            default:
                func field(_ code: Character) -> String? {
                    guard let ascii = code.asciiValue, let value = PQresultErrorField(result, Int32(ascii)) else {
                        return nil
                    }
                    return String(cString: value)
                }
                let sqlState = field("C")
                var message = field("M") ?? String(cString: PQresultErrorMessage(result))
                if let detail = field("D") { message += " (\(detail))" }
                if let hint = field("H") { message += "; hint: \(hint)" }
                if message.isEmpty { message = String(cString: PQresStatus(status)) }
                if sqlState == "57014" {
                    throw PostgresError(
                        .statementTimeout, "the statement was cancelled (statement_timeout or deadline): \(message)",
                        sqlState: sqlState)
                }
                if PQstatus(conn) != CONNECTION_OK {
                    throw PostgresError(
                        .connectionClosed, "the connection to PostgreSQL was lost: \(message); reconnect",
                        sqlState: sqlState)
                }
                throw PostgresError(.queryFailed, message, sqlState: sqlState)
            }
        }
    }

    /// The `PGcancel` object: usable from any thread, guarded by a lock.
    final class Canceller: @unchecked Sendable {
        static let timerQueue = DispatchQueue(label: "baton.pg.cancel-timers")
        private let lock = NSLock()
        private var handle: OpaquePointer?
        /// The connection's socket while it is open; -1 once `free()` ran (before PQfinish closes
        /// it, so that `shutdownSocket` can never touch a descriptor reused by someone else).
        private var socket: Int32 = -1

        func set(_ value: OpaquePointer?, socket: Int32) {
            lock.lock()
            defer { lock.unlock() }
            handle = value
            self.socket = socket
        }

        func shutdownSocket() {
            lock.lock()
            defer { lock.unlock() }
            if socket >= 0 { _ = shutdown(socket, Int32(SHUT_RDWR)) }
        }

        func cancel() {
            lock.lock()
            defer { lock.unlock() }
            guard let handle else { return }
            var buffer = [CChar](repeating: 0, count: 256)
            _ = PQcancel(handle, &buffer, Int32(buffer.count))
        }

        func free() {
            lock.lock()
            defer { lock.unlock() }
            if let handle { PQfreeCancel(handle) }
            handle = nil
            socket = -1
        }
    }
}

/// Maps libpq's connection failure text to a code and a message that says what to do.
func classifyConnectError(_ text: String, _ parameters: ConnectionParameters) -> PostgresError {
    let target = "\(parameters.host):\(parameters.port)"
    let lower = text.lowercased()
    if lower.contains("password authentication failed") {
        return PostgresError(
            .authenticationFailed,
            "password authentication failed for user '\(parameters.user)' at \(target): the configured password "
                + "does not match the role's password; fix the credentials in the configuration (or the environment) "
                + "or reset it with ALTER ROLE \(parameters.user) PASSWORD … — libpq said: \(text)",
            sqlState: "28P01")
    }
    if lower.contains("pg_hba.conf rejects") {
        return PostgresError(
            .authenticationFailed,
            "the server at \(target) has a pg_hba.conf rule rejecting user '\(parameters.user)' to database "
                + "'\(parameters.database)' from this host; change it and reload — libpq said: \(text)",
            sqlState: "28000")
    }
    if lower.contains("no pg_hba.conf entry") {
        return PostgresError(
            .authenticationFailed,
            "the server at \(target) has no pg_hba.conf rule admitting user '\(parameters.user)' to database "
                + "'\(parameters.database)' from this host; add one and reload — libpq said: \(text)",
            sqlState: "28000")
    }
    if lower.contains("role") && lower.contains("does not exist") {
        return PostgresError(
            .authenticationFailed,
            "role '\(parameters.user)' does not exist on \(target); create it or fix the configured user — libpq said: \(text)",
            sqlState: "28000")
    }
    if lower.contains("starting up") || lower.contains("shutting down") || lower.contains("not yet accepting") {
        return PostgresError(
            .serverStarting, "PostgreSQL at \(target) is not accepting connections yet: \(text)", sqlState: "57P03")
    }
    if lower.contains("connection refused") || lower.contains("no such file") {
        return PostgresError(
            .connectionFailed,
            "nothing accepts connections at \(target); is PostgreSQL running and listening on that address and port? "
                + "— libpq said: \(text)")
    }
    return PostgresError(.connectionFailed, "could not connect to \(parameters): \(text)")
}
