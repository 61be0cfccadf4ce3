import HummingbirdCore
import Logging
import NIOCore
import Synchronization

/// The REST API's per-connection limits, enforced by `ConnectionLimitHandler`.
public struct ConnectionLimitSettings: Sendable, Equatable {
    /// At most this many connections are open at once; a connection over the cap is closed as soon
    /// as it is accepted (logged at most once every 10 s).
    public var maxConnections: Int
    /// A request (its head and body) must arrive whole within this time of its first byte, and the
    /// first request within this time of the connection's accept (which includes a TLS handshake):
    /// a client that trickles bytes (slowloris) or never completes a handshake is closed.
    public var requestTimeout: Duration
    /// A connection with no request in progress and no byte read or written for this long is
    /// closed (a client that stopped reading its answers is one).
    public var idleTimeout: Duration

    public init(
        maxConnections: Int = 1000, requestTimeout: Duration = .seconds(10), idleTimeout: Duration = .seconds(60)
    ) {
        self.maxConnections = max(1, maxConnections)
        self.requestTimeout = requestTimeout
        self.idleTimeout = idleTimeout
    }
}

/// What the handlers behind `ConnectionLimitHandler` tell it, as outbound user events: a request
/// arrived whole (answered at once by a fast path, or handed to the router), and the router's
/// response to one ended.
enum ConnectionEvent {
    /// A request's head went to the router: its response is owed until `responseEnded`.
    case routedRequestStarted
    /// A request arrived whole (head and body), whoever answers it; `bytesLeft`: the start of the
    /// next one is already here (pipelined), so the next request's clock starts now.
    case requestComplete(bytesLeft: Bool)
    case responseEnded
}

/// The open connections of one server, against its cap.
final class ConnectionCounter: Sendable {
    private let open = Atomic<Int>(0)
    private let lastRefusalLog = Atomic<Int64>(-1)

    /// Counts a new connection; false (and not counted) when the cap is reached.
    func admit(cap: Int) -> Bool {
        var current = open.load(ordering: .relaxed)
        while current < cap {
            let (exchanged, original) = open.compareExchange(
                expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
        return false
    }

    func release() { open.wrappingSubtract(1, ordering: .acquiringAndReleasing) }

    var count: Int { open.load(ordering: .relaxed) }

    /// True at most once per 10 s: whether to log a refusal now.
    func shouldLogRefusal(now: NIODeadline) -> Bool {
        let seconds = Int64(now.uptimeNanoseconds / 1_000_000_000)
        let last = lastRefusalLog.load(ordering: .relaxed)
        guard last < 0 || seconds - last >= 10 else { return false }
        return lastRefusalLog.compareExchange(expected: last, desired: seconds, ordering: .relaxed).exchanged
    }
}

/// First handler of every REST connection (behind TLS when TLS is on): caps the number of
/// connections, closes a connection whose request does not arrive whole in time or that sits
/// idle, and stops reading while the peer does not read what it was sent (back-pressure: a client
/// that pipelines requests and never reads the answers costs one socket buffer, not memory without
/// bound).
///
/// The handler behind the HTTP codec (`HealthFastPath`) reports complete requests and ended
/// responses as `ConnectionEvent`s; this one sees only bytes.
final class ConnectionLimitHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let settings: ConnectionLimitSettings
    private let counter: ConnectionCounter
    private let logger: Logger
    private var admitted = false
    /// When the request in progress (or the first one) must have arrived whole; nil between requests.
    private var requestDeadline: NIODeadline?
    /// Requests handed to the router whose response has not ended.
    private var routed = 0
    /// Bytes arrived since the last whole request (the start of the next one).
    private var requestBytesPending = false
    /// Since when the channel has not been writable (the peer does not read).
    private var unwritableSince: NIODeadline?
    private var lastActivity = NIODeadline.now()
    private var timer: Scheduled<Void>?
    private var timerAt: NIODeadline?
    /// A read asked for while the channel was not writable, issued once it is.
    private var heldRead = false

    init(settings: ConnectionLimitSettings, counter: ConnectionCounter, logger: Logger) {
        self.settings = settings
        self.counter = counter
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        guard counter.admit(cap: settings.maxConnections) else {
            if counter.shouldLogRefusal(now: .now()) {
                logger.warning(
                    "REST API connection cap reached: refusing new connections",
                    metadata: [
                        "api.max_connections": "\(settings.maxConnections)",
                        "api.peer": "\(context.channel.remoteAddress.map { "\($0)" } ?? "unknown")",
                        "api.hint": "raise restapi.max_connections, or find the client holding them",
                    ])
            }
            context.close(promise: nil)
            return
        }
        admitted = true
        let now = NIODeadline.now()
        lastActivity = now
        requestDeadline = now + TimeAmount(settings.requestTimeout)
        schedule(context, at: requestDeadline!)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        if admitted {
            admitted = false
            counter.release()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard admitted else { return }
        let now = NIODeadline.now()
        lastActivity = now
        requestBytesPending = true
        if requestDeadline == nil {
            let deadline = now + TimeAmount(settings.requestTimeout)
            requestDeadline = deadline
            schedule(context, at: deadline)
        }
        context.fireChannelRead(data)
    }

    /// The peer closed its side with no request in progress: nothing more can come, and nothing
    /// is owed. Closed here, on the event loop, so that the slot is free at once.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            if routed == 0, !requestBytesPending {
                context.close(promise: nil)
                return
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        lastActivity = .now()
        context.write(data, promise: promise)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let event = event as? ConnectionEvent else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        lastActivity = .now()
        switch event {
        case .routedRequestStarted:
            routed += 1
        case .requestComplete(let bytesLeft):
            requestDeadline = nil
            requestBytesPending = bytesLeft
            if bytesLeft { requestDeadline = lastActivity + TimeAmount(settings.requestTimeout) }
        case .responseEnded:
            routed = max(0, routed - 1)
        }
        // A timer is always armed while the connection lives: the request deadline, or the idle one.
        schedule(context, at: requestDeadline ?? lastActivity + TimeAmount(settings.idleTimeout))
        promise?.succeed()
    }

    // Back-pressure: no read while what was written waits for the peer.
    func read(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            context.read()
        } else {
            heldRead = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if !context.channel.isWritable {
            if unwritableSince == nil { unwritableSince = .now() }
        } else {
            unwritableSince = nil
            lastActivity = .now()
            if heldRead {
                heldRead = false
                context.read()
            }
        }
        context.fireChannelWritabilityChanged()
    }

    /// Makes sure a check runs no later than `deadline`.
    private func schedule(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        if let timerAt, timerAt <= deadline, timer != nil { return }
        timer?.cancel()
        timerAt = deadline
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = loopBound.value
            handler.timer = nil
            handler.timerAt = nil
            handler.check(context)
        }
    }

