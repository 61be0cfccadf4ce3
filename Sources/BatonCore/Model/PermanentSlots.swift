/// A permanent replication slot from the `config` key's `slots` (Patroni's layout): kept on the
/// leader whoever leads, never dropped by Baton.
///
///     slots:
///       backup_tool: {type: physical}
///       cdc: {type: logical, database: app, plugin: pgoutput}
public struct PermanentSlot: Hashable, Sendable {
    public enum Kind: Hashable, Sendable {
        case physical
        case logical(database: String, plugin: String)
    }

    public let name: String
    public let kind: Kind

    public init(name: String, kind: Kind) {
        self.name = name
        self.kind = kind
    }

    public var isPhysical: Bool { kind == .physical }

    /// Reads `slots` as Patroni does: a null value is physical; without `type`, a slot naming
    /// both `database` and `plugin` is logical, else physical. Returns the slots and, for the
    /// rest, why each was refused.
    public static func parse(_ value: JSONValue?) -> (slots: [PermanentSlot], problems: [String]) {
        guard let value, value != .null else { return ([], []) }
        guard let entries = value.objectValue else {
            return ([], ["slots: expected a mapping of slot names to {type, database, plugin}, got \(value)"])
        }
        var slots: [PermanentSlot] = []
        var problems: [String] = []
        if entries.count > maximumSlotEntries {
            problems.append("slots: at most \(maximumSlotEntries) permanent slots, got \(entries.count)")
        }
        for (name, raw) in entries.sorted(by: { $0.key < $1.key }).prefix(maximumSlotEntries) {
            guard MemberSlots.isSlotName(name) else {
                problems.append(
                    "slots.\(name): a slot name is 1 to 63 lower-case letters, digits or underscores")
                continue
            }
            if raw == .null {
                slots.append(PermanentSlot(name: name, kind: .physical))
                continue
            }
            guard let fields = raw.objectValue else {
                problems.append(
                    "slots.\(name): expected {type: physical} or {type: logical, database, plugin}, got \(raw)")
                continue
            }
            // A slot for the other kind of cluster (`cluster_type: standby`): not kept here (Baton
            // runs no standby cluster yet).
            if let clusterType = fields["cluster_type"]?.stringValue, clusterType == "standby" { continue }
            let database = fields["database"]?.stringValue
            let plugin = fields["plugin"]?.stringValue
            let type = fields["type"]?.stringValue ?? (database != nil && plugin != nil ? "logical" : "physical")
            switch type {
            case "physical":
                slots.append(PermanentSlot(name: name, kind: .physical))
            case "logical":
                guard let database, !database.isEmpty, let plugin, !plugin.isEmpty else {
                    problems.append("slots.\(name): a logical slot needs database and plugin")
                    continue
                }
                slots.append(PermanentSlot(name: name, kind: .logical(database: database, plugin: plugin)))
            default:
                problems.append("slots.\(name).type: expected physical or logical, got \(fields["type"] ?? .null)")
            }
        }
        return (slots, problems)
    }
}

/// One entry of `ignore_slots` (Patroni's layout): a slot matching every field given is never
/// created, changed or dropped by Baton.
///
///     ignore_slots:
///       - {name: barman}
///       - {type: logical, plugin: wal2json}
public struct SlotMatcher: Hashable, Sendable {
    public var name: String?
    public var type: String?
    public var database: String?
    public var plugin: String?

    public init(name: String? = nil, type: String? = nil, database: String? = nil, plugin: String? = nil) {
        self.name = name
        self.type = type
        self.database = database
        self.plugin = plugin
    }

    /// Whether a slot with these attributes matches (a field not given matches anything).
    public func matches(name: String, type: String, database: String? = nil, plugin: String? = nil) -> Bool {
        (self.name == nil || self.name == name) && (self.type == nil || self.type == type)
            && (self.database == nil || self.database == database) && (self.plugin == nil || self.plugin == plugin)
    }

    /// Reads `ignore_slots`: a list of mappings with any of name, type, database, plugin.
    public static func parse(_ value: JSONValue?) -> (matchers: [SlotMatcher], problems: [String]) {
        guard let value, value != .null else { return ([], []) }
        guard case .array(let entries) = value else {
            return ([], ["ignore_slots: expected a list of {name, type, database, plugin}, got \(value)"])
        }
        var matchers: [SlotMatcher] = []
        var problems: [String] = []
        if entries.count > maximumSlotEntries {
            problems.append("ignore_slots: at most \(maximumSlotEntries) entries, got \(entries.count)")
        }
        // An empty mapping matches every slot, as in Patroni.
        for (index, entry) in entries.prefix(maximumSlotEntries).enumerated() {
            guard let fields = entry.objectValue else {
                problems.append(
                    "ignore_slots[\(index)]: expected a mapping with name, type, database or plugin, got \(entry)")
                continue
            }
            let known: Set = ["name", "type", "database", "plugin"]
            if let unknown = fields.keys.sorted().first(where: { !known.contains($0) }) {
                problems.append("ignore_slots[\(index)].\(unknown): not a field (name, type, database, plugin)")
                continue
            }
            var matcher = SlotMatcher()
            var bad = false
            for (key, raw) in fields {
                guard let text = raw.stringValue else {
                    problems.append("ignore_slots[\(index)].\(key): expected a string, got \(raw)")
                    bad = true
                    continue
                }
                switch key {
                case "name": matcher.name = text
                case "type":
                    guard text == "physical" || text == "logical" else {
                        problems.append("ignore_slots[\(index)].type: expected physical or logical, got \(text)")
                        bad = true
                        continue
                    }
                    matcher.type = text
                case "database": matcher.database = text
                default: matcher.plugin = text
                }
            }
            if !bad { matchers.append(matcher) }
        }
        return (matchers, problems)
    }
}

