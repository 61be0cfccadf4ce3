import BatonClient
import BatonPostgres
import BatonTestCluster
import Foundation
import Logging
import Metrics
import MetricsTestKit
import PostgresNIO
import Synchronization
import Testing
import Tracing

extension AgentCluster {
    /// Records a test issue with the cluster report attached.
    func fail(_ message: String, sourceLocation: SourceLocation = #_sourceLocation) async {
        Issue.record(Comment(rawValue: "\(message)\n\(await report())"), sourceLocation: sourceLocation)
    }

    /// A client following this cluster through etcd, with test-friendly timings.
    func client(
        _ settings: [String: String] = [:], without: Set<String> = [], logs: LogCapture? = nil,
        tracer: (any Tracer)? = nil
    ) async throws -> BatonClient {
        var all = [
            "etcd_hosts": endpoints.joined(separator: ","), "scope": AgentCluster.scope, "user": "postgres",
            "password": AgentCluster.superuserPassword, "application_name": "baton-client-it",
            "connect_timeout": "500ms", "statement_timeout": "5s", "primary_wait_timeout": "20s",
            "health_check_after_idle": "0", "breaker_minimum_requests": "3", "breaker_open_timeout": "1s",
            "breaker_half_open_requests": "1", "max_connections": "4",
        ]
        all.merge(settings) { $1 }
        for key in without { all[key] = nil }
        var configuration = try BatonClientConfiguration(settings: all)
        configuration.tracer = tracer
        let logger =
            logs.map { capture in
                var logger = Logger(label: "baton.client") { _ in capture }
                logger.logLevel = .debug
                return logger
            }
            ?? (ProcessInfo.processInfo.environment["BATON_CLIENT_DEBUG"] != nil
                ? {
                    var l = Logger(label: "baton.client") { StreamLogHandler.standardError(label: $0) }
                    l.logLevel = .debug
                    return l
                }()
                : Logger(label: "baton.client") { _ in SwiftLogNoOpLogHandler() })
        return try await BatonClient(configuration, logger: logger)
    }

    /// Node names by PostgreSQL port, to tell where a statement ran (`inet_server_port()`).
    var nodesByPort: [Int: String] { Dictionary(uniqueKeysWithValues: nodes.map { ($0.pgPort, $0.name) }) }
}

/// A node's postmaster and all its children (backends, WAL receiver, …), from /proc.
func postgresProcesses(_ cluster: AgentCluster, _ name: String) -> [pid_t] {
    guard let postmaster = cluster.postmasterPID(name) else { return [] }
    var pids = [postmaster]
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    for entry in entries {
        guard let pid = pid_t(entry),
            let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { continue }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        if fields.count > 1, pid_t(fields[1]) == postmaster { pids.append(pid) }
    }
    return pids
}

/// Where a statement ran, from the server itself.
func servedBy(_ connection: BatonConnection, _ cluster: AgentCluster) async throws -> String {
    let port = try await connection.query("SELECT inet_server_port()").firstValue(Int.self) ?? -1
    return cluster.nodesByPort[port] ?? "port \(port)"
}

/// Keeps every log message (with metadata) of the client, for assertions on transitions.
final class LogCapture: LogHandler, @unchecked Sendable {
    private let lines = Mutex<[String]>([])
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .debug

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        let text = merged.isEmpty ? "\(event.message)" : "\(event.message) \(merged.sorted { $0.key < $1.key })"
        lines.withLock { $0.append(text) }
    }

    var all: [String] { lines.withLock { $0 } }

    func contains(_ fragment: String) -> Bool { all.contains { $0.contains(fragment) } }
}

func measure(_ test: String, _ values: KeyValuePairs<String, String>) {
    print("MEASURE \(test): " + values.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
}

/// The process's one metrics backend (swift-metrics allows one bootstrap per process): set up by
/// the first test that reads metrics; clients created afterwards record into it.
enum TestMetricsBackend {
    static let shared: TestMetrics = {
        let metrics = TestMetrics()
        MetricsSystem.bootstrap(metrics)
        return metrics
    }()
}

extension PostgresRowSequence {
    /// The first row's only column as `T`, nil when there is no row (the other rows are read and
    /// dropped).
    func firstValue<T: PostgresDecodable & Sendable>(_ type: T.Type) async throws -> T? {
        var first: T?
        for try await value in decode(T.self) where first == nil { first = value }
        return first
    }

    /// Every row's only column as `T`.
    func values<T: PostgresDecodable & Sendable>(_ type: T.Type) async throws -> [T] {
        var all: [T] = []
        for try await value in decode(T.self) { all.append(value) }
        return all
    }
}
