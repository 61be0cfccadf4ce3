import BatonCore
import BatonPostgres
import Logging
import ServiceLifecycle
import Synchronization

/// The library applications link to use a Baton cluster: it follows the published topology and
/// keeps a primary pool (writes, strong reads) and a replica pool (eventual and read-your-writes
/// reads).
///
///     let client = try await BatonClient(configuration)
///     let (id, token) = try await client.write { conn in
///         try await conn.query("INSERT INTO t (v) VALUES ($1) RETURNING id", ["x"]).single().int("id")
///     }
///     let rows = try await client.read(consistency: .readYourWrites(token)) { conn in
///         try await conn.query("SELECT v FROM t WHERE id = $1", [String(id!)])
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
    private let state: Mutex<State>
    /// Set once by `shutdown()`, under the state lock; read without it on every request.
    private let isShutdown = Atomic<Bool>(false)

    private struct State {
        var topology: Topology = .empty
        var lastPublished: Topology = .empty
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
        self.primaryPool = PrimaryPool(configuration: configuration, logger: logger)
        self.replicaPool = ReplicaPool(configuration: configuration, logger: logger)
        switch configuration.topology {
        case .etcd(let options): source = EtcdTopologySource(options, logger: logger)
        case .rest(let agents, let interval):
            source = RESTTopologySource(agents: agents, interval: interval, logger: logger)
        case .fixed(let primaries, let replicas):
            source = FixedTopologySource(topology: .fixed(primaryHosts: primaries, readReplicas: replicas))
        }
        self.state = Mutex(State())
        let initial: Topology
        do {
            initial = try await Self.withTimeout(configuration.topologyTimeout) { [source] in try await source.initial()
            }
        } catch {
            source.shutdown()
            throw BatonClientError(
                .topologyUnavailable,
                "could not read the cluster topology within topology_timeout (\(configuration.topologyTimeout)); "
                    + "check that the topology source is reachable and the scope is right",
                cause: error)
        }
        apply(initial)
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
            return (value, await self.token(after: connection))
        }
    }

    /// `write` inside `BEGIN` … `COMMIT`: a body that throws rolls the transaction back.
    @discardableResult
    public func transaction<T>(
        isolation: isolated (any Actor)? = #isolation, _ body: (BatonConnection) async throws -> T
    ) async throws -> (T, WriteToken) {
        try await withPrimaryLease(purpose: "transaction") { connection in
            try await connection.query("BEGIN")
            let value: T
            do {
                value = try await body(connection)
            } catch {
                if !connection.isBroken { _ = try? await connection.query("ROLLBACK") }
                throw error
            }
            try await connection.query("COMMIT")
            return (value, await self.token(after: connection))
        }
    }

    /// Runs `body` on a connection to the primary, without a token.
    public func withPrimaryConnection<T>(
        isolation: isolated (any Actor)? = #isolation, _ body: (BatonConnection) async throws -> T
    ) async throws -> T {
        try await withPrimaryLease(purpose: "primary", body)
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
        let chosen = token == nil ? replicaPool.choose(excluding: []) : nil
        let acquired: (ReplicaPool.Choice, PooledConnection)?
        if let chosen, let pooled = chosen.pool.acquireIdle(now: .now) {
            acquired = (chosen, pooled)
        } else if token == nil && chosen == nil {
            acquired = nil
        } else {
            acquired = try await acquireReplica(token: token, first: chosen)
        }
        if let (choice, pooled) = acquired {
            logger.debug(
                "read routed to a replica",
                metadata: ["client.consistency": "\(level)", "client.server": "\(choice.pool.server)"])
            let connection = BatonConnection(pool: choice.pool, pooled: pooled)
            do {
                let value = try await body(connection)
                let now = if let now = releaseAtOnce(connection) { now } else { await finish(connection) }
                replicaPool.record(choice, success: true, now: now)
                return value
            } catch {
                let now = if let now = releaseAtOnce(connection) { now } else { await finish(connection) }
                replicaPool.record(choice, success: !connection.isBroken, now: now)
                throw error
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
        let (pool, pooled) =
            if let idle = primaryPool.acquireIdle(now: .now) { idle } else { try await primaryPool.acquire() }
        logger.debug("\(purpose) on the primary", metadata: ["client.server": "\(pool.server)"])
        let connection = BatonConnection(pool: pool, pooled: pooled)
        do {
            let value = try await body(connection)
            if releaseAtOnce(connection) == nil { await finish(connection) }
            return value
        } catch {
            if releaseAtOnce(connection) == nil { await finish(connection) }
            throw error
        }
    }

    /// The WAL insert position after a write: every record the body produced lies before it.
    /// When it cannot be read, a token no replica can reach (reads then go to the primary).
    private func token(after connection: BatonConnection) async -> WriteToken {
        do {
            let row = try await connection.query("SELECT pg_current_wal_insert_lsn() AS lsn").single()
            if let lsn = try row.lsn("lsn") { return WriteToken(lsn: lsn) }
        } catch {
            logger.warning(
                "could not read the write's WAL position; its read-your-writes reads will use the primary",
                metadata: ["client.error": "\(error)"])
        }
        return WriteToken(lsn: LSN(UInt64.max))
    }

    /// `finish` without a suspension when no transaction is left open (the common case): returns
    /// the connection and the instant the pool read, else nil (then call `finish`).
    private func releaseAtOnce(_ connection: BatonConnection) -> ContinuousClock.Instant? {
        guard connection.isBroken || !connection.postgres.isInTransaction else { return nil }
        return connection.pool.release(connection.pooled, reusable: !connection.isBroken)
    }

    /// Returns a connection to its pool: closed if it failed or its pool closed (`release` sees
    /// to that), rolled back first if the body left a transaction open. Returns the instant the
    /// pool read.
    @discardableResult
    private nonisolated(nonsending) func finish(_ connection: BatonConnection) async -> ContinuousClock.Instant {
        if let now = releaseAtOnce(connection) { return now }
        // Not broken, a transaction left open: roll it back unless the pool is closing anyway.
        var reusable = true
        if connection.pool.closedReason == nil {
            do {
                _ = try await connection.postgres.query("ROLLBACK")
            } catch {
                reusable = false
            }
        }
        return connection.pool.release(connection.pooled, reusable: reusable)
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
                let serverFault =
                    (error as? PostgresError)?.isConnectionFailure == true
                    || (error as? BatonClientError)?.code == .roleMismatch
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
                let row = try await pooled.postgres.query(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false) AS ok", [token.description]
                ).single()
                if try row.bool("ok") == true { return (choice, pooled) }
                let now = pool.release(pooled, reusable: true)
                replicaPool.record(choice, success: true, now: now)
            } catch {
                let failed = (error as? PostgresError)?.isConnectionFailure == true
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
        }
    }

    /// While the source keeps failing, switches to the degraded topology after `degradedAfter`.
    private func sourceHealthCheck() {
        let now = ContinuousClock.now
        let degraded = state.withLock { state -> Topology? in
            guard let since = state.failingSince, !state.degraded, now - since >= configuration.degradedAfter,
                !state.lastPublished.knownEndpoints.isEmpty
            else { return nil }
            state.degraded = true
            state.topology = state.lastPublished.degraded()
            return state.topology
        }
        if let degraded {
            logger.warning(
                "the topology source has failed for \(configuration.degradedAfter); writes go to whichever known member accepts a read-write connection (libpq target_session_attrs=read-write)",
                metadata: ["client.topology": "\(degraded)"])
            primaryPool.update(degraded.primary)
        }
    }

    static func withTimeout<T: Sendable>(
        _ timeout: Duration, _ operation: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await operation() }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw BatonClientError(.topologyUnavailable, "timed out after \(timeout)")
            }
            return value
        }
    }
}

extension BatonClient: TopologyFeed {
    func apply(_ topology: Topology) {
        let previous = state.withLock { state -> Topology? in
            guard !isShutdown.load(ordering: .acquiring) else { return nil }
            let previous = state.topology
            state.topology = topology
            state.lastPublished = topology
            state.failingSince = nil
            state.degraded = false
            return previous
        }
        guard let previous else { return }
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

    func sourceFailed(_ error: any Error) {
        let first = state.withLock { state -> Bool in
            guard state.failingSince == nil else { return false }
            state.failingSince = .now
            return true
        }
        if first {
            logger.warning(
                "the topology source failed; routing by the last topology", metadata: ["client.error": "\(error)"])
        }
    }
}
