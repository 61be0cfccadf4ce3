import BatonCore
import BatonEtcd
import BatonHTTP
import Foundation
import Logging
import Synchronization

/// Where topology updates go: the client applies them, or notes that a source is failing.
protocol TopologyFeed: Sendable {
    /// A topology just read from `source`: the client routes by it.
    func apply(_ topology: Topology, from source: TopologySourceKind)
    /// A read of `source` failed (or did not answer in time); `since` is when the first read of
    /// the current run of failures started.
    func sourceFailed(_ error: any Error, source: TopologySourceKind, since: ContinuousClock.Instant)
}

/// A topology source: an initial read, then updates until the task is cancelled.
protocol TopologySourceDriver: Sendable {
    func initial() async throws -> Topology
    func run(_ feed: any TopologyFeed) async
    func shutdown()
}

// MARK: etcd

/// Reads the scope once, then watches it; every event reloads the scope (one range read, a few
/// milliseconds) and feeds the new topology.
///
/// A watch cannot be trusted to report an outage: it reconnects by itself, and a connection whose
/// peer vanished (host down, packets dropped) just goes quiet. So beside it a check reads the scope
/// every `checkInterval` (bounded by the etcd client's request timeout): each answer refreshes the
/// topology's age, each failure is reported (the client's degraded path counts from it), and while
/// etcd fails the REST fallback agents (if any) are polled every `fallbackPollInterval` instead.
/// The first answer after a failure restarts the watch, which may have died silently.
final class EtcdTopologySource: TopologySourceDriver {
    let client: EtcdClient
    let store: EtcdClusterStore
    let fallback: RESTTopologySource?
    let checkInterval: Duration
    let fallbackPollInterval: Duration
    let logger: Logger
    private let lagHistory = Mutex(LagHistory())
    private let state = Mutex(FeedState())

    private struct FeedState {
        /// The newest revision fed: older reads are not fed (the check and the watch read
        /// concurrently and may finish out of order).
        var revision: Int64 = 0
        /// When the current run of failed etcd reads began; nil while etcd answers.
        var failingSince: ContinuousClock.Instant?
    }

    init(_ options: BatonClientConfiguration.EtcdTopologyOptions, logger: Logger) {
        var etcdLogger = logger
        etcdLogger[metadataKey: "client.source"] = "etcd"
        client = EtcdClient(
            configuration: EtcdConfiguration(
                endpoints: options.endpoints, credentials: options.credentials, tls: options.tls,
                requestTimeout: options.requestTimeout),
            logger: etcdLogger)
        store = EtcdClusterStore(client: client, namespace: options.namespace, scope: options.scope, logger: etcdLogger)
        fallback =
            options.fallbackAgents.isEmpty
            ? nil
            : RESTTopologySource(agents: options.fallbackAgents, interval: options.fallbackPollInterval, logger: logger)
        checkInterval = options.checkInterval
        fallbackPollInterval = options.fallbackPollInterval
        self.logger = logger
    }

    func load() async throws -> (Topology, revision: Int64) {
        let view = try await store.loadCluster()
        let now = ContinuousClock.now
        let topology = lagHistory.withLock { Topology(view: view, lagHistory: &$0, now: now) }
        return (topology, view.revision)
    }

    /// Feeds an etcd read unless a newer revision was fed already (the read still counts as an
    /// answer then: the newer topology is fed again, refreshing its age).
    @discardableResult
    private func feed(_ read: (Topology, revision: Int64), to feed: any TopologyFeed, force: Bool = false) -> Bool {
        state.withLock { state in
            guard read.revision >= state.revision || force else { return false }
            state.revision = read.revision
            // Under the lock: reads finishing together are fed in revision order, and a fallback
            // poll that ends after etcd came back is not fed over it.
            feed.apply(read.0, from: .etcd)
            return true
        }
    }

    func initial() async throws -> Topology {
        do {
            let read = try await load()
            state.withLock { $0.revision = max($0.revision, read.revision) }
            return read.0
        } catch {
            guard let fallback else { throw error }
            logger.warning(
                "etcd unreadable; taking the first topology from the REST fallback",
                metadata: ["client.error": "\(error)"])
            return try await fallback.initial()
        }
    }

