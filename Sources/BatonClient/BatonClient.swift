import BatonCore
import Logging
import Metrics
import PostgresNIO
import ServiceLifecycle
import Synchronization
import Tracing

/// The library applications link to use a Baton cluster: it follows the published topology and
/// keeps a primary pool (writes, strong reads) and a replica pool (eventual and read-your-writes
/// reads).
///
///     let client = try await BatonClient(configuration)
///     let (id, token) = try await client.write { conn in
///         try await conn.query("INSERT INTO t (v) VALUES (\(value)) RETURNING id").decode(Int.self).first { _ in true }
///     }
///     let values = try await client.read(consistency: .readYourWrites(token)) { conn in
///         try await conn.query("SELECT v FROM t WHERE id = \(id)").decode(String.self).reduce(into: []) { $0.append($1) }
///     }
///     await client.shutdown()   // or run it in a ServiceGroup: graceful shutdown drains the pools
///
/// Reads without a consistency use the task-local one (`withConsistency(_:_:)`), `.strong` by
/// default; `withPrimary { }` sends every read of a block to the primary.
public final class BatonClient: Service, Sendable {
    public let configuration: BatonClientConfiguration
    let logger: Logger
    let primaryPool: PrimaryPool
    let replicaPool: ReplicaPool
    private let source: any TopologySourceDriver
    /// The configured source: etcd, the REST agents, or fixed.
    private let preferredSource: TopologySourceKind
    /// nil when spans are off.
    let tracer: (any Tracer)?
    private let state: Mutex<State>
    /// Set once by `shutdown()`, under the state lock; read without it on every request.
    private let isShutdown = Atomic<Bool>(false)

    private let topologyMetrics = TopologyMetrics()

    private struct State {
        var topology: Topology = .empty
        var lastPublished: Topology = .empty
        /// Where `topology` came from.
        var source: TopologySourceKind
        /// When a source last answered (the topology's age counts from it).
        var lastAnswer: ContinuousClock.Instant = .now
        /// Since when the configured source (etcd, or the REST agents) has been failing; cleared
        /// by its next answer, not by the fallback's.
        var failingSince: ContinuousClock.Instant?
        var degraded = false
        var background: Task<Void, Never>?
    }

