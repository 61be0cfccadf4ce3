extension EtcdClient {
    /// `/v3/kv/range`. Linearizable unless the request (or the configuration) asks for serializable.
    public func range(_ request: EtcdRangeRequest) async throws -> EtcdRangeResponse {
        var request = request
        if configuration.serializableReads { request.serializable = true }
        return try await call("/v3/kv/range", body: WireEncoding.encode(request.wire), idempotent: true) {
            (wire: WireObject) throws(WireError) in try EtcdRangeResponse(wire: wire)
        }
    }

    /// One key, or nil when it does not exist.
    public func get(_ key: String) async throws -> EtcdKeyValue? {
        try await range(EtcdRangeRequest(key: key)).kvs.first
    }

    /// `/v3/kv/put`.
    @discardableResult
    public func put(_ request: EtcdPutRequest) async throws -> EtcdPutResponse {
        try await call("/v3/kv/put", body: WireEncoding.encode(request.wire), idempotent: false) {
            (wire: WireObject) throws(WireError) in try EtcdPutResponse(wire: wire)
        }
    }

    @discardableResult
    public func put(_ key: String, _ value: String, lease: Int64 = 0) async throws -> EtcdPutResponse {
        try await put(EtcdPutRequest(key: key, value: value, lease: lease))
    }

    /// `/v3/kv/deleterange`.
    @discardableResult
    public func delete(_ request: EtcdDeleteRequest) async throws -> EtcdDeleteResponse {
        try await call("/v3/kv/deleterange", body: WireEncoding.encode(request.wire), idempotent: false) {
            (wire: WireObject) throws(WireError) in try EtcdDeleteResponse(wire: wire)
        }
    }

    @discardableResult
    public func delete(_ key: String) async throws -> EtcdDeleteResponse {
        try await delete(EtcdDeleteRequest(key: key))
    }

    /// `/v3/kv/txn`. A failed comparison is `succeeded == false`, not an error.
    public func txn(_ request: EtcdTxnRequest) async throws -> EtcdTxnResponse {
        try await call("/v3/kv/txn", body: WireEncoding.encode(request.wire), idempotent: Self.isReadOnly(request)) {
            (wire: WireObject) throws(WireError) in try EtcdTxnResponse(wire: wire)
        }
    }

    static func isReadOnly(_ request: EtcdTxnRequest) -> Bool {
        (request.success + request.failure).allSatisfy { operation in
            switch operation {
            case .range: return true
            case .put, .delete: return false
            case .txn(let nested): return isReadOnly(nested)
            }
        }
    }
}

extension EtcdClient {
    /// `/v3/kv/compaction`: forgets every revision before `revision` (watches from older revisions
    /// then report `compactRevision`). `physical` waits until the space is reclaimed.
    public func compact(revision: Int64, physical: Bool = false) async throws {
        var body: [String: Any] = ["revision": WireEncoding.int64(revision)]
        if physical { body["physical"] = true }
        _ = try await call("/v3/kv/compaction", body: WireEncoding.encode(body), idempotent: true) {
            (wire: WireObject) throws(WireError) in try EtcdResponseHeader(wire: try wire.object("header"))
        }
    }
}
