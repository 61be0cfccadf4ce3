import Hummingbird
import Logging

/// Guards unsafe methods (PUT, POST, PATCH, DELETE), as Patroni does: the client must be in the
/// allowlist (403), then present the Basic credentials (401 with `WWW-Authenticate`). Safe
/// methods (health checks, status) stay open for load balancers and monitoring.
struct AccessControlMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext

    let credentials: Credentials?
    let allowlist: [CIDRNetwork]
    /// Patroni's `allowlist_include_members`: the addresses of the members' `api_url` (as this
    /// agent last read them) are allowed too; nil when off.
    var memberAddresses: (@Sendable () async -> [String])? = nil

    static let unsafeMethods: Set<HTTPRequest.Method> = [.put, .post, .patch, .delete]

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        guard Self.unsafeMethods.contains(request.method) else { return try await next(request, context) }
        if !allowlist.isEmpty || memberAddresses != nil {
            var allowed = false
            if let ip = context.remoteIP {
                allowed = allowlist.contains { $0.contains(ip) }
                if !allowed, let memberAddresses {
                    allowed = await memberAddresses().contains { (try? CIDRNetwork($0))?.contains(ip) ?? false }
                }
            }
            if !allowed {
                context.logger.notice(
                    "refused a request from outside the allowlist",
                    metadata: ["api.client": "\(context.remoteIP ?? "unknown")", "api.path": "\(request.uri.path)"])
                return APIResponse.error(
                    .forbidden,
                    "client \(context.remoteIP ?? "(unknown address)") is not in the REST API allowlist; "
                        + "send the request from an allowed network or a member, or extend restapi.allowlist")
            }
        }
        if let credentials, !credentials.accepts(request.headers[.authorization]) {
            // Never log the header itself: it carries the password.
            context.logger.notice(
                "refused a request without valid credentials", metadata: ["api.path": "\(request.uri.path)"])
            var response = APIResponse.error(
                .unauthorized, "this endpoint requires HTTP Basic authentication with the REST API credentials")
            response.headers[.wwwAuthenticate] = "Basic realm=\"Baton\""
            return response
        }
        return try await next(request, context)
    }
}
