import BatonCore

/// A position in the primary's write-ahead log that a write produced. A read carrying it goes to a
/// replica that has replayed at least that far (or to the primary): it sees the write.
public struct WriteToken: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public var lsn: LSN

    public init(lsn: LSN) { self.lsn = lsn }

    /// Parses the text form (PostgreSQL's `X/X`), e.g. from an HTTP header or a cookie.
    public init?(_ text: String) {
        guard let lsn = LSN(text: text) else { return nil }
        self.lsn = lsn
    }

    public var description: String { lsn.description }

    public static func < (lhs: WriteToken, rhs: WriteToken) -> Bool { lhs.lsn < rhs.lsn }
}

/// How fresh a read must be.
public enum Consistency: Hashable, Sendable, CustomStringConvertible {
    /// From the primary: sees every acknowledged write. The default.
    case strong
    /// From any usable replica (within the lag limits); may miss recent writes.
    case eventual
    /// From a replica that has replayed `token` (waiting a bounded time for one), else from the
    /// primary: sees that write and everything before it.
    case readYourWrites(WriteToken)

    public var description: String {
        switch self {
        case .strong: return "strong"
        case .eventual: return "eventual"
        case .readYourWrites(let token): return "read-your-writes(\(token))"
        }
    }
}

/// The task-local routing context. Set it with `withConsistency(_:_:)` and `withPrimary(_:)`;
/// child tasks inherit it.
public enum BatonRouting {
    /// The consistency of reads that do not name one. `.strong` unless a scope says otherwise.
    @TaskLocal public static var consistency: Consistency = .strong
    /// Inside `withPrimary { }`: every read goes to the primary, whatever consistency it asks for.
    @TaskLocal public static var forcePrimary: Bool = false
}

/// Runs `body` with `consistency` as the default for reads (in this task and its child tasks).
///
///     try await withConsistency(.eventual) {
///         let rows = try await client.read { try await $0.query("SELECT …") }
///     }
public func withConsistency<T>(
    _ consistency: Consistency, isolation: isolated (any Actor)? = #isolation,
    _ body: () async throws -> T
) async rethrows -> T {
    try await BatonRouting.$consistency.withValue(consistency, operation: body, isolation: isolation)
}

/// Runs `body` with every read going to the primary (e.g. a request that just wrote and must read
/// its own data, wherever the reads happen).
public func withPrimary<T>(
    isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> T
) async rethrows -> T {
    try await BatonRouting.$forcePrimary.withValue(true, operation: body, isolation: isolation)
}
