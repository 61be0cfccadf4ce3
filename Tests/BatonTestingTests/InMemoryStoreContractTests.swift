import BatonCore
import BatonTesting
import Testing

/// The ClusterStore contract, run against the in-memory store on a manual clock.
@Suite struct InMemoryStoreContractTests {
    static func environment() -> ClusterStoreContract.Environment {
        let clock = ManualClock()
        let backends = BackendBox(clock: clock)
        return ClusterStoreContract.Environment(
            makeStores: { count in
                let backend = backends.fresh()
                return (0..<count).map { _ in backend.makeStore() }
            },
            advance: { duration in
                clock.advance(by: duration)
                backends.current?.expireSessions()
            },
            minimumTTL: .seconds(2),
            expiryGrace: .milliseconds(1))
    }

    @Test(arguments: ClusterStoreContract.names)
    func contract(_ name: String) async throws {
        try await ClusterStoreContract.run(name, in: Self.environment())
    }

    @Test func partitionedClientGetsUnavailableAndAResyncAfterHeal() async throws {
        let clock = ManualClock()
        let backend = InMemoryStoreBackend(clock: clock)
        let a = backend.makeStore()
        let b = backend.makeStore()
        let stream = b.watch(after: backend.currentRevision)
        b.partitioned = true
        await #expect(throws: StoreError.self) { try await b.loadCluster() }
        #expect(try await a.claimInitialize(systemID: "x"))
        b.partitioned = false
        var iterator = stream.makeAsyncIterator()
        let event = await iterator.next()
        guard case .resync = event else {
            Issue.record("expected a resync after the heal, got \(String(describing: event))")
            return
        }
        #expect(try await b.loadCluster().initialize == "x")
    }

    @Test func compactionMakesOldWatchesResync() async throws {
        let backend = InMemoryStoreBackend(clock: ManualClock())
        let store = backend.makeStore()
        let start = backend.currentRevision
        #expect(try await store.claimInitialize(systemID: "x"))
        backend.compact()
        var iterator = store.watch(after: start).makeAsyncIterator()
        guard case .resync = await iterator.next() else {
            Issue.record("a watch from a compacted revision must start with a resync")
            return
        }
    }
}

/// Gives each contract check a fresh backend on the shared manual clock.
final class BackendBox: @unchecked Sendable {
    private let clock: ManualClock
    private(set) var current: InMemoryStoreBackend?

    init(clock: ManualClock) { self.clock = clock }

    func fresh() -> InMemoryStoreBackend {
        let backend = InMemoryStoreBackend(clock: clock)
        current = backend
        return backend
    }
}
