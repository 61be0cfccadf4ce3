import BatonCore

extension EtcdClient {
    /// `/v3/lease/grant`. etcd may grant more than asked (it has a minimum TTL of a few seconds).
    public func grantLease(ttl seconds: Int64) async throws -> EtcdLeaseGrant {
        let body = WireEncoding.encode(["TTL": WireEncoding.int64(max(1, seconds))])
        return try await call("/v3/lease/grant", body: body, idempotent: false) {
            (wire: WireObject) throws(WireError) in try EtcdLeaseGrant(wire: wire)
        }
    }

    /// `/v3/lease/keepalive`: renews the lease once. `.expired` when etcd no longer knows it.
    public func keepAlive(lease id: Int64) async throws -> EtcdKeepAliveResult {
        let body = WireEncoding.encode(["ID": WireEncoding.int64(id)])
        do {
            return try await call("/v3/lease/keepalive", body: body, idempotent: true) {
                (wire: WireObject) throws(WireError) in try EtcdKeepAliveResult(wire: wire)
            }
        } catch let error as StoreError where error.code == .leaseNotFound {
            return .expired
        }
    }

    /// `/v3/lease/revoke`: ends the lease and deletes its keys. Returns false when the lease did
    /// not exist (already expired or revoked).
    @discardableResult
    public func revokeLease(_ id: Int64) async throws -> Bool {
        let body = WireEncoding.encode(["ID": WireEncoding.int64(id)])
        do {
            _ = try await call("/v3/lease/revoke", body: body, idempotent: true) {
                (wire: WireObject) throws(WireError) in try EtcdResponseHeader(wire: try wire.object("header"))
            }
            return true
        } catch let error as StoreError where error.code == .leaseNotFound {
            return false
        }
    }

    /// `/v3/lease/timetolive`; `ttl == -1` when the lease does not exist.
    public func leaseTimeToLive(_ id: Int64, keys: Bool = false) async throws -> EtcdLeaseTimeToLive {
        var request: [String: Any] = ["ID": WireEncoding.int64(id)]
        if keys { request["keys"] = true }
        return try await call("/v3/lease/timetolive", body: WireEncoding.encode(request), idempotent: true) {
            (wire: WireObject) throws(WireError) in try EtcdLeaseTimeToLive(wire: wire)
        }
    }
}
