import BatonCore
import Logging

extension EtcdClient {
    /// Watches a key or range as an `AsyncSequence` of responses that carry events (or report a
    /// compaction). The stream survives dropped connections and dead members: it reconnects (to the
    /// next endpoint) and resumes from the revision after the last one delivered, so that no event
    /// is lost or repeated. Cancelling the iterating task ends it and aborts the transfer.
    public func watch(_ request: EtcdWatchRequest) -> EtcdWatchStream {
        EtcdWatchStream(client: self, request: request)
    }
}

/// See `EtcdClient.watch(_:)`.
///
/// Elements are responses with events, in revision order, or a response with `compactRevision`
/// set when the next wanted revision has been compacted away: events were lost, re-read the
/// state; the stream then continues from `compactRevision`. Creation acknowledgements and progress
/// notifications are consumed internally (the latter advance the resume point).
/// The sequence throws only for errors a reconnect cannot fix (credentials refused, invalid
/// request); everything else is retried with backoff and logged.
public struct EtcdWatchStream: AsyncSequence, Sendable {
    public typealias Element = EtcdWatchResponse

    let client: EtcdClient
    let request: EtcdWatchRequest

    public func makeAsyncIterator() -> Iterator {
        Iterator(driver: EtcdWatchDriver(client: client, request: request))
    }

    public struct Iterator: AsyncIteratorProtocol {
        let driver: EtcdWatchDriver

        public mutating func next() async throws -> EtcdWatchResponse? {
            try await driver.next()
        }

        /// The endpoint the stream is connected to right now, if any (for diagnostics and tests).
        public var connectedEndpoint: String? { driver.connectedEndpoint }

        /// The revision the stream resumes from after a reconnect.
        public var nextRevision: Int64 { driver.nextRevision }
    }
}

/// The state of one watch across its connections. Used by one iterator at a time (the
/// AsyncSequence contract), hence unchecked-Sendable.
final class EtcdWatchDriver: @unchecked Sendable {
    private let client: EtcdClient
    private let request: EtcdWatchRequest
    private var logger: Logger
    /// The first revision not yet delivered; 0 until known (a watch "from now").
    private(set) var nextRevision: Int64
    private var transfer: WatchTransfer?
    private var iterator: AsyncThrowingStream<WatchTransfer.Item, any Error>.AsyncIterator?
    private var consecutiveFailures = 0
    private var finished = false

    init(client: EtcdClient, request: EtcdWatchRequest) {
        self.client = client
        self.request = request
        self.nextRevision = request.startRevision
        var logger = client.logger
        logger[metadataKey: "etcd.watch"] = "\(String(decoding: request.key, as: UTF8.self))"
        self.logger = logger
    }

    deinit { transfer?.close() }

    /// The endpoint of the open connection, if any.
    var connectedEndpoint: String? { transfer?.endpoint }

    func next() async throws -> EtcdWatchResponse? {
        while !finished {
            if Task.isCancelled {
                close()
                return nil
            }
            if iterator == nil {
                try await connect()
            }
            let item: WatchTransfer.Item?
            do {
                item = try await iterator?.next()
            } catch let failure as TransportFailure {
                if Task.isCancelled {
                    close()
                    return nil
                }
                await reconnect(after: "\(failure)")
                continue
            }
            guard let item else {
                if Task.isCancelled {
                    close()
                    return nil
                }
                await reconnect(after: "stream ended")
                continue
            }
            switch item {
            case .ended(let status):
                await reconnect(after: "stream ended by the server (HTTP \(status))")
            case .message(let bytes):
                if let response = try await handle(bytes) { return response }
            }
        }
        return nil
    }

