/// A point on a monotonic clock, as a duration since an arbitrary origin. Wall-clock time is never
/// used for leases or deadlines.
public struct MonotonicInstant: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var sinceOrigin: Duration

    public init(sinceOrigin: Duration) { self.sinceOrigin = sinceOrigin }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.sinceOrigin < rhs.sinceOrigin }
    public static func + (lhs: Self, rhs: Duration) -> Self { Self(sinceOrigin: lhs.sinceOrigin + rhs) }
    public static func - (lhs: Self, rhs: Duration) -> Self { Self(sinceOrigin: lhs.sinceOrigin - rhs) }
    public static func - (lhs: Self, rhs: Self) -> Duration { lhs.sinceOrigin - rhs.sinceOrigin }

    public var description: String { "t+\(sinceOrigin)" }
}

/// The port through which the I/O shell reads time and sleeps; tests inject a manual clock.
public protocol MonotonicClock: Sendable {
    var now: MonotonicInstant { get }
    func sleep(until deadline: MonotonicInstant) async throws
}

extension MonotonicClock {
    public func sleep(for duration: Duration) async throws { try await sleep(until: now + duration) }
}

/// The real monotonic clock: `ContinuousClock`, CLOCK_BOOTTIME on Linux — unaffected by `date -s`
/// and, unlike CLOCK_MONOTONIC (`SuspendingClock`), still running while the host is suspended, so
/// a lease deadline that passed during a suspend has passed on resume: a primary that wakes up
/// fences before it can serve a write. The fence task wakes at least every 100 ms to look.
public struct SystemMonotonicClock: MonotonicClock {
    private static let origin = ContinuousClock.now

    public init() {}

    public var now: MonotonicInstant {
        MonotonicInstant(sinceOrigin: ContinuousClock.now - Self.origin)
    }

    public func sleep(until deadline: MonotonicInstant) async throws {
        try await ContinuousClock().sleep(until: Self.origin + deadline.sinceOrigin, tolerance: nil)
    }
}
