import BatonTesting
import Testing

@testable import BatonClient

@Suite struct ReplicaSelectorTests {
    static func candidate(_ name: String, lag: UInt64? = 0, seconds: Double? = 0, weight: Int = 1) -> ReplicaCandidate {
        ReplicaCandidate(name: name, lagBytes: lag, lagSeconds: seconds, weight: weight)
    }

    func picks(_ selector: inout ReplicaSelector, _ candidates: [ReplicaCandidate], _ n: Int) -> [String] {
        var generator = SeededGenerator(seed: 42)
        return (0..<n).compactMap { _ in selector.pick(candidates, using: &generator)?.name }
    }

    @Test func roundRobinTakesTurns() {
        var selector = ReplicaSelector(strategy: .roundRobin)
        let names = picks(&selector, [Self.candidate("a"), Self.candidate("b"), Self.candidate("c")], 6)
        #expect(names == ["a", "b", "c", "a", "b", "c"])
    }

    @Test func weightedFollowsTheWeightsEvenlyInterleaved() {
        var selector = ReplicaSelector(strategy: .weighted)
        let names = picks(&selector, [Self.candidate("a", weight: 3), Self.candidate("b", weight: 1)], 8)
        #expect(names.filter { $0 == "a" }.count == 6)
        #expect(names.filter { $0 == "b" }.count == 2)
        // Smooth: never more than 3 a's in a row.
        #expect(!names.joined().contains("aaaa"))
    }

    @Test func weightZeroIsNeverPickedWhileOthersWeighMore() {
        var selector = ReplicaSelector(strategy: .weighted)
        let names = picks(&selector, [Self.candidate("a", weight: 0), Self.candidate("b", weight: 2)], 5)
        #expect(Set(names) == ["b"])
    }

    @Test func leastLagPrefersTheFreshestAndRotatesTies() {
        var selector = ReplicaSelector(strategy: .leastLag)
        let fresh = [Self.candidate("a", lag: 100), Self.candidate("b", lag: 10), Self.candidate("c", lag: 10)]
        let names = picks(&selector, fresh, 4)
        #expect(names == ["b", "c", "b", "c"])
        let unknown = [Self.candidate("a", lag: nil), Self.candidate("b", lag: 5_000)]
        #expect(picks(&selector, unknown, 2) == ["b", "b"])
    }

    @Test func randomSpreadsOverAllCandidates() {
        var selector = ReplicaSelector(strategy: .random)
        let names = picks(&selector, [Self.candidate("a"), Self.candidate("b"), Self.candidate("c")], 300)
        for name in ["a", "b", "c"] {
            let count = names.filter { $0 == name }.count
            #expect((60...140).contains(count), "\(name) picked \(count) of 300 times")
        }
    }

    @Test func noCandidateNoPick() {
        var selector = ReplicaSelector(strategy: .roundRobin)
        #expect(selector.pick([]) == nil)
    }
}
