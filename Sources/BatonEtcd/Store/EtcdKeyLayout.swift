import BatonCore

/// Patroni's key layout: every key of a cluster lives under `/<namespace>/<scope>/`.
public struct EtcdKeyLayout: Hashable, Sendable {
    /// The scope's prefix, with leading and trailing slash, e.g. `/service/batman/`.
    public let prefix: String

    /// `namespace` defaults to Patroni's `/service`; slashes around either part are normalised.
    public init(namespace: String = "/service", scope: String) {
        let parts = [namespace, scope].flatMap { $0.split(separator: "/").map(String.init) }
        prefix = "/" + parts.joined(separator: "/") + "/"
    }

    public func key(_ key: ClusterKey) -> String { prefix + key.path }

    /// The cluster key of a full etcd key, nil when the key lies outside the scope.
    public func clusterKey(_ etcdKey: String) -> ClusterKey? {
        guard etcdKey.hasPrefix(prefix), etcdKey.count > prefix.count else { return nil }
        return ClusterKey(path: String(etcdKey.dropFirst(prefix.count)))
    }
}
