import BatonCore
import Foundation
import Synchronization

extension LocalPostgresNode {
    /// Three statements, one round trip (simple query protocol): the instance, pg_stat_replication,
    /// pg_replication_slots.
    static let statusQuery = """
        SELECT pg_is_in_recovery() AS in_recovery,
               CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END AS current_lsn,
               pg_last_wal_receive_lsn() AS receive_lsn,
               pg_last_wal_replay_lsn() AS replay_lsn,
               CASE WHEN pg_is_in_recovery()
                    THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), (SELECT timeline_id FROM pg_control_checkpoint()))
                    ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS timeline,
               (SELECT system_identifier FROM pg_control_system())::text AS system_identifier,
               to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00:00'
                   AS postmaster_start_time,
               extract(epoch FROM pg_postmaster_start_time())::float8 AS postmaster_start_epoch,
               pg_is_in_recovery() AND pg_is_wal_replay_paused() AS replay_paused,
               to_char(pg_last_xact_replay_timestamp(), 'YYYY-MM-DD HH24:MI:SS.MS TZ') AS replay_timestamp,
               extract(epoch FROM pg_last_xact_replay_timestamp())::float8 AS replay_epoch,
               current_setting('server_version_num')::int AS server_version,
               EXISTS (SELECT 1 FROM pg_settings WHERE pending_restart) AS pending_restart,
               (SELECT status FROM pg_stat_wal_receiver) AS receiver_status,
               (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver) AS upstream;
        SELECT application_name, client_addr::text AS client_addr, state, sync_state,
               sent_lsn, write_lsn, flush_lsn, replay_lsn, usename::text AS usename, sync_priority
          FROM pg_stat_replication ORDER BY application_name;
        SELECT slot_name, slot_type, active, restart_lsn FROM pg_replication_slots ORDER BY slot_name
        """

    /// The parameters waiting for a restart: the value in force (as SHOW prints it) and the last
    /// one the configuration files set.
    static let pendingRestartQuery = """
        SELECT s.name, current_setting(s.name) AS old_value, f.setting AS new_value
          FROM pg_settings s
          LEFT JOIN LATERAL (SELECT setting FROM pg_file_settings fs
                              WHERE fs.name = s.name
                              ORDER BY fs.seqno DESC LIMIT 1) f ON true
         WHERE s.pending_restart ORDER BY s.name
        """

    public func status() async -> PostgresStatus {
        switch inspectDataDirectory() {
        case .valid:
            break
        case .missingOrEmpty:
            // A postmaster still running on a data directory that vanished under it is not "no data".
            if let running = runningPostmaster {
                return PostgresStatus(
                    process: .unusable,
                    problem: "\(dataDirectory) is missing or empty while postmaster \(running.pid) runs on it",
                    postmasterPID: running.pid)
            }
            return PostgresStatus(process: .uninitialized)
        case .unusable(let problem):
            return PostgresStatus(process: .unusable, problem: problem, postmasterPID: adoptIfRunning()?.pid)
        }
        guard let postmaster = adoptIfRunning() else {
            let lastExit = state.withLock { $0.lastExit }
            if let lastExit, !lastExit.requested {
                return PostgresStatus(
                    process: .crashed, problem: "postmaster \(lastExit.pid) exited without being asked to")
            }
            return PostgresStatus(process: .stopped)
        }
        var status = PostgresStatus(process: .running, postmasterPID: postmaster.pid)
        do {
            let connection = try await sessionConnection()
            let results = try await Self.withDeadline(configuration.statusTimeout) {
                try await connection.queryBatch(Self.statusQuery)
            }
            guard results.count == 3 else {
                throw PostgresError(
                    .unexpectedResult, "the status query returned \(results.count) results instead of 3")
            }
            try Self.fill(&status, instance: results[0].single(), replication: results[1], slots: results[2])
            if status.pendingRestart {
                // Only then: pg_file_settings reads the configuration files.
                let pending = try await Self.withDeadline(configuration.statusTimeout) {
                    try await connection.query(Self.pendingRestartQuery)
                }
                for row in pending.rows {
                    guard let name = try row.string("name") else { continue }
                    status.pendingRestartReason[name] = PendingChange(
                        oldValue: try row.string("old_value") ?? "", newValue: try row.string("new_value") ?? "")
                }
            }
        } catch let error as PostgresError {
            if error.code == .connectionClosed || error.code == .connectionFailed || error.code == .serverStarting
                || error.code == .connectTimeout || error.code == .statementTimeout
            {
                dropConnection()
            }
            // "Starting" only while the postmaster says so: a server that refuses the agent
            // ("too many clients", a changed password) is running, in an unknown state.
            let postmasterState = postmasterStatusLine(postmaster.pid)
            if error.code == .serverStarting || error.code == .connectionFailed, postmasterState == "starting" {
                status.process = .starting
            }
            status.postmasterState = postmasterState
            status.problem = error.description
        } catch {
            dropConnection()
            status.problem = "\(error)"
        }
        return status
    }

