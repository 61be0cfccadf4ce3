import BatonCore
import Foundation
import Testing

/// The leader's member slots (before: every inactive physical slot not named after a current
/// member was dropped — a backup tool's slot too — and `use_slots: false`, `nostream` and
/// `member_slots_ttl` were not read).
@Suite struct MemberSlotsTests {
    static let t0 = MonotonicInstant(sinceOrigin: .seconds(1000))

    static func member(_ name: String, _ tags: [String: JSONValue] = [:]) -> Member {
        Member(name: name, state: .running, role: .replica, tags: Tags(tags))
    }

    static func memory(_ members: [Member], retained: [String] = [], me: String, at time: MonotonicInstant = t0)
        -> MemberSlots.Memory
    {
        var memory = MemberSlots.Memory()
        memory.note(members: members, retained: retained, me: me, now: time)
        return memory
    }

    @Test func slotsForEveryOtherStreamingMember() {
        let members = [Self.member("node1"), Self.member("node-2"), Self.member("node3", ["nostream": .bool(true)])]
        let plan = MemberSlots.plan(
            me: "node1", members: members, existing: [:], memory: MemberSlots.Memory(), now: Self.t0,
            ttl: .seconds(1800), useSlots: true)
        #expect(plan.create == ["node_2"], "nostream members get no slot; the leader none for itself")
        #expect(plan.drop.isEmpty)
        #expect(plan.retain == ["node1", "node_2"], "the leader's own name too, as Patroni lists it")
    }

    /// replicatefrom (cascading): a member streaming from another member gets no slot on the
    /// leader (one it never uses would hold the leader's WAL for good); one naming the leader,
    /// itself or no member does. A slot it had before is kept for member_slots_ttl, then dropped.
    @Test func aCascadingMemberHasNoSlotOnTheLeader() {
        let members = [
            Self.member("node1"), Self.member("node2"), Self.member("node3", ["replicatefrom": .string("node2")]),
            Self.member("node4", ["replicatefrom": .string("node1")]),
            Self.member("node5", ["replicatefrom": .string("gone")]),
        ]
        let plan = MemberSlots.plan(
            me: "node1", members: members, existing: [:], memory: MemberSlots.Memory(), now: Self.t0,
            ttl: .seconds(1800), useSlots: true)
        #expect(plan.create == ["node2", "node4", "node5"])
        let before = Self.memory([Self.member("node1"), Self.member("node3")], me: "node1")
        var memory = before
        memory.note(members: members, retained: [], me: "node1", now: Self.t0 + .seconds(10))
        let within = MemberSlots.plan(
            me: "node1", members: members, existing: ["node3": false], memory: memory, now: Self.t0 + .seconds(100),
            ttl: .seconds(1800), useSlots: true)
        #expect(within.drop.isEmpty)
        let after = MemberSlots.plan(
            me: "node1", members: members, existing: ["node3": false], memory: memory, now: Self.t0 + .seconds(1900),
            ttl: .seconds(1800), useSlots: true)
        #expect(after.drop == ["node3"])
        #expect(MemberSlots.cascades("node3", tags: members[2].tags, members: members, leader: "node1"))
        #expect(!MemberSlots.cascades("node3", tags: members[2].tags, members: members, leader: "node2"))
    }

    /// A slot Baton never saw as a member's, nor created, is never dropped, however inactive.
    @Test func aForeignSlotIsNeverDropped() {
        let plan = MemberSlots.plan(
            me: "node1", members: [Self.member("node1")], existing: ["pgbackrest": false, "barman": false],
            memory: MemberSlots.Memory(), now: Self.t0, ttl: .zero, useSlots: true)
        #expect(plan.drop.isEmpty && plan.create.isEmpty)
    }

    /// Anyone who can write the status key can put a name in retain_slots: that keeps or
    /// creates a slot for the ttl, and never makes an existing foreign slot droppable.
    @Test func aHostileRetainSlotsCannotGetAForeignSlotDropped() {
        let hostile = ["pgbackrest", "Bad Name!", String(repeating: "x", count: 80)] + (0..<5000).map { "n\($0)" }
        let memory = Self.memory([Self.member("node1")], retained: hostile, me: "node1")
        #expect(memory.retained.count <= MemberSlots.Memory.maximumRetained)
        #expect(memory.retained["Bad Name!"] == nil)
        let later = MemberSlots.plan(
            me: "node1", members: [Self.member("node1")], existing: ["pgbackrest": false], memory: memory,
            now: Self.t0 + .seconds(4000), ttl: .seconds(1800), useSlots: true)
        #expect(later.drop.isEmpty, "\(later.drop)")
    }

