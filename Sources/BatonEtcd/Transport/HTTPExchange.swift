import Synchronization

/// One HTTP request as the transport sends it: always to one endpoint, with its own deadlines.
struct HTTPRequest: Sendable {
    enum Method: Sendable { case get, post }

    var url: String
    var method: Method
    var body: [UInt8]
    var headers: [String]
    /// Deadline for the TCP (and TLS) connect.
    var connectTimeout: Duration
    /// Deadline for the whole transfer; nil for long-lived streams (then `idleTimeout` applies).
    var timeout: Duration?
    /// Abort a stream that received nothing for this long.
    var idleTimeout: Duration?
    /// Replies larger than this are refused (a garbage server must not exhaust memory).
    var maxResponseBytes: Int = 64 << 20
    /// How long it may wait for a worker thread (the caller's whole deadline); nil: `timeout`.
    var queueTimeout: Duration?
    /// Called when a worker thread takes the request (it leaves this process's queue and goes out).
    var onSent: (@Sendable () -> Void)? = nil
}

/// A complete HTTP reply.
struct HTTPResponse: Sendable {
    var status: Int
    var body: [UInt8]
}

/// Why a transfer failed below the HTTP layer (libcurl's view), kept apart from etcd's own errors.
struct TransportFailure: Error, Sendable, CustomStringConvertible {
    enum Kind: Sendable, Hashable {
        /// Could not resolve or connect: the request never left this process.
        case connect
        /// The connect or the transfer ran out of time.
        case timeout
        case tls
        /// The peer closed or reset the connection mid-exchange.
        case connectionLost
        /// The reply violated HTTP (garbage status line, truncated body, oversized reply).
        case malformed
        /// Aborted on request (task cancellation or stream close).
        case aborted
        /// Never sent: every worker thread stayed busy past the request's deadline, or too many
        /// requests already waited. Not the endpoint's fault.
        case overloaded
        case other
    }

    var kind: Kind
    var curlCode: Int
    var message: String
    /// False when libcurl sent no byte of the request (a retry elsewhere cannot duplicate it).
    var requestSent: Bool

    var description: String { "\(message) (curl \(curlCode))" }
}

/// A one-way flag a blocked libcurl transfer polls from its progress callback.
final class AbortFlag: Sendable {
    private let value = Atomic<Bool>(false)
    /// Wakes the transfer that waits for its socket (libcurl's `curl_multi_wakeup`). Called under
    /// the lock, so a transfer that clears it cannot free what it wakes while a wake-up runs.
    private let waker = Mutex<(@Sendable () -> Void)?>(nil)

    init() {}

    func set() {
        value.store(true, ordering: .releasing)
        waker.withLock { $0?() }
    }

    var isSet: Bool { value.load(ordering: .acquiring) }

    /// The transfer that runs under this flag registers how to wake it (nil when it ends).
    func setWaker(_ wake: (@Sendable () -> Void)?) {
        waker.withLock { $0 = wake }
    }
}
