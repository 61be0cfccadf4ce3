import CCurl
import Foundation

/// TLS settings for the connections to etcd. Verification of the peer and of its host name is on
/// unless switched off explicitly.
public struct EtcdTLSConfiguration: Sendable, Hashable {
    /// PEM bundle of the CAs that sign etcd's server certificates; nil uses the system store.
    public var caFile: String?
    /// Client certificate and key (PEM) for etcd's `--client-cert-auth`.
    public var certFile: String?
    public var keyFile: String?
    public var verifyPeer: Bool
    /// Checks that the certificate names the host of the endpoint URL. Off only on explicit request.
    public var verifyHostname: Bool

    public init(
        caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil,
        verifyPeer: Bool = true, verifyHostname: Bool = true
    ) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.verifyPeer = verifyPeer
        self.verifyHostname = verifyHostname
    }
}

/// libcurl's process-wide initialisation, done once before the first handle.
enum CurlGlobal {
    static let initialized: Bool = curl_global_init(Int(CURL_GLOBAL_ALL)) == CURLE_OK
}

/// One libcurl easy handle and the connection cache that comes with it. Not thread-safe: exactly
/// one thread owns it (a pool worker or a watch thread) and performs every transfer on it, which
/// is also what lets libcurl reuse its keep-alive connections.
///
/// Transfers run through a multi handle of its own rather than `curl_easy_perform`, whose loop
/// wakes every second (to call the progress callback and check the low-speed limit) even when
/// nothing happens: an idle watch stream cost one wake-up a second. Here the thread sleeps in
/// `curl_multi_poll` until data arrives, a libcurl timeout is due, the watch's idle limit passes
/// or `AbortFlag.set` wakes it (`curl_multi_wakeup`).
final class CurlConnection {
    private let handle: UnsafeMutableRawPointer?
    private let multi: UnsafeMutableRawPointer?
    private let errorBuffer: UnsafeMutablePointer<CChar>

