/// Quorum commit (`synchronous_mode: quorum`, Patroni 4): the leader keeps two things in step.
///
/// * PostgreSQL's `synchronous_standby_names` = `ANY k (S)`: a commit is acknowledged once k of
///   the standbys in S have flushed it.
/// * The `sync` key = voters V and `quorum` q: after the leader is lost, a member may promote only
///   when it has heard from q + 1 members of V ∪ {leader} (itself included) and none of them is
///   ahead of it.
///
/// A commit is then never lost when every set of k standbys of S meets every set of q + 1 members
/// of V: |V ∪ S| ≤ q + k. Each step below changes one of the two places, and is taken only when
/// every commit acknowledged so far is still found by every race the key allows:
///
/// * a new setting: its commits must be covered by the key in force;
/// * a new key: the setting's commits must be covered by it, and so must the commits made under
///   earlier settings: either the key is at least as demanding as the old one for any set of
///   members holding a commit, or the members it could do without have all caught up with the
///   position at which the setting took effect (`confirmed`).
///
/// The steady state, for the standbys A that may take part: S = V = A, k = min(wanted, |A|),
/// q = |A| − k. Steps towards it are found by a small search; when the only way forward waits for
/// a standby to catch up, there is no step (the key and setting stay as they are, both safe).
public enum QuorumCommit {
    public struct State: Hashable, Sendable, CustomStringConvertible {
        public var voters: Set<String>
        public var quorum: Int
        public var sync: Set<String>
        public var count: Int

        public init(voters: Set<String>, quorum: Int, sync: Set<String>, count: Int) {
            self.voters = voters
            self.quorum = quorum
            self.sync = sync
            self.count = count
        }

        public var description: String {
            "voters [\(voters.sorted().joined(separator: ","))] quorum \(quorum), "
                + "ANY \(count) [\(sync.sorted().joined(separator: ","))]"
        }

        var keyIsValid: Bool { voters.isEmpty ? quorum == 0 : (0..<voters.count).contains(quorum) }
        var settingIsValid: Bool {
            if sync.contains("*") { return sync.count == 1 && count == 1 }
            return sync.isEmpty ? count == 0 : (1...sync.count).contains(count)
        }
    }

    public enum Step: Hashable, Sendable {
        case key(voters: [String], quorum: Int)
        case postgres(SynchronousSetting)
    }

    /// Whether every commit acknowledged under (`sync`, `count`) is found by every race the key
    /// (`voters`, `quorum`) allows. No voters: only the leader may promote, which has them all.
    public static func covers(voters: Set<String>, quorum: Int, sync: Set<String>, count: Int) -> Bool {
        if voters.isEmpty { return true }
        guard !sync.isEmpty, !sync.contains("*"), count >= 1 else { return false }
        return voters.union(sync).count <= quorum + count
    }

    /// Whether a commit that every race of the old key would find (at most `old.quorum` voters
    /// lack it) is found by every race of the new key too, whoever holds it.
    static func atLeastAsDemanding(_ old: State, _ new: State) -> Bool {
        let added = new.voters.subtracting(old.voters).count
        let kept = new.voters.intersection(old.voters).count
        return added + min(old.quorum, kept) <= new.quorum
    }

    public static func keyChangeIsSafe(from current: State, to new: State, confirmed: Set<String>) -> Bool {
        guard new.keyIsValid else { return false }
        guard covers(voters: new.voters, quorum: new.quorum, sync: current.sync, count: current.count) else {
            return false
        }
        return atLeastAsDemanding(current, new) || new.voters.subtracting(confirmed).count <= new.quorum
    }

    public static func settingChangeIsSafe(from current: State, to new: State) -> Bool {
        new.settingIsValid && covers(voters: current.voters, quorum: current.quorum, sync: new.sync, count: new.count)
    }

    /// The steady state for the standbys `active` (streaming, eligible, healthy).
    public static func target(active: Set<String>, wanted: Int, strict: Bool) -> State {
        if active.isEmpty {
            return State(voters: [], quorum: 0, sync: strict ? ["*"] : [], count: strict ? 1 : 0)
        }
        let count = min(max(wanted, 1), active.count)
        return State(voters: active, quorum: active.count - count, sync: active, count: count)
    }

