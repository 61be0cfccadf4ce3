/// The `standby_cluster` section of the `config` key (Patroni's layout): this cluster follows
/// another one. Its leader — the standby leader — holds the leader key but never promotes: it
/// streams from `host:port` (the other cluster's primary, or a proxy in front of it), and the
/// other members stream from it. Taking the section out (`baton promote-cluster`) promotes it;
/// putting it into a primary cluster's key (`baton demote-cluster`) turns that cluster's primary
/// into a standby leader.
///
///     standby_cluster:
///       host: 10.0.0.5
///       port: 5432
///       primary_slot_name: dr_site
///       restore_command: pgbackrest --stanza=main archive-get %f "%p"
///       recovery_min_apply_delay: 5min
public struct StandbyCluster: Hashable, Sendable {
    public var host: String?
    public var port: Int
    public var primarySlotName: String?
    public var restoreCommand: String?
    public var archiveCleanupCommand: String?
    public var recoveryMinApplyDelay: String?
    public var createReplicaMethods: [String]

    public init(
        host: String?, port: Int = 5432, primarySlotName: String? = nil, restoreCommand: String? = nil,
        archiveCleanupCommand: String? = nil, recoveryMinApplyDelay: String? = nil, createReplicaMethods: [String] = []
    ) {
        self.host = host
        self.port = port
        self.primarySlotName = primarySlotName
        self.restoreCommand = restoreCommand
        self.archiveCleanupCommand = archiveCleanupCommand
        self.recoveryMinApplyDelay = recoveryMinApplyDelay
        self.createReplicaMethods = createReplicaMethods
    }

    /// Where the standby leader streams from (and a new standby cluster clones from). A standby
    /// cluster that only restores from an archive (`restore_command` without `host`) has a source
    /// without a server (`ReplicationSource.withoutServer`); one with neither has none.
    public var source: ReplicationSource? {
        let recovery = RemoteRecovery(
            slotName: primarySlotName, restoreCommand: restoreCommand, archiveCleanupCommand: archiveCleanupCommand,
            recoveryMinApplyDelay: recoveryMinApplyDelay, createReplicaMethods: createReplicaMethods)
        guard let host else {
            return restoreCommand == nil ? nil : .withoutServer("standby_cluster archive", remote: recovery)
        }
        // The name says what is followed: a changed host, port or slot is followed anew.
        let name = "standby_cluster \(host):\(port)" + (primarySlotName.map { " slot \($0)" } ?? "")
        return ReplicationSource(member: name, host: host, port: port, remote: recovery)
    }

