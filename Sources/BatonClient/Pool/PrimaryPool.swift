import Logging
import Metrics
import Synchronization

/// Connections to the published primary only. A change of primary closes the old pool (its
/// connections in use are cut, so their statements fail at once with `.primaryChanged`); while
/// there is no primary, or the new one does not answer as a primary yet, acquisitions wait up to
/// `primaryWaitTimeout` instead of failing at once.
final class PrimaryPool: Sendable {
    let configuration: BatonClientConfiguration
    let settings: SessionSettings
    let logger: Logger
    /// Changes of the server the pool targets, from one primary to another or to none
    /// (`baton_client_primary_changes_total`).
    let changes = Counter(label: "baton_client_primary_changes_total")
    private let state: Mutex<State>

    private struct State {
        var target: Topology.PrimaryTarget?
        var pool: HostPool?
        var waiters: [(id: UInt64, continuation: CheckedContinuation<Void, Never>)] = []
        var nextID: UInt64 = 0
        var shutdown: BatonClientError?
    }

    init(configuration: BatonClientConfiguration, settings: SessionSettings, logger: Logger) {
        self.configuration = configuration
        self.settings = settings
        self.logger = logger
        self.state = Mutex(State())
    }

    var current: (target: Topology.PrimaryTarget?, pool: HostPool?) { state.withLock { ($0.target, $0.pool) } }

    /// Points the pool at `target`. A different server (or none) closes the old pool and cuts its
    /// connections in use; a promotion being confirmed keeps it.
    func update(_ target: Topology.PrimaryTarget?) {
        let (old, waiters) = state.withLock { state -> (HostPool?, [CheckedContinuation<Void, Never>]) in
            guard state.shutdown == nil else { return (nil, []) }
            let previousKey = state.target?.poolKey
            state.target = target
            guard target?.poolKey != previousKey else { return (nil, []) }
            let old = state.pool
            state.pool = target.map(makePool)
            let waiters = state.pool == nil ? [] : state.waiters.map(\.continuation)
            if state.pool != nil { state.waiters = [] }
            return (old, waiters)
        }
        if let old {
            changes.increment()
            let now = target.map { "the primary is now \($0)" } ?? "no primary is published"
            old.close(
                because: BatonClientError(
                    .primaryChanged, "\(old.server) is no longer the primary (\(now))", server: old.server),
                interruptInUse: true)
            logger.info(
                "primary changed; closed the connections to the old primary",
                metadata: ["client.old": "\(old.server)", "client.new": "\(target?.description ?? "none")"])
        }
        for waiter in waiters { waiter.resume() }
    }

    private func makePool(_ target: Topology.PrimaryTarget) -> HostPool {
        let server: String
        let endpoints: [Endpoint]
        switch target {
        case .member(let name, let endpoint, _):
            endpoints = [endpoint]
            server = "\(name) (\(endpoint))"
        case .anyWritable(let all):
            endpoints = all
            server = "read-write of \(all.map(\.description).joined(separator: ","))"
        }
        return HostPool(
            server: server, endpoints: endpoints, settings: settings, role: .primary, options: configuration.pool,
            logger: logger)
    }

    /// `acquire`'s fast path, synchronous: an idle connection of the current primary's pool that
    /// needs no health check, or nil.
    func acquireIdle(now: ContinuousClock.Instant) -> (HostPool, PooledConnection)? {
        guard let pool = state.withLock({ $0.shutdown == nil ? $0.pool : nil }),
            let connection = pool.acquireIdle(now: now)
        else { return nil }
        return (pool, connection)
    }

    /// A connection to the primary. Retries (every 20 ms) through connect failures and role
    /// mismatches and waits through "no primary" until `primaryWaitTimeout`; a full pool waits up
    /// to `acquireTimeout`.
    nonisolated(nonsending) func acquire() async throws -> (HostPool, PooledConnection) {
        let started = ContinuousClock.now
        var lastError: (any Error)?
        var attempt = 0
        while true {
            attempt += 1
            let (pool, shutdown) = state.withLock { ($0.pool, $0.shutdown) }
            if let shutdown { throw shutdown }
            if let pool {
                do {
                    // The first attempt's pool shares our start (one clock read less); a later
                    // one's timeout runs from its own.
                    let connection = try await pool.acquire(
                        timeout: configuration.pool.acquireTimeout, started: attempt == 1 ? started : .now)
                    if attempt > 1 {
                        logger.debug(
                            "primary connection after waiting",
                            metadata: [
                                "client.server": "\(pool.server)", "client.attempts": "\(attempt)",
                                "client.waited": "\(ContinuousClock.now - started)",
                            ])
                    }
                    return (pool, connection)
                } catch let error as BatonClientError where error.code == .acquireTimeout {
                    throw error
                } catch is CancellationError {
                    throw CancellationError()
                } catch {
                    // Connect failed, wrong role (promotion not finished), or the pool was closed
                    // by a topology change: wait a little for the topology or the server.
                    lastError = error
                }
            }
            let now = ContinuousClock.now
            let primaryDeadline = started + configuration.primaryWaitTimeout
            guard now < primaryDeadline else {
                let target = state.withLock { $0.target }
                throw BatonClientError(
                    .noPrimary,
                    (target.map { "the primary \($0) did not accept a read-write connection" }
                        ?? "no primary is published")
                        + " within primary_wait_timeout (\(configuration.primaryWaitTimeout))",
                    cause: lastError)
            }
            if pool == nil {
                await waitForPool(until: primaryDeadline)
            } else {
                try await Task.sleep(for: min(.milliseconds(20), primaryDeadline - now))
            }
        }
    }

    /// Returns when a pool exists, `deadline` passes, or the task is cancelled.
    private func waitForPool(until deadline: ContinuousClock.Instant) async {
        let id = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                        let ready = self.state.withLock { state -> Bool in
                            if state.pool != nil || state.shutdown != nil || Task.isCancelled { return true }
                            state.waiters.append((id, continuation))
                            return false
                        }
                        if ready { continuation.resume() }
                    }
                } onCancel: {
                    let continuation = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
                        guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                        return state.waiters.remove(at: index).continuation
                    }
                    continuation?.resume()
                }
            }
            group.addTask { try? await Task.sleep(until: deadline, clock: .continuous) }
            await group.next()
            group.cancelAll()
        }
    }

    /// Stops handing out connections; closes the pool once `drain` returns.
    func shutdown(_ reason: BatonClientError) -> HostPool? {
        let (pool, waiters) = state.withLock { state in
            state.shutdown = reason
            let waiters = state.waiters.map(\.continuation)
            state.waiters = []
            return (state.pool, waiters)
        }
        for waiter in waiters { waiter.resume() }
        return pool
    }
}
