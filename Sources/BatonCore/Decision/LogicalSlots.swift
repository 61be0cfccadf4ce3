/// A logical replication slot on this server (`pg_replication_slots`).
public struct LogicalSlot: Hashable, Sendable {
    public var database: String
    public var plugin: String
    /// Unknown counts as active: never dropped, never advanced.
    public var active: Bool
    /// `confirmed_flush_lsn`: what the consumer confirmed (nil before it is known).
    public var confirmedFlush: LSN?
    /// `catalog_xmin`: the oldest catalog rows the slot needs to decode.
    public var catalogXmin: TransactionID?
    /// `wal_status = 'lost'`: the WAL it needs is gone; it can no longer be used.
    public var invalidated: Bool

    public init(
        database: String, plugin: String, active: Bool, confirmedFlush: LSN? = nil, catalogXmin: TransactionID? = nil,
        invalidated: Bool = false
    ) {
        self.database = database
        self.plugin = plugin
        self.active = active
        self.confirmedFlush = confirmedFlush
        self.catalogXmin = catalogXmin
        self.invalidated = invalidated
    }
}

/// A PostgreSQL transaction ID (32 bits, compared modulo 2³² as PostgreSQL does).
public struct TransactionID: Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32

    public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// Reads the text form (`pg_replication_slots.catalog_xmin::text`).
    public init?(text: String) {
        guard let value = UInt32(text) else { return nil }
        rawValue = value
    }

    /// PostgreSQL's `TransactionIdPrecedesOrEquals` for normal IDs: half the ID space before.
    public func precedesOrEquals(_ other: TransactionID) -> Bool {
        Int32(bitPattern: rawValue &- other.rawValue) <= 0
    }

    public var description: String { String(rawValue) }
}

/// Where to move a logical slot on a replica (advancing runs in the slot's database).
public struct LogicalSlotAdvance: Hashable, Sendable {
    public var database: String
    public var lsn: LSN

    public init(database: String, lsn: LSN) {
        self.database = database
        self.lsn = lsn
    }
}

/// Permanent logical slots (`slots:` entries of `type: logical`) and their failover on
/// PostgreSQL 15, as Patroni does it before PostgreSQL 17:
///
/// * the leader creates them and publishes each one's `confirmed_flush_lsn` in the status key;
/// * a replica that may become primary copies each one from the leader (its state file, read with
///   `pg_read_binary_file`; PostgreSQL loads a slot only at start, so the replica restarts once)
///   and then advances its copy to the published position (never past what it replayed);
/// * a copy is safe to decode from only once the leader holds the catalog rows it needs: the
///   leader's physical slot for this replica must show a `catalog_xmin` from
///   `hot_standby_feedback` that covers the copy (`LogicalSlotReadiness`).
///
/// Only slots Baton made (created as leader or copied as replica) are ever dropped, and only
/// while inactive, not paused and not matched by `ignore_slots`. A slot that bears a permanent
/// slot's name but another database or plugin is left alone and named in the log (Patroni drops
/// and recreates it, losing its consumer's position; Baton will not delete that without proof).
public enum LogicalSlots {
    public struct PrimaryPlan: Equatable, Sendable {
        public var create: [PermanentSlot] = []
        public var drop: [String] = []
        /// Slot name → `confirmed_flush_lsn`, for the status key's `slots`.
        public var positions: [String: LSN] = [:]
        /// Names of permanent logical slots held here by a slot of another kind, database or
        /// plugin: left alone.
        public var mismatched: [String] = []

        public init() {}
    }

    /// The permanent logical slots, without those `ignore_slots` covers and those named as a
    /// member's slot (`memberSlots`: the status key's `slots` carries that member's position
    /// under the same name; a copy advanced to it would skip changes its consumer never
    /// confirmed. Patroni leaves them out too).
    public static func wanted(
        _ permanent: [PermanentSlot], memberSlots: Set<String> = [], ignored: (PermanentSlot) -> Bool
    ) -> [String: PermanentSlot] {
        var wanted: [String: PermanentSlot] = [:]
        for slot in permanent where !slot.isPhysical && !ignored(slot) && !memberSlots.contains(slot.name) {
            wanted[slot.name] = slot
        }
        return wanted
    }

    /// On the leader.
    /// - Parameters:
    ///   - existing: the logical slots on this primary.
    ///   - physical: the physical slots' names (a name taken by one is a mismatch).
    ///   - owned: the logical slots this agent made (the only ones it may drop).
    ///   - ignoredName: whether `ignore_slots` covers an existing logical slot.
    ///   - named: every name the config key's `slots` holds, usable or not: a slot named there is
    ///     never dropped (an entry skipped for a bad value must not cost its consumer the slot).
    public static func primaryPlan(
        wanted: [String: PermanentSlot], existing: [String: LogicalSlot], physical: Set<String>, owned: Set<String>,
        named: Set<String> = [], ignoredName: (String, LogicalSlot) -> Bool, paused: Bool
    ) -> PrimaryPlan {
        var plan = PrimaryPlan()
        for (name, slot) in wanted.sorted(by: { $0.key < $1.key }) {
            guard case .logical(let database, let plugin) = slot.kind else { continue }
            if let found = existing[name] {
                if found.database == database, found.plugin == plugin {
                    if let lsn = found.confirmedFlush { plan.positions[name] = lsn }
                } else {
                    plan.mismatched.append(name)
                }
            } else if physical.contains(name) {
                plan.mismatched.append(name)
            } else {
                plan.create.append(slot)
            }
        }
        if !paused {
            plan.drop = owned.filter { name in
                guard wanted[name] == nil, !named.contains(name), let found = existing[name] else { return false }
                return !found.active && !ignoredName(name, found)
            }
            .sorted()
        }
        return plan
    }

