/// The leader's physical replication slots for its members: which to create, which to drop, and
/// which to name in the status key (Patroni 4's `retain_slots` and `slots`), so that a new leader
/// keeps them.
///
/// Only slots Baton has proven are its own are ever dropped: a slot named after a member this
/// leader saw in the cluster, or one it created, inactive, whose member has been gone for
/// `member_slots_ttl`. A name read from the status key (which anyone with etcd access can write)
/// keeps a slot for the ttl but never makes one droppable: a backup tool's or an operator's slot
/// is never touched (before, every inactive physical slot not named after a current member was
/// dropped at once).
public enum MemberSlots {
    /// A member's slot name as Patroni derives it (`slot_name_from_member_name`): lower case,
    /// `-` and `.` as `_`, any other character outside `[a-z0-9_]` as `u` and its code point in
    /// four or more decimal digits, at most 63 bytes.
    public static func slotName(forMember member: String) -> String {
        var name = ""
        for scalar in member.lowercased().unicodeScalars {
            if (scalar >= "a" && scalar <= "z") || (scalar >= "0" && scalar <= "9") || scalar == "_" {
                name.unicodeScalars.append(scalar)
            } else if scalar == "-" || scalar == "." {
                name += "_"
            } else {
                let digits = String(scalar.value)
                name += "u" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits
            }
        }
        if name.isEmpty { name = "member" }
        return String(name.prefix(63))
    }

    /// Whether `member` is tagged to stream from another member than the leader (`replicatefrom`
    /// naming an existing member). Such a member uses no slot, anywhere: its upstream keeps WAL
    /// for it only as `wal_keep_size` allows, and the leader keeps none (a slot it never uses
    /// would hold the leader's WAL for good).
    public static func cascades(_ name: String, tags: Tags, members: [Member], leader: String?) -> Bool {
        guard let upstream = tags.replicateFrom, upstream != name, upstream != leader else { return false }
        return members.contains { $0.name == upstream }
    }

    /// The leader's permanent slots named after a member that streams from another member:
    /// inactive here (the member uses its upstream's copy), so advanced to the member's own
    /// position as it reports it, as Patroni does; else they would hold the leader's WAL for good.
    /// Only forward, only inactive slots that reserved WAL.
    public static func permanentAdvances(
        permanent: [String], members: [Member], existing: [String: PhysicalSlot]
    ) -> [String: LSN] {
        var advances: [String: LSN] = [:]
        let wanted = Set(permanent)
        for member in members {
            let name = slotName(forMember: member.name)
            guard wanted.contains(name), member.tags.replicateFrom != nil, let slot = existing[name], !slot.active,
                let restart = slot.restartLSN, let position = member.xlogLocation, position > restart
            else { continue }
            advances[name] = position
        }
        return advances
    }