    /// Validates `configuration`, reads the topology (failing after `topologyTimeout`), and starts
    /// following it. Call `shutdown()` when done, or run the client as a `Service`.
    public init(_ configuration: BatonClientConfiguration, logger: Logger = Logger(label: "baton.client")) async throws
    {
        try configuration.validate()
        self.configuration = configuration
        self.logger = logger
        let settings = try configuration.sessionSettings()
        self.tracer = settings.tracer
        self.primaryPool = PrimaryPool(configuration: configuration, settings: settings, logger: logger)
        self.replicaPool = ReplicaPool(configuration: configuration, settings: settings, logger: logger)
        let kind: TopologySourceKind
        switch configuration.topology {
        case .etcd(let options):
            source = EtcdTopologySource(options, logger: logger)
            kind = .etcd
        case .rest(let agents, let interval):
            source = RESTTopologySource(agents: agents, interval: interval, logger: logger)
            kind = .rest
        case .fixed(let primaries, let replicas):
            source = FixedTopologySource(topology: .fixed(primaryHosts: primaries, readReplicas: replicas))
            kind = .fixed
        }
        self.preferredSource = kind
        self.state = Mutex(State(source: kind))
        let initial: Topology
        do {
            initial = try await Self.withDeadline(configuration.topologyTimeout) { [source] in
                try await source.initial()
            }
        } catch {
            source.shutdown()
            throw BatonClientError(
                .topologyUnavailable,
                "could not read the cluster topology within topology_timeout (\(configuration.topologyTimeout)); "
                    + "check that the topology source is reachable and the scope is right",
                cause: error)
        }
        apply(initial, from: initial.source.hasPrefix("etcd") || kind != .etcd ? kind : .rest)
        let source = self.source
        let background = Task { [self] in
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await source.run(self) }
                group.addTask { await self.maintain() }
            }
        }
        state.withLock { $0.background = background }
    }

    // MARK: Writes

    /// Runs `body` on a connection to the primary and returns its result with a `WriteToken` (the
    /// primary's WAL position after the body) for read-your-writes reads.
    ///
    /// Waits up to `primaryWaitTimeout` for a primary. If the primary changes while the body runs,
    /// its statement fails with `BatonClientError.primaryChanged` (see `commitOutcomeUnknown`).
    @discardableResult
    public func write<T>(
        isolation: isolated (any Actor)? = #isolation, _ body: (BatonConnection) async throws -> T
    ) async throws -> (T, WriteToken) {
        try await withPrimaryLease(purpose: "write") { connection in
            let value = try await body(connection)
            // The token is read on the same connection: first make sure the body's last statement
            // finished (a failure of it must not pass for a failure of the token's read).
            try await connection.awaitLastStatement()
            return (value, await self.token(after: connection))
        }
    }

    /// `write` inside `BEGIN` … `COMMIT` (at `level`, default the server's, and read-only when
    /// `readOnly`): a body that throws rolls the transaction back. When `COMMIT` answers that the
    /// server rolled back instead (a statement failed and the body caught its error), throws
    /// `.transactionRolledBack`: nothing committed.
    @discardableResult
    public func transaction<T>(
        level: TransactionIsolation? = nil, readOnly: Bool = false, isolation: isolated (any Actor)? = #isolation,
        _ body: (BatonConnection) async throws -> T
    ) async throws -> (T, WriteToken) {
        try await withPrimaryLease(purpose: "transaction") { connection in
            var begin = "BEGIN"
            if let level { begin += " ISOLATION LEVEL \(level.rawValue)" }
            if readOnly { begin += " READ ONLY" }
            let tracker = connection.connection.tracker
            let blocksBefore = tracker.blocksEnded
            try await connection.query(PostgresQuery(unsafeSQL: begin))
            // A body that throws leaves the block open: the lease's end rolls it back.
            let value = try await body(connection)
            try await connection.awaitLastStatement()
            if tracker.blocksEnded != blocksBefore || tracker.transaction == .idle {
                throw BatonClientError(
                    .transactionEndedInBody,
                    "the body ended the transaction itself (COMMIT, ROLLBACK or PREPARE TRANSACTION inside "
                        + "transaction { }), so what it committed is the body's to know; leave ending it to "
                        + "transaction { }, or use write { } to manage BEGIN/COMMIT yourself",
                    commitOutcomeUnknown: true, server: connection.server)
            }
            let tag = try await connection.commit()
            if tag != "COMMIT" {
                throw BatonClientError(
                    .transactionRolledBack,
                    "COMMIT answered \(tag): a statement of the transaction failed and its error was "
                        + "caught inside the body, so the server rolled the whole transaction back; nothing committed. "
                        + "Let the error propagate (or use a SAVEPOINT to recover from it inside the transaction)",
                    server: connection.server)
            }
            return (value, await self.token(after: connection))
        }
    }

    /// Runs `operation` again, up to `attempts` times in all, when it failed in a way that is safe
    /// to retry (`BatonClient.isRetryable`): a serialization failure or a deadlock (SQLSTATE
    /// 40001, 40P01), or work cut short with nothing committed. Waits `backoff` before the second
    /// attempt, doubling (with jitter) after each, and rethrows the last error.
    ///
    ///     let (id, _) = try await client.retrying {
    ///         try await client.transaction(level: .serializable) { conn in … }
    ///     }
    public func retrying<T>(
        attempts: Int = 3, backoff: Duration = .milliseconds(20), isolation: isolated (any Actor)? = #isolation,
        _ operation: () async throws -> T
    ) async throws -> T {
        var delay = backoff
        for attempt in 1... {
            do {
                return try await operation()
            } catch {
                guard attempt < attempts, Self.isRetryable(error) else { throw error }
                logger.debug(
                    "retrying after an error that left nothing committed",
                    metadata: ["client.attempt": "\(attempt)", "client.error": "\(error)"])
                try await Task.sleep(for: delay * Double.random(in: 0.5...1.5))
                delay *= 2
            }
        }
        fatalError("unreachable: the loop returns or throws")
    }

    /// Whether `error` is known to have left nothing committed and may succeed if run again:
    /// SQLSTATE 40001 (serialization failure) or 40P01 (deadlock detected); `.primaryChanged`,
    /// `.connectionLost` and `.noPrimary` without `commitOutcomeUnknown`. Not a statement's own
    /// error, nor `.transactionRolledBack` or `.transactionLeftOpen` (a bug in the body).
    /// SQLSTATEs after which a whole transaction may simply run again: serialization_failure and
    /// deadlock_detected.
    static let retryableStates: Set<String> = ["40001", "40P01"]

    public static func isRetryable(_ error: any Error) -> Bool {
        if let state = BatonClientError.sqlState(of: error) { return retryableStates.contains(state) }
        guard let failure = error as? BatonClientError else { return false }
        switch failure.code {
        case .primaryChanged, .connectionLost: return !failure.commitOutcomeUnknown
        case .noPrimary: return true
        default: return false
        }
    }

    /// Runs `body` on a connection to the primary, without a token.
    public func withPrimaryConnection<T>(
        isolation: isolated (any Actor)? = #isolation, _ body: (BatonConnection) async throws -> T
    ) async throws -> T {
        try await withPrimaryLease(purpose: "primary", body)
    }

    // MARK: Notifications

    /// The notifications sent on `channel` (`NOTIFY channel, 'payload'` or `pg_notify`) on the
    /// primary, following it across failovers and switchovers: the subscription holds a connection
    /// of its own to the primary (outside the pools) and, when the primary changes or the
    /// connection fails, subscribes again on the primary then published, every 100 ms until it
    /// succeeds. A notification sent while no subscription is in place is not delivered (as with
    /// any LISTEN); a consumer more than 10,000 notifications behind loses the oldest. The stream
    /// ends when the task iterating it is cancelled or the client shuts down.
    public func notifications(channel: String) -> AsyncThrowingStream<PostgresNotification, any Error> {
        // Bounded: a consumer that falls behind a flood loses the oldest, not the process's memory.
        let (stream, continuation) = AsyncThrowingStream<PostgresNotification, any Error>.makeStream(
            bufferingPolicy: .bufferingNewest(10_000))
        let task = Task { [self] in
            while !Task.isCancelled, !isShutdown.load(ordering: .acquiring) {
                guard let pool = primaryPool.current.pool else {
                    try? await Task.sleep(for: .milliseconds(100))
                    continue
                }
                let connection: ServerConnection
                do {
                    connection = try await pool.openDedicated()
                } catch {
                    logger.debug(
                        "LISTEN: no connection to the primary yet",
                        metadata: ["client.channel": "\(channel)", "client.error": "\(error)"])
                    try? await Task.sleep(for: .milliseconds(100))
                    continue
                }
                logger.info(
                    "LISTEN subscribed on the primary",
                    metadata: ["client.channel": "\(channel)", "client.server": "\(pool.server)"])
                // Ends the subscription when the primary changes (the old one may stay up, demoted).
                let watcher = Task { [self] in
                    while !Task.isCancelled, primaryPool.current.pool === pool, !isShutdown.load(ordering: .acquiring) {
                        try? await Task.sleep(for: .milliseconds(50))
                    }
                    connection.interrupt()
                }
                do {
                    try await connection.postgres.listen(on: channel) { notifications in
                        for try await notification in notifications { continuation.yield(notification) }
                    }
                } catch {
                    logger.info(
                        "LISTEN subscription ended; subscribing again on the primary",
                        metadata: [
                            "client.channel": "\(channel)", "client.error": "\(ServerConnection.describe(error))",
                        ])
                }
                watcher.cancel()
                await connection.close()
                // Not a tight loop when the server accepts and drops the subscription at once.
                try? await Task.sleep(for: .milliseconds(100))
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    // MARK: Reads

    /// Runs a read. `consistency` (or, when nil, the task-local `BatonRouting.consistency`)
    /// decides where: `.strong` on the primary; `.eventual` on a replica (or as `whenNoReplica`
    /// says when none is usable); `.readYourWrites(token)` on a replica that replayed the token
    /// (waiting up to `readYourWritesTimeout`), else on the primary. Inside `withPrimary { }`
    /// every read goes to the primary.
    public func read<T>(
        consistency: Consistency? = nil, isolation: isolated (any Actor)? = #isolation,
        _ body: (BatonConnection) async throws -> T
    ) async throws -> T {
        let level = consistency ?? BatonRouting.consistency
        if BatonRouting.forcePrimary {
            logger.debug("read routed to the primary", metadata: ["client.reason": "withPrimary scope"])
            return try await withPrimaryLease(purpose: "read", body)
        }
        var token: WriteToken?
        switch level {
        case .strong:
            logger.debug("read routed to the primary", metadata: ["client.reason": "strong consistency"])
            return try await withPrimaryLease(purpose: "read", body)
        case .eventual:
            break
        case .readYourWrites(let value):
            token = value
        }
        // The common case without a suspension: an eventual read, a replica chosen and an idle
        // connection to it. An eventual read with no replica chosen has none to wait for.
        let span = tracer?.startSpan("baton.client.acquire", ofKind: .client)
        let chosen = token == nil ? replicaPool.choose(excluding: []) : nil
        let acquired: (ReplicaPool.Choice, PooledConnection)?
        do {
            if let chosen, let pooled = chosen.pool.acquireIdle(now: .now) {
                acquired = (chosen, pooled)
            } else if token == nil && chosen == nil {
                acquired = nil
            } else {
                acquired = try await acquireReplica(token: token, first: chosen)
            }
        } catch {
            span?.recordError(error)
            span?.end()
            throw error
        }
        if let span {
            span.attributes["baton.member"] = acquired?.0.pool.server ?? "none: the primary takes the read"
            span.attributes["baton.role"] = ServerRole.replica.rawValue
            span.attributes["baton.purpose"] = "read"
            span.end()
        }
        if let (choice, pooled) = acquired {
            logger.debug(
                "read routed to a replica",
                metadata: ["client.consistency": "\(level)", "client.server": "\(choice.pool.server)"])
            let connection = BatonConnection(pool: choice.pool, pooled: pooled)
            let value: T
            do {
                value = try await body(connection)
            } catch let thrown {
                // Classified first: a failure read from the rows marks the connection broken.
                let error = connection.escaped(thrown)
                let now = if let now = releaseAtOnce(connection) { now } else { await finish(connection).now }
                replicaPool.record(choice, success: !connection.isBroken, now: now)
                throw error
            }
            if let now = releaseAtOnce(connection) {
                replicaPool.record(choice, success: true, now: now)
                return value
            }
            let (now, end) = await finish(connection)
            replicaPool.record(choice, success: end != .cutShort, now: now)
            switch end {
            case .clean: return value
            case .leftOpen: throw self.leftOpen(connection)
            case .cutShort: throw connection.cutShortError()
            }
        }
        if token == nil && configuration.replicas.whenNoReplica == .fail {
            let excluded = replicaPool.candidates(now: .now).excluded
            throw BatonClientError(
                .noReplicaAvailable,
                "no replica can take an eventual read ("
                    + (excluded.isEmpty
                        ? "none is published"
                        : excluded.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; "))
                    + ") and no_replica_policy is 'fail'")
        }
        logger.debug(
            "read routed to the primary",
            metadata: [
                "client.consistency": "\(level)",
                "client.reason": "\(token == nil ? "no usable replica" : "no replica replayed the token in time")",
            ])
        return try await withPrimaryLease(purpose: "read", body)
    }

    // MARK: State

    /// The topology the client routes by now.
    public var topology: Topology { state.withLock { $0.topology } }

    /// Where the topology comes from now and how old it is.
    public var topologyStatus: TopologyStatus {
        let now = ContinuousClock.now
        return state.withLock { state in
            TopologyStatus(
                source: state.source, age: preferredSource == .fixed ? .zero : now - state.lastAnswer,
                failingFor: state.failingSince.map { now - $0 })
        }
    }

    /// Replicas that cannot take reads now, by member name, with the reason (state, tag, lag,
    /// breaker).
    public var excludedReplicas: [String: String] { replicaPool.candidates(now: .now).excluded }

    /// Each replica's circuit breaker state, by member name.
    public var replicaBreakers: [String: CircuitState] { replicaPool.breakerStates }

    /// Stops handing out connections, lets connections in use be returned for up to
    /// `drainTimeout`, closes everything and stops following the topology. Idempotent.
    public func shutdown() async {
        let background = state.withLock { state -> Task<Void, Never>?? in
            guard !isShutdown.load(ordering: .acquiring) else { return nil }
            isShutdown.store(true, ordering: .releasing)
            return .some(state.background)
        }
        guard let background else { return }
        let reason = BatonClientError(.shutdown, "the client is shut down; create a new one")
        let pools = [primaryPool.shutdown(reason)].compactMap { $0 } + replicaPool.shutdown(reason)
        let deadline = ContinuousClock.now + configuration.drainTimeout
        for pool in pools { await pool.drain(until: deadline) }
        for pool in pools { pool.close(because: reason, interruptInUse: true) }
        background?.cancel()
        await background?.value
        source.shutdown()
        logger.info("client shut down")
    }

    /// `Service`: follows the topology until graceful shutdown (or cancellation), then drains and
    /// closes the pools.
    public func run() async throws {
        try? await gracefulShutdown()
        await shutdown()
    }

    // MARK: Internals

    private func withPrimaryLease<T>(
        purpose: String, isolation: isolated (any Actor)? = #isolation, _ body: (BatonConnection) async throws -> T
    ) async throws -> T {
        if isShutdown.load(ordering: .acquiring) {
            throw BatonClientError(.shutdown, "the client is shut down; create a new one")
        }
        let span = tracer?.startSpan("baton.client.acquire", ofKind: .client)
        let pool: HostPool
        let pooled: PooledConnection
        do {
            (pool, pooled) =
                if let idle = primaryPool.acquireIdle(now: .now) { idle } else { try await primaryPool.acquire() }
        } catch {
            span?.recordError(error)
            span?.end()
            throw error
        }
        if let span {
            span.attributes["baton.member"] = pool.server
            span.attributes["baton.role"] = ServerRole.primary.rawValue
            span.attributes["baton.purpose"] = purpose
            span.end()
        }
        logger.debug("\(purpose) on the primary", metadata: ["client.server": "\(pool.server)"])
        let connection = BatonConnection(pool: pool, pooled: pooled)
        let value: T
        do {
            value = try await body(connection)
        } catch let thrown {
            // Classified first: a failure read from the rows marks the connection broken.
            let error = connection.escaped(thrown)
            if releaseAtOnce(connection) == nil { await finish(connection) }
            // An error that alone would be safe to retry is not, once a statement of the body may
            // have committed on its own before it: running the body again would repeat that.
            if connection.mayHaveCommitted, Self.isRetryable(error) {
                throw BatonClientError(
                    .partiallyCommitted,
                    "the body failed after one of its statements may have committed on its own (outside a "
                        + "transaction block), so it cannot simply run again; use transaction { } to make it "
                        + "all-or-nothing",
                    commitOutcomeUnknown: true, server: connection.server, cause: error)
            }
            throw error
        }
        if releaseAtOnce(connection) == nil {
            switch await finish(connection).end {
            case .clean: break
            case .leftOpen: throw leftOpen(connection)
            case .cutShort: throw connection.cutShortError()
            }
        }
        return value
    }

    private func leftOpen(_ connection: BatonConnection) -> BatonClientError {
        BatonClientError(
            .transactionLeftOpen,
            "the body returned with a transaction still open (BEGIN without COMMIT), so it was rolled back: "
                + "nothing of that transaction committed (statements before its BEGIN did, on their own). End it "
                + "with COMMIT inside the body, or use transaction { }",
            server: connection.server)
    }

    /// The WAL insert position after a write: every record the body produced lies before it.
    /// When it cannot be read, a token no replica can reach (reads then go to the primary).
    private func token(after connection: BatonConnection) async -> WriteToken {
        do {
            let rows = try await connection.query("SELECT pg_current_wal_insert_lsn()::text").decode(String.self)
            for try await text in rows { if let lsn = LSN(text: text) { return WriteToken(lsn: lsn) } }
        } catch {
            logger.warning(
                "could not read the write's WAL position; its read-your-writes reads will use the primary",
                metadata: ["client.error": "\(error)"])
        }
        return WriteToken(lsn: LSN(UInt64.max))
    }

    /// `finish` without a suspension when no transaction is left open (the common case): ends the
    /// lease, returns the connection and the instant the pool read, else nil (then call `finish`).
    private func releaseAtOnce(_ connection: BatonConnection) -> ContinuousClock.Instant? {
        guard connection.isBroken || connection.connection.tracker.transaction == .idle else { return nil }
        let quiet = connection.endLease()
        return connection.pool.release(connection.pooled, reusable: quiet && !connection.isBroken)
    }

    /// Ends the lease and returns a connection to its pool: closed if it failed or its pool closed
    /// (`release` sees to that), rolled back first if the body left a transaction open
    /// (`leftOpen`). Returns the instant the pool read.
    @discardableResult
    private nonisolated(nonsending) func finish(
        _ connection: BatonConnection
    ) async -> (now: ContinuousClock.Instant, end: LeaseEnd) {
        if let now = releaseAtOnce(connection) { return (now, .clean) }
        guard connection.endLease() else {
            // A statement still in flight from a task that outlived the body.
            return (connection.pool.release(connection.pooled, reusable: false), .clean)
        }
        // A statement's answer not yet in (its rows not consumed), or a transaction left open.
        let server = connection.connection
        let state = await server.tracker.settled(within: server.settings.statementTimeout + .seconds(1)) {
            !server.isClosed
        }
        switch state {
        case .idle:
            return (connection.pool.release(connection.pooled, reusable: true), .clean)
        case .unknown:
            // No answer: the connection failed, or the statement outlived its backstop. It cannot
            // be trusted with another body; closing it rolls back whatever it had open.
            if !server.isClosed {
                logger.warning(
                    "a connection's last statement never finished; closing it",
                    metadata: ["client.server": "\(server.address)"])
            }
            return (connection.pool.release(connection.pooled, reusable: false), .cutShort)
        case .open, .failed:
            // Roll it back unless the pool is closing anyway (closing rolls it back too).
            var reusable = connection.pool.closedReason == nil
            if reusable {
                do {
                    _ = try await server.rows("ROLLBACK", backstop: server.settings.statementTimeout)
                } catch {
                    reusable = false
                }
            }
            return (connection.pool.release(connection.pooled, reusable: reusable), .leftOpen)
        }
    }

    /// A replica connection for a read (nil when none is usable): by the strategy, skipping
    /// replicas whose connect fails (which counts against their breakers); with a token, only one
    /// that replayed it, waiting up to `readYourWritesTimeout`. `first`: a replica already chosen
    /// (its breaker admission taken) to try first.
    private nonisolated(nonsending) func acquireReplica(
        token: WriteToken?, first: ReplicaPool.Choice?
    ) async throws -> (ReplicaPool.Choice, PooledConnection)? {
        var first = first
        if let token, token.lsn.rawValue == UInt64.max { return nil }
        // Read only with a token (an eventual read never waits for a replica).
        let deadline = token.map { _ in ContinuousClock.now + configuration.replicas.readYourWritesTimeout }
        var tried: Set<String> = []
        // Bounded: each turn tries one replica; with a token, rounds repeat every 5 ms until the
        // deadline.
        while true {
            try Task.checkCancellation()
            let next = first ?? replicaPool.choose(excluding: tried)
            first = nil
            guard let choice = next else {
                guard let deadline, !tried.isEmpty, ContinuousClock.now < deadline else { return nil }
                try await Task.sleep(for: .milliseconds(5))
                tried = []
                continue
            }
            let name = choice.name
            let pool = choice.pool
            let pooled: PooledConnection
            do {
                pooled = try await pool.acquire(
                    timeout: (configuration.replicaPool ?? configuration.pool).acquireTimeout)
            } catch is CancellationError {
                replicaPool.releaseAdmission(name)
                throw CancellationError()
            } catch {
                let serverFault = BatonClientError.isServerFailure(error)
                if serverFault {
                    replicaPool.record(choice, success: false)
                } else {
                    replicaPool.releaseAdmission(name)
                }
                logger.debug(
                    "replica skipped: no connection",
                    metadata: ["client.replica": "\(name)", "client.error": "\(error)"])
                tried.insert(name)
                continue
            }
            guard let token else { return (choice, pooled) }
            // Not tried again this round (the set is filled only off the fast path).
            tried.insert(name)
            do {
                let rows = try await pooled.postgres.rows(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= \(token.description)::pg_lsn, false)",
                    backstop: pooled.postgres.settings.connectTimeout)
                if try rows.first?.decode(Bool.self) == true { return (choice, pooled) }
                let now = pool.release(pooled, reusable: true)
                replicaPool.record(choice, success: true, now: now)
            } catch {
                let failed = BatonClientError.isServerFailure(error) || error is CancellationError
                let now = pool.release(pooled, reusable: !failed)
                replicaPool.record(choice, success: !failed, now: now)
                if error is CancellationError { throw error }
            }
        }
    }

    /// Closes idle connections past their time, keeps the minimum open, updates the gauges.
    private func maintain() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            if Task.isCancelled { return }
            if let pool = primaryPool.current.pool { await pool.maintain() }
            for pool in replicaPool.pools { await pool.maintain() }
            replicaPool.recordBreakerGauges()
            if isShutdown.load(ordering: .acquiring) { return }
            sourceHealthCheck()
            topologyMetrics.record(topologyStatus)
        }
    }

    /// When no source has answered for `degradedAfter` and the configured one is failing, stops
    /// trusting the last published primary (the degraded path).
    private func sourceHealthCheck() {
        let now = ContinuousClock.now
        let degraded = state.withLock { state -> Topology? in
            guard state.failingSince != nil, !state.degraded, now - state.lastAnswer >= configuration.degradedAfter,
                !state.lastPublished.knownEndpoints.isEmpty
            else { return nil }
            state.degraded = true
            state.source = .degraded
            state.topology = state.lastPublished.degraded()
            return state.topology
        }
        if let degraded {
            logger.warning(
                "no topology source has answered for degraded_after (\(configuration.degradedAfter)); writes go to the first known member that answers as writable",
                metadata: ["client.topology": "\(degraded)"])
            topologyMetrics.record(topologyStatus)
            primaryPool.update(degraded.primary)
        }
    }
}

