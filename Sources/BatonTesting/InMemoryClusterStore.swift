import BatonCore
import Foundation

/// The shared state of an in-memory store: revisions, keys, leases with TTLs on an injected
/// clock, and watchers. Several `InMemoryClusterStore` handles (one per simulated agent) share
/// one backend; each handle can be partitioned from it.
///
/// It follows etcd's semantics where Baton depends on them: one revision counter for the whole
/// store, create/mod revisions per key, leases that delete their keys when they expire, and
/// watches that deliver every change after a revision, in order.
public final class InMemoryStoreBackend: @unchecked Sendable {
    enum StoredValue: Hashable {
        case text(String)
        case member(Member.Body)
        case config(DynamicConfig)
        case failover(FailoverRequest)
        case sync(SyncState)
        case history([HistoryEntry])
        case status(LeaderStatus)
        case failsafe([String: String])
    }

    struct Entry {
        var value: StoredValue
        var createRevision: Int64
        var modRevision: Int64
        var lease: SessionID?
    }

    struct Lease {
        var ttl: Duration
        var expiresAt: MonotonicInstant
    }

    struct Watcher {
        let after: Int64
        let handle: ObjectIdentifier
        let continuation: AsyncStream<StoreEvent>.Continuation
    }

    private let lock = NSLock()
    public let clock: any MonotonicClock
    private var entries: [String: Entry] = [:]
    private var revision: Int64 = 1
    private var leases: [Int64: Lease] = [:]
    private var nextLease: Int64 = 0x1000
    private var log: [StoreEvent] = []
    private var compactedThrough: Int64 = 0
    private var watchers: [UUID: Watcher] = [:]
    private var partitioned: Set<ObjectIdentifier> = []

    public init(clock: any MonotonicClock) {
        self.clock = clock
    }

    /// A new client handle on this backend.
    public func makeStore() -> InMemoryClusterStore { InMemoryClusterStore(backend: self) }

    /// The current store revision.
    public var currentRevision: Int64 { lock.withLock { revision } }

    /// Deletes the keys of every lease whose TTL has run out. Every operation calls it first;
    /// drivers of a manual clock call it after advancing time so watchers see the deletions.
    public func expireSessions() {
        lock.withLock { expireLocked() }
    }

    /// Ends the session that holds `key` (its lease expires now, deleting its keys), as a lease
    /// runs out during a partition. Returns the session, or nil when no lease holds the key.
    @discardableResult
    public func expireSession(holding key: ClusterKey) -> SessionID? {
        withState { state in
            guard let lease = state.entry(key)?.lease else { return nil }
            state.revoke(lease)
            return lease
        }
    }

    /// The ttl of the lease that holds `key` (as etcdctl `lease timetolive` shows it), or nil.
    public func leaseTTL(holding key: ClusterKey) -> Duration? {
        withState { state in
            guard let lease = state.entry(key)?.lease else { return nil }
            return state.backend.leases[lease.rawValue]?.ttl
        }
    }

    /// Forgets the event log up to the current revision: later watches from older revisions get
    /// `.resync`, as etcd's compaction makes them.
    public func compact() {
        lock.withLock {
            compactedThrough = revision
            log.removeAll()
        }
    }

    // MARK: Partitions

    func setPartitioned(_ handle: InMemoryClusterStore, _ value: Bool) {
        let id = ObjectIdentifier(handle)
        let healed: [Watcher] = lock.withLock {
            if value {
                partitioned.insert(id)
                return []
            }
            let wasPartitioned = partitioned.remove(id) != nil
            return wasPartitioned ? watchers.values.filter { $0.handle == id } : []
        }
        for watcher in healed {
            watcher.continuation.yield(.resync(reason: "connection to the store was restored"))
        }
    }

    func isPartitioned(_ handle: InMemoryClusterStore) -> Bool {
        lock.withLock { partitioned.contains(ObjectIdentifier(handle)) }
    }

