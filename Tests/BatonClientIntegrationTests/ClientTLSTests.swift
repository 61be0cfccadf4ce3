import BatonClient
import BatonTestCluster
import Foundation
import PostgresNIO
import Testing

/// TLS between BatonClient and the servers, against a cluster whose PostgreSQL serves a
/// certificate of a test CA made here with openssl: `verify-full` connects (and the session is
/// encrypted), a foreign CA is refused, `require` without a root certificate does not check.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct ClientTLSTests {
    /// A test CA, a server certificate for 127.0.0.1 signed by it, and a foreign CA; the server's
    /// key is the postgres user's, 0600.
    struct Certificates {
        let directory: String
        var ca: String { directory + "/ca.pem" }
        var foreignCA: String { directory + "/foreign-ca.pem" }
        var serverCertificate: String { directory + "/server.pem" }
        var serverKey: String { directory + "/server.key" }

        init() throws {
            let base = ProcessInfo.processInfo.environment["BATON_TEST_TMPDIR"] ?? NSTemporaryDirectory()
            directory = base + "/baton-tls-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            let days = ["-days", "2"]
            for (name, subject) in [("ca", "/CN=baton test CA"), ("foreign-ca", "/CN=someone else's CA")] {
                try AgentCluster.run(
                    [
                        "/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        "\(directory)/\(name).key", "-out", "\(directory)/\(name).pem", "-subj", subject,
                    ] + days)
            }
            try AgentCluster.run(
                [
                    "/usr/bin/openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", serverKey, "-out",
                    "\(directory)/server.csr", "-subj", "/CN=127.0.0.1",
                ])
            try "subjectAltName=IP:127.0.0.1,DNS:localhost\n".write(
                toFile: "\(directory)/san.ext", atomically: true, encoding: .utf8)
            try AgentCluster.run(
                [
                    "/usr/bin/openssl", "x509", "-req", "-in", "\(directory)/server.csr", "-CA", ca, "-CAkey",
                    "\(directory)/ca.key", "-CAcreateserial", "-out", serverCertificate, "-extfile",
                    "\(directory)/san.ext",
                ] + days)
            try AgentCluster.run(["/bin/chown", "postgres:postgres", serverKey, serverCertificate])
            try AgentCluster.run(["/bin/chmod", "0600", serverKey])
        }
    }

    @Test("verify-full connects to a server of the test CA; a foreign CA is refused; require does not check")
    func verifyFull() async throws {
        let certificates = try Certificates()
        defer { try? FileManager.default.removeItem(atPath: certificates.directory) }
        var options = ClusterOptions()
        options.dcsParameters = [
            "ssl: 'on'", "ssl_cert_file: '\(certificates.serverCertificate)'",
            "ssl_key_file: '\(certificates.serverKey)'",
        ]
        let cluster = try AgentCluster.start("client-tls", options)
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy()

        // verify-full with the test CA: writes and reads work, over TLS.
        let verified = try await cluster.client(["sslmode": "verify-full", "sslrootcert": certificates.ca])
        let (encrypted, _) = try await verified.write { conn in
            try await conn.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").firstValue(Bool.self)
        }
        #expect(encrypted == true, "the verify-full session is not encrypted")
        let readNode = try await verified.read(consistency: .eventual) { try await servedBy($0, cluster) }
        #expect(readNode != leader, "an eventual read reached the primary")
        await verified.shutdown()

        // A foreign CA: no connection, and the error says why.
        let foreign = try await cluster.client([
            "sslmode": "verify-full", "sslrootcert": certificates.foreignCA, "primary_wait_timeout": "2s",
        ])
        do {
            try await foreign.write { conn in try await conn.query("SELECT 1") }
            Issue.record("a server whose certificate the foreign CA did not sign was accepted")
        } catch let error as BatonClientError {
            #expect(error.code == .noPrimary, "\(error)")
            let cause = (error.cause as? BatonClientError).map { "\($0)" } ?? "\(String(describing: error.cause))"
            #expect(cause.contains("connectFailed"), "cause: \(cause)")
        }
        await foreign.shutdown()

        // require without a root certificate: TLS, no check (libpq's meaning).
        let required = try await cluster.client(["sslmode": "require"])
        let (requiredEncrypted, _) = try await required.write { conn in
            try await conn.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").firstValue(Bool.self)
        }
        #expect(requiredEncrypted == true)
        await required.shutdown()

        // A setting that names a file that is not there is refused at start, naming it.
        do {
            _ = try await cluster.client([
                "sslmode": "verify-full", "sslrootcert": certificates.directory + "/nope.pem",
            ])
            Issue.record("a missing sslrootcert was accepted")
        } catch let error as BatonClientError {
            #expect(error.code == .invalidConfiguration && error.message.contains("sslrootcert"), "\(error)")
        }
    }
}
