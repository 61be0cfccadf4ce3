import BatonCore
import BatonHA
import Foundation
import Logging

/// N agents running the real `HALoop` over simulated PostgreSQL nodes and one in-memory store,
/// all on one manual clock. The driver advances time in ticks, replicates WAL, runs each live
/// agent's cycle when its `loop_wait` is up, injects faults, and checks after every tick:
///
/// * never two writable primaries;
/// * a writable primary always holds the leader key (outside pause mode), i.e. a lost lease is
///   acted on before the store could give the key to anyone else;
/// * no promotion further than `maximum_lag_on_failover` behind the leader's published optime.
public final class SimulatedCluster: @unchecked Sendable {
    public struct Options: Sendable {
        public var nodes = 3
        public var ttl: Double = 4
        public var loopWait: Double = 1
        public var retryTimeout: Double = 1.5
        public var maximumLag: UInt64 = 1_048_576
        public var tick: Duration = .milliseconds(100)
        /// WAL bytes a writable primary produces per tick.
        public var writeBytesPerTick: UInt64 = 32_768
        public var synchronousMode = false
        /// More of the initial `config` key (e.g. `standby_cluster`).
        public var dynamicExtra: [String: JSONValue] = [:]
        public init() {}
    }

    /// A fault the driver can inject.
    public enum Fault: CaseIterable, Sendable {
        case crashPostgres, killAgent, restartAgent, freezeAgent, partitionFromStore, lagReplica, switchover,
            wholeNodeCrash
        /// The agent's status query fails ("unknown") for a while: a changed password, no
        /// connection slots. Postgres itself goes on as it was.
        case blindAgent
    }

    final class Agent: @unchecked Sendable {
        let name: String
        let node: SimulatedPostgres
        let backstop: SimulatedFenceGuard
        var store: InMemoryClusterStore
        var loop: HALoop?
        var frozenUntil: MonotonicInstant?
        var partitionedUntil: MonotonicInstant?
        var lagUntil: MonotonicInstant?
        var blindUntil: MonotonicInstant?
        /// When this agent's store partition last ended (healed or timed out).
        var storeBackAt: MonotonicInstant?
        var nextCycle: MonotonicInstant

        init(
            name: String, node: SimulatedPostgres, backstop: SimulatedFenceGuard, store: InMemoryClusterStore,
            at: MonotonicInstant
        ) {
            self.name = name
            self.node = node
            self.backstop = backstop
            self.store = store
            self.nextCycle = at
        }
    }

    public let options: Options
    public let clock = ManualClock()
    public let backend: InMemoryStoreBackend
    let observer: InMemoryClusterStore
    var agents: [Agent] = []
    var nodesByName: [String: SimulatedPostgres] = [:]
    public private(set) var violations: [String] = []
    public private(set) var events: [String] = []
    public private(set) var promotionCount = 0
    public private(set) var backstopFirings = 0
    /// The largest true lag (bytes behind the last writable primary) seen at any promotion.
    public private(set) var worstPromotionLag: UInt64 = 0
    var lastPrimaryLSN: UInt64 = 0
    var seenPromotions: [String: Int] = [:]
    let quiet: Logger = {
        if ProcessInfo.processInfo.environment["BATON_SIM_LOG"] != nil {
            var logger = Logger(label: "sim", factory: { StreamLogHandler.standardError(label: $0) })
            logger.logLevel = .debug
            return logger
        }
        return Logger(label: "sim", factory: { _ in SwiftLogNoOpLogHandler() })
    }()

    public init(options: Options = Options()) {
        self.options = options
        self.backend = InMemoryStoreBackend(clock: clock)
        self.observer = backend.makeStore()
        for index in 0..<options.nodes {
            let name = "node\(index + 1)"
            let node = SimulatedPostgres(name: name) { [weak self] other in self?.nodesByName[other] }
            nodesByName[name] = node
            let agent = Agent(
                name: name, node: node, backstop: SimulatedFenceGuard(node: node, clock: clock),
                store: backend.makeStore(), at: clock.now + .milliseconds(100 * Int64(index)))
            agents.append(agent)
        }
        for agent in agents { agent.loop = makeLoop(agent) }
    }

    var dynamicConfig: DynamicConfig {
        DynamicConfig(
            [
                "ttl": .number(options.ttl), "loop_wait": .number(options.loopWait),
                "retry_timeout": .number(options.retryTimeout),
                "maximum_lag_on_failover": .number(Double(options.maximumLag)),
                "synchronous_mode": .bool(options.synchronousMode),
            ].merging(options.dynamicExtra) { _, extra in extra })
    }

