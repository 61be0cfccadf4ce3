import BatonCore
import Logging
import Synchronization

/// One pool per usable replica, a circuit breaker per replica, and the strategy that spreads reads.
final class ReplicaPool: Sendable {
    let configuration: BatonClientConfiguration
    let settings: SessionSettings
    let logger: Logger
    private let state: Mutex<State>

    struct Entry {
        var replica: Topology.Replica
        var pool: HostPool
        var breaker: CircuitBreaker
        /// Why the replica may not take reads whatever its breaker says (state, tag, lag); worked
        /// out once per topology update.
        var standingExclusion: String?
        /// What the selector sees of it (weight resolved once per topology update).
        var candidate: ReplicaCandidate
    }

    private struct State {
        /// In topology order, for a stable rotation.
        var entries: [Entry] = []
        var positions: [String: Int] = [:]
        /// The candidates of the entries without a standing exclusion, in order: what a read
        /// chooses from while every one of their breakers is closed (the common case), so that a
        /// read allocates nothing to route.
        var usableWhenClosed: [ReplicaCandidate] = []
        var lagIsKnown = false
        /// Breakers of replicas that left the topology, kept for `breakerMemory` so that a replica
        /// that comes back (an agent restart) does not start with a clean record.
        var departed: [String: (endpoint: Endpoint, breaker: CircuitBreaker, at: ContinuousClock.Instant)] = [:]
        var selector: ReplicaSelector
        var shutdown: BatonClientError?
        /// Whether every usable entry's breaker is closed, kept up to date by `noteBreakers()`
        /// after every change of a breaker's state.
        var allClosed = true

        func entry(_ name: String) -> Entry? { positions[name].map { entries[$0] } }

        mutating func noteBreakers() {
            allClosed = entries.allSatisfy { $0.standingExclusion != nil || $0.breaker.state == .closed }
        }
    }

    static let breakerMemory: Duration = .seconds(300)

    init(configuration: BatonClientConfiguration, settings: SessionSettings, logger: Logger) {
        self.configuration = configuration
        self.settings = settings
        self.logger = logger
        self.state = Mutex(State(selector: ReplicaSelector(strategy: configuration.replicas.strategy)))
    }

    /// Adopts the topology's replicas: new ones get a pool and a closed breaker, departed ones (or
    /// ones whose address changed) are closed; breakers of the others are kept.
    func update(_ replicas: [Topology.Replica], lagIsKnown: Bool) {
        let now = ContinuousClock.now
        var closed: [HostPool] = []
        let limits = configuration.replicas
        state.withLock { state in
            guard state.shutdown == nil else { return }
            state.lagIsKnown = lagIsKnown
            var next: [Entry] = []
            for replica in replicas {
                let standing = ReplicaEligibility.standingExclusion(replica, lagIsKnown: lagIsKnown, limits: limits)
                let candidate = ReplicaCandidate(
                    name: replica.name, lagBytes: replica.lagBytes, lagSeconds: replica.lagSeconds,
                    weight: limits.weights[replica.name] ?? limits.weights[replica.endpoint.description]
                        ?? replica.weight ?? 1)
                if var entry = state.entry(replica.name), entry.replica.endpoint == replica.endpoint {
                    entry.replica = replica
                    entry.standingExclusion = standing
                    entry.candidate = candidate
                    next.append(entry)
                } else {
                    var breaker = CircuitBreaker(configuration: limits.breaker, now: now)
                    if let remembered = state.departed.removeValue(forKey: replica.name),
                        remembered.endpoint == replica.endpoint
                    {
                        breaker = remembered.breaker
                    }
                    next.append(
                        Entry(
                            replica: replica, pool: makePool(replica), breaker: breaker, standingExclusion: standing,
                            candidate: candidate))
                }
            }
            let kept = Set(next.map { ObjectIdentifier($0.pool) })
            for entry in state.entries where !kept.contains(ObjectIdentifier(entry.pool)) {
                closed.append(entry.pool)
                state.departed[entry.replica.name] = (entry.replica.endpoint, entry.breaker, now)
            }
            state.departed = state.departed.filter { now - $0.value.at < Self.breakerMemory }
            state.entries = next
            state.positions = Dictionary(
                next.enumerated().map { ($0.element.replica.name, $0.offset) }, uniquingKeysWith: { first, _ in first })
            state.usableWhenClosed = next.filter { $0.standingExclusion == nil }.map(\.candidate)
            state.noteBreakers()
        }
        for pool in closed {
            pool.close(
                because: BatonClientError(
                    .connectionLost, "\(pool.server) left the topology (or changed address)", server: pool.server),
                interruptInUse: false)
        }
    }

    private func makePool(_ replica: Topology.Replica) -> HostPool {
        HostPool(
            server: "\(replica.name) (\(replica.endpoint))", endpoints: [replica.endpoint], settings: settings,
            role: .replica, options: configuration.replicaPool ?? configuration.pool, logger: logger)
    }

    // MARK: Choosing

