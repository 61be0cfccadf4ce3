import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import Synchronization
import Tracing

/// How the client logs in and what every session starts with; built once per client.
struct SessionSettings: Sendable {
    var user: String
    var database: String
    var applicationName: String
    var connectTimeout: Duration
    var statementTimeout: Duration
    var password: PasswordSource
    var tls: PostgresNIO.PostgresConnection.Configuration.TLS
    var tlsServerName: Bool
    /// nil when spans are off.
    var tracer: (any Tracer)?
    /// Sessions start read-only (`default_transaction_read_only`): replica pools, so that a
    /// replica promoted under an open connection takes no write through a read.
    var readOnly = false

    /// Where a connection's password comes from, asked at every connect (so a rotated password is
    /// used by the next connection).
    enum PasswordSource: Sendable {
        case none
        case fixed(String)
        case provider(@Sendable () async throws -> String?)
        /// A `.pgpass` file, read at each connect (libpq's format and matching).
        case passfile(String)
    }

    func password(host: String, port: Int) async throws -> String? {
        switch password {
        case .none: return nil
        case .fixed(let value): return value
        case .provider(let provider): return try await provider()
        case .passfile(let path):
            return PassFile.lookup(path: path, host: host, port: port, database: database, user: user)
        }
    }
}

/// One postgres-nio connection with what the pool needs beside it: the session's transaction
/// state read off the wire (`SessionTracker`), a cut that fails every statement in flight at once
/// (`interrupt`), a backstop deadline per statement, and task cancellation that reaches the
/// server.
///
/// Cancelling the task of a running statement closes the connection: the server notices within
/// `client_connection_check_interval` (1 s, set at startup) and ends the statement, and no cancel
/// request can ever hit a later statement.
final class ServerConnection: Sendable {
    let postgres: PostgresNIO.PostgresConnection
    let channel: any Channel
    let tracker: SessionTracker
    let observer: SessionObserver
    /// `host:port` the connection reached.
    let address: String
    let settings: SessionSettings
    /// postgres-nio logs each query at debug; the pool logs what matters itself.
    static let quiet = Logger(label: "baton.client.postgres") { _ in SwiftLogNoOpLogHandler() }
    private static let nextID = Atomic<Int>(0)
    /// Statements awaiting an answer, failed together when the channel closes.
    private let waiters = Mutex<(next: UInt64, pending: [UInt64: @Sendable (any Error) -> Void], closed: Bool)>(
        (0, [:], false))

    private init(
        postgres: PostgresNIO.PostgresConnection, channel: any Channel, observer: SessionObserver, address: String,
        settings: SessionSettings
    ) {
        self.postgres = postgres
        self.channel = channel
        self.observer = observer
        self.tracker = observer.tracker
        self.address = address
        self.settings = settings
    }

    deinit {
        // postgres-nio requires a connection closed before it goes; keep it until it is.
        let postgres = self.postgres
        if !postgres.isClosed { postgres.close().whenComplete { _ in withExtendedLifetime(postgres) {} } }
    }

    /// Connects, logs in and starts the session, all within `settings.connectTimeout`.
    static func connect(host: String, port: Int, settings: SessionSettings) async throws -> ServerConnection {
        let address = "\(host):\(port)"
        do {
            return try await BatonClient.withDeadline(settings.connectTimeout) {
                try await open(host: host, port: port, settings: settings)
            }
        } catch let error as DeadlineExceeded {
            _ = error
            throw BatonClientError(
                .connectFailed,
                "\(address) did not complete a connection within connect_timeout (\(settings.connectTimeout))",
                server: address)
        } catch let error as BatonClientError {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw BatonClientError(
                .connectFailed, "could not connect to \(address): \(ServerConnection.describe(error))", server: address,
                cause: error)
        }
    }

