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
    case requestComplete(routed: Bool)
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
/// The handlers behind it (`RawHealthFastPath`, `HealthFastPath`) report complete requests and
/// ended responses as `ConnectionEvent`s; this one sees only bytes.
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
        if case ChannelEvent.inputClosed = event, routed == 0, !requestBytesPending {
            context.close(promise: nil)
            return
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
        case .requestComplete(let toRouter):
            requestDeadline = nil
            requestBytesPending = false
            if toRouter { routed += 1 }
        case .responseEnded:
            routed = max(0, routed - 1)
        }
        if routed == 0, requestDeadline == nil {
            schedule(context, at: lastActivity + TimeAmount(settings.idleTimeout))
        }
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
        if context.channel.isWritable {
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
        if let requestDeadline {
            if now >= requestDeadline {
                close(context, "no whole request within \(settings.requestTimeout) of its first byte")
                return
            }
            schedule(context, at: requestDeadline)
            return
        }
        guard routed == 0 else { return }  // the router's answer is on its way; it reports its end
        let idleUntil = lastActivity + TimeAmount(settings.idleTimeout)
        if now >= idleUntil {
            close(context, "idle for \(settings.idleTimeout)")
        } else {
            schedule(context, at: idleUntil)
        }
    }

    private func close(_ context: ChannelHandlerContext, _ reason: String) {
        logger.debug(
            "REST API connection closed: \(reason)",
            metadata: ["api.peer": "\(context.channel.remoteAddress.map { "\($0)" } ?? "unknown")"])
        context.close(promise: nil)
    }
}
