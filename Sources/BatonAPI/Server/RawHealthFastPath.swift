import Hummingbird
import HummingbirdCore
import Logging
import NIOCore

/// Answers keep-alive HTTP/1.1 health checks straight from the connection's bytes, ahead of the
/// HTTP codec: a load balancer polling `/primary` over a kept-alive connection costs one parse of
/// the request line and headers and one pre-sized write, with no HTTP parser, no header objects
/// and no codec conversions.
///
/// It answers only simple requests: `GET`, `HEAD` or `OPTIONS` of a health path, `HTTP/1.1`, no
/// body (`Transfer-Encoding`, a non-zero `Content-Length`), no `Upgrade` or `Expect`. The first
/// request that is anything else (or a health check it cannot answer as the router would, such
/// as a malformed query) hands the connection over for good: that request's bytes and everything
/// after them go to the HTTP codec untouched, where `HealthFastPath` and the router carry on. As
/// it answers only before any byte went to the codec, pipelined responses stay in order.
final class RawHealthFastPath: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The longest request head it waits for; a longer one is handed over.
    static let maxHead = 8192

    private let server: BatonAPIServer
    /// The start of a request whose head has not fully arrived.
    private var partial: ByteBuffer?
    /// Set once bytes went to the codec: everything passes through.
    private var handedOver = false
    /// Set once a request asked to close: what follows it is dropped.
    private var closing = false
    /// The last answer, sent again while nothing it depends on changed.
    private var memo: RawHealthMemo?
    /// Set while received requests wait for the peer to read earlier answers.
    private var waitingForPeer = false
    /// Set while received requests wait for their next turn of the event loop.
    private var yielding = false
    /// What ConnectionLimitHandler was last told about held requests.
    private var reportedHolding = false

    init(server: BatonAPIServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if closing { return }
        guard !handedOver else {
            context.fireChannelRead(data)
            return
        }
        var buffer = unwrapInboundIn(data)
        if var earlier = partial {
            partial = nil
            earlier.writeBuffer(&buffer)
            buffer = earlier
        }
        // Requests already waiting (for the peer to read, or for their turn) go first.
        if waitingForPeer || yielding {
            partial = buffer
            return
        }
        process(context, buffer)
    }

    /// Answers the pipelined health checks already received once the peer reads again.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, waitingForPeer {
            waitingForPeer = false
            resume(context)
        }
        context.fireChannelWritabilityChanged()
    }

    private func resume(_ context: ChannelHandlerContext) {
        guard !closing, !handedOver, !waitingForPeer, let buffer = partial else { return }
        partial = nil
        process(context, buffer)
    }

    /// At most this many pipelined requests are answered in one go; the rest in a task queued on
    /// the event loop (a bounded batch, not a yield to I/O: the loop runs queued tasks before it
    /// polls again). What bounds a flood is the peer's reading: see the writability checks.
    static let answersPerTurn = 64

    private func process(_ context: ChannelHandlerContext, _ received: ByteBuffer) {
        var buffer = received
        var answered = 0
        // Bounded by the bytes received: every turn consumes a request or returns.
        while buffer.readableBytes > 0 {
            // Back-pressure: while the peer does not read its answers, the requests it already
            // sent wait here (no more are read: see ConnectionLimitHandler).
            if !context.channel.isWritable {
                partial = buffer
                waitingForPeer = true
                reportHolding(context, true)
                if answered > 0 { context.flush() }
                return
            }
            if answered >= Self.answersPerTurn {
                partial = buffer
                yielding = true
                reportHolding(context, true)
                context.flush()
                let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                context.eventLoop.execute {
                    let (handler, context) = loopBound.value
                    handler.yielding = false
                    handler.resume(context)
                }
                return
            }
            switch Self.parse(buffer) {
            case .incomplete:
                partial = buffer
                if answered > 0 { context.flush() }
                reportHolding(context, false)
                return
            case .other:
                reportHolding(context, false)
                handOver(context, buffer, flush: answered > 0)
                return
            case .health(let method, let target, let length, let close):
                guard
                    let response = server.rawHealthResponse(
                        method, target, allocator: context.channel.allocator, memo: &memo)
                else {
                    reportHolding(context, false)
                    handOver(context, buffer, flush: answered > 0)
                    return
                }
                buffer.moveReaderIndex(forwardBy: length)
                context.triggerUserOutboundEvent(
                    ConnectionEvent.requestComplete(bytesLeft: buffer.readableBytes > 0), promise: nil)
                if close {
                    // Whatever follows a request asking to close is not answered.
                    closing = true
                    let channel = context.channel
                    context.writeAndFlush(wrapOutboundOut(response)).whenComplete { _ in channel.close(promise: nil) }
                    return
                }
                context.write(wrapOutboundOut(response), promise: nil)
                answered += 1
            }
        }
        if answered > 0 { context.flush() }
        reportHolding(context, false)
    }

    /// Tells ConnectionLimitHandler whether received requests wait here (a half-close then waits
    /// for them to be answered).
    private func reportHolding(_ context: ChannelHandlerContext, _ holding: Bool) {
        guard holding != reportedHolding else { return }
        reportedHolding = holding
        context.triggerUserOutboundEvent(ConnectionEvent.holdingRequests(holding), promise: nil)
    }

    private func handOver(_ context: ChannelHandlerContext, _ rest: ByteBuffer, flush: Bool) {
        handedOver = true
        if flush { context.flush() }
        context.fireChannelRead(wrapInboundOut(rest))
    }

    /// What the bytes at the front of a buffer hold.
    enum Parsed: Equatable {
        /// The head has not fully arrived (and is not over `maxHead` yet).
        case incomplete
        /// Not a simple health check candidate: hand over.
        case other
        /// A simple request of `length` bytes (the whole head); `close` when it asked to close.
        case health(method: HTTPRequest.Method, target: String, length: Int, close: Bool)
    }

    /// Parses a request head (RFC 9112) only as far as deciding whether it is a simple, body-less
    /// health check candidate; anything unusual is `.other`, for the real parser to judge.
    static func parse(_ buffer: ByteBuffer) -> Parsed {
        buffer.withUnsafeReadableBytes { bytes -> Parsed in
            let cr: UInt8 = 13
            let lf: UInt8 = 10
            let limit = min(bytes.count, maxHead)
            // The end of the head: CRLF CRLF.
            var headEnd = -1
            var index = 0
            while index < limit {
                // A bare LF ends lines for some clients: the real parser's business.
                if bytes[index] == lf && (index == 0 || bytes[index - 1] != cr) { return .other }
                if index + 3 < limit, bytes[index] == cr, bytes[index + 1] == lf, bytes[index + 2] == cr,
                    bytes[index + 3] == lf
                {
                    headEnd = index
                    break
                }
                index += 1
            }
            guard headEnd >= 0 else { return bytes.count >= maxHead ? .other : .incomplete }
            // Request line: METHOD SP target SP HTTP/1.1 CRLF.
            var lineEnd = 0
            while lineEnd < headEnd && bytes[lineEnd] != cr { lineEnd += 1 }
            guard bytes[lineEnd + 1] == lf else { return .other }
            let method: HTTPRequest.Method
            let targetStart: Int
            if startsWith(bytes, 0, "GET ") {
                method = .get
                targetStart = 4
            } else if startsWith(bytes, 0, "HEAD ") {
                method = .head
                targetStart = 5
            } else if startsWith(bytes, 0, "OPTIONS ") {
                method = .options
                targetStart = 8
            } else {
                return .other
            }
            var targetEnd = targetStart
            while targetEnd < lineEnd && bytes[targetEnd] != 32 {
                // Visible ASCII only; anything else is for the real parser to refuse.
                guard bytes[targetEnd] > 32 && bytes[targetEnd] < 127 else { return .other }
                targetEnd += 1
            }
            guard targetEnd > targetStart, bytes[targetStart] == UInt8(ascii: "/"),
                lineEnd - targetEnd == 9, startsWith(bytes, targetEnd, " HTTP/1.1")
            else { return .other }
            let target = String(
                decoding: UnsafeRawBufferPointer(rebasing: bytes[targetStart..<targetEnd]), as: UTF8.self)
            // Header lines: `name: value` CRLF, up to the empty line.
            var close = false
            var lineStart = lineEnd + 2
            while lineStart < headEnd + 2 {
                var end = lineStart
                while bytes[end] != cr { end += 1 }
                guard bytes[end + 1] == lf else { return .other }
                // A line folded onto the previous one (obsolete) or without a colon: the parser's.
                guard bytes[lineStart] != 32 && bytes[lineStart] != 9 else { return .other }
                var colon = lineStart
                while colon < end && bytes[colon] != UInt8(ascii: ":") { colon += 1 }
                guard colon < end, colon > lineStart else { return .other }
                switch headerKind(bytes, lineStart, colon) {
                case .ignored:
                    break
                case .refused:
                    return .other
                case .contentLength:
                    guard trimmed(bytes, colon + 1, end) == "0" else { return .other }
                case .connection:
                    let value = trimmed(bytes, colon + 1, end).lowercased()
                    if value.contains("upgrade") { return .other }
                    if value.contains("close") { close = true }
                }
                lineStart = end + 2
            }
            return .health(method: method, target: target, length: headEnd + 4, close: close)
        }
    }

    private enum HeaderKind {
        case ignored, refused, contentLength, connection
    }

    /// The headers that matter here, by name (case-insensitive).
    private static func headerKind(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> HeaderKind {
        // Names have no spaces before the colon (RFC 9112 §5.1); the parser refuses those.
        let length = end - start
        guard length == 6 || length == 7 || length == 10 || length == 14 || length == 17 else {
            for index in start..<end where bytes[index] == 32 || bytes[index] == 9 { return .refused }
            return .ignored
        }
        var name = ""
        for index in start..<end {
            let byte = bytes[index]
            if byte == 32 || byte == 9 { return .refused }
            name.unicodeScalars.append(Unicode.Scalar(byte >= 65 && byte <= 90 ? byte + 32 : byte))
        }
        switch name {
        case "content-length": return .contentLength
        case "connection": return .connection
        case "transfer-encoding", "upgrade", "expect": return .refused
        default: return .ignored
        }
    }

    private static func startsWith(_ bytes: UnsafeRawBufferPointer, _ offset: Int, _ text: StaticString) -> Bool {
        let count = text.utf8CodeUnitCount
        guard offset + count <= bytes.count else { return false }
        return text.withUTF8Buffer { expected in
            for index in 0..<count where bytes[offset + index] != expected[index] { return false }
            return true
        }
    }

    private static func trimmed(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> String {
        var from = start
        var to = end
        while from < to && (bytes[from] == 32 || bytes[from] == 9) { from += 1 }
        while to > from && (bytes[to - 1] == 32 || bytes[to - 1] == 9) { to -= 1 }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[from..<to]), as: UTF8.self)
    }
}

/// Hummingbird's HTTP/1 channel with `RawHealthFastPath` ahead of its HTTP codec (behind TLS when
/// TLS wraps it).
struct HealthFirstHTTP1Channel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = HTTP1Channel.Value

    let base: HTTP1Channel
    let server: BatonAPIServer

    var responder: HTTPChannelHandler.Responder { base.responder }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        do {
            try channel.pipeline.syncOperations.addHandler(
                ConnectionLimitHandler(
                    settings: server.configuration.limits, counter: server.connections, logger: server.logger))
            try channel.pipeline.syncOperations.addHandler(RawHealthFastPath(server: server))
            // Small reads and a small send buffer: a client that pipelines requests without
            // reading the answers is answered a socket buffer's worth (not megabytes) before its
            // connection stops being read, and one read is a short turn of the event loop.
            if let options = channel.syncOptions {
                try options.setOption(
                    ChannelOptions.recvAllocator,
                    value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 16384))
                try options.setOption(ChannelOptions.socketOption(.so_sndbuf), value: 65536)
            }
        } catch {
            // NIO ignores a failed child initializer: close here, or the socket and its slot leak.
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(error)
        }
        return base.setup(channel: channel, logger: logger).flatMapError { error in
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(error)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}