    // MARK: Operations (called by handles, under the lock)

    func withState<T>(_ body: (inout State) throws -> T) rethrows -> T {
        try lock.withLock {
            expireLocked()
            var state = State(backend: self)
            return try body(&state)
        }
    }

    /// A mutable view of the backend for one atomic operation.
    struct State {
        unowned let backend: InMemoryStoreBackend

        var revision: Int64 { backend.revision }
        var now: MonotonicInstant { backend.clock.now }

        func entry(_ key: ClusterKey) -> Entry? { backend.entries[key.path] }

        func allEntries() -> [String: Entry] { backend.entries }

        mutating func put(_ key: ClusterKey, _ value: StoredValue, lease: SessionID? = nil) {
            backend.revision += 1
            let rev = backend.revision
            let create = backend.entries[key.path]?.createRevision ?? rev
            backend.entries[key.path] = Entry(value: value, createRevision: create, modRevision: rev, lease: lease)
            backend.publishLocked(.put(key: key, revision: rev))
        }

        @discardableResult
        mutating func delete(_ key: ClusterKey) -> Bool {
            guard backend.entries.removeValue(forKey: key.path) != nil else { return false }
            backend.revision += 1
            backend.publishLocked(.delete(key: key, revision: backend.revision))
            return true
        }

        func leaseAlive(_ session: SessionID) -> Bool { backend.leases[session.rawValue] != nil }

        mutating func grant(ttl: Duration) -> SessionID {
            backend.nextLease += 1
            backend.leases[backend.nextLease] = Lease(ttl: ttl, expiresAt: now + ttl)
            return SessionID(rawValue: backend.nextLease)
        }

        mutating func renew(_ session: SessionID) -> Duration? {
            guard var lease = backend.leases[session.rawValue] else { return nil }
            lease.expiresAt = now + lease.ttl
            backend.leases[session.rawValue] = lease
            return lease.ttl
        }

        mutating func revoke(_ session: SessionID) {
            guard backend.leases.removeValue(forKey: session.rawValue) != nil else { return }
            backend.deleteKeysLocked(of: session)
        }
    }

    private func expireLocked() {
        let now = clock.now
        let expired = leases.filter { $0.value.expiresAt <= now }.map(\.key)
        for id in expired.sorted() {
            leases.removeValue(forKey: id)
            deleteKeysLocked(of: SessionID(rawValue: id))
        }
    }

    private func deleteKeysLocked(of session: SessionID) {
        let keys = entries.filter { $0.value.lease == session }.map(\.key).sorted()
        for path in keys {
            entries.removeValue(forKey: path)
            revision += 1
            publishLocked(.delete(key: ClusterKey(path: path), revision: revision))
        }
    }

    private func publishLocked(_ event: StoreEvent) {
        log.append(event)
        if log.count > 10_000 {
            log.removeFirst(5_000)
            compactedThrough = eventRevision(log.first) - 1
        }
        for watcher in watchers.values where !partitioned.contains(watcher.handle) {
            watcher.continuation.yield(event)
        }
    }

    private func eventRevision(_ event: StoreEvent?) -> Int64 {
        switch event {
        case .put(_, let revision), .delete(_, let revision): return revision
        case .resync, .none: return revision
        }
    }

    func addWatcher(after revision: Int64, handle: InMemoryClusterStore) -> AsyncStream<StoreEvent> {
        let (stream, continuation) = AsyncStream<StoreEvent>.makeStream()
        let id = UUID()
        lock.withLock {
            if revision < compactedThrough {
                continuation.yield(.resync(reason: "revision \(revision) has been compacted"))
            } else {
                for event in log where eventRevision(event) > revision {
                    continuation.yield(event)
                }
            }
            watchers[id] = Watcher(after: revision, handle: ObjectIdentifier(handle), continuation: continuation)
        }
        continuation.onTermination = { [weak self] _ in
            guard let self else { return }
            self.lock.withLock { _ = self.watchers.removeValue(forKey: id) }
        }
        return stream
    }
}

