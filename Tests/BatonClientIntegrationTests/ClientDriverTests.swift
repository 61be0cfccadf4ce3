import BatonClient
import BatonCore
import BatonPostgres
import BatonTestCluster
import Foundation
import InMemoryTracing
import PostgresNIO
import Synchronization
import Testing
import Tracing

/// The application's side of BatonClient: postgres-nio connections through the routing, against a
/// real cluster. Typed binds and decoding, prepared statements, COPY, and LISTEN/NOTIFY that
/// follows the primary across a switchover.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct ClientDriverTests {
    struct Order: Codable, PostgresCodable, Equatable, Sendable {
        var item: String
        var quantity: Int
    }

    /// A prepared statement: parsed once per connection, then executed by name.
    struct AddAndPort: PostgresPreparedStatement {
        static let sql = "SELECT $1::bigint + 1, inet_server_port()"
        typealias Row = (Int64, Int32)
        var value: Int64
        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings()
            bindings.append(value)
            return bindings
        }
        func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
    }

    /// The name of the thread running the caller (`NIO-…` for an event loop).
    static func threadName() -> String {
        ((try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "?")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("typed binds and decoding, prepared statements, COPY in, LISTEN across a switchover")
    func typedQueriesPreparedCopyAndListen() async throws {
        let cluster = try AgentCluster.start("client-driver")
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy()
        let client = try await cluster.client()
        defer { Task { await client.shutdown() } }

        // A statement runs on its connection's event loop (`ServerConnection.guarded` refuses to
        // send otherwise); the body around it stays off every event loop, before and after.
        let (threads, _) = try await client.write { conn in
            let before = Self.threadName()
            for try await _ in try await conn.query("SELECT 1") {}
            return (before, Self.threadName())
        }
        #expect(!threads.0.hasPrefix("NIO-") && !threads.1.hasPrefix("NIO-"), "body ran on \(threads)")

        // Every common type, bound and read back.
        try await client.write { conn in
            try await conn.query(
                """
                CREATE TABLE typed (id bigint PRIMARY KEY, small smallint, regular int, flag bool, ratio double precision,
                  single real, price numeric, name text, at timestamptz, uid uuid, blob bytea, tags text[], counts bigint[],
                  payload jsonb, missing text)
                """)
        }
        let at = Date(timeIntervalSince1970: 1_765_000_000.123456)
        let uid = UUID()
        let blob = Data([0, 1, 2, 254, 255])
        let order = Order(item: "book", quantity: 3)
        let price = Decimal(string: "12345.678")!
        let missing: String? = nil
        try await client.write { conn in
            try await conn.query(
                """
                INSERT INTO typed VALUES (\(Int64(1)), \(Int16(-7)), \(Int32(42)), \(true), \(2.5), \(Float(0.25)),
                  \(price), \("naïve ✓ 'quoted'"), \(at), \(uid), \(blob), \(["a", "b,c"]), \([Int64(1), 2, 3]),
                  \(order), \(missing))
                """)
        }
        let row = try await client.read(consistency: .strong) { conn in
            var found:
                (
                    Int16, Int32, Bool, Double, Float, Decimal, String, Date, UUID, Data, [String], [Int64], Order,
                    String?
                )?
            let rows = try await conn.query(
                """
                SELECT small, regular, flag, ratio, single, price, name, at, uid, blob, tags, counts, payload, missing
                FROM typed WHERE id = \(Int64(1))
                """)
            for try await value in rows.decode(
                (
                    Int16, Int32, Bool, Double, Float, Decimal, String, Date, UUID, Data, [String], [Int64], Order,
                    String?
                ).self)
            {
                found = value
            }
            return found
        }
        let values = try #require(row)
        #expect(values.0 == -7 && values.1 == 42 && values.2 && values.3 == 2.5 && values.4 == 0.25)
        #expect(values.5 == price && values.6 == "naïve ✓ 'quoted'")
        #expect(abs(values.7.timeIntervalSince(at)) < 0.000_001)
        #expect(values.8 == uid && values.9 == blob && values.10 == ["a", "b,c"] && values.11 == [1, 2, 3])
        #expect(values.12 == order && values.13 == nil)

        // A read-your-writes read decodes the same on a replica.
        let (_, token) = try await client.write { conn in
            try await conn.query("UPDATE typed SET regular = \(Int32(43)) WHERE id = \(Int64(1))")
        }
        let onReplica = try await client.read(consistency: .readYourWrites(token)) { conn in
            (try await conn.query("SELECT regular FROM typed WHERE id = \(Int64(1))").firstValue(Int32.self), conn.role)
        }
        #expect(onReplica.0 == 43)

        // Prepared statements, on the primary and on a replica.
        for consistency in [Consistency.strong, .eventual] {
            let sums = try await client.read(consistency: consistency) { conn in
                var sums: [Int64] = []
                for value in Int64(1)...3 {
                    for try await (sum, _) in try await conn.execute(AddAndPort(value: value)) { sums.append(sum) }
                }
                return sums
            }
            #expect(sums == [2, 3, 4], "\(consistency)")
        }

        // COPY in: 1,000 rows in one statement.
        try await client.write { conn in
            try await conn.query("CREATE TABLE copied (id bigint, name text)")
            try await conn.copyFrom(table: "copied", columns: ["id", "name"]) { writer in
                var buffer = ByteBuffer()
                for id in 1...1_000 { buffer.writeString("\(id)\trow \(id)\n") }
                try await writer.write(buffer)
            }
        }
        let copied = try await client.read(consistency: .strong) { conn in
            var result: (Int, Int)?
            for try await row in try await conn.query("SELECT count(*), sum(id)::bigint FROM copied").decode(
                (Int, Int).self)
            {
                result = row
            }
            return result
        }
        #expect(copied?.0 == 1_000 && copied?.1 == 500_500)

        // A COPY cut short by cancellation ends cleanly (review finding: closing the channel
        // through postgres-nio's handler during COPY trapped), and the pool goes on.
        let copying = Task {
            try await client.write { conn in
                try await conn.copyFrom(table: "copied", columns: ["id", "name"]) { writer in
                    try await writer.write(ByteBuffer(string: "5000\tcut\n"))
                    try await Task.sleep(for: .seconds(5))
                }
            }
        }
        try await Task.sleep(for: .milliseconds(300))
        copying.cancel()
        _ = await copying.result
        let afterCopy = try await client.write { conn in try await conn.query("SELECT 1").firstValue(Int.self) }.0
        #expect(afterCopy == 1)

        // The PostgresDatabase adapter (what PostgresKit's SQLDatabase and Fluent build on).
        _ = try await client.database().query("INSERT INTO copied VALUES (2000, 'adapter')").get()
        let adapterRows = try await client.database(.read(.eventual)).query(
            "SELECT inet_server_port(), (SELECT count(*) FROM copied WHERE id = 2000)::int"
        ).get().rows
        let adapterRow = try #require(adapterRows.first).decode((Int, Int).self)
        #expect(cluster.nodesByPort[adapterRow.0] != leader, "an eventual read through the adapter reached the primary")
        let adapterWrite = try await client.database().query("SELECT inet_server_port()").get().rows
        let writePort = try #require(adapterWrite.first).decode(Int.self)
        #expect(cluster.nodesByPort[writePort] == leader)

        // Spans: one per acquisition and per statement, with the member and its role.
        let tracer = InMemoryTracer()
        let traced = try await cluster.client(tracer: tracer)
        try await traced.write { conn in try await conn.query("INSERT INTO copied VALUES (3000, 'traced')") }
        _ = try await traced.read(consistency: .eventual) { conn in
            try await conn.query("SELECT count(*) FROM copied").firstValue(Int.self)
        }
        // A notifications stream ends when its client shuts down (review finding: it outlived it).
        let orphan = Task {
            var count = 0
            for try await _ in traced.notifications(channel: "nobody") { count += 1 }
            return count
        }
        try await Task.sleep(for: .milliseconds(300))
        let shutdownAt = ContinuousClock.now
        await traced.shutdown()
        _ = try? await orphan.value
        #expect(ContinuousClock.now - shutdownAt < .seconds(3), "the notifications stream outlived shutdown")
        let spans = tracer.finishedSpans
        let acquires = spans.filter { $0.operationName == "baton.client.acquire" }
        let statements = spans.filter { $0.operationName == "baton.client.statement" }
        func text(_ span: FinishedInMemorySpan, _ key: String) -> String? {
            if case .string(let value)? = span.attributes.get(key) { return value }
            return nil
        }
        let roles = Set(statements.compactMap { text($0, "baton.role") })
        #expect(acquires.count >= 2, "acquire spans: \(acquires.map(\.attributes))")
        #expect(
            statements.contains { text($0, "db.query.text")?.contains("traced") == true },
            "statement spans: \(statements.map(\.attributes))")
        #expect(roles.contains("primary") && roles.contains("replica"), "roles: \(roles)")
        #expect(statements.allSatisfy { text($0, "baton.member") != nil })

        // A server that goes silent while the rows stream (a forwarder stopped: the kernel still
        // acknowledges, so neither keepalive nor TCP_USER_TIMEOUT ends it, and the server's own
        // statement_timeout cannot reach us): the backstop covers the statement until its
        // ReadyForQuery, not only until the rows are handed over, and cuts the connection.
        let leaderPort = cluster.nodes.first { $0.name == leader }!.pgPort
        let silent = try TCPForwarder(["127.0.0.1:\(leaderPort)"])
        defer { silent.stop() }
        let direct = try await cluster.client(
            ["host": silent.addresses[0], "statement_timeout": "2s", "health_check_after_idle": "60s"],
            without: ["etcd_hosts", "scope"])
        defer { Task { await direct.shutdown() } }
        let cutStarted = ContinuousClock.now
        var rowsBeforeCut = 0
        let cut: (any Error)?
        do {
            _ = try await direct.write { conn in
                let rows = try await conn.query(
                    "SELECT g, repeat('x', 2000) FROM generate_series(1, 200000) g")
                for try await _ in rows {
                    rowsBeforeCut += 1
                    if rowsBeforeCut == 1 { silent.suspend() }
                }
            }
            cut = nil
        } catch {
            cut = error
        }
        silent.resume()
        let cutAfter = ContinuousClock.now - cutStarted
        #expect(cut != nil, "the rows of a silent server were read to the end?")
        // Met while reading rows, the failure is classified as a statement's would be: a read
        // outside a transaction block on the primary may have called something that writes.
        let lost = cut as? BatonClientError
        #expect(lost?.code == .connectionLost && lost?.commitOutcomeUnknown == true, "\(String(describing: cut))")
        #expect(cutAfter < .seconds(10), "cut after \(cutAfter) (statement_timeout 2 s + 1 s)")
        #expect(rowsBeforeCut < 200_000)
        measure(
            "silent-server-cut", ["after": seconds(cutAfter), "error": cut.map { String(reflecting: $0) } ?? "none"])

        // LISTEN that follows the primary across a switchover.
        let received = Payloads()
        let listener = Task {
            for try await notification in client.notifications(channel: "orders") {
                received.items.withLock { $0.append(notification.payload) }
            }
        }
        defer { listener.cancel() }
        func notifyUntilReceived(_ payload: String) async throws -> Bool {
            // Bounded: 100 × 100 ms. The subscription may still be (re)starting.
            for _ in 0..<100 {
                try await client.write { conn in try await conn.query("SELECT pg_notify('orders', \(payload))") }
                try await Task.sleep(for: .milliseconds(100))
                if received.items.withLock({ $0.contains(payload) }) { return true }
            }
            return false
        }
        #expect(try await notifyUntilReceived("before"), "no notification from \(leader)")

        let target = cluster.nodes.map(\.name).first { $0 != leader }!
        try await cluster.waitFor("\(target)'s published position to be current", timeout: .seconds(20)) {
            guard let optime = $0.status?.optime, let position = $0.member(named: target)?.xlogLocation else {
                return false
            }
            return optime.bytesAhead(of: position) < 65536
        }
        #expect(try await cluster.store.writeFailover(FailoverRequest(leader: leader, member: target), expected: nil))
        try await cluster.waitFor("\(target) to lead", timeout: .seconds(40)) { cluster.primary(in: $0) == target }
        let switched = ContinuousClock.now
        #expect(try await notifyUntilReceived("after"), "no notification after the switchover to \(target)")
        let node = try await client.write { conn in try await servedBy(conn, cluster) }.0
        #expect(node == target)
        measure("listen-switchover", ["resubscribed_within": seconds(ContinuousClock.now - switched)])
    }
}

/// Payloads a listener received, shared with the test.
final class Payloads: Sendable {
    let items = Mutex<[String]>([])
}
