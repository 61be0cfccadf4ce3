/// When a replica's circuit breaker trips and how it recovers.
public struct CircuitBreakerConfiguration: Sendable, Equatable {
    /// Trips when failures / requests reaches this ratio (0 < ratio <= 1)…
    public var failureRatio: Double
    /// …over at least this many requests in the current window.
    public var minimumRequests: Int
    /// Counts start over every `window`.
    public var window: Duration
    /// An open breaker rejects requests for this long, then goes half-open.
    public var openTimeout: Duration
    /// Half-open lets this many trial requests through; all must succeed to close the breaker, and
    /// any failure opens it again.
    public var halfOpenRequests: Int

    public init(
        failureRatio: Double = 0.5, minimumRequests: Int = 5, window: Duration = .seconds(10),
        openTimeout: Duration = .seconds(5), halfOpenRequests: Int = 2
    ) {
        self.failureRatio = failureRatio
        self.minimumRequests = minimumRequests
        self.window = window
        self.openTimeout = openTimeout
        self.halfOpenRequests = halfOpenRequests
    }

    func validate() throws {
        guard failureRatio > 0, failureRatio <= 1 else {
            throw BatonClientError.configuration("breaker_failure_ratio must be in (0, 1], got \(failureRatio)")
        }
        guard minimumRequests >= 1 else {
            throw BatonClientError.configuration("breaker_minimum_requests must be at least 1, got \(minimumRequests)")
        }
        guard window > .zero else { throw BatonClientError.configuration("breaker_window must be positive") }
        guard openTimeout > .zero else { throw BatonClientError.configuration("breaker_open_timeout must be positive") }
        guard halfOpenRequests >= 1 else {
            throw BatonClientError.configuration("breaker_half_open_requests must be at least 1")
        }
    }
}

/// The three states of a breaker, as logged and exported (gauge value in parentheses).
public enum CircuitState: String, Sendable, Hashable {
    /// Requests flow; failures are counted (0).
    case closed
    /// Requests are rejected until the open timeout passes (2).
    case open
    /// A few trial requests are let through (1).
    case halfOpen = "half-open"

    var gaugeValue: Double {
        switch self {
        case .closed: return 0
        case .halfOpen: return 1
        case .open: return 2
        }
    }
}

/// One replica's circuit breaker: a pure state machine over instants passed in by the caller (no
/// clock of its own, so tests drive it with made-up times).
struct CircuitBreaker: Sendable {
    /// A change of state, for the log.
    struct Transition: Sendable, Equatable {
        var from: CircuitState
        var to: CircuitState
        var reason: String
    }

    private enum Phase: Sendable {
        case closed(windowStart: ContinuousClock.Instant, requests: Int, failures: Int)
        case open(until: ContinuousClock.Instant)
        case halfOpen(admitted: Int, succeeded: Int)
    }

    let configuration: CircuitBreakerConfiguration
    private var phase: Phase

    init(configuration: CircuitBreakerConfiguration, now: ContinuousClock.Instant) {
        self.configuration = configuration
        self.phase = .closed(windowStart: now, requests: 0, failures: 0)
    }

    var state: CircuitState {
        switch phase {
        case .closed: return .closed
        case .open: return .open
        case .halfOpen: return .halfOpen
        }
    }

    /// Whether `admit` would let a request through now (no change of state).
    func wouldAdmit(now: ContinuousClock.Instant) -> Bool {
        switch phase {
        case .closed: return true
        case .open(let until): return now >= until
        case .halfOpen(let admitted, _): return admitted < configuration.halfOpenRequests
        }
    }

    /// Lets a request through or not; an open breaker whose timeout passed goes half-open here.
    mutating func admit(now: ContinuousClock.Instant) -> (admitted: Bool, transition: Transition?) {
        switch phase {
        case .closed:
            return (true, nil)
        case .open(let until):
            guard now >= until else { return (false, nil) }
            phase = .halfOpen(admitted: 1, succeeded: 0)
            return (
                true,
                Transition(
                    from: .open, to: .halfOpen,
                    reason: "open for \(configuration.openTimeout); letting \(configuration.halfOpenRequests) trial "
                        + "request(s) through")
            )
        case .halfOpen(let admitted, let succeeded):
            guard admitted < configuration.halfOpenRequests else { return (false, nil) }
            phase = .halfOpen(admitted: admitted + 1, succeeded: succeeded)
            return (true, nil)
        }
    }

    /// Records the outcome of an admitted request.
    mutating func record(success: Bool, now: ContinuousClock.Instant) -> Transition? {
        switch phase {
        case .closed(var windowStart, var requests, var failures):
            if now - windowStart >= configuration.window {
                windowStart = now
                requests = 0
                failures = 0
            }
            requests += 1
            if !success { failures += 1 }
            let ratio = Double(failures) / Double(requests)
            if requests >= configuration.minimumRequests && ratio >= configuration.failureRatio {
                phase = .open(until: now + configuration.openTimeout)
                return Transition(
                    from: .closed, to: .open,
                    reason: "\(failures) of the last \(requests) requests failed (trip ratio "
                        + "\(configuration.failureRatio), minimum \(configuration.minimumRequests) requests); "
                        + "rejecting requests for \(configuration.openTimeout)")
            }
            phase = .closed(windowStart: windowStart, requests: requests, failures: failures)
            return nil
        case .open:
            // A request admitted before the breaker opened finished late: already counted as open.
            return nil
        case .halfOpen(let admitted, let succeeded):
            guard success else {
                phase = .open(until: now + configuration.openTimeout)
                return Transition(
                    from: .halfOpen, to: .open,
                    reason: "a trial request failed; rejecting requests for \(configuration.openTimeout)")
            }
            if succeeded + 1 >= configuration.halfOpenRequests {
                phase = .closed(windowStart: now, requests: 0, failures: 0)
                return Transition(
                    from: .halfOpen, to: .closed,
                    reason: "\(configuration.halfOpenRequests) trial request(s) succeeded")
            }
            phase = .halfOpen(admitted: admitted, succeeded: succeeded + 1)
            return nil
        }
    }

    /// Gives back an admission whose request never ran (e.g. the caller was cancelled), so that a
    /// half-open breaker does not stay full of trials that will never report.
    mutating func release(now: ContinuousClock.Instant) {
        if case .halfOpen(let admitted, let succeeded) = phase, admitted > 0 {
            phase = .halfOpen(admitted: admitted - 1, succeeded: succeeded)
        }
    }
}
