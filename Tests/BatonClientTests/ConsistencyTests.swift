import BatonCore
import Logging
import Testing

@testable import BatonClient

@Suite struct ConsistencyTests {
    @Test func strongIsTheDefaultAndScopesNest() async {
        #expect(BatonRouting.consistency == .strong && !BatonRouting.forcePrimary)
        await withConsistency(.eventual) {
            #expect(BatonRouting.consistency == .eventual)
            await withPrimary {
                #expect(BatonRouting.forcePrimary && BatonRouting.consistency == .eventual)
            }
            // Child tasks inherit the scope.
            let inherited = await Task { BatonRouting.consistency }.value
            #expect(inherited == .eventual)
        }
        #expect(BatonRouting.consistency == .strong)
    }

    @Test func writeTokensParseAndOrder() throws {
        let token = try #require(WriteToken("1/2A"))
        #expect(token.lsn == LSN(0x1_0000_002A) && token.description == "1/2A")
        #expect(WriteToken("nope") == nil)
        #expect(WriteToken(lsn: LSN(1)) < token)
    }

    @Test func statementsThatMayHaveCommitted() {
        #expect(BatonConnection.mayCommit("INSERT INTO t VALUES (1)", inTransaction: false))
        #expect(!BatonConnection.mayCommit("INSERT INTO t VALUES (1)", inTransaction: true))
        #expect(BatonConnection.mayCommit("commit", inTransaction: true))
        #expect(BatonConnection.mayCommit("  END;", inTransaction: true))
        #expect(BatonConnection.mayCommit("PREPARE TRANSACTION 'x'", inTransaction: true))
        #expect(!BatonConnection.mayCommit("BEGIN", inTransaction: false))
        #expect(!BatonConnection.mayCommit("ROLLBACK", inTransaction: true))
        #expect(!BatonConnection.mayCommit("SET statement_timeout = 0", inTransaction: false))
        #expect(BatonConnection.mayCommit("WITH x AS (DELETE FROM t RETURNING *) SELECT 1", inTransaction: false))
        // A read may call a function that writes, or run its statement (EXPLAIN ANALYZE): on the
        // primary, outside a transaction block, anything may have committed.
        #expect(BatonConnection.mayCommit("SELECT create_order(1)", inTransaction: false))
        #expect(BatonConnection.mayCommit("select nextval('s')", inTransaction: false))
        #expect(BatonConnection.mayCommit("SELECT 1", inTransaction: false))
        #expect(BatonConnection.mayCommit("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", inTransaction: false))
        #expect(BatonConnection.mayCommit("CALL archive_orders()", inTransaction: false))
        // Comments and parentheses do not hide the statement.
        #expect(BatonConnection.mayCommit("/* begin */ INSERT INTO t VALUES (1)", inTransaction: false))
        #expect(BatonConnection.mayCommit("-- set\nDELETE FROM t", inTransaction: false))
        #expect(BatonConnection.mayCommit("/* a /* nested */ rollback */ COMMIT", inTransaction: true))
        #expect(BatonConnection.mayCommit("(SELECT f())", inTransaction: false))
        // A replica writes nothing.
        #expect(!BatonConnection.mayCommit("SELECT create_order(1)", inTransaction: false, role: .replica))
        #expect(!BatonConnection.mayCommit("COMMIT", inTransaction: true, role: .replica))
        // A statement whose keyword the scan does not reach may be anything.
        let longComment = "/* " + String(repeating: "x", count: 5_000) + " */ COMMIT"
        #expect(BatonConnection.mayCommit(longComment, inTransaction: true))
    }