/// One agent's connection to an `InMemoryStoreBackend`; `partitioned` cuts it off (every call
/// throws `StoreError.unavailable`, watch events stop and a `.resync` follows the heal).
public final class InMemoryClusterStore: ClusterStore, @unchecked Sendable {
    public let backend: InMemoryStoreBackend
    private let timeoutLock = NSLock()

    init(backend: InMemoryStoreBackend) {
        self.backend = backend
    }

    /// Convenience: a store on its own new backend.
    public convenience init(clock: any MonotonicClock) {
        self.init(backend: InMemoryStoreBackend(clock: clock))
    }

    /// The request timeout the HA loop last asked for (the dynamic `retry_timeout`).
    public var requestTimeout: Duration? { timeoutLock.withLock { appliedRequestTimeout } }
    private var appliedRequestTimeout: Duration?

    public func setRequestTimeout(_ timeout: Duration) { timeoutLock.withLock { appliedRequestTimeout = timeout } }

    public var partitioned: Bool {
        get { backend.isPartitioned(self) }
        set { backend.setPartitioned(self, newValue) }
    }

    private func reachable() throws {
        if partitioned {
            throw StoreError(.unavailable, "in-memory store is partitioned from this client", endpoint: "memory")
        }
    }

    /// How long each request of this handle takes (an etcd that is slow but alive), drawn per
    /// request; nil answers at once. A request slower than the request timeout in force fails
    /// with `unavailable` after the timeout, as the etcd client's does (the request is not applied).
    public var latency: (@Sendable () -> Duration)? {
        get { timeoutLock.withLock { requestLatency } }
        set { timeoutLock.withLock { requestLatency = newValue } }
    }
    private var requestLatency: (@Sendable () -> Duration)?

    private func run<T>(_ body: (inout InMemoryStoreBackend.State) throws -> T) async throws -> T {
        if let delay = latency?() {
            let timeout = requestTimeout
            try await backend.clock.sleep(for: timeout.map { min($0, delay) } ?? delay)
            if let timeout, delay > timeout {
                throw StoreError(.unavailable, "in-memory store: no answer within \(timeout)", endpoint: "memory")
            }
        }
        try reachable()
        return try backend.withState(body)
    }

    public func loadCluster() async throws -> ClusterView {
        try await run { state in
            var view = ClusterView(revision: state.revision)
            for (path, entry) in state.allEntries() {
                switch (ClusterKey(path: path), entry.value) {
                case (.initialize, .text(let value)):
                    view.initialize = value
                    view.initializeRevision = entry.modRevision
                case (.leader, .text(let value)):
                    view.leader = LeaderLock(member: value, session: entry.lease, modRevision: entry.modRevision)
                case (.member(let name), .member(let body)): view.members.append(Member(name: name, body: body))
                case (.config, .config(let value)): view.config = Versioned(value, modRevision: entry.modRevision)
                case (.failover, .failover(let value)): view.failover = Versioned(value, modRevision: entry.modRevision)
                case (.sync, .sync(let value)): view.sync = Versioned(value, modRevision: entry.modRevision)
                case (.history, .history(let value)): view.history = value
                case (.status, .status(let value)): view.status = value
                case (.failsafe, .failsafe(let value)): view.failsafe = value
                default: view.problems.append("\(path): unexpected value \(entry.value)")
                }
            }
            view.members.sort { $0.name < $1.name }
            return view
        }
    }

    public func createSession(ttl: Duration) async throws -> SessionID {
        try await run { $0.grant(ttl: max(ttl, .seconds(2))) }
    }

    public func keepAlive(_ session: SessionID) async throws -> SessionStatus {
        try await run { state in state.renew(session).map { .alive(ttl: $0) } ?? .expired }
    }

    public func revokeSession(_ session: SessionID) async throws {
        try await run { $0.revoke(session) }
    }