    /// The next step from `current` towards the steady state for `active`; nil when there is
    /// none to take now (already there, or waiting for a standby to catch up).
    public static func nextStep(
        from current: State, confirmed: Set<String>, active: Set<String>, wanted: Int, strict: Bool
    ) -> Step? {
        let goal = target(active: active, wanted: wanted, strict: strict)
        guard current != goal else { return nil }
        // Plan as if every standby listed in the setting and streaming catches up (it will, or
        // maximum_lag_on_syncnode takes it out of `active`); the first step must be safe now.
        guard let path = search(from: current, to: goal, confirmed: { $0.sync.intersection(active) }) else {
            return nil
        }
        guard let first = path.first else { return nil }
        let safeNow =
            first.sync == current.sync && first.count == current.count
            ? keyChangeIsSafe(from: current, to: first, confirmed: confirmed)
            : settingChangeIsSafe(from: current, to: first)
        guard safeNow else { return nil }
        if first.sync != current.sync || first.count != current.count {
            return .postgres(SynchronousSetting(names: Array(first.sync), count: first.count, quorum: true))
        }
        return .key(voters: first.voters.sorted(), quorum: first.quorum)
    }

    /// Breadth-first search over single changes (one member or one count, of the key or of the
    /// setting; or either straight to the goal). Bounded: nil when no path is found in time.
    static func search(from start: State, to goal: State, confirmed: (State) -> Set<String>) -> [State]? {
        let members = start.voters.union(start.sync).union(goal.voters).union(goal.sync)
        var previous: [State: State] = [start: start]
        var frontier = [start]
        var expanded = 0
        while !frontier.isEmpty, expanded < 5_000 {
            var next: [State] = []
            for state in frontier {
                expanded += 1
                for neighbour in neighbours(of: state, goal: goal, members: members, confirmed: confirmed(state))
                where previous[neighbour] == nil {
                    previous[neighbour] = state
                    if neighbour == goal {
                        var path = [neighbour]
                        var cursor = state
                        while cursor != start {
                            path.append(cursor)
                            cursor = previous[cursor] ?? start
                        }
                        return path.reversed()
                    }
                    next.append(neighbour)
                }
            }
            frontier = next
        }
        return nil
    }

    static func neighbours(of state: State, goal: State, members: Set<String>, confirmed: Set<String>) -> [State] {
        var keys: [State] = []
        var settings: [State] = []
        func key(_ voters: Set<String>, _ quorum: Int) {
            var s = state
            s.voters = voters
            s.quorum = quorum
            keys.append(s)
        }
        func setting(_ sync: Set<String>, _ count: Int) {
            var s = state
            s.sync = sync
            s.count = count
            settings.append(s)
        }
        key(goal.voters, goal.quorum)
        setting(goal.sync, goal.count)
        for q in [state.quorum - 1, state.quorum + 1] { key(state.voters, q) }
        for k in [state.count - 1, state.count + 1] { setting(state.sync, k) }
        for name in members.sorted() where name != "*" {
            if state.voters.contains(name) {
                for q in [state.quorum - 1, state.quorum] { key(state.voters.subtracting([name]), q) }
            } else {
                for q in [state.quorum, state.quorum + 1] { key(state.voters.union([name]), q) }
            }
            let named = state.sync.subtracting(["*"])
            if named.contains(name) {
                for k in [state.count - 1, state.count] { setting(named.subtracting([name]), k) }
            } else {
                for k in [state.count, state.count + 1] { setting(named.union([name]), max(k, 1)) }
            }
        }
        // Last: a key naming no standby (only the leader may promote) is always safe, but a path
        // through it leaves the cluster without a failover target meanwhile; breadth-first
        // search takes the first shortest path, so any other of the same length wins.
        key([], 0)
        return keys.filter { $0 != state && keyChangeIsSafe(from: state, to: $0, confirmed: confirmed) }
            + settings.filter { $0 != state && settingChangeIsSafe(from: state, to: $0) }
    }
}