    /// Interprets one stream message; returns what to deliver, if anything.
    private func handle(_ bytes: [UInt8]) async throws -> EtcdWatchResponse? {
        let endpoint = transfer?.endpoint
        let message: EtcdWatchMessage
        do {
            message = try EtcdWatchMessage(json: bytes)
        } catch {
            await reconnect(after: "malformed watch message: \(error.message)")
            return nil
        }
        switch message {
        case .error(let code, let text):
            let error = StoreError.etcd(code: code, message: text, endpoint: endpoint)
            if error.isTokenRejected {
                client.invalidateToken(client.token)
            } else if error.code == .auth || error.code == .invalidRequest {
                close()
                finished = true
                throw error
            }
            await reconnect(after: "\(error)")
            return nil
        case .response(var response):
            consecutiveFailures = 0
            if response.compactRevision > 0 {
                logger.warning(
                    "etcd watch: revision compacted; events were lost",
                    metadata: [
                        "etcd.revision": "\(nextRevision)", "etcd.compact_revision": "\(response.compactRevision)",
                    ])
                nextRevision = response.compactRevision
                close()
                return response
            }
            if response.canceled {
                await reconnect(after: "watch cancelled by etcd: \(response.cancelReason ?? "no reason given")")
                return nil
            }
            if response.created {
                // A watch "from now": resume after the revision it was created at.
                if nextRevision == 0 { nextRevision = response.header.revision + 1 }
                return nil
            }
            if response.events.isEmpty {
                // Progress notification: everything up to the header revision was delivered.
                nextRevision = max(nextRevision, response.header.revision + 1)
                return nil
            }
            // Never deliver a revision twice (defensive: a resume starts at nextRevision anyway).
            response.events.removeAll { $0.kv.modRevision < nextRevision }
            guard let last = response.events.last else { return nil }
            nextRevision = last.kv.modRevision + 1
            return response
        }
    }

    private func connect() async throws {
        guard let (endpoint, _, _) = client.endpoint() else {
            throw StoreError(.unavailable, "no etcd endpoints")
        }
        var headers = ["Content-Type: application/json", "Grpc-Metadata-hasleader: true"]
        if client.configuration.credentials != nil {
            do {
                let token = try await client.validToken(
                    deadline: ContinuousClock().now + client.requestTimeout)
                headers.append("Authorization: \(token)")
            } catch let error as StoreError where error.code == .auth {
                finished = true
                throw error
            } catch let error as StoreError {
                // Auth endpoint unreachable: count it as a failed connection and retry later.
                logger.debug("etcd watch: cannot authenticate yet", metadata: ["etcd.error": "\(error)"])
            }
        }
        let body = WireEncoding.encode(request.wire(startRevision: nextRevision))
        let http = HTTPRequest(
            url: endpoint + "/v3/watch", method: .post, body: body, headers: headers,
            connectTimeout: client.configuration.connectTimeout, timeout: nil,
            idleTimeout: client.configuration.watchIdleTimeout)
        let transfer = WatchTransfer(request: http, endpoint: endpoint, tls: client.configuration.tls)
        self.transfer = transfer
        self.iterator = transfer.items.makeAsyncIterator()
        logger.debug(
            "etcd watch connected", metadata: ["etcd.endpoint": "\(endpoint)", "etcd.revision": "\(nextRevision)"])
    }

    private func close() {
        transfer?.close()
        transfer = nil
        iterator = nil
    }

    /// Drops the connection, moves to the next endpoint and waits a little (more after each
    /// consecutive failure) before the next `connect()`.
    private func reconnect(after reason: String) async {
        let endpoint = transfer?.endpoint
        close()
        consecutiveFailures += 1
        logger.info(
            "etcd watch reconnecting",
            metadata: [
                "etcd.endpoint": "\(endpoint ?? "-")", "etcd.revision": "\(nextRevision)", "etcd.reason": "\(reason)",
            ])
        if let endpoint, let (current, index, _) = client.endpoint(), current == endpoint {
            client.markFailed(index: index)
        }
        if consecutiveFailures > 1 {
            let exponent = min(consecutiveFailures - 2, 5)
            try? await Task.sleep(for: .milliseconds(50 << exponent))
        }
    }
}
