import BatonClient
import BatonCore
import BatonPostgres
import BatonTestCluster
import Foundation
import PostgresNIO
import Synchronization
import Testing

/// What the client reports when work is cut short, rolled back or misused, against a real
/// cluster: the commit outcome of each case, the lease ending with its body, a task's
/// cancellation reaching the server, and the retry helper.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct ClientCommitOutcomeTests {
    /// Runs `sql` through `client.write`, terminates its backend from another session once it is
    /// running, and returns what the write threw.
    static func cutShort(
        _ client: BatonClient, _ cluster: AgentCluster, leader: String, marker: String,
        _ body: @escaping @Sendable (BatonConnection) async throws -> Void
    ) async throws -> BatonClientError? {
        let task = Task { try await client.write { conn in try await body(conn) } }
        // Bounded: 100 × 50 ms.
        var terminated = false
        for _ in 0..<100 where !terminated {
            try await Task.sleep(for: .milliseconds(50))
            let result = try await cluster.execute(
                leader,
                "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
                    + "WHERE query LIKE '%\(marker)%' AND pid <> pg_backend_pid() AND state = 'active'")
            terminated = (try result.single().int("n") ?? 0) > 0
        }
        #expect(terminated, "the statement marked \(marker) never ran")
        do {
            _ = try await task.value
            Issue.record("the write marked \(marker) succeeded although its backend was terminated")
            return nil
        } catch let error as BatonClientError {
            return error
        }
    }

    @Test("commit outcomes: writing functions, WITH … INSERT, swallowed errors, open BEGIN, use after the body")
    func commitOutcomes() async throws {
        let cluster = try AgentCluster.start("client-outcome")
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy()
        let client = try await cluster.client(["statement_timeout": "30s"])
        defer { Task { await client.shutdown() } }
        try await client.write { conn in
            try await conn.query("CREATE TABLE outcome (id bigint PRIMARY KEY)")
            try await conn.query(
                """
                CREATE FUNCTION create_order(i bigint, marker text) RETURNS bigint LANGUAGE plpgsql AS $$
                BEGIN
                    INSERT INTO outcome (id) VALUES (i);
                    PERFORM pg_sleep(20);
                    RETURN i;
                END $$
                """)
        }
        func ids() async throws -> Set<Int> {
            try await client.read { conn in
                Set(try await conn.query("SELECT id FROM outcome").values(Int.self))
            }
        }

        // A SELECT that calls a function that writes, cut short: the outcome is unknown.
        let function = try await Self.cutShort(client, cluster, leader: leader, marker: "outcome-fn") { conn in
            try await conn.query("SELECT create_order(1, 'outcome-fn')")
        }
        #expect(function?.code == .connectionLost)
        #expect(
            function?.commitOutcomeUnknown == true, "SELECT create_order(…) cut short: \(String(describing: function))")

        // WITH … INSERT outside a transaction block: unknown; inside one: nothing committed.
        let with = try await Self.cutShort(client, cluster, leader: leader, marker: "outcome-with") { conn in
            try await conn.query(
                "WITH x AS (INSERT INTO outcome (id) VALUES (2) RETURNING id) SELECT pg_sleep(20), 'outcome-with' FROM x"
            )
        }
        #expect(with?.commitOutcomeUnknown == true, "WITH … INSERT cut short: \(String(describing: with))")
        let inBlock = try await Self.cutShort(client, cluster, leader: leader, marker: "outcome-block") { conn in
            try await conn.query("BEGIN")
            try await conn.query(
                "WITH x AS (INSERT INTO outcome (id) VALUES (3) RETURNING id) SELECT pg_sleep(20), 'outcome-block' FROM x"
            )
        }
        #expect(inBlock?.commitOutcomeUnknown == false, "cut short inside BEGIN: \(String(describing: inBlock))")
        #expect(inBlock.map { BatonClient.isRetryable($0) } == true)

        // A transaction whose body swallowed an SQL error: COMMIT answers ROLLBACK, and so do we.
        do {
            try await client.transaction { conn in
                try await conn.query("INSERT INTO outcome (id) VALUES (10)")
                _ = try? await conn.query("SELECT 1 / 0")
            }
            Issue.record("a transaction the server rolled back was reported as committed")
        } catch let error as BatonClientError {
            #expect(error.code == .transactionRolledBack, "\(error)")
            #expect(!error.commitOutcomeUnknown)
        }
        #expect(try await !ids().contains(10))

        // A write whose body leaves BEGIN open: rolled back, and the caller is told.
        do {
            try await client.write { conn in
                try await conn.query("BEGIN")
                try await conn.query("INSERT INTO outcome (id) VALUES (20)")
            }
            Issue.record("a write that left its transaction open was reported as a success")
        } catch let error as BatonClientError {
            #expect(error.code == .transactionLeftOpen, "\(error)")
        }
        #expect(try await !ids().contains(20))
        // The connection was rolled back, not lost: the next write on it works.
        try await client.write { conn in try await conn.query("INSERT INTO outcome (id) VALUES (21)") }
        #expect(try await ids().contains(21))

        // A connection used after its body returned: refused, nothing sent.
        let escaped = try await client.withPrimaryConnection { $0 }
        do {
            try await escaped.query("INSERT INTO outcome (id) VALUES (30)")
            Issue.record("a connection was used after its lease ended")
        } catch let error as BatonClientError {
            #expect(error.code == .connectionReleased, "\(error)")
        }
        #expect(try await !ids().contains(30))

        // Isolation levels and read-only transactions.
        let (level, _) = try await client.transaction(level: .serializable, readOnly: true) { conn in
            try await conn.query("SHOW transaction_isolation").firstValue(String.self)
        }
        #expect(level == "serializable")

        // The retry helper runs again after a serialization failure, not after other errors.
        let attempts = AttemptCounter()
        let (value, _) = try await client.retrying {
            try await client.transaction(level: .serializable) { conn in
                if attempts.next() == 1 {
                    try await conn.query(
                        "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$")
                }
                return try await conn.query("SELECT 7").firstValue(Int.self)
            }
        }
        #expect(value == 7 && attempts.value == 2)
        let duplicate = AttemptCounter()
        await #expect(throws: PSQLError.self) {
            try await client.retrying {
                _ = duplicate.next()
                try await client.write { conn in try await conn.query("INSERT INTO outcome (id) VALUES (21)") }
            }
        }
        #expect(duplicate.value == 1, "a unique violation was retried")

        // The body ends the transaction itself: transaction { } did not commit and says so.
        do {
            try await client.transaction { conn in
                try await conn.query("INSERT INTO outcome (id) VALUES (50)")
                try await conn.query("ROLLBACK")
            }
            Issue.record("a transaction the body rolled back was reported as committed")
        } catch let error as BatonClientError {
            #expect(error.code == .transactionEndedInBody, "\(error)")
        }
        #expect(try await !ids().contains(50))

        // A body that committed on its own before a serialization failure is not run again.
        let partial = AttemptCounter()
        do {
            _ = try await client.retrying {
                try await client.write { conn in
                    _ = partial.next()
                    try await conn.query("INSERT INTO outcome (id) VALUES (60)")
                    try await conn.query(
                        "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$")
                }
            }
            Issue.record("the failing body succeeded")
        } catch let error as BatonClientError {
            #expect(error.code == .partiallyCommitted && error.commitOutcomeUnknown, "\(error)")
        }
        #expect(partial.value == 1, "a body that had committed part of its work was retried")
        #expect(try await ids().contains(60))

        // Cancelling the task stops the statement on the server. On a replica nothing can have
        // committed: plain CancellationError. On the primary an autocommit statement may have:
        // the error says the outcome is unknown.
        for (consistency, marker) in [(Consistency.eventual, "outcome-cancel-read"), (.strong, "outcome-cancel-write")]
        {
            let sleeper = Task {
                try await client.read(consistency: consistency) { conn in
                    try await conn.query("SELECT pg_sleep(20), \(marker)::text").firstValue(String.self)
                }
            }
            try await Task.sleep(for: .milliseconds(500))
            let cancelled = ContinuousClock.now
            sleeper.cancel()
            let outcome = await sleeper.result
            let cancelTook = ContinuousClock.now - cancelled
            switch outcome {
            case .failure(let error as BatonClientError):
                #expect(consistency == .strong && error.commitOutcomeUnknown, "\(marker): \(error)")
            case .failure(let error):
                #expect(consistency == .eventual && error is CancellationError, "\(marker): \(error)")
            case .success:
                Issue.record("\(marker): the cancelled statement succeeded")
            }
            #expect(cancelTook < .seconds(1), "cancelling took \(cancelTook)")
            // The server ends the statement within client_connection_check_interval (1 s).
            var stillRunning = 1
            for _ in 0..<40 where stillRunning > 0 {
                try await Task.sleep(for: .milliseconds(100))
                stillRunning = 0
                for node in cluster.nodes.map(\.name) {
                    let result = try await cluster.execute(
                        node,
                        "SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE '%pg_sleep(20)%' "
                            + "AND pid <> pg_backend_pid() AND state = 'active'")
                    stillRunning += try result.single().int("n") ?? 0
                }
            }
            #expect(stillRunning == 0, "\(marker): the cancelled statement still runs on the server after 4 s")
            measure("commit-outcomes", ["\(marker)_took": seconds(cancelTook)])
        }
        try await client.write { conn in try await conn.query("INSERT INTO outcome (id) VALUES (40)") }
    }
}

/// A thread-safe attempt counter for the retry tests.
final class AttemptCounter: Sendable {
    private let count = Mutex(0)
    func next() -> Int {
        count.withLock {
            $0 += 1
            return $0
        }
    }
    var value: Int { count.withLock { $0 } }
}
