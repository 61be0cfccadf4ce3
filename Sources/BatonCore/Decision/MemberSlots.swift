/// The leader's physical replication slots for its members: which to create, which to drop, and
/// which to name in the status key's `retain_slots` (Patroni 4), so that a new leader keeps them.
///
/// Only slots Baton has proven are its own are ever dropped: a slot named after a member this
/// leader saw in the cluster (or found in `retain_slots`), inactive, whose member has been gone
/// for `member_slots_ttl`. A slot of a backup tool or an operator is never touched (before, every
/// inactive physical slot not named after a current member was dropped).
public enum MemberSlots {
    /// A member's slot name: lower case, anything but `[a-z0-9_]` as `_`, at most 63 bytes
    /// (Patroni's `slot_name_from_member_name`).
    public static func slotName(forMember member: String) -> String {
        var name = ""
        for scalar in member.lowercased().unicodeScalars {
            let ok = (scalar >= "a" && scalar <= "z") || (scalar >= "0" && scalar <= "9") || scalar == "_"
            name.unicodeScalars.append(ok ? scalar : "_")
        }
        if name.isEmpty { name = "member" }
        return String(name.prefix(63))
    }

    public struct Plan: Equatable, Sendable {
        public var create: [String]
        public var drop: [String]
        /// Member slots kept: the members' and those of members gone for less than the ttl.
        public var retain: [String]
    }

    /// - Parameters:
    ///   - members: the cluster's members now, with their tags.
    ///   - existing: the physical slots on this primary: name → active.
    ///   - lastSeen: member slot name → when this leader last saw its member (or found it in
    ///     `retain_slots`); the caller keeps it up to date with `noteSeen`.
    public static func plan(
        me: String, members: [Member], existing: [String: Bool], lastSeen: [String: MonotonicInstant],
        now: MonotonicInstant, ttl: Duration, useSlots: Bool
    ) -> Plan {
        let wanted: Set<String> =
            useSlots
            ? Set(members.filter { $0.name != me && !$0.tags.noStream }.map { slotName(forMember: $0.name) })
            : []
        let mine = slotName(forMember: me)
        let kept: Set<String> =
            useSlots
            ? Set(lastSeen.filter { $0.key != mine && now - $0.value < ttl }.keys)
            : []
        let create = wanted.subtracting(existing.keys).sorted()
        let drop = existing.filter { name, active in
            !active && !wanted.contains(name) && !kept.contains(name) && lastSeen[name] != nil
        }.keys.sorted()
        let retain = wanted.union(kept.intersection(existing.keys)).sorted()
        return Plan(create: create, drop: drop, retain: retain)
    }

    /// Records that the members (and the slots a previous leader retained) were seen now.
    public static func noteSeen(
        _ lastSeen: inout [String: MonotonicInstant], members: [Member], retained: [String], me: String,
        now: MonotonicInstant
    ) {
        for member in members where member.name != me { lastSeen[slotName(forMember: member.name)] = now }
        // Retained by the previous leader: counted from when this one first read them.
        for name in retained where lastSeen[name] == nil { lastSeen[name] = now }
    }
}
