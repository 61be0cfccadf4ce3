import BatonCore
import Logging

/// Pulls etcd watch responses and hands them out one `StoreEvent` at a time, for
/// `EtcdClusterStore.watch(after:)`. Pulled by one consumer at a time (`AsyncStream(unfolding:)`
/// calls it serially), hence unchecked-Sendable. No task of its own: it runs in the consumer's.
final class StoreEventSource: @unchecked Sendable {
    private let layout: EtcdKeyLayout
    private let logger: Logger
    private var iterator: EtcdWatchStream.Iterator
    private var pending: [StoreEvent] = []
    private let client: EtcdClient
    private var request: EtcdWatchRequest

    init(client: EtcdClient, layout: EtcdKeyLayout, startRevision: Int64, logger: Logger) {
        self.client = client
        self.layout = layout
        self.logger = logger
        self.request = EtcdWatchRequest(prefix: layout.prefix, startRevision: max(1, startRevision), prevKV: false)
        self.iterator = client.watch(request).makeAsyncIterator()
    }

    func next() async -> StoreEvent? {
        while pending.isEmpty {
            if Task.isCancelled { return nil }
            do {
                guard let response = try await iterator.next() else { return nil }
                if response.compactRevision > 0 {
                    pending.append(.resync(reason: "etcd compacted revisions up to \(response.compactRevision)"))
                    continue
                }
                for event in response.events {
                    guard let key = layout.clusterKey(event.kv.keyString) else { continue }
                    switch event.kind {
                    case .put: pending.append(.put(key: key, revision: event.kv.modRevision))
                    case .delete: pending.append(.delete(key: key, revision: event.kv.modRevision))
                    }
                }
            } catch is CancellationError {
                return nil
            } catch {
                // Only errors a reconnect cannot fix end an etcd watch (e.g. refused credentials);
                // the store's stream does not end: it reports, waits and starts over from where it was.
                if Task.isCancelled { return nil }
                logger.error("etcd watch failed; retrying in 1 s", metadata: ["etcd.error": "\(error)"])
                let resume = iterator.driver.nextRevision
                try? await Task.sleep(for: .seconds(1))
                request.startRevision = max(request.startRevision, resume)
                iterator = client.watch(request).makeAsyncIterator()
                pending.append(.resync(reason: "watch failed: \(error)"))
            }
        }
        return pending.removeFirst()
    }
}
