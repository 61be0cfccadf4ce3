import BatonCore
import Foundation
import Logging

/// `ClusterStore` on etcd v3, in Patroni's key layout (see `EtcdKeyLayout`), so that Patroni's
/// tooling reads a Baton cluster unchanged:
///
/// | key | value | lease | writes |
/// |---|---|---|---|
/// | `leader` | member name | session | acquire `CREATE == 0`; reattach `VALUE == me`; release delete if `VALUE == me` |
/// | `members/<name>` | `Member.Body` JSON | session | put |
/// | `initialize` | system identifier | – | `CREATE == 0`, then CAS on `MOD` |
/// | `config`, `failover`, `sync` | JSON | – | CAS on `MOD` (`nil` expected: `CREATE == 0`) |
/// | `history`, `status`, `failsafe` | JSON | – | put |
///
/// Losing a compare is `false`; a store that cannot be reached or answers nonsense throws
/// `StoreError`. Every call is bounded by the client's `requestTimeout`.
public struct EtcdClusterStore: ClusterStore {
    public let client: EtcdClient
    public let layout: EtcdKeyLayout
    private let logger: Logger

    /// Clients whose request timeout follows this store's (`setRequestTimeout`): the agent's
    /// REST API has an etcd client of its own that must follow the dynamic `retry_timeout` too.
    let followers: [EtcdClient]

    public init(
        client: EtcdClient, namespace: String = "/service", scope: String, logger: Logger,
        followers: [EtcdClient] = []
    ) {
        self.client = client
        self.followers = followers
        self.layout = EtcdKeyLayout(namespace: namespace, scope: scope)
        var logger = logger
        logger[metadataKey: "etcd.scope"] = "\(layout.prefix)"
        self.logger = logger
    }

    private func key(_ key: ClusterKey) -> String { layout.key(key) }

    // MARK: Reading

    public func setRequestTimeout(_ timeout: Duration) {
        client.setRequestTimeout(timeout)
        for follower in followers { follower.setRequestTimeout(timeout) }
    }

    public func loadCluster() async throws -> ClusterView {
        let response = try await client.range(EtcdRangeRequest(prefix: layout.prefix))
        return Self.decodeView(response, layout: layout)
    }

