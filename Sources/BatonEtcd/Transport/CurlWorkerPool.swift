import Foundation

/// Dedicated threads that run libcurl's blocking transfers, so that none ever runs on Swift's
/// cooperative pool. Each thread owns one `CurlConnection` (one easy handle, one connection cache)
/// for its whole life. A thread is added whenever a request arrives and none is idle, so a request
/// never queues behind a slow one (up to `maxThreads`); threads beyond the first exit after a
/// minute idle.
final class CurlWorkerPool: @unchecked Sendable {
    private struct Job {
        var request: HTTPRequest
        var abort: AbortFlag
        var complete: @Sendable (Result<HTTPResponse, TransportFailure>) -> Void
    }

    private let condition = NSCondition()
    private let tls: EtcdTLSConfiguration?
    private let maxThreads: Int
    private let name: String
    // Guarded by `condition`.
    private var queue: [Job] = []
    private var threads = 0
    private var idle = 0
    private var shuttingDown = false
    private var spawned = 0

    init(name: String, tls: EtcdTLSConfiguration?, maxThreads: Int = 16) {
        self.name = name
        self.tls = tls
        self.maxThreads = max(1, maxThreads)
    }

    /// Runs one request on a worker thread; cancelling the calling task aborts the transfer.
    func run(_ request: HTTPRequest) async -> Result<HTTPResponse, TransportFailure> {
        let abort = AbortFlag()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                submit(Job(request: request, abort: abort) { continuation.resume(returning: $0) })
            }
        } onCancel: {
            abort.set()
        }
    }

    /// Stops the threads once the queued work is done; later requests fail at once.
    func shutdown() {
        condition.lock()
        shuttingDown = true
        condition.broadcast()
        condition.unlock()
    }

    private func submit(_ job: Job) {
        condition.lock()
        if shuttingDown {
            condition.unlock()
            job.complete(
                .failure(
                    TransportFailure(
                        kind: .other, curlCode: -1, message: "etcd client was shut down", requestSent: false)))
            return
        }
        queue.append(job)
        var spawn = false
        if idle < queue.count, threads < maxThreads {
            threads += 1
            spawned += 1
            spawn = true
        }
        let index = spawned
        condition.signal()
        condition.unlock()
        if spawn {
            let thread = Thread { [self] in workerLoop() }
            thread.name = "\(name)-\(index)"
            thread.start()
        }
    }

    private func workerLoop() {
        let connection = CurlConnection(tls: tls)
        while let job = nextJob() {
            if job.abort.isSet {
                job.complete(
                    .failure(
                        TransportFailure(
                            kind: .aborted, curlCode: -1, message: "transfer aborted", requestSent: false)))
                continue
            }
            job.complete(connection.perform(job.request, abort: job.abort))
        }
    }

    /// The next job, or nil when this thread should end.
    private func nextJob() -> Job? {
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
                return nil
            }
        }
        return queue.removeFirst()
    }
}