    /// A member whose key is gone keeps its slot for member_slots_ttl, then it is dropped if
    /// inactive; an active one is never dropped.
    @Test func aGoneMembersSlotIsKeptForTheTTL() {
        let everyone = [Self.member("node1"), Self.member("node2"), Self.member("node3")]
        let memory = Self.memory(everyone, me: "node1")
        let existing = ["node2": false, "node3": true]
        let alone = [Self.member("node1")]
        let soon = MemberSlots.plan(
            me: "node1", members: alone, existing: existing, memory: memory, now: Self.t0 + .seconds(60),
            ttl: .seconds(1800), useSlots: true)
        #expect(soon.drop.isEmpty && soon.retain == ["node1", "node2", "node3"], "\(soon)")
        let later = MemberSlots.plan(
            me: "node1", members: alone, existing: existing, memory: memory, now: Self.t0 + .seconds(1801),
            ttl: .seconds(1800), useSlots: true)
        #expect(later.drop == ["node2"], "the active node3 slot stays: \(later)")
        #expect(later.retain == ["node1"])
    }

    /// A new leader keeps (and creates, as Patroni does) what the previous one retained, for the
    /// ttl from when it read them; one it created is its own to drop after the ttl.
    @Test func aNewLeaderKeepsWhatThePreviousOneRetained() {
        var memory = Self.memory([Self.member("node2")], retained: ["node3"], me: "node2")
        let first = MemberSlots.plan(
            me: "node2", members: [Self.member("node2")], existing: [:], memory: memory, now: Self.t0 + .seconds(10),
            ttl: .seconds(60), useSlots: true)
        #expect(first.create == ["node3"] && first.retain == ["node2", "node3"])
        memory.created.formUnion(first.create)
        // Read again later (still retained): the first reading counts.
        memory.note(members: [], retained: ["node3"], me: "node2", now: Self.t0 + .seconds(50))
        let after = MemberSlots.plan(
            me: "node2", members: [Self.member("node2")], existing: ["node3": false], memory: memory,
            now: Self.t0 + .seconds(61), ttl: .seconds(60), useSlots: true)
        #expect(after.drop == ["node3"])
    }

    /// use_slots: false creates none and drops the inactive slots Baton made or saw for members.
    @Test func withoutSlotsNoneIsKept() {
        let members = [Self.member("node1"), Self.member("node2")]
        let plan = MemberSlots.plan(
            me: "node1", members: members, existing: ["node2": false, "backup": false],
            memory: Self.memory(members, me: "node1"), now: Self.t0, ttl: .seconds(1800), useSlots: false)
        #expect(plan.create.isEmpty && plan.drop == ["node2"] && plan.retain.isEmpty)
    }

    @Test func memberSlotsTTLReadsPatronisDurations() {
        #expect(DynamicConfig().memberSlotsTTL == .seconds(1800))
        #expect(DynamicConfig(["member_slots_ttl": .string("30min")]).memberSlotsTTL == .seconds(1800))
        #expect(DynamicConfig(["member_slots_ttl": .string("2h")]).memberSlotsTTL == .seconds(7200))
        #expect(DynamicConfig(["member_slots_ttl": .number(0)]).memberSlotsTTL == .zero)
        // Longer than a year is a year, not the 30-minute default; unreadable keeps slots longest.
        #expect(DynamicConfig(["member_slots_ttl": .number(4e7)]).memberSlotsTTL == .seconds(31_536_000))
        #expect(DynamicConfig(["member_slots_ttl": .string("soon")]).memberSlotsTTL == .seconds(31_536_000))
        for hostile: JSONValue in [.string("soon"), .string("1e400h"), .string("NaNmin"), .number(-1), .string("5m")] {
            #expect(
                DynamicConfig(["member_slots_ttl": hostile]).validationErrors().contains {
                    $0.hasPrefix("member_slots_ttl")
                }, "\(hostile)")
        }
        #expect(
            DynamicConfig(["postgresql": .object(["use_slots": .string("maybe")])]).validationErrors().contains {
                $0.hasPrefix("postgresql.use_slots")
            })
        #expect(DynamicConfig(["postgresql": .object(["use_slots": .bool(false)])]).useSlots == false)
    }

    /// Patroni's slot_name_from_member_name: `-` and `.` as `_`, others as u + decimal code point.
    @Test func slotNamesArePatronis() {
        #expect(MemberSlots.slotName(forMember: "Node-1.dc2") == "node_1_dc2")
        #expect(MemberSlots.slotName(forMember: "db@site") == "dbu0064site")
        #expect(MemberSlots.slotName(forMember: "é") == "u0233")
        #expect(MemberSlots.slotName(forMember: String(repeating: "a", count: 80)).count == 63)
    }

    /// A status key with retain_slots or slots of another shape is still read (its optime).
    @Test func aStatusKeyWithStrangeFieldsIsStillRead() throws {
        let text = #"{"optime": 1234, "slots": "garbage", "retain_slots": {"a": 1}}"#
        let status = try JSONDecoder().decode(LeaderStatus.self, from: Data(text.utf8))
        #expect(status.optime == LSN(1234) && status.slots == nil && status.retainSlots == nil)
    }
}
