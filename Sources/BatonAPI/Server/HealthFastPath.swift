import BatonCore
import BatonHA
import Foundation
import Hummingbird
import HummingbirdCore
import NIOCore
import NIOHTTPTypes
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Answers the health checks (GET, HEAD and OPTIONS of `/primary`, `/replica`, `/health`, …) on
/// the connection's event loop, from the snapshot the HA loop last published, without a task, a
/// router or a hop to the concurrency pool: load balancers poll these several times a second per
/// backend, and their latency must not depend on what else the agent is doing.
///
/// Everything else, and any health check it cannot answer as the router would (a malformed query,
/// no snapshot readable without waiting), goes on to Hummingbird untouched. It answers only while
/// no forwarded request is awaiting its response, so responses stay in request order on a
/// pipelined connection. The answers are the router's: both call `BatonAPIServer.healthAnswer`.
final class HealthFastPath: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let server: BatonAPIServer
    /// A health check whose head arrived; answered when its end arrives.
    private var pending: HTTPRequest?
    /// Requests handed to the router whose response has not ended yet.
    private var forwarded = 0
    /// This connection's last answer, sent again while nothing it depends on changed.
    private var memo: HealthAnswerMemo?

    init(server: BatonAPIServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            if forwarded == 0, pending == nil, Self.mayAnswer(request) {
                pending = request
                return
            }
            forwarded += 1
            context.triggerUserOutboundEvent(ConnectionEvent.routedRequestStarted, promise: nil)
            context.fireChannelRead(data)
        case .body:
            // A health check's body means nothing; it is read and dropped.
            if pending == nil { context.fireChannelRead(data) }
        case .end:
            guard let request = pending else {
                context.triggerUserOutboundEvent(ConnectionEvent.requestComplete(bytesLeft: false), promise: nil)
                context.fireChannelRead(data)
                return
            }
            pending = nil
            guard let (head, body) = server.fastHealthAnswer(request, memo: &memo) else {
                forwarded += 1
                context.triggerUserOutboundEvent(ConnectionEvent.routedRequestStarted, promise: nil)
                context.triggerUserOutboundEvent(ConnectionEvent.requestComplete(bytesLeft: false), promise: nil)
                context.fireChannelRead(wrapInboundOut(.head(request)))
                context.fireChannelRead(data)
                return
            }
            context.triggerUserOutboundEvent(ConnectionEvent.requestComplete(bytesLeft: false), promise: nil)
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            if let body { context.write(wrapOutboundOut(.body(body)), promise: nil) }
            if request.headerFields[.connection]?.lowercased() == "close" {
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
            } else {
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            if forwarded > 0 { forwarded -= 1 }
            context.write(data, promise: promise)
            context.triggerUserOutboundEvent(ConnectionEvent.responseEnded, promise: nil)
            return
        }
        context.write(data, promise: promise)
    }

    /// Worth looking at: a safe method on one of the health paths (the query is parsed later).
    static func mayAnswer(_ request: HTTPRequest) -> Bool {
        guard request.method == .get || request.method == .head || request.method == .options,
            let target = request.path
        else { return false }
        let path = target.firstIndex(of: "?").map { target[..<$0] } ?? target[...]
        return HealthCheck.byPath[String(path)] != nil
    }
}

extension HealthCheck {
    /// Every health path and the check it answers.
    static let byPath: [String: HealthCheck] = Dictionary(
        uniqueKeysWithValues: allCases.flatMap { check in check.paths.map { ($0, check) } })
}