extension BatonClient: TopologyFeed {
    func apply(_ topology: Topology, from source: TopologySourceKind) {
        let now = ContinuousClock.now
        let previous = state.withLock { state -> (Topology, TopologySourceKind)? in
            guard !isShutdown.load(ordering: .acquiring) else { return nil }
            let previous = (state.topology, state.source)
            state.topology = topology
            state.lastPublished = topology
            state.source = source
            state.lastAnswer = now
            if source == preferredSource { state.failingSince = nil }
            state.degraded = false
            return previous
        }
        guard let (previous, previousSource) = previous else { return }
        if previousSource != source {
            logger.info(
                "routing by the \(source.rawValue) topology source",
                metadata: ["client.previous_source": "\(previousSource.rawValue)", "client.topology": "\(topology)"])
            topologyMetrics.record(topologyStatus)
        }
        if !previous.sameRouting(as: topology) {
            if previous.primary != topology.primary || previous.replicas.map(\.name) != topology.replicas.map(\.name) {
                logger.info("topology changed", metadata: ["client.topology": "\(topology)"])
            } else {
                logger.trace("topology updated", metadata: ["client.topology": "\(topology)"])
            }
        }
        primaryPool.update(topology.primary)
        replicaPool.update(topology.replicas, lagIsKnown: topology.lagIsKnown)
    }

