import BatonCore
import BatonPostgres
import Logging
import Synchronization

/// One pool per usable replica, a circuit breaker per replica, and the strategy that spreads reads.
final class ReplicaPool: Sendable {
    let configuration: BatonClientConfiguration
    let logger: Logger
    private let state: Mutex<State>

    struct Entry {
        var replica: Topology.Replica
        var pool: HostPool
        var breaker: CircuitBreaker
    }

    private struct State {
        var entries: [String: Entry] = [:]
        /// In topology order, for a stable rotation.
        var order: [String] = []
        var lagIsKnown = false
        /// Breakers of replicas that left the topology, kept for `breakerMemory` so that a replica
        /// that comes back (an agent restart) does not start with a clean record.
        var departed: [String: (endpoint: Endpoint, breaker: CircuitBreaker, at: ContinuousClock.Instant)] = [:]
        var selector: ReplicaSelector
        var shutdown: BatonClientError?
    }

    static let breakerMemory: Duration = .seconds(300)

    init(configuration: BatonClientConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.state = Mutex(State(selector: ReplicaSelector(strategy: configuration.replicas.strategy)))
    }

    /// Adopts the topology's replicas: new ones get a pool and a closed breaker, departed ones (or
    /// ones whose address changed) are closed; breakers of the others are kept.
    func update(_ replicas: [Topology.Replica], lagIsKnown: Bool) {
        let now = ContinuousClock.now
        var closed: [HostPool] = []
        state.withLock { state in
            guard state.shutdown == nil else { return }
            state.lagIsKnown = lagIsKnown
            var next: [String: Entry] = [:]
            for replica in replicas {
                if var entry = state.entries[replica.name], entry.replica.endpoint == replica.endpoint {
                    entry.replica = replica
                    next[replica.name] = entry
                } else {
                    var breaker = CircuitBreaker(configuration: configuration.replicas.breaker, now: now)
                    if let remembered = state.departed.removeValue(forKey: replica.name),
                        remembered.endpoint == replica.endpoint
                    {
                        breaker = remembered.breaker
                    }
                    next[replica.name] = Entry(replica: replica, pool: makePool(replica), breaker: breaker)
                }
            }
            for (name, entry) in state.entries where next[name]?.pool !== entry.pool {
                closed.append(entry.pool)
                state.departed[name] = (entry.replica.endpoint, entry.breaker, now)
            }
            state.departed = state.departed.filter { now - $0.value.at < Self.breakerMemory }
            state.entries = next
            state.order = replicas.map(\.name)
        }
        for pool in closed {
            pool.close(
                because: BatonClientError(
                    .connectionLost, "\(pool.server) left the topology (or changed address)", server: pool.server),
                interruptInUse: false)
        }
    }

    private func makePool(_ replica: Topology.Replica) -> HostPool {
        var parameters = configuration.connectionParameters(for: .replica)
        parameters.host = replica.endpoint.host
        parameters.port = replica.endpoint.port
        return HostPool(
            server: "\(replica.name) (\(replica.endpoint))", parameters: parameters, role: .replica,
            options: configuration.replicaPool ?? configuration.pool, logger: logger)
    }

    // MARK: Choosing

    /// The replicas that may take a read now, and why each other one may not.
    func candidates(now: ContinuousClock.Instant) -> (usable: [ReplicaCandidate], excluded: [String: String]) {
        state.withLock { state in
            Self.filter(state: state, limits: configuration.replicas, now: now, excluding: [])
        }
    }

    private static func filter(
        state: State, limits: BatonClientConfiguration.ReplicaOptions, now: ContinuousClock.Instant,
        excluding: Set<String>
    ) -> (usable: [ReplicaCandidate], excluded: [String: String]) {
        var usable: [ReplicaCandidate] = []
        var excluded: [String: String] = [:]
        for name in state.order {
            guard let entry = state.entries[name] else { continue }
            if let reason = ReplicaEligibility.exclusion(
                entry.replica, breaker: entry.breaker, lagIsKnown: state.lagIsKnown, limits: limits, now: now)
            {
                excluded[name] = reason
            } else if excluding.contains(name) {
                excluded[name] = "already tried for this read"
            } else {
                usable.append(
                    ReplicaCandidate(
                        name: name, lagBytes: entry.replica.lagBytes, lagSeconds: entry.replica.lagSeconds,
                        weight: limits.weights[name] ?? limits.weights[entry.replica.endpoint.description]
                            ?? entry.replica.weight ?? 1))
            }
        }
        return (usable, excluded)
    }

