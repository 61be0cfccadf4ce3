import BatonCore
import Logging
import Synchronization

/// A client for etcd v3 (3.4+) through its JSON gateway at `/v3/`, over libcurl.
///
/// * Every call has a total deadline (`requestTimeout`) and each connect its own; no call can hang.
/// * Calls move to the next endpoint on a connection failure or etcd's "unavailable" (gRPC 14).
///   Reads are also retried after timeouts and lost connections; writes are not (their outcome is
///   unknown then, and the error says so), except when the request provably never left.
/// * With credentials, the client authenticates on first use and re-authenticates once when etcd
///   rejects the token.
/// * libcurl's blocking calls run on the client's own threads (`CurlWorkerPool`), never on Swift's
///   cooperative pool; each watch stream has a thread and connection of its own.
/// * Errors are `StoreError` (see `StoreError+Etcd.swift`); cancellation is `CancellationError`.
///   A failed compare in a transaction is a result (`succeeded == false`), not an error.
public final class EtcdClient: Sendable {
    public let configuration: EtcdConfiguration
    let logger: Logger
    let pool: CurlWorkerPool
    private let state: Mutex<State>

    struct State {
        var endpoints: [String]
        var current = 0
        var token: String?
        var requestTimeout: Duration
    }

    /// Every call's total deadline: the configuration's at start, then the dynamic
    /// `retry_timeout` in force (`setRequestTimeout(_:)`).
    public var requestTimeout: Duration { state.withLock { $0.requestTimeout } }

    /// Follows a changed `retry_timeout`; calls already running keep their deadline.
    public func setRequestTimeout(_ timeout: Duration) {
        guard timeout > .zero else { return }
        state.withLock { $0.requestTimeout = timeout }
    }

    /// How long one connect may take: the configuration's, or a third of the request timeout.
    var connectTimeout: Duration { min(configuration.connectTimeout, max(requestTimeout / 3, .milliseconds(500))) }

    public init(configuration: EtcdConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.pool = CurlWorkerPool(
            name: "baton-etcd", tls: configuration.tls, maxThreads: configuration.maxConcurrentRequests,
            maxQueued: configuration.maxQueuedRequests)
        self.state = Mutex(State(endpoints: configuration.endpoints, requestTimeout: configuration.requestTimeout))
    }

    deinit { pool.shutdown() }

    /// Stops the worker threads; later calls fail. Open watch streams end with their tasks.
    public func shutdown() { pool.shutdown() }

    /// The endpoints in use (the configured ones, or those found by `discoverEndpoints()`).
    public var endpoints: [String] { state.withLock { $0.endpoints } }

    /// The endpoint the next call goes to first.
    public var currentEndpoint: String? {
        state.withLock { $0.endpoints.isEmpty ? nil : $0.endpoints[$0.current % $0.endpoints.count] }
    }

    // MARK: Endpoint rotation

    func endpoint(at offset: Int = 0) -> (url: String, index: Int, count: Int)? {
        state.withLock { state in
            guard !state.endpoints.isEmpty else { return nil }
            let index = (state.current + offset) % state.endpoints.count
            return (state.endpoints[index], index, state.endpoints.count)
        }
    }

    /// The endpoint at `index` itself (a pinned attempt: one endpoint, counted as the only one).
    func endpoint(absolute index: Int) -> (url: String, index: Int, count: Int)? {
        state.withLock { state in
            guard !state.endpoints.isEmpty else { return nil }
            let index = index % state.endpoints.count
            return (state.endpoints[index], index, 1)
        }
    }

    /// Makes the endpoint at `index` the first one asked next (it answered a hedged request).
    func prefer(index: Int) {
        state.withLock { state in
            guard !state.endpoints.isEmpty else { return }
            state.current = index % state.endpoints.count
        }
    }

    /// Moves past the endpoint at `index`, unless another call already did.
    func markFailed(index: Int) {
        state.withLock { state in
            guard !state.endpoints.isEmpty, state.current % state.endpoints.count == index else { return }
            state.current = (index + 1) % state.endpoints.count
        }
    }