    init(tls: EtcdTLSConfiguration?) {
        _ = CurlGlobal.initialized
        handle = curl_easy_init()
        multi = curl_multi_init()
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        guard let handle else { return }
        _ = baton_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
        _ = baton_curl_setopt_long(handle, CURLOPT_TCP_NODELAY, 1)
        _ = baton_curl_setopt_long(handle, CURLOPT_TCP_KEEPALIVE, 1)
        _ = baton_curl_setopt_long(handle, CURLOPT_TCP_KEEPIDLE, 5)
        _ = baton_curl_setopt_long(handle, CURLOPT_TCP_KEEPINTVL, 2)
        _ = baton_curl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 0)
        _ = baton_curl_setopt_long(handle, CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_1_1))
        _ = baton_curl_setopt_string(handle, CURLOPT_PROTOCOLS_STR, "http,https")
        _ = baton_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, UnsafeMutableRawPointer(errorBuffer))
        _ = baton_curl_setopt_write_function(handle, curlWriteCallback)
        _ = baton_curl_setopt_xferinfo_function(handle, curlProgressCallback)
        _ = baton_curl_setopt_long(handle, CURLOPT_NOPROGRESS, 0)
        if let tls {
            if let ca = tls.caFile { _ = baton_curl_setopt_string(handle, CURLOPT_CAINFO, ca) }
            if let cert = tls.certFile { _ = baton_curl_setopt_string(handle, CURLOPT_SSLCERT, cert) }
            if let key = tls.keyFile { _ = baton_curl_setopt_string(handle, CURLOPT_SSLKEY, key) }
            _ = baton_curl_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, tls.verifyPeer ? 1 : 0)
            _ = baton_curl_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, tls.verifyHostname ? 2 : 0)
        }
    }

    deinit {
        if let handle { curl_easy_cleanup(handle) }
        if let multi { curl_multi_cleanup(multi) }
        errorBuffer.deallocate()
    }

    /// Performs one transfer, blocking the calling thread until it ends (at the latest at
    /// `request.timeout`, or as soon as `abort` is set). `onData`, when given,
    /// receives the body as it arrives instead of it being collected; it returns false to abort.
    func perform(
        _ request: HTTPRequest, abort: AbortFlag, onData: ((UnsafeRawBufferPointer) -> Bool)? = nil
    ) -> Result<HTTPResponse, TransportFailure> {
        guard let handle, let multi else {
            return .failure(
                TransportFailure(
                    kind: .other, curlCode: -1, message: "curl_easy_init or curl_multi_init failed", requestSent: false)
            )
        }
        let context = TransferContext(abort: abort, maxBytes: request.maxResponseBytes, onData: onData)
        let unmanaged = Unmanaged.passRetained(context)
        defer { unmanaged.release() }
        let contextPointer = unmanaged.toOpaque()

        var headerList: UnsafeMutablePointer<curl_slist>?
        for header in request.headers + ["Expect:"] {
            headerList = curl_slist_append(headerList, header)
        }
        defer { curl_slist_free_all(headerList) }

        errorBuffer[0] = 0
        _ = baton_curl_setopt_string(handle, CURLOPT_URL, request.url)
        _ = baton_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList)
        _ = baton_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, contextPointer)
        _ = baton_curl_setopt_pointer(handle, CURLOPT_XFERINFODATA, contextPointer)
        _ = baton_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, Self.milliseconds(request.connectTimeout))
        _ = baton_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, request.timeout.map(Self.milliseconds) ?? 0)

        let code: CURLcode
        switch request.method {
        case .get:
            _ = baton_curl_setopt_long(handle, CURLOPT_HTTPGET, 1)
            code = run(handle, multi: multi, context: context, idleTimeout: request.idleTimeout)
        case .post:
            // A POST needs a body pointer that lives through the transfer; never an empty one,
            // which would make libcurl read the body from stdin.
            let body = request.body.isEmpty ? Array("{}".utf8) : request.body
            code = body.withUnsafeBytes { bytes in
                _ = baton_curl_setopt_long(handle, CURLOPT_POST, 1)
                _ = baton_curl_setopt_off(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(bytes.count))
                _ = baton_curl_setopt_pointer(
                    handle, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: bytes.baseAddress))
                let code = run(handle, multi: multi, context: context, idleTimeout: request.idleTimeout)
                _ = baton_curl_setopt_pointer(handle, CURLOPT_POSTFIELDS, nil)
                return code
            }
        }
        _ = baton_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, nil)
        _ = baton_curl_setopt_pointer(handle, CURLOPT_XFERINFODATA, nil)
        _ = baton_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, nil)

        if code == CURLE_OK {
            var status = 0
            _ = baton_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
            return .success(HTTPResponse(status: status, body: context.body))
        }
        var requestSize = 0
        _ = baton_curl_getinfo_long(handle, CURLINFO_REQUEST_SIZE, &requestSize)
        return .failure(failure(code: code, context: context, requestSent: requestSize > 0))
    }

    /// Drives one transfer on the multi handle until it ends, is aborted, or receives nothing for
    /// `idleTimeout` (reported as CURLE_OPERATION_TIMEDOUT, as libcurl's low-speed limit was).
    private func run(
        _ handle: UnsafeMutableRawPointer, multi: UnsafeMutableRawPointer, context: TransferContext,
        idleTimeout: Duration?
    ) -> CURLcode {
        guard curl_multi_add_handle(multi, handle) == CURLM_OK else { return CURLE_FAILED_INIT }
        defer { curl_multi_remove_handle(multi, handle) }
        let wakeable = MultiHandle(multi)
        context.abort.setWaker { curl_multi_wakeup(wakeable.pointer) }
        defer { context.abort.setWaker(nil) }
        let clock = ContinuousClock()
        context.lastData = clock.now
        while true {
            var running: Int32 = 0
            guard curl_multi_perform(multi, &running) == CURLM_OK else { return CURLE_RECV_ERROR }
            var queued: Int32 = 0
            while let message = curl_multi_info_read(multi, &queued) {
                if message.pointee.msg == CURLMSG_DONE { return message.pointee.data.result }
            }
            if running == 0 { return CURLE_GOT_NOTHING }
            if context.abort.isSet { return CURLE_ABORTED_BY_CALLBACK }
            // libcurl shortens the wait to its own next timeout (connect, TIMEOUT_MS, retries).
            var wait = 3_600_000
            if let idleTimeout {
                let left = idleTimeout - (clock.now - context.lastData)
                guard left > .zero else {
                    context.idleExpired = true
                    return CURLE_OPERATION_TIMEDOUT
                }
                wait = min(wait, Self.milliseconds(left))
            }
            guard curl_multi_poll(multi, nil, 0, Int32(wait), nil) == CURLM_OK else { return CURLE_RECV_ERROR }
        }
    }

    private func failure(code: CURLcode, context: TransferContext, requestSent: Bool) -> TransportFailure {
        let detail = String(cString: errorBuffer)
        let text = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
        let kind: TransportFailure.Kind
        var message = text
        switch code {
        case CURLE_UNSUPPORTED_PROTOCOL where requestSent:
            kind = .malformed  // e.g. "Received HTTP/0.9 when not allowed": a garbage status line
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_PROXY,
            CURLE_UNSUPPORTED_PROTOCOL, CURLE_URL_MALFORMAT:
            kind = .connect
        case CURLE_RECV_ERROR where text.contains("chunked"):
            kind = .malformed  // a broken chunked encoding, not a lost connection
        case CURLE_OPERATION_TIMEDOUT where context.idleExpired:
            kind = .timeout
            message = "nothing received for the idle limit"
        case CURLE_OPERATION_TIMEDOUT:
            kind = requestSent ? .timeout : .connect
            if !requestSent { message = "connect timed out: " + text }
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM,
            CURLE_SSL_CIPHER, CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR,
            CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS, CURLE_SSL_ENGINE_NOTFOUND,
            CURLE_SSL_ENGINE_SETFAILED, CURLE_SSL_CRL_BADFILE, CURLE_SSL_SHUTDOWN_FAILED,
            CURLE_USE_SSL_FAILED, CURLE_SSL_CLIENTCERT:
            kind = .tls
        case CURLE_GOT_NOTHING, CURLE_RECV_ERROR, CURLE_SEND_ERROR:
            kind = .connectionLost
        case CURLE_PARTIAL_FILE:
            kind = .malformed
            message = "truncated reply: " + text
        case CURLE_WEIRD_SERVER_REPLY, CURLE_HTTP2, CURLE_HTTP2_STREAM, CURLE_BAD_CONTENT_ENCODING,
            CURLE_FILESIZE_EXCEEDED, CURLE_RANGE_ERROR:
            kind = .malformed
        case CURLE_WRITE_ERROR where context.tooLarge:
            kind = .malformed
            message = "reply larger than \(context.maxBytes) bytes"
        case CURLE_ABORTED_BY_CALLBACK, CURLE_WRITE_ERROR:
            kind = .aborted
            message = "transfer aborted"
        default:
            kind = .other
        }
        return TransportFailure(kind: kind, curlCode: Int(code.rawValue), message: message, requestSent: requestSent)
    }

    private static func milliseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return Int(max(1, min(ms, Int64(Int32.max))))
    }
}

