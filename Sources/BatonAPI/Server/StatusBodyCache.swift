import NIOCore
import Synchronization

/// The last encoded status document, keyed by the snapshot's generation and the `dcs_last_seen`
/// second it shows: health checks under load reuse the bytes instead of encoding JSON per request.
final class StatusBodyCache: Sendable {
    struct Key: Hashable, Sendable {
        var generation: UInt64
        var dcsLastSeen: Double?
    }

    private let entry = Mutex<(key: Key, body: ByteBuffer)?>(nil)

    func body(for key: Key) -> ByteBuffer? {
        entry.withLock { entry in
            guard let entry, entry.key == key else { return nil }
            return entry.body
        }
    }

    func store(_ body: ByteBuffer, for key: Key) {
        entry.withLock { $0 = (key, body) }
    }
}
