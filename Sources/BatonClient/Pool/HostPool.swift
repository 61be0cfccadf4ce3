import Logging
import PostgresNIO
import Synchronization

/// Which role a pool's server must have; every new connection checks it (`pg_is_in_recovery()`).
public enum ServerRole: String, Sendable, Hashable {
    case primary
    case replica
}

/// One open connection and when it was opened.
final class PooledConnection: Sendable {
    let postgres: ServerConnection
    let id: UInt64
    let created: ContinuousClock.Instant

    init(postgres: ServerConnection, id: UInt64, created: ContinuousClock.Instant) {
        self.postgres = postgres
        self.id = id
        self.created = created
    }
}

/// The connections to one server (or, for `anyWritable`, to the first of several that is writable): at most
/// `maxConnections`, idle ones reused most-recent-first, waiters served in order, closed for good
/// by `close(because:)` when the topology drops the server.
///
/// The fast path (an idle connection) is one lock and no suspension; connecting, health checks and
/// waiting happen outside the lock.
final class HostPool: Sendable {
    /// `name (host:port)`, for logs, metrics and errors.
    let server: String
    /// Where to connect: one server, or (multi-host) the first of these that has `role`.
    let endpoints: [Endpoint]
    let settings: SessionSettings
    let role: ServerRole
    let options: BatonClientConfiguration.PoolOptions
    let metrics: HostMetrics
    let logger: Logger
    private let state: Mutex<State>

    private struct State {
        var idle: [(connection: PooledConnection, since: ContinuousClock.Instant)] = []
        /// Connected plus connecting; never above `maxConnections`.
        var open = 0
        /// Every connected connection, idle or lent, by id: changed only when one opens or closes,
        /// never per request. The ones lent are those not in `idle`.
        var connected: [UInt64: PooledConnection] = [:]
        var waiters: [(id: UInt64, continuation: CheckedContinuation<Grant, any Error>)] = []
        var nextID: UInt64 = 0
        var closedBecause: BatonClientError?
    }

    /// What a waiter is handed: a connection, or the right to open one.
    private enum Grant {
        case connection(PooledConnection, idleSince: ContinuousClock.Instant)
        case slot
    }

    private enum Step {
        case reuse(PooledConnection, idleSince: ContinuousClock.Instant)
        case connect
        case wait
    }

    init(
        server: String, endpoints: [Endpoint], settings: SessionSettings, role: ServerRole,
        options: BatonClientConfiguration.PoolOptions, logger: Logger
    ) {
        self.server = server
        self.endpoints = endpoints
        var settings = settings
        settings.readOnly = role == .replica
        self.settings = settings
        self.role = role
        self.options = options
        self.metrics = HostMetrics(server: server, pool: role.rawValue)
        var logger = logger
        logger[metadataKey: "client.server"] = "\(server)"
        self.logger = logger
        self.state = Mutex(State())
    }

    /// Why the pool was closed, nil while it is open.
    var closedReason: BatonClientError? { state.withLock { $0.closedBecause } }

    var counts: (open: Int, idle: Int, inUse: Int, waiting: Int) {
        state.withLock { ($0.open, $0.idle.count, $0.connected.count - $0.idle.count, $0.waiters.count) }
    }

    // MARK: Acquire and release

    /// The fast path of `acquire`, synchronous: the most recently used idle connection when it
    /// needs neither retiring nor a health check, else nil (then call `acquire`). An async call
    /// costs a frame on the task's allocator and possibly an executor hop; this costs one lock.
    /// Its wait is recorded as zero.
    func acquireIdle(now: ContinuousClock.Instant) -> PooledConnection? {
        let connection = state.withLock { state -> PooledConnection? in
            guard state.closedBecause == nil, let entry = state.idle.last,
                now - entry.connection.created < options.maxLifetime,
                now - entry.since < options.healthCheckAfterIdle,
                // Closed under it (the server went away): the async path discards it.
                !entry.connection.postgres.isClosed
            else { return nil }
            state.idle.removeLast()
            return entry.connection
        }
        if connection != nil { metrics.acquireWait.recordNanoseconds(0) }
        return connection
    }