    /// Runs `body`, or throws `statementTimeout` once `limit` has passed, without waiting for
    /// `body` to end: a libpq call blocked on a backend that does not answer (stopped with SIGSTOP,
    /// stuck in the kernel) cannot be cancelled, and the status must not wait for it. The caller
    /// drops the connection; its thread ends whenever the backend does.
    static func withDeadline<T: Sendable>(
        _ limit: Duration, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let outcome = FirstOutcome<T>()
        return try await withCheckedThrowingContinuation { continuation in
            outcome.set(continuation)
            // Unstructured on purpose: neither task may be awaited by the other's completion.
            let work = Task {
                do {
                    outcome.finish(.success(try await body()))
                } catch {
                    outcome.finish(.failure(error))
                }
            }
            Task {
                try? await Task.sleep(for: limit)
                if outcome.finish(
                    .failure(
                        PostgresError(
                            .statementTimeout,
                            "the status query did not answer within \(limit); the connection is dropped")))
                {
                    work.cancel()
                }
            }
        }
    }

    static func fill(
        _ status: inout PostgresStatus, instance: QueryResult.Row, replication: QueryResult, slots: QueryResult
    ) throws {
        status.inRecovery = try instance.bool("in_recovery")
        status.currentLSN = try instance.lsn("current_lsn")
        status.receiveLSN = try instance.lsn("receive_lsn")
        status.replayLSN = try instance.lsn("replay_lsn")
        status.timeline = try instance.int("timeline")
        status.systemIdentifier = try instance.string("system_identifier")
        status.postmasterStartTime = try instance.string("postmaster_start_time")
        status.replayPaused = try instance.bool("replay_paused")
        status.lastReplayTimestamp = try instance.string("replay_timestamp")
        status.postmasterStartEpoch = try instance.string("postmaster_start_epoch").flatMap(Double.init)
        status.lastReplayEpoch = try instance.string("replay_epoch").flatMap(Double.init)
        status.serverVersion = try instance.int("server_version")
        status.pendingRestart = try instance.bool("pending_restart") ?? false
        status.walReceiverStatus = try instance.string("receiver_status")
        status.upstream = try instance.string("upstream")
        status.streaming = status.walReceiverStatus == "streaming"
        status.replication = try replication.rows.map { row in
            ReplicationRow(
                applicationName: try row.string("application_name") ?? "", clientAddress: try row.string("client_addr"),
                state: try row.string("state") ?? "", syncState: try row.string("sync_state") ?? "",
                sentLSN: try row.lsn("sent_lsn"), writeLSN: try row.lsn("write_lsn"),
                flushLSN: try row.lsn("flush_lsn"),
                replayLSN: try row.lsn("replay_lsn"), userName: try row.string("usename"),
                syncPriority: try row.int("sync_priority"))
        }
        status.slots = try slots.rows.map { row in
            ReplicationSlotRow(
                name: try row.string("slot_name") ?? "", type: try row.string("slot_type") ?? "",
                active: try row.bool("active") ?? false, restartLSN: try row.lsn("restart_lsn"))
        }
    }
}

/// The first of two outcomes resumes the continuation; the other is ignored. `set` runs before
/// either outcome can arrive (both tasks start inside the continuation's closure, after it).
final class FirstOutcome<T: Sendable>: Sendable {
    private let continuation = Mutex<CheckedContinuation<T, any Error>?>(nil)

    func set(_ continuation: CheckedContinuation<T, any Error>) {
        self.continuation.withLock { $0 = continuation }
    }

    /// True when this outcome was the first.
    @discardableResult
    func finish(_ result: Result<T, any Error>) -> Bool {
        let first = continuation.withLock { state -> CheckedContinuation<T, any Error>? in
            defer { state = nil }
            return state
        }
        first?.resume(with: result)
        return first != nil
    }
}
