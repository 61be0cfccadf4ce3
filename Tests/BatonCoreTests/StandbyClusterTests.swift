import BatonCore
import Foundation
import Testing

private typealias F = Fixture

/// A standby cluster (`standby_cluster` in the config key): its leader follows another cluster and
/// never promotes; a primary that finds the section demotes to a standby leader; without it, the
/// standby leader promotes.
@Suite struct StandbyClusterTests {
    static let section: JSONValue = .object([
        "host": .string("10.0.0.5"), "port": .number(5433), "primary_slot_name": .string("dr_site"),
        "restore_command": .string("cp /archive/%f %p"), "recovery_min_apply_delay": .string("5min"),
    ])
    static let standbyConfig = F.config(["standby_cluster": section])
    static let remote = ReplicationSource(
        member: "standby_cluster 10.0.0.5:5433 slot dr_site", host: "10.0.0.5", port: 5433,
        remote: RemoteRecovery(
            slotName: "dr_site", restoreCommand: "cp /archive/%f %p", recoveryMinApplyDelay: "5min"))

    @Test func theSectionIsReadAsPatroniReadsIt() {
        #expect(Self.standbyConfig.standbyCluster?.source == Self.remote)
        #expect(Self.standbyConfig.validationErrors().isEmpty)
        // Null, {} or a section naming none of host, port, restore_command: not a standby cluster.
        for value: JSONValue in [.null, .object([:]), .object(["primary_slot_name": .string("x")])] {
            #expect(F.config(["standby_cluster": value]).standbyCluster == nil, "\(value)")
        }
        #expect(F.config(["standby_cluster": .object(["host": .string("db")])]).standbyCluster?.port == 5432)
    }

    @Test func aBadSectionIsRefusedWithWhereAndWhy() {
        let bad: [(JSONValue, String)] = [
            (.string("db:5432"), "standby_cluster: expected a mapping"),
            (.object(["host": .string("db; rm -rf /")]), "standby_cluster.host"),
            (.object(["host": .string("db"), "port": .number(70000)]), "standby_cluster.port"),
            (
                .object(["host": .string("db"), "primary_slot_name": .string("Bad-Slot")]),
                "standby_cluster.primary_slot_name"
            ),
            (
                .object(["host": .string("db"), "recovery_min_apply_delay": .string("soon")]),
                "recovery_min_apply_delay"
            ),
            (.object(["host": .string("db"), "restore_command": .string("a\nb")]), "standby_cluster.restore_command"),
            (.object(["host": .string("db"), "restore_command": .string("a\rb")]), "standby_cluster.restore_command"),
            (
                .object(["host": .string("db"), "archive_cleanup_command": .string("a\u{0}b")]),
                "archive_cleanup_command"
            ),
            // A port alone names nothing to follow (a primary would stay writable): refused.
            (.object(["port": .number(5433)]), "standby_cluster: name host"),
            (
                .object(["host": .string("db"), "create_replica_methods": .array([.string("x\u{1b}[2J")])]),
                "create_replica_methods"
            ),
            (
                .object(["host": .string("db"), "create_replica_methods": .string("basebackup")]),
                "create_replica_methods"
            ),
        ]
        for (value, expected) in bad {
            let errors = F.config(["standby_cluster": value]).validationErrors()
            #expect(errors.contains { $0.hasPrefix(expected) || $0.contains(expected) }, "\(value): \(errors)")
        }
    }

