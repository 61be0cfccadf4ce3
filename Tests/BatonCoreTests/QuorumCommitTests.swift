import BatonCore
import PropertyBased
import Testing

/// Quorum commit's two places (postgres' `ANY k (S)` and the key's voters V and quorum q) kept
/// safe through every step: a model of acknowledged commits, each held by the leader and, at
/// worst, by the k standbys of S the key counts on least, must be found by every race the key
/// allows (at most q voters lack it) after each step, whatever the standbys do.
@Suite struct QuorumCommitTests {
    typealias State = QuorumCommit.State
    static let names = ["b", "c", "d", "e"]

    /// One acknowledged commit: the setting it was made under (any `count` of `sync` hold it,
    /// whichever they are), the standbys known to hold it since (caught up), and its epoch.
    struct Commit {
        var sync: Set<String>
        var count: Int
        var caughtUp: Set<String>
        var epoch: Int
    }

    /// Whether every race the key allows finds the commit, for every set of `count` standbys of
    /// `sync` that may hold it: at most q voters lack it. The worst holders avoid the voters
    /// that are not known to hold it; exact, not a sample.
    static func found(_ commit: Commit, by state: State) -> Bool {
        guard !state.voters.isEmpty else { return true }
        let unknown = state.voters.subtracting(commit.caughtUp)
        let acknowledged =
            commit.sync.contains("*") || commit.count < 1
            ? 0 : max(0, commit.count - commit.sync.subtracting(unknown).count)
        return unknown.count - acknowledged <= state.quorum
    }

    @Test func everyStepKeepsEveryAcknowledgedCommitFindable() async {
        await propertyCheck(count: 1000, input: Gen.int(in: 0...Int(Int32.max)).array(of: 60)) { picks in
            var state = State(voters: [], quorum: 0, sync: [], count: 0)
            var active: Set<String> = []
            var wanted = 1
            var strict = false
            var epoch = 0
            var confirmed: Set<String> = []
            var commits: [Commit] = []
            for pick in picks {
                switch pick % 7 {
                case 0:  // a standby joins or leaves
                    let name = Self.names[(pick / 7) % Self.names.count]
                    if active.contains(name) { active.remove(name) } else { active.insert(name) }
                case 1:
                    wanted = 1 + (pick / 7) % 3
                    strict = (pick / 21) % 4 == 0
                case 2:  // a listed, streaming standby catches up with the setting's start
                    let candidates = state.sync.intersection(active).subtracting(confirmed).sorted()
                    if let name = candidates.first {
                        confirmed.insert(name)
                        for index in commits.indices where commits[index].epoch < epoch {
                            commits[index].caughtUp.insert(name)
                        }
                    }
                default:  // the leader takes a step and a commit is acknowledged
                    let step = QuorumCommit.nextStep(
                        from: state, confirmed: confirmed, active: active, wanted: wanted, strict: strict)
                    switch step {
                    case .key(let voters, let quorum)?:
                        state.voters = Set(voters)
                        state.quorum = quorum
                    case .postgres(let setting)?:
                        #expect(setting.quorum)
                        state.sync = Set(setting.names)
                        state.count = setting.count
                        epoch += 1
                        confirmed = []
                    case nil: break
                    }
                    commits.append(Commit(sync: state.sync, count: state.count, caughtUp: [], epoch: epoch))
                }
                for commit in commits where !Self.found(commit, by: state) {
                    Issue.record("lost: ANY \(commit.count) \(commit.sync.sorted()) under \(state) (picks \(picks))")
                    return
                }
            }
        }
    }

