import BatonAPI
import BatonCore
import BatonHA
import BatonTesting
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Synchronization

/// A state source returning a canned snapshot, over an in-memory store and a manual clock.
final class FakeSource: APIStateSource, Sendable {
    let memberName: String
    let scope = "demo"
    let store: any ClusterStore
    let clock: any MonotonicClock
    let manualClock: ManualClock
    let memoryStore: InMemoryClusterStore
    private let snapshot: Mutex<HAStatus>
    private let wakes = Mutex<[String]>([])
    private let submitted = Mutex<[OperatorRequest]>([])
    /// What `submit` answers when set; else what the HA loop answers in the usual case (its logic
    /// is tested in BatonHATests).
    let operatorReply = Mutex<OperatorReply?>(nil)
    static let wallNow = 1_800_000_000.0

    init(_ status: HAStatus) {
        self.memberName = status.member
        let clock = ManualClock()
        self.manualClock = clock
        self.clock = clock
        let store = InMemoryClusterStore(clock: clock)
        self.memoryStore = store
        self.store = store
        self.snapshot = Mutex(status)
    }

    func wallClockSeconds() -> Double { Self.wallNow }
    func status() async -> HAStatus { snapshot.withLock { $0 } }
    func currentStatus() -> HAStatus? { snapshot.withLock { $0 } }
    func currentGeneration() -> UInt64? { snapshot.withLock { $0.generation } }
    func wake(_ reason: String) { wakes.withLock { $0.append(reason) } }
    var wakeReasons: [String] { wakes.withLock { $0 } }
    func submit(_ request: OperatorRequest) async -> OperatorReply {
        submitted.withLock { $0.append(request) }
        if let reply = operatorReply.withLock({ $0 }) { return reply }
        switch request {
        case .restart(let restart) where restart.scheduledAt != nil: return OperatorReply(202, "Restart scheduled")
        case .restart: return OperatorReply(200, "restarted successfully")
        case .cancelScheduledRestart: return OperatorReply(404, "no restarts are scheduled")
        case .reload: return OperatorReply(202, "reload scheduled: postgres reloaded")
        case .reinitialize: return OperatorReply(200, "reinitialize started")
        }
    }
    var operatorRequests: [OperatorRequest] { submitted.withLock { $0 } }
    let storeStats = Mutex<StoreRequestStats?>(nil)
    func storeRequestStats() -> StoreRequestStats? { storeStats.withLock { $0 } }
    func update(_ change: (inout HAStatus) -> Void) { snapshot.withLock { change(&$0) } }
    /// What the HA loop does after a wake: reads the cluster from the store into its snapshot.
    func refreshFromStore() async throws {
        let cluster = try await memoryStore.loadCluster()
        snapshot.withLock { $0.cluster = cluster }
    }
}

enum Fixture {
    static let members = [
        Member(
            name: "node1", connURL: "postgres://10.0.0.1:5432/postgres", apiURL: "http://10.0.0.1:8008/patroni",
            state: .running, role: .primary, xlogLocation: LSN(50_000_000), timeline: 3),
        Member(
            name: "node2", connURL: "postgres://10.0.0.2:5433/postgres", apiURL: "http://10.0.0.2:8008/patroni",
            state: .running, role: .replica, xlogLocation: LSN(49_000_000), receiveLSN: LSN(49_500_000),
            replayLSN: LSN(49_000_000), replicationState: "streaming",
            timeline: 3, tags: Tags(["zone": .string("a")])),
        Member(
            name: "node3", connURL: "postgres://10.0.0.3:5432/postgres", apiURL: "http://10.0.0.3:8008/patroni",
            state: .running, role: .replica, timeline: 3),
    ]

    static func cluster(leader: String? = "node1", pause: Bool = false, sync: [String]? = nil) -> ClusterView {
        var document: [String: JSONValue] = ["ttl": .number(30)]
        if pause { document["pause"] = .bool(true) }
        if sync != nil { document["synchronous_mode"] = .bool(true) }
        return ClusterView(
            revision: 10, initialize: "7000000000000000001",
            config: Versioned(DynamicConfig(document), modRevision: 2),
            leader: leader.map { LeaderLock(member: $0, session: nil, modRevision: 5) },
            members: members,
            sync: sync.map { Versioned(SyncState(leader: "node1", syncStandbys: $0), modRevision: 7) },
            history: [
                HistoryEntry(
                    timeline: 2, lsn: LSN(40_000_000), reason: "no recovery target specified",
                    timestamp: "2026-01-01T00:00:00+00:00", newLeader: "node1")
            ],
            status: LeaderStatus(optime: LSN(50_000_000)))
    }

    static let now = MonotonicInstant(sinceOrigin: .seconds(1000))

    static func primary() -> HAStatus {
        var status = HAStatus(member: "node1")
        status.postgres = PostgresStatus(
            process: .running, inRecovery: false, timeline: 3, currentLSN: LSN(50_000_000),
            systemIdentifier: "7000000000000000001", serverVersion: 150_004,
            replication: [
                ReplicationRow(
                    applicationName: "node2", clientAddress: "10.0.0.2", state: "streaming", syncState: "async")
            ])
        status.holdsLeaderKey = true
        status.cluster = cluster()
        status.clusterReadAt = now - .seconds(2)
        status.lastCycleAt = now - .seconds(1)
        status.leaseDeadline = now + .seconds(20)
        status.config = status.cluster?.dynamicConfig ?? DynamicConfig()
        status.published = members[0]
        status.promotions = 1
        return status
    }

    static func replica(name: String = "node2", position: LSN = LSN(49_999_000), streaming: Bool = true) -> HAStatus {
        var status = HAStatus(member: name)
        status.postgres = PostgresStatus(
            process: .running, inRecovery: true, timeline: 3, receiveLSN: position, replayLSN: position,
            streaming: streaming, systemIdentifier: "7000000000000000001", serverVersion: 150_004,
            walReceiverStatus: streaming ? "streaming" : nil)
        status.cluster = cluster()
        status.clusterReadAt = now - .seconds(2)
        status.lastCycleAt = now - .seconds(1)
        status.config = status.cluster?.dynamicConfig ?? DynamicConfig()
        status.published = members.first { $0.name == name }
        return status
    }

    static func laggingReplica() -> HAStatus { replica(position: LSN(10_000_000)) }

    static func stopped() -> HAStatus {
        var status = replica()
        status.postgres = PostgresStatus(process: .stopped)
        return status
    }

    static func paused() -> HAStatus {
        var status = primary()
        status.cluster = cluster(pause: true)
        status.config = status.cluster?.dynamicConfig ?? DynamicConfig()
        return status
    }

    static func application(
        _ source: FakeSource, configuration: APIConfiguration = APIConfiguration(port: 0)
    ) throws -> BatonAPIApplication {
        try BatonAPIServer(source: source, configuration: configuration, logger: Logger(label: "test"))
            .makeApplication()
    }
}

extension TestResponse {
    var text: String { String(buffer: body) }

    var json: [String: JSONValue] {
        (try? JSONDecoder().decode(JSONValue.self, from: Data(body.readableBytesView)))?.objectValue ?? [:]
    }
}

func jsonBody(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }
