import Foundation

/// Dedicated threads that run libcurl's blocking transfers, so that none ever runs on Swift's
/// cooperative pool. Each thread owns one `CurlConnection` (one easy handle, one connection cache)
/// for its whole life. A thread is added whenever a request arrives and none is idle, so a request
/// never queues behind a slow one (up to `maxThreads`); threads beyond the first exit after a
/// minute idle.
///
/// Every queued request has a deadline: one still waiting for a thread when its transfer deadline
/// has passed fails without being sent (an answer nobody waits for any more is not worth a
/// thread), and at most `maxQueued` wait at once; more fail at once. Requests that must never wait
/// behind others (the HA loop's, the lease keepalives) get a client, hence a pool, of their own:
/// the agent gives its REST API a separate `EtcdClient`.
final class CurlWorkerPool: @unchecked Sendable {
    private struct Job {
        var request: HTTPRequest
        var abort: AbortFlag
        var complete: @Sendable (Result<HTTPResponse, TransportFailure>) -> Void
        /// Past this, a job still queued fails unsent.
        var deadline: ContinuousClock.Instant?
        var id: UInt64 = 0
    }

    private let condition = NSCondition()
    private let tls: EtcdTLSConfiguration?
    private let maxThreads: Int
    private let maxQueued: Int
    private let name: String
    // Guarded by `condition`.
    private var queue: [Job] = []
    private var threads = 0
    private var idle = 0
    private var shuttingDown = false
    private var spawned = 0
    private var nextID: UInt64 = 0
    /// Running worker threads by number, and those that ended on their own (idle) and are to be
    /// joined.
    private var workers: [Int: JoinableThread] = [:]
    private var ended: [Int] = []

    init(name: String, tls: EtcdTLSConfiguration?, maxThreads: Int = 16, maxQueued: Int = 256) {
        self.name = name
        self.tls = tls
        self.maxThreads = max(1, maxThreads)
        self.maxQueued = max(1, maxQueued)
    }

    /// Runs one request on a worker thread; cancelling the calling task aborts the transfer.
    func run(_ request: HTTPRequest) async -> Result<HTTPResponse, TransportFailure> {
        let abort = AbortFlag()
        let deadline = (request.queueTimeout ?? request.timeout).map { ContinuousClock.now + $0 }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let id = submit(
                    Job(
                        request: request, abort: abort, complete: { continuation.resume(returning: $0) },
                        deadline: deadline))
                // Every thread is busy: the caller is told at its deadline, not when one frees up.
                if let id, let deadline {
                    Task { [self] in
                        try? await Task.sleep(until: deadline, clock: .continuous)
                        expire(id)
                    }
                }
            }
        } onCancel: {
            abort.set()
        }
    }

    /// Fails a job still queued at its deadline (a worker that took it first completes it).
    private func expire(_ id: UInt64) {
        condition.lock()
        guard let index = queue.firstIndex(where: { $0.id == id }) else {
            condition.unlock()
            return
        }
        let job = queue.remove(at: index)
        condition.unlock()
        job.complete(.failure(Self.waitedTooLong(maxThreads)))
    }

    static func waitedTooLong(_ threads: Int) -> TransportFailure {
        TransportFailure(
            kind: .overloaded, curlCode: -1,
            message: "waited past its deadline for one of \(threads) busy etcd threads; not sent", requestSent: false)
    }

    /// Stops the threads once the queued work is done, and waits (at most `timeout`) until they
    /// have ended; later requests fail at once. A process may exit safely afterwards: no thread of
    /// this pool is still inside libcurl or OpenSSL.
    func shutdown(timeout: Duration = .seconds(3)) {
        condition.lock()
        shuttingDown = true
        condition.broadcast()
        let running = workers
        workers = [:]
        ended = []
        condition.unlock()
        let deadline = ContinuousClock.now + timeout
        for (_, thread) in running where !thread.join(until: deadline) {
            thread.detach()
        }
    }

    /// Joins the threads that ended on their own (already gone, or finishing their destructors).
    private func reapEnded() {
        condition.lock()
        let finished = ended.compactMap { workers.removeValue(forKey: $0) }
        ended = []
        condition.unlock()
        for thread in finished where !thread.join(until: .now + .seconds(1)) { thread.detach() }
    }

    /// Queues a job; returns its id when it must wait (no idle thread and no thread to add), nil
    /// when a thread takes it at once or it was refused.
    private func submit(_ job: Job) -> UInt64? {
        var job = job
        condition.lock()
        if shuttingDown {
            condition.unlock()
            job.complete(
                .failure(
                    TransportFailure(
                        kind: .other, curlCode: -1, message: "etcd client was shut down", requestSent: false)))
            return nil
        }
        if queue.count - idle >= maxQueued {
            let waiting = queue.count
            condition.unlock()
            job.complete(
                .failure(
                    TransportFailure(
                        kind: .overloaded, curlCode: -1,
                        message: "\(waiting) etcd requests already wait for one of \(maxThreads) threads; not sent",
                        requestSent: false)))
            return nil
        }
        nextID += 1
        job.id = nextID
        queue.append(job)
        var spawn = false
        if idle < queue.count, threads < maxThreads {
            threads += 1
            spawned += 1
            spawn = true
        }
        let mustWait = idle < queue.count && !spawn
        let index = spawned
        condition.signal()
        condition.unlock()
        if spawn {
            reapEnded()
            let thread = JoinableThread(name: "\(name)-\(index)") { [self] in workerLoop(index) }
            condition.lock()
            let lateForShutdown = shuttingDown
            var orphan: Job?
            if let thread, !lateForShutdown {
                workers[index] = thread
            } else if thread == nil {
                // No thread: the job must not wait for one that will never come.
                threads -= 1
                if threads == 0, let position = queue.firstIndex(where: { $0.id == job.id }) {
                    orphan = queue.remove(at: position)
                }
            }
            condition.unlock()
            if let thread, lateForShutdown, !thread.join(until: .now + .seconds(3)) { thread.detach() }
            if let orphan {
                orphan.complete(
                    .failure(
                        TransportFailure(
                            kind: .overloaded, curlCode: -1, message: "no thread for the etcd request; not sent",
                            requestSent: false)))
                return nil
            }
        }
        return mustWait ? job.id : nil
    }

    private func workerLoop(_ index: Int) {
        let connection = CurlConnection(tls: tls)
        while let job = nextJob(index) {
            if job.abort.isSet {
                job.complete(
                    .failure(
                        TransportFailure(
                            kind: .aborted, curlCode: -1, message: "transfer aborted", requestSent: false)))
                continue
            }
            var request = job.request
            if let deadline = job.deadline {
                // What is left of the caller's deadline after the wait bounds the transfer.
                let left = deadline - ContinuousClock.now
                guard left > .zero else {
                    job.complete(.failure(Self.waitedTooLong(maxThreads)))
                    continue
                }
                request.connectTimeout = min(request.connectTimeout, left)
                request.timeout = request.timeout.map { min($0, left) }
            }
            request.onSent?()
            job.complete(connection.perform(request, abort: job.abort))
        }
    }

    /// The next job, or nil when this thread should end.
    private func nextJob(_ index: Int) -> Job? {
        condition.lock()
        defer { condition.unlock() }
        while queue.isEmpty {
            if shuttingDown {
                threads -= 1
                return nil
            }
            idle += 1
            let signalled = condition.wait(until: Date(timeIntervalSinceNow: 60))
            idle -= 1
            if !signalled, queue.isEmpty, threads > 1 {
                threads -= 1
                ended.append(index)
                return nil
            }
        }
        return queue.removeFirst()
    }
}
