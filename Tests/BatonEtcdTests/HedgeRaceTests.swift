import BatonCore
import Synchronization
import Testing

@testable import BatonEtcd

/// When a hedged read asks the next endpoint: its share after the previous attempt left this
/// process's queue, or at once when every earlier attempt failed. Before, the share ran from the
/// start of the race, so a read waiting for a busy worker thread started a second attempt that
/// only queued behind it (and the wait was a 20 ms polling loop).
@Suite struct HedgeRaceTests {
    /// Whether `waitForTurn` has returned, and when.
    final class Turn: Sendable {
        let returnedAt = Mutex<ContinuousClock.Instant?>(nil)
        var returned: Bool { returnedAt.withLock { $0 != nil } }
    }

    static func waitInBackground(_ race: HedgeRace<Int>, offset: Int, share: Duration) -> (Turn, Task<Void, Never>) {
        let turn = Turn()
        let task = Task {
            await race.waitForTurn(offset, share: share)
            turn.returnedAt.withLock { $0 = .now }
        }
        return (turn, task)
    }

    @Test func aQueuedAttemptStartsNoSecondOneUntilItIsSent() async throws {
        let race = HedgeRace<Int>(count: 3)
        let (turn, task) = Self.waitInBackground(race, offset: 1, share: .milliseconds(100))
        // The first attempt is still queued: three shares pass, and no second attempt.
        try await Task.sleep(for: .milliseconds(300))
        #expect(!turn.returned)
        // It is sent now: the second attempt starts one share later, not at once.
        let sent = ContinuousClock.now
        race.markSent(0)
        await task.value
        let waited = try #require(turn.returnedAt.withLock { $0 }) - sent
        #expect(waited >= .milliseconds(100) && waited < .milliseconds(1000), "\(waited)")
    }

    @Test func aFailedAttemptHandsOverAtOnce() async throws {
        let race = HedgeRace<Int>(count: 3)
        race.markSent(0)
        let (turn, task) = Self.waitInBackground(race, offset: 1, share: .seconds(30))
        try await Task.sleep(for: .milliseconds(50))
        #expect(!turn.returned)
        race.report(.failure(StoreError(.unavailable, "connection refused"), definitive: false))
        await task.value
        // The third attempt waits for two failures, or the second one's share.
        let (third, thirdTask) = Self.waitInBackground(race, offset: 2, share: .seconds(30))
        try await Task.sleep(for: .milliseconds(50))
        #expect(!third.returned)
        race.report(.failure(StoreError(.unavailable, "connection refused"), definitive: false))
        await thirdTask.value
    }

    /// An attempt that failed once and retries its own endpoint hands the next endpoint its turn
    /// at once; the one after waits until that one stumbles too.
    @Test func anAttemptThatFailedOnceHandsOverWhileItRetries() async throws {
        let race = HedgeRace<Int>(count: 3)
        race.markSent(0)
        let (turn, task) = Self.waitInBackground(race, offset: 1, share: .seconds(30))
        let (third, thirdTask) = Self.waitInBackground(race, offset: 2, share: .seconds(30))
        try await Task.sleep(for: .milliseconds(50))
        #expect(!turn.returned)
        race.markStumbled(0)
        await task.value
        try await Task.sleep(for: .milliseconds(50))
        #expect(!third.returned, "the third endpoint's turn came before the second one failed")
        race.markSent(1)
        race.markStumbled(1)
        await thirdTask.value
        #expect(race.failures == 0, "a stumble is not a failure: the race goes on")
    }

    @Test func aWaitingAttemptEndsWithTheRaceOrItsTask() async throws {
        let race = HedgeRace<Int>(count: 2)
        let (_, waiting) = Self.waitInBackground(race, offset: 1, share: .seconds(30))
        race.report(.answer(7, index: 0))
        await waiting.value
        #expect(race.winner == 0)
        let other = HedgeRace<Int>(count: 2)
        let (_, cancelled) = Self.waitInBackground(other, offset: 1, share: .seconds(30))
        try await Task.sleep(for: .milliseconds(20))
        cancelled.cancel()
        await cancelled.value
    }
}