    func sourceFailed(_ error: any Error, source: TopologySourceKind, since: ContinuousClock.Instant) {
        topologyMetrics.countFailure(of: source)
        guard source == preferredSource else {
            logger.debug("the fallback topology source failed", metadata: ["client.error": "\(error)"])
            return
        }
        let first = state.withLock { state -> Bool in
            guard state.failingSince == nil else { return false }
            state.failingSince = since
            return true
        }
        if first {
            logger.warning(
                "the \(source.rawValue) topology source failed; routing by the last topology",
                metadata: ["client.error": "\(error)"])
        }
    }
}

/// How a lease ended, past returning the connection.
enum LeaseEnd: Equatable {
    case clean
    /// The body left a transaction block open; it was rolled back.
    case leftOpen
    /// The body returned before its last statement's answer was in, and the connection failed.
    case cutShort
}

/// A transaction's isolation level (`BEGIN ISOLATION LEVEL …`).
public enum TransactionIsolation: String, Sendable {
    case readCommitted = "READ COMMITTED"
    case repeatableRead = "REPEATABLE READ"
    case serializable = "SERIALIZABLE"
}

/// Where the topology the client routes by came from.
public enum TopologySourceKind: String, Sendable, CaseIterable {
    /// Read and watched in etcd.
    case etcd
    /// An agent's `GET /cluster` (the configured source, or etcd's fallback while etcd fails).
    case rest
    /// The configuration's fixed lists.
    case fixed
    /// No source answered for `degraded_after`: writes go to whichever known member accepts a
    /// read-write connection.
    case degraded
}

