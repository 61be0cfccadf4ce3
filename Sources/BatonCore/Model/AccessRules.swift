/// The lines of pg_hba.conf and pg_ident.conf an operator gives as `postgresql.pg_hba` and
/// `postgresql.pg_ident`, in the agent's file or in the `config` key (Patroni's keys). Nil means
/// "not given": the file on disk is left as it is (Baton's own pg_hba.conf written at bootstrap,
/// or whatever the operator put there), as Patroni leaves it.
public struct AccessRules: Sendable, Equatable, CustomStringConvertible {
    public var hba: [String]?
    public var ident: [String]?

    public init(hba: [String]? = nil, ident: [String]? = nil) {
        self.hba = hba
        self.ident = ident
    }

    public var description: String {
        "pg_hba \(hba.map { "\($0.count) lines" } ?? "not given"), pg_ident \(ident.map { "\($0.count) lines" } ?? "not given")"
    }

    /// Patroni's precedence: the agent's own file wins over the `config` key, list by list.
    public static func effective(local: AccessRules, cluster: AccessRules) -> AccessRules {
        AccessRules(hba: local.hba ?? cluster.hba, ident: local.ident ?? cluster.ident)
    }

    /// The rules in the `config` key's `postgresql` section, and what is wrong with them. A list
    /// with any bad line counts as not given (with its problems): half a pg_hba could lock out
    /// the clients the missing lines admit.
    public static func fromCluster(_ postgresql: [String: JSONValue]) -> (rules: AccessRules, problems: [String]) {
        var problems: [String] = []
        func list(_ key: String, check: (String) -> String?) -> [String]? {
            guard let value = postgresql[key], value != .null else { return nil }
            guard case .array(let items) = value else {
                problems.append("postgresql.\(key): expected a list of lines")
                return nil
            }
            if key == "pg_hba", let problem = hbaListProblem(items.compactMap(\.stringValue)) {
                problems.append("postgresql.\(key): \(problem)")
                return nil
            }
            var lines: [String] = []
            for (index, item) in items.enumerated() {
                guard case .string(let line) = item else {
                    problems.append("postgresql.\(key)[\(index)]: expected a string (one line)")
                    return nil
                }
                if let problem = check(line) {
                    problems.append("postgresql.\(key)[\(index)]: \(problem)")
                    return nil
                }
                lines.append(line)
            }
            return lines
        }
        let rules = AccessRules(hba: list("pg_hba", check: hbaProblem), ident: list("pg_ident", check: identProblem))
        return (rules, problems)
    }

    /// The connection types of pg_hba.conf (PostgreSQL 15) and its inclusion directives.
    static let hbaTypes: Set<String> = [
        "local", "host", "hostssl", "hostnossl", "hostgssenc", "hostnogssenc",
    ]
    static let hbaMethods: Set<String> = [
        "trust", "reject", "scram-sha-256", "md5", "password", "gss", "sspi", "ident", "peer", "ldap", "radius",
        "cert", "pam", "bsd",
    ]

    /// Why `line` cannot be a pg_hba.conf line, or nil. A check of its shape only (type, enough
    /// fields, an authentication method where one belongs); PostgreSQL itself checks the written
    /// file before it is used.
    public static func hbaProblem(_ line: String) -> String? {
        if let problem = characterProblem(line) { return problem }
        let fields = self.fields(line)
        guard let type = fields.first else { return nil }  // blank or comment
        guard hbaTypes.contains(type) else {
            return
                "'\(PrintableText.of(Array(type.utf8), limit: 40))' is not a connection type (local, host, hostssl, hostnossl, hostgssenc, hostnogssenc)"
        }
        // local DATABASE USER METHOD; host DATABASE USER ADDRESS METHOD (ADDRESS may be IP MASK).
        let methodAt = type == "local" ? 3 : 4
        guard fields.count > methodAt else {
            return type == "local"
                ? "expected 'local DATABASE USER METHOD [OPTIONS]'"
                : "expected '\(type) DATABASE USER ADDRESS METHOD [OPTIONS]'"
        }
        let candidates = type == "local" ? [fields[3]] : [fields[4]] + (fields.count > 5 ? [fields[5]] : [])
        guard candidates.contains(where: { hbaMethods.contains($0) }) else {
            return "no authentication method where one belongs (\(hbaMethods.sorted().joined(separator: ", ")))"
        }
        return nil
    }

    /// Why `line` cannot be a pg_ident.conf line (`MAPNAME SYSTEM-USERNAME PG-USERNAME`), or nil.
    public static func identProblem(_ line: String) -> String? {
        if let problem = characterProblem(line) { return problem }
        let fields = self.fields(line)
        guard !fields.isEmpty else { return nil }
        guard fields.count == 3 else { return "expected 'MAPNAME SYSTEM-USERNAME PG-USERNAME'" }
        return nil
    }

    /// Why a whole pg_hba list cannot be used, or nil: without one rule PostgreSQL admits nobody,
    /// refuses to start, and keeps its old rules on a reload (so a reload would look fine).
    public static func hbaListProblem(_ lines: [String]) -> String? {
        lines.contains { !fields($0).isEmpty }
            ? nil
            : "has no rule (only blank lines or comments): PostgreSQL would admit nobody and refuse to start"
    }

    static func characterProblem(_ line: String) -> String? {
        // PostgreSQL joins a line ending in a backslash with the next one (a comment would
        // swallow the following rule).
        if line.reversed().drop(while: { $0 == " " || $0 == "\t" }).first == "\\" {
            return "ends with a backslash, which joins it to the next line in PostgreSQL 15; remove it"
        }
        if line.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\t" || $0.value == 0x7F }) {
            return "contains a line break or another control character; give one line per list item"
        }
        if line.utf8.count > 10_000 { return "longer than 10,000 bytes" }
        return nil
    }

    /// The fields of a configuration line: whitespace-separated, double quotes keep spaces,
    /// everything after an unquoted `#` is a comment.
    static func fields(_ line: String) -> [String] {
        var fields: [String] = []
        var current = ""
        var quoted = false
        var inField = false
        for character in line {
            if quoted {
                if character == "\"" { quoted = false } else { current.append(character) }
                continue
            }
            switch character {
            case "#":
                if inField { fields.append(current) }
                return fields
            case " ", "\t":
                if inField { fields.append(current) }
                current = ""
                inField = false
            case "\"":
                quoted = true
                inField = true
            default:
                current.append(character)
                inField = true
            }
        }
        if inField { fields.append(current) }
        return fields
    }

    /// The text of a managed file: a header saying where the lines come from, then the lines.
    public static func fileText(_ lines: [String], key: String, source: String) -> String {
        "# Managed by Baton from \(key) (\(source)): rewritten when it changes; edit it there, not here.\n"
            + lines.map { $0 + "\n" }.joined()
    }
}