extension DynamicConfig {
    /// The permanent slots' setting as Patroni picks it: the first of
    /// `permanent_replication_slots`, `permanent_slots` and `slots` that is set and not empty.
    var permanentSlotsValue: JSONValue? {
        for key in ["permanent_replication_slots", "permanent_slots", "slots"] {
            guard let value = document[key], value != .null else { continue }
            if let object = value.objectValue, object.isEmpty { continue }
            return value
        }
        return nil
    }

    /// The permanent slots that parse; an entry that does not is skipped, as Patroni skips it
    /// (`slotProblems` names it, and `PATCH /config` and the agent's file refuse it).
    public var permanentSlots: [PermanentSlot] { PermanentSlot.parse(permanentSlotsValue).slots }

    /// Every name `slots` holds, whether its entry is usable or not (at most the entry cap).
    public var permanentSlotNames: Set<String> {
        Set((permanentSlotsValue?.objectValue?.keys).map { Array($0.sorted().prefix(maximumSlotEntries)) } ?? [])
    }

    /// `ignore_slots`: the matchers that parse (as `permanentSlots`).
    public var ignoreSlots: [SlotMatcher] { SlotMatcher.parse(document["ignore_slots"]).matchers }

    /// What is wrong with `slots`/`ignore_slots`. Not among `validationErrors`: a config key
    /// written by Patroni with an entry Patroni skips stays in force with that entry skipped;
    /// what Baton is given (`PATCH /config`, the agent's file) is refused instead.
    public func slotProblems() -> [String] {
        PermanentSlot.parse(permanentSlotsValue).problems + SlotMatcher.parse(document["ignore_slots"]).problems
    }

    /// Whether `ignore_slots` covers the physical slot `name`.
    public func ignoresPhysicalSlot(_ name: String) -> Bool {
        ignoreSlots.contains { $0.matches(name: name, type: "physical") }
    }
}

/// A cap on `slots` and `ignore_slots` entries: a hostile config key cannot make each cycle's
/// slot work unbounded (PostgreSQL's max_replication_slots is far lower in practice).
let maximumSlotEntries = 1000

/// On a replica: copies of the permanent physical slots, advanced to the positions the leader
/// publishes (the status key's `slots`), so that a promotion finds them in place and a consumer
/// (pg_receivewal, a backup tool) goes on from the new primary where it stopped. As Patroni, a
/// copy only moves forward and only while inactive; a member that may not become primary
/// (`nofailover`) keeps none.
public enum PermanentSlotCopies {
    public struct Plan: Equatable, Sendable {
        public var create: [String] = []
        /// Slot name → the leader's position to advance it to.
        public var advance: [String: LSN] = [:]
        /// Copies this agent made that are no longer wanted (taken out of `slots`, `use_slots`
        /// off, the member tagged `nofailover`), inactive.
        public var drop: [String] = []

        public init(create: [String] = [], advance: [String: LSN] = [:], drop: [String] = []) {
            self.create = create
            self.advance = advance
            self.drop = drop
        }
    }

    /// - Parameters:
    ///   - existing: the physical slots on this replica.
    ///   - leaderPositions: the status key's `slots`.
    ///   - copies: the slots this agent created as copies (only those are ever dropped).
    public static func plan(
        me: String, members: [Member], tags: Tags, useSlots: Bool, permanent: [String], ignored: (String) -> Bool,
        existing: [String: PhysicalSlot], leaderPositions: [String: LSN], copies: Set<String>, paused: Bool = false
    ) -> Plan {
        // Only this member's own name is left out: a copy named after another member (even a
        // member key written to collide with it) stays, as in Patroni.
        let own = MemberSlots.slotName(forMember: me)
        let wanted: Set<String> =
            useSlots && !tags.noFailover ? Set(permanent).subtracting([own]).filter { !ignored($0) } : []
        var plan = Plan()
        plan.create = wanted.subtracting(existing.keys).sorted()
        for name in wanted {
            guard let slot = existing[name], !slot.active, let restart = slot.restartLSN,
                let target = leaderPositions[name], target > restart
            else { continue }
            plan.advance[name] = target
        }
        // Paused: nothing is dropped (as Patroni).
        plan.drop =
            paused
            ? []
            : copies.subtracting(wanted).filter { name in
                existing[name].map { !$0.active } ?? false && !ignored(name)
            }
            .sorted()
        return plan
    }
}