    public func acquireLeader(member: String, session: SessionID) async throws -> Bool {
        try await run { state in
            guard state.leaseAlive(session) else {
                throw StoreError(.leaseNotFound, "session \(session) has expired", endpoint: "memory")
            }
            guard state.entry(.leader) == nil else { return false }
            state.put(.leader, .text(member), lease: session)
            return true
        }
    }

    public func reattachLeader(member: String, session: SessionID) async throws -> Bool {
        try await run { state in
            guard state.leaseAlive(session) else {
                throw StoreError(.leaseNotFound, "session \(session) has expired", endpoint: "memory")
            }
            guard let entry = state.entry(.leader), entry.value == .text(member) else { return false }
            state.put(.leader, .text(member), lease: session)
            return true
        }
    }

    public func releaseLeader(member: String) async throws -> Bool {
        try await run { state in
            guard let entry = state.entry(.leader), entry.value == .text(member) else { return false }
            return state.delete(.leader)
        }
    }

    public func publishMember(_ member: Member, session: SessionID) async throws {
        try await run { state in
            guard state.leaseAlive(session) else {
                throw StoreError(.leaseNotFound, "session \(session) has expired", endpoint: "memory")
            }
            state.put(.member(member.name), .member(member.body), lease: session)
        }
    }

    public func removeMember(name: String) async throws {
        try await run { state in _ = state.delete(.member(name)) }
    }

    public func claimInitialize(systemID: String) async throws -> Bool {
        try await run { state in
            guard state.entry(.initialize) == nil else { return false }
            state.put(.initialize, .text(systemID))
            return true
        }
    }

    public func updateInitialize(systemID: String, expected: Int64) async throws -> Bool {
        try await cas(.initialize, .text(systemID), expected: expected)
    }

    public func cancelInitialize() async throws {
        try await run { state in _ = state.delete(.initialize) }
    }

    private func cas(_ key: ClusterKey, _ value: InMemoryStoreBackend.StoredValue, expected: Int64?) async throws
        -> Bool
    {
        try await run { state in
            let current = state.entry(key)
            switch (current, expected) {
            case (nil, nil): break
            case (let entry?, let revision?) where entry.modRevision == revision: break
            default: return false
            }
            state.put(key, value)
            return true
        }
    }

    private func casDelete(_ key: ClusterKey, expected: Int64?) async throws -> Bool {
        try await run { state in
            guard let entry = state.entry(key) else { return false }
            if let expected, entry.modRevision != expected { return false }
            return state.delete(key)
        }
    }

    public func writeConfig(_ config: DynamicConfig, expected: Int64?) async throws -> Bool {
        try await cas(.config, .config(config), expected: expected)
    }

    public func writeFailover(_ request: FailoverRequest, expected: Int64?) async throws -> Bool {
        try await cas(.failover, .failover(request), expected: expected)
    }

    public func deleteFailover(expected: Int64?) async throws -> Bool {
        try await casDelete(.failover, expected: expected)
    }

    public func writeSync(_ syncState: SyncState, expected: Int64?) async throws -> Bool {
        try await cas(.sync, .sync(syncState), expected: expected)
    }

    public func deleteSync(expected: Int64?) async throws -> Bool {
        try await casDelete(.sync, expected: expected)
    }

    public func writeHistory(_ history: [HistoryEntry]) async throws {
        try await run { $0.put(.history, .history(history)) }
    }

    public func writeStatus(_ status: LeaderStatus) async throws {
        try await run { $0.put(.status, .status(status)) }
    }

    public func writeFailsafe(_ members: [String: String]?) async throws {
        try await run { state in
            if let members {
                state.put(.failsafe, .failsafe(members))
            } else {
                _ = state.delete(.failsafe)
            }
        }
    }

    public func watch(after revision: Int64) -> AsyncStream<StoreEvent> {
        backend.addWatcher(after: revision, handle: self)
    }
}
