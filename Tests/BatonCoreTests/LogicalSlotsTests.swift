import BatonCore
import Testing

@Suite struct LogicalSlotsTests {
    static let cdc = PermanentSlot(name: "cdc", kind: .logical(database: "app", plugin: "pgoutput"))
    static let wanted = ["cdc": cdc]
    static func slot(
        _ database: String = "app", _ plugin: String = "pgoutput", active: Bool = false, at lsn: UInt64? = 100,
        xmin: UInt32? = 500
    ) -> LogicalSlot {
        LogicalSlot(
            database: database, plugin: plugin, active: active, confirmedFlush: lsn.map { LSN($0) },
            catalogXmin: xmin.map { TransactionID($0) })
    }
    static let never: @Sendable (String, LogicalSlot) -> Bool = { _, _ in false }

    @Test func wantedLeavesOutPhysicalAndIgnoredSlots() {
        let slots = [
            Self.cdc, PermanentSlot(name: "phys", kind: .physical),
            PermanentSlot(name: "skip", kind: .logical(database: "app", plugin: "wal2json")),
        ]
        let wanted = LogicalSlots.wanted(slots) { $0.name == "skip" }
        #expect(Array(wanted.keys) == ["cdc"])
    }

    @Test func primaryCreatesMissingAndPublishesConfirmedPositions() {
        var plan = LogicalSlots.primaryPlan(
            wanted: Self.wanted, existing: [:], physical: [], owned: [], ignoredName: Self.never, paused: false)
        #expect(plan.create == [Self.cdc] && plan.positions.isEmpty)
        plan = LogicalSlots.primaryPlan(
            wanted: Self.wanted, existing: ["cdc": Self.slot(at: 4242)], physical: [], owned: [],
            ignoredName: Self.never, paused: false)
        #expect(plan.create.isEmpty && plan.positions == ["cdc": LSN(4242)])
    }

    /// Patroni drops and recreates such a slot; Baton leaves the consumer's position alone.
    @Test func primaryLeavesASlotOfAnotherDatabasePluginOrKindAlone() {
        for existing in [["cdc": Self.slot("other")], ["cdc": Self.slot("app", "wal2json")]] {
            let plan = LogicalSlots.primaryPlan(
                wanted: Self.wanted, existing: existing, physical: [], owned: ["cdc"], ignoredName: Self.never,
                paused: false)
            #expect(plan.mismatched == ["cdc"] && plan.create.isEmpty && plan.drop.isEmpty && plan.positions.isEmpty)
        }
        let physical = LogicalSlots.primaryPlan(
            wanted: Self.wanted, existing: [:], physical: ["cdc"], owned: [], ignoredName: Self.never, paused: false)
        #expect(physical.mismatched == ["cdc"] && physical.create.isEmpty)
    }

    @Test func primaryDropsOnlyItsOwnInactiveUnignoredSlotsWhenNotPaused() {
        let existing = [
            "mine": Self.slot(), "busy": Self.slot(active: true), "theirs": Self.slot(), "kept": Self.slot(),
        ]
        let owned: Set = ["mine", "busy", "kept", "gone"]
        let ignored: (String, LogicalSlot) -> Bool = { name, _ in name == "kept" }
        let plan = LogicalSlots.primaryPlan(
            wanted: [:], existing: existing, physical: [], owned: owned, ignoredName: ignored, paused: false)
        #expect(plan.drop == ["mine"])
        let paused = LogicalSlots.primaryPlan(
            wanted: [:], existing: existing, physical: [], owned: owned, ignoredName: ignored, paused: true)
        #expect(paused.drop.isEmpty)
    }

    static func replica(
        existing: [String: LogicalSlot] = [:], positions: [String: LSN] = ["cdc": LSN(1000)], replay: LSN? = LSN(800),
        copies: Set<String> = [], feedback: Bool? = true, walLevel: String? = "logical", tags: Tags = Tags(),
        useSlots: Bool = true, paused: Bool = false, wanted: [String: PermanentSlot] = wanted
    ) -> LogicalSlots.ReplicaPlan {
        LogicalSlots.replicaPlan(
            wanted: wanted, tags: tags, useSlots: useSlots, existing: existing, physical: [],
            leaderPositions: positions,
            replayLSN: replay, copies: copies, hotStandbyFeedback: feedback, walLevel: walLevel, ignoredName: never,
            paused: paused)
    }

