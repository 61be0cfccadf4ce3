import BatonCore
import BatonHA
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The Hummingbird application serving Baton's REST API.
/// The REST API as a `Service`: Hummingbird's application, run without its date-cache service.
///
/// `Application.run()` adds a service that formats the `Date` header once a second on a timer: the
/// one wake-up a second an idle agent still had besides its own work. This runs the same server
/// (the same child channel, responder and error handling) and stamps `Date` from `HTTPDate`, which
/// formats it at most once a second, when a response needs it. HummingbirdTesting runs it through
/// its own wrapper (the default `run()`); the agent processes of the integration tests run this.
public struct BatonAPIApplication: ApplicationProtocol {
    public typealias Responder = RouterResponder<APIRequestContext>

    let routes: RouterResponder<APIRequestContext>
    public let server: HTTPServerBuilder
    public let configuration: ApplicationConfiguration
    let serverConfiguration: ServerConfiguration
    public let eventLoopGroup: any EventLoopGroup
    public let logger: Logger

    public var responder: Responder {
        get async throws { routes }
    }
    public var services: [any Service] { [] }
    public var processesRunBeforeServerStart: [@Sendable () async throws -> Void] { [] }
    public func onServerRunning(_ channel: any Channel) async {}

    public func run() async throws {
        let responder = try await self.responder
        let logger = self.logger
        let serverName = configuration.serverName
        let service = try server.buildServer(
            configuration: serverConfiguration, eventLoopGroup: eventLoopGroup, logger: logger
        ) { (request, responseWriter: consuming ResponseWriter, channel) in
            let context = APIRequestContext(source: .init(channel: channel, logger: logger))
            var response: Response
            do {
                response = try await responder.respond(to: request, context: context)
            } catch let error as HTTPParserError {
                throw error  // the channel answers a malformed request itself
            } catch {
                logger.debug("unrecognised error", metadata: ["error.type": "\(error)"])
                response = Response(status: .internalServerError, body: .init())
            }
            response.headers[.date] = HTTPDate.now()
            if let serverName { response.headers[.server] = serverName }
            try await responseWriter.write(response: response.head, body: response.body)
        }
        try await service.run()
    }
}

/// The REST API: Patroni's endpoints over an `APIStateSource`.
///
/// ```swift
/// let api = BatonAPIServer(source: HALoopStateSource(...), configuration: .init(port: 8008), logger: logger)
/// let group = ServiceGroup(services: [haService, api.makeApplication()], logger: logger)
/// ```
public struct BatonAPIServer: Sendable {
    public let source: any APIStateSource
    public let configuration: APIConfiguration
    public let logger: Logger
    /// The status document, encoded once per published snapshot (and per second of `dcs_last_seen`).
    let statusBodies = StatusBodyCache()
    /// Health checks answered by `HealthFastPath` (for tests and the benchmark's sanity).
    let fastPathAnswers = FastPathCounter()
    /// The open connections, against `configuration.limits.maxConnections`.
    let connections = ConnectionCounter()
    /// Whether a read of the cluster for `GET /cluster` (before the loop's first read) is under
    /// way: at most one at a time, whatever the number of requests.
    let clusterRead = SingleFlight()
    static let serverName = "Baton"

    /// The configured extra headers as header fields (names checked when the configuration was
    /// loaded; one that is still not a field name is left out).
    let extraHeaderFields: [(name: HTTPFields.Element.Name, value: String)]