    /// Picks a replica by the strategy among the usable ones not in `excluding`, and takes a
    /// breaker admission for it. nil when none is usable.
    func choose(excluding: Set<String>) -> (name: String, pool: HostPool)? {
        let now = ContinuousClock.now
        var transition: (String, CircuitBreaker.Transition)?
        let chosen = state.withLock { state -> (String, HostPool)? in
            guard state.shutdown == nil else { return nil }
            var tried = excluding
            // A candidate whose half-open breaker is full is skipped; bounded by the replica count.
            for _ in 0..<max(1, state.order.count) {
                let (usable, _) = Self.filter(state: state, limits: configuration.replicas, now: now, excluding: tried)
                guard let pick = state.selector.pick(usable), var entry = state.entries[pick.name] else { return nil }
                let (admitted, change) = entry.breaker.admit(now: now)
                state.entries[pick.name] = entry
                if let change { transition = (pick.name, change) }
                if admitted { return (pick.name, entry.pool) }
                tried.insert(pick.name)
            }
            return nil
        }
        if let (name, change) = transition { logTransition(name, change) }
        return chosen
    }

    /// Settles a breaker admission: `success` false for failures of the server or the path to it.
    func record(_ name: String, success: Bool) {
        let now = ContinuousClock.now
        let (transition, pool) = state.withLock { state -> (CircuitBreaker.Transition?, HostPool?) in
            guard var entry = state.entries[name] else { return (nil, nil) }
            let change = entry.breaker.record(success: success, now: now)
            state.entries[name] = entry
            return (change, entry.pool)
        }
        if let transition {
            logTransition(name, transition)
            pool?.metrics.breaker.record(transition.to.gaugeValue)
        }
        // The server failed: its other idle connections are most likely dead too.
        if !success { pool?.discardIdle() }
    }

    /// Gives back an admission that never ran a request.
    func releaseAdmission(_ name: String) {
        let now = ContinuousClock.now
        state.withLock { state in
            guard var entry = state.entries[name] else { return }
            entry.breaker.release(now: now)
            state.entries[name] = entry
        }
    }

    private func logTransition(_ name: String, _ transition: CircuitBreaker.Transition) {
        let level: Logger.Level = transition.to == .open ? .warning : .info
        logger.log(
            level: level, "replica circuit breaker \(transition.from.rawValue) → \(transition.to.rawValue)",
            metadata: ["client.replica": "\(name)", "client.reason": "\(transition.reason)"])
    }

    /// Breaker states by replica name (for tests, logs and the example).
    var breakerStates: [String: CircuitState] {
        state.withLock { $0.entries.mapValues(\.breaker.state) }
    }

    func recordBreakerGauges() {
        let entries = state.withLock { Array($0.entries.values) }
        for entry in entries { entry.pool.metrics.breaker.record(entry.breaker.state.gaugeValue) }
    }

    var pools: [HostPool] { state.withLock { $0.entries.values.map(\.pool) } }

    func shutdown(_ reason: BatonClientError) -> [HostPool] {
        state.withLock { state in
            state.shutdown = reason
            return state.entries.values.map(\.pool)
        }
    }
}

/// Whether a replica may take reads (pure; unit-tested).
enum ReplicaEligibility {
    /// nil when usable, else the reason it is not.
    static func exclusion(
        _ replica: Topology.Replica, breaker: CircuitBreaker, lagIsKnown: Bool,
        limits: BatonClientConfiguration.ReplicaOptions, now: ContinuousClock.Instant
    ) -> String? {
        if replica.state != "running" { return "state \(replica.state)" }
        if replica.noLoadBalance { return "tagged noloadbalance" }
        if !breaker.wouldAdmit(now: now) { return "circuit breaker \(breaker.state.rawValue)" }
        if lagIsKnown {
            if let limit = limits.maxLagBytes {
                guard let lag = replica.lagBytes else { return "lag unknown (limit \(limit) B)" }
                if lag > limit { return "lag \(lag) B over the limit of \(limit) B" }
            }
            if let limit = limits.maxLag {
                guard let lag = replica.lagSeconds else { return "lag unknown (limit \(limit))" }
                if lag > limit.inSeconds { return "lag \(lag) s over the limit of \(limit)" }
            }
        }
        return nil
    }
}