    func makeLoop(_ agent: Agent) -> HALoop {
        let index = Int(agent.name.dropFirst(4)) ?? 0
        let configuration = HAConfiguration(
            name: agent.name, connURL: "postgres://10.0.0.\(index):5432/postgres",
            apiURL: "http://10.0.0.\(index):8008/patroni", initialDynamicConfig: dynamicConfig)
        return HALoop(
            configuration: configuration, store: agent.store, node: agent.node, clock: clock,
            peers: SimulatedPeers(cluster: self, me: agent.name), fenceGuard: agent.backstop,
            wallClock: { 1_790_000_000 }, logger: quiet)
    }

    // MARK: Driving

    /// Advances one tick: time, lease expiry, replication, writes, agent cycles, fences, checks.
    public func step() async {
        clock.advance(by: options.tick)
        let now = clock.now
        backend.expireSessions()
        for agent in agents {
            if let until = agent.frozenUntil, now >= until { agent.frozenUntil = nil }
            if let until = agent.partitionedUntil, now >= until {
                agent.partitionedUntil = nil
                agent.store.partitioned = false
                agent.storeBackAt = now
            }
            if let until = agent.lagUntil, now >= until {
                agent.lagUntil = nil
                agent.node.mutate { $0.replicationPaused = false }
            }
            if let until = agent.blindUntil, now >= until {
                agent.blindUntil = nil
                agent.node.mutate { $0.answer = .truthful }
            }
        }
        replicate()
        for agent in agents {
            agent.backstop.check()
            if agent.backstop.firedCount > 0 {
                backstopFirings += agent.backstop.firedCount
                agent.backstop.firedCount = 0
                note("\(agent.name): fence backstop stopped postgres")
            }
            guard let loop = agent.loop, agent.frozenUntil == nil else { continue }
            // What the agent's lease keeper task does beside the cycle.
            await loop.renewIfDue()
            await loop.checkFence()
            if now >= agent.nextCycle {
                await loop.runCycle()
                let snapshot = await loop.snapshot()
                agent.nextCycle = now + snapshot.config.loopWait
            }
        }
        await checkInvariants()
    }

    /// Runs `seconds` of simulated time.
    public func run(seconds: Double) async {
        let ticks = Int(
            seconds / (Double(options.tick.components.attoseconds) / 1e18 + Double(options.tick.components.seconds)))
        for _ in 0..<max(1, ticks) { await step() }
    }

    func replicate() {
        for agent in agents {
            let state = agent.node.snapshot
            if state.running, !state.standby {
                agent.node.mutate { $0.lsn += options.writeBytesPerTick }
                lastPrimaryLSN = max(lastPrimaryLSN, state.lsn + options.writeBytesPerTick)
            }
        }
        for agent in agents {
            let state = agent.node.snapshot
            guard state.running, state.standby, !state.replicationPaused, let upstream = state.upstream,
                let source = nodesByName[upstream]?.snapshot, source.running, source.timeline >= state.timeline
            else { continue }
            agent.node.mutate {
                $0.lsn = max($0.lsn, source.lsn)
                $0.timeline = source.timeline
            }
        }
    }

    // MARK: Faults

    /// Injects `fault` on a random agent chosen with `rng`.
    public func inject(_ fault: Fault, using rng: inout some RandomNumberGenerator) async {
        let now = clock.now
        guard let agent = agents.randomElement(using: &rng) else { return }
        let seconds = Duration.milliseconds(Int64.random(in: 500...Int64(options.ttl * 2500), using: &rng))
        switch fault {
        case .crashPostgres:
            agent.node.crash()
            note("\(agent.name): postgres killed")
        case .killAgent:
            agent.loop = nil
            note("\(agent.name): agent killed")
        case .restartAgent:
            guard agent.loop == nil else { return }
            agent.store = backend.makeStore()
            agent.loop = makeLoop(agent)
            agent.nextCycle = now
            note("\(agent.name): agent restarted")
        case .wholeNodeCrash:
            agent.loop = nil
            agent.node.crash()
            note("\(agent.name): whole node crashed")
        case .freezeAgent:
            agent.frozenUntil = now + seconds
            note("\(agent.name): agent frozen for \(seconds)")
        case .partitionFromStore:
            agent.store.partitioned = true
            agent.partitionedUntil = now + seconds
            note("\(agent.name): cut from the store for \(seconds)")
        case .lagReplica:
            agent.node.mutate { $0.replicationPaused = true }
            agent.lagUntil = now + seconds * 2
            note("\(agent.name): replication paused for \(seconds * 2)")
        case .blindAgent:
            blind(agent.name, for: seconds)
        case .switchover:
            guard let view = try? await observer.loadCluster(), let leader = view.leader?.member,
                let candidate = agents.map(\.name).filter({ $0 != leader }).randomElement(using: &rng)
            else { return }
            _ = try? await observer.writeFailover(FailoverRequest(leader: leader, member: candidate), expected: nil)
            note("switchover requested: \(leader) → \(candidate)")
        }
    }

