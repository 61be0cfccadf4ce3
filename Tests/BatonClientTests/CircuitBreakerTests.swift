import Testing

@testable import BatonClient

/// The breaker's state machine, driven by made-up instants (no sleeping).
@Suite struct CircuitBreakerTests {
    let t0 = ContinuousClock.now
    let configuration = CircuitBreakerConfiguration(
        failureRatio: 0.5, minimumRequests: 4, window: .seconds(10), openTimeout: .seconds(5), halfOpenRequests: 2)

    func at(_ seconds: Double) -> ContinuousClock.Instant { t0 + .milliseconds(Int(seconds * 1000)) }

    @Test func staysClosedBelowTheMinimumNumberOfRequests() {
        var breaker = CircuitBreaker(configuration: configuration, now: at(0))
        for i in 0..<3 { #expect(breaker.record(success: false, now: at(Double(i) * 0.1)) == nil) }
        #expect(breaker.state == .closed)
        let transition = breaker.record(success: false, now: at(0.4))
        #expect(transition?.from == .closed && transition?.to == .open)
        #expect(breaker.state == .open)
    }

    @Test func tripsOnTheRatioNotOnSingleFailures() {
        var breaker = CircuitBreaker(configuration: configuration, now: at(0))
        // 1 failure in 4: 25% < 50%.
        for success in [true, true, false, true] { _ = breaker.record(success: success, now: at(1)) }
        #expect(breaker.state == .closed)
        // 3 failures in 6: 50%.
        _ = breaker.record(success: false, now: at(1))
        #expect(breaker.state == .closed)
        let transition = breaker.record(success: false, now: at(1))
        #expect(transition?.to == .open)
        #expect(transition?.reason.contains("3 of the last 6") == true)
    }

    @Test func countsStartOverEveryWindow() {
        var breaker = CircuitBreaker(configuration: configuration, now: at(0))
        for _ in 0..<3 { _ = breaker.record(success: false, now: at(1)) }
        // The window ends: three old failures no longer count.
        #expect(breaker.record(success: false, now: at(11)) == nil)
        #expect(breaker.state == .closed)
    }

    @Test func openRejectsUntilTheTimeoutThenLetsTrialsThrough() {
        var breaker = CircuitBreaker(configuration: configuration, now: at(0))
        for _ in 0..<4 { _ = breaker.record(success: false, now: at(1)) }
        #expect(breaker.state == .open)
        #expect(!breaker.wouldAdmit(now: at(5.9)))
        #expect(breaker.admit(now: at(5.9)).admitted == false)
        #expect(breaker.wouldAdmit(now: at(6)))
        let first = breaker.admit(now: at(6))
        #expect(first.admitted && first.transition?.to == .halfOpen)
        #expect(breaker.admit(now: at(6)).admitted)
        // Only `halfOpenRequests` trials at a time.
        #expect(!breaker.admit(now: at(6)).admitted)
        #expect(breaker.record(success: true, now: at(6.1)) == nil)
        let closed = breaker.record(success: true, now: at(6.2))
        #expect(closed?.from == .halfOpen && closed?.to == .closed)
        #expect(breaker.state == .closed)
    }

    @Test func aFailedTrialReopensForAnotherTimeout() {
        var breaker = CircuitBreaker(configuration: configuration, now: at(0))
        for _ in 0..<4 { _ = breaker.record(success: false, now: at(1)) }
        _ = breaker.admit(now: at(6))
        let reopened = breaker.record(success: false, now: at(6.5))
        #expect(reopened?.from == .halfOpen && reopened?.to == .open)
        #expect(!breaker.wouldAdmit(now: at(11)))
        #expect(breaker.wouldAdmit(now: at(11.5)))
    }

    @Test func releasedAdmissionsFreeHalfOpenTrialSlots() {
        var breaker = CircuitBreaker(configuration: configuration, now: at(0))
        for _ in 0..<4 { _ = breaker.record(success: false, now: at(1)) }
        _ = breaker.admit(now: at(6))
        _ = breaker.admit(now: at(6))
        #expect(!breaker.wouldAdmit(now: at(6)))
        breaker.release(now: at(6))
        #expect(breaker.wouldAdmit(now: at(6)))
    }

    @Test func invalidSettingsAreRejectedWithTheirName() {
        #expect(throws: BatonClientError.self) {
            try CircuitBreakerConfiguration(failureRatio: 0).validate()
        }
        do {
            try CircuitBreakerConfiguration(halfOpenRequests: 0).validate()
            Issue.record("accepted halfOpenRequests 0")
        } catch {
            #expect("\(error)".contains("breaker_half_open_requests"))
        }
    }
}