    /// A connection of the right role, or an error: the pool's close reason, `.acquireTimeout`
    /// (none free within `timeout`), `.roleMismatch`, or the `PostgresError` of a failed connect.
    ///
    /// The fast path (an idle connection, not idle long enough to need a health check) reads the
    /// clock twice (the lifetime check and the wait metric) and takes the lock once.
    /// `started` is when the caller began (now when not given).
    nonisolated(nonsending) func acquire(
        timeout: Duration, started: ContinuousClock.Instant = .now
    ) async throws -> PooledConnection {
        defer { metrics.acquireWait.recordNanoseconds((ContinuousClock.now - started).inNanoseconds) }
        var now = started
        // Each turn either returns, throws, or discards one dead idle connection: bounded by the
        // pool size plus the few turns a wait can take.
        for turn in 0..<(options.maxConnections + 8) {
            if turn > 0 { now = .now }
            var expired: [PooledConnection] = []
            let step = try state.withLock { state throws(BatonClientError) -> Step in
                if let reason = state.closedBecause { throw reason }
                while let entry = state.idle.popLast() {
                    if now - entry.connection.created >= options.maxLifetime || entry.connection.postgres.isClosed {
                        state.open -= 1
                        state.connected[entry.connection.id] = nil
                        expired.append(entry.connection)
                        continue
                    }
                    return .reuse(entry.connection, idleSince: entry.since)
                }
                if state.open < options.maxConnections {
                    state.open += 1
                    return .connect
                }
                return .wait
            }
            expired.removeAll()
            switch step {
            case .reuse(let connection, let since):
                if try await checked(connection, idleSince: since, now: now) { return connection }
            case .connect:
                return try await openInUse()
            case .wait:
                switch try await waitForGrant(deadline: started + timeout, timeout: timeout) {
                case .connection(let connection, let since):
                    if try await checked(connection, idleSince: since, now: .now) { return connection }
                case .slot:
                    return try await openInUse()
                }
            }
        }
        throw BatonClientError(
            .acquireTimeout, "no healthy connection to \(server) after discarding dead ones; the server may be failing",
            server: server)
    }

    /// Returns a connection. `reusable` false (it failed, or its transaction state is unknown)
    /// closes it and frees its slot; so does a closed pool. Returns the instant it read, for the
    /// caller's own bookkeeping (one clock read less per request).
    @discardableResult
    func release(_ connection: PooledConnection, reusable: Bool) -> ContinuousClock.Instant {
        let now = ContinuousClock.now
        var dropped: PooledConnection?
        let grant = state.withLock { state -> (CheckedContinuation<Grant, any Error>, Grant)? in
            let keep =
                reusable && state.closedBecause == nil && now - connection.created < options.maxLifetime
            if keep {
                if !state.waiters.isEmpty {
                    let waiter = state.waiters.removeFirst()
                    return (waiter.continuation, .connection(connection, idleSince: now))
                }
                state.idle.append((connection, now))
                return nil
            }
            state.open -= 1
            state.connected[connection.id] = nil
            dropped = connection
            if state.closedBecause == nil, !state.waiters.isEmpty, state.open < options.maxConnections {
                state.open += 1
                return (state.waiters.removeFirst().continuation, .slot)
            }
            return nil
        }
        if let (continuation, value) = grant { continuation.resume(returning: value) }
        // A dropped connection is closed now (statements in flight on it, if any, fail).
        dropped?.postgres.interrupt()
        return now
    }

    /// Health check of a connection that sat idle; a dead one is discarded (false).
    private nonisolated(nonsending) func checked(
        _ connection: PooledConnection, idleSince: ContinuousClock.Instant, now: ContinuousClock.Instant
    ) async throws -> Bool {
        guard now - idleSince >= options.healthCheckAfterIdle else { return true }
        do {
            try await connection.postgres.ping(within: settings.connectTimeout)
            return true
        } catch {
            logger.debug(
                "idle connection failed its health check; discarding it", metadata: ["client.error": "\(error)"])
            release(connection, reusable: false)
            if Task.isCancelled { throw CancellationError() }
            return false
        }
    }

    /// Opens a connection in a slot already counted in `open`, registered as in use.
    private func openInUse() async throws -> PooledConnection {
        let connection: PooledConnection
        do {
            connection = try await openConnection()
        } catch {
            slotFailed()
            throw error
        }
        let accepted = state.withLock { state -> BatonClientError? in
            if let reason = state.closedBecause {
                state.open -= 1
                return reason
            }
            state.connected[connection.id] = connection
            return nil
        }
        if let reason = accepted {
            await connection.postgres.close()
            throw reason
        }
        return connection
    }

