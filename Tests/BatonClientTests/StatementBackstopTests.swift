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
            backstop.finish(id, answered: true)
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
        backstop.finish(first, answered: true)
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
        backstop.finish(long, answered: true)
    }

    /// A query handed over at BindComplete may still run: its deadline stays until the server's
    /// ReadyForQuery (`settled`).
    @Test func aStatementHandedOverStaysInFlightUntilReadyForQuery() {
        let (loop, backstop, cuts) = Self.backstop()
        let first = backstop.start(.seconds(2))
        backstop.finish(first, answered: false)
        #expect(backstop.inFlight == 1)
        loop.advanceTime(by: .seconds(1))
        backstop.settled()
        #expect(backstop.inFlight == 0)
        loop.advanceTime(by: .seconds(5))
        #expect(cuts.count == 0)

        let second = backstop.start(.seconds(2))
        backstop.finish(second, answered: false)
        loop.advanceTime(by: .seconds(2))
        #expect(cuts.count == 1)
    }

    /// The channel closed: no timer stays behind (a deadline can be weeks away), nothing fires
    /// later, and whoever waits on the close is told, now or at once when watching later.
    @Test func aClosedChannelLeavesNoTimerAndFailsItsWatchers() {
        let (loop, backstop, cuts) = Self.backstop()
        _ = backstop.start(.seconds(2))
        var failed = 0
        let watch = backstop.watchClose { failed += 1 }
        let unwatched = backstop.watchClose { failed += 100 }
        backstop.unwatchClose(unwatched)
        backstop.closed()
        #expect(failed == 1)
        #expect(backstop.inFlight == 0)
        loop.advanceTime(by: .seconds(10))
        #expect(cuts.count == 0)
        _ = backstop.watchClose { failed += 1 }
        #expect(failed == 2)
        backstop.unwatchClose(watch)
        _ = backstop.start(.seconds(1))
        #expect(backstop.inFlight == 0)
    }
}
