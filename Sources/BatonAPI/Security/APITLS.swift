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

    public init(
        certificateFile: String, keyFile: String, caFile: String? = nil, verifyClient: ClientVerification = .none
    ) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.caFile = caFile
        self.verifyClient = verifyClient
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
            key = try NIOSSLPrivateKey(file: keyFile, format: .pem)
        } catch {
            throw APITLSError("restapi.keyfile: cannot load a PEM private key from \(keyFile) (\(error))")
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
        return configuration
    }
}

/// TLS for calls to members' REST APIs (peer probes, the CLI): whom to trust, and the client
/// certificate to present when the server asks for one.
public struct APIClientTLS: Hashable, Sendable {
    /// CA bundle the server's certificate must chain to; nil: the system's trust store.
    public var caFile: String?
    public var certificateFile: String?
    public var keyFile: String?

    public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }

    public func configuration() throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let caFile { configuration.trustRoots = .file(caFile) }
        if let certificateFile, let keyFile {
            do {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateFile).map {
                    .certificate($0)
                }
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
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
