/// etcd's response header: every reply carries the store revision it was served at.
public struct EtcdResponseHeader: Hashable, Sendable {
    public var clusterID: UInt64
    public var memberID: UInt64
    public var revision: Int64
    public var raftTerm: UInt64

    public init(clusterID: UInt64 = 0, memberID: UInt64 = 0, revision: Int64 = 0, raftTerm: UInt64 = 0) {
        self.clusterID = clusterID
        self.memberID = memberID
        self.revision = revision
        self.raftTerm = raftTerm
    }

    init(wire: WireObject?) throws(WireError) {
        guard let wire else {
            self.init()
            return
        }
        self.init(
            clusterID: try wire.uint64("cluster_id"), memberID: try wire.uint64("member_id"),
            revision: try wire.int64("revision"), raftTerm: try wire.uint64("raft_term"))
    }
}

/// One key as stored in etcd, with its revisions and lease.
public struct EtcdKeyValue: Hashable, Sendable {
    public var key: [UInt8]
    public var value: [UInt8]
    /// Revision of the last creation of the key (0 when it does not exist).
    public var createRevision: Int64
    /// Revision of the last modification (for a delete event: the deletion's revision).
    public var modRevision: Int64
    /// Number of modifications since creation.
    public var version: Int64
    /// Lease the key is attached to, 0 for none.
    public var lease: Int64

    public init(
        key: [UInt8], value: [UInt8] = [], createRevision: Int64 = 0, modRevision: Int64 = 0,
        version: Int64 = 0, lease: Int64 = 0
    ) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }

    /// The key as text (invalid UTF-8 is replaced, never fatal).
    public var keyString: String { String(decoding: key, as: UTF8.self) }
    /// The value as text (invalid UTF-8 is replaced, never fatal).
    public var valueString: String { String(decoding: value, as: UTF8.self) }

    init(wire: WireObject) throws(WireError) {
        self.init(
            key: try wire.bytes("key"), value: try wire.bytes("value"),
            createRevision: try wire.int64("create_revision"), modRevision: try wire.int64("mod_revision"),
            version: try wire.int64("version"), lease: try wire.int64("lease"))
    }
}

/// A change seen by a watch.
public struct EtcdEvent: Hashable, Sendable {
    public enum Kind: Hashable, Sendable { case put, delete }

    public var kind: Kind
    /// For a put: the new key; for a delete: the key with `modRevision` = the deletion's revision.
    public var kv: EtcdKeyValue
    /// The key before the change, when the watch asked for it and it existed.
    public var prevKV: EtcdKeyValue?

    public init(kind: Kind, kv: EtcdKeyValue, prevKV: EtcdKeyValue? = nil) {
        self.kind = kind
        self.kv = kv
        self.prevKV = prevKV
    }

    init(wire: WireObject) throws(WireError) {
        // PUT is the enum's default value, so a put event carries no `type` at all.
        let kind: Kind
        switch try wire.string("type") {
        case nil, "PUT": kind = .put
        case "DELETE": kind = .delete
        case let other?: throw WireError("event type: unknown \(other)")
        }
        guard let kv = try wire.object("kv") else { throw WireError("event without kv") }
        self.init(
            kind: kind, kv: try EtcdKeyValue(wire: kv), prevKV: try wire.object("prev_kv").map(EtcdKeyValue.init(wire:))
        )
    }
}

extension Array where Element == UInt8 {
    /// The end of the range that holds every key starting with `self`: the prefix with its last
    /// byte incremented (trailing 0xff bytes dropped); `[0]` (every key) for an all-0xff prefix.
    public var prefixRangeEnd: [UInt8] {
        var end = self
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return [0]
    }
}
