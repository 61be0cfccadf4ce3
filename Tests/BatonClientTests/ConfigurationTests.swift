import Foundation
import Testing

@testable import BatonClient

@Suite struct ConfigurationTests {
    func error(_ settings: [String: String]) -> String? {
        do {
            _ = try BatonClientConfiguration(settings: settings)
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// Audit finding: a statement_timeout beyond PostgreSQL's 2^31 - 1 ms was accepted, and every
    /// connection was then refused by the server ("invalid value for parameter").
    @Test func statementTimeoutWithinWhatPostgreSQLTakes() {
        let message = error(["host": "a", "user": "app", "statement_timeout": "3000000s"])
        #expect(message?.contains("longer than PostgreSQL allows") == true, "\(message ?? "accepted")")
        #expect(error(["host": "a", "user": "app", "statement_timeout": "86400s"]) == nil)
    }

    /// TLS settings that would check less than they say are refused before any connection.
    @Test func tlsSettingsThatCheckTooLittleAreRefused() throws {
        func validation(_ extra: [String: String]) -> String? {
            do {
                try BatonClientConfiguration(settings: ["host": "a", "user": "app"].merging(extra) { $1 }).validate()
                return nil
            } catch {
                return "\(error)"
            }
        }
        // Review finding: verify-ca on the system's roots accepted any publicly trusted certificate.
        #expect(validation(["sslmode": "verify-ca"])?.contains("needs sslrootcert") == true)
        #expect(
            validation(["sslmode": "disable", "sslrootcert": "/etc/hostname"])?.contains("sslmode is disable") == true)
        #expect(validation(["sslmode": "verify-full", "sslcert": "/etc/hostname"])?.contains("go together") == true)
        #expect(
            validation(["sslmode": "verify-full", "sslrootcert": "/nonexistent.pem"])?.contains("cannot be read")
                == true)
        #expect(error(["host": "a", "user": "app", "sslmode": "verify"])?.contains("is not one of") == true)
        #expect(validation(["sslmode": "verify-full"]) == nil)
    }

    @Test func hostAndPrimaryHostsExcludeEachOther() {
        let message = error(["host": "a", "primary_hosts": "a,b", "user": "app"])
        #expect(message?.contains("both 'host' and 'primary_hosts'") == true)
        #expect(message?.contains("keep only one") == true)
    }

    @Test func fixedListsWithDefaultPort() throws {
        let configuration = try BatonClientConfiguration(settings: [
            "primary_hosts": "db1:6000, db2", "read_replicas": "db3,[::1]:7000", "port": "5433", "user": "app",
        ])
        guard case .fixed(let primaries, let replicas) = configuration.topology else {
            Issue.record("expected a fixed topology, got \(configuration.topology)")
            return
        }
        #expect(primaries == [Endpoint(host: "db1", port: 6000), Endpoint(host: "db2", port: 5433)])
        #expect(replicas == [Endpoint(host: "db3", port: 5433), Endpoint(host: "::1", port: 7000)])
        let single = try BatonClientConfiguration(settings: ["host": "db1", "user": "app"])
        guard case .fixed(let one, let none) = single.topology else { return }
        #expect(one == [Endpoint(host: "db1", port: 5432)] && none.isEmpty)
    }

    @Test func etcdAndRESTSources() throws {
        let etcd = try BatonClientConfiguration(settings: [
            "etcd_hosts": "127.0.0.1:2379,127.0.0.1:2380", "scope": "demo", "agents": "http://127.0.0.1:8008",
            "user": "app", "replica_strategy": "least_lag", "max_replica_lag_bytes": "1048576",
            "max_replica_lag": "2s", "no_replica_policy": "fail", "acquire_timeout": "250ms",
            "replica_weights": "node2=3, node3=1", "breaker_open_timeout": "1.5",
        ])
        guard case .etcd(let options) = etcd.topology else {
            Issue.record("expected etcd")
            return
        }
        #expect(options.endpoints.count == 2 && options.scope == "demo" && options.namespace == "/service")
        #expect(options.fallbackAgents == ["http://127.0.0.1:8008"])
        #expect(etcd.replicas.strategy == .leastLag && etcd.replicas.maxLagBytes == 1_048_576)
        #expect(etcd.replicas.maxLag == .seconds(2) && etcd.replicas.whenNoReplica == .fail)
        #expect(etcd.pool.acquireTimeout == .milliseconds(250))
        #expect(etcd.replicas.weights == ["node2": 3, "node3": 1])
        #expect(etcd.replicas.breaker.openTimeout == .milliseconds(1500))
        let rest = try BatonClientConfiguration(settings: ["agents": "http://a:8008/", "user": "app"])
        guard case .rest(let agents, _) = rest.topology else {
            Issue.record("expected REST")
            return
        }
        #expect(agents == ["http://a:8008/"])
    }