    func replaceEndpoints(_ endpoints: [String]) {
        state.withLock { state in
            let current = state.endpoints.isEmpty ? nil : state.endpoints[state.current % state.endpoints.count]
            state.endpoints = endpoints
            state.current = current.flatMap { endpoints.firstIndex(of: $0) } ?? 0
        }
    }

    // MARK: Auth token

    var token: String? { state.withLock { $0.token } }

    func setToken(_ token: String?) { state.withLock { $0.token = token } }

    /// Drops `rejected` unless a fresher token has replaced it meanwhile.
    func invalidateToken(_ rejected: String?) {
        state.withLock { state in
            if state.token == rejected { state.token = nil }
        }
    }

    // MARK: Calls

    /// Sends one gateway call and decodes the reply, with retries across endpoints until the deadline.
    func call<Reply: Sendable>(
        _ path: String, body: [UInt8], idempotent: Bool, authenticated: Bool = true,
        deadline: ContinuousClock.Instant? = nil,
        decode: @escaping @Sendable (WireObject) throws(WireError) -> Reply
    ) async throws -> Reply {
        let deadline = deadline ?? ContinuousClock.now + requestTimeout
        let count = endpoints.count
        guard idempotent, count > 1 else {
            return try await attempt(
                path, body: body, idempotent: idempotent, authenticated: authenticated, deadline: deadline,
                pinned: nil, decode: decode)
        }
        return try await hedged(
            path, body: body, authenticated: authenticated, deadline: deadline, count: count, decode: decode)
    }