    /// A slot whose connect failed: free it, or pass it to the next waiter (who will try too).
    private func slotFailed() {
        let next = state.withLock { state -> CheckedContinuation<Grant, any Error>? in
            if state.closedBecause == nil, !state.waiters.isEmpty { return state.waiters.removeFirst().continuation }
            state.open -= 1
            return nil
        }
        next?.resume(returning: .slot)
    }

    /// How long a new primary connection waits for a server still in recovery to finish its
    /// promotion before it gives up on it (as `.roleMismatch`).
    static let promotionWatch: Duration = .seconds(1)

    /// A connection of the pool's server and role that the pool does not count or lend: for a
    /// long-lived use of its own (a LISTEN that follows the primary). The caller closes it.
    func openDedicated() async throws -> ServerConnection {
        if let reason = closedReason { throw reason }
        return try await openConnection().postgres
    }

    /// Connects and verifies the server's role: the one endpoint, or the first of several that
    /// has it (multi-host, like libpq's `target_session_attrs`).
    private func openConnection() async throws -> PooledConnection {
        var lastError: (any Error)?
        for endpoint in endpoints {
            do {
                let postgres = try await connect(endpoint, watchPromotion: endpoints.count == 1)
                let id = state.withLock { state in
                    state.nextID += 1
                    return state.nextID
                }
                logger.debug("connection opened", metadata: ["client.connection": "\(id)", "pg.server": "\(endpoint)"])
                return PooledConnection(postgres: postgres, id: id, created: .now)
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                lastError = error
            }
        }
        throw lastError ?? BatonClientError(.connectFailed, "no server to connect to", server: server)
    }

    /// One connection to `endpoint`, verified to have the pool's role.
    private func connect(_ endpoint: Endpoint, watchPromotion: Bool) async throws -> ServerConnection {
        let postgres = try await ServerConnection.connect(host: endpoint.host, port: endpoint.port, settings: settings)
        var inRecovery: Bool
        do {
            inRecovery = try await postgres.isInRecovery(within: settings.connectTimeout)
            // The new leader published its key and is promoting: watch the promotion finish on
            // this connection (every 5 ms, for up to `promotionWatch`) rather than reconnect.
            let watchUntil = ContinuousClock.now + Self.promotionWatch
            while watchPromotion, role == .primary, inRecovery, ContinuousClock.now < watchUntil {
                try await Task.sleep(for: .milliseconds(5))
                inRecovery = try await postgres.isInRecovery(within: settings.connectTimeout)
            }
        } catch {
            await postgres.close()
            if Task.isCancelled { throw CancellationError() }
            throw BatonClientError.isServerFailure(error) || error is BatonClientError
                ? BatonClientError(
                    .connectFailed,
                    "\(endpoint) failed right after connecting: \(ServerConnection.describe(error))", server: server,
                    cause: error)
                : error
        }
        guard inRecovery == (role == .replica) else {
            await postgres.close()
            let actual = inRecovery ? "a replica (in recovery)" : "a primary (not in recovery)"
            throw BatonClientError(
                .roleMismatch, "\(endpoint) is \(actual), but the topology has it as the \(role); not using it",
                server: server)
        }
        return postgres
    }

    // MARK: Waiting

    /// Waits for a released connection or a free slot until `deadline` (`timeout` from the start
    /// of the acquisition, for the error).
    private func waitForGrant(deadline: ContinuousClock.Instant, timeout: Duration) async throws -> Grant {
        let id = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        let granted: Grant? = await withTaskGroup(of: Grant?.self) { group in
            group.addTask { try? await self.park(id) }
            group.addTask {
                try? await Task.sleep(until: deadline, clock: .continuous)
                return nil
            }
            var granted: Grant?
            // Both children end: the waiter with a grant or a cancellation, the timer by itself or
            // by cancellation. A grant that races the timer still counts.
            for await result in group {
                if let result { granted = result }
                group.cancelAll()
            }
            return granted
        }
        if let granted { return granted }
        if let reason = closedReason { throw reason }
        if Task.isCancelled { throw CancellationError() }
        let counts = self.counts
        throw BatonClientError(
            .acquireTimeout,
            "no free connection to \(server) within \(timeout): all \(options.maxConnections) are in "
                + "use (\(counts.waiting) waiting); raise max_connections or return connections sooner",
            server: server)
    }

