import BatonCore
import Logging
import Testing

@testable import BatonClient

/// Which replicas may take reads, and how the replica pool routes over a fixed topology (choosing
/// and breaker bookkeeping open no connection).
@Suite struct RoutingTests {
    let now = ContinuousClock.now

    static func replica(
        _ name: String, state: String = "running", lag: UInt64? = 0, seconds: Double? = 0, noLoadBalance: Bool = false
    ) -> Topology.Replica {
        Topology.Replica(
            name: name, endpoint: Endpoint(host: "127.0.0.1", port: 1), state: state, lagBytes: lag,
            lagSeconds: seconds, noLoadBalance: noLoadBalance)
    }

    func exclusion(
        _ replica: Topology.Replica, lagIsKnown: Bool = true, maxBytes: UInt64? = nil, maxLag: Duration? = nil
    ) -> String? {
        ReplicaEligibility.exclusion(
            replica, breaker: CircuitBreaker(configuration: .init(), now: now), lagIsKnown: lagIsKnown,
            limits: .init(maxLagBytes: maxBytes, maxLag: maxLag), now: now)
    }

    @Test func eligibility() {
        #expect(exclusion(Self.replica("a")) == nil)
        #expect(exclusion(Self.replica("a", state: "starting")) == "state starting")
        #expect(exclusion(Self.replica("a", noLoadBalance: true)) == "tagged noloadbalance")
        #expect(exclusion(Self.replica("a", lag: 2_000), maxBytes: 1_000)?.contains("over the limit") == true)
        #expect(exclusion(Self.replica("a", lag: 1_000), maxBytes: 1_000) == nil)
        #expect(exclusion(Self.replica("a", lag: nil), maxBytes: 1_000)?.contains("unknown") == true)
        #expect(exclusion(Self.replica("a", seconds: 3), maxLag: .seconds(2))?.contains("over the limit") == true)
        #expect(exclusion(Self.replica("a", seconds: 1), maxLag: .seconds(2)) == nil)
        // A fixed topology publishes no lag: limits cannot apply.
        #expect(exclusion(Self.replica("a", lag: nil), lagIsKnown: false, maxBytes: 1) == nil)
    }