    @Test func replicaCopiesOnlyWhatTheLeaderPublishedAndWhenSettingsAllow() {
        #expect(Self.replica().copy == ["cdc"])
        // The leader has not published it yet: nothing to copy.
        #expect(Self.replica(positions: [:]).copy.isEmpty)
        // Unknown is not "on": no copy, and the reason is named.
        for plan in [Self.replica(feedback: nil), Self.replica(feedback: false)] {
            #expect(plan.copy.isEmpty && plan.blocked?.contains("hot_standby_feedback") == true)
        }
        for plan in [Self.replica(walLevel: nil), Self.replica(walLevel: "replica")] {
            #expect(plan.copy.isEmpty && plan.blocked?.contains("wal_level") == true)
        }
        // A copy restarts postgres: not while paused.
        #expect(Self.replica(paused: true).copy.isEmpty)
        // A member that may not be promoted, or without slots on the leader, keeps none.
        let tags = Tags(["nofailover": .bool(true)])
        #expect(Self.replica(tags: tags) == LogicalSlots.ReplicaPlan())
        #expect(Self.replica(useSlots: false) == LogicalSlots.ReplicaPlan())
    }

    @Test func replicaAdvancesAnInactiveCopyNeverPastWhatItReplayed() {
        let plan = Self.replica(existing: ["cdc": Self.slot(at: 100)])
        #expect(plan.copy.isEmpty && plan.advance == ["cdc": LogicalSlotAdvance(database: "app", lsn: LSN(800))])
        #expect(
            Self.replica(existing: ["cdc": Self.slot(at: 100)], replay: LSN(5000)).advance["cdc"]?.lsn == LSN(1000))
        // Already there, active, replay unknown, confirmed unknown: left as it is.
        #expect(Self.replica(existing: ["cdc": Self.slot(at: 800)]).advance.isEmpty)
        #expect(Self.replica(existing: ["cdc": Self.slot(active: true, at: 100)]).advance.isEmpty)
        #expect(Self.replica(existing: ["cdc": Self.slot(at: 100)], replay: nil).advance.isEmpty)
        #expect(Self.replica(existing: ["cdc": Self.slot(at: nil)]).advance.isEmpty)
        // Another database's slot of that name is not advanced.
        let other = Self.replica(existing: ["cdc": Self.slot("other", at: 100)])
        #expect(other.advance.isEmpty && other.mismatched == ["cdc"] && other.copy.isEmpty)
    }

    @Test func replicaDropsOnlyItsOwnCopiesNoLongerWanted() {
        let existing = ["cdc": Self.slot(), "old": Self.slot(), "theirs": Self.slot(), "busy": Self.slot(active: true)]
        let plan = Self.replica(existing: existing, copies: ["cdc", "old", "busy"])
        #expect(plan.drop == ["old"])
        let tags = Tags(["nofailover": .bool(true)])
        #expect(Self.replica(existing: existing, copies: ["cdc", "old"], tags: tags).drop == ["cdc", "old"])
        #expect(Self.replica(existing: existing, copies: ["cdc", "old"], tags: tags, paused: true).drop.isEmpty)
    }

    @Test func transactionIDsCompareModuloTwoToThe32() {
        #expect(TransactionID(5).precedesOrEquals(TransactionID(6)))
        #expect(TransactionID(6).precedesOrEquals(TransactionID(6)))
        #expect(!TransactionID(7).precedesOrEquals(TransactionID(6)))
        // Just before wraparound precedes just after it.
        #expect(TransactionID(UInt32.max - 10).precedesOrEquals(TransactionID(20)))
        #expect(!TransactionID(20).precedesOrEquals(TransactionID(UInt32.max - 10)))
        #expect(TransactionID(text: "123") == TransactionID(123) && TransactionID(text: "-1") == nil)
    }

    @Test func aCopyIsReadyOnceTheLeaderHoldsItsCatalogRows() {
        var readiness = LogicalSlotReadiness()
        readiness.copied(["cdc"])
        let local = ["cdc": Self.slot(xmin: 600)]
        // No catalog_xmin on the leader's physical slot yet (no feedback): not ready.
        #expect(readiness.observe(physical: nil, leader: ["cdc": TransactionID(550)], local: local).isEmpty)
        #expect(readiness.unremembered == ["cdc"])
        // Feedback arrived: the leader's own slot's catalog_xmin is remembered (550), but the
        // physical one (540) is still behind it: rows between may be gone on the leader.
        #expect(
            readiness.observe(physical: TransactionID(540), leader: ["cdc": TransactionID(550)], local: local).isEmpty)
        #expect(readiness.unremembered.isEmpty)
        // Past the copy's own catalog_xmin: not ready either.
        #expect(readiness.observe(physical: TransactionID(610), leader: [:], local: local).isEmpty)
        // Between: ready, and no longer pending.
        #expect(readiness.observe(physical: TransactionID(580), leader: [:], local: local) == ["cdc"])
        #expect(readiness.pending.isEmpty)
    }

    @Test func aCopyThatIsGoneIsNoLongerWaitedFor() {
        var readiness = LogicalSlotReadiness()
        readiness.copied(["cdc"])
        #expect(readiness.observe(physical: TransactionID(1), leader: [:], local: [:]).isEmpty)
        #expect(readiness.pending.isEmpty)
    }

    /// The status key carries a member's position under its slot name: a permanent logical slot
    /// of that name would be advanced past what its consumer confirmed.
    @Test func aSlotNamedAsAMembersSlotIsNotPermanent() {
        let wanted = LogicalSlots.wanted([Self.cdc], memberSlots: ["cdc"]) { _ in false }
        #expect(wanted.isEmpty)
    }

    /// An entry skipped for a bad value (or beyond the cap) still names the slot: not dropped.
    @Test func aSlotStillNamedInSlotsIsNeverDropped() {
        let primary = LogicalSlots.primaryPlan(
            wanted: [:], existing: ["cdc": Self.slot()], physical: [], owned: ["cdc"], named: ["cdc"],
            ignoredName: Self.never, paused: false)
        #expect(primary.drop.isEmpty)
        let replica = LogicalSlots.replicaPlan(
            wanted: [:], tags: Tags(), useSlots: true, existing: ["cdc": Self.slot()], physical: [],
            leaderPositions: [:],
            replayLSN: nil, copies: ["cdc"], named: ["cdc"], hotStandbyFeedback: true, walLevel: "logical",
            ignoredName: Self.never, paused: false)
        #expect(replica.drop.isEmpty)
        // A member tagged nofailover keeps no copy, named or not.
        let tagged = LogicalSlots.replicaPlan(
            wanted: Self.wanted, tags: Tags(["nofailover": .bool(true)]), useSlots: true,
            existing: ["cdc": Self.slot()],
            physical: [], leaderPositions: [:], replayLSN: nil, copies: ["cdc"], named: ["cdc"],
            hotStandbyFeedback: true, walLevel: "logical", ignoredName: Self.never, paused: false)
        #expect(tagged.drop == ["cdc"])
    }

    /// A copy whose WAL is gone (wal_status lost) is of no use after a failover: dropped (its own
    /// only) to be copied again, never advanced.
    @Test func anInvalidatedCopyIsDroppedToBeCopiedAgain() {
        var lost = Self.slot(at: 100)
        lost.invalidated = true
        let plan = Self.replica(existing: ["cdc": lost], copies: ["cdc"])
        #expect(plan.drop == ["cdc"] && plan.advance.isEmpty)
        #expect(Self.replica(existing: ["cdc": lost], copies: []).drop.isEmpty)
        #expect(Self.replica(existing: ["cdc": lost], copies: ["cdc"], paused: true).drop.isEmpty)
    }
}
