import Testing

@testable import BatonCore

/// `baton migrate`'s decisions: what is unknown or unready is refused with what to do, a leader is
/// moved through a switchover to a replica that may take over (one already on Baton first).
@Suite struct MigrationTests {
    static let patroni = "4.1.5"

    static func member(
        _ name: String, role: Member.Role = .replica, version: String = patroni, state: Member.State = .running,
        streaming: Bool = true, replay: UInt64 = 100, tags: Tags = Tags()
    ) -> Member {
        Member(
            name: name, state: state, role: role, version: version, replayLSN: LSN(replay),
            replicationState: role == .replica ? (streaming ? "streaming" : "in archive recovery") : nil, tags: tags)
    }

    static func view(_ members: [Member], leader: String? = "node1", config: [String: JSONValue] = [:]) -> ClusterView {
        ClusterView(
            config: Versioned(DynamicConfig(config), modRevision: 1),
            leader: leader.map { LeaderLock(member: $0, session: nil, modRevision: 2) }, members: members)
    }

    static let healthy = [
        member("node1", role: .primary), member("node2", replay: 90), member("node3", replay: 100),
    ]

    @Test func versions() throws {
        #expect(Migration.isSupportedPatroni("4.1.5"))
        #expect(Migration.isSupportedPatroni("4.0.0"))
        #expect(Migration.isSupportedPatroni("4.1"))
        for version in ["3.3.2", "5.0.0", "4.2.0", "", "4", "4.1.5.1", "4.x.1", "4..1", "0.1.0", "4.1.5-dev"] {
            #expect(!Migration.isSupportedPatroni(version), "\(version)")
        }
    }

    @Test func aReplicaIsMovedDirectly() throws {
        #expect(try Migration.plan(Self.view(Self.healthy), member: "node2", batonVersion: "0.1.0").get() == .replica)
    }

    @Test func aLeaderSwitchesOverFirstPreferringBatonThenTheLeastLagging() throws {
        #expect(
            try Migration.plan(Self.view(Self.healthy), member: "node1", batonVersion: "0.1.0").get()
                == .leader(candidate: "node3"))
        var members = Self.healthy
        members[0].xlogLocation = LSN(100)
        members[1].version = "0.1.0"  // node2 already on Baton, though it lags more
        #expect(
            try Migration.plan(Self.view(members), member: "node1", batonVersion: "0.1.0").get()
                == .leader(candidate: "node2"))
        // … but not beyond maximum_lag_on_failover, nor with the leader's position unknown.
        members[0].xlogLocation = LSN(100 + 2_000_000)
        #expect(
            try Migration.plan(Self.view(members), member: "node1", batonVersion: "0.1.0").get()
                == .leader(candidate: "node3"))
        members[0].xlogLocation = nil
        #expect(
            try Migration.plan(Self.view(members), member: "node1", batonVersion: "0.1.0").get()
                == .leader(candidate: "node3"))
        #expect(
            try Migration.plan(Self.view(Self.healthy), member: "node1", batonVersion: "0.1.0", preferred: "node2")
                .get() == .leader(candidate: "node2"))
    }

    /// Synchronous mode: only a standby the sync key names may take over (Patroni's leader answers
    /// 412 to any other candidate).
    @Test func inSynchronousModeOnlyTheSynchronousStandby() throws {
        var view = Self.view(Self.healthy, config: ["synchronous_mode": .bool(true)])
        guard case .failure(let unnamed) = Migration.plan(view, member: "node1", batonVersion: "0.1.0") else {
            Issue.record("a leader without a sync key was moved")
            return
        }
        #expect(unnamed.description.contains("synchronous mode"), "\(unnamed)")
        view.sync = Versioned(SyncState(leader: "node1", syncStandbys: ["node2"]), modRevision: 4)
        #expect(try Migration.plan(view, member: "node1", batonVersion: "0.1.0").get() == .leader(candidate: "node2"))
        guard case .failure = Migration.plan(view, member: "node1", batonVersion: "0.1.0", preferred: "node3") else {
            Issue.record("an asynchronous candidate was accepted in synchronous mode")
            return
        }
        view.sync = Versioned(SyncState(leader: "node3", syncStandbys: ["node2"]), modRevision: 5)
        guard case .failure = Migration.plan(view, member: "node1", batonVersion: "0.1.0") else {
            Issue.record("a sync key of another leader was trusted")
            return
        }
    }

    @Test func aLeaderWithNobodyToTakeOverIsRefused() throws {
        let members = [
            Self.member("node1", role: .primary),
            Self.member("node2", tags: Tags(["nofailover": .bool(true)])),
            Self.member("node3", streaming: false),
            Self.member("node4", state: .starting),
        ]
        guard case .failure(let refusal) = Migration.plan(Self.view(members), member: "node1", batonVersion: "0.1.0")
        else {
            Issue.record("a leader nobody can take over from was accepted")
            return
        }
        #expect(refusal.description.contains("no streaming replica may take over"), "\(refusal)")
        guard
            case .failure(let named) = Migration.plan(
                Self.view(members), member: "node1", batonVersion: "0.1.0", preferred: "node2")
        else {
            Issue.record("a nofailover candidate was accepted")
            return
        }
        #expect(named.description.contains("node2 cannot take over"), "\(named)")
    }

    @Test func unknownOrUnreadyIsRefusedWithWhatToDo() throws {
        func refused(_ view: ClusterView, _ name: String = "node2") -> String {
            if case .failure(let refusal) = Migration.plan(view, member: name, batonVersion: "0.1.0") {
                return refusal.description
            }
            return "accepted"
        }
        #expect(refused(Self.view(Self.healthy), "node9").contains("node9 has no member key"))
        var members = Self.healthy
        members[1].version = "3.3.2"
        #expect(refused(Self.view(members)).contains("not a supported Patroni release"))
        #expect(refused(Self.view(Self.healthy, config: ["pause": .bool(true)])).contains("paused"))
        var pending = Self.view(Self.healthy)
        pending.failover = Versioned(FailoverRequest(leader: "node1", member: "node3"), modRevision: 3)
        #expect(refused(pending).contains("pending"))
        members = Self.healthy
        members[1].state = .crashed
        #expect(refused(Self.view(members)).contains("crashed, not running"))
        #expect(refused(Self.view(Self.healthy, leader: nil)).contains("no running leader"))
        members = Self.healthy
        members[0].state = .stopped
        #expect(refused(Self.view(members)).contains("no running leader"))
    }

    @Test func aNodeOnBatonAlreadyIsLeftAlone() throws {
        var members = Self.healthy
        members[1].version = "0.1.0"
        #expect(try Migration.plan(Self.view(members), member: "node2", batonVersion: "0.1.0").get() == .alreadyBaton)
    }

    @Test func healthyOnlyOnceBatonWroteTheKeyAndItStreams() throws {
        var members = Self.healthy
        #expect(Migration.healthyUnderBaton(Self.view(members), member: "node2", batonVersion: "0.1.0") != nil)
        members[1].version = "0.1.0"
        members[1].replicationState = "starting"
        #expect(
            Migration.healthyUnderBaton(Self.view(members), member: "node2", batonVersion: "0.1.0")?
                .contains("not streaming") == true)
        members[1].replicationState = "streaming"
        #expect(Migration.healthyUnderBaton(Self.view(members), member: "node2", batonVersion: "0.1.0") == nil)
        #expect(
            Migration.healthyUnderBaton(Self.view(members, leader: nil), member: "node2", batonVersion: "0.1.0") != nil)
        #expect(Migration.healthyUnderBaton(Self.view(members), member: "node7", batonVersion: "0.1.0") != nil)
    }
}