/// The state one transfer shares with libcurl's callbacks (through an unmanaged pointer).
final class TransferContext {
    let abort: AbortFlag
    let maxBytes: Int
    let onData: ((UnsafeRawBufferPointer) -> Bool)?
    var body: [UInt8] = []
    var tooLarge = false
    /// When data last arrived (for the idle limit), and whether that limit ended the transfer.
    var lastData = ContinuousClock.now
    var idleExpired = false

    init(abort: AbortFlag, maxBytes: Int, onData: ((UnsafeRawBufferPointer) -> Bool)?) {
        self.abort = abort
        self.maxBytes = maxBytes
        self.onData = onData
    }
}

private let curlWriteCallback: baton_curl_data_callback = { data, size, count, userData in
    guard let userData else { return 0 }
    let context = Unmanaged<TransferContext>.fromOpaque(userData).takeUnretainedValue()
    let length = size * count
    if context.abort.isSet { return 0 }
    context.lastData = ContinuousClock.now
    guard length > 0, let data else { return length }
    let bytes = UnsafeRawBufferPointer(start: UnsafeRawPointer(data), count: length)
    if let onData = context.onData {
        return onData(bytes) ? length : 0
    }
    if context.body.count + length > context.maxBytes {
        context.tooLarge = true
        return 0
    }
    context.body.append(contentsOf: bytes)
    return length
}

private let curlProgressCallback: baton_curl_xferinfo_callback = { userData, _, _, _, _ in
    guard let userData else { return 0 }
    let context = Unmanaged<TransferContext>.fromOpaque(userData).takeUnretainedValue()
    return context.abort.isSet ? 1 : 0
}

/// A multi handle crossing to the thread that aborts (only `curl_multi_wakeup`, which libcurl
/// allows from any thread, is called on it there).
private final class MultiHandle: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
    init(_ pointer: UnsafeMutableRawPointer) { self.pointer = pointer }
}