    public init(source: any APIStateSource, configuration: APIConfiguration, logger: Logger) {
        self.extraHeaderFields = configuration.extraHeaders.compactMap { header in
            HTTPFields.Element.Name(header.name).map { ($0, header.value) }
        }
        self.source = source
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "api.member"] = "\(source.memberName)"
        self.logger = logger
    }

    /// One endpoint: method, path, and what answers it.
    public struct Route: Sendable {
        public let method: HTTPRequest.Method
        public let path: String
        let handler: @Sendable (Request, APIRequestContext) async throws -> Response
    }

    /// Every endpoint the API serves; `makeRouter()` registers exactly these.
    public var routes: [Route] {
        var routes: [Route] = []
        for check in HealthCheck.allCases {
            for path in check.paths {
                for method in [HTTPRequest.Method.get, .head, .options] {
                    routes.append(
                        Route(method: method, path: path) { request, _ in
                            await healthCheck(check, request: request)
                        })
                }
            }
        }
        routes += [
            Route(method: .get, path: "/patroni") { _, _ in await nodeStatus() },
            Route(method: .get, path: "/cluster") { _, _ in await clusterStatus() },
            Route(method: .get, path: "/history") { _, _ in await history() },
            Route(method: .get, path: "/metrics") { _, _ in await metrics() },
            Route(method: .get, path: "/config") { _, _ in await readConfig() },
            Route(method: .patch, path: "/config") { request, context in
                await changeConfig(request, context: context, replace: false)
            },
            Route(method: .put, path: "/config") { request, context in
                await changeConfig(request, context: context, replace: true)
            },
            Route(method: .post, path: "/switchover") { request, context in
                await requestSwitchover(.switchover, request, context: context)
            },
            Route(method: .post, path: "/failover") { request, context in
                await requestSwitchover(.failover, request, context: context)
            },
            Route(method: .delete, path: "/switchover") { _, context in
                await cancelSwitchover(context: context)
            },
            Route(method: .get, path: "/failsafe") { _, _ in await readFailsafe() },
            Route(method: .post, path: "/failsafe") { request, context in
                await acceptFailsafe(request, context: context)
            },
            Route(method: .post, path: "/restart") { request, context in await restart(request, context: context) },
            Route(method: .delete, path: "/restart") { _, _ in await cancelScheduledRestart() },
            Route(method: .post, path: "/reload") { request, _ in await reload(request) },
            Route(method: .post, path: "/reinitialize") { request, _ in await reinitialize(request) },
        ]
        return routes
    }

    /// The router with every route, behind the error and access-control middleware.
    public func makeRouter() -> Router<APIRequestContext> {
        let router = Router(context: APIRequestContext.self)
        if !extraHeaderFields.isEmpty { router.add(middleware: ExtraHeadersMiddleware(headers: extraHeaderFields)) }
        router.add(middleware: ErrorMiddleware())
        let source = self.source
        var members: (@Sendable () async -> [String])?
        if configuration.allowlistIncludeMembers {
            members = { Self.memberAddresses(await source.status().cluster) }
        }
        router.add(
            middleware: AccessControlMiddleware(
                credentials: configuration.auth.map { Credentials(username: $0.username, password: $0.password) },
                allowlist: configuration.allowlist, memberAddresses: members))
        for route in routes {
            router.on(RouterPath(route.path), method: route.method, use: route.handler)
        }
        return router
    }

    /// The IP addresses of the members' `api_url`, as the loop last read the cluster.
    static func memberAddresses(_ cluster: ClusterView?) -> [String] {
        (cluster?.members ?? []).compactMap { member in
            guard let host = URLComponents(string: member.apiURL)?.host, !host.isEmpty else { return nil }
            return host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        }
    }

    /// The application, a `Service`: run it in the agent's `ServiceGroup`. Speaks TLS when
    /// `configuration.tls` is set; throws when its certificate or key cannot be loaded.
    public func makeApplication() throws -> BatonAPIApplication {
        let applicationConfiguration = ApplicationConfiguration(
            address: .hostname(configuration.host, port: configuration.port), serverName: Self.serverName)
        // Health checks are answered on the connection's event loop after the HTTP codec
        // (HealthFastPath); everything else goes through the router. (A raw-bytes parser ahead of
        // the codec was dropped: the codec path meets the REST targets, docs/benchmarks.md.)
        let http1 = HTTP1Channel.Configuration(additionalChannelHandlers: [HealthFastPath(server: self)])
        let server = HTTPServerBuilder { [self] responder in
            LimitedHTTP1Channel(base: HTTP1Channel(responder: responder, configuration: http1), server: self)
        }
        let group = APIEventLoops.group(threads: configuration.threads)
        let serverConfiguration = ServerConfiguration(
            address: .hostname(configuration.host, port: configuration.port), serverName: Self.serverName,
            backlog: configuration.backlog)
        return BatonAPIApplication(
            routes: makeRouter().buildResponder(),
            server: try configuration.tls.map { try .tls(server, tlsConfiguration: try $0.configuration()) } ?? server,
            configuration: applicationConfiguration, serverConfiguration: serverConfiguration, eventLoopGroup: group,
            logger: logger)
    }

    // MARK: Status

    func healthCheck(_ check: HealthCheck, request: Request) async -> Response {
        let query: HealthQuery
        do {
            query = try Self.healthQuery(request.uri)
        } catch {
            return APIResponse.error(.badRequest, error.message)
        }
        let (code, body) = healthAnswer(check, method: request.method, query: query, status: await source.status())
        guard let body else { return APIResponse.empty(code) }
        return Response(
            status: code, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: body))
    }

    /// The query of a health check (`?lag=`, `?replication_state=`, `?tag_<key>=`); throws the
    /// message of a malformed one.
    static func healthQuery(_ uri: URI) throws(APIInputError) -> HealthQuery {
        guard let text = uri.query, !text.isEmpty else { return HealthQuery() }
        return try HealthQuery(items: uri.queryParameters.map { (String($0.key), String($0.value)) })
    }

    /// A health check's answer, whoever serves it (the router or `HealthFastPath`): 200 or 503,
    /// and for GET the node status document.
    func healthAnswer(
        _ check: HealthCheck, method: HTTPRequest.Method, query: HealthQuery, status: HAStatus
    ) -> (code: HTTPResponse.Status, body: ByteBuffer?) {
        let now = source.clock.now
        let code: HTTPResponse.Status = check.passes(status, query: query, now: now) ? .ok : .serviceUnavailable
        if method == .head || method == .options { return (code, nil) }
        return (code, statusBody(status, now: now))
    }

    /// The node status document as a response; its bytes are reused while the snapshot is the same.
    func statusResponse(_ code: HTTPResponse.Status, _ status: HAStatus, now: MonotonicInstant) -> Response {
        Response(
            status: code, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: statusBody(status, now: now)))
    }

    /// The node status document, encoded once per snapshot (and second of `dcs_last_seen`).
    func statusBody(_ status: HAStatus, now: MonotonicInstant) -> ByteBuffer {
        let wallClock = source.wallClockSeconds()
        let key = StatusBodyCache.Key(
            generation: status.generation,
            dcsLastSeen: NodeStatusDocument.dcsLastSeen(status, now: now, wallClock: wallClock))
        if status.generation != 0, let cached = statusBodies.body(for: key) { return cached }
        let body = APIResponse.encode(
            NodeStatusDocument(status, scope: source.scope, now: now, wallClock: wallClock))
        if status.generation != 0 { statusBodies.store(body, for: key) }
        return body
    }

    func nodeStatus() async -> Response {
        let status = await source.status()
        return statusResponse(.ok, status, now: source.clock.now)
    }

    func clusterStatus() async -> Response {
        let status = await source.status()
        var cluster = status.cluster
        if cluster == nil { cluster = await firstClusterRead() }
        guard let cluster else {
            return APIResponse.error(
                .serviceUnavailable,
                "this member has not read the cluster from the store yet; retry in a few seconds, "
                    + "or ask another member")
        }
        return APIResponse.json(
            .ok,
            ClusterDocument(cluster, scope: source.scope, config: status.config, configProblems: status.configProblems))
    }

    /// Before the HA loop's first read of the store (the agent just started): one read of the
    /// cluster on the API's own store client, as Patroni answers `GET /cluster` from etcd; nil
    /// when another such read is under way (no flood of reads) or it failed.
    func firstClusterRead() async -> ClusterView? {
        guard clusterRead.begin() else { return nil }
        defer { clusterRead.end() }
        return try? await source.store.loadCluster()
    }

    func history() async -> Response {
        let status = await source.status()
        guard let cluster = status.cluster else {
            return APIResponse.error(
                .serviceUnavailable, "this member has not read the cluster from the store yet; retry in a few seconds")
        }
        let rows: [JSONValue] = cluster.history.map { entry in
            var row: [JSONValue] = [
                .number(Double(entry.timeline)), .number(Double(entry.lsn.rawValue)), .string(entry.reason),
            ]
            if entry.timestamp != nil || entry.newLeader != nil {
                row.append(entry.timestamp.map(JSONValue.string) ?? .null)
            }
            if let leader = entry.newLeader { row.append(.string(leader)) }
            return .array(row)
        }
        return APIResponse.json(.ok, .array(rows))
    }

    func metrics() async -> Response {
        let status = await source.status()
        let text = MetricsDocument.make(
            status, scope: source.scope, now: source.clock.now, wallClock: source.wallClockSeconds(),
            store: source.storeRequestStats())
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    // MARK: Request bodies

    /// Reads the body as a JSON object, or answers what is wrong with it.
    func jsonObject(_ request: Request) async -> Result<[String: JSONValue], APIInputError> {
        let limit = configuration.maxBodyBytes
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            return .failure(tooLarge(limit))
        }
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: limit)
        } catch {
            return .failure(tooLarge(limit))
        }
        guard buffer.readableBytes > 0 else {
            return .failure(APIInputError("the request body is empty; send a JSON object"))
        }
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: Data(buffer.readableBytesView))
        } catch {
            return .failure(
                APIInputError("the request body is not valid JSON (\(Self.describe(error))); send a JSON object"))
        }
        guard case .object(let object) = value else {
            return .failure(APIInputError("the request body must be a JSON object, got \(Self.kind(of: value))"))
        }
        return .success(object)
    }

    func tooLarge(_ limit: Int) -> APIInputError {
        APIInputError("the request body is larger than \(limit / 1024) KiB; send a smaller document", statusCode: 413)
    }

    static func describe(_ error: any Error) -> String {
        if case DecodingError.dataCorrupted(let context) = error {
            let underlying = context.underlyingError.map { ": \($0.localizedDescription)" } ?? ""
            return context.debugDescription + underlying
        }
        return "\(error)"
    }

    static func kind(of value: JSONValue) -> String {
        switch value {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    /// An optional string field; a present value of another type is an error.
    static func string(_ object: [String: JSONValue], _ key: String) -> Result<String?, APIInputError> {
        guard let value = object[key], value != .null else { return .success(nil) }
        guard case .string(let text) = value else {
            return .failure(APIInputError("\(key): expected a string, got \(kind(of: value))"))
        }
        return .success(text.isEmpty ? nil : text)
    }
}

extension APIResponse {
    static func error(_ error: APIInputError) -> Response {
        APIResponse.error(HTTPResponse.Status(code: error.statusCode), error.message)
    }
}

/// At most one of something at a time: `begin()` says whether this caller may start.
final class SingleFlight: Sendable {
    private let running = Atomic<Bool>(false)
    func begin() -> Bool { running.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged }
    func end() { running.store(false, ordering: .releasing) }
}
