import Foundation

/// One watch connection: a dedicated thread with its own libcurl handle performs the streaming
/// POST and hands every complete JSON object to the async side. Closing it (or cancelling the
/// task that iterates `messages`) aborts the transfer at once (curl_multi_wakeup), and the thread ends.
final class WatchTransfer: Sendable {
    enum Item: Sendable {
        case message([UInt8])
        /// HTTP status of a stream that ended (a non-2xx answer carries its error as a message).
        case ended(status: Int)
    }

    let endpoint: String
    let items: AsyncThrowingStream<Item, any Error>
    private let abort = AbortFlag()

    init(request: HTTPRequest, endpoint: String, tls: EtcdTLSConfiguration?) {
        self.endpoint = endpoint
        let (stream, continuation) = AsyncThrowingStream<Item, any Error>.makeStream()
        self.items = stream
        let abort = self.abort
        continuation.onTermination = { _ in abort.set() }
        let thread = Thread {
            let connection = CurlConnection(tls: tls)
            var splitter = JSONObjectSplitter()
            var parseError: WireError?
            let result = connection.perform(request, abort: abort) { bytes in
                do {
                    for object in try splitter.append(bytes) { continuation.yield(.message(object)) }
                    return true
                } catch {
                    parseError = (error as? WireError) ?? WireError("\(error)")
                    return false
                }
            }
            if let parseError {
                continuation.finish(
                    throwing: TransportFailure(
                        kind: .malformed, curlCode: -1, message: "watch stream: \(parseError.message)",
                        requestSent: true))
                return
            }
            switch result {
            case .success(let response):
                if splitter.hasPartialObject {
                    continuation.finish(
                        throwing: TransportFailure(
                            kind: .malformed, curlCode: -1, message: "watch stream ended inside a JSON object",
                            requestSent: true))
                } else {
                    continuation.yield(.ended(status: response.status))
                    continuation.finish()
                }
            case .failure(let failure):
                continuation.finish(throwing: failure)
            }
        }
        thread.name = "baton-etcd-watch"
        thread.start()
    }

    func close() { abort.set() }
}
