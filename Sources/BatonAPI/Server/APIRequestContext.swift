import Hummingbird
import NIOCore

/// The request context of the REST API: Hummingbird's core storage plus the client's address,
/// which the allowlist checks.
public struct APIRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: (any Channel)?

    /// The client's IP address as text; nil when unknown (e.g. in router tests). Read only when
    /// the allowlist needs it: health checks do not pay for it.
    public var remoteIP: String? { channel?.remoteAddress?.ipAddress }

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }

    /// Bodies are limited by the API itself (`APIConfiguration.maxBodyBytes`).
    public var maxUploadSize: Int { 64 * 1024 }
}
