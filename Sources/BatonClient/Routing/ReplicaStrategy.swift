/// How reads are spread over the usable replicas.
public enum ReplicaStrategy: String, Sendable, CaseIterable {
    /// In turn.
    case roundRobin = "round_robin"
    /// Uniformly at random.
    case random
    /// In proportion to the replicas' weights (smooth weighted round-robin: deterministic, evenly
    /// interleaved).
    case weighted
    /// The replica with the least replay lag (bytes, then time); ties in turn.
    case leastLag = "least_lag"
}

/// A replica the selector may pick: usable now (running, within lag limits, breaker admitting).
struct ReplicaCandidate: Sendable, Equatable {
    var name: String
    var lagBytes: UInt64?
    var lagSeconds: Double?
    var weight: Int
}

/// Picks one candidate per call; the rotation state lives here (one selector per replica pool).
struct ReplicaSelector: Sendable {
    let strategy: ReplicaStrategy
    private var turn: UInt64 = 0
    /// Smooth weighted round-robin's current weights, by replica name.
    private var current: [String: Int] = [:]

    init(strategy: ReplicaStrategy) { self.strategy = strategy }

    /// The next candidate by the strategy, or nil when there is none.
    mutating func pick<R: RandomNumberGenerator>(
        _ candidates: [ReplicaCandidate], using generator: inout R
    ) -> ReplicaCandidate? {
        guard !candidates.isEmpty else { return nil }
        if candidates.count == 1 { return candidates[0] }
        switch strategy {
        case .roundRobin:
            defer { turn &+= 1 }
            return candidates[Int(turn % UInt64(candidates.count))]
        case .random:
            return candidates[Int.random(in: 0..<candidates.count, using: &generator)]
        case .weighted:
            return pickWeighted(candidates)
        case .leastLag:
            let best = candidates.min { Self.lagKey($0) < Self.lagKey($1) }
            let tied = candidates.filter { Self.lagKey($0) == best.map(Self.lagKey) }
            defer { turn &+= 1 }
            return tied[Int(turn % UInt64(tied.count))]
        }
    }

    mutating func pick(_ candidates: [ReplicaCandidate]) -> ReplicaCandidate? {
        var generator = SystemRandomNumberGenerator()
        return pick(candidates, using: &generator)
    }

    private static func lagKey(_ candidate: ReplicaCandidate) -> LagKey {
        LagKey(bytes: candidate.lagBytes ?? .max, seconds: candidate.lagSeconds ?? .infinity)
    }

    private struct LagKey: Comparable {
        var bytes: UInt64
        var seconds: Double
        static func < (lhs: LagKey, rhs: LagKey) -> Bool {
            lhs.bytes != rhs.bytes ? lhs.bytes < rhs.bytes : lhs.seconds < rhs.seconds
        }
    }

    /// nginx's smooth weighted round-robin: every candidate gains its weight, the largest wins and
    /// pays back the total. Weight 0 is never picked unless all weigh 0.
    private mutating func pickWeighted(_ candidates: [ReplicaCandidate]) -> ReplicaCandidate? {
        // Weights come from settings and members' tags: clamped, so that their sum cannot overflow.
        let weighted = candidates.filter { $0.weight > 0 }.map { candidate in
            var clamped = candidate
            clamped.weight = min(candidate.weight, 1_000_000)
            return clamped
        }
        guard !weighted.isEmpty else {
            defer { turn &+= 1 }
            return candidates[Int(turn % UInt64(candidates.count))]
        }
        let total = weighted.reduce(0) { $0 + $1.weight }
        var best: ReplicaCandidate?
        var bestValue = Int.min
        for candidate in weighted {
            let value = (current[candidate.name] ?? 0) + candidate.weight
            current[candidate.name] = value
            if value > bestValue {
                bestValue = value
                best = candidate
            }
        }
        if let best { current[best.name, default: 0] -= total }
        // Forget replicas that left.
        if current.count > weighted.count * 2 {
            let names = Set(weighted.map(\.name))
            current = current.filter { names.contains($0.key) }
        }
        return best
    }
}