    @Test func aNewStandbyClusterClonesFromTheOtherClusterInsteadOfInitdb() {
        let cluster = F.cluster(leader: nil, members: [], optime: nil, initialize: nil)
        let decision = HADecider.decide(
            F.observe("a", cluster: cluster, postgres: F.empty, config: Self.standbyConfig))
        #expect(
            decision.actions == [
                .claimInitialize, .cloneReplica(from: Self.remote),
                .startPostgres(following: Self.remote, asPrimary: false),
            ])
        #expect(decision.reason == .bootstrappingStandbyLeader(from: Self.remote.member))
        // From an archive only (no host): made by a method that needs no server (a restore with
        // no_leader); without one, it waits (no initdb either).
        let archiveOnly = F.config([
            "standby_cluster": .object([
                "restore_command": .string("cp /archive/%f %p"), "create_replica_methods": .array([.string("restore")]),
            ])
        ])
        #expect(archiveOnly.validationErrors().isEmpty, "\(archiveOnly.validationErrors())")
        let waiting = HADecider.decide(F.observe("a", cluster: cluster, postgres: F.empty, config: archiveOnly))
        #expect(waiting.actions.isEmpty && waiting.reason == .noReplicaMethodWithoutServer)
        // The methods standby_cluster names decide, not the member's own list.
        var own = F.observe("a", cluster: cluster, postgres: F.empty, config: archiveOnly)
        own.canCreateReplicaWithoutServer = true
        own.definedMethodsWithoutServer = ["other"]
        #expect(HADecider.decide(own).reason == .noReplicaMethodWithoutServer)
        var able = F.observe("a", cluster: cluster, postgres: F.empty, config: archiveOnly)
        able.definedMethodsWithoutServer = ["restore"]
        let archive = ReplicationSource.withoutServer(
            "standby_cluster archive",
            remote: RemoteRecovery(restoreCommand: "cp /archive/%f %p", createReplicaMethods: ["restore"]))
        let restoring = HADecider.decide(able)
        #expect(
            restoring.actions == [
                .claimInitialize, .cloneReplica(from: archive), .startPostgres(following: archive, asPrimary: false),
            ], "\(restoring.actions)")
        // Its leader then follows the archive; a primary that finds such a section stops being one.
        let led = F.cluster(members: [F.member("a", role: .standbyLeader)])
        let follows = HADecider.decide(F.observe("a", cluster: led, postgres: F.replica(), config: archiveOnly))
        #expect(follows.actions == [.renewLease, .follow(archive)], "\(follows.actions)")
        let primary = HADecider.decide(F.observe("a", cluster: led, postgres: F.primary, config: archiveOnly))
        #expect(primary.actions.contains(.demoteCluster(to: archive)), "\(primary.actions)")
        #expect(!primary.actions.contains(.promote))
    }

    /// A replica restored while no member leads races only against a known reference: with no
    /// status key and no other member's position, its own would be the reference (lag 0) and an
    /// old backup would promote at once.
    @Test func nobodyRacesWithoutAKnownReference() {
        let unknown = F.cluster(leader: nil, members: [F.member("a")], optime: nil)
        let decision = HADecider.decide(
            F.observe("a", cluster: unknown, postgres: F.replica(lsn: 0x100_0000), peers: []))
        #expect(decision.actions.isEmpty && decision.reason == .lagReferenceUnknown, "\(decision.reason)")
        // A cluster still being made (the initialize key claimed, empty): no leader ever was, the
        // member that made it races (a new standby cluster's first leader).
        let made = F.cluster(leader: nil, members: [F.member("a")], optime: nil, initialize: "")
        let first = HADecider.decide(
            F.observe("a", cluster: made, postgres: F.replica(), config: Self.standbyConfig, peers: []))
        #expect(first.actions.first == .acquireLeader, "\(first.reason)")
        // Another member's position is a reference: far behind it, no race either.
        let known = F.cluster(leader: nil, members: [F.member("a"), F.member("b", state: .stopped)], optime: nil)
        let behind = HADecider.decide(
            F.observe("a", cluster: known, postgres: F.replica(lsn: 0x100_0000), peers: []))
        if case .lagTooHigh = behind.reason {} else { Issue.record("\(behind.reason)") }
    }

    @Test func withNoLeaderAMethodThatNeedsNoServerRestoresAMember() {
        let cluster = F.cluster(leader: nil, members: [F.member("b", state: .stopped)])
        // No such method: it waits for a leader to clone from.
        let waiting = HADecider.decide(F.observe("a", cluster: cluster, postgres: F.empty))
        #expect(waiting.actions.isEmpty && waiting.reason == .waitingForLeaderToClone)
        var able = F.observe("a", cluster: cluster, postgres: F.empty)
        able.canCreateReplicaWithoutServer = true
        let restoring = HADecider.decide(able)
        #expect(
            restoring.actions == [
                .cloneReplica(from: .backupWithoutLeader),
                .startPostgres(following: .backupWithoutLeader, asPrimary: false),
            ], "\(restoring.actions)")
        #expect(restoring.reason == .cloningWithoutLeader)
        // Not while another member bootstraps the cluster, nor while paused; with a leader, from it.
        var bootstrapping = F.observe(
            "a", cluster: F.cluster(leader: nil, members: [], initialize: ""), postgres: F.empty)
        bootstrapping.canCreateReplicaWithoutServer = true
        #expect(HADecider.decide(bootstrapping).reason == .waitingForBootstrap)
        var paused = F.observe("a", cluster: cluster, postgres: F.empty, config: F.config(["pause": .bool(true)]))
        paused.canCreateReplicaWithoutServer = true
        #expect(HADecider.decide(paused).actions.isEmpty)
        var led = F.observe(
            "a", cluster: F.cluster(leader: "b", members: [F.member("b", role: .primary)]), postgres: F.empty)
        led.canCreateReplicaWithoutServer = true
        if case .cloneReplica(let source) = HADecider.decide(led).actions.first {
            #expect(source.member == "b" && source.hasServer)
        } else {
            Issue.record("\(HADecider.decide(led).actions)")
        }
    }

    @Test func theStandbyLeaderFollowsTheOtherClusterAndNeverPromotes() {
        let cluster = F.cluster(members: [F.member("a", role: .standbyLeader), F.member("b")])
        let first = HADecider.decide(
            F.observe("a", cluster: cluster, postgres: F.replica(), following: nil, config: Self.standbyConfig))
        #expect(first.actions == [.renewLease, .follow(Self.remote)])
        #expect(!first.actions.contains(.promote))
        let steady = HADecider.decide(
            F.observe(
                "a", cluster: cluster, postgres: F.replica(), following: Self.remote.member, config: Self.standbyConfig)
        )
        #expect(steady.actions == [.renewLease] && steady.reason == .standbyLeader(following: Self.remote.member))
    }

    @Test func aSwitchoverInsideAStandbyClusterHandsTheKeyOverWithoutPromoting() {
        let members = [F.member("a", role: .standbyLeader), F.member("b"), F.member("c", lsn: 0x100_0000)]
        let request = F.cluster(members: members, failover: FailoverRequest(leader: "a", member: "b"))
        // Synchronous mode does not apply in a standby cluster: it restricts no candidate.
        var document = Self.standbyConfig.document
        document["synchronous_mode"] = .bool(true)
        let config = DynamicConfig(document)
        func decide(_ cluster: ClusterView, peers: [PeerStatus]?) -> Decision {
            HADecider.decide(
                F.observe(
                    "a", cluster: cluster, postgres: F.replica(), following: Self.remote.member, config: config,
                    peers: peers))
        }
        // The candidates' positions are asked for first, as for a primary's switchover.
        #expect(decide(request, peers: nil).actions == [.renewLease, .fetchPeers])
        let handover = decide(request, peers: F.peers([("b", 0x500_0000), ("c", 0x100_0000)]))
        #expect(handover.actions == [.demote(.graceful)], "\(handover.actions)")
        #expect(handover.reason == .switchoverSteppingDown(candidate: "b"))
        // With no candidate named, the most advanced replica takes over.
        let any = F.cluster(members: members, failover: FailoverRequest(leader: "a", member: nil))
        #expect(decide(any, peers: F.peers([("b", 0x500_0000), ("c", 0x100_0000)])).actions == [.demote(.graceful)])
        // A candidate too far behind is refused, and the request cleared.
        let behind = F.cluster(members: members, failover: FailoverRequest(leader: "a", member: "c"))
        var limited = document
        limited["maximum_lag_on_failover"] = .number(1024)
        let refused = HADecider.decide(
            F.observe(
                "a", cluster: behind, postgres: F.replica(), following: Self.remote.member,
                config: DynamicConfig(limited), peers: F.peers([("b", 0x500_0000), ("c", 0x100_0000)])))
        #expect(refused.actions == [.renewLease, .clearFailover(expected: 77)], "\(refused.actions)")
        if case .switchoverRejected = refused.reason {} else { Issue.record("\(refused.reason)") }
        // The candidate wins the race and follows the other cluster; nobody promotes.
        let free = F.cluster(
            leader: nil, members: [F.member("a"), F.member("b")], failover: FailoverRequest(leader: "a", member: "b"))
        let won = HADecider.decide(
            F.observe("b", cluster: free, postgres: F.replica(), config: config, peers: F.peers([("a", 0x500_0000)])))
        #expect(won.actions == [.acquireLeader, .follow(Self.remote), .clearFailover(expected: 77)], "\(won.actions)")
        let old = HADecider.decide(
            F.observe("a", cluster: free, postgres: F.replica(), config: config, peers: F.peers([("b", 0x500_0000)])))
        #expect(!old.actions.contains(.acquireLeader) && old.reason == .steppingDownNotRacing, "\(old.reason)")
    }

    @Test func theStandbyLeadersMembersFollowIt() {
        let cluster = F.cluster(members: [F.member("a", role: .standbyLeader), F.member("b")])
        let decision = HADecider.decide(
            F.observe("b", cluster: cluster, postgres: F.replica(), following: nil, config: Self.standbyConfig))
        #expect(decision.actions.count == 1)
        if case .follow(let source) = decision.actions.first {
            #expect(source.member == "a" && source.remote == nil)
            // With standby_cluster's archive commands, as in Patroni (its apply delay is the
            // standby leader's alone).
            #expect(
                source.standbyClusterArchive
                    == StandbyClusterArchive(restoreCommand: "cp /archive/%f %p", archiveCleanupCommand: nil))
        } else {
            Issue.record("\(decision.actions)")
        }
    }

    @Test func theWinnerOfARaceInAStandbyClusterFollowsTheOtherClusterInstead() {
        let cluster = F.cluster(leader: nil, members: [F.member("a"), F.member("b")])
        // Synchronous mode does not apply in a standby cluster (as in Patroni).
        var document = Self.standbyConfig.document
        document["synchronous_mode"] = .bool(true)
        let decision = HADecider.decide(
            F.observe(
                "a", cluster: cluster, postgres: F.replica(), config: DynamicConfig(document),
                peers: F.peers([("b", 0x400_0000)])))
        #expect(decision.actions == [.acquireLeader, .follow(Self.remote)])
        #expect(!decision.actions.contains(.promote))
    }

    @Test func aPrimaryThatFindsTheSectionDemotesToAStandbyLeader() {
        let cluster = F.cluster()
        let decision = HADecider.decide(
            F.observe("a", cluster: cluster, postgres: F.primary, config: Self.standbyConfig))
        #expect(decision.actions == [.renewLease, .demoteCluster(to: Self.remote)])
        #expect(decision.reason == .demotingCluster(to: Self.remote.member))
    }

    @Test func withoutTheSectionTheStandbyLeaderPromotes() {
        let cluster = F.cluster(members: [F.member("a", role: .standbyLeader), F.member("b")])
        let decision = HADecider.decide(
            F.observe("a", cluster: cluster, postgres: F.replica(), following: Self.remote.member))
        #expect(decision.actions.contains(.promote))
    }

    /// A standby cluster's leader whose postgres is down (a demotion that stopped half-way, a
    /// crash) starts it as a standby of the other cluster: never as a primary.
    @Test func aStoppedStandbyLeaderStartsAsAStandbyNeverAsAPrimary() {
        let cluster = F.cluster(members: [F.member("a", role: .standbyLeader, state: .stopped), F.member("b")])
        for postgres in [F.stopped, F.crashed] {
            let decision = HADecider.decide(
                F.observe(
                    "a", cluster: cluster, postgres: postgres, config: Self.standbyConfig, lastRunningRole: .primary))
            #expect(decision.actions == [.renewLease, .startPostgres(following: Self.remote, asPrimary: false)])
        }
    }

    /// Unknown is not "a primary cluster": with the config key missing or invalid and no valid one
    /// read by this agent (it restarted), a leader in recovery does not promote and nobody races.
    @Test func withTheConfigUnknownNobodyPromotes() {
        let cluster = F.cluster(members: [F.member("a", role: .standbyLeader), F.member("b")])
        var leader = F.observe("a", cluster: cluster, postgres: F.replica(), following: Self.remote.member)
        leader.configUnknown = true
        let held = HADecider.decide(leader)
        #expect(held.actions == [.renewLease] && held.reason == .configUnknownNotPromoting)
        var racer = F.observe(
            "b", cluster: F.cluster(leader: nil, members: [F.member("b")]), postgres: F.replica(),
            peers: F.peers([]))
        racer.configUnknown = true
        let waiting = HADecider.decide(racer)
        #expect(waiting.actions.isEmpty && waiting.reason == .configUnknownNotPromoting)
    }

    /// The standby leader is itself a standby: never a pg_rewind source for its members (the
    /// attempt would stop them in a loop); a member that may have diverged re-points only.
    @Test func membersOfAStandbyClusterNeverRewindFromTheStandbyLeader() {
        let cluster = F.cluster(members: [F.member("a", role: .standbyLeader), F.member("b")])
        var memory = HAMemory()
        memory.mayHaveDiverged = true
        let decision = HADecider.decide(
            F.observe(
                "b", cluster: cluster, postgres: F.replica(), following: nil, config: Self.standbyConfig, memory: memory
            ))
        #expect(decision.actions.count == 1)
        if case .follow = decision.actions.first {} else { Issue.record("\(decision.actions)") }
        // Stopped, after an agent restart (last role unknown) or a standby leader's switchover:
        // started as a standby of the leader, without pg_rewind from it. Before, the stopped
        // member asked for pg_rewind from the standby leader, which refuses (not a primary), and
        // stayed stopped.
        for last: Member.Role? in [nil, .replica] {
            let stopped = HADecider.decide(
                F.observe(
                    "b", cluster: cluster, postgres: F.stopped, config: Self.standbyConfig, lastRunningRole: last))
            #expect(stopped.actions.count == 1, "\(String(describing: last)): \(stopped.actions)")
            if case .startPostgres(let source?, asPrimary: false) = stopped.actions.first {
                #expect(source.member == "a")
            } else {
                Issue.record("\(String(describing: last)): \(stopped.actions)")
            }
        }
        // Last seen writable, or possibly diverged: still pg_rewind first (which refuses a
        // standby leader as its source, so the member stays stopped rather than joining with a
        // history of its own).
        var diverged = HAMemory()
        diverged.mayHaveDiverged = true
        for (last, memory) in [(Member.Role.primary, HAMemory()), (.replica, diverged)] {
            let stopped = HADecider.decide(
                F.observe(
                    "b", cluster: cluster, postgres: F.stopped, config: Self.standbyConfig, memory: memory,
                    lastRunningRole: last))
            if case .rewindIfNeeded = stopped.actions.first {} else { Issue.record("\(last): \(stopped.actions)") }
        }
    }

    /// The standby leader that stepped down keeps a recovery file naming the other cluster and its
    /// slot: it waits for the candidate instead of starting on it (which would take the slot back).
    @Test func aSteppedDownStandbyLeaderWaitsForTheCandidate() {
        let pending = F.cluster(
            leader: nil, members: [F.member("a", state: .stopped), F.member("b")],
            failover: FailoverRequest(leader: "a", member: "b"))
        let waiting = HADecider.decide(
            F.observe("a", cluster: pending, postgres: F.stopped, config: Self.standbyConfig, lastRunningRole: .replica)
        )
        #expect(waiting.actions.isEmpty && waiting.reason == .waitingForCandidate("b"), "\(waiting.actions)")
        // The candidate gone (its key expired): it starts, read-only.
        let gone = F.cluster(
            leader: nil, members: [F.member("a", state: .stopped)], failover: FailoverRequest(leader: "a", member: "b"))
        let started = HADecider.decide(
            F.observe("a", cluster: gone, postgres: F.stopped, config: Self.standbyConfig, lastRunningRole: .replica))
        #expect(started.actions == [.startPostgres(following: nil, asPrimary: false)], "\(started.actions)")
    }

    /// Unknown is not "no lag": a standby leader that cannot read its own position does not hand
    /// over (before, it counted as position 0 and any candidate passed).
    @Test func aSwitchoverNeedsTheLeadersOwnPosition() {
        let request = F.cluster(
            members: [F.member("a", role: .standbyLeader), F.member("b")],
            failover: FailoverRequest(leader: "a", member: "b"))
        var blind = F.replica()
        blind.receiveLSN = nil
        blind.replayLSN = nil
        let refused = HADecider.decide(
            F.observe(
                "a", cluster: request, postgres: blind, following: Self.remote.member, config: Self.standbyConfig,
                peers: F.peers([("b", 0x500_0000)])))
        #expect(refused.actions == [.renewLease, .clearFailover(expected: 77)], "\(refused.actions)")
        if case .switchoverRejected = refused.reason {} else { Issue.record("\(refused.reason)") }
    }
}