    private static func open(host: String, port: Int, settings: SessionSettings) async throws -> ServerConnection {
        let password = try await settings.password(host: host, port: port)
        let group = MultiThreadedEventLoopGroup.singleton
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            // A path that dies while rows stream (no answer, no reset) ends within ~20 s, not
            // the kernel's default two hours.
            .channelOption(ChannelOptions.Types.SocketOption(level: IPPROTO_TCP, name: TCP_KEEPIDLE), value: 10)
            .channelOption(ChannelOptions.Types.SocketOption(level: IPPROTO_TCP, name: TCP_KEEPINTVL), value: 3)
            .channelOption(ChannelOptions.Types.SocketOption(level: IPPROTO_TCP, name: TCP_KEEPCNT), value: 3)
            .channelOption(ChannelOptions.Types.SocketOption(level: IPPROTO_TCP, name: TCP_USER_TIMEOUT), value: 20_000)
            .connectTimeout(.nanoseconds(settings.connectTimeout.inNanoseconds))
            .connect(host: host, port: port).get()
        var configuration = PostgresNIO.PostgresConnection.Configuration(
            establishedChannel: channel, tls: settings.tls, username: settings.user, password: password,
            database: settings.database)
        if settings.tlsServerName, IPAddressCheck.isName(host) { configuration.options.tlsServerName = host }
        configuration.options.additionalStartupParameters = [
            ("application_name", settings.applicationName),
            ("statement_timeout", "\(max(1, settings.statementTimeout.inNanoseconds / 1_000_000))"),
            ("client_connection_check_interval", "1000"),
        ]
        if settings.readOnly {
            configuration.options.additionalStartupParameters.append(("default_transaction_read_only", "on"))
        }
        let postgres: PostgresNIO.PostgresConnection
        do {
            postgres = try await withTaskCancellationHandler {
                try await PostgresNIO.PostgresConnection.connect(
                    on: channel.eventLoop, configuration: configuration, id: nextID.add(1, ordering: .relaxed).newValue,
                    logger: quiet)
            } onCancel: {
                channel.close(promise: nil)
            }
        } catch {
            channel.close(promise: nil)
            throw error
        }
        // Idle now (startup ended with ReadyForQuery): a message boundary for the observer.
        let observer = SessionObserver(tracker: SessionTracker())
        do {
            try await channel.eventLoop.submit {
                let pipeline = channel.pipeline.syncOperations
                if let tls = try? pipeline.handler(type: NIOSSLClientHandler.self) {
                    try pipeline.addHandler(observer, position: .after(tls))
                } else {
                    try pipeline.addHandler(observer, position: .first)
                }
            }.get()
        } catch {
            try? await postgres.close()
            throw error
        }
        let connection = ServerConnection(
            postgres: postgres, channel: channel, observer: observer, address: "\(host):\(port)", settings: settings)
        channel.closeFuture.whenComplete { [weak connection] _ in
            let connection = connection
            channel.eventLoop.execute { connection?.channelClosed() }
        }
        return connection
    }

    /// Runs `query`; the connection is cut if no answer came within `backstop` (a server that hung:
    /// statement_timeout normally ends a slow statement first) or when the task is cancelled.
    /// The backstop covers the statement until postgres-nio hands over its rows; the session's
    /// TCP keepalive and user timeout cover a path that dies while they stream.
    func query(_ query: PostgresQuery, backstop: Duration) async throws -> PostgresRowSequence {
        try await guarded(backstop) { try await self.postgres.query(query, logger: Self.quiet) }
    }

    /// Every row of `query`, read to the end under the backstop: for the client's own statements.
    func rows(_ query: PostgresQuery, backstop: Duration) async throws -> [PostgresRow] {
        try await guarded(backstop) {
            var rows: [PostgresRow] = []
            for try await row in try await self.postgres.query(query, logger: Self.quiet) { rows.append(row) }
            return rows
        }
    }