    func pool(
        strategy: ReplicaStrategy = .roundRobin, breaker: CircuitBreakerConfiguration = .init(),
        maxLagBytes: UInt64? = nil
    ) -> ReplicaPool {
        var configuration = BatonClientConfiguration(
            topology: .fixed(primaryHosts: [Endpoint(host: "127.0.0.1", port: 1)], readReplicas: []), user: "u")
        configuration.replicas = .init(strategy: strategy, maxLagBytes: maxLagBytes, breaker: breaker)
        configuration.tls.mode = .disable
        // No TLS files to read: cannot fail.
        let settings = try! configuration.sessionSettings()
        return ReplicaPool(
            configuration: configuration, settings: settings,
            logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
    }

    @Test func readsSpreadAndSkipExcludedReplicas() {
        let pool = pool(maxLagBytes: 1_000)
        pool.update(
            [Self.replica("a"), Self.replica("b"), Self.replica("c", lag: 5_000), Self.replica("d", state: "stopped")],
            lagIsKnown: true)
        var counts: [String: Int] = [:]
        for _ in 0..<10 {
            guard let choice = pool.choose(excluding: []) else {
                Issue.record("no replica chosen")
                return
            }
            counts[choice.name, default: 0] += 1
            pool.record(choice, success: true)
        }
        #expect(counts == ["a": 5, "b": 5])
        #expect(pool.choose(excluding: ["a", "b"]) == nil)
        let excluded = pool.candidates(now: .now).excluded
        #expect(excluded["c"]?.contains("lag") == true && excluded["d"] == "state stopped")
    }

    @Test func aTrippedBreakerTakesItsReplicaOutAndHalfOpenBringsItBack() async throws {
        let breaker = CircuitBreakerConfiguration(
            failureRatio: 0.5, minimumRequests: 3, window: .seconds(10), openTimeout: .milliseconds(200),
            halfOpenRequests: 1)
        let pool = pool(breaker: breaker)
        pool.update([Self.replica("a"), Self.replica("b")], lagIsKnown: true)
        for _ in 0..<3 { pool.record("a", success: false) }
        #expect(pool.breakerStates["a"] == .open)
        for _ in 0..<4 { #expect(pool.choose(excluding: [])?.name == "b") }
        try await Task.sleep(for: .milliseconds(250))
        // After the open timeout, one trial request reaches "a".
        var names: [String] = []
        for _ in 0..<4 { if let choice = pool.choose(excluding: []) { names.append(choice.name) } }
        #expect(names.filter { $0 == "a" }.count == 1)
        #expect(pool.breakerStates["a"] == .halfOpen)
        pool.record("a", success: true)
        #expect(pool.breakerStates["a"] == .closed)
    }

    @Test func standingExclusionsAreWorkedOutAgainAtEachTopologyUpdate() {
        let pool = pool(maxLagBytes: 1_000)
        pool.update([Self.replica("a", lag: 5_000), Self.replica("b")], lagIsKnown: true)
        for _ in 0..<3 { #expect(pool.choose(excluding: [])?.name == "b") }
        // a caught up, b fell behind: the prepared list follows.
        pool.update([Self.replica("a", lag: 10), Self.replica("b", lag: 9_000)], lagIsKnown: true)
        for _ in 0..<3 { #expect(pool.choose(excluding: [])?.name == "a") }
        #expect(pool.candidates(now: .now).excluded.keys.sorted() == ["b"])
        pool.update([Self.replica("a", lag: 10), Self.replica("b", lag: 10)], lagIsKnown: true)
        var names = Set<String>()
        for _ in 0..<4 { if let choice = pool.choose(excluding: []) { names.insert(choice.name) } }
        #expect(names == ["a", "b"])
        #expect(pool.choose(excluding: ["a"])?.name == "b")
    }

    @Test func anOutcomeSettlesTheChosenReplicasBreakerAfterTheTopologyMoved() throws {
        let pool = pool(breaker: .init(minimumRequests: 1))
        pool.update([Self.replica("a"), Self.replica("b")], lagIsKnown: true)
        var chosen: [ReplicaPool.Choice] = []
        for _ in 0..<2 { if let choice = pool.choose(excluding: []) { chosen.append(choice) } }
        let a = try #require(chosen.first(where: { $0.name == "a" }))
        // "a" now stands second (and a new replica first): its position hint is stale.
        pool.update([Self.replica("c"), Self.replica("b"), Self.replica("a")], lagIsKnown: true)
        pool.record(a, success: false)
        #expect(pool.breakerStates == ["a": .open, "b": .closed, "c": .closed])
        // A replica gone from the topology: its outcome is dropped.
        pool.update([Self.replica("c"), Self.replica("b")], lagIsKnown: true)
        pool.record(a, success: false)
        #expect(pool.breakerStates == ["b": .closed, "c": .closed])
        // Every remaining breaker is closed: reads use the prepared list and spread.
        var names = Set<String>()
        for _ in 0..<4 { if let choice = pool.choose(excluding: []) { names.insert(choice.name) } }
        #expect(names == ["b", "c"])
    }

    @Test func aTopologyUpdateKeepsBreakersOfReplicasThatStayOrComeBack() {
        let pool = pool(breaker: .init(minimumRequests: 1))
        pool.update([Self.replica("a"), Self.replica("b")], lagIsKnown: true)
        pool.record("a", success: false)
        pool.record("b", success: false)
        #expect(pool.breakerStates == ["a": .open, "b": .open])
        pool.update([Self.replica("a", lag: 10), Self.replica("c")], lagIsKnown: true)
        #expect(pool.breakerStates == ["a": .open, "c": .closed])
        // b's agent restarted: its member key is back, its record too.
        pool.update([Self.replica("a"), Self.replica("b"), Self.replica("c")], lagIsKnown: true)
        #expect(pool.breakerStates == ["a": .open, "b": .open, "c": .closed])
    }
}