/// `clone_progress` in a member key: Baton's own key, shown by `baton list`; one of another shape
/// (a hostile write) is left out instead of hiding the member.
@Suite struct CloneProgressRecordTests {
    @Test func summaryAndRoundTrip() throws {
        let record = Member.CloneProgressRecord(
            doneKB: 120 * 1024, totalKB: 266 * 1024, rateKBs: 30 * 1024, method: nil)
        #expect(record.summary == "45% of 266 MB, 120 MB at 30 MB/s")
        #expect(
            Member.CloneProgressRecord(doneKB: 5 * 1024, totalKB: nil, rateKBs: 1024, method: "walg").summary
                == "5 MB at 1 MB/s")
        var member = Fixture.member("b", state: .creatingReplica)
        member.cloneProgress = record
        let data = try JSONEncoder().encode(member.body)
        let back = Member(name: "b", body: try JSONDecoder().decode(Member.Body.self, from: data))
        #expect(back.cloneProgress == record)
        let hostile =
            #"{"conn_url": "postgres://x:5432/postgres", "state": "creating replica", "clone_progress": "lots"}"#
        let read = try JSONDecoder().decode(Member.Body.self, from: Data(hostile.utf8))
        #expect(read.clone_progress == nil && read.state == .creatingReplica)
    }
}
