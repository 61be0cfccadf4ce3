import NIOCore
import NIOEmbedded
import Testing

@testable import BatonClient

/// The per-connection backstop: one timer at a time for the earliest deadline of the statements
/// in flight, on a virtual clock (an embedded event loop).
@Suite struct StatementBackstopTests {
    final class Cuts: @unchecked Sendable {
        var count = 0
    }

    static func backstop() -> (EmbeddedEventLoop, StatementBackstop, Cuts) {
        let loop = EmbeddedEventLoop()
        let cuts = Cuts()
        return (loop, StatementBackstop(loop: loop) { cuts.count += 1 }, cuts)
    }

    @Test func aStatementStillInFlightAtItsDeadlineCutsTheConnection() {
        let (loop, backstop, cuts) = Self.backstop()
        _ = backstop.start(.seconds(2))
        loop.advanceTime(by: .milliseconds(1999))
        #expect(cuts.count == 0)
        loop.advanceTime(by: .milliseconds(1))
        #expect(cuts.count == 1)
    }

    @Test func aStatementAnsweredInTimeCutsNothingAndLeavesNoTimer() {
        let (loop, backstop, cuts) = Self.backstop()
        for _ in 0..<1000 {
            let id = backstop.start(.seconds(2))
            loop.advanceTime(by: .milliseconds(1))
            backstop.finish(id)
        }
        #expect(backstop.inFlight == 0)
        loop.advanceTime(by: .seconds(10))
        #expect(cuts.count == 0)
    }

    /// The timer armed for the first statement fires while a later one is in flight: it re-arms
    /// for that one's deadline instead of cutting early or forgetting it.
    @Test func theTimerRearmsForALaterStatement() {
        let (loop, backstop, cuts) = Self.backstop()
        let first = backstop.start(.seconds(2))
        loop.advanceTime(by: .seconds(1))
        backstop.finish(first)
        _ = backstop.start(.seconds(2))  // due at 3 s
        loop.advanceTime(by: .seconds(1))  // 2 s: the first timer fires, finds 3 s
        #expect(cuts.count == 0)
        loop.advanceTime(by: .milliseconds(999))
        #expect(cuts.count == 0)
        loop.advanceTime(by: .milliseconds(1))
        #expect(cuts.count == 1)
    }

    /// A short deadline (a health check) that starts while a long one is armed gets its own,
    /// earlier timer.
    @Test func anEarlierDeadlineArmsAnEarlierTimer() {
        let (loop, backstop, cuts) = Self.backstop()
        let long = backstop.start(.seconds(30))
        _ = backstop.start(.milliseconds(500))
        loop.advanceTime(by: .milliseconds(500))
        #expect(cuts.count == 1)
        backstop.finish(long)
    }
}