    /// Once the standbys stop changing and catch up, the steady state is reached in a few steps:
    /// S = V = the active standbys, k = min(wanted, |A|), q = |A| − k.
    @Test func theSteadyStateIsReachedFromAnyStart() async {
        await propertyCheck(
            count: 500, input: Gen.int(in: 0...15), Gen.int(in: 0...15), Gen.int(in: 0...15), Gen.int(in: 1...3)
        ) { startVoters, startSync, activeMask, wanted in
            func set(_ mask: Int) -> Set<String> {
                Set(Self.names.enumerated().filter { mask & (1 << $0.offset) != 0 }.map(\.element))
            }
            // A safe start: the key asks for all but the setting's count (or names nobody).
            let sync = set(startSync)
            let voters = sync.isEmpty ? [] : set(startVoters).union(sync)
            var state = State(
                voters: voters, quorum: voters.isEmpty ? 0 : max(0, voters.count - 1), sync: sync,
                count: sync.isEmpty ? 0 : 1)
            if !voters.isEmpty, !QuorumCommit.covers(voters: voters, quorum: state.quorum, sync: sync, count: 1) {
                return
            }
            let active = set(activeMask)
            let goal = QuorumCommit.target(active: active, wanted: wanted, strict: false)
            var steps = 0
            while steps < 12 {
                let caughtUp = state.sync.intersection(active)
                guard
                    let step = QuorumCommit.nextStep(
                        from: state, confirmed: caughtUp, active: active, wanted: wanted, strict: false)
                else { break }
                switch step {
                case .key(let v, let q):
                    state.voters = Set(v)
                    state.quorum = q
                case .postgres(let setting):
                    state.sync = Set(setting.names)
                    state.count = setting.count
                }
                steps += 1
            }
            #expect(state == goal, "from \(voters.sorted()) ANY 1 \(sync.sorted()) to \(goal): stuck at \(state)")
        }
    }

    @Test func theSteadyStateIsPatronis() {
        let three = QuorumCommit.target(active: ["b", "c"], wanted: 1, strict: false)
        #expect(three == State(voters: ["b", "c"], quorum: 1, sync: ["b", "c"], count: 1))
        let two = QuorumCommit.target(active: ["b", "c"], wanted: 2, strict: false)
        #expect(two == State(voters: ["b", "c"], quorum: 0, sync: ["b", "c"], count: 2))
        #expect(QuorumCommit.target(active: [], wanted: 1, strict: true).sync == ["*"])
        #expect(SynchronousSetting(names: ["c", "b"], count: 1, quorum: true).postgresValue == #"ANY 1 ("b","c")"#)
        #expect(SynchronousSetting(all: ["b", "c"]).postgresValue == #"FIRST 2 ("b","c")"#)
        #expect(SynchronousSetting(all: [#"x"y"#]).postgresValue == #"FIRST 1 ("x""y")"#)
    }

    /// The worked case: b and c in the quorum (ANY 1), b is lost and d joins. The key grows
    /// before the setting moves to d, and shrinks only once a remaining standby caught up.
    @Test func aLostStandbyIsReplacedWithoutAGap() {
        var state = State(voters: ["b", "c"], quorum: 1, sync: ["b", "c"], count: 1)
        var confirmed: Set<String> = ["b", "c"]
        var seen: [String] = []
        for _ in 0..<8 {
            guard
                let step = QuorumCommit.nextStep(
                    from: state, confirmed: confirmed, active: ["c", "d"], wanted: 1, strict: false)
            else { break }
            switch step {
            case .key(let v, let q):
                #expect(
                    QuorumCommit.keyChangeIsSafe(
                        from: state, to: State(voters: Set(v), quorum: q, sync: state.sync, count: state.count),
                        confirmed: confirmed))
                state.voters = Set(v)
                state.quorum = q
                seen.append("key \(v) \(q)")
            case .postgres(let setting):
                state.sync = Set(setting.names)
                state.count = setting.count
                confirmed = state.sync.intersection(["c", "d"])
                seen.append("pg \(setting)")
            }
        }
        #expect(state == State(voters: ["c", "d"], quorum: 1, sync: ["c", "d"], count: 1), "\(seen)")
        // The key grows first and never names nobody on the way (a failover target throughout).
        #expect(seen.first == "key [\"b\", \"c\", \"d\"] 2", "\(seen)")
        #expect(!seen.contains { $0.hasPrefix("key []") }, "\(seen)")
    }
}