    /// An idempotent request, hedged across endpoints: the first endpoint gets the whole deadline;
    /// when it has not answered within its share (the deadline split across the endpoints, at least
    /// 1 s) after it was sent, or failed, the next one is asked too, and so on. The first answer
    /// wins and the others are cancelled. An etcd that is slow but alive (every answer close to
    /// retry_timeout) is still heard; one endpoint that is down or blackholed costs only its share.
    /// A request still waiting for a worker thread (this process saturated) starts no second one:
    /// that would only queue behind it.
    private func hedged<Reply: Sendable>(
        _ path: String, body: [UInt8], authenticated: Bool, deadline: ContinuousClock.Instant, count: Int,
        decode: @escaping @Sendable (WireObject) throws(WireError) -> Reply
    ) async throws -> Reply {
        let first = state.withLock { $0.current % max($0.endpoints.count, 1) }
        let share = max(requestTimeout / count, .seconds(1))
        let race = HedgeRace<Reply>(count: count)
        let timeoutText = "no reply within \(requestTimeout) from \(endpoints.joined(separator: ","))"
        // Unstructured attempts: the first answer returns at once, the others are cancelled and
        // end in the background (an aborted curl transfer is woken and ends at once).
        let reply = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Reply, any Error>) in
                race.start(continuation)
                for offset in 0..<count {
                    race.add(
                        Task {
                            // This endpoint's turn: the previous one was sent its share ago, or
                            // every earlier one failed.
                            if offset > 0 { await race.waitForTurn(offset, share: share) }
                            if Task.isCancelled || race.isFinished { return }
                            let index = (first + offset) % count
                            do {
                                let reply = try await self.attempt(
                                    path, body: body, idempotent: true, authenticated: authenticated,
                                    deadline: deadline, pinned: index, decode: decode,
                                    onSent: { race.markSent(offset) }, onRetry: { race.markStumbled(offset) })
                                race.report(.answer(reply, index: index))
                            } catch let error as StoreError {
                                // Overloaded (not sent: this process is saturated) is definitive
                                // too: another endpoint's attempt would wait in the same queue.
                                race.report(
                                    .failure(error, definitive: error.code != .unavailable && error.code != .timeout))
                            } catch {
                                race.report(.failure(StoreError(.timeout, timeoutText), definitive: false))
                            }
                        })
                }
            }
        } onCancel: {
            race.cancel()
        }
        if let index = race.winner { prefer(index: index) }
        return reply
    }

    /// One request, with retries: across the endpoints in turn (`pinned` nil: each gets its share
    /// of the deadline), or on one endpoint only (`pinned`: it gets the whole deadline). `onRetry`
    /// hears each failure that is about to be retried.
    private func attempt<Reply: Sendable>(
        _ path: String, body: [UInt8], idempotent: Bool, authenticated: Bool,
        deadline: ContinuousClock.Instant, pinned: Int?,
        decode: (WireObject) throws(WireError) -> Reply, onSent: (@Sendable () -> Void)? = nil,
        onRetry: (@Sendable () -> Void)? = nil
    ) async throws -> Reply {
        let clock = ContinuousClock()
        var lastError: StoreError?
        var failuresInRound = 0
        var round = 0
        var reauthenticated = false

        while true {
            try Task.checkCancellation()
            let remaining = deadline - clock.now
            guard remaining > .zero, let (endpoint, index, count) = pinned.map(endpoint(absolute:)) ?? endpoint() else {
                throw lastError
                    ?? StoreError(
                        .timeout,
                        "no reply within \(requestTimeout) from \(endpoints.joined(separator: ","))")
            }
            var headers = ["Content-Type: application/json"]
            var sentToken: String?
            if authenticated, configuration.credentials != nil {
                let token = try await validToken(deadline: deadline)
                headers.append("Authorization: \(token)")
                sentToken = token
            }
            // Give every endpoint a turn within the deadline. A pinned attempt has it all; so has a
            // request that is not idempotent: once sent, it is never sent elsewhere (it may have
            // been applied), so cutting it short would only turn a slow answer into a failure.
            let share =
                pinned != nil || !idempotent ? remaining : max(requestTimeout / max(count, 1), .seconds(1))
            let request = HTTPRequest(
                url: endpoint + path, method: .post, body: body, headers: headers,
                connectTimeout: min(connectTimeout, remaining), timeout: min(share, remaining),
                queueTimeout: remaining, onSent: onSent)

            let retryable: StoreError
            switch await pool.run(request) {
            case .success(let response):
                do {
                    return try interpret(response, endpoint: endpoint, decode: decode)
                } catch {
                    let failure = error
                    if failure.isTokenRejected, sentToken != nil, !reauthenticated {
                        logger.info(
                            "etcd rejected the auth token; re-authenticating",
                            metadata: ["etcd.endpoint": "\(endpoint)"])
                        invalidateToken(sentToken)
                        reauthenticated = true
                        continue
                    }
                    // A reply that makes no sense is worth one try elsewhere, never a second round.
                    let anotherEndpointLeft = round == 0 && failuresInRound + 1 < count
                    guard
                        failure.code == .unavailable
                            || (idempotent && failure.code == .malformedReply && anotherEndpointLeft)
                    else { throw failure }
                    retryable = failure
                }
            case .failure(let failure):
                if failure.kind == .aborted { throw CancellationError() }
                // This process is overloaded, not the endpoint: no other endpoint would do better.
                if failure.kind == .overloaded {
                    throw StoreError.transport(failure, endpoint: endpoint, idempotent: true)
                }
                let mapped = StoreError.transport(failure, endpoint: endpoint, idempotent: idempotent)
                let anotherEndpointLeft = round == 0 && failuresInRound + 1 < count
                guard failure.kind == .connect || !failure.requestSent || idempotent, failure.kind != .tls,
                    failure.kind != .malformed || anotherEndpointLeft
                else { throw mapped }
                retryable = mapped
            }

            lastError = retryable
            onRetry?()
            logger.debug(
                "etcd call failed; trying the next endpoint",
                metadata: ["etcd.endpoint": "\(endpoint)", "etcd.path": "\(path)", "etcd.error": "\(retryable)"])
            markFailed(index: index)
            failuresInRound += 1
            if failuresInRound >= count {
                // Every endpoint failed once: pause before the next round (etcd may be electing).
                failuresInRound = 0
                round += 1
                let pause = min(Duration.milliseconds(50 << min(round, 4)), deadline - clock.now)
                if pause > .zero { try await Task.sleep(for: pause) }
            }
        }
    }

    /// Turns an HTTP reply into the decoded value or a `StoreError`.
    func interpret<Reply>(
        _ response: HTTPResponse, endpoint: String, decode: (WireObject) throws(WireError) -> Reply
    ) throws(StoreError) -> Reply {
        let wire: WireObject
        do {
            wire = try WireObject(json: Self.firstObject(response.body))
        } catch {
            if response.status >= 500 {
                throw StoreError(
                    .unavailable, "HTTP \(response.status) with a non-JSON body: \(WireObject.preview(response.body))",
                    endpoint: endpoint)
            }
            throw StoreError(.malformedReply, "HTTP \(response.status): \(error.message)", endpoint: endpoint)
        }
        if let (code, message) = wire.gatewayError() {
            throw StoreError.etcd(code: code, message: message, endpoint: endpoint)
        }
        guard (200..<300).contains(response.status) else {
            throw StoreError(
                response.status >= 500 ? .unavailable : .invalidRequest,
                "HTTP \(response.status): \(WireObject.preview(response.body))", endpoint: endpoint)
        }
        do {
            return try decode(wire)
        } catch {
            throw StoreError.malformed(error, endpoint: endpoint)
        }
    }

    /// Streaming RPCs called as one POST (lease keepalive) answer with newline-delimited objects;
    /// the first is the reply.
    static func firstObject(_ body: [UInt8]) -> [UInt8] {
        var splitter = JSONObjectSplitter()
        if let objects = try? splitter.append(body), let first = objects.first, objects.count > 1 {
            return first
        }
        return body
    }

    /// A token for the `Authorization` header, authenticating first if there is none.
    func validToken(deadline: ContinuousClock.Instant) async throws -> String {
        if let token { return token }
        return try await authenticate(deadline: deadline)
    }
}

