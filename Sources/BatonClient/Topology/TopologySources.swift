import BatonCore
import BatonEtcd
import BatonHTTP
import Foundation
import Logging
import Synchronization

/// Where topology updates go: the client applies them, or notes that its source is failing.
protocol TopologyFeed: Sendable {
    func apply(_ topology: Topology)
    func sourceFailed(_ error: any Error)
}

/// A topology source: an initial read, then updates until the task is cancelled.
protocol TopologySourceDriver: Sendable {
    func initial() async throws -> Topology
    func run(_ feed: any TopologyFeed) async
    func shutdown()
}

// MARK: etcd

/// Reads the scope once, then watches it; every event reloads the scope (one range read, a few
/// milliseconds) and feeds the new topology. While etcd fails, REST fallback agents (if any) are
/// polled instead.
final class EtcdTopologySource: TopologySourceDriver {
    let client: EtcdClient
    let store: EtcdClusterStore
    let fallback: RESTTopologySource?
    let logger: Logger
    private let lagHistory = Mutex(LagHistory())
    private let revision = Mutex<Int64>(0)

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
        self.logger = logger
    }

    func load() async throws -> Topology {
        let view = try await store.loadCluster()
        revision.withLock { $0 = max($0, view.revision) }
        let now = ContinuousClock.now
        return lagHistory.withLock { Topology(view: view, lagHistory: &$0, now: now) }
    }

    func initial() async throws -> Topology {
        do {
            return try await load()
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
            let after = revision.withLock { $0 }
            for await _ in store.watch(after: after) {
                do {
                    feed.apply(try await load())
                } catch is CancellationError {
                    return
                } catch {
                    feed.sourceFailed(error)
                    if let fallback, let topology = try? await fallback.initial() { feed.apply(topology) }
                }
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
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
                feed.apply(try await initial())
            } catch is CancellationError {
                return
            } catch {
                feed.sourceFailed(error)
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
