import BatonCore

/// Estimates how far behind a replica is in time from WAL positions alone: it remembers when the
/// primary's published position passed each point, so a replica replaying position P is as far
/// behind as the time since the primary first went past P. Resolution is the publishing interval
/// (the agents' `loop_wait`); a replica at or past the primary's last position is 0 s behind.
public struct LagHistory: Sendable {
    private var samples: [(lsn: LSN, at: ContinuousClock.Instant)] = []
    /// Samples older than this are dropped (a replica further behind reports at least this much).
    let horizon: Duration

    public init(horizon: Duration = .seconds(600)) { self.horizon = horizon }

    /// Records the primary's position as seen at `at`.
    public mutating func record(_ lsn: LSN, at: ContinuousClock.Instant) {
        if let last = samples.last, last.lsn >= lsn {
            // Same position, or a new timeline starting lower: nothing new (or start over).
            if lsn < last.lsn { samples = [(lsn, at)] }
            return
        }
        samples.append((lsn, at))
        if let first = samples.first, at - first.at > horizon {
            samples.removeAll { at - $0.at > horizon }
        }
    }

    /// Seconds `position` is behind the primary; nil before any sample.
    public func secondsBehind(_ position: LSN, now: ContinuousClock.Instant) -> Double? {
        guard let last = samples.last else { return nil }
        if position >= last.lsn { return 0 }
        // The first sample beyond `position`: the primary passed it no later than then.
        guard let passed = samples.first(where: { $0.lsn > position }) else { return 0 }
        let behind = now - passed.at
        return Double(behind.components.seconds) + Double(behind.components.attoseconds) / 1e18
    }
}
