import NIOCore
import Synchronization

/// What the server last said about the session's transaction (its `ReadyForQuery` status byte).
public enum SessionTransactionState: Sendable, Equatable {
    /// No transaction block is open.
    case idle
    /// Inside a transaction block.
    case open
    /// Inside a transaction block that failed: everything until its end is refused, and `COMMIT`
    /// rolls back.
    case failed
    /// Not known: a statement is still in flight, or the observer lost track of the protocol.
    case unknown
}

/// The session state postgres-nio keeps to itself, read off the wire: every `ReadyForQuery` the
/// server sends (with its transaction status) against every `Sync` or simple `Query` the client
/// sent. The status is current only when every request has had its `ReadyForQuery`.
///
/// Counts are updated on the connection's event loop (by `SessionObserver`) and read from any
/// task.
final class SessionTracker: Sendable {
    private struct State {
        var sent = 0
        var answered = 0
        var status: UInt8 = UInt8(ascii: "I")
        /// The type of the last request counted (`S` or `Q`).
        var lastRequest: UInt8 = 0
        /// Transaction blocks the server ended (a `ReadyForQuery` going from `T`/`E` to `I`).
        var blocksEnded = 0
        /// The byte stream stopped making sense (a length out of range): never trusted again.
        var lost = false
    }
    private let state = Mutex(State())

    /// The transaction state now (`unknown` while a request awaits its `ReadyForQuery`).
    var transaction: SessionTransactionState {
        state.withLock { Self.state(of: $0) }
    }

    private static func state(of state: State) -> SessionTransactionState {
        guard !state.lost, state.answered >= state.sent else { return .unknown }
        switch state.status {
        case UInt8(ascii: "I"): return .idle
        case UInt8(ascii: "T"): return .open
        case UInt8(ascii: "E"): return .failed
        default: return .unknown
        }
    }

    /// The transaction state once every request sent so far has been answered, waiting at most
    /// `timeout` or while `open()` says the connection is (then `unknown`). Rare (a body that returned before its statement's answer was
    /// in), so it polls every millisecond.
    func settled(within timeout: Duration, while open: () -> Bool) async -> SessionTransactionState {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (now, lost) = state.withLock { (Self.state(of: $0), $0.lost) }
            if now != .unknown || lost || !open() || ContinuousClock.now >= deadline { return now }
            try? await Task.sleep(for: .milliseconds(1))
        }
    }

    func requestSent(_ type: UInt8) {
        state.withLock { state in
            state.sent += 1
            state.lastRequest = type
        }
    }

    /// The server entered copy-in mode (`CopyInResponse`). A `Sync` sent with the `Execute` that
    /// started it reaches the server in copy-in mode, which ignores it: no `ReadyForQuery` will
    /// answer it (the one after `CopyDone`/`CopyFail` answers the `Sync` sent then).
    func copyIn() {
        state.withLock { state in
            if state.lastRequest == UInt8(ascii: "S") { state.sent -= 1 }
        }
    }

    /// Counts a ReadyForQuery; returns whether every request sent so far is answered now.
    @discardableResult
    func readyForQuery(_ status: UInt8) -> Bool {
        state.withLock { state in
            state.answered += 1
            if status == UInt8(ascii: "I") && state.status != UInt8(ascii: "I") { state.blocksEnded += 1 }
            state.status = status
            return state.answered >= state.sent
        }
    }

    /// Requests sent and answered, the last status and whether track was lost, for diagnostics.
    var counts: String {
        state.withLock {
            "sent \($0.sent), answered \($0.answered), status \(Character(UnicodeScalar($0.status))), lost \($0.lost)"
        }
    }

    /// How many transaction blocks the server has ended on this session so far.
    var blocksEnded: Int { state.withLock { $0.blocksEnded } }

    func lostTrack() { state.withLock { $0.lost = true } }
}

/// Follows PostgreSQL's message framing in both directions without changing a byte: inbound it
/// reports each `ReadyForQuery` ('Z') with its status and each `CopyInResponse` ('G'), outbound
/// each `Sync` ('S') and simple `Query` ('Q'). Installed after startup (after the TLS handler, when there is one), at a message
/// boundary: the connection is idle then.
final class SessionObserver: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let tracker: SessionTracker
    private var inbound = MessageFramer()
    private var outbound = MessageFramer()

    init(tracker: SessionTracker) { self.tracker = tracker }

    /// Called on the event loop when a ReadyForQuery leaves no request unanswered.
    var onSettled: (() -> Void)?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let tracker = self.tracker
        var settled = false
        let ok = inbound.feed(buffer.readableBytesView) { type, first in
            if type == UInt8(ascii: "Z"), let first { settled = tracker.readyForQuery(first) }
            if type == UInt8(ascii: "G") { tracker.copyIn() }
        }
        if !ok { tracker.lostTrack() }
        if settled { onSettled?() }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = unwrapOutboundIn(data)
        let tracker = self.tracker
        let ok = outbound.feed(buffer.readableBytesView) { type, _ in
            if type == UInt8(ascii: "S") || type == UInt8(ascii: "Q") { tracker.requestSent(type) }
        }
        if !ok { tracker.lostTrack() }
        context.write(data, promise: promise)
    }
}

/// Splits a byte stream into PostgreSQL messages (a type byte, a 4-byte big-endian length that
/// counts itself, the payload) across arbitrary chunk boundaries, calling back once per message
/// with its type and the first payload byte (nil for an empty payload).
struct MessageFramer {
    /// Header bytes of the next message read so far (`headerCount` of them, big-endian).
    private var header: UInt64 = 0
    private var headerCount = 0
    /// Payload bytes of the current message still to skip.
    private var remaining = 0
    private var type: UInt8 = 0
    private var awaitingFirstByte = false
    private(set) var lost = false

    /// Feeds `bytes`; false once the framing is lost (a length below 4 or above 1 GiB).
    mutating func feed(_ bytes: ByteBufferView, _ message: (UInt8, UInt8?) -> Void) -> Bool {
        if let ok = bytes.withContiguousStorageIfAvailable({ feed($0, message) }) { return ok }
        return Array(bytes).withUnsafeBufferPointer { feed($0, message) }
    }

    private mutating func feed(_ bytes: UnsafeBufferPointer<UInt8>, _ message: (UInt8, UInt8?) -> Void) -> Bool {
        guard !lost else { return false }
        var index = 0
        while index < bytes.count {
            if remaining > 0 {
                if awaitingFirstByte {
                    awaitingFirstByte = false
                    message(type, bytes[index])
                }
                let skip = min(remaining, bytes.count - index)
                remaining -= skip
                index += skip
                continue
            }
            header = header << 8 | UInt64(bytes[index])
            headerCount += 1
            index += 1
            guard headerCount == 5 else { continue }
            type = UInt8(truncatingIfNeeded: header >> 32)
            let length = Int(header & 0xFFFF_FFFF)
            (header, headerCount) = (0, 0)
            guard length >= 4, length <= 1 << 30 else {
                lost = true
                return false
            }
            remaining = length - 4
            if remaining == 0 {
                message(type, nil)
            } else {
                awaitingFirstByte = true
            }
        }
        return true
    }
}
