import BatonCore
import Hummingbird
import Logging
import NIOCore

/// `baton pooler`'s status endpoint: `GET /health` (200 while the pooler follows the cluster, 503
/// when it cannot read etcd or reach PgBouncer; the body says which, and how old its topology is)
/// and `GET /metrics` (Prometheus). Read-only, unauthenticated, meant for 127.0.0.1 or a
/// monitoring network; idle connections are closed after 30 s.
public enum PoolerStatusServer {
    /// The server as a `Service`; `health` is asked on every request.
    public static func makeService(
        host: String, port: Int, logger: Logger, health: @escaping @Sendable () -> PoolerHealth
    ) -> some ApplicationProtocol {
        let router = Router()
        router.get("/health") { _, _ in
            let now = health()
            return APIResponse.json(now.healthy ? .ok : .serviceUnavailable, now)
        }
        router.head("/health") { _, _ in APIResponse.empty(health().healthy ? .ok : .serviceUnavailable) }
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: health().prometheusText)))
        }
        return Application(
            router: router, server: .http1(configuration: .init(idleTimeout: .seconds(30))),
            configuration: .init(address: .hostname(host, port: port), serverName: "Baton pooler"), logger: logger)
    }
}