    private func check(_ context: ChannelHandlerContext) {
        guard admitted else { return }
        let now = NIODeadline.now()
        let idle = TimeAmount(settings.idleTimeout)
        // A peer that has not read for the idle timeout while answers wait for it is gone or
        // hostile, whatever is in progress (a router response blocked on it never ends).
        if let since = unwritableSince {
            if now >= since + idle {
                close(context, "the peer read nothing for \(settings.idleTimeout)")
                return
            }
        }
        if let requestDeadline, now >= requestDeadline {
            close(context, "no whole request within \(settings.requestTimeout) of its first byte")
            return
        }
        if requestDeadline == nil, routed == 0, unwritableSince == nil, now >= lastActivity + idle {
            close(context, "idle for \(settings.idleTimeout)")
            return
        }
        // Always armed again: the earliest of what could end this connection next.
        var next = requestDeadline ?? (lastActivity + idle)
        if let since = unwritableSince { next = min(next, since + idle) }
        if next <= now { next = now + idle }
        schedule(context, at: next)
    }

    private func close(_ context: ChannelHandlerContext, _ reason: String) {
        logger.debug(
            "REST API connection closed: \(reason)",
            metadata: ["api.peer": "\(context.channel.remoteAddress.map { "\($0)" } ?? "unknown")"])
        context.close(promise: nil)
    }
}

/// Hummingbird's HTTP/1.1 channel with the connection limits in front: `ConnectionLimitHandler`
/// first (behind TLS when TLS is on), small reads and a small send buffer, then the codec with
/// `HealthFastPath` after it (`HTTP1Channel.Configuration.additionalChannelHandlers`).
struct LimitedHTTP1Channel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = HTTP1Channel.Value

    let base: HTTP1Channel
    let server: BatonAPIServer

    var responder: HTTPChannelHandler.Responder { base.responder }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        do {
            try channel.pipeline.syncOperations.addHandler(
                ConnectionLimitHandler(
                    settings: server.configuration.limits, counter: server.connections, logger: server.logger))
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
