import BatonCore

/// Quoting for libpq connection strings and postgresql.conf values.
public enum ConnInfo {
    /// `key=value` pairs as a libpq conninfo string; values are single-quoted, with `\` and `'`
    /// backslash-escaped, whenever they are empty or contain a space, quote or backslash.
    public static func make(_ pairs: [(String, String)]) -> String {
        pairs.map { "\($0.0)=\(quote($0.1))" }.joined(separator: " ")
    }

    public static func quote(_ value: String) -> String {
        let needsQuotes =
            value.isEmpty || value.contains { $0 == " " || $0 == "'" || $0 == "\\" || $0 == "\t" || $0 == "\n" }
        guard needsQuotes else { return value }
        var escaped = ""
        for character in value {
            if character == "\\" || character == "'" { escaped.append("\\") }
            escaped.append(character)
        }
        return "'\(escaped)'"
    }
}

/// postgresql.conf syntax.
public enum PostgresConf {
    /// A string value for postgresql.conf: single-quoted, `'` doubled and `\` escaped.
    public static func quote(_ value: String) -> String {
        var escaped = ""
        for character in value {
            switch character {
            case "'": escaped.append("''")
            case "\\": escaped.append("\\\\")
            case "\n", "\r": escaped.append(" ")
            default: escaped.append(character)
            }
        }
        return "'\(escaped)'"
    }

    /// `name = value` lines, sorted by name, every value quoted (PostgreSQL accepts quoted numbers
    /// and booleans).
    public static func render(_ parameters: [String: String]) -> String {
        parameters.keys.sorted().map { key in "\(key) = \(quote(parameters[key] ?? ""))" }.joined(separator: "\n")
    }

    /// A physical replication slot name for a member: lower case, `[a-z0-9_]`, at most 63 bytes.
    public static func slotName(forMember member: String) -> String { MemberSlots.slotName(forMember: member) }
}