extension BatonAPIServer {
    /// The health check's response as the router would send it (same status, headers and body),
    /// or nil when the router must answer: not a health check, a malformed query, or a source
    /// whose snapshot cannot be read without waiting.
    ///
    /// `memo` is the connection's last answer. It is sent again, unchanged, while the request
    /// (method and target), the snapshot's generation and the wall clock's second (the `Date`
    /// header's resolution) are the same: a load balancer polling one path over a kept-alive
    /// connection costs a comparison, not a query parse, a snapshot copy and the headers. The
    /// status and the document are the snapshot's; only `dcs_last_seen` (whole seconds) may show
    /// the value of the start of that second. `/liveness` is never reused: its answer depends on
    /// the time since the last cycle, not on the snapshot alone.
    func fastHealthAnswer(_ request: HTTPRequest, memo: inout HealthAnswerMemo?) -> (HTTPResponse, ByteBuffer?)? {
        guard let target = request.path else { return nil }
        // The generation is read before the snapshot: an answer built from a newer snapshot than
        // its key says is only ever dropped early, never kept too long.
        let generation = source.currentGeneration()
        let second = HTTPDate.currentSecond()
        if let memo, let generation, memo.generation == generation, memo.second == second,
            memo.method == request.method, memo.target == target
        {
            fastPathAnswers.increment()
            return (memo.head, memo.body)
        }
        guard let (code, body, check) = fastHealthParts(request.method, target) else {
            memo = nil
            return nil
        }
        var fields = HTTPFields()
        for field in Self.healthHeaders(body) { fields.append(field) }
        for header in extraHeaderFields { fields[header.name] = header.value }
        let head = HTTPResponse(status: code, headerFields: fields)
        if let generation, generation != 0, check != .liveness {
            memo = HealthAnswerMemo(
                generation: generation, second: second, method: request.method, target: target, head: head,
                body: body)
        } else {
            memo = nil
        }
        return (head, body)
    }

    /// The headers of a fast-path answer, in the order and spelling the router's responses have.
    static func healthHeaders(_ body: ByteBuffer?) -> [HTTPFields.Element] {
        var headers: [HTTPFields.Element] = []
        if body != nil { headers.append(.init(name: .contentType, value: "application/json")) }
        headers.append(.init(name: .contentLength, value: String(body?.readableBytes ?? 0)))
        headers.append(.init(name: .date, value: HTTPDate.now()))
        headers.append(.init(name: .server, value: serverName))
        return headers
    }

    /// A health check's status and body for `method` and `target` (path and query), counted as a
    /// fast-path answer; nil when the router must answer (see `fastHealthAnswer`).
    private func fastHealthParts(
        _ method: HTTPRequest.Method, _ target: String
    ) -> (HTTPResponse.Status, ByteBuffer?, HealthCheck)? {
        let uri = URI(target)
        guard let check = HealthCheck.byPath[uri.path], let status = source.currentStatus(),
            let query = try? Self.healthQuery(uri)
        else { return nil }
        let (code, body) = healthAnswer(check, method: method, query: query, status: status)
        fastPathAnswers.increment()
        return (code, body, check)
    }
}

/// A connection's last health answer and what it was the answer to (see
/// `BatonAPIServer.fastHealthAnswer(_:memo:)`).
struct HealthAnswerMemo {
    var generation: UInt64
    var second: Int
    var method: HTTPRequest.Method
    var target: String
    var head: HTTPResponse
    var body: ByteBuffer?
}

/// How many health checks the fast path answered.
final class FastPathCounter: Sendable {
    private let count = Atomic<Int>(0)
    func increment() { count.wrappingAdd(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}

/// The `Date` header (RFC 9110 IMF-fixdate), formatted once per second.
enum HTTPDate {
    private static let cache = Mutex<(second: Int, text: String)>((-1, ""))

    /// Seconds since 1970, as `now()` formats them.
    static func currentSecond() -> Int {
        var seconds = time_t()
        time(&seconds)
        return Int(seconds)
    }

    static func now() -> String {
        let second = currentSecond()
        var seconds = time_t(second)
        if let text = cache.withLock({ $0.second == second ? $0.text : nil }) { return text }
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let text =
            "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
        cache.withLock { $0 = (second, text) }
        return text
    }
}
