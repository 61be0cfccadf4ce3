/// PostgreSQL parameters from the cluster-wide `config` key and from the agent's own file, merged
/// as Patroni merges them: Baton's defaults, then the cluster's `postgresql.parameters`, then the
/// local file's (which win), except for the parameters that must be the same on every member
/// (Patroni's command-line options: only the cluster's values count, and only valid ones).
///
/// Values in the `config` key are input from anyone who can write to etcd or call `PATCH /config`:
/// names are checked, values must be a string, number or boolean without control characters, and
/// what fails is refused by name with the reason (logged by the agent), never written to a file
/// that PostgreSQL would then refuse to start with.
public enum PostgresParameters {
    /// Why a parameter was not used.
    public struct Refusal: Hashable, Sendable, CustomStringConvertible {
        public var name: String
        public var reason: String
        public init(name: String, reason: String) {
            self.name = name
            self.reason = reason
        }
        public var description: String { "\(name): \(reason)" }
    }

    /// The parameters that must hold the same value on every member (Patroni's CMDLINE_OPTIONS):
    /// their default and whether a value from the cluster's configuration is acceptable. A value
    /// in the local file is ignored for these, as Patroni ignores it.
    public static let clusterWide: [String: (default: String?, isValid: @Sendable (String) -> Bool)] = [
        "listen_addresses": (nil, { _ in false }),
        "port": (nil, { _ in false }),
        "cluster_name": (nil, { _ in false }),
        "wal_level": ("replica", { ["hot_standby", "replica", "logical"].contains($0.lowercased()) }),
        "hot_standby": ("on", { boolValue($0) == true }),
        "max_connections": ("100", { integer($0, atLeast: 25) }),
        "max_wal_senders": ("10", { integer($0, atLeast: 3) }),
        "wal_keep_segments": (nil, { integer($0, atLeast: 1) && integer($0, atMost: 134_217_727) }),
        "wal_keep_size": ("128MB", { megabytes($0).map { $0 >= 16 } ?? false }),
        "max_prepared_transactions": ("0", { integer($0, atLeast: 0) }),
        "max_locks_per_transaction": ("64", { integer($0, atLeast: 32) }),
        "track_commit_timestamp": ("off", { boolValue($0) != nil }),
        "max_replication_slots": ("10", { integer($0, atLeast: 4) }),
        "max_worker_processes": ("8", { integer($0, atLeast: 2) }),
        "wal_log_hints": ("on", { boolValue($0) == true }),
    ]

    /// Parameters the agent sets itself (its own connection, the files it manages, the standby's
    /// upstream): never taken from the cluster's configuration.
    public static let agentManaged: Set<String> = [
        "unix_socket_directories", "data_directory", "config_file", "hba_file", "ident_file", "external_pid_file",
        "primary_conninfo", "primary_slot_name", "recovery_target_timeline", "include", "include_if_exists",
        "include_dir",
    ]

    /// Recovery targets and promotion triggers: on a standby, each would end recovery (promote it)
    /// without the leader key. Never taken from the cluster's configuration; the agent's recovery
    /// file also clears the targets.
    public static let recoveryControl: Set<String> = [
        "recovery_target", "recovery_target_name", "recovery_target_time", "recovery_target_xid",
        "recovery_target_lsn", "recovery_target_inclusive", "recovery_target_action", "promote_trigger_file",
        "trigger_file", "standby_mode",
    ]

    /// The cluster's `postgresql.parameters` as text values, and what was refused.
    public static func fromCluster(_ document: [String: JSONValue]) -> (
        parameters: [String: String], refused: [Refusal]
    ) {
        var parameters: [String: String] = [:]
        var refused: [Refusal] = []
        for (rawName, value) in document.sorted(by: { $0.key < $1.key }) {
            let name = rawName.lowercased()
            guard isValidName(rawName) else {
                let shown = PrintableText.of(Array(rawName.utf8), limit: 80)
                refused.append(Refusal(name: shown, reason: "not a parameter name"))
                continue
            }
            if agentManaged.contains(name) {
                refused.append(Refusal(name: name, reason: "set by each agent from its own configuration"))
                continue
            }
            if recoveryControl.contains(name) {
                refused.append(
                    Refusal(name: name, reason: "would let a standby promote itself without the leader key"))
                continue
            }
            if case .null = value { continue }
            guard let text = text(of: value) else {
                refused.append(
                    Refusal(name: name, reason: "expected a string, number or boolean without control characters"))
                continue
            }
            if let rule = clusterWide[name], !rule.isValid(text) {
                let shown = PrintableText.of(Array(text.utf8), limit: 40)
                let reason =
                    rule.default.map { "'\(shown)' is not allowed here (the default \($0) stays)" }
                    ?? "set by each agent from its own configuration"
                refused.append(Refusal(name: name, reason: reason))
                continue
            }
            parameters[name] = text
        }
        return (parameters, refused)
    }

