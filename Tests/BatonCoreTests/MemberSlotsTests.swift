import BatonCore
import Testing

/// The leader's member slots (before: every inactive physical slot not named after a current
/// member was dropped — a backup tool's slot too — and `use_slots: false`, `nostream` and
/// `member_slots_ttl` were not read).
@Suite struct MemberSlotsTests {
    static let t0 = MonotonicInstant(sinceOrigin: .seconds(1000))

    static func member(_ name: String, _ tags: [String: JSONValue] = [:]) -> Member {
        Member(name: name, state: .running, role: .replica, tags: Tags(tags))
    }

    @Test func slotsForEveryOtherStreamingMember() {
        let members = [Self.member("node1"), Self.member("node-2"), Self.member("node3", ["nostream": .bool(true)])]
        let plan = MemberSlots.plan(
            me: "node1", members: members, existing: [:], lastSeen: [:], now: Self.t0, ttl: .seconds(1800),
            useSlots: true)
        #expect(plan.create == ["node_2"], "nostream members get no slot; the leader none for itself")
        #expect(plan.drop.isEmpty && plan.retain == ["node_2"])
    }

    /// A slot Baton never saw as a member's is never dropped, however inactive.
    @Test func aForeignSlotIsNeverDropped() {
        let plan = MemberSlots.plan(
            me: "node1", members: [Self.member("node1")], existing: ["pgbackrest": false, "barman": false],
            lastSeen: [:], now: Self.t0, ttl: .zero, useSlots: true)
        #expect(plan.drop.isEmpty && plan.create.isEmpty)
    }

    /// A member whose key is gone keeps its slot for member_slots_ttl, then it is dropped if
    /// inactive; an active one is never dropped.
    @Test func aGoneMembersSlotIsKeptForTheTTL() {
        var seen: [String: MonotonicInstant] = [:]
        let everyone = [Self.member("node1"), Self.member("node2"), Self.member("node3")]
        MemberSlots.noteSeen(&seen, members: everyone, retained: [], me: "node1", now: Self.t0)
        let existing = ["node2": false, "node3": true]
        let alone = [Self.member("node1")]
        let soon = MemberSlots.plan(
            me: "node1", members: alone, existing: existing, lastSeen: seen, now: Self.t0 + .seconds(60),
            ttl: .seconds(1800), useSlots: true)
        #expect(soon.drop.isEmpty && soon.retain == ["node2", "node3"], "\(soon)")
        let later = MemberSlots.plan(
            me: "node1", members: alone, existing: existing, lastSeen: seen, now: Self.t0 + .seconds(1801),
            ttl: .seconds(1800), useSlots: true)
        #expect(later.drop == ["node2"], "the active node3 slot stays: \(later)")
        #expect(later.retain.isEmpty)
    }

    /// A new leader keeps the slots the previous one retained, for the ttl from when it read them.
    @Test func aNewLeaderKeepsWhatThePreviousOneRetained() {
        var seen: [String: MonotonicInstant] = [:]
        MemberSlots.noteSeen(&seen, members: [Self.member("node2")], retained: ["node3"], me: "node2", now: Self.t0)
        let plan = MemberSlots.plan(
            me: "node2", members: [Self.member("node2")], existing: ["node3": false], lastSeen: seen,
            now: Self.t0 + .seconds(10), ttl: .seconds(60), useSlots: true)
        #expect(plan.drop.isEmpty && plan.retain == ["node3"])
        // Seen again later (it is still retained): the first reading counts, not the latest.
        MemberSlots.noteSeen(&seen, members: [], retained: ["node3"], me: "node2", now: Self.t0 + .seconds(50))
        let after = MemberSlots.plan(
            me: "node2", members: [Self.member("node2")], existing: ["node3": false], lastSeen: seen,
            now: Self.t0 + .seconds(61), ttl: .seconds(60), useSlots: true)
        #expect(after.drop == ["node3"])
    }

    /// use_slots: false creates none and drops the inactive slots Baton made for members.
    @Test func withoutSlotsNoneIsKept() {
        var seen: [String: MonotonicInstant] = [:]
        let members = [Self.member("node1"), Self.member("node2")]
        MemberSlots.noteSeen(&seen, members: members, retained: [], me: "node1", now: Self.t0)
        let plan = MemberSlots.plan(
            me: "node1", members: members, existing: ["node2": false, "backup": false], lastSeen: seen, now: Self.t0,
            ttl: .seconds(1800), useSlots: false)
        #expect(plan.create.isEmpty && plan.drop == ["node2"] && plan.retain.isEmpty)
    }

    @Test func memberSlotsTTLReadsPatronisDurations() {
        #expect(DynamicConfig().memberSlotsTTL == .seconds(1800))
        #expect(DynamicConfig(["member_slots_ttl": .string("30min")]).memberSlotsTTL == .seconds(1800))
        #expect(DynamicConfig(["member_slots_ttl": .string("2h")]).memberSlotsTTL == .seconds(7200))
        #expect(DynamicConfig(["member_slots_ttl": .number(0)]).memberSlotsTTL == .zero)
        #expect(
            DynamicConfig(["member_slots_ttl": .string("soon")]).validationErrors().contains {
                $0.hasPrefix("member_slots_ttl")
            })
        #expect(
            DynamicConfig(["postgresql": .object(["use_slots": .string("maybe")])]).validationErrors().contains {
                $0.hasPrefix("postgresql.use_slots")
            })
        #expect(DynamicConfig(["postgresql": .object(["use_slots": .bool(false)])]).useSlots == false)
    }

    @Test func slotNamesArePatronis() {
        #expect(MemberSlots.slotName(forMember: "Node-1.dc2") == "node_1_dc2")
        #expect(MemberSlots.slotName(forMember: String(repeating: "a", count: 80)).count == 63)
    }
}
