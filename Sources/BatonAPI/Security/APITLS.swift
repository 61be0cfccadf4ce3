import NIOSSL

/// TLS for the REST API server: its certificate and key, and how it checks client certificates.
public struct APIServerTLS: Hashable, Sendable {
    public enum ClientVerification: String, Hashable, Sendable {
        /// Client certificates are not asked for.
        case none
        /// A client may present a certificate; one that does not chain to `caFile` is refused.
        case optional
        /// Every client must present a certificate that chains to `caFile`.
        case required
    }

    public var certificateFile: String
    public var keyFile: String
    public var caFile: String?
    public var verifyClient: ClientVerification
    /// Patroni's `keyfile_password`: the passphrase of an encrypted key.
    public var keyPassword: String?
    /// Patroni's `ciphers`: OpenSSL's cipher list for TLS 1.2 (TLS 1.3 suites are OpenSSL's own).
    public var ciphers: String?

    public init(
        certificateFile: String, keyFile: String, caFile: String? = nil, verifyClient: ClientVerification = .none,
        keyPassword: String? = nil, ciphers: String? = nil
    ) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.caFile = caFile
        self.verifyClient = verifyClient
        self.keyPassword = keyPassword
        self.ciphers = ciphers
    }

    /// Loads a PEM key, decrypting it with `password` when one is given.
    static func loadKey(_ file: String, password: String?) throws -> NIOSSLPrivateKey {
        guard let password else { return try NIOSSLPrivateKey(file: file, format: .pem) }
        let bytes = Array(password.utf8)
        return try NIOSSLPrivateKey(file: file, format: .pem) { (supply: (([UInt8]) -> Void)) in supply(bytes) }
    }

    /// The NIOSSL server configuration; throws a readable error naming the file that is wrong.
    public func configuration() throws -> TLSConfiguration {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificateFile)
        } catch {
            throw APITLSError(
                "restapi.certfile: cannot load a PEM certificate chain from \(certificateFile) (\(error))")
        }
        guard !chain.isEmpty else { throw APITLSError("restapi.certfile: \(certificateFile) holds no certificate") }
        let key: NIOSSLPrivateKey
        do {
            key = try Self.loadKey(keyFile, password: keyPassword)
        } catch {
            throw APITLSError(
                "restapi.keyfile: cannot load a PEM private key from \(keyFile) (\(error))"
                    + (keyPassword == nil
                        ? "; an encrypted key needs restapi.keyfile_password" : "; is restapi.keyfile_password right?"))
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        if let caFile {
            do {
                _ = try NIOSSLCertificate.fromPEMFile(caFile)
            } catch {
                throw APITLSError("restapi.cafile: cannot load PEM certificates from \(caFile) (\(error))")
            }
            configuration.trustRoots = .file(caFile)
        }
        switch verifyClient {
        case .none: configuration.certificateVerification = .none
        case .optional: configuration.certificateVerification = .optionalVerification
        case .required: configuration.certificateVerification = .noHostnameVerification
        }
        if let ciphers { configuration.cipherSuiteValues = try Self.cipherSuites(ciphers) }
        return configuration
    }

    /// TLS 1.2 suites by their OpenSSL names (as Patroni's `ciphers` gives them).
    static let cipherNames: [String: NIOTLSCipher] = [
        "ECDHE-ECDSA-AES128-GCM-SHA256": .TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES256-GCM-SHA384": .TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-AES128-GCM-SHA256": .TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES256-GCM-SHA384": .TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-CHACHA20-POLY1305": .TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-CHACHA20-POLY1305": .TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-ECDSA-AES128-SHA": .TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
        "ECDHE-ECDSA-AES256-SHA": .TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
        "ECDHE-RSA-AES128-SHA": .TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
        "ECDHE-RSA-AES256-SHA": .TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
        "AES128-GCM-SHA256": .TLS_RSA_WITH_AES_128_GCM_SHA256, "AES256-GCM-SHA384": .TLS_RSA_WITH_AES_256_GCM_SHA384,
        "AES128-SHA": .TLS_RSA_WITH_AES_128_CBC_SHA, "AES256-SHA": .TLS_RSA_WITH_AES_256_CBC_SHA,
    ]

    /// `ciphers` as a list of suites. Each name must be one of `cipherNames` (an OpenSSL cipher
    /// string with keywords such as `HIGH:!aNULL` is refused: BoringSSL would trap on a list it
    /// cannot read, so Baton reads it first).
    public static func cipherSuites(_ text: String) throws -> [NIOTLSCipher] {
        var suites: [NIOTLSCipher] = []
        for name in text.split(whereSeparator: { ":, ".contains($0) }).map(String.init) {
            guard let cipher = cipherNames[name.uppercased()] else {
                throw APITLSError(
                    "restapi.ciphers: '\(name)' is not a TLS 1.2 suite Baton knows; list suites by name, e.g. "
                        + "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256 (known: "
                        + "\(cipherNames.keys.sorted().joined(separator: ", ")))")
            }
            if !suites.contains(cipher) { suites.append(cipher) }
        }
        guard !suites.isEmpty else { throw APITLSError("restapi.ciphers: no suite named") }
        return suites
    }
}

/// TLS for calls to members' REST APIs (peer probes, the CLI): whom to trust, and the client
/// certificate to present when the server asks for one.
public struct APIClientTLS: Hashable, Sendable {
    /// CA bundle the server's certificate must chain to; nil: the system's trust store.
    public var caFile: String?
    public var certificateFile: String?
    public var keyFile: String?
    public var keyPassword: String?
    /// The server's certificate is not checked (`baton -k`, patronictl's `--insecure`).
    public var insecure = false

    public init(
        caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil, keyPassword: String? = nil
    ) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.keyPassword = keyPassword
    }

    public func configuration() throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let caFile { configuration.trustRoots = .file(caFile) }
        if insecure { configuration.certificateVerification = .none }
        if let certificateFile, let keyFile {
            do {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateFile).map {
                    .certificate($0)
                }
                configuration.privateKey = .privateKey(try APIServerTLS.loadKey(keyFile, password: keyPassword))
            } catch {
                throw APITLSError(
                    "cannot load the client certificate \(certificateFile) or key \(keyFile) (\(error))")
            }
        }
        return configuration
    }
}

public struct APITLSError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}
