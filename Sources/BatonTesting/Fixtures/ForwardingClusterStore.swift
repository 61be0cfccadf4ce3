import BatonCore

/// A test store that wraps another and changes only what a test needs: conform, give `base`,
/// and implement just the requests to intercept; every other request goes to `base` unchanged.
public protocol ForwardingClusterStore: ClusterStore {
    associatedtype Base: ClusterStore
    var base: Base { get }
}

extension ForwardingClusterStore {
    public func loadCluster() async throws -> ClusterView { try await base.loadCluster() }
    public func createSession(ttl: Duration) async throws -> SessionID { try await base.createSession(ttl: ttl) }
    public func keepAlive(_ session: SessionID) async throws -> SessionStatus { try await base.keepAlive(session) }
    public func revokeSession(_ session: SessionID) async throws { try await base.revokeSession(session) }
    public func acquireLeader(member: String, session: SessionID) async throws -> Bool {
        try await base.acquireLeader(member: member, session: session)
    }
    public func reattachLeader(member: String, session: SessionID) async throws -> Bool {
        try await base.reattachLeader(member: member, session: session)
    }
    public func releaseLeader(member: String) async throws -> Bool { try await base.releaseLeader(member: member) }
    public func publishMember(_ member: Member, session: SessionID) async throws {
        try await base.publishMember(member, session: session)
    }
    public func removeMember(name: String) async throws { try await base.removeMember(name: name) }
    public func claimInitialize(systemID: String) async throws -> Bool {
        try await base.claimInitialize(systemID: systemID)
    }
    public func updateInitialize(systemID: String, expected: Int64) async throws -> Bool {
        try await base.updateInitialize(systemID: systemID, expected: expected)
    }
    public func cancelInitialize() async throws { try await base.cancelInitialize() }
    public func writeConfig(_ config: DynamicConfig, expected: Int64?) async throws -> Bool {
        try await base.writeConfig(config, expected: expected)
    }
    public func writeFailover(_ request: FailoverRequest, expected: Int64?) async throws -> Bool {
        try await base.writeFailover(request, expected: expected)
    }
    public func deleteFailover(expected: Int64?) async throws -> Bool {
        try await base.deleteFailover(expected: expected)
    }
    public func writeSync(_ state: SyncState, expected: Int64?) async throws -> Bool {
        try await base.writeSync(state, expected: expected)
    }
    public func deleteSync(expected: Int64?) async throws -> Bool { try await base.deleteSync(expected: expected) }
    public func writeHistory(_ history: [HistoryEntry]) async throws { try await base.writeHistory(history) }
    public func writeStatus(_ status: LeaderStatus) async throws { try await base.writeStatus(status) }
    public func writeFailsafe(_ members: [String: String]?) async throws { try await base.writeFailsafe(members) }
    public func watch(after revision: Int64) -> AsyncStream<StoreEvent> { base.watch(after: revision) }
}