    public struct ReplicaPlan: Equatable, Sendable {
        /// To copy from the leader (postgres restarts once for them).
        public var copy: [String] = []
        public var advance: [String: LogicalSlotAdvance] = [:]
        public var drop: [String] = []
        public var mismatched: [String] = []
        /// Why wanted slots are not copied now (a setting the copies need is off or unknown).
        public var blocked: String?

        public init() {}
    }

    /// On a running replica.
    /// - Parameters:
    ///   - leaderPositions: the status key's `slots` (a slot is copied only once the leader
    ///     published its position: it exists there).
    ///   - replayLSN: what this replica replayed (a copy never moves past it); nil: no advance.
    ///   - copies: the logical slots this agent copied (the only ones it may drop).
    ///   - hotStandbyFeedback, walLevel: this server's settings; nil when unknown (no copy).
    ///   - named: as for `primaryPlan`.
    /// A copy of its own that is invalidated (its WAL is gone) is dropped, to be copied again.
    public static func replicaPlan(
        wanted allWanted: [String: PermanentSlot], tags: Tags, useSlots: Bool, existing: [String: LogicalSlot],
        physical: Set<String>, leaderPositions: [String: LSN], replayLSN: LSN?, copies: Set<String>,
        named: Set<String> = [], hotStandbyFeedback: Bool?, walLevel: String?,
        ignoredName: (String, LogicalSlot) -> Bool, paused: Bool
    ) -> ReplicaPlan {
        var plan = ReplicaPlan()
        // A member that may not be promoted keeps no copy; without use_slots the leader keeps no
        // slot for this replica, so hot_standby_feedback cannot hold the catalog rows a copy needs.
        let keepsCopies = useSlots && !tags.noFailover
        let wanted = keepsCopies ? allWanted : [:]
        var missing: [String] = []
        for (name, slot) in wanted.sorted(by: { $0.key < $1.key }) {
            guard case .logical(let database, let plugin) = slot.kind else { continue }
            if let found = existing[name] {
                guard found.database == database, found.plugin == plugin else {
                    plan.mismatched.append(name)
                    continue
                }
                guard !found.invalidated else { continue }
                guard !found.active, let target = leaderPositions[name], let replayLSN,
                    let confirmed = found.confirmedFlush
                else { continue }
                let to = min(target, replayLSN)
                if confirmed < to { plan.advance[name] = LogicalSlotAdvance(database: database, lsn: to) }
            } else if physical.contains(name) {
                plan.mismatched.append(name)
            } else if leaderPositions[name] != nil {
                missing.append(name)
            }
        }
        if !missing.isEmpty {
            if walLevel != "logical" {
                plan.blocked =
                    "wal_level is \(walLevel ?? "unknown") here; a logical slot needs wal_level: logical on every member"
            } else if hotStandbyFeedback != true {
                plan.blocked =
                    "hot_standby_feedback is \(hotStandbyFeedback.map { $0 ? "on" : "off" } ?? "unknown") here; "
                    + "logical slot failover needs hot_standby_feedback: on (postgresql.parameters)"
            } else if paused {
                plan.blocked = "the cluster is paused (a copy restarts postgres)"
            } else {
                plan.copy = missing
            }
        }
        if !paused {
            plan.drop = copies.filter { name in
                guard let found = existing[name], !found.active, !ignoredName(name, found) else { return false }
                if found.invalidated, wanted[name] != nil { return true }
                // A member that may keep no copy drops its own even when `slots` names them.
                return wanted[name] == nil && (!named.contains(name) || !keepsCopies)
            }
            .sorted()
        }
        return plan
    }
}

/// Whether copied logical slots are safe to decode from after a promotion (Patroni's
/// `check_logical_slots_readiness`). The leader keeps the catalog rows a copy needs only once
/// this replica's physical slot there carries its `catalog_xmin` (sent by
/// `hot_standby_feedback`). When that first shows, the leader's own slot's `catalog_xmin` is
/// remembered: rows older than it may already be gone there. A copy is ready once the leader's
/// physical `catalog_xmin` is at or past that remembered value and at or before the copy's own.
public struct LogicalSlotReadiness: Equatable, Sendable {
    /// Slot name → the leader's slot's `catalog_xmin` when the physical one first showed (nil:
    /// not yet).
    public private(set) var pending: [String: TransactionID?] = [:]

    public init() {}

    public mutating func copied(_ names: [String]) {
        for name in names { pending[name] = .some(nil) }
    }

    /// The pending slots whose leader `catalog_xmin` is still to be remembered.
    public var unremembered: [String] { pending.filter { $0.value == nil }.keys.sorted() }

    /// - Parameters:
    ///   - physical: the `catalog_xmin` of this replica's physical slot on the leader (nil: none
    ///     yet, or the slot is missing: nothing is ready).
    ///   - leader: the leader's logical slots' `catalog_xmin` (for `unremembered`).
    ///   - local: this replica's logical slots.
    /// - Returns: the slots that became ready (and left `pending`).
    public mutating func observe(
        physical: TransactionID?, leader: [String: TransactionID], local: [String: LogicalSlot]
    ) -> [String] {
        var ready: [String] = []
        for name in pending.keys.sorted() {
            // A copy that is gone (dropped, or never loaded) is no longer waited for.
            guard let copy = local[name] else {
                pending[name] = nil
                continue
            }
            guard let physical else { continue }
            if pending[name] == .some(nil), let remembered = leader[name] { pending[name] = .some(remembered) }
            guard case .some(.some(let remembered)) = pending[name], let own = copy.catalogXmin else { continue }
            if remembered.precedesOrEquals(physical), physical.precedesOrEquals(own) {
                pending[name] = nil
                ready.append(name)
            }
        }
        return ready
    }

    public mutating func reset() { pending = [:] }
}
