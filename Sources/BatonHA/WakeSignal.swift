import BatonCore
import Foundation

/// Wakes the HA loop early: an etcd watch event, a postmaster exit, a REST request. Signals that
/// arrive while the loop is busy are kept (one pending wake-up), so none is lost.
final class WakeSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var pending: String?
    private var waiter: CheckedContinuation<String?, Never>?

    /// Wakes the loop, with a reason for the log.
    func signal(_ reason: String) {
        let waiter: CheckedContinuation<String?, Never>? = lock.withLock {
            if let waiter = self.waiter {
                self.waiter = nil
                return waiter
            }
            if pending == nil { pending = reason }
            return nil
        }
        waiter?.resume(returning: reason)
    }

    /// Waits for a signal or until `deadline`; returns the signal's reason, or nil at the deadline.
    func wait(until deadline: MonotonicInstant, clock: any MonotonicClock) async -> String? {
        if let reason = lock.withLock({ () -> String? in
            defer { pending = nil }
            return pending
        }) {
            return reason
        }
        return await withTaskGroup(of: String?.self) { group in
            group.addTask {
                try? await clock.sleep(until: deadline)
                self.cancelWaiter()
                return nil
            }
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { (continuation: CheckedContinuation<String?, Never>) in
                        let immediate: String?? = self.lock.withLock {
                            if let reason = self.pending {
                                self.pending = nil
                                return .some(reason)
                            }
                            if Task.isCancelled { return .some(nil) }
                            self.waiter = continuation
                            return nil
                        }
                        if let immediate { continuation.resume(returning: immediate) }
                    }
                } onCancel: {
                    self.cancelWaiter()
                }
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    private func cancelWaiter() {
        let waiter: CheckedContinuation<String?, Never>? = lock.withLock {
            defer { self.waiter = nil }
            return self.waiter
        }
        waiter?.resume(returning: nil)
    }
}