    /// Applies a merge patch to the `config` key, as `PATCH /config` or `edit-config` would.
    public func patchConfig(_ patch: JSONValue) async throws {
        let view = try await observer.loadCluster()
        let current = view.config?.value ?? DynamicConfig()
        let written = try await observer.writeConfig(current.merging(patch: patch), expected: view.config?.modRevision)
        note("config patched: \(written ? "written" : "lost a race")")
    }

    /// The cluster as a client of the store sees it now.
    public func loadCluster() async throws -> ClusterView { try await observer.loadCluster() }

    /// Cuts one agent from the store until `healAll()`.
    public func cutFromStore(_ name: String) {
        guard let agent = agent(name) else { return }
        agent.store.partitioned = true
        note("\(name): cut from the store")
    }

    /// Heals every fault and restarts dead agents.
    public func healAll() {
        for agent in agents {
            agent.frozenUntil = nil
            agent.partitionedUntil = nil
            if agent.store.partitioned { agent.storeBackAt = clock.now }
            agent.store.partitioned = false
            agent.lagUntil = nil
            agent.blindUntil = nil
            agent.node.mutate {
                $0.replicationPaused = false
                $0.answer = .truthful
            }
            if agent.loop == nil {
                agent.store = backend.makeStore()
                agent.loop = makeLoop(agent)
                agent.nextCycle = clock.now
            }
        }
        note("all faults healed")
    }

    // MARK: Checks

    public var writablePrimaries: [String] { agents.filter { $0.node.isWritablePrimary }.map(\.name) }

    public func leaderKeyHolder() async -> String? { try? await observer.loadCluster().leader?.member }

    public func streamingReplicas() -> [String] {
        agents.filter {
            let s = $0.node.snapshot
            return s.running && s.standby && s.upstream != nil
        }.map(\.name)
    }

    func checkInvariants() async {
        let primaries = writablePrimaries
        if primaries.count > 1 {
            violate("two writable primaries: \(primaries.joined(separator: ", "))")
        }
        let view = try? await observer.loadCluster()
        // Failsafe mode keeps a primary that cannot reach the store (and that every member
        // confirms) running without the key, as Patroni does; "two writable primaries" still holds.
        // Once the store is back, it takes the key again at its next cycle.
        let now = clock.now
        let grace = Duration.milliseconds(Int64((options.loopWait + 0.5) * 1000))
        let failsafe = { (name: String) -> Bool in
            guard view?.dynamicConfig.failsafeMode == true, let agent = self.agent(name) else { return false }
            return agent.store.partitioned || agent.storeBackAt.map { now - $0 <= grace } == true
        }
        if let primary = primaries.first, let view, view.leader?.member != primary, !view.dynamicConfig.pause,
            !failsafe(primary)
        {
            violate("\(primary) accepts writes without holding the leader key (key: \(view.leader?.member ?? "none"))")
        }
        for agent in agents {
            let promotions = agent.node.snapshot.promotions
            let seen = seenPromotions[agent.name] ?? 0
            guard promotions.count > seen else { continue }
            seenPromotions[agent.name] = promotions.count
            promotionCount += promotions.count - seen
            for promotion in promotions[seen...] {
                let published = view?.status?.optime.rawValue ?? 0
                let lagToPublished = published > promotion.lsn ? published - promotion.lsn : 0
                if lagToPublished > options.maximumLag {
                    violate("\(agent.name) promoted \(lagToPublished) bytes behind the published optime")
                }
                let trueLag = lastPrimaryLSN > promotion.lsn ? lastPrimaryLSN - promotion.lsn : 0
                worstPromotionLag = max(worstPromotionLag, trueLag)
                note("\(agent.name): promoted on timeline \(promotion.timeline)")
            }
        }
    }