    func run(_ feed: any TopologyFeed) async {
        while !Task.isCancelled {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.follow(feed) }
                group.addTask { await self.check(feed) }
                if fallback != nil { group.addTask { await self.pollFallback(feed) } }
                // `check` returns when etcd answers again after failing: start all afresh.
                await group.next()
                group.cancelAll()
            }
        }
    }

    /// Reloads the scope on every watch event. Failures are left to `check` to report.
    private func follow(_ feed: any TopologyFeed) async {
        let after = state.withLock { $0.revision }
        for await _ in store.watch(after: after) {
            do {
                self.feed(try await load(), to: feed)
            } catch {
                if Task.isCancelled { return }
                logger.debug("reload after a watch event failed", metadata: ["client.error": "\(error)"])
            }
        }
    }

    /// Reads the scope every `checkInterval`; returns after the first answer that follows a
    /// failure (the watch may have died silently meanwhile).
    private func check(_ feed: any TopologyFeed) async {
        // Checks in a row that read an older revision than the one fed: once is a watch reload
        // that finished first; twice is etcd's revision going back (restored from a snapshot).
        var olderReads = 0
        while !Task.isCancelled {
            let started = ContinuousClock.now
            do {
                let read = try await load()
                let outage = state.withLock { state -> Duration? in
                    defer { state.failingSince = nil }
                    return state.failingSince.map { started - $0 }
                }
                if self.feed(read, to: feed) {
                    olderReads = 0
                } else {
                    olderReads += 1
                    if olderReads >= 2 {
                        logger.warning(
                            "etcd's revision went back (restored from a snapshot?); following it and watching it afresh",
                            metadata: ["client.revision": "\(read.revision)"])
                        self.feed(read, to: feed, force: true)
                        return
                    }
                }
                if let outage {
                    logger.info(
                        "etcd answers again; following it (and watching it afresh)",
                        metadata: ["client.outage": "\(outage)"])
                    return
                }
            } catch {
                if Task.isCancelled { return }
                let since = state.withLock { state in
                    let since = state.failingSince ?? started
                    state.failingSince = since
                    return since
                }
                feed.sourceFailed(error, source: .etcd, since: since)
            }
            try? await Task.sleep(until: started + checkInterval, clock: .continuous)
        }
    }

    /// While etcd fails, polls the REST fallback every `fallbackPollInterval` and feeds what it
    /// answers (on its own schedule: an etcd read that hangs until its timeout does not slow it).
    private func pollFallback(_ feed: any TopologyFeed) async {
        guard let fallback else { return }
        while !Task.isCancelled {
            try? await Task.sleep(for: fallbackPollInterval)
            guard let since = state.withLock({ $0.failingSince }) else { continue }
            do {
                let topology = try await fallback.initial()
                state.withLock { state in
                    if state.failingSince != nil { feed.apply(topology, from: .rest) }
                }
            } catch {
                if Task.isCancelled { return }
                feed.sourceFailed(error, source: .rest, since: since)
            }
        }
    }

    func shutdown() { client.shutdown() }
}

// MARK: REST

/// Polls `GET /cluster` of the agents in order (the first that answers wins) every `interval`,
/// through Baton's one HTTP client (BatonHTTP), each call within 2 s.
final class RESTTopologySource: TopologySourceDriver, Sendable {
    let agents: [String]
    let interval: Duration
    let logger: Logger
    private let lagHistory = Mutex(LagHistory())

    init(agents: [String], interval: Duration, logger: Logger) {
        self.agents = agents.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        self.interval = interval
        self.logger = logger
    }

    func initial() async throws -> Topology {
        var failures: [String] = []
        for agent in agents {
            do {
                let data = try await get(agent + "/cluster")
                let now = ContinuousClock.now
                return try lagHistory.withLock {
                    try Topology(clusterDocument: data, from: agent, lagHistory: &$0, now: now)
                }
            } catch {
                failures.append("\(agent): \(error)")
            }
        }
        throw BatonClientError(
            .topologyUnavailable, "no agent answered GET /cluster: " + failures.joined(separator: "; "))
    }

    func run(_ feed: any TopologyFeed) async {
        var failingSince: ContinuousClock.Instant?
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            let started = ContinuousClock.now
            do {
                feed.apply(try await initial(), from: .rest)
                failingSince = nil
            } catch {
                if Task.isCancelled { return }
                let since = failingSince ?? started
                failingSince = since
                feed.sourceFailed(error, source: .rest, since: since)
            }
        }
    }

    private func get(_ url: String) async throws -> Data {
        let reply = try await BatonHTTP.send("GET", url: url, timeout: .seconds(2))
        guard reply.status == 200 else {
            throw BatonClientError(.topologyUnavailable, "\(url) answered HTTP \(reply.status)")
        }
        return Data(reply.body)
    }

    func shutdown() {}
}

// MARK: Fixed

/// A fixed topology: never changes.
struct FixedTopologySource: TopologySourceDriver {
    let topology: Topology

    func initial() async throws -> Topology { topology }

    func run(_ feed: any TopologyFeed) async {
        // Nothing to watch; wait for cancellation.
        while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
    }

    func shutdown() {}
}