    private func park(_ id: UInt64) async throws -> Grant {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Grant, any Error>) in
                let immediate = state.withLock { state -> Result<Grant, any Error>? in
                    if let reason = state.closedBecause { return .failure(reason) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if let entry = state.idle.popLast() {
                        return .success(.connection(entry.connection, idleSince: entry.since))
                    }
                    if state.open < options.maxConnections {
                        state.open += 1
                        return .success(.slot)
                    }
                    state.waiters.append((id, continuation))
                    return nil
                }
                if let immediate { continuation.resume(with: immediate) }
            }
        } onCancel: {
            let continuation = self.state.withLock { state -> CheckedContinuation<Grant, any Error>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index).continuation
            }
            continuation?.resume(throwing: CancellationError())
        }
    }

    // MARK: Maintenance and closing

    /// Closes idle connections past `idleTimeout` (above `minConnections`) or `maxLifetime`, opens
    /// connections up to `minConnections`, and updates the gauges.
    func maintain() async {
        let now = ContinuousClock.now
        var retired: [PooledConnection] = []
        let toOpen = state.withLock { state -> Int in
            guard state.closedBecause == nil else { return 0 }
            // `idle` is oldest-first: the front has been idle longest.
            var kept: [(connection: PooledConnection, since: ContinuousClock.Instant)] = []
            var removable = max(0, state.open - options.minConnections)
            for entry in state.idle {
                let tooOld = now - entry.connection.created >= options.maxLifetime
                let idleTooLong = now - entry.since >= options.idleTimeout && removable > 0
                if tooOld || idleTooLong {
                    retired.append(entry.connection)
                    state.connected[entry.connection.id] = nil
                    state.open -= 1
                    removable -= 1
                } else {
                    kept.append(entry)
                }
            }
            state.idle = kept
            let missing = max(0, options.minConnections - state.open)
            state.open += missing
            return missing
        }
        for connection in retired { await connection.postgres.close() }
        for _ in 0..<toOpen {
            do {
                let connection = try await openConnection()
                state.withLock { $0.connected[connection.id] = connection }
                release(connection, reusable: true)
            } catch {
                slotFailed()
                logger.debug("could not open a minimum connection", metadata: ["client.error": "\(error)"])
                break
            }
        }
        let counts = self.counts
        metrics.inUse.record(counts.inUse)
        metrics.idle.record(counts.idle)
    }

    /// Closes the pool for good: idle connections now, connections in use interrupted (their
    /// statements fail at once) when `interruptInUse`, else when they are returned; waiters get
    /// `reason`.
    func close(because reason: BatonClientError, interruptInUse: Bool) {
        let (idle, inUse, waiters) = state.withLock { state in
            if state.closedBecause == nil { state.closedBecause = reason }
            let idle = state.idle.map(\.connection)
            state.open -= idle.count
            state.idle = []
            for connection in idle { state.connected[connection.id] = nil }
            let waiters = state.waiters.map(\.continuation)
            state.waiters = []
            // What is still connected is lent out.
            return (idle, Array(state.connected.values), waiters)
        }
        for waiter in waiters { waiter.resume(throwing: reason) }
        for connection in idle { connection.postgres.interrupt() }
        if interruptInUse { for connection in inUse { connection.postgres.interrupt() } }
        metrics.inUse.record(interruptInUse ? 0 : inUse.count)
        metrics.idle.record(0)
    }

    /// Closes every idle connection (after a failure of the server: they are likely dead too).
    func discardIdle() {
        let idle = state.withLock { state in
            let idle = state.idle.map(\.connection)
            state.open -= idle.count
            state.idle = []
            for connection in idle { state.connected[connection.id] = nil }
            return idle
        }
        for connection in idle { connection.postgres.interrupt() }
    }

    /// Waits (polling every 10 ms) until no connection is in use or `deadline` passes.
    func drain(until deadline: ContinuousClock.Instant) async {
        while ContinuousClock.now < deadline, counts.inUse > 0 {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}

extension Duration {
    var inNanoseconds: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
    }

    var inSeconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