/// One hedged attempt's result: an answer from the endpoint at `index`, or a failure (definitive
/// when another endpoint would say the same, e.g. "lease not found").
enum HedgeOutcome<Reply: Sendable>: Sendable {
    case answer(Reply, index: Int)
    case failure(StoreError, definitive: Bool)
}

/// The hedged attempts of one request: the first answer (or definitive failure) resumes the caller
/// and cancels the rest; when every attempt failed, the last failure is thrown.
final class HedgeRace<Reply: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<Reply, any Error>?
        var tasks: [Task<Void, Never>] = []
        var failures = 0
        var last: StoreError?
        var winner: Int?
        var finished = false
        /// When each attempt (by offset) first left the queue.
        var sentAt: [Int: ContinuousClock.Instant] = [:]
        /// The attempts (by offset) that failed once and are retrying their own endpoint.
        var stumbled: Set<Int> = []
        /// Bumped on every change a waiting attempt may care about (a send, a failure, the end).
        var version = 0
        var waiters: [Int: (version: Int, continuation: CheckedContinuation<Void, Never>)] = [:]
        var nextWaiter = 0
    }
    private let count: Int
    private let state = Mutex(State())

    init(count: Int) { self.count = count }

    var failures: Int { state.withLock { $0.failures } }
    var winner: Int? { state.withLock { $0.winner } }
    var isFinished: Bool { state.withLock { $0.finished } }

    /// The attempt at `offset` left the queue: the next one's share starts now.
    func markSent(_ offset: Int) {
        let woken = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard state.sentAt[offset] == nil else { return [] }
            state.sentAt[offset] = .now
            return Self.bump(&state)
        }
        for waiter in woken { waiter.resume() }
    }

    /// The attempt at `offset` failed once and retries its own endpoint (refused, reset, "no
    /// leader"): the next one's turn starts now, not when the failing one's share is over. Before,
    /// an endpoint that refused every connection (its etcd killed) was retried alone for a whole
    /// share (1 s of a leader's 1.5 s keepalive) before another endpoint was asked.
    func markStumbled(_ offset: Int) {
        let woken = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard !state.stumbled.contains(offset) else { return [] }
            state.stumbled.insert(offset)
            return Self.bump(&state)
        }
        for waiter in woken { waiter.resume() }
    }

    /// Returns when the attempt at `offset` may start: every earlier attempt failed, the previous
    /// one failed once (and retries), or has been out for `share` (its time in the queue does not
    /// count), or the race is over or cancelled.
    func waitForTurn(_ offset: Int, share: Duration) async {
        while !Task.isCancelled {
            let (ready, sentAt, version) = state.withLock { state in
                (
                    state.finished || state.failures >= offset || state.stumbled.contains(offset - 1),
                    state.sentAt[offset - 1], state.version
                )
            }
            if ready { return }
            let turn = sentAt.map { $0 + share }
            if let turn, turn <= .now { return }
            await withTaskGroup(of: Void.self) { group in
                if let turn { group.addTask { try? await Task.sleep(until: turn, clock: .continuous) } }
                group.addTask { await self.change(after: version) }
                await group.next()
                group.cancelAll()
            }
        }
    }

    /// Returns at the next change after `version` (at once if there was one), or when cancelled.
    private func change(after version: Int) async {
        let id = state.withLock { state -> Int in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    // Cancelled before the waiter is stored: onCancel found nothing to resume.
                    if state.version != version || state.finished || Task.isCancelled { return true }
                    state.waiters[id] = (version, continuation)
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.continuation.resume()
        }
    }

    private static func bump(_ state: inout State) -> [CheckedContinuation<Void, Never>] {
        state.version += 1
        let woken = state.waiters.values.map(\.continuation)
        state.waiters.removeAll()
        return woken
    }

    func start(_ continuation: CheckedContinuation<Reply, any Error>) {
        // Cancelled before it started (the cancellation handler ran first): answer at once.
        let cancelled = state.withLock { state -> Bool in
            if state.finished { return true }
            state.continuation = continuation
            return false
        }
        if cancelled { continuation.resume(throwing: CancellationError()) }
    }

    func add(_ task: Task<Void, Never>) {
        let cancelNow = state.withLock { state -> Bool in
            state.tasks.append(task)
            return state.finished
        }
        if cancelNow { task.cancel() }
    }

    func report(_ outcome: HedgeOutcome<Reply>) {
        var woken: [CheckedContinuation<Void, Never>] = []
        defer { for waiter in woken { waiter.resume() } }
        let (continuation, result, tasks) = state.withLock {
            state -> (CheckedContinuation<Reply, any Error>?, Result<Reply, any Error>?, [Task<Void, Never>]) in
            guard !state.finished else { return (nil, nil, []) }
            var result: Result<Reply, any Error>?
            switch outcome {
            case .answer(let reply, let index):
                state.winner = index
                result = .success(reply)
            case .failure(let error, true):
                result = .failure(error)
            case .failure(let error, false):
                state.failures += 1
                state.last = error
                if state.failures >= count { result = .failure(error) }
            }
            woken = Self.bump(&state)
            guard let result else { return (nil, nil, []) }
            state.finished = true
            let continuation = state.continuation
            state.continuation = nil
            return (continuation, result, state.tasks)
        }
        guard let continuation, let result else { return }
        for task in tasks { task.cancel() }
        continuation.resume(with: result)
    }

    func cancel() {
        var woken: [CheckedContinuation<Void, Never>] = []
        defer { for waiter in woken { waiter.resume() } }
        let (continuation, tasks) = state.withLock {
            state -> (CheckedContinuation<Reply, any Error>?, [Task<Void, Never>]) in
            guard !state.finished else { return (nil, state.tasks) }
            state.finished = true
            woken = Self.bump(&state)
            let continuation = state.continuation
            state.continuation = nil
            return (continuation, state.tasks)
        }
        for task in tasks { task.cancel() }
        continuation?.resume(throwing: CancellationError())
    }
}
