import BatonCore
import Foundation

/// A monotonic clock that moves only when a test says so. Sleepers wake when `advance` passes
/// their deadline, or with `CancellationError` when their task is cancelled; nothing in a test
/// that uses it waits for real time.
public final class ManualClock: MonotonicClock, @unchecked Sendable {
    private struct Sleeper {
        let id: UInt64
        let deadline: MonotonicInstant
        let continuation: CheckedContinuation<Void, any Error>
    }

    private let lock = NSLock()
    private var current: MonotonicInstant
    private var sleepers: [Sleeper] = []
    private var nextID: UInt64 = 0
    private var started = 0

    public init(start: MonotonicInstant = MonotonicInstant(sinceOrigin: .seconds(1000))) {
        self.current = start
    }

    public var now: MonotonicInstant {
        lock.withLock { current }
    }

    /// Moves time forward and wakes every sleeper whose deadline has been reached.
    public func advance(by duration: Duration) {
        let due: [Sleeper] = lock.withLock {
            current = current + duration
            let now = current
            let due = sleepers.filter { $0.deadline <= now }
            sleepers.removeAll { $0.deadline <= now }
            return due
        }
        for sleeper in due { sleeper.continuation.resume() }
    }

    /// The number of tasks currently sleeping on this clock.
    public var sleeperCount: Int { lock.withLock { sleepers.count } }

    /// How many sleeps were started on this clock so far (a measure of how often tasks wake).
    public var sleepsStarted: Int { lock.withLock { started } }

    public func sleep(until deadline: MonotonicInstant) async throws {
        let id: UInt64 = lock.withLock {
            nextID += 1
            started += 1
            return nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resumeNow: Bool = lock.withLock {
                    if deadline <= current || Task.isCancelled { return true }
                    sleepers.append(Sleeper(id: id, deadline: deadline, continuation: continuation))
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let cancelled: Sleeper? = lock.withLock {
                guard let index = sleepers.firstIndex(where: { $0.id == id }) else { return nil }
                return sleepers.remove(at: index)
            }
            cancelled?.continuation.resume(throwing: CancellationError())
        }
        try Task.checkCancellation()
    }
}
