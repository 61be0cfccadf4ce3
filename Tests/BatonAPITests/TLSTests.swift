import BatonAPI
import BatonCore
import BatonTesting
import Foundation
import Hummingbird
import Logging
import Testing

/// The REST API over TLS, with certificates made at test time by the `openssl` CLI: a CA, a server
/// certificate for 127.0.0.1, a client certificate from the CA and a self-signed impostor.
@Suite(.serialized) struct TLSTests {
    struct Certificates {
        let directory: URL
        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
    }

    static func openssl(_ arguments: [String], in directory: URL) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.currentDirectoryURL = directory
        process.standardOutput = FileHandle.nullDevice
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let output = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw APITLSTestFailure(
                "openssl \(arguments.joined(separator: " ")) failed: \(String(decoding: output, as: UTF8.self))")
        }
    }

    static func makeCertificates() throws -> Certificates {
        let directory = try TestEnvironment.makeTemporaryDirectory(prefix: "baton-tls")
        let subject = ["-subj"]
        try openssl(
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2"]
                + subject + ["/CN=baton-test-ca"], in: directory)
        for (name, extensions) in [
            ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
            ("client", "extendedKeyUsage=clientAuth"),
        ] {
            try extensions.write(
                to: directory.appendingPathComponent("\(name).ext"), atomically: true, encoding: .utf8)
            try openssl(
                ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(name).key", "-out", "\(name).csr"] + subject
                    + ["/CN=baton-\(name)"], in: directory)
            try openssl(
                [
                    "x509", "-req", "-in", "\(name).csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                    "-out", "\(name).crt", "-days", "2", "-extfile", "\(name).ext",
                ], in: directory)
        }
        try openssl(
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out", "rogue.crt", "-days",
                "2",
            ]
                + subject + ["/CN=baton-client"], in: directory)
        return Certificates(directory: directory)
    }

    /// Runs the API with `tls` on a free port for the duration of `body`.
    static func serving(
        _ tls: APIServerTLS, limits: ConnectionLimitSettings = ConnectionLimitSettings(),
        _ body: (_ url: String) async throws -> Void
    ) async throws {
        let port = try TestEnvironment.freePort()
        let server = BatonAPIServer(
            source: FakeSource(Fixture.primary()),
            configuration: APIConfiguration(port: port, tls: tls, limits: limits),
            logger: Logger(label: "tls", factory: { _ in SwiftLogNoOpLogHandler() }))
        let app = try server.makeApplication()
        let task = Task { try await app.runService(gracefulShutdownSignals: []) }
        defer { task.cancel() }
        // Wait for the listener.
        let url = "https://127.0.0.1:\(port)/patroni"
        for _ in 0..<100 {
            let socket = Socket.canConnect(port: port)
            if socket { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        try await body(url)
    }

    static func status(_ client: APIClient, _ url: String) async -> Int? {
        try? await client.send("GET", url: url, timeout: .seconds(5)).status
    }

    @Test func requiredClientCertificates() async throws {
        let certificates = try Self.makeCertificates()
        defer { try? FileManager.default.removeItem(at: certificates.directory) }
        let tls = APIServerTLS(
            certificateFile: certificates.path("server.crt"), keyFile: certificates.path("server.key"),
            caFile: certificates.path("ca.crt"), verifyClient: .required)
        try await Self.serving(tls) { url in
            let withCertificate = try APIClient(
                tls: APIClientTLS(
                    caFile: certificates.path("ca.crt"), certificateFile: certificates.path("client.crt"),
                    keyFile: certificates.path("client.key")))
            #expect(await Self.status(withCertificate, url) == 200)
            let withoutCertificate = try APIClient(tls: APIClientTLS(caFile: certificates.path("ca.crt")))
            #expect(await Self.status(withoutCertificate, url) == nil, "a client without a certificate got in")
            let impostor = try APIClient(
                tls: APIClientTLS(
                    caFile: certificates.path("ca.crt"), certificateFile: certificates.path("rogue.crt"),
                    keyFile: certificates.path("rogue.key")))
            #expect(await Self.status(impostor, url) == nil, "a self-signed client certificate got in")
            // The client checks the server too: without the CA the server is not trusted.
            let untrusting = try APIClient()
            #expect(await Self.status(untrusting, url) == nil)
            // Plain HTTP to the TLS port gets nothing.
            let plain = try APIClient()
            #expect(await Self.status(plain, url.replacingOccurrences(of: "https://", with: "http://")) == nil)
        }
    }

    /// A client that connects to the TLS port and never starts (or finishes) the handshake is
    /// closed at the request timeout; before, it held the connection for ever.
    @Test func aHandshakeThatNeverComesIsClosed() async throws {
        let certificates = try Self.makeCertificates()
        defer { try? FileManager.default.removeItem(at: certificates.directory) }
        let tls = APIServerTLS(
            certificateFile: certificates.path("server.crt"), keyFile: certificates.path("server.key"))
        try await Self.serving(tls, limits: ConnectionLimitSettings(requestTimeout: .seconds(1))) { url in
            let port = try #require(URL(string: url)?.port)
            let (closed, elapsed) = try await ConnectionLimitTests.blocking { () -> (Bool, Duration) in
                let connection = try RawConnection(port: port)
                connection.send("\u{16}\u{03}\u{01}")  // the first bytes of a ClientHello, and no more
                let started = ContinuousClock.now
                let closed = connection.readUntilClosed(within: .seconds(5)).closed
                return (closed, ContinuousClock.now - started)
            }
            #expect(closed, "a connection without a handshake stayed open")
            #expect(elapsed < .seconds(3), "closed after \(elapsed)")
        }
    }

    @Test func optionalClientCertificates() async throws {
        let certificates = try Self.makeCertificates()
        defer { try? FileManager.default.removeItem(at: certificates.directory) }
        let tls = APIServerTLS(
            certificateFile: certificates.path("server.crt"), keyFile: certificates.path("server.key"),
            caFile: certificates.path("ca.crt"), verifyClient: .optional)
        try await Self.serving(tls) { url in
            let anonymous = try APIClient(tls: APIClientTLS(caFile: certificates.path("ca.crt")))
            #expect(await Self.status(anonymous, url) == 200)
            let valid = try APIClient(
                tls: APIClientTLS(
                    caFile: certificates.path("ca.crt"), certificateFile: certificates.path("client.crt"),
                    keyFile: certificates.path("client.key")))
            #expect(await Self.status(valid, url) == 200)
            let impostor = try APIClient(
                tls: APIClientTLS(
                    caFile: certificates.path("ca.crt"), certificateFile: certificates.path("rogue.crt"),
                    keyFile: certificates.path("rogue.key")))
            #expect(await Self.status(impostor, url) == nil, "a presented certificate must be valid")
        }
    }

    /// restapi.keyfile_password and restapi.ciphers (before: refused as unknown keys).
    @Test func anEncryptedKeyAndACipherList() async throws {
        let certificates = try Self.makeCertificates()
        defer { try? FileManager.default.removeItem(at: certificates.directory) }
        try Self.openssl(
            ["pkey", "-in", "server.key", "-aes256", "-passout", "pass:key-secret", "-out", "server.enc.key"],
            in: certificates.directory)
        let encrypted = APIServerTLS(
            certificateFile: certificates.path("server.crt"), keyFile: certificates.path("server.enc.key"),
            keyPassword: "key-secret", ciphers: "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384")
        try await Self.serving(encrypted) { url in
            let client = try APIClient(tls: APIClientTLS(caFile: certificates.path("ca.crt")))
            #expect(await Self.status(client, url) == 200)
        }
        // Without the password, with a wrong one, or a cipher list OpenSSL refuses: named.
        for (tls, key) in [
            (
                APIServerTLS(
                    certificateFile: certificates.path("server.crt"), keyFile: certificates.path("server.enc.key")),
                "restapi.keyfile"
            ),
            (
                APIServerTLS(
                    certificateFile: certificates.path("server.crt"), keyFile: certificates.path("server.enc.key"),
                    keyPassword: "wrong"), "restapi.keyfile"
            ),
            (
                APIServerTLS(
                    certificateFile: certificates.path("server.crt"), keyFile: certificates.path("server.key"),
                    ciphers: "HIGH:!aNULL"), "restapi.ciphers"
            ),
        ] {
            #expect(
                "\((try? tls.configuration()) == nil ? (Result { try tls.configuration() }).failureText : "")".contains(
                    key))
        }
    }

    @Test func unreadableFilesAreNamed() throws {
        let server = BatonAPIServer(
            source: FakeSource(Fixture.primary()),
            configuration: APIConfiguration(
                port: 0, tls: APIServerTLS(certificateFile: "/nonexistent/server.crt", keyFile: "/nonexistent/k")),
            logger: Logger(label: "tls"))
        #expect {
            _ = try server.makeApplication()
        } throws: { error in
            "\(error)".contains("restapi.certfile") && "\(error)".contains("/nonexistent/server.crt")
        }
    }
}

struct APITLSTestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

enum Socket {
    /// Whether something accepts TCP connections on 127.0.0.1:`port`.
    static func canConnect(port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}

extension Result where Failure == any Error {
    var failureText: String {
        if case .failure(let error) = self { return "\(error)" }
        return ""
    }
}