    /// The replicas that may take a read now, and why each other one may not.
    func candidates(now: ContinuousClock.Instant) -> (usable: [ReplicaCandidate], excluded: [String: String]) {
        state.withLock { state in
            var usable: [ReplicaCandidate] = []
            var excluded: [String: String] = [:]
            for entry in state.entries {
                if let reason = entry.standingExclusion
                    ?? ReplicaEligibility.breakerExclusion(entry.breaker, now: now)
                {
                    excluded[entry.replica.name] = reason
                } else {
                    usable.append(entry.candidate)
                }
            }
            return (usable, excluded)
        }
    }

    /// The candidates a read may choose from now, not in `excluding` (the case without exclusions
    /// and with every breaker closed is `choose`'s, from the prepared list).
    private static func usable(
        _ state: State, now: ContinuousClock.Instant, excluding: Set<String>
    ) -> [ReplicaCandidate] {
        state.entries.compactMap { entry in
            guard entry.standingExclusion == nil, entry.breaker.wouldAdmit(now: now),
                !excluding.contains(entry.replica.name)
            else { return nil }
            return entry.candidate
        }
    }

    /// A replica chosen for a read: `position` is where it stood in the entries when chosen, so
    /// that settling its admission needs no lookup by name while the topology has not changed.
    struct Choice {
        let name: String
        let pool: HostPool
        let position: Int
    }

    /// Picks a replica by the strategy among the usable ones not in `excluding`, and takes a
    /// breaker admission for it. nil when none is usable.
    ///
    /// The common case (nothing excluded, every breaker closed) picks from the list prepared at
    /// the last topology update, without reading the clock: a closed breaker admits at any time.
    func choose(excluding: Set<String>) -> Choice? {
        var transition: (String, CircuitBreaker.Transition)?
        let chosen = state.withLock { state -> Choice? in
            guard state.shutdown == nil else { return nil }
            if excluding.isEmpty, state.allClosed {
                guard let pick = state.selector.pick(state.usableWhenClosed),
                    let position = state.positions[pick.name]
                else { return nil }
                return Choice(name: pick.name, pool: state.entries[position].pool, position: position)
            }
            let now = ContinuousClock.now
            var tried = excluding
            // A candidate whose half-open breaker is full is skipped; bounded by the replica count.
            for _ in 0..<max(1, state.entries.count) {
                guard let pick = state.selector.pick(Self.usable(state, now: now, excluding: tried)),
                    let position = state.positions[pick.name]
                else { return nil }
                let (admitted, change) = state.entries[position].breaker.admit(now: now)
                if let change {
                    transition = (pick.name, change)
                    state.noteBreakers()
                }
                if admitted { return Choice(name: pick.name, pool: state.entries[position].pool, position: position) }
                tried.insert(pick.name)
            }
            return nil
        }
        if let (name, change) = transition { logTransition(name, change) }
        return chosen
    }

    /// Settles a breaker admission: `success` false for failures of the server or the path to it.
    /// `now` saves a clock read when the caller has just read it.
    func record(_ choice: Choice, success: Bool, now: ContinuousClock.Instant = .now) {
        record(choice.name, at: choice.position, success: success, now: now)
    }

    /// `record` by name; `position`, when given, is tried before the lookup by name.
    func record(_ name: String, at position: Int? = nil, success: Bool, now: ContinuousClock.Instant = .now) {
        let (transition, pool) = state.withLock { state -> (CircuitBreaker.Transition?, HostPool?) in
            let index: Int
            if let position, position < state.entries.count, state.entries[position].replica.name == name {
                index = position
            } else if let found = state.positions[name] {
                index = found
            } else {
                return (nil, nil)
            }
            let change = state.entries[index].breaker.record(success: success, now: now)
            if change != nil { state.noteBreakers() }
            return (change, state.entries[index].pool)
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
            guard let position = state.positions[name] else { return }
            state.entries[position].breaker.release(now: now)
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
        state.withLock { state in
            Dictionary(
                state.entries.map { ($0.replica.name, $0.breaker.state) }, uniquingKeysWith: { first, _ in first })
        }
    }

    func recordBreakerGauges() {
        let entries = state.withLock { $0.entries }
        for entry in entries { entry.pool.metrics.breaker.record(entry.breaker.state.gaugeValue) }
    }

    var pools: [HostPool] { state.withLock { $0.entries.map(\.pool) } }

    func shutdown(_ reason: BatonClientError) -> [HostPool] {
        state.withLock { state in
            state.shutdown = reason
            return state.entries.map(\.pool)
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
        standingExclusion(replica, lagIsKnown: lagIsKnown, limits: limits) ?? breakerExclusion(breaker, now: now)
    }

    /// What keeps a replica from reads until the topology changes: its state, its tag, its lag.
    static func standingExclusion(
        _ replica: Topology.Replica, lagIsKnown: Bool, limits: BatonClientConfiguration.ReplicaOptions
    ) -> String? {
        if replica.state != "running" { return "state \(replica.state)" }
        if replica.noLoadBalance { return "tagged noloadbalance" }
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

    static func breakerExclusion(_ breaker: CircuitBreaker, now: ContinuousClock.Instant) -> String? {
        breaker.wouldAdmit(now: now) ? nil : "circuit breaker \(breaker.state.rawValue)"
    }
}
