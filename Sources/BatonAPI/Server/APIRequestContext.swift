import Hummingbird
import NIOCore

/// The request context of the REST API: Hummingbird's core storage plus the client's address,
/// which the allowlist checks.
public struct APIRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The client's IP address as text; nil when unknown (e.g. in router tests).
    public let remoteIP: String?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteIP = source.channel.remoteAddress?.ipAddress
    }

    /// Bodies are limited by the API itself (`APIConfiguration.maxBodyBytes`).
    public var maxUploadSize: Int { 64 * 1024 }
}
