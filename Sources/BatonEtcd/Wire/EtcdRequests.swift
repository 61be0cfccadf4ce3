/// `/v3/kv/range`: one key, or every key in `[key, rangeEnd)`.
public struct EtcdRangeRequest: Hashable, Sendable {
    public var key: [UInt8]
    public var rangeEnd: [UInt8]?
    /// Read at this revision; 0 for the newest.
    public var revision: Int64
    /// Serve from the local member without a quorum round (may be stale).
    public var serializable: Bool
    /// At most this many keys; 0 for no limit.
    public var limit: Int64
    public var keysOnly: Bool
    public var countOnly: Bool

    public init(
        key: [UInt8], rangeEnd: [UInt8]? = nil, revision: Int64 = 0, serializable: Bool = false,
        limit: Int64 = 0, keysOnly: Bool = false, countOnly: Bool = false
    ) {
        self.key = key
        self.rangeEnd = rangeEnd
        self.revision = revision
        self.serializable = serializable
        self.limit = limit
        self.keysOnly = keysOnly
        self.countOnly = countOnly
    }

    public init(key: String, revision: Int64 = 0, serializable: Bool = false) {
        self.init(key: Array(key.utf8), revision: revision, serializable: serializable)
    }

    /// Every key that starts with `prefix`.
    public init(prefix: String, revision: Int64 = 0, serializable: Bool = false, limit: Int64 = 0) {
        let bytes = Array(prefix.utf8)
        self.init(
            key: bytes, rangeEnd: bytes.prefixRangeEnd, revision: revision, serializable: serializable, limit: limit)
    }

    var wire: [String: Any] {
        var body: [String: Any] = ["key": WireEncoding.base64(key)]
        if let rangeEnd { body["range_end"] = WireEncoding.base64(rangeEnd) }
        if revision != 0 { body["revision"] = WireEncoding.int64(revision) }
        if serializable { body["serializable"] = true }
        if limit != 0 { body["limit"] = WireEncoding.int64(limit) }
        if keysOnly { body["keys_only"] = true }
        if countOnly { body["count_only"] = true }
        return body
    }
}

/// `/v3/kv/put`.
public struct EtcdPutRequest: Hashable, Sendable {
    public var key: [UInt8]
    public var value: [UInt8]
    /// Attach the key to this lease; 0 for none.
    public var lease: Int64
    public var prevKV: Bool

    public init(key: [UInt8], value: [UInt8], lease: Int64 = 0, prevKV: Bool = false) {
        self.key = key
        self.value = value
        self.lease = lease
        self.prevKV = prevKV
    }

    public init(key: String, value: String, lease: Int64 = 0, prevKV: Bool = false) {
        self.init(key: Array(key.utf8), value: Array(value.utf8), lease: lease, prevKV: prevKV)
    }

    var wire: [String: Any] {
        var body: [String: Any] = ["key": WireEncoding.base64(key), "value": WireEncoding.base64(value)]
        if lease != 0 { body["lease"] = WireEncoding.int64(lease) }
        if prevKV { body["prev_kv"] = true }
        return body
    }
}

/// `/v3/kv/deleterange`: one key, or every key in `[key, rangeEnd)`.
public struct EtcdDeleteRequest: Hashable, Sendable {
    public var key: [UInt8]
    public var rangeEnd: [UInt8]?
    public var prevKV: Bool

    public init(key: [UInt8], rangeEnd: [UInt8]? = nil, prevKV: Bool = false) {
        self.key = key
        self.rangeEnd = rangeEnd
        self.prevKV = prevKV
    }

    public init(key: String, prevKV: Bool = false) {
        self.init(key: Array(key.utf8), prevKV: prevKV)
    }

    public init(prefix: String, prevKV: Bool = false) {
        let bytes = Array(prefix.utf8)
        self.init(key: bytes, rangeEnd: bytes.prefixRangeEnd, prevKV: prevKV)
    }

    var wire: [String: Any] {
        var body: [String: Any] = ["key": WireEncoding.base64(key)]
        if let rangeEnd { body["range_end"] = WireEncoding.base64(rangeEnd) }
        if prevKV { body["prev_kv"] = true }
        return body
    }
}

/// One comparison of a transaction's guard. A missing key has CREATE, MOD, VERSION and LEASE 0,
/// and fails every VALUE comparison.
public struct EtcdCompare: Hashable, Sendable {
    public enum Target: Hashable, Sendable {
        case createRevision(Int64)
        case modRevision(Int64)
        case version(Int64)
        case value([UInt8])
        case lease(Int64)
    }

    public enum Result: String, Hashable, Sendable {
        case equal = "EQUAL", notEqual = "NOT_EQUAL", greater = "GREATER", less = "LESS"
    }

