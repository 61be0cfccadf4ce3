import BatonCore
import Testing

/// Unknown is not false: every answer about the local node that is missing, failed or damaged
/// leads to the safe action. Each row failed on main before the safety work (the old decision is
/// in its comment).
@Suite struct LocalLiesDecisionTests {
    typealias F = Fixture
    typealias Row = HADeciderTests.Row

    static let rows: [Row] = [
        // Before: `.stopPostgres` was never decided; the status said "uninitialized", and the leader
        // stopped postgres, wiped the directory and cloned "from" itself.
        Row(
            name: "leader whose data directory lost PG_VERSION: stop postgres, release the key, delete nothing",
            observation: F.observe("a", cluster: F.cluster(), postgres: F.damagedRunning),
            actions: [.stopPostgres(.fast), .releaseLeader], reason: "leader_data_directory_unusable"),
        Row(
            name: "replica with an unusable data directory and a running postmaster: stop it, stay out",
            observation: F.observe("b", cluster: F.cluster(), postgres: F.damagedRunning),
            actions: [.stopPostgres(.fast)], reason: "data_directory_unusable"),
        Row(
            name: "new member whose data_dir is a non-empty directory without a cluster: no clone",
            observation: F.observe("b", cluster: F.cluster(), postgres: F.damagedStopped),
            actions: [], reason: "data_directory_unusable"),
        Row(
            name: "free key and an unusable data directory: no bootstrap, no race",
            observation: F.observe(
                "b", cluster: F.cluster(leader: nil, initialize: nil), postgres: F.damagedStopped),
            actions: [], reason: "data_directory_unusable"),
        // Before: cloneReplica(from: a) on a, the leader itself.
        Row(
            name: "leader without local data never clones (from itself or anyone): it releases the key",
            observation: F.observe("a", cluster: F.cluster(), postgres: F.empty),
            actions: [.releaseLeader], reason: "leader_without_data"),
        // Before: [.renewLease, .promote] "promoting_with_lock".
        Row(
            name: "leader that cannot tell primary from standby: keeps the key, never promotes",
            observation: F.observe("a", cluster: F.cluster(), postgres: F.blind),
            actions: [.renewLease], reason: "leader_recovery_state_unknown"),
        Row(
            name: "leader blind for ttl: stop postgres (fast) and release the key",
            observation: F.observe(
                "a", cluster: F.cluster(), postgres: F.blind,
                memory: HAMemory(recoveryUnknownSince: F.t0 - .seconds(30))),
            actions: [.demote(.graceful)], reason: "leader_cannot_see_postgres"),
        // Before: it raced and promoted ("racing") — its position read as zero, like everyone's.
        Row(
            name: "free key, a running postgres in an unknown recovery state: not racing",
            observation: F.observe(
                "b",
                cluster: F.cluster(
                    leader: nil, members: [F.member("b", lsn: 0), F.member("c", lsn: 0)], optime: nil),
                postgres: F.blind(postmaster: "standby"), peers: F.peers([("c", 0)])),
            actions: [], reason: "recovery_state_unknown"),
        // Review finding: an ex-primary whose agent restarted blind (no lease, so no fence) published
        // "replica" and was left running while another member was promoted.
        Row(
            name: "blind, not the leader, and the postmaster does not say standby: stop it",
            observation: F.observe("b", cluster: F.cluster(), postgres: F.blind(postmaster: "ready")),
            actions: [.demote(.immediateNoLock)], reason: "recovery_state_unknown"),
        Row(
            name: "blind, not the leader, no word from the postmaster either: stop it",
            observation: F.observe("b", cluster: F.cluster(), postgres: F.blind),
            actions: [.demote(.immediateNoLock)], reason: "recovery_state_unknown"),
        Row(
            name: "blind hot standby following the leader: left alone",
            observation: F.observe(
                "b", cluster: F.cluster(), postgres: F.blind(postmaster: "standby"), following: "a"),
            actions: [], reason: "following"),
        Row(
            name: "failsafe: a member that confirmed another primary within ttl does not race",
            observation: F.observe(
                "b", cluster: F.cluster(leader: nil), postgres: F.replica(), peers: [],
                confirmedFailsafeLeader: "a"),
            actions: [], reason: "failsafe_leader_confirmed"),
        Row(
            name: "watchdog required but unusable: not racing",
            observation: F.observe(
                "b", cluster: F.cluster(leader: nil), postgres: F.replica(), peers: [], watchdogUsable: false),
            actions: [], reason: "watchdog_unusable"),
        // Before: no action; the session kept its old ttl until the agent restarted.
        Row(
            name: "ttl changed in the config key: move to a session with the new ttl",
            observation: F.observe("a", cluster: F.cluster(), postgres: F.primary, leaseTTL: .seconds(10)),
            actions: [.replaceSession], reason: "session_ttl_changed"),
        Row(
            name: "session granted under the ttl in force: nothing to replace",
            observation: F.observe("a", cluster: F.cluster(), postgres: F.primary, leaseTTL: .seconds(30)),
            actions: [.renewLease], reason: "holding_lock"),
    ]

    @Test(arguments: rows)
    func decisionTable(_ row: Row) {
        HADeciderTests.check(row)
        #expect(!HADecider.decide(row.observation).reason.description.contains("\n"))
    }

    /// The blind-leader grace is counted from the first blind cycle and forgotten as soon as the
    /// status query answers again.
    @Test func theBlindLeaderGraceStartsOnceAndEndsWhenPostgresAnswers() {
        let first = HADecider.decide(F.observe("a", cluster: F.cluster(), postgres: F.blind))
        #expect(first.memory.recoveryUnknownSince == F.t0)
        let later = HADecider.decide(
            F.observe(
                "a", cluster: F.cluster(), postgres: F.blind, memory: first.memory, now: F.t0 + .seconds(29)))
        #expect(later.reason.code == "leader_recovery_state_unknown")
        #expect(later.memory.recoveryUnknownSince == F.t0)
        let answered = HADecider.decide(
            F.observe("a", cluster: F.cluster(), postgres: F.primary, memory: later.memory, now: F.t0 + .seconds(29)))
        #expect(answered.memory.recoveryUnknownSince == nil)
        #expect(answered.reason.code == "holding_lock")
    }

    /// A leader key held by this member is never a clone source, whatever the tags say.
    @Test func theLeaderIsNeverItsOwnCloneSource() {
        let cluster = F.cluster(members: [F.member("a", role: .primary)])
        let decision = HADecider.decide(F.observe("a", cluster: cluster, postgres: F.empty))
        #expect(!decision.actions.contains { if case .cloneReplica = $0 { true } else { false } })
    }
}