    /// Runs `operation` under the backstop deadline and task cancellation described at `query`.
    func guarded<T>(
        _ backstop: Duration, isolation: isolated (any Actor)? = #isolation,
        _ operation: @escaping () async throws -> T
    ) async throws -> T {
        // A cancelled task sends nothing: its cancellation handler would close the channel under
        // the write (see below).
        try Task.checkCancellation()
        // A request written to a closed channel is dropped by NIO (its handlers are gone) and its
        // answer would be awaited forever: never send on a connection known to be closed, and
        // stop waiting when the channel closes, whatever the driver does (the close can land
        // between this check and the write).
        guard channel.isActive else { throw NotSent(address: address) }
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(backstop.inNanoseconds)) { [observer] in
            observer.closeBelowDriver()
        }
        defer { timer.cancel() }
        let work = Unchecked(operation)
        let waiter = Mutex<UInt64?>(nil)
        defer { if let id = waiter.withLock({ $0 }) { unregister(id) } }
        do {
            let result = try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation {
                    (continuation: CheckedContinuation<Unchecked<T>, any Error>) in
                    let once = ResumeOnce(continuation)
                    Task {
                        do {
                            once.resume(.success(Unchecked(try await work.value())))
                        } catch {
                            once.resume(.failure(error))
                        }
                    }
                    // The driver fails what it has when the channel closes; this covers what it
                    // dropped. One callback per connection fails every statement still waiting.
                    waiter.withLock { $0 = self.register { error in once.resume(.failure(error)) } }
                }
            } onCancel: {
                self.interrupt()
            }
            return result.value
        } catch {
            if Task.isCancelled { throw CancellationError() }
            throw error
        }
    }

    /// Registers a statement's failure callback; called at once when the channel already closed.
    private func register(_ fail: @escaping @Sendable (any Error) -> Void) -> UInt64 {
        let (id, closed) = waiters.withLock { state -> (UInt64, Bool) in
            state.next += 1
            if !state.closed { state.pending[state.next] = fail }
            return (state.next, state.closed)
        }
        if closed { fail(closedUnder()) }
        return id
    }

    private func unregister(_ id: UInt64) { waiters.withLock { _ = $0.pending.removeValue(forKey: id) } }

    /// The channel closed: fails every statement still waiting (after the driver failed its own,
    /// on the next turn of the loop).
    fileprivate func channelClosed() {
        let pending = waiters.withLock { state in
            state.closed = true
            defer { state.pending = [:] }
            return Array(state.pending.values)
        }
        for fail in pending { fail(closedUnder()) }
    }

    private func closedUnder() -> BatonClientError {
        BatonClientError(
            .connectionLost, "the connection to \(address) closed under the statement", commitOutcomeUnknown: true,
            server: address)
    }

    /// `SELECT 1` within `timeout` (the connection is cut if the server does not answer).
    func ping(within timeout: Duration) async throws {
        _ = try await rows("SELECT 1", backstop: timeout)
    }

    /// Whether the server is in recovery (a standby).
    func isInRecovery(within timeout: Duration) async throws -> Bool {
        guard let row = try await rows("SELECT pg_is_in_recovery()", backstop: timeout).first else {
            throw BatonClientError(.connectFailed, "\(address) answered no row to SELECT pg_is_in_recovery()")
        }
        return try row.decode(Bool.self)
    }

    /// Cuts the connection at once: every statement in flight fails now, and so does every later
    /// one.
    func interrupt() {
        let observer = self.observer
        channel.eventLoop.execute { observer.closeBelowDriver() }
    }

    func close() async { try? await postgres.close() }

    var isClosed: Bool { postgres.isClosed }

    /// A postgres-nio error in words: its code and, for a server error, SQLSTATE and message
    /// (`PSQLError`'s description hides both).
    static func describe(_ error: any Error) -> String {
        guard let failure = error as? PSQLError else { return "\(error)" }
        if let info = failure.serverInfo {
            let state = info[.sqlState] ?? "?"
            return "\(info[.message] ?? "server error") [SQLSTATE \(state)]"
        }
        return "\(failure.code)" + (failure.underlying.map { " (\($0))" } ?? "")
    }
}

/// `host` names a host (not an IP address): the TLS server name is set only for names.
enum IPAddressCheck {
    static func isName(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) != 1 && inet_pton(AF_INET6, host, &v6) != 1
    }
}

/// Resumes a continuation once: the first of the statement's result and the channel's close.
final class ResumeOnce<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<Value, any Error>?

    init(_ continuation: CheckedContinuation<Value, any Error>) { self.continuation = continuation }

    func resume(_ result: Result<Value, any Error>) {
        lock.lock()
        let continuation = self.continuation
        self.continuation = nil
        lock.unlock()
        continuation?.resume(with: result)
    }
}

/// A statement was not sent: the connection was already closed. Nothing of it can have run.
struct NotSent: Error, CustomStringConvertible {
    let address: String
    var description: String { "the connection to \(address) is closed; the statement was not sent" }
}

/// The deadline of `BatonClient.withDeadline` passed.
struct DeadlineExceeded: Error {}

extension BatonClient {
    /// `operation`, cancelled after `timeout` (then throws `DeadlineExceeded`).
    static func withDeadline<T: Sendable>(
        _ timeout: Duration, _ operation: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await operation() }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else { throw DeadlineExceeded() }
            return value
        }
    }
}

/// libpq's password file: `hostname:port:database:username:password` lines, `*` matching
/// anything, `\:` and `\\` escaped; the first matching line wins. Unreadable, or readable by
/// group or others: no password.
enum PassFile {
    static func lookup(path: String, host: String, port: Int, database: String, user: String) -> String? {
        // As libpq: a passfile that group or others may read is not used (the secret is not kept).
        var status = stat()
        guard stat(path, &status) == 0, status.st_mode & 0o077 == 0,
            let text = try? String(contentsOfFile: path, encoding: .utf8)
        else { return nil }
        for line in text.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
            let fields = split(String(line))
            guard fields.count == 5 else { continue }
            let wanted = [host, String(port), database, user]
            if zip(fields.prefix(4), wanted).allSatisfy({ $0 == "*" || $0 == $1 }) { return fields[4] }
        }
        return nil
    }

    /// Splits one line at unescaped colons, unescaping `\:` and `\\`.
    static func split(_ line: String) -> [String] {
        var fields: [String] = []
        var current = ""
        var escaped = false
        for character in line {
            if escaped {
                current.append(character)
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else if character == ":" {
                fields.append(current)
                current = ""
            } else {
                current.append(character)
            }
        }
        fields.append(current)
        return fields
    }
}