    /// Reads `standby_cluster` as Patroni does: a mapping naming `host`, `port` or
    /// `restore_command` makes a standby cluster; null, `{}` or one naming none of them does not.
    /// Returns the section and what is wrong with it (a value of the wrong type or shape).
    public static func parse(_ value: JSONValue?) -> (standby: StandbyCluster?, problems: [String]) {
        guard let value, value != .null else { return (nil, []) }
        guard let fields = value.objectValue else {
            return (nil, ["standby_cluster: expected a mapping with host, port, primary_slot_name, …, got \(value)"])
        }
        var problems: [String] = []
        func text(_ key: String, _ check: (String) -> Bool = { _ in true }, _ expected: String) -> String? {
            guard let raw = fields[key], raw != .null else { return nil }
            guard let string = raw.stringValue ?? raw.intValue.map(String.init), !string.isEmpty, check(string) else {
                problems.append("standby_cluster.\(key): expected \(expected), got \(raw)")
                return nil
            }
            return string
        }
        let host = text(
            "host",
            { $0.count <= 255 && $0.unicodeScalars.allSatisfy { Self.hostCharacters.contains($0) } },
            "a host name or address (several separated by commas)")
        var port = 5432
        if let raw = fields["port"], raw != .null {
            if let number = raw.intValue ?? raw.stringValue.flatMap({ Int($0) }), (1...65535).contains(number) {
                port = number
            } else {
                problems.append("standby_cluster.port: expected a port number (1-65535), got \(raw)")
            }
        }
        let slot = text("primary_slot_name", MemberSlots.isSlotName, "a slot name (lower-case letters, digits, _)")
        let oneLine = { (text: String) in !text.unicodeScalars.contains { $0.properties.generalCategory == .control } }
        let restore = text("restore_command", oneLine, "a command on one line, without control characters")
        let cleanup = text("archive_cleanup_command", oneLine, "a command on one line, without control characters")
        let delay = text("recovery_min_apply_delay", Self.isDelay, "a delay such as 0, 300000, 5min or 1h")
        var methods: [String] = []
        if let raw = fields["create_replica_methods"], raw != .null {
            if case .array(let entries) = raw, entries.count <= 16,
                entries.allSatisfy({ $0.stringValue.map(Self.isMethodName) ?? false })
            {
                methods = entries.compactMap(\.stringValue)
            } else {
                problems.append("standby_cluster.create_replica_methods: expected a list of method names, got \(raw)")
            }
        }
        let named = ["host", "port", "restore_command"].contains { key in
            fields[key].map { $0 != .null && $0 != .string("") } ?? false
        }
        guard named else { return (nil, problems) }
        let standby = StandbyCluster(
            host: host, port: port, primarySlotName: slot, restoreCommand: restore, archiveCleanupCommand: cleanup,
            recoveryMinApplyDelay: delay, createReplicaMethods: methods)
        // A port alone names nothing to follow, and would leave a primary cluster's primary
        // writable under a standby_cluster section: refused rather than half-applied.
        if host == nil, restore == nil, problems.isEmpty {
            problems.append(
                "standby_cluster: name host (and port) of the cluster to follow, or restore_command to follow its archive"
            )
        }
        return (standby, problems)
    }

    /// A replica method's name as the agent's file takes it (`create_replica_methods`,
    /// `postgresql.NAME`): 1-63 lower-case letters, digits, `_`, `-`.
    public static func isMethodName(_ name: String) -> Bool {
        !name.isEmpty && name.unicodeScalars.count <= 63
            && name.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-"
            }
    }

    static let hostCharacters = Set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:,[]".unicodeScalars)

    /// `0`, `300000` (ms), `5s`, `5min`, `1h`, `1d`, with an optional space before the unit.
    static func isDelay(_ text: String) -> Bool {
        let trimmed = String(text.filter { $0 != " " })
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, digits.count <= 12 else { return false }
        return ["", "ms", "s", "min", "h", "d"].contains(String(trimmed.dropFirst(digits.count)))
    }
}

/// What a standby leader's recovery settings take from `standby_cluster` instead of the member's
/// own: the slot on the other cluster's primary (none unless named), and its archive commands.
public struct RemoteRecovery: Hashable, Sendable {
    public var slotName: String?
    public var restoreCommand: String?
    public var archiveCleanupCommand: String?
    public var recoveryMinApplyDelay: String?
    /// `standby_cluster.create_replica_methods`: the methods (defined in the agent's file) that
    /// make the standby leader; empty: the member's own `create_replica_methods`.
    public var createReplicaMethods: [String]

    public init(
        slotName: String? = nil, restoreCommand: String? = nil, archiveCleanupCommand: String? = nil,
        recoveryMinApplyDelay: String? = nil, createReplicaMethods: [String] = []
    ) {
        self.slotName = slotName
        self.restoreCommand = restoreCommand
        self.archiveCleanupCommand = archiveCleanupCommand
        self.recoveryMinApplyDelay = recoveryMinApplyDelay
        self.createReplicaMethods = createReplicaMethods
    }
}

extension DynamicConfig {
    /// `standby_cluster` when this is a standby cluster (see `StandbyCluster.parse`); a section
    /// with problems is named by `validationErrors`, and such a config key is not put in force.
    public var standbyCluster: StandbyCluster? { StandbyCluster.parse(document["standby_cluster"]).standby }

    func standbyClusterProblems() -> [String] { StandbyCluster.parse(document["standby_cluster"]).problems }
}