    /// What is written for PostgreSQL: `defaults`, then `cluster`, then `local` (names in
    /// `clusterWide` only from `defaults` and `cluster`); `wal_keep_segments` becomes
    /// `wal_keep_size` (16 MB segments) as Patroni does for PostgreSQL 13 and later. Also returns
    /// the local names ignored.
    public static func effective(
        defaults: [String: String], cluster: [String: String], local: [String: String]
    ) -> (parameters: [String: String], ignoredLocal: [String]) {
        var parameters = defaults
        for (name, rule) in clusterWide {
            if let value = rule.default, parameters[name] == nil { parameters[name] = value }
        }
        var ignored: [String] = []
        for (name, value) in cluster { parameters[name] = value }
        for (rawName, value) in local {
            // GUC names are case-insensitive: `Work_Mem` here replaces the cluster's `work_mem`.
            let name = rawName.lowercased()
            if clusterWide[name] != nil {
                ignored.append(rawName)
                continue
            }
            parameters[name] = value
        }
        if let segments = parameters.removeValue(forKey: "wal_keep_segments"), cluster["wal_keep_size"] == nil,
            let count = Int(segments)
        {
            parameters["wal_keep_size"] = "\(count.multipliedReportingOverflow(by: 16).partialValue)MB"
        }
        if parameters["wal_level"]?.lowercased() == "hot_standby" { parameters["wal_level"] = "replica" }
        return (parameters, ignored.sorted())
    }

    /// A GUC name as postgresql.conf's lexer reads one: `[A-Za-z_][A-Za-z0-9_]*`, optionally
    /// `prefix.name` (an extension's), each part at most 63 bytes.
    public static func isValidName(_ name: String) -> Bool {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count) else { return false }
        return parts.allSatisfy { part in
            guard let first = part.utf8.first, part.utf8.count <= 63 else { return false }
            let letter = { (c: UInt8) in (c >= 0x61 && c <= 0x7A) || (c >= 0x41 && c <= 0x5A) || c == 0x5F }
            return letter(first) && part.utf8.allSatisfy { letter($0) || ($0 >= 0x30 && $0 <= 0x39) }
        }
    }

    /// A value as postgresql.conf text: booleans `on`/`off`, whole numbers without a fraction;
    /// nil for objects, arrays, non-finite numbers, control characters and texts over 8 KiB.
    public static func text(of value: JSONValue) -> String? {
        switch value {
        case .bool(let flag): return flag ? "on" : "off"
        case .number(let number):
            guard number.isFinite else { return nil }
            if number == number.rounded(), abs(number) < 9_007_199_254_740_992 { return String(Int64(number)) }
            return "\(number)"
        case .string(let text):
            guard text.utf8.count <= 8192,
                !text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
            else { return nil }
            return text
        default: return nil
        }
    }

    static func boolValue(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "on", "true", "yes", "1", "t", "y": return true
        case "off", "false", "no", "0", "f", "n": return false
        default: return nil
        }
    }

    static func integer(_ text: String, atLeast minimum: Int) -> Bool {
        guard let value = Int(text.trimmingSpaces) else { return false }
        return value >= minimum
    }

    static func integer(_ text: String, atMost maximum: Int) -> Bool {
        guard let value = Int(text.trimmingSpaces) else { return false }
        return value <= maximum
    }

    /// Why the `config` key's `postgresql.parameters` cannot be read at all (not a mapping), or
    /// nil: then the agent keeps the parameters it has rather than taking it for "none".
    public static func structureProblem(_ config: DynamicConfig) -> String? {
        guard let postgresql = config.document["postgresql"] else { return nil }
        guard case .object(let section) = postgresql else { return "postgresql: expected a mapping" }
        switch section["parameters"] {
        case nil, .null?, .object?: return nil
        default: return "postgresql.parameters: expected a mapping of parameter names to values"
        }
    }

    /// A size in MB (`128MB`, `1GB`, `16384kB`, a bare number of MB), nil when not one.
    static func megabytes(_ text: String) -> Int? {
        let trimmed = text.trimmingSpaces
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        guard let value = Int(digits) else { return nil }
        switch trimmed.dropFirst(digits.count).lowercased() {
        case "", "mb": return value
        case "gb": return value.multipliedReportingOverflow(by: 1024).overflow ? nil : value * 1024
        case "tb": return value.multipliedReportingOverflow(by: 1_048_576).overflow ? nil : value * 1_048_576
        case "kb": return value / 1024
        default: return nil
        }
    }
}

extension String {
    fileprivate var trimmingSpaces: Substring {
        let start = firstIndex { $0 != " " } ?? endIndex
        let end = lastIndex { $0 != " " }.map { index(after: $0) } ?? start
        return self[start..<max(start, end)]
    }
}
