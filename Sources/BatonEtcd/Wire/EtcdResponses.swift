public struct EtcdRangeResponse: Hashable, Sendable {
    public var header: EtcdResponseHeader
    public var kvs: [EtcdKeyValue]
    /// More keys matched than `limit` let through.
    public var more: Bool
    /// Number of keys in the range (regardless of `limit`).
    public var count: Int64

    init(wire: WireObject) throws(WireError) {
        header = try EtcdResponseHeader(wire: try wire.object("header"))
        var kvs: [EtcdKeyValue] = []
        for kv in try wire.objects("kvs") { kvs.append(try EtcdKeyValue(wire: kv)) }
        self.kvs = kvs
        more = try wire.bool("more")
        count = try wire.int64("count")
    }
}

public struct EtcdPutResponse: Hashable, Sendable {
    public var header: EtcdResponseHeader
    public var prevKV: EtcdKeyValue?

    init(wire: WireObject) throws(WireError) {
        header = try EtcdResponseHeader(wire: try wire.object("header"))
        prevKV = try wire.object("prev_kv").map(EtcdKeyValue.init(wire:))
    }
}

public struct EtcdDeleteResponse: Hashable, Sendable {
    public var header: EtcdResponseHeader
    public var deleted: Int64
    public var prevKVs: [EtcdKeyValue]

    init(wire: WireObject) throws(WireError) {
        header = try EtcdResponseHeader(wire: try wire.object("header"))
        deleted = try wire.int64("deleted")
        var prev: [EtcdKeyValue] = []
        for kv in try wire.objects("prev_kvs") { prev.append(try EtcdKeyValue(wire: kv)) }
        prevKVs = prev
    }
}

public indirect enum EtcdOperationResponse: Hashable, Sendable {
    case range(EtcdRangeResponse)
    case put(EtcdPutResponse)
    case delete(EtcdDeleteResponse)
    case txn(EtcdTxnResponse)

    init(wire: WireObject) throws(WireError) {
        if let range = try wire.object("response_range") {
            self = .range(try EtcdRangeResponse(wire: range))
        } else if let put = try wire.object("response_put") {
            self = .put(try EtcdPutResponse(wire: put))
        } else if let delete = try wire.object("response_delete_range") {
            self = .delete(try EtcdDeleteResponse(wire: delete))
        } else if let txn = try wire.object("response_txn") {
            self = .txn(try EtcdTxnResponse(wire: txn))
        } else {
            throw WireError("txn response op of unknown kind: \(wire.fields.keys.sorted())")
        }
    }
}

public struct EtcdTxnResponse: Hashable, Sendable {
    public var header: EtcdResponseHeader
    /// False when a comparison failed (the gateway omits the field then): a lost race, not an error.
    public var succeeded: Bool
    public var responses: [EtcdOperationResponse]

    init(wire: WireObject) throws(WireError) {
        header = try EtcdResponseHeader(wire: try wire.object("header"))
        succeeded = try wire.bool("succeeded")
        var responses: [EtcdOperationResponse] = []
        for response in try wire.objects("responses") { responses.append(try EtcdOperationResponse(wire: response)) }
        self.responses = responses
    }
}

public struct EtcdLeaseGrant: Hashable, Sendable {
    public var id: Int64
    /// The TTL etcd granted, in seconds (etcd may raise a small request to its minimum).
    public var ttl: Int64

    init(wire: WireObject) throws(WireError) {
        id = try wire.int64("ID")
        ttl = try wire.int64("TTL")
        guard id != 0 else { throw WireError("lease grant reply without an ID") }
    }
}

/// The result of one lease keepalive.
public enum EtcdKeepAliveResult: Hashable, Sendable {
    /// Renewed: it now expires in `ttl` seconds.
    case alive(ttl: Int64)
    /// The lease no longer exists (the reply carries no TTL, or TTL ≤ 0).
    case expired

    init(wire: WireObject) throws(WireError) {
        // The keepalive is a streaming RPC: the gateway wraps the reply in {"result": …}.
        let body = try wire.object("result") ?? wire
        let ttl = try body.int64("TTL")
        self = ttl > 0 ? .alive(ttl: ttl) : .expired
    }
}

public struct EtcdLeaseTimeToLive: Hashable, Sendable {
    public var id: Int64
    /// Remaining seconds; -1 when the lease has expired or never existed.
    public var ttl: Int64
    public var grantedTTL: Int64
    public var keys: [[UInt8]]

    init(wire: WireObject) throws(WireError) {
        id = try wire.int64("ID")
        ttl = wire.has("TTL") ? try wire.int64("TTL") : -1
        grantedTTL = try wire.int64("grantedTTL")
        var keys: [[UInt8]] = []
        for key in try wire.strings("keys") {
            guard let data = WireDecoding.base64(key) else { throw WireError("keys: not base64") }
            keys.append(data)
        }
        self.keys = keys
    }
}

public struct EtcdMember: Hashable, Sendable {
    public var id: UInt64
    public var name: String
    public var peerURLs: [String]
    public var clientURLs: [String]
    public var isLearner: Bool

    init(wire: WireObject) throws(WireError) {
        id = try wire.uint64("ID")
        name = try wire.string("name") ?? ""
        peerURLs = try wire.strings("peerURLs")
        clientURLs = try wire.strings("clientURLs")
        isLearner = try wire.bool("isLearner")
    }
}

/// `GET /version`.
public struct EtcdVersion: Hashable, Sendable {
    public var server: String
    public var cluster: String

    init(wire: WireObject) throws(WireError) {
        guard let server = try wire.string("etcdserver") else { throw WireError("no etcdserver field in /version") }
        self.server = server
        self.cluster = try wire.string("etcdcluster") ?? ""
    }

    /// Major and minor of the cluster version (falling back to the server's), nil when unreadable.
    public var majorMinor: (major: Int, minor: Int)? {
        let text = cluster.isEmpty || cluster == "not_decided" ? server : cluster
        let parts = text.split(separator: ".")
        guard parts.count >= 2, let major = Int(parts[0]), let minor = Int(parts[1]) else { return nil }
        return (major, minor)
    }

    /// True for etcd 3.4 or newer, which serves the JSON gateway at `/v3/`.
    public var supportsV3Gateway: Bool {
        guard let (major, minor) = majorMinor else { return false }
        return major > 3 || (major == 3 && minor >= 4)
    }
}