    public var key: [UInt8]
    public var rangeEnd: [UInt8]?
    public var target: Target
    public var result: Result

    public init(key: [UInt8], rangeEnd: [UInt8]? = nil, _ target: Target, _ result: Result = .equal) {
        self.key = key
        self.rangeEnd = rangeEnd
        self.target = target
        self.result = result
    }

    public init(key: String, _ target: Target, _ result: Result = .equal) {
        self.init(key: Array(key.utf8), target, result)
    }

    /// The key does not exist.
    public static func absent(_ key: String) -> EtcdCompare { EtcdCompare(key: key, .createRevision(0)) }
    /// The key holds exactly `value`.
    public static func value(_ key: String, equals value: String) -> EtcdCompare {
        EtcdCompare(key: key, .value(Array(value.utf8)))
    }
    /// The key was last modified at `revision`.
    public static func modRevision(_ key: String, equals revision: Int64) -> EtcdCompare {
        EtcdCompare(key: key, .modRevision(revision))
    }

    var wire: [String: Any] {
        var body: [String: Any] = ["key": WireEncoding.base64(key), "result": result.rawValue]
        if let rangeEnd { body["range_end"] = WireEncoding.base64(rangeEnd) }
        switch target {
        case .createRevision(let revision):
            body["target"] = "CREATE"
            body["create_revision"] = WireEncoding.int64(revision)
        case .modRevision(let revision):
            body["target"] = "MOD"
            body["mod_revision"] = WireEncoding.int64(revision)
        case .version(let version):
            body["target"] = "VERSION"
            body["version"] = WireEncoding.int64(version)
        case .value(let value):
            body["target"] = "VALUE"
            body["value"] = WireEncoding.base64(value)
        case .lease(let lease):
            body["target"] = "LEASE"
            body["lease"] = WireEncoding.int64(lease)
        }
        return body
    }
}

/// One operation of a transaction branch.
public indirect enum EtcdOperation: Hashable, Sendable {
    case range(EtcdRangeRequest)
    case put(EtcdPutRequest)
    case delete(EtcdDeleteRequest)
    case txn(EtcdTxnRequest)

    var wire: [String: Any] {
        switch self {
        case .range(let request): return ["request_range": request.wire]
        case .put(let request): return ["request_put": request.wire]
        case .delete(let request): return ["request_delete_range": request.wire]
        case .txn(let request): return ["request_txn": request.wire]
        }
    }
}

/// `/v3/kv/txn`: if every comparison holds, run `success`, else `failure`; atomically.
public struct EtcdTxnRequest: Hashable, Sendable {
    public var compare: [EtcdCompare]
    public var success: [EtcdOperation]
    public var failure: [EtcdOperation]

    public init(compare: [EtcdCompare], success: [EtcdOperation], failure: [EtcdOperation] = []) {
        self.compare = compare
        self.success = success
        self.failure = failure
    }

    var wire: [String: Any] {
        var body: [String: Any] = [:]
        if !compare.isEmpty { body["compare"] = compare.map(\.wire) }
        if !success.isEmpty { body["success"] = success.map(\.wire) }
        if !failure.isEmpty { body["failure"] = failure.map(\.wire) }
        return body
    }
}

/// `/v3/watch` create request.
public struct EtcdWatchRequest: Hashable, Sendable {
    public var key: [UInt8]
    public var rangeEnd: [UInt8]?
    /// First revision to deliver; 0 for "changes from now on".
    public var startRevision: Int64
    public var prevKV: Bool
    public var progressNotify: Bool

    public init(
        key: [UInt8], rangeEnd: [UInt8]? = nil, startRevision: Int64 = 0, prevKV: Bool = true,
        progressNotify: Bool = true
    ) {
        self.key = key
        self.rangeEnd = rangeEnd
        self.startRevision = startRevision
        self.prevKV = prevKV
        self.progressNotify = progressNotify
    }

    /// Every key under `prefix`, from `startRevision`.
    public init(prefix: String, startRevision: Int64 = 0, prevKV: Bool = true) {
        let bytes = Array(prefix.utf8)
        self.init(key: bytes, rangeEnd: bytes.prefixRangeEnd, startRevision: startRevision, prevKV: prevKV)
    }

    func wire(startRevision: Int64) -> [String: Any] {
        var create: [String: Any] = ["key": WireEncoding.base64(key)]
        if let rangeEnd { create["range_end"] = WireEncoding.base64(rangeEnd) }
        if startRevision > 0 { create["start_revision"] = WireEncoding.int64(startRevision) }
        if prevKV { create["prev_kv"] = true }
        if progressNotify { create["progress_notify"] = true }
        return ["create_request": create]
    }
}
