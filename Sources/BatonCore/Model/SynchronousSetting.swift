/// What the leader asks of PostgreSQL's `synchronous_standby_names`: which standbys may
/// acknowledge a commit, and how many of them must.
///
/// `FIRST n (…)` (synchronous mode) waits for the first n listed standbys that are connected;
/// Baton lists exactly n, so each of them has every acknowledged commit. `ANY n (…)` (quorum
/// mode) waits for any n of them. `*` in `names` stands for any standby (strict mode without a
/// standby: commits wait until one connects).
public struct SynchronousSetting: Hashable, Sendable, CustomStringConvertible, ExpressibleByArrayLiteral {
    public var names: [String]
    public var count: Int
    public var quorum: Bool

    /// `count` is clamped to 0…names.count; names are kept sorted (as Patroni writes them).
    public init(names: [String], count: Int, quorum: Bool) {
        self.names = Array(Set(names)).sorted()
        self.count = max(0, min(count, self.names.count))
        self.quorum = quorum
    }

    /// Every listed standby must acknowledge (`FIRST n` with n the number of names).
    public init(arrayLiteral names: String...) { self.init(all: names) }
    public init(all names: [String]) { self.init(names: names, count: names.count, quorum: false) }

    public static let empty = SynchronousSetting(names: [], count: 0, quorum: false)

    public var isEmpty: Bool { names.isEmpty }
    /// Any standby may acknowledge (`*`): no member can be counted on to hold a commit.
    public var isWildcard: Bool { names.contains("*") }

    /// The value PostgreSQL is given (empty: commits wait for no standby).
    public var postgresValue: String {
        guard !names.isEmpty else { return "" }
        let listed = names.map { name in
            name == "*" ? "*" : "\"" + name.flatMap { $0 == "\"" ? "\"\"" : String($0) } + "\""
        }
        return "\(quorum ? "ANY" : "FIRST") \(max(count, 1)) (\(listed.joined(separator: ",")))"
    }

    public var description: String {
        names.isEmpty ? "none" : "\(quorum ? "ANY" : "FIRST") \(count) (\(names.joined(separator: ",")))"
    }
}