    /// Builds the view from one prefix range; a key that cannot be decoded is reported in
    /// `problems` and otherwise ignored, never fatal.
    static func decodeView(_ response: EtcdRangeResponse, layout: EtcdKeyLayout) -> ClusterView {
        var view = ClusterView(revision: response.header.revision)
        let decoder = JSONDecoder()
        for kv in response.kvs {
            let name = kv.keyString
            guard let clusterKey = layout.clusterKey(name) else { continue }
            func decode<T: Decodable>(_ type: T.Type) -> T? {
                do {
                    return try decoder.decode(T.self, from: Data(kv.value))
                } catch {
                    view.problems.append(
                        "\(WireObject.printable(kv.key, limit: 200)): cannot decode \(T.self): "
                            + "\(WireObject.printable(Array(Self.describe(error).utf8), limit: 300)) in \(kv.valuePreview)"
                    )
                    return nil
                }
            }
            switch clusterKey {
            case .leader:
                view.leader = LeaderLock(
                    member: kv.valueString, session: kv.lease == 0 ? nil : SessionID(rawValue: kv.lease),
                    modRevision: kv.modRevision)
            case .initialize:
                view.initialize = kv.valueString
                view.initializeRevision = kv.modRevision
            case .config:
                if let config = decode(DynamicConfig.self) {
                    view.config = Versioned(config, modRevision: kv.modRevision)
                } else {
                    view.unreadableConfigRevision = kv.modRevision
                    view.unreadableConfigProblem = view.problems.last
                }
            case .failover:
                if kv.value.isEmpty || kv.value == Array("{}".utf8) { continue }
                if let request = decode(FailoverRequest.self) {
                    view.failover = Versioned(request, modRevision: kv.modRevision)
                }
            case .sync:
                if let sync = decode(SyncState.self) {
                    view.sync = Versioned(sync, modRevision: kv.modRevision)
                } else if !kv.value.isEmpty {
                    // Unreadable is not "no key": nobody races on it, and the leader overwrites it.
                    view.unreadableSyncRevision = kv.modRevision
                }
            case .history:
                if let history = decode([HistoryEntry].self) { view.history = history }
            case .status:
                if let status = decode(LeaderStatus.self) { view.status = status }
            case .failsafe:
                if let failsafe = decode([String: String].self) { view.failsafe = failsafe }
            case .member(let memberName):
                // A name that would break a log line, a table or a URL is not a member's.
                guard !memberName.isEmpty, memberName.utf8.count <= 256,
                    memberName.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F })
                else {
                    view.problems.append(
                        "\(WireObject.printable(kv.key, limit: 200)): not a member name (empty, too long or "
                            + "with control characters); ignored")
                    continue
                }
                if let body = decode(Member.Body.self) { view.members.append(Member(name: memberName, body: body)) }
            case .other(let path):
                // A pooler's registration (`baton pooler`), under the name its key gives.
                // Only a key held by a session counts: one without a lease (written by hand, or
                // by another tool) would outlive the pooler it names.
                if path.hasPrefix("poolers/"), kv.lease != 0, let record = decode(PoolerRecord.self) {
                    var record = record
                    record.name = String(path.dropFirst("poolers/".count))
                    guard record.name.utf8.count <= 128, PoolerRecord.isName(record.name) else { continue }
                    view.poolers.append(record)
                }
                // Keys of other tools or later versions (e.g. `optime/leader`) are not problems.
                continue
            }
        }
        view.members.sort { $0.name < $1.name }
        view.poolers.sort { $0.name < $1.name }
        return view
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let context), DecodingError.typeMismatch(_, let context),
            DecodingError.valueNotFound(_, let context), DecodingError.keyNotFound(_, let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? context.debugDescription : "\(path): \(context.debugDescription)"
        default:
            return "\(error)"
        }
    }

    // MARK: Sessions

    public func createSession(ttl: Duration) async throws -> SessionID {
        let seconds = Int64((Double(ttl.components.seconds) + Double(ttl.components.attoseconds) / 1e18).rounded(.up))
        let grant = try await client.grantLease(ttl: max(1, seconds))
        logger.debug(
            "session created", metadata: ["etcd.lease": "\(SessionID(rawValue: grant.id))", "etcd.ttl": "\(grant.ttl)"])
        return SessionID(rawValue: grant.id)
    }

    public func keepAlive(_ session: SessionID) async throws -> SessionStatus {
        switch try await client.keepAlive(lease: session.rawValue) {
        case .alive(let ttl): return .alive(ttl: .seconds(ttl))
        case .expired: return .expired
        }
    }

    public func revokeSession(_ session: SessionID) async throws {
        try await client.revokeLease(session.rawValue)
    }

    // MARK: Leader key

    public func acquireLeader(member: String, session: SessionID) async throws -> Bool {
        let leader = key(.leader)
        return try await client.txn(
            EtcdTxnRequest(
                compare: [.absent(leader)],
                success: [.put(EtcdPutRequest(key: leader, value: member, lease: session.rawValue))]
            )
        ).succeeded
    }

    public func reattachLeader(member: String, session: SessionID) async throws -> Bool {
        let leader = key(.leader)
        return try await client.txn(
            EtcdTxnRequest(
                compare: [.value(leader, equals: member)],
                success: [.put(EtcdPutRequest(key: leader, value: member, lease: session.rawValue))]
            )
        ).succeeded
    }

    public func releaseLeader(member: String) async throws -> Bool {
        let leader = key(.leader)
        return try await client.txn(
            EtcdTxnRequest(
                compare: [.value(leader, equals: member)],
                success: [.delete(EtcdDeleteRequest(key: leader))]
            )
        ).succeeded
    }

    // MARK: Member keys

    public func publishMember(_ member: Member, session: SessionID) async throws {
        try await client.put(
            EtcdPutRequest(
                key: Array(key(.member(member.name)).utf8), value: try Self.json(member.body), lease: session.rawValue))
    }

    /// Writes `poolers/<name>` on `session` (a `baton pooler`'s registration).
    /// Writes `poolers/<name>` on the pooler's session, unless another session holds the key (two
    /// poolers given the same name): false then, and the other's record stays.
    public func publishPooler(_ record: PoolerRecord, session: SessionID) async throws -> Bool {
        let name = key(.other("poolers/" + record.name))
        let put = EtcdOperation.put(
            EtcdPutRequest(key: Array(name.utf8), value: try Self.json(record), lease: session.rawValue))
        // Ours already (a missing key has lease 0, so this fails for it), or free.
        for guardCompare in [EtcdCompare(key: name, .lease(session.rawValue)), .absent(name)] {
            if try await client.txn(EtcdTxnRequest(compare: [guardCompare], success: [put])).succeeded { return true }
        }
        return false
    }

    public func removeMember(name: String) async throws {
        try await client.delete(key(.member(name)))
    }

    // MARK: initialize

    public func claimInitialize(systemID: String) async throws -> Bool {
        try await compareAndSwap(.initialize, Array(systemID.utf8), expected: nil)
    }

    public func updateInitialize(systemID: String, expected: Int64) async throws -> Bool {
        try await compareAndSwap(.initialize, Array(systemID.utf8), expected: expected)
    }

    public func cancelInitialize() async throws {
        try await client.delete(key(.initialize))
    }

    // MARK: Cluster-wide keys

    public func writeConfig(_ config: DynamicConfig, expected: Int64?) async throws -> Bool {
        try await compareAndSwap(.config, try Self.json(config), expected: expected)
    }

    public func writeFailover(_ request: FailoverRequest, expected: Int64?) async throws -> Bool {
        try await compareAndSwap(.failover, try Self.json(request), expected: expected)
    }

    public func deleteFailover(expected: Int64?) async throws -> Bool {
        try await compareAndDelete(.failover, expected: expected)
    }

    public func writeSync(_ state: SyncState, expected: Int64?) async throws -> Bool {
        try await compareAndSwap(.sync, try Self.json(state), expected: expected)
    }

    public func deleteSync(expected: Int64?) async throws -> Bool {
        try await compareAndDelete(.sync, expected: expected)
    }

    public func writeHistory(_ history: [HistoryEntry]) async throws {
        try await client.put(EtcdPutRequest(key: Array(key(.history).utf8), value: try Self.json(history)))
    }

    public func writeStatus(_ status: LeaderStatus) async throws {
        try await client.put(EtcdPutRequest(key: Array(key(.status).utf8), value: try Self.json(status)))
    }

    public func writeFailsafe(_ members: [String: String]?) async throws {
        if let members {
            try await client.put(EtcdPutRequest(key: Array(key(.failsafe).utf8), value: try Self.json(members)))
        } else {
            try await client.delete(key(.failsafe))
        }
    }

    /// Puts `value` if the key's modification revision is still `expected`, or, with `expected`
    /// nil, if the key does not exist.
    private func compareAndSwap(_ clusterKey: ClusterKey, _ value: [UInt8], expected: Int64?) async throws -> Bool {
        let name = key(clusterKey)
        let guardCompare: EtcdCompare = expected.map { .modRevision(name, equals: $0) } ?? .absent(name)
        let succeeded = try await client.txn(
            EtcdTxnRequest(
                compare: [guardCompare], success: [.put(EtcdPutRequest(key: Array(name.utf8), value: value))]
            )
        ).succeeded
        if !succeeded {
            logger.debug(
                "compare-and-swap lost",
                metadata: ["etcd.key": "\(name)", "etcd.expected": "\(expected.map(String.init) ?? "absent")"])
        }
        return succeeded
    }

    /// Deletes the key if its modification revision is still `expected` (any revision when nil);
    /// false when nothing was deleted.
    private func compareAndDelete(_ clusterKey: ClusterKey, expected: Int64?) async throws -> Bool {
        let name = key(clusterKey)
        guard let expected else {
            return try await client.delete(name).deleted > 0
        }
        return try await client.txn(
            EtcdTxnRequest(
                compare: [.modRevision(name, equals: expected)], success: [.delete(EtcdDeleteRequest(key: name))]
            )
        ).succeeded
    }

    static func json<T: Encodable>(_ value: T) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do {
            return [UInt8](try encoder.encode(value))
        } catch {
            throw StoreError(.invalidRequest, "cannot encode \(T.self) as JSON: \(error)")
        }
    }

    // MARK: Watch

    /// Changes under the scope after `revision`, mapped to `StoreEvent`s; `.resync` when etcd
    /// compacted revisions the watch still needed (the stream then goes on from the compaction
    /// point). Reconnects by itself; ends when the consuming task is cancelled.
    public func watch(after revision: Int64) -> AsyncStream<StoreEvent> {
        let source = StoreEventSource(
            client: client, layout: layout, startRevision: revision + 1, logger: logger)
        return AsyncStream(unfolding: { await source.next() })
    }
}

extension EtcdKeyValue {
    /// The start of the value, printable on one line (it comes from whoever can write the store).
    var valuePreview: String { "'" + WireObject.printable(value, limit: 80) + "'" }
}