    /// Whether `name` could be a member slot name at all (what `retain_slots` may hold).
    public static func isSlotName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 63
            && name.unicodeScalars.allSatisfy { ($0 >= "a" && $0 <= "z") || ($0 >= "0" && $0 <= "9") || $0 == "_" }
    }

    /// What the leader remembers between cycles (reset when it loses the leader key).
    public struct Memory: Equatable, Sendable {
        /// Slot name → when this agent, as leader, last saw its member (proof the slot is a
        /// member's), and when that member last wanted a slot on this leader.
        public var seen: [String: MonotonicInstant] = [:]
        public var wanted: [String: MonotonicInstant] = [:]
        /// Slot name → when this agent, as leader, first read it in the status key's
        /// `retain_slots` (a previous leader's members).
        public var retained: [String: MonotonicInstant] = [:]
        /// Slots this agent created as leader.
        public var created: Set<String> = []

        public init() {}

        /// At most this many names are taken from `retain_slots` (a hostile status key cannot
        /// grow the memory without bound).
        public static let maximumRetained = 1000

        /// Records the members seen now, and the names a previous leader retained.
        public mutating func note(members: [Member], retained names: [String], me: String, now: MonotonicInstant) {
            for member in members where member.name != me {
                let name = slotName(forMember: member.name)
                seen[name] = now
                // A member that wants no slot here (nostream, or cascading from another member)
                // has its slot kept only for member_slots_ttl after it last wanted one.
                if !member.tags.noStream, !cascades(member.name, tags: member.tags, members: members, leader: me) {
                    wanted[name] = now
                }
            }
            for name in names.prefix(Self.maximumRetained) where isSlotName(name) && retained[name] == nil {
                retained[name] = now
            }
        }
    }

    public struct Plan: Equatable, Sendable {
        public var create: [String]
        public var drop: [String]
        /// Member slots kept (and this leader's own name, as Patroni lists it): `retain_slots`.
        public var retain: [String]
        /// The permanent physical slots kept (`slots` in the config key): their positions go in
        /// the status key's `slots`.
        public var permanent: [String] = []
    }

    /// - Parameters:
    ///   - members: the cluster's members now, with their tags.
    ///   - existing: the physical slots on this primary: name → active.
    ///   - permanent: the permanent physical slots' names (`slots` in the config key). One named
    ///     after this leader or a member is not one (the member's slot is meant; Patroni skips it
    ///     too).
    ///   - ignored: whether `ignore_slots` covers a physical slot: never created, never dropped.
    public static func plan(
        me: String, members: [Member], existing: [String: Bool], memory: Memory, now: MonotonicInstant,
        ttl: Duration, useSlots: Bool, permanent: [String] = [], ignored: (String) -> Bool = { _ in false },
        paused: Bool = false
    ) -> Plan {
        var plan = unpausedPlan(
            me: me, members: members, existing: existing, memory: memory, now: now, ttl: ttl, useSlots: useSlots,
            permanent: permanent, ignored: ignored)
        // Paused, Baton drops no slot (as Patroni): the operator is working on the cluster.
        if paused { plan.drop = [] }
        return plan
    }

    private static func unpausedPlan(
        me: String, members: [Member], existing: [String: Bool], memory: Memory, now: MonotonicInstant,
        ttl: Duration, useSlots: Bool, permanent: [String], ignored: (String) -> Bool
    ) -> Plan {
        let mine = slotName(forMember: me)
        guard useSlots else {
            // Without slots: the inactive ones Baton made or saw for members go; nothing is kept.
            let droppable = Set(memory.seen.keys).union(memory.created)
            let drop = existing.filter { !$0.value && droppable.contains($0.key) && !ignored($0.key) }.keys.sorted()
            return Plan(create: [], drop: drop, retain: [])
        }
        let wanted = Set(
            members.filter {
                $0.name != me && !$0.tags.noStream && !cascades($0.name, tags: $0.tags, members: members, leader: me)
            }
            .map { slotName(forMember: $0.name) })
        // A permanent slot named after a member that wants one here is that member's slot; one
        // named after a member that streams from another (Patroni's "A(B: active, C: inactive)")
        // stays permanent.
        let permanentNames = Set(permanent).subtracting(wanted).subtracting([mine]).filter { !ignored($0) }
        let recent = { (times: [String: MonotonicInstant]) in
            Set(times.filter { $0.key != mine && now - $0.value < ttl }.keys)
        }
        let memberKeep = wanted.union(recent(memory.wanted)).union(recent(memory.retained))
        let keep = memberKeep.union(permanentNames)
        // Missing ones are created, those a previous leader retained too (as Patroni does): a
        // member coming back finds its slot on the new leader. Permanent slots too.
        // `ignore_slots` keeps Baton from dropping (and from making permanent) a slot, never from
        // creating a member's: its standby names it in primary_slot_name (as in Patroni).
        let create = wanted.union(recent(memory.retained)).union(permanentNames).subtracting(existing.keys).sorted()
        let droppable = Set(memory.seen.keys).union(memory.created)
        let drop = existing.filter { name, active in
            !active && droppable.contains(name) && !keep.contains(name) && !ignored(name)
        }
        .keys.sorted()
        let retain = memberKeep.intersection(Set(existing.keys).union(create)).union([mine]).sorted()
        return Plan(create: create, drop: drop, retain: retain, permanent: permanentNames.sorted())
    }
}
