import BatonCore

/// Builders for observations: a three-member cluster (a, b, c) where `a` leads unless a test says
/// otherwise, seen from `me`.
enum Fixture {
    static let t0 = MonotonicInstant(sinceOrigin: .seconds(1000))
    static let session = SessionID(rawValue: 0x10)

    static func member(
        _ name: String, role: Member.Role = .replica, state: Member.State = .running, lsn: UInt64 = 0x500_0000,
        timeline: Int = 1, tags: Tags = Tags()
    ) -> Member {
        let port = 5432 + (Int(name.unicodeScalars.first?.value ?? 97) - 97)
        return Member(
            name: name, connURL: "postgres://127.0.0.1:\(port)/postgres", apiURL: "http://127.0.0.1:8008/patroni",
            state: state, role: role, xlogLocation: LSN(lsn),
            replicationState: role == .replica && state == .running ? "streaming" : nil, timeline: timeline,
            tags: tags)
    }

    static func cluster(
        leader: String? = "a", leaderSession: SessionID? = session, members: [Member]? = nil,
        optime: UInt64? = 0x500_0000, initialize: String? = "7000", failover: FailoverRequest? = nil,
        sync: SyncState? = nil
    ) -> ClusterView {
        ClusterView(
            revision: 100, initialize: initialize, initializeRevision: initialize == nil ? nil : 2,
            config: nil,
            leader: leader.map { LeaderLock(member: $0, session: leaderSession, modRevision: 50) },
            members: members ?? [member("a", role: .primary), member("b"), member("c")],
            failover: failover.map { Versioned($0, modRevision: 77) },
            sync: sync.map { Versioned($0, modRevision: 88) },
            status: optime.map { LeaderStatus(optime: LSN($0)) })
    }

    static let primary = PostgresStatus(
        process: .running, inRecovery: false, timeline: 1, currentLSN: LSN(0x500_0000), systemIdentifier: "7000")

    static func replica(lsn: UInt64 = 0x500_0000, timeline: Int = 1) -> PostgresStatus {
        PostgresStatus(
            process: .running, inRecovery: true, timeline: timeline, receiveLSN: LSN(lsn), replayLSN: LSN(lsn),
            streaming: true, systemIdentifier: "7000")
    }

    static let stopped = PostgresStatus(process: .stopped, systemIdentifier: "7000")
    static let crashed = PostgresStatus(process: .crashed, systemIdentifier: "7000")
    static let empty = PostgresStatus(process: .uninitialized)

    /// PG_VERSION moved away while postgres still runs (PID 4242).
    static let damagedRunning = PostgresStatus(
        process: .unusable, problem: "/data is not empty but holds no usable PostgreSQL cluster",
        postmasterPID: 4242)
    static let damagedStopped = PostgresStatus(
        process: .unusable, problem: "/data is not empty but holds no usable PostgreSQL cluster")

    /// Postgres runs, but the status query failed (authentication, no connection slots, timeout).
    static let blind = PostgresStatus(
        process: .running, systemIdentifier: "7000", problem: "FATAL: password authentication failed",
        postmasterPID: 4242)

    /// Blind, but postmaster.pid says what the postmaster is: `ready` (a primary) or `standby`.
    static func blind(postmaster: String) -> PostgresStatus {
        var status = blind
        status.postmasterState = postmaster
        return status
    }

    static func config(_ extra: [String: JSONValue] = [:]) -> DynamicConfig {
        var document: [String: JSONValue] = [
            "ttl": .number(30), "loop_wait": .number(10), "retry_timeout": .number(10),
        ]
        for (key, value) in extra { document[key] = value }
        return DynamicConfig(document)
    }

    static func observe(
        _ me: String, cluster: ClusterView?, postgres: PostgresStatus, following: String? = nil,
        leaseValid: Bool = true, config: DynamicConfig = config(), tags: Tags = Tags(),
        peers: [PeerStatus]? = nil, failsafeConfirmed: Bool? = nil, memory: HAMemory = HAMemory(),
        now: MonotonicInstant = t0, wallClock: Double = 1_790_000_000, applied: SynchronousSetting? = nil,
        appliedAt: LSN? = nil,
        leaseTTL: Duration? = nil, confirmedFailsafeLeader: String? = nil, watchdogUsable: Bool = true,
        lastRunningRole: Member.Role? = nil, lastRejoinFailed: Bool = false
    ) -> Observation {
        Observation(
            me: me, now: now, wallClockSeconds: wallClock, cluster: cluster,
            storeProblem: cluster == nil ? "connection refused" : nil, postgres: postgres, following: following,
            appliedSynchronousStandbys: applied, synchronousAppliedAt: appliedAt,
            lease: LeaseState(
                session: session, deadline: leaseValid ? now + .seconds(10) : now - .seconds(1), ttl: leaseTTL),
            config: config, tags: tags, peers: peers, failsafeConfirmed: failsafeConfirmed, memory: memory,
            confirmedFailsafeLeader: confirmedFailsafeLeader, watchdogUsable: watchdogUsable,
            lastRunningRole: lastRunningRole, lastRejoinFailed: lastRejoinFailed)
    }

    static func peers(_ specs: [(String, UInt64)], primary: String? = nil) -> [PeerStatus] {
        specs.map { PeerStatus(name: $0.0, reachable: true, runningAsPrimary: $0.0 == primary, walPosition: LSN($0.1)) }
    }
}
