import BatonCore
import Foundation

extension Topology {
    /// Builds the topology from an agent's `GET /cluster` document (Patroni's layout): the member
    /// with role `leader` is the primary (confirmed when `running`), members with role `replica`
    /// or `sync_standby` are replicas, with the published `lag` in bytes.
    public init(
        clusterDocument data: Data, from agent: String, lagHistory: inout LagHistory, now: ContinuousClock.Instant
    ) throws {
        let document: ClusterDocument
        do {
            document = try JSONDecoder().decode(ClusterDocument.self, from: data)
        } catch {
            let preview = PrintableText.of(data)
            throw BatonClientError(
                .topologyUnavailable, "\(agent)/cluster did not answer a cluster document: \(error) in '\(preview)'")
        }
        var primary: PrimaryTarget?
        var replicas: [Replica] = []
        var known: [Endpoint] = []
        var reference: LSN?
        for member in document.members {
            if let lsn = member.lsn.flatMap(LSN.init(text:)), case .bytes(let lag)? = member.lag {
                reference = max(reference ?? .zero, LSN(lsn.rawValue &+ lag))
            }
        }
        if let reference { lagHistory.record(reference, at: now) }
        for member in document.members {
            guard let host = member.host, !host.isEmpty else { continue }
            let endpoint = Endpoint(host: host, port: member.port ?? 5432)
            known.append(endpoint)
            switch member.role {
            case "leader":
                primary = .member(name: member.name, endpoint: endpoint, confirmed: member.state == "running")
            case "replica", "sync_standby", "quorum_standby":
                let position = member.lsn.flatMap(LSN.init(text:))
                var lagBytes: UInt64?
                if case .bytes(let lag)? = member.lag { lagBytes = lag }
                let state = member.state == "streaming" ? "running" : (member.state ?? "unknown")
                replicas.append(
                    Replica(
                        name: member.name, endpoint: endpoint, state: state, lagBytes: lagBytes,
                        lagSeconds: position.flatMap { lagHistory.secondsBehind($0, now: now) }, replayLSN: position,
                        noLoadBalance: member.tags?.noLoadBalance ?? false, weight: member.tags?["weight"]?.intValue))
            default:
                continue
            }
        }
        self.init(
            primary: primary, replicas: replicas, lagIsKnown: true, knownEndpoints: known, source: "\(agent)/cluster")
    }
}
