/// A PostgreSQL write-ahead-log position (`pg_lsn`), ordered and subtractable.
///
/// Text form is PostgreSQL's `XXXXXXXX/XXXXXXXX`; Patroni's JSON carries it as an integer.
public struct LSN: RawRepresentable, Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public var rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ value: UInt64) { self.rawValue = value }

    public static let zero = LSN(0)

    /// Parses PostgreSQL's `hi/lo` hexadecimal text form; nil when malformed.
    public init?(text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty,
            parts[0].count <= 8, parts[1].count <= 8,
            let hi = UInt64(parts[0], radix: 16), let lo = UInt64(parts[1], radix: 16)
        else { return nil }
        self.rawValue = hi << 32 | lo
    }

    /// PostgreSQL's text form, e.g. `0/3000060`.
    public var description: String {
        let hi = String(rawValue >> 32, radix: 16, uppercase: true)
        let lo = String(rawValue & 0xFFFF_FFFF, radix: 16, uppercase: true)
        return "\(hi)/\(lo)"
    }

    public static func < (lhs: LSN, rhs: LSN) -> Bool { lhs.rawValue < rhs.rawValue }

    /// Bytes from `other` up to `self`, zero when `other` is ahead.
    public func bytesAhead(of other: LSN) -> UInt64 {
        rawValue >= other.rawValue ? rawValue - other.rawValue : 0
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let value = try? container.decode(UInt64.self) {
            self.rawValue = value
        } else if let text = try? container.decode(String.self),
            let lsn = LSN(text: text) ?? UInt64(text).map({ LSN(rawValue: $0) })
        {
            self = lsn
        } else {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: "expected an LSN as an integer or as 'X/X' text")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}