    func violate(_ message: String) {
        let text = "t=\(clock.now): \(message)"
        if violations.last != text { violations.append(text) }
    }

    func note(_ message: String) {
        events.append("t=\(clock.now.sinceOrigin.secondsText): \(message)")
        if events.count > 400 { events.removeFirst(100) }
    }

    func node(named name: String) -> SimulatedPostgres? { nodesByName[name] }

    func agentReachable(_ name: String) -> Bool {
        guard let agent = agents.first(where: { $0.name == name }) else { return false }
        return agent.loop != nil && agent.frozenUntil == nil
    }
}

/// The fence backstop beside a simulated node: it keeps running when the agent is frozen or dead.
final class SimulatedFenceGuard: FenceGuard, @unchecked Sendable {
    let node: SimulatedPostgres
    let clock: ManualClock
    private let lock = NSLock()
    private var deadline: MonotonicInstant?
    var firedCount = 0

    init(node: SimulatedPostgres, clock: ManualClock) {
        self.node = node
        self.clock = clock
    }

    func arm(remaining: Duration) async {
        let now = clock.now
        lock.withLock { deadline = now + remaining }
    }

    func disarm() async { lock.withLock { deadline = nil } }

    /// Set by a test: the guard process is gone and cannot be restarted.
    var down = false
    var isRunning: Bool { lock.withLock { !down } }

    func check() {
        let fire: Bool = lock.withLock {
            guard let deadline, clock.now >= deadline else { return false }
            self.deadline = nil
            return true
        }
        if fire, node.isWritablePrimary {
            node.crash()
            firedCount += 1
        }
    }
}

/// Peers answer from their simulated nodes when their agent is alive and not frozen.
struct SimulatedPeers: PeerProbe {
    let cluster: SimulatedCluster
    let me: String

    func status(of members: [Member]) async -> [PeerStatus] {
        members.map { member in
            guard cluster.agentReachable(member.name), let node = cluster.node(named: member.name) else {
                return PeerStatus(name: member.name, reachable: false)
            }
            let state = node.snapshot
            return PeerStatus(
                name: member.name, reachable: true, runningAsPrimary: state.running && !state.standby,
                walPosition: state.hasData ? LSN(state.lsn) : nil, timeline: state.timeline, tags: member.tags)
        }
    }

    func confirmFailsafe(leader: String, connURL: String, apiURL: String, members: [String: String]) async -> Bool {
        members.keys.allSatisfy { cluster.agentReachable($0) }
    }
}

/// A small, fast, seedable generator (SplitMix64), so a failing random run can be replayed.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { self.state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in 0..<n (0 when n ≤ 1).
    public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(1, n))) }

    /// One of `items`, which must not be empty.
    public mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }
}

extension SimulatedCluster {
    func agent(_ name: String) -> Agent? { agents.first { $0.name == name } }

    /// One agent's HA loop (nil after a whole-node crash), for tests that talk to it directly.
    public func loop(named name: String) -> HALoop? { agent(name)?.loop }
    /// One agent's simulated postgres.
    public func postgres(named name: String) -> SimulatedPostgres? { nodesByName[name] }
    /// One agent's view of the store.
    public func store(named name: String) -> InMemoryClusterStore? { agent(name)?.store }

    /// SIGKILL of agent and postmaster on one node.
    public func crashWholeNode(_ name: String) {
        guard let agent = agent(name) else { return }
        agent.loop = nil
        agent.node.crash()
        note("\(name): whole node crashed")
    }

    /// SIGSTOP of one agent for `seconds` of simulated time.
    /// Makes `name`'s status query answer "unknown" for `duration` (postgres itself goes on).
    public func blind(_ name: String, for duration: Duration) {
        guard let agent = agent(name) else { return }
        agent.node.mutate { $0.answer = .unknown("simulated: password authentication failed") }
        agent.blindUntil = clock.now + duration
        note("\(name): status query fails for \(duration)")
    }

    public func freeze(_ name: String, seconds: Double) {
        agent(name)?.frozenUntil = clock.now + .milliseconds(Int64(seconds * 1000))
        note("\(name): agent frozen for \(seconds) s")
    }

    /// Stops WAL replay on one replica until healed.
    public func pauseReplication(_ name: String) {
        agent(name)?.node.mutate { $0.replicationPaused = true }
        note("\(name): replication paused")
    }
}
