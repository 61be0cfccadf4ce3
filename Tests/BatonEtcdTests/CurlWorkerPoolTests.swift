import Foundation
import Testing

@testable import BatonEtcd

/// `shutdown()` returns only when the pool's threads have ended. Before, it returned at once and a
/// CLI that exited right after raced a worker thread's OpenSSL clean-up against OpenSSL's exit
/// handler: `baton list` crashed about once in 300 runs (double free, SIGSEGV in libcrypto).
@Suite struct CurlWorkerPoolTests {
    /// The names of this process's threads that start with `prefix`.
    static func threads(named prefix: String) -> [String] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.compactMap { task in
            let name = (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? ""
            return name.hasPrefix(prefix) ? name : nil
        }
    }

    @Test func shutdownWaitsUntilTheThreadsHaveEnded() async throws {
        let pool = CurlWorkerPool(name: "joincheck", tls: nil, maxThreads: 4)
        // Requests to a closed port: each runs on a worker thread and fails fast.
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    _ = await pool.run(
                        HTTPRequest(
                            url: "http://127.0.0.1:1/v3/kv/range", method: .post, body: [], headers: [],
                            connectTimeout: .seconds(1), timeout: .seconds(1)))
                }
            }
        }
        #expect(!Self.threads(named: "joincheck-").isEmpty, "the requests ran on no named thread")
        pool.shutdown()
        #expect(Self.threads(named: "joincheck-").isEmpty, "\(Self.threads(named: "joincheck-"))")
        // Later requests fail at once, unsent.
        let late = await pool.run(
            HTTPRequest(
                url: "http://127.0.0.1:1/", method: .post, body: [], headers: [], connectTimeout: .seconds(1),
                timeout: .seconds(1)))
        guard case .failure(let failure) = late else {
            Issue.record("a request after shutdown was sent")
            return
        }
        #expect(!failure.requestSent)
    }
}
