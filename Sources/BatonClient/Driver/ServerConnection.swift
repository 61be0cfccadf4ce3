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
    /// Runs statements on the channel's event loop (see `guarded`).
    let executor: EventLoopTaskExecutor
    /// The backstop deadlines of the statements in flight.
    private let statementBackstop: StatementBackstop
    /// Cuts the connection at the socket.
    private let cutter: ConnectionCutter

    private init(
        postgres: PostgresNIO.PostgresConnection, channel: any Channel, observer: SessionObserver,
        cutter: ConnectionCutter, backstop: StatementBackstop, address: String, settings: SessionSettings
    ) {
        self.postgres = postgres
        self.channel = channel
        self.observer = observer
        self.cutter = cutter
        self.statementBackstop = backstop
        self.tracker = observer.tracker
        self.address = address
        self.settings = settings
        self.executor = EventLoopTaskExecutor(channel.eventLoop)
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
        let cutter = ConnectionCutter()
        let backstop = StatementBackstop(loop: channel.eventLoop) { cutter.cut() }
        do {
            try await channel.eventLoop.submit {
                let pipeline = channel.pipeline.syncOperations
                if let tls = try? pipeline.handler(type: NIOSSLClientHandler.self) {
                    try pipeline.addHandler(observer, position: .after(tls))
                } else {
                    try pipeline.addHandler(observer, position: .first)
                }
                // Below TLS too: a cut closes the socket at once, without TLS's close_notify
                // exchange (which would keep the channel active for its shutdown timeout).
                try pipeline.addHandler(cutter, position: .first)
                observer.onSettled = { backstop.settled() }
                channel.closeFuture.whenComplete { _ in backstop.closed() }
            }.get()
        } catch {
            try? await postgres.close()
            throw error
        }
        return ServerConnection(
            postgres: postgres, channel: channel, observer: observer, cutter: cutter, backstop: backstop,
            address: "\(host):\(port)", settings: settings)
    }

    /// Runs `query`; the connection is cut if the server has not answered it to the end (its
    /// ReadyForQuery) within `backstop` (a server that hung: statement_timeout normally ends a
    /// slow statement first, and it counts the time the rows wait for the reader too), or when
    /// the task is cancelled.
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

    /// Runs `send` (one postgres-nio call that writes its request before it first suspends) under
    /// the backstop deadline and task cancellation described at `query`.
    ///
    /// The request is sent from the channel's event loop (the task prefers it as its executor
    /// until the driver hands the answer over). There a channel that is still active has its
    /// handlers, and with no suspension between the check and the driver's write, the request
    /// reaches the driver, which answers it or fails it when the channel closes. Off the loop
    /// the close could land between a check and the send, and NIO would drop the request (the
    /// handlers gone) with its answer awaited forever. The loop also takes the send, the answer
    /// and the backstop without a hand-off between threads. `send` is `@Sendable`, hence
    /// nonisolated: it cannot hop to an actor before it writes.
    func guarded<T>(_ backstop: Duration, _ send: @Sendable () async throws -> T) async throws -> T {
        // A cancelled task sends nothing: its cancellation handler would close the channel under
        // the write.
        try Task.checkCancellation()
        do {
            return try await withTaskCancellationHandler {
                try await withTaskExecutorPreference(executor) {
                    try await self.onLoop(backstop, send)
                }
            } onCancel: {
                self.interrupt()
            }
        } catch {
            // The cancellation handler closed the connection under the statement: the task was
            // cancelled. A definite answer that came first (a server error) stays what it is.
            if Task.isCancelled, !(error is NotSent),
                error is CancellationError || BatonClientError.isServerFailure(error)
            {
                throw CancellationError()
            }
            throw error
        }
    }

    private func onLoop<T>(_ backstop: Duration, _ send: @Sendable () async throws -> T) async throws -> T {
        // Not on the loop, the send could be dropped (see `guarded`): refuse rather than risk a
        // statement that never ends.
        guard channel.eventLoop.inEventLoop else {
            throw NotSent(address: address, reason: "the statement did not reach the connection's event loop")
        }
        guard channel.isActive else { throw NotSent(address: address) }
        // Cancelled on the way here: the cancellation handler is closing the connection.
        guard !Task.isCancelled else { throw NotSent(address: address, cancelled: true) }
        let watch = statementBackstop.start(backstop)
        do {
            let value = try await send()
            // Until the server's ReadyForQuery for it, the statement may still run (postgres-nio
            // hands a query over at BindComplete): the deadline stays until then.
            statementBackstop.finish(watch, answered: tracker.transaction != .unknown)
            return value
        } catch {
            statementBackstop.finish(watch, answered: true)
            throw error
        }
    }

    /// `COPY … FROM STDIN`, started from the event loop as `guarded` sends (so its request cannot
    /// be dropped); `writeData` runs off the loop. No backstop and no cut on cancellation: closing
    /// the channel during COPY makes postgres-nio drop the CopyFail it then sends and wait for
    /// its answer forever. A cancelled task ends the copy through `writeData` throwing instead
    /// (postgres-nio sends CopyFail, the server answers with an error); statement_timeout bounds
    /// a slow server.
    func copyFrom(
        table: String, columns: [String], format: PostgresCopyFromFormat,
        writeData: (PostgresCopyFromWriter) async throws -> Void
    ) async throws {
        try Task.checkCancellation()
        try await withTaskExecutorPreference(executor) {
            guard self.channel.eventLoop.inEventLoop else {
                throw NotSent(address: self.address, reason: "the COPY did not reach the connection's event loop")
            }
            guard self.channel.isActive else { throw NotSent(address: self.address) }
            try await self.postgres.copyFrom(table: table, columns: columns, format: format, logger: Self.quiet) {
                writer in
                try await withTaskExecutorPreference(globalConcurrentExecutor) { try await writeData(writer) }
            }
        }
    }

    /// Awaits the future of `request` (postgres-nio's future-based API, which may send several
    /// requests from any thread), failing when the channel closes first: a request NIO dropped
    /// after the close would leave the future pending forever. Cancelling the task cuts the
    /// connection. For the `PostgresDatabase` adapter.
    func racingClose<T>(_ request: () -> EventLoopFuture<T>) async throws -> T {
        try Task.checkCancellation()
        let loop = channel.eventLoop
        let promise = loop.makePromise(of: Unchecked<T>.self)
        request().whenComplete { promise.completeWith($0.map(Unchecked.init)) }
        let (backstop, address) = (statementBackstop, address)
        loop.execute {
            let watch = backstop.watchClose {
                promise.fail(
                    BatonClientError(
                        .connectionLost, "the connection to \(address) closed under the request",
                        commitOutcomeUnknown: true, server: address))
            }
            promise.futureResult.whenComplete { _ in backstop.unwatchClose(watch) }
        }
        return try await withTaskCancellationHandler {
            try await promise.futureResult.get().value
        } onCancel: {
            self.interrupt()
        }
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
        let cutter = self.cutter
        channel.eventLoop.execute { cutter.cut() }
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

/// A Swift task executor on one NIO event loop: a statement runs beside its channel.
final class EventLoopTaskExecutor: TaskExecutor {
    let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// The backstop deadlines of one connection's statements in flight, with one timer at a time for
/// the earliest (not one per statement): when a deadline passes with its statement still in
/// flight, `expire` cuts the connection. A statement is in flight from its send until the driver
/// hands its answer over, and after that until the server's ReadyForQuery (`settled`) when that
/// was not in yet. Used on the connection's event loop only.
final class StatementBackstop: @unchecked Sendable {
    private let loop: any EventLoop
    private let expire: () -> Void
    private var deadlines: [UInt64: NIODeadline] = [:]
    /// Statements handed over whose ReadyForQuery was not in yet.
    private var awaitingReady: [UInt64] = []
    private var next: UInt64 = 0
    /// When the armed timer fires, and the timer (nil: none armed).
    private var armed: (at: NIODeadline, task: Scheduled<Void>)?
    private var isClosed = false
    private var closeWatchers: [UInt64: () -> Void] = [:]

    init(loop: any EventLoop, expire: @escaping () -> Void) {
        self.loop = loop
        self.expire = expire
    }

    /// A statement starts, to be answered within `backstop`.
    func start(_ backstop: Duration) -> UInt64 {
        loop.preconditionInEventLoop()
        next += 1
        guard !isClosed else { return next }
        let deadline = loop.now + .nanoseconds(backstop.inNanoseconds)
        deadlines[next] = deadline
        if armed.map({ deadline < $0.at }) ?? true { arm(deadline) }
        return next
    }

    /// The driver handed the statement's answer over (or failed it); `answered`: the server's
    /// ReadyForQuery for it is in (else its deadline stays until `settled`).
    func finish(_ id: UInt64, answered: Bool) {
        loop.preconditionInEventLoop()
        if answered || isClosed {
            deadlines[id] = nil
        } else {
            awaitingReady.append(id)
        }
    }

    /// Every request sent so far has its ReadyForQuery.
    func settled() {
        loop.preconditionInEventLoop()
        for id in awaitingReady { deadlines[id] = nil }
        awaitingReady.removeAll(keepingCapacity: true)
    }

    /// The channel closed: nothing is in flight any more, no timer stays behind.
    func closed() {
        loop.preconditionInEventLoop()
        isClosed = true
        armed?.task.cancel()
        armed = nil
        deadlines = [:]
        awaitingReady = []
        let watchers = closeWatchers.values
        closeWatchers = [:]
        for fail in watchers { fail() }
    }

    /// Calls `fail` when the channel closes (at once when it has); returns a handle for
    /// `unwatchClose`.
    func watchClose(_ fail: @escaping () -> Void) -> UInt64 {
        loop.preconditionInEventLoop()
        next += 1
        if isClosed {
            fail()
        } else {
            closeWatchers[next] = fail
        }
        return next
    }

    func unwatchClose(_ id: UInt64) {
        loop.preconditionInEventLoop()
        closeWatchers[id] = nil
    }

    /// Statements in flight (for tests).
    var inFlight: Int { deadlines.count }

    private func arm(_ deadline: NIODeadline) {
        let task = loop.scheduleTask(deadline: deadline) { [weak self] () -> Void in self?.fire(deadline) }
        armed = (deadline, task)
    }

    private func fire(_ deadline: NIODeadline) {
        // An earlier timer replaced this one; it re-arms for what remains.
        guard armed?.at == deadline else { return }
        armed = nil
        guard let earliest = deadlines.values.min() else { return }
        if earliest <= loop.now {
            expire()
        } else {
            arm(earliest)
        }
    }
}

/// Cuts the connection at the socket: the first handler of the pipeline (below TLS), so that a
/// close from it reaches the socket at once, and postgres-nio sees the connection end as when
/// the server closes it. (A close passed through postgres-nio's handler traps in some states,
/// e.g. during COPY.) Used on the event loop.
final class ConnectionCutter: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = NIOAny
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func cut() { context?.close(mode: .all, promise: nil) }
}

/// A statement was not sent: the connection was already closed, the task was cancelled before
/// it went out, or it could not be sent safely. Nothing of it can have run.
struct NotSent: Error, CustomStringConvertible {
    let address: String
    let reason: String
    /// The task was cancelled before the statement went out.
    let cancelled: Bool

    init(address: String, reason: String = "the connection is closed", cancelled: Bool = false) {
        self.address = address
        self.reason = cancelled ? "the task was cancelled" : reason
        self.cancelled = cancelled
    }

    var description: String { "\(reason) (\(address)); the statement was not sent" }
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
