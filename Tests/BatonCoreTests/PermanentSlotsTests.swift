import BatonCore
import Foundation
import Testing

/// Permanent slots (`slots`) and `ignore_slots` in the config key, as Patroni reads them, and
/// what the leader's slot plan does with them.
@Suite struct PermanentSlotsTests {
    static let t0 = MonotonicInstant(sinceOrigin: .seconds(1000))

    static func config(_ json: String) throws -> DynamicConfig {
        try JSONDecoder().decode(DynamicConfig.self, from: Data(json.utf8))
    }

    @Test func slotsReadAsPatroniReadsThem() throws {
        let config = try Self.config(
            """
            {"slots": {"backup": null, "archiver": {"type": "physical"}, "cdc": {"database": "app", "plugin": "pgoutput"},
                       "typed": {"type": "logical", "database": "db", "plugin": "wal2json"}}}
            """)
        #expect(config.validationErrors().isEmpty)
        #expect(
            config.permanentSlots == [
                PermanentSlot(name: "archiver", kind: .physical), PermanentSlot(name: "backup", kind: .physical),
                PermanentSlot(name: "cdc", kind: .logical(database: "app", plugin: "pgoutput")),
                PermanentSlot(name: "typed", kind: .logical(database: "db", plugin: "wal2json")),
            ])
    }

    @Test func badSlotsAreNamedAndRefused() throws {
        let config = try Self.config(
            """
            {"slots": {"Bad-Name": null, "half": {"type": "logical", "database": "app"}, "odd": {"type": "virtual"},
                       "list": [1], "ok": null},
             "ignore_slots": [{"name": "x"}, {}, {"nmae": "typo"}, {"type": "both"}, {"plugin": 3}, "barman"]}
            """)
        let errors = config.slotProblems()
        for fragment in [
            "slots.Bad-Name", "slots.half: a logical slot needs database and plugin", "slots.odd.type",
            "slots.list", "ignore_slots[2].nmae", "ignore_slots[3].type", "ignore_slots[4].plugin", "ignore_slots[5]",
        ] {
            #expect(errors.contains { $0.hasPrefix(fragment) }, "no error for \(fragment): \(errors)")
        }
        // Skipped entry by entry, as Patroni skips them: the key itself stays in force.
        #expect(config.validationErrors().isEmpty)
        #expect(config.permanentSlots == [PermanentSlot(name: "ok", kind: .physical)])
        // `{}` matches every slot, as in Patroni.
        #expect(config.ignoreSlots == [SlotMatcher(name: "x"), SlotMatcher()])
        #expect(config.ignoresPhysicalSlot("anything"))
        #expect(try Self.config(#"{"slots": "backup"}"#).slotProblems().contains { $0.hasPrefix("slots:") })
        // A hostile key cannot make the slot work unbounded.
        let many = (0..<1500).map { "\"s\($0)\": null" }.joined(separator: ", ")
        let capped = try Self.config("{\"slots\": {\(many)}}")
        #expect(capped.permanentSlots.count == 1000)
        #expect(capped.slotProblems().contains { $0.contains("at most 1000") })
    }

    /// Patroni's older names for `slots`, and `cluster_type: standby` slots (not for a primary
    /// cluster).
    @Test func aliasesAndClusterType() throws {
        let aliased = try Self.config(#"{"permanent_slots": {"a": null}, "slots": {"b": null}}"#)
        #expect(aliased.permanentSlots.map(\.name) == ["a"])
        let first = try Self.config(#"{"permanent_replication_slots": {"c": null}, "permanent_slots": {"a": null}}"#)
        #expect(first.permanentSlots.map(\.name) == ["c"])
        let empty = try Self.config(#"{"permanent_slots": {}, "slots": {"b": null}}"#)
        #expect(empty.permanentSlots.map(\.name) == ["b"])
        let typed = try Self.config(
            #"{"slots": {"here": {"type": "physical", "cluster_type": "primary"}, "there": {"cluster_type": "standby"}}}"#
        )
        #expect(typed.permanentSlots.map(\.name) == ["here"])
    }

    @Test func ignoreSlotsMatchEveryFieldGiven() throws {
        let config = try Self.config(
            """
            {"ignore_slots": [{"name": "barman"}, {"type": "logical", "plugin": "wal2json"}, {"type": "physical", "name": "pgbr"}]}
            """)
        #expect(config.ignoresPhysicalSlot("barman"))
        #expect(config.ignoresPhysicalSlot("pgbr"))
        #expect(!config.ignoresPhysicalSlot("other"))
        let logical = config.ignoreSlots[1]
        #expect(logical.matches(name: "cdc", type: "logical", database: "app", plugin: "wal2json"))
        #expect(!logical.matches(name: "cdc", type: "logical", database: "app", plugin: "pgoutput"))
        #expect(!logical.matches(name: "cdc", type: "physical"))
    }

    /// The leader creates and keeps permanent physical slots, never drops them, and lists their
    /// positions apart from the member slots; one named after a member (or the leader) is that
    /// member's slot, not a permanent one.
    @Test func theLeaderKeepsPermanentSlots() {
        let members = [
            Member(name: "node1", state: .running, role: .primary),
            Member(name: "node2", state: .running, role: .replica),
        ]
        var memory = MemberSlots.Memory()
        memory.note(members: members, retained: [], me: "node1", now: Self.t0)
        let plan = MemberSlots.plan(
            me: "node1", members: members, existing: ["node2": true, "backup": false], memory: memory, now: Self.t0,
            ttl: .seconds(1800), useSlots: true, permanent: ["backup", "archiver", "node2", "node1"])
        #expect(plan.create == ["archiver"])
        #expect(plan.drop.isEmpty)
        #expect(plan.permanent == ["archiver", "backup"])
        #expect(plan.retain == ["node1", "node2"], "retain_slots names member slots only")

        // Created by this leader, then taken out of `slots`: Baton's own, dropped when inactive.
        memory.created.formUnion(["archiver"])
        let later = MemberSlots.plan(
            me: "node1", members: members, existing: ["node2": true, "backup": false, "archiver": false],
            memory: memory, now: Self.t0, ttl: .seconds(1800), useSlots: true, permanent: ["backup"])
        #expect(later.drop == ["archiver"])
        // `backup` existed before this leader and is not its own: taken out, it is left alone.
        let without = MemberSlots.plan(
            me: "node1", members: members, existing: ["node2": true, "backup": false], memory: memory, now: Self.t0,
            ttl: .seconds(1800), useSlots: true)
        #expect(without.drop.isEmpty)
    }

    /// A permanent slot named after a member that streams from another member (Patroni's
    /// "A(B: active, C: inactive)") stays permanent on the leader and follows that member's
    /// position; one named after a member with a slot here is that member's.
    @Test func aPermanentSlotForACascadingMemberFollowsItsPosition() {
        let members = [
            Member(name: "a", state: .running, role: .primary), Member(name: "b", state: .running, role: .replica),
            Member(
                name: "c", state: .running, role: .replica, xlogLocation: LSN(900),
                tags: Tags(["replicatefrom": .string("b")])),
        ]
        var memory = MemberSlots.Memory()
        memory.note(members: members, retained: [], me: "a", now: Self.t0)
        let plan = MemberSlots.plan(
            me: "a", members: members, existing: ["b": true, "c": false], memory: memory,
            now: Self.t0 + .seconds(7200), ttl: .seconds(1800), useSlots: true, permanent: ["b", "c"])
        #expect(plan.permanent == ["c"])
        #expect(plan.drop.isEmpty, "seen as a member's, but permanent: kept")
        let slots = [
            "c": PhysicalSlot(active: false, restartLSN: LSN(100)), "b": PhysicalSlot(active: true, restartLSN: LSN(1)),
        ]
        #expect(
            MemberSlots.permanentAdvances(permanent: plan.permanent, members: members, existing: slots) == [
                "c": LSN(900)
            ])
        let ahead = ["c": PhysicalSlot(active: false, restartLSN: LSN(1000))]
        #expect(MemberSlots.permanentAdvances(permanent: ["c"], members: members, existing: ahead).isEmpty)
    }

    /// `ignore_slots` wins over everything: a slot it covers is neither created nor dropped, even
    /// one Baton would otherwise own (a gone member's, with use_slots on or off).
    @Test func ignoredSlotsAreNeverCreatedNorDropped() {
        let leader = Member(name: "node1", state: .running, role: .primary)
        var memory = MemberSlots.Memory()
        memory.note(
            members: [leader, Member(name: "old", state: .running, role: .replica)], retained: [], me: "node1",
            now: Self.t0)
        let ignored: (String) -> Bool = { $0 == "old" || $0 == "barman" }
        for useSlots in [true, false] {
            let plan = MemberSlots.plan(
                me: "node1", members: [leader], existing: ["old": false], memory: memory,
                now: Self.t0 + .seconds(7200), ttl: .seconds(1800), useSlots: useSlots, permanent: ["barman"],
                ignored: ignored)
            #expect(plan.drop.isEmpty, "use_slots \(useSlots)")
            #expect(plan.create.isEmpty, "use_slots \(useSlots)")
        }
        // ignore_slots never keeps a member's slot from being created: its standby names it.
        let wanting = MemberSlots.plan(
            me: "node1", members: [leader, Member(name: "node2", state: .running, role: .replica)], existing: [:],
            memory: MemberSlots.Memory(), now: Self.t0, ttl: .seconds(1800), useSlots: true,
            ignored: { _ in true })
        #expect(wanting.create == ["node2"])
        // Paused, nothing is dropped, with use_slots on or off.
        for useSlots in [true, false] {
            let paused = MemberSlots.plan(
                me: "node1", members: [leader], existing: ["old": false], memory: memory,
                now: Self.t0 + .seconds(7200), ttl: .seconds(1800), useSlots: useSlots, paused: true)
            #expect(paused.drop.isEmpty, "use_slots \(useSlots)")
        }
        // Without ignore_slots the gone member's slot goes after the ttl.
        let plain = MemberSlots.plan(
            me: "node1", members: [leader], existing: ["old": false], memory: memory, now: Self.t0 + .seconds(7200),
            ttl: .seconds(1800), useSlots: true)
        #expect(plain.drop == ["old"])
    }
}

/// A replica's copies of the permanent physical slots.
@Suite struct PermanentSlotCopiesTests {
    static let members = [
        Member(name: "node1", state: .running, role: .primary), Member(name: "node2", state: .running, role: .replica),
    ]

    static func plan(
        tags: Tags = Tags(), useSlots: Bool = true, permanent: [String] = ["backup", "node1"],
        existing: [String: PhysicalSlot], positions: [String: LSN] = [:], copies: Set<String> = [],
        ignored: @escaping (String) -> Bool = { _ in false }
    ) -> PermanentSlotCopies.Plan {
        PermanentSlotCopies.plan(
            me: "node2", members: members, tags: tags, useSlots: useSlots, permanent: permanent, ignored: ignored,
            existing: existing, leaderPositions: positions, copies: copies)
    }

    @Test func aReplicaCopiesAndAdvancesForwardOnly() {
        // A copy named after another member stays a copy (only this member's own name is left
        // out): a member key written to collide with it cannot make replicas drop it.
        #expect(Self.plan(existing: [:]) == PermanentSlotCopies.Plan(create: ["backup", "node1"]))
        #expect(Self.plan(permanent: ["node2"], existing: [:]) == PermanentSlotCopies.Plan())
        let behind = PhysicalSlot(active: false, restartLSN: LSN(100))
        #expect(
            Self.plan(existing: ["backup": behind], positions: ["backup": LSN(250)]).advance == ["backup": LSN(250)])
        // Never backwards, never an active copy, never one without a position yet.
        #expect(Self.plan(existing: ["backup": behind], positions: ["backup": LSN(50)]).advance.isEmpty)
        let active = PhysicalSlot(active: true, restartLSN: LSN(100))
        #expect(Self.plan(existing: ["backup": active], positions: ["backup": LSN(250)]).advance.isEmpty)
        let fresh = PhysicalSlot(active: false, restartLSN: nil)
        #expect(Self.plan(existing: ["backup": fresh], positions: ["backup": LSN(250)]).advance.isEmpty)
    }

    @Test func onlyItsOwnCopiesAreDropped() {
        let idle = PhysicalSlot(active: false, restartLSN: LSN(100))
        let existing = ["backup": idle, "operator": idle]
        // Taken out of `slots`: the copy it made goes, the operator's slot stays.
        #expect(Self.plan(permanent: [], existing: existing, copies: ["backup"]).drop == ["backup"])
        #expect(Self.plan(permanent: [], existing: existing, copies: []).drop.isEmpty)
        // Paused: nothing is dropped.
        #expect(
            PermanentSlotCopies.plan(
                me: "node2", members: Self.members, tags: Tags(), useSlots: true, permanent: [],
                ignored: { _ in false },
                existing: existing, leaderPositions: [:], copies: ["backup"], paused: true
            ).drop.isEmpty)
        // nofailover or use_slots off: no copies.
        let noFailover = Self.plan(tags: Tags(["nofailover": .bool(true)]), existing: [:], copies: [])
        #expect(noFailover.create.isEmpty)
        #expect(Self.plan(useSlots: false, existing: existing, copies: ["backup"]).drop == ["backup"])
        // ignore_slots: neither made nor dropped.
        let ignoring = Self.plan(permanent: [], existing: existing, copies: ["backup"], ignored: { $0 == "backup" })
        #expect(ignoring.drop.isEmpty)
        #expect(Self.plan(permanent: ["backup"], existing: [:], ignored: { $0 == "backup" }).create.isEmpty)
    }
}