    @Test func badSettingsNameTheKeyAndTheFix() {
        #expect(error(["host": "a", "user": "app", "colour": "blue"])?.contains("unknown setting 'colour'") == true)
        #expect(error(["etcd_hosts": "a:2379", "user": "app"])?.contains("scope is missing") == true)
        #expect(error(["host": "a"])?.contains("user is missing") == true)
        #expect(error(["user": "app"])?.contains("no topology source") == true)
        #expect(error(["host": "a:99999", "user": "app"])?.contains("host entry 'a:99999'") == true)
        #expect(
            error(["host": "a", "user": "app", "acquire_timeout": "soon"])?.contains("acquire_timeout 'soon'") == true)
        #expect(error(["host": "a", "user": "app", "replica_strategy": "fastest"])?.contains("round_robin") == true)
        #expect(
            error(["host": "a", "user": "app", "min_connections": "5", "max_connections": "2"])?.contains(
                "min_connections (5)") == true)
        #expect(error(["agents": "a:8008", "user": "app"])?.contains("http://") == true)
        #expect(error(["host": "a", "user": "app", "breaker_failure_ratio": "2"])?.contains("(0, 1]") == true)
        #expect(error(["host": "a", "user": "app", "replica_weights": "node2"])?.contains("name=weight") == true)
    }

    @Test func durationsParse() {
        #expect(SettingsReader.parseDuration("250ms") == .milliseconds(250))
        #expect(SettingsReader.parseDuration("2s") == .seconds(2))
        #expect(SettingsReader.parseDuration("1m") == .seconds(60))
        #expect(SettingsReader.parseDuration("0.5") == .milliseconds(500))
        #expect(SettingsReader.parseDuration("-1") == nil)
        #expect(SettingsReader.parseDuration("x") == nil)
        // Audit findings: these trapped (Int64 overflow) and took the client process down.
        #expect(SettingsReader.parseDuration("1e10") == nil)
        #expect(SettingsReader.parseDuration("1e300ms") == nil)
    }

    /// Audit finding: weights whose sum overflows trapped on the first weighted read.
    @Test func replicaWeightsAreBounded() {
        #expect(
            error(["host": "a", "user": "app", "replica_weights": "a=9223372036854775807,b=1"])?.contains(
                "from 0 to 1000000") == true)
        #expect(error(["host": "a", "user": "app", "replica_weights": "a=-1"])?.contains("from 0 to 1000000") == true)
    }
}

/// The passfile: libpq's format and matching, and its refusal of a file others may read.
@Suite struct PassFileTests {
    @Test func matchesAndRefusesAFileOthersMayRead() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pgpass-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "# comment\nother:5432:*:app:nope\n*:5432:orders:app:s\\:cret\\\\x\n".write(
            toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o600)
        #expect(
            PassFile.lookup(path: path, host: "10.0.0.1", port: 5432, database: "orders", user: "app") == "s:cret\\x")
        #expect(PassFile.lookup(path: path, host: "10.0.0.1", port: 5433, database: "orders", user: "app") == nil)
        chmod(path, 0o644)
        #expect(PassFile.lookup(path: path, host: "10.0.0.1", port: 5432, database: "orders", user: "app") == nil)
        #expect(PassFile.lookup(path: path + ".missing", host: "h", port: 5432, database: "d", user: "u") == nil)
    }
}