/// Where the client's topology comes from now, how old it is and how long its source has failed.
public struct TopologyStatus: Sendable, Equatable {
    public var source: TopologySourceKind
    /// Time since a source last answered (zero for a fixed topology).
    public var age: Duration
    /// How long the configured source (etcd, or the REST agents) has been failing; nil while it
    /// answers.
    public var failingFor: Duration?
}

/// The topology's instruments: `baton_client_topology_age_seconds`, `baton_client_topology_source`
/// (1 for the source in use, 0 for the others, by `source`), and
/// `baton_client_topology_source_failures_total` (by `source`).
struct TopologyMetrics: Sendable {
    let age = Gauge(label: "baton_client_topology_age_seconds")
    let inUse: [TopologySourceKind: Gauge]
    let failureCounters: [TopologySourceKind: Counter]

    init() {
        var inUse: [TopologySourceKind: Gauge] = [:]
        var failures: [TopologySourceKind: Counter] = [:]
        for kind in TopologySourceKind.allCases {
            inUse[kind] = Gauge(label: "baton_client_topology_source", dimensions: [("source", kind.rawValue)])
            failures[kind] = Counter(
                label: "baton_client_topology_source_failures_total", dimensions: [("source", kind.rawValue)])
        }
        self.inUse = inUse
        self.failureCounters = failures
    }

    func record(_ status: TopologyStatus) {
        age.record(status.age.inSeconds)
        for (kind, gauge) in inUse { gauge.record(kind == status.source ? 1 : 0) }
    }

    func countFailure(of kind: TopologySourceKind) { failureCounters[kind]?.increment() }
}