    @Test func firstKeywordSkipsCommentsAndIsBounded() {
        #expect(BatonConnection.firstKeyword("  -- x\n /* y */ ( select 1") == "SELECT")
        #expect(BatonConnection.firstKeyword("/* unterminated") == "")
        #expect(BatonConnection.firstKeyword(String(repeating: "(", count: 10_000) + "SELECT") == "")
        #expect(BatonConnection.firstKeyword("verylongkeywordindeed") == "VERYLONGKEY")
        // PostgreSQL's blanks (\v and \f too); a keyword is ASCII letters only.
        #expect(BatonConnection.firstKeyword("\u{0B}\u{0C}\r\n\tBegin;") == "BEGIN")
        #expect(BatonConnection.firstKeyword(";;commit") == "COMMIT")
        #expect(BatonConnection.firstKeyword("\u{A0}BEGIN") == "")
        #expect(BatonConnection.firstKeyword("ÉBEGIN") == "")
        #expect(BatonConnection.firstKeyword("set_config") == "SET")
        #expect(BatonConnection.firstKeyword("") == "")
        // A string that is not stored contiguously (bridged, say) is scanned as well.
        let bridged = String(decoding: Array("  rollback".utf8), as: UTF8.self)
        #expect(BatonConnection.firstKeyword(bridged) == "ROLLBACK")
        // A non-breaking space is not a blank: unknown, so "may have committed".
        #expect(BatonConnection.mayCommit("\u{A0}BEGIN", inTransaction: false))
    }

    @Test func whatIsSafeToRetry() {
        // Server errors by SQLSTATE (the integration tests raise real ones).
        #expect(BatonClient.retryableStates == ["40001", "40P01"])
        #expect(BatonClient.isRetryable(BatonClientError(.primaryChanged, "x", commitOutcomeUnknown: false)))
        #expect(!BatonClient.isRetryable(BatonClientError(.primaryChanged, "x", commitOutcomeUnknown: true)))
        #expect(!BatonClient.isRetryable(BatonClientError(.connectionLost, "x", commitOutcomeUnknown: true)))
        #expect(BatonClient.isRetryable(BatonClientError(.noPrimary, "x")))
        #expect(!BatonClient.isRetryable(BatonClientError(.transactionRolledBack, "x")))
        #expect(!BatonClient.isRetryable(BatonClientError(.transactionLeftOpen, "x")))
        #expect(!BatonClient.isRetryable(CancellationError()))
    }
}

/// The client over a fixed topology whose servers do not exist: routing decisions that need no
/// server, and the errors when one is needed.
@Suite struct FixedTopologyClientTests {
    static func configuration(_ extra: [String: String] = [:]) throws -> BatonClientConfiguration {
        var settings = [
            "host": "127.0.0.1:1", "user": "app", "primary_wait_timeout": "300ms", "connect_timeout": "200ms",
        ]
        settings.merge(extra) { $1 }
        return try BatonClientConfiguration(settings: settings)
    }

    static let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }

    @Test func noReplicaWithPolicyFailIsAClearError() async throws {
        let client = try await BatonClient(Self.configuration(["no_replica_policy": "fail"]), logger: Self.logger)
        do {
            _ = try await client.read(consistency: .eventual) { _ in 1 }
            Issue.record("an eventual read succeeded without replicas")
        } catch let error as BatonClientError {
            #expect(error.code == .noReplicaAvailable)
            #expect(error.message.contains("none is published"))
        }
        await client.shutdown()
    }

    @Test func writesWaitForAPrimaryThenFailWithNoPrimary() async throws {
        let client = try await BatonClient(Self.configuration(), logger: Self.logger)
        let started = ContinuousClock.now
        do {
            _ = try await client.write { conn in try await conn.query("SELECT 1") }
            Issue.record("a write succeeded against a closed port")
        } catch let error as BatonClientError {
            #expect(error.code == .noPrimary)
            #expect(error.message.contains("127.0.0.1:1"))
        }
        let waited = ContinuousClock.now - started
        #expect(waited >= .milliseconds(300) && waited < .seconds(5))
        // Eventual reads fall back to the primary by default (and fail the same way).
        await #expect(throws: BatonClientError.self) {
            try await client.read(consistency: .eventual) { _ in 1 }
        }
        await client.shutdown()
        do {
            _ = try await client.read { _ in 1 }
            Issue.record("a read succeeded after shutdown")
        } catch let error as BatonClientError {
            #expect(error.code == .shutdown)
        }
    }

    @Test func anUnreachableEtcdFailsTheStartWithAClearError() async throws {
        var configuration = try BatonClientConfiguration(settings: [
            "etcd_hosts": "127.0.0.1:1", "scope": "none", "user": "app", "topology_timeout": "500ms",
        ])
        configuration.connectTimeout = .milliseconds(200)
        do {
            _ = try await BatonClient(configuration, logger: Self.logger)
            Issue.record("started without etcd")
        } catch let error as BatonClientError {
            #expect(error.code == .topologyUnavailable)
        }
    }
}
