/// What one HA cycle does: actions to run in order, why, and what to remember.
public struct Decision: Hashable, Sendable {
    public var actions: [Action]
    public var reason: Reason
    public var memory: HAMemory
    /// Decide again as soon as the actions ran (the next step depends on their outcome).
    public var recheckImmediately: Bool
    /// Decide again within this time at the latest (a deadline the decision waits for falls
    /// before the next loop_wait).
    public var recheckAfter: Duration?

    public init(
        _ actions: [Action], _ reason: Reason, memory: HAMemory, recheckImmediately: Bool = false,
        recheckAfter: Duration? = nil
    ) {
        self.actions = actions
        self.reason = reason
        self.memory = memory
        self.recheckImmediately = recheckImmediately
        self.recheckAfter = recheckAfter
    }
}

/// The HA state machine: an observation in, a decision out. Pure; no clock, socket or process.
///
/// Safety rules it keeps, each covered by table tests and by the simulated cluster:
/// * only the holder of the leader key runs as primary; without a valid lease a primary demotes;
/// * a replica races only within `maximum_lag_on_failover` of the leader's last published optime,
///   not behind on timeline (with `check_timeline`), not tagged `nofailover`, a synchronous standby
///   in synchronous mode, and when no reachable peer is primary or further ahead;
/// * pause mode takes no automatic action beyond keeping (or taking a free) leader key.
public enum HADecider {
    public static func decide(_ o: Observation) -> Decision {
        var memory = o.memory
        let pg = o.postgres
        let runningPrimary = pg.process == .running && pg.inRecovery == false

        guard let cluster = o.cluster else {
            return storeUnreachable(o, runningPrimary: runningPrimary)
        }
        if o.lease.session == nil {
            return Decision([.createSession], .noSession, memory: memory, recheckImmediately: true)
        }
        if let granted = o.lease.ttl, granted != o.config.ttl {
            return Decision(
                [.replaceSession], .sessionTTLChanged(granted: granted, configured: o.config.ttl), memory: memory,
                recheckImmediately: true)
        }
        let paused = o.config.pause
        let iAmLeader = cluster.leader?.member == o.me
        if !(pg.process == .running && pg.inRecovery == nil) { memory.recoveryUnknownSince = nil }

        // Local data that is there but unusable is never bootstrapped, cloned into or deleted.
        if pg.process == .unusable {
            let what = pg.problem ?? "no valid cluster in the data directory"
            if iAmLeader {
                return Decision(
                    [.stopPostgres(.fast), .releaseLeader], .leaderDataDirectoryUnusable(what), memory: memory)
            }
            return Decision(
                pg.postmasterPID != nil ? [.stopPostgres(.fast)] : [], .dataDirectoryUnusable(what), memory: memory)
        }
        // A leader never clones (nor bootstraps over) its own, missing data: it lets go of the key.
        if pg.process == .uninitialized, iAmLeader {
            return Decision([.releaseLeader], .leaderWithoutData, memory: memory, recheckImmediately: true)
        }

        // The cluster's identity.
        if let clusterID = cluster.initialize, !clusterID.isEmpty, let localID = pg.systemIdentifier,
            localID != clusterID
        {
            return Decision([], .systemIdentifierMismatch(cluster: clusterID, local: localID), memory: memory)
        }
        if cluster.leader == nil, pg.process == .uninitialized {
            if cluster.initialize == nil {
                if paused { return Decision([], .paused("no cluster yet; not bootstrapping"), memory: memory) }
                // A standby cluster starts from a copy of the cluster it follows, not from initdb.
                if let standby = o.config.standbyCluster {
                    guard let remote = standby.source else {
                        return Decision([], .standbyClusterWithoutSource, memory: memory)
                    }
                    // From an archive only: made by a method that needs no server (a restore).
                    if !remote.hasServer, !canCreateWithoutServer(o, standby) {
                        return Decision([], .noReplicaMethodWithoutServer, memory: memory)
                    }
                    return Decision(
                        [
                            .claimInitialize, .cloneReplica(from: remote),
                            .startPostgres(following: remote, asPrimary: false),
                        ], .bootstrappingStandbyLeader(from: remote.member), memory: memory, recheckImmediately: true)
                }
                return Decision(
                    [.claimInitialize, .bootstrap], .bootstrapping, memory: memory, recheckImmediately: true)
            }
            // No member leads, but a replica method can make this one from a backup (`no_leader`):
            // it is restored, recovers from the archive and may then race like any replica
            // (maximum_lag_on_failover against the last leader's position still applies).
            if cluster.initialize != "", canCreateWithoutServer(o, o.config.standbyCluster) {
                if paused { return Decision([], .paused("no local data and no leader; not restoring"), memory: memory) }
                // Named apart from the other cluster's server: the winner of a race re-points to it.
                let source =
                    o.config.standbyCluster?.source.map {
                        ReplicationSource.withoutServer("\($0.member) (from a backup)", remote: $0.remote)
                    } ?? .backupWithoutLeader
                return Decision(
                    [.cloneReplica(from: source), .startPostgres(following: source, asPrimary: false)],
                    .cloningWithoutLeader, memory: memory, recheckImmediately: true)
            }
            return Decision(
                [], cluster.initialize == "" ? .waitingForBootstrap : .waitingForLeaderToClone, memory: memory)
        }

        // No local data: clone from a running member.
        if pg.process == .uninitialized {
            if paused { return Decision([], .paused("no local data; not cloning"), memory: memory) }
            guard let source = cloneSource(cluster, me: o.me) else {
                return Decision([], .waitingForLeaderToClone, memory: memory)
            }
            return Decision(
                [.cloneReplica(from: source), .startPostgres(following: leaderSource(o, cluster), asPrimary: false)],
                .cloning(from: source.member), memory: memory, recheckImmediately: true)
        }

        // Postgres is not running.
        if pg.process == .stopped || pg.process == .crashed {
            if paused { return Decision([], .paused("postgres is not running; not starting it"), memory: memory) }
            // After a failed start, the next one waits: loop_wait, doubling with each failure up to
            // a minute (never shorter than loop_wait). A postmaster that dies during start-up wakes
            // the loop; without this, a start that cannot succeed (a broken configuration, a data
            // directory that needs an operator) was retried several times a second.
            var backingOff: Duration?
            if o.failedStarts > 0, let last = o.lastFailedStartAt {
                let doubled = o.config.loopWait * (1 << min(o.failedStarts - 1, 6))
                let backoff = min(doubled, max(o.config.loopWait, .seconds(60)))
                if o.now - last < backoff { backingOff = backoff - (o.now - last) }
            }
            if iAmLeader {
                // The key names this member but another session (this agent restarted): it is not
                // held yet. Starting as a primary now would run one that nobody's lease covers
                // when the old session expires and another member takes over. Re-attach first.
                if let lock = cluster.leader, lock.session != o.lease.session {
                    return Decision(
                        [.renewLease, .reattachLeader], .reattachingLock, memory: memory, recheckImmediately: true)
                }
                // A standby cluster's leader starts as a standby of the other cluster, never as a
                // primary (a demotion to a standby cluster that stopped half-way included).
                if let standby = o.config.standbyCluster {
                    guard let remote = standby.source else {
                        return Decision([.renewLease], .standbyClusterWithoutSource, memory: memory)
                    }
                    if let wait = backingOff {
                        return Decision(
                            [.renewLease], .startBackingOff(failures: o.failedStarts, retryIn: wait), memory: memory)
                    }
                    return Decision(
                        [.renewLease, .startPostgres(following: remote, asPrimary: false)],
                        .standbyLeader(following: remote.member), memory: memory, recheckImmediately: true)
                }
                let started = memory.crashRecoveryStartedAt ?? o.now
                memory.crashRecoveryStartedAt = started
                let elapsed = o.now - started
                if elapsed > o.config.primaryStartTimeout {
                    memory.crashRecoveryStartedAt = nil
                    return Decision([.releaseLeader], .primaryStartTimeout(elapsed: elapsed), memory: memory)
                }
                if let wait = backingOff {
                    return Decision(
                        [.renewLease], .startBackingOff(failures: o.failedStarts, retryIn: wait), memory: memory)
                }
                return Decision(
                    [.renewLease, .startPostgres(following: nil, asPrimary: true)],
                    .restartingCrashedPrimary(elapsed: elapsed), memory: memory, recheckImmediately: true)
            }
            memory.crashRecoveryStartedAt = nil
            if let wait = backingOff {
                return Decision([], .startBackingOff(failures: o.failedStarts, retryIn: wait), memory: memory)
            }
            if let source = leaderSource(o, cluster), cluster.leader != nil {
                // A member last seen running as a standby, never started read-only from a primary's
                // data since, has not diverged: no pg_rewind. Anything else (last seen as primary,
                // never seen, possibly diverged) goes through pg_rewind from the leader, which
                // finds out. It then streams from its upstream (the leader, or `replicatefrom`).
                let upstream = upstreamSource(o, cluster) ?? source
                let start = Action.startPostgres(following: upstream, asPrimary: false)
                // In a standby cluster the leader is itself a standby, which pg_rewind cannot use as
                // a source (the attempt fails, and the member would stay stopped): re-point only.
                // A member last seen as a primary (or possibly diverged) keeps asking for pg_rewind,
                // which leaves it stopped there: safe, and it says so.
                let cleanStandby =
                    !memory.mayHaveDiverged
                    && (o.lastRunningRole == .replica
                        || (o.config.standbyCluster != nil && o.lastRunningRole != .primary))
                return Decision(
                    cleanStandby ? [start] : [.rewindIfNeeded(from: source), start],
                    .startingReplica(following: upstream.member), memory: memory, recheckImmediately: true)
            }
            // A standby leader that stepped down for a switchover still has a recovery file naming
            // the other cluster and its slot: started now, it would take the slot back from the
            // candidate. It waits for the candidate to lead (at most until the candidate's member
            // key expires with its session).
            if o.config.standbyCluster != nil, cluster.leader == nil, let candidate = cluster.failover?.value.member,
                candidate != o.me, cluster.member(named: candidate)?.state == .running
            {
                return Decision([], .waitingForCandidate(candidate), memory: memory)
            }
            // Read-only, with no leader to follow: a data directory that may have run as a primary
            // must be rewound before it follows whoever leads next.
            if o.lastRunningRole != .replica { memory.mayHaveDiverged = true }
            return Decision(
                [.startPostgres(following: nil, asPrimary: false)], .startingReadOnly, memory: memory,
                recheckImmediately: true)
        }
        if pg.process == .starting {
            return Decision(iAmLeader ? [.renewLease] : [], .postgresStarting, memory: memory)
        }
        memory.crashRecoveryStartedAt = nil

        // Postgres runs.
        if iAmLeader {
            return leaderCycle(o, cluster, memory: memory)
        }
        // Not the leader, cannot tell what postgres is, and the postmaster does not say "standby":
        // it may be a primary that nobody fences (the agent restarted without a lease, a password
        // changed). Stop it; it starts again as a standby of the leader.
        if pg.process == .running, pg.inRecovery == nil, pg.postmasterState != "standby", !paused {
            return Decision(
                [.demote(.immediateNoLock)], .recoveryStateUnknown(pg.problem ?? "no answer"), memory: memory,
                recheckImmediately: true)
        }
        if let leader = cluster.leader {
            if runningPrimary {
                if paused {
                    return Decision(
                        [], .paused("running as primary while \(leader.member) holds the key"), memory: memory)
                }
                return Decision(
                    [.demote(.immediateNoLock)], .demotingForOtherLeader(leader: leader.member), memory: memory,
                    recheckImmediately: true)
            }
            let upstream = upstreamSource(o, cluster)
            // In a standby cluster the leader is itself a standby: it cannot be a pg_rewind source
            // (the attempt would stop this member in a loop): a member re-points only.
            let standbyCluster = o.config.standbyCluster != nil
            if let upstream, o.following != upstream.member, let source = leaderSource(o, cluster) {
                if paused { return Decision([], .paused("not re-pointing replication"), memory: memory) }
                // Started read-only from a data directory that may have run as a primary, or found
                // running and not streaming with a history this agent never saw (it restarted): a
                // plain re-point would leave it refusing the new timeline for ever if it holds WAL
                // past the fork point. pg_rewind (from the leader) finds out.
                // (A nostream member never streams: that says nothing about divergence.)
                let mayHaveDiverged =
                    memory.mayHaveDiverged || (o.lastRunningRole == nil && !pg.streaming && !o.tags.noStream)
                if mayHaveDiverged, !standbyCluster {
                    return Decision(
                        [.rejoinDiverged(from: source)], .followingNewLeader(leader: leader.member), memory: memory)
                }
                return Decision(
                    [.follow(upstream)],
                    upstream.member == leader.member
                        ? .followingNewLeader(leader: leader.member) : .followingUpstream(upstream.member),
                    memory: memory)
            }
            if pg.inRecovery == true, o.following == upstream?.member { memory.mayHaveDiverged = false }
            if !standbyCluster, let rejoin = rejoinIfStuck(o, cluster, leader: leader.member, memory: &memory) {
                return rejoin
            }
            return Decision([], .following(leader: leader.member), memory: memory)
        }
        return race(o, cluster, runningPrimary: runningPrimary, memory: memory)
    }

    /// How long a standby may sit on an older timeline than its leader's without streaming before
    /// it is taken for diverged. Switching to a new timeline takes a standby that can follow well
    /// under a second; one that is behind but fine keeps streaming meanwhile.
    static func stuckTimelineGrace(_ o: Observation) -> Duration { max(.seconds(10), o.config.loopWait * 2) }

    /// A standby following the leader but on an older timeline, not streaming, for
    /// `stuckTimelineGrace`: it most likely received WAL of the old timeline past the point where
    /// the leader's forked off (an asynchronous standby ahead of the synchronous one when the old
    /// primary died), and PostgreSQL refuses the new timeline for ever ("new timeline … forked off
    /// current database system timeline … before current recovery point"). pg_rewind then decides
    /// (a no-op when it did not diverge); once per leader and timeline that it ran through, so that
    /// a standby stuck for another reason is not restarted in a loop, and again (after the grace)
    /// when that rejoin failed.
    static func rejoinIfStuck(
        _ o: Observation, _ cluster: ClusterView, leader: String, memory: inout HAMemory
    ) -> Decision? {
        let pg = o.postgres
        guard pg.inRecovery == true, !pg.streaming, let local = pg.timeline,
            let leaderTimeline = cluster.member(named: leader)?.timeline, local < leaderTimeline,
            let source = leaderSource(o, cluster)
        else {
            memory.stuckOnOlderTimelineSince = nil
            return nil
        }
        let since = memory.stuckOnOlderTimelineSince ?? o.now
        memory.stuckOnOlderTimelineSince = since
        let target = "\(leader)@\(leaderTimeline)"
        // A rejoin that failed did not happen: the standby is tried again after another grace.
        if o.lastRejoinFailed, memory.rewoundWhenStuckOnto == target { memory.rewoundWhenStuckOnto = nil }
        guard o.now - since >= stuckTimelineGrace(o), memory.rewoundWhenStuckOnto != target, !o.config.pause else {
            return nil
        }
        memory.stuckOnOlderTimelineSince = nil
        memory.rewoundWhenStuckOnto = target
        return Decision(
            [.rejoinDiverged(from: source)],
            .standbyStuckOnOlderTimeline(
                leader: leader, local: local, leaderTimeline: leaderTimeline, waited: o.now - since),
            memory: memory, recheckImmediately: true)
    }

    // MARK: Store unreachable

    static func storeUnreachable(_ o: Observation, runningPrimary: Bool) -> Decision {
        let memory = o.memory
        guard runningPrimary else {
            return Decision([], .storeUnreachableWaiting, memory: memory)
        }
        if o.config.failsafeMode {
            switch o.failsafeConfirmed {
            case true?: return Decision([], .failsafeConfirmed, memory: memory)
            case nil:
                return Decision([.askFailsafeConfirmation], .askingFailsafe, memory: memory, recheckImmediately: true)
            case false?: break
            }
        }
        if o.config.pause {
            return Decision([], .paused("store unreachable; no automatic action"), memory: memory)
        }
        if o.lease.isValid(at: o.now), let deadline = o.lease.deadline {
            return Decision([], .storeUnreachableKeepingPrimary(remaining: deadline - o.now), memory: memory)
        }
        return Decision([.demote(.offline)], .storeUnreachableFencing, memory: memory)
    }

    // MARK: Leader

    static func leaderCycle(_ o: Observation, _ cluster: ClusterView, memory: HAMemory) -> Decision {
        let pg = o.postgres
        var actions: [Action] = [.renewLease]
        if let lock = cluster.leader, lock.session != o.lease.session {
            actions.append(.reattachLeader)
            return Decision(actions, .reattachingLock, memory: memory, recheckImmediately: true)
        }
        if o.config.pause {
            return Decision(actions, .paused("holding the leader key"), memory: memory)
        }
        if !o.fenceGuardRunning {
            return Decision([.demote(.graceful)], .fenceGuardDown, memory: memory, recheckImmediately: true)
        }
        guard let inRecovery = pg.inRecovery else {
            // Unknown is not "standby": never the promote path. Postgres may well be serving as
            // the primary; keep the key for up to ttl, then stop it and let a member the cluster
            // can see take over.
            var memory = memory
            let since = memory.recoveryUnknownSince ?? o.now
            memory.recoveryUnknownSince = since
            let elapsed = o.now - since
            if elapsed < o.config.ttl {
                return Decision(
                    actions, .leaderRecoveryStateUnknown(pg.problem ?? "no answer", elapsed: elapsed), memory: memory)
            }
            memory.recoveryUnknownSince = nil
            return Decision(
                [.demote(.graceful)], .leaderCannotSeePostgres(elapsed: elapsed), memory: memory,
                recheckImmediately: true)
        }
        if let standby = o.config.standbyCluster {
            return standbyLeaderCycle(o, cluster, standby, inRecovery: inRecovery, actions: actions, memory: memory)
        }
        // Unknown is not "a primary cluster": a standby cluster's leader whose config key is gone
        // or unreadable (and was never read by this agent) must not promote.
        if inRecovery, o.configUnknown {
            return Decision(actions, .configUnknownNotPromoting, memory: memory)
        }
        if inRecovery {
            if o.config.synchronousMode || (cluster.sync?.value.quorum ?? 0) != 0 {
                // Only a member the key names may promote here. A member outside the quorum's
                // voters that won the race (with its votes) wrote itself in as the key's leader
                // before taking the lock; a leader key found otherwise (written by a tool, or
                // reattached) gives no votes: released.
                let sync = cluster.sync
                let listed = sync.map { $0.value.leader == o.me || $0.value.isSynchronous(o.me) } ?? false
                if !listed {
                    return Decision([.releaseLeader], .notSynchronousReleasing, memory: memory)
                }
                if let sync, sync.value.leader != o.me {
                    actions.append(.writeSync(SyncState(leader: o.me, syncStandbys: []), expected: sync.modRevision))
                }
            }
            actions.append(.promote)
            if let failover = cluster.failover { actions.append(.clearFailover(expected: failover.modRevision)) }
            return Decision(actions, .promotingWithLock, memory: memory, recheckImmediately: true)
        }
        if cluster.initialize?.isEmpty ?? true, let systemID = pg.systemIdentifier {
            actions.append(.recordSystemIdentifier(systemID))
            return Decision(
                actions,
                cluster.initialize == nil
                    ? .takingOverExistingData(systemID: systemID)
                    : .bootstrapFinished(systemID: systemID), memory: memory)
        }
        if let failover = cluster.failover {
            if let decision = switchover(o, cluster, failover, actions: actions, memory: memory) { return decision }
        }
        if o.config.quorumCommit {
            if let decision = quorumStandbys(o, cluster, actions: actions, memory: memory) { return decision }
        } else if o.config.synchronousMode {
            if let decision = synchronousStandbys(o, cluster, actions: actions, memory: memory) { return decision }
        } else {
            if let sync = cluster.sync { actions.append(.clearSync(expected: sync.modRevision)) }
            if let applied = o.appliedSynchronousStandbys, !applied.isEmpty {
                actions.append(.setSynchronousStandbys([]))
            }
            if actions.count > 1 {
                return Decision(actions, .synchronousStandbys("turned off: clearing"), memory: memory)
            }
        }
        // Failsafe mode: the failsafe key lists who must confirm this primary during a store outage.
        if o.config.failsafeMode {
            let members = Dictionary(
                cluster.members.map { ($0.name, $0.apiURL) }, uniquingKeysWith: { first, _ in first })
            if cluster.failsafe != members { actions.append(.writeFailsafe(members)) }
        } else if cluster.failsafe != nil {
            actions.append(.writeFailsafe(nil))
        }
        return Decision(actions, .holdingLock, memory: memory)
    }

    /// The leader of a standby cluster: it never promotes; it streams from the cluster it
    /// follows (`standby_cluster`), and its members stream from it. A primary that finds the
    /// section in the key (`demote-cluster`) stops and follows that cluster instead, keeping the
    /// key (pg_rewind first where it diverged). Synchronous replication does not apply (as in
    /// Patroni); a switchover hands the key to a member of this cluster, which follows in turn.
    static func standbyLeaderCycle(
        _ o: Observation, _ cluster: ClusterView, _ standby: StandbyCluster, inRecovery: Bool, actions: [Action],
        memory: HAMemory
    ) -> Decision {
        var actions = actions
        guard let remote = standby.source else {
            // Neither host nor restore_command (a section the validation refuses): nothing to follow.
            return Decision(
                actions, inRecovery ? .standbyLeader(following: nil) : .standbyClusterWithoutSource, memory: memory)
        }
        if !inRecovery {
            return Decision(
                actions + [.demoteCluster(to: remote)], .demotingCluster(to: remote.member), memory: memory,
                recheckImmediately: true)
        }
        if cluster.initialize?.isEmpty ?? true, let systemID = o.postgres.systemIdentifier {
            actions.append(.recordSystemIdentifier(systemID))
        }
        // A switchover inside the standby cluster, as in Patroni: the standby leader stops cleanly
        // and frees the key; the candidate takes it and follows the other cluster. Nothing is
        // promoted and no write can be lost (neither member accepts any).
        if let failover = cluster.failover,
            let decision = switchover(o, cluster, failover, actions: actions, memory: memory, standbyCluster: true)
        {
            return decision
        }
        if let sync = cluster.sync { actions.append(.clearSync(expected: sync.modRevision)) }
        if let applied = o.appliedSynchronousStandbys, !applied.isEmpty { actions.append(.setSynchronousStandbys([])) }
        if o.following != remote.member {
            actions.append(.follow(remote))
            return Decision(actions, .standbyLeader(following: remote.member), memory: memory, recheckImmediately: true)
        }
        return Decision(actions, .standbyLeader(following: remote.member), memory: memory)
    }

    /// A switchover or failover request while this node leads; nil when it does not apply yet.
    /// In a standby cluster (`standbyCluster`) synchronous replication does not apply, so its
    /// rules do not restrict the candidate.
    static func switchover(
        _ o: Observation, _ cluster: ClusterView, _ failover: Versioned<FailoverRequest>, actions: [Action],
        memory: HAMemory, standbyCluster: Bool = false
    ) -> Decision? {
        let synchronousMode = o.config.synchronousMode && !standbyCluster
        let request = failover.value
        let clear = actions + [.clearFailover(expected: failover.modRevision)]
        if let leader = request.leader, leader != o.me {
            return Decision(
                clear, .switchoverRejected("it names \(leader) as leader, but \(o.me) leads"), memory: memory)
        }
        if let candidateName = request.member, candidateName == o.me {
            return Decision(clear, .switchoverRejected("the candidate \(o.me) already leads"), memory: memory)
        }
        if let scheduled = request.scheduled_at {
            guard let at = ISO8601.secondsSince1970(scheduled) else {
                return Decision(clear, .switchoverRejected("cannot read scheduled_at '\(scheduled)'"), memory: memory)
            }
            if o.wallClockSeconds < at {
                return Decision(actions, .switchoverScheduled(at: scheduled), memory: memory)
            }
        }
        let limit = o.config.maximumLagOnFailover
        // Unknown is not "nothing to catch up": without this leader's own position no candidate's
        // lag can be judged.
        guard let myPosition = o.postgres.walPosition else {
            return Decision(
                clear, .switchoverRejected("this leader cannot read its own WAL position; retry once it can"),
                memory: memory)
        }
        // A candidate must stream on this leader's timeline: one still following an older timeline
        // (e.g. right after another switchover) would fork history and lose the writes in between.
        let myTimeline = o.postgres.timeline
        let candidates = cluster.members.filter { member in
            member.name != o.me && member.state == .running && member.role == .replica && !member.tags.noFailover
                && (request.member == nil || request.member == member.name)
                && member.replicationState == "streaming"
                && (myTimeline == nil || member.timeline == myTimeline)
        }
        if let name = request.member, !cluster.members.contains(where: { $0.name == name }) {
            return Decision(clear, .switchoverRejected("candidate \(name) is not a member"), memory: memory)
        }
        // Candidates' published positions lag by up to a publishing interval: ask them, as Patroni does.
        guard let peers = o.peers else {
            return Decision(actions + [.fetchPeers], .askingPeers, memory: memory, recheckImmediately: true)
        }
        func livePosition(_ member: Member) -> LSN {
            if let peer = peers.first(where: { $0.name == member.name }), peer.reachable,
                let position = peer.walPosition
            {
                return position
            }
            return member.xlogLocation ?? .zero
        }
        // In synchronous mode only a synchronous standby may take over (Patroni's rule); with no
        // candidate named, the leader picks among them, not among every replica.
        var eligible = candidates
        if synchronousMode, request.member == nil {
            let synchronous = Set(cluster.sync?.value.syncStandbys ?? [])
            eligible = candidates.filter { synchronous.contains($0.name) }
            if eligible.isEmpty {
                return Decision(
                    clear,
                    .switchoverRejected(
                        "no synchronous standby to hand over to yet (the sync key names none that streams on this "
                            + "timeline); retry once one is"), memory: memory)
            }
        }
        guard let candidate = eligible.max(by: { livePosition($0) < livePosition($1) }) else {
            let why =
                request.member.map {
                    "candidate \($0) is not a replica streaming on timeline \(myTimeline.map(String.init) ?? "?") "
                        + "without nofailover; wait until it follows this leader and retry"
                } ?? "no replica streaming on this leader's timeline can take over"
            return Decision(clear, .switchoverRejected(why), memory: memory)
        }
        let lag = myPosition.bytesAhead(of: livePosition(candidate))
        if lag > limit {
            return Decision(
                clear, .switchoverRejected("candidate \(candidate.name) lags \(lag) bytes (limit \(limit))"),
                memory: memory)
        }
        if synchronousMode, let sync = cluster.sync, !sync.value.isSynchronous(candidate.name) {
            return Decision(
                clear, .switchoverRejected("candidate \(candidate.name) is not a synchronous standby"), memory: memory)
        }
        // Quorum commit: after this leader steps down the candidate needs quorum + 1 votes of the
        // key's voters and this leader. Count those that can give one now (this leader, the
        // candidate, voters streaming from here); too few, and stepping down would leave the
        // cluster without a primary.
        if !standbyCluster, let sync = cluster.sync?.value, !sync.syncStandbys.isEmpty,
            let (voters, needed) = quorumVotes(sync, config: o.config)
        {
            let streamingHere = Set(o.postgres.replication.filter { $0.state == "streaming" }.map(\.applicationName))
            let able = voters.intersection(streamingHere.union([candidate.name, o.me]))
            if able.count < needed {
                return Decision(
                    clear,
                    .switchoverRejected(
                        "candidate \(candidate.name) could gather \(able.count) of the \(needed) votes quorum commit "
                            + "needs ([\(able.sorted().joined(separator: ","))] can vote)"), memory: memory)
            }
        }
        // Registered poolers (baton pooler) pause their read-write databases first: transactions
        // in flight finish here, new ones wait in PgBouncer for the new primary. Applications see
        // latency, not errors. Bounded by pooler_pause_timeout; a pooler that cannot pause is gone
        // without (or, with pooler_pause_required, the switchover is refused).
        var memory = memory
        let poolers = cluster.poolers.filter(\.pausesForSwitchover)
        if poolers.isEmpty {
            memory.poolerPauseWait = nil
        } else {
            let wait =
                memory.poolerPauseWait.flatMap { $0.request == failover.modRevision ? $0 : nil }
                ?? PoolerPauseWait(request: failover.modRevision, since: o.now)
            memory.poolerPauseWait = wait
            let failed = poolers.filter { $0.pauseFailedFor == failover.modRevision }.map(\.name)
            let pending = poolers.filter {
                $0.pausedFor != failover.modRevision && $0.pauseFailedFor != failover.modRevision
            }.map(\.name)
            let waited = o.now - wait.since
            if !pending.isEmpty, waited < o.config.poolerPauseTimeout {
                return Decision(
                    actions, .waitingForPoolers(pending), memory: memory,
                    recheckAfter: max(.milliseconds(50), o.config.poolerPauseTimeout - waited))
            }
            let missing = (pending + failed).sorted()
            memory.poolerPauseWait = nil
            if !missing.isEmpty, o.config.poolerPauseRequired {
                return Decision(
                    clear,
                    .switchoverRejected(
                        "poolers did not pause their read-write databases within pooler_pause_timeout "
                            + "(\(missing.joined(separator: ", "))), and pooler_pause_required is on"),
                    memory: memory)
            }
            if !missing.isEmpty {
                return Decision(
                    [.demote(.graceful)], .switchoverWithoutPoolers(missing), memory: memory, recheckImmediately: true)
            }
        }
        return Decision(
            [.demote(.graceful)], .switchoverSteppingDown(candidate: request.member), memory: memory,
            recheckImmediately: true)
    }

    /// Keeps `synchronous_standby_names` and the `sync` key in step: a standby is added to the key
    /// only after postgres reports it synchronous and it has flushed every commit made before the
    /// setting took effect, and removed from the key before postgres stops waiting for it, so the
    /// key never names a standby that might lack an acknowledged commit.
    static func synchronousStandbys(
        _ o: Observation, _ cluster: ClusterView, actions: [Action], memory: HAMemory
    ) -> Decision? {
        let count = o.config.synchronousNodeCount
        let strict = o.config.synchronousModeStrict
        let sync = cluster.sync
        if let (claim, why) = claimSyncKey(o, cluster) {
            var steps = actions + [claim]
            let wanted: SynchronousSetting = strict ? ["*"] : .empty
            if o.appliedSynchronousStandbys == nil { steps.append(.setSynchronousStandbys(wanted)) }
            return Decision(steps, .synchronousStandbys(why), memory: memory, recheckImmediately: true)
        }
        let eligible = Set(synchronousCandidates(o, cluster).map(\.name))
        let rows = o.postgres.replication.filter { eligible.contains($0.applicationName) }
        let streaming = Set(rows.filter { $0.state == "streaming" }.map(\.applicationName))
        let reportedSync = confirmedSynchronous(o, rows: rows, states: ["sync", "quorum"])
        let keyNames = Set(sync?.value.syncStandbys ?? [])

        let lagging = laggingStandbys(o, rows: rows, streaming: streaming)
        let healthy = streaming.subtracting(lagging)
        // Prefer healthy standbys: those that may be promoted (not tagged nofailover: a synchronous
        // standby that may not take over would leave no one to fail over to; Patroni 4.1.5's
        // order, which a mixed cluster relies on), by sync_priority (higher first), those already
        // synchronous first, then by name, up to the count; lagging ones last.
        let priority = Dictionary(
            cluster.members.map { ($0.name, $0.tags.syncPriority) }, uniquingKeysWith: { first, _ in first })
        let noFailover = Set(cluster.members.filter(\.tags.noFailover).map(\.name))
        func ordered(_ names: Set<String>) -> [String] {
            names.sorted { a, b in
                let (fa, fb) = (noFailover.contains(a), noFailover.contains(b))
                if fa != fb { return fb }
                let (pa, pb) = (priority[a] ?? 1, priority[b] ?? 1)
                if pa != pb { return pa > pb }
                let (ka, kb) = (keyNames.contains(a), keyNames.contains(b))
                if ka != kb { return ka }
                return a < b
            }
        }
        let preferred = ordered(healthy) + ordered(lagging)
        let desired = Set(preferred.prefix(count))
        let wantedSetting: SynchronousSetting = desired.isEmpty ? (strict ? ["*"] : .empty) : .init(all: Array(desired))

        var steps = actions
        let keep = keyNames.intersection(desired)
        if keep != keyNames {
            // Shrink the key first; postgres may keep waiting for more than the key says.
            let confirmed = keep.union(desired.intersection(reportedSync))
            steps.append(
                .writeSync(SyncState(leader: o.me, syncStandbys: confirmed.sorted()), expected: sync?.modRevision))
            if o.appliedSynchronousStandbys != wantedSetting { steps.append(.setSynchronousStandbys(wantedSetting)) }
            return Decision(
                steps, .synchronousStandbys("synchronous standbys now [\(confirmed.sorted().joined(separator: ","))]"),
                memory: memory, recheckImmediately: true)
        }
        if o.appliedSynchronousStandbys != wantedSetting {
            steps.append(.setSynchronousStandbys(wantedSetting))
            return Decision(steps, .synchronousStandbys("asking postgres for \(wantedSetting)"), memory: memory)
        }
        let promotable = desired.subtracting(keyNames).intersection(reportedSync)
        if !promotable.isEmpty {
            let names = keyNames.union(promotable).sorted()
            steps.append(.writeSync(SyncState(leader: o.me, syncStandbys: names), expected: sync?.modRevision))
            return Decision(
                steps, .synchronousStandbys("\(promotable.sorted().joined(separator: ",")) confirmed synchronous"),
                memory: memory)
        }
        return nil
    }

    /// The write that makes the `sync` key one this leader may build on, when it is not: a key of
    /// another leader, of quorum mode outside it, with a quorum that cannot be met, or written
    /// while this agent does not know what postgres was asked for (after the agent's start,
    /// postgres may have run with other standbys or none) is replaced by one naming no standby —
    /// only this leader may then promote, which has every commit.
    static func claimSyncKey(_ o: Observation, _ cluster: ClusterView) -> (Action, String)? {
        let sync = cluster.sync
        let mine = sync?.value.leader == o.me
        let names = sync?.value.syncStandbys ?? []
        let quorum = sync?.value.quorum ?? 0
        let foreignShape = !o.config.quorumCommit && quorum != 0
        let unknownSetting = o.appliedSynchronousStandbys == nil && !names.isEmpty
        // Voters beyond any cluster's size (a hostile key) would make every step a long search.
        let invalid =
            quorum < 0 || (!names.isEmpty && quorum >= names.count) || (names.isEmpty && quorum != 0)
            || names.count > max(64, cluster.members.count * 2)
        guard !mine || foreignShape || unknownSetting || invalid else { return nil }
        let why =
            !mine
            ? "claiming the sync key"
            : unknownSetting
                ? "the standbys postgres waits for are unknown: only the leader may promote until they are set"
                : "sync key reset (quorum \(quorum) of [\(names.joined(separator: ","))])"
        return (
            .writeSync(
                SyncState(leader: o.me, syncStandbys: []), expected: sync?.modRevision ?? cluster.unreadableSyncRevision
            ),
            why
        )
    }

    /// The members that may be synchronous standbys: running, not tagged nosync, and with a name
    /// no other member has but for case — PostgreSQL matches `synchronous_standby_names`
    /// without case, so `B` streaming would count for a `b` listed.
    static func synchronousCandidates(_ o: Observation, _ cluster: ClusterView) -> [Member] {
        var seen: [String: Int] = [:]
        for member in cluster.members { seen[member.name.lowercased(), default: 0] += 1 }
        return cluster.members.filter {
            $0.name != o.me && !$0.tags.noSync && $0.state == .running && seen[$0.name.lowercased()] == 1
        }
    }

    /// Standbys postgres reports in one of `states` that have flushed every commit made before the
    /// setting in force took effect (none when that position is unknown). A name with more than
    /// one walsender (another client using it as application_name) is not counted: which of them
    /// acknowledges is unknown.
    static func confirmedSynchronous(_ o: Observation, rows: [ReplicationRow], states: Set<String>) -> Set<String> {
        guard let from = o.synchronousAppliedAt else { return [] }
        var count: [String: Int] = [:]
        for row in o.postgres.replication { count[row.applicationName.lowercased(), default: 0] += 1 }
        return Set(
            rows.filter { row in
                states.contains(row.syncState) && row.flushLSN.map { $0 >= from } == true
                    && count[row.applicationName.lowercased()] == 1
            }.map(\.applicationName))
    }

    /// maximum_lag_on_syncnode: standbys further behind than that (or whose position is unknown).
    /// The lag counts from the furthest standby when there are several, else from this primary
    /// (Patroni's rule).
    static func laggingStandbys(_ o: Observation, rows: [ReplicationRow], streaming: Set<String>) -> Set<String> {
        guard let limit = o.config.maximumLagOnSyncNode else { return [] }
        var lagging: Set<String> = []
        let positions = rows.filter { streaming.contains($0.applicationName) }
        let reference =
            positions.count > 1
            ? positions.compactMap(\.flushLSN).max() ?? o.postgres.currentLSN : o.postgres.currentLSN
        for row in positions {
            guard let reference, let flushed = row.flushLSN else {
                lagging.insert(row.applicationName)
                continue
            }
            if reference.rawValue > flushed.rawValue, reference.rawValue - flushed.rawValue > limit {
                lagging.insert(row.applicationName)
            }
        }
        return lagging
    }

    /// Quorum commit (`synchronous_mode: quorum`): one step of `QuorumCommit` per cycle, the key
    /// (voters, quorum) or postgres' `ANY k (…)`, each safe on its own.
    static func quorumStandbys(
        _ o: Observation, _ cluster: ClusterView, actions: [Action], memory: HAMemory
    ) -> Decision? {
        let sync = cluster.sync
        if let (claim, why) = claimSyncKey(o, cluster) {
            return Decision(actions + [claim], .synchronousStandbys(why), memory: memory, recheckImmediately: true)
        }
        let wanted = o.config.synchronousNodeCount
        let strict = o.config.synchronousModeStrict
        let members = synchronousCandidates(o, cluster)
        let eligible = Set(members.map(\.name))
        let rows = o.postgres.replication.filter { eligible.contains($0.applicationName) }
        let streaming = Set(rows.filter { $0.state == "streaming" }.map(\.applicationName))
        let healthy = streaming.subtracting(laggingStandbys(o, rows: rows, streaming: streaming))
        // Members tagged nofailover take part only where others are too few for the count (as in
        // Patroni: a vote must come from a member that may be promoted).
        let noFailover = Set(members.filter(\.tags.noFailover).map(\.name))
        let promotable = healthy.subtracting(noFailover)
        let active = promotable.union(
            healthy.intersection(noFailover).sorted().prefix(max(0, wanted - promotable.count)))

        let applied = o.appliedSynchronousStandbys ?? .empty
        let current = QuorumCommit.State(
            voters: Set(sync?.value.syncStandbys ?? []), quorum: sync?.value.quorum ?? 0,
            sync: Set(applied.names), count: applied.count)
        let confirmed = confirmedSynchronous(o, rows: rows, states: ["quorum", "sync", "potential"])
            .intersection(current.sync)
        var steps = actions
        if o.appliedSynchronousStandbys == nil || (!applied.quorum && !applied.isEmpty) {
            // Unknown (the key names no standby then), or written in synchronous mode: the same
            // standbys in the quorum form. Baton's FIRST n lists n names: ANY n of them is the same.
            let setting =
                applied.names.isEmpty && strict
                ? SynchronousSetting(names: ["*"], count: 1, quorum: true)
                : SynchronousSetting(names: applied.names, count: applied.count, quorum: true)
            let next = QuorumCommit.State(
                voters: current.voters, quorum: current.quorum, sync: Set(setting.names), count: setting.count)
            if !QuorumCommit.settingChangeIsSafe(from: current, to: next) {
                steps.append(.writeSync(SyncState(leader: o.me, syncStandbys: []), expected: sync?.modRevision))
            }
            steps.append(.setSynchronousStandbys(setting))
            return Decision(
                steps, .synchronousStandbys("asking postgres for \(setting)"), memory: memory, recheckImmediately: true)
        }
        switch QuorumCommit.nextStep(
            from: current, confirmed: confirmed, active: active, wanted: wanted, strict: strict)
        {
        case nil:
            return nil
        case .key(let voters, let quorum):
            steps.append(
                .writeSync(SyncState(leader: o.me, syncStandbys: voters, quorum: quorum), expected: sync?.modRevision))
            return Decision(
                steps,
                .synchronousStandbys(
                    "quorum \(quorum) of [\(voters.joined(separator: ","))] (\(current.sync.count) listed)"),
                memory: memory, recheckImmediately: true)
        case .postgres(let setting):
            steps.append(.setSynchronousStandbys(setting))
            return Decision(
                steps, .synchronousStandbys("asking postgres for \(setting)"), memory: memory, recheckImmediately: true)
        }
    }

    // MARK: Leader race

    static func race(_ o: Observation, _ cluster: ClusterView, runningPrimary: Bool, memory: HAMemory) -> Decision {
        if o.config.pause {
            if runningPrimary, o.lease.isValid(at: o.now) {
                return Decision([.acquireLeader], .takingFreeLockAsPrimary, memory: memory)
            }
            return Decision([], .paused("leader key is free; no automatic failover"), memory: memory)
        }
        if runningPrimary, !o.lease.isValid(at: o.now) {
            return Decision([.demote(.immediateNoLock)], .fencingLostLease, memory: memory, recheckImmediately: true)
        }
        if o.postgres.process == .running, o.postgres.inRecovery == nil {
            return Decision([], .recoveryStateUnknown(o.postgres.problem ?? "no answer"), memory: memory)
        }
        if !o.fenceGuardRunning {
            return Decision([], .fenceGuardDown, memory: memory)
        }
        if !o.watchdogUsable {
            return Decision([], .watchdogUnusable, memory: memory)
        }
        if let leader = o.confirmedFailsafeLeader, leader != o.me {
            return Decision([], .failsafeLeaderConfirmed(leader), memory: memory)
        }
        let failover = cluster.failover
        let requestedForMe = failover?.value.member == o.me
        if runningPrimary, failover?.value.leader != o.me {
            return Decision([.acquireLeader], .takingFreeLockAsPrimary, memory: memory)
        }
        if o.tags.noFailover {
            return Decision([], .noFailoverTag, memory: memory)
        }
        if o.configUnknown {
            return Decision([], .configUnknownNotPromoting, memory: memory)
        }
        var actions: [Action] = [.acquireLeader]
        let standby = o.config.standbyCluster
        // A sync key that restricts who may promote, whatever the mode says now: one written in
        // quorum commit (the mode may have been switched while the leader was down), or one
        // that could not be read (unknown is not "no restriction").
        let quorumKey = (cluster.sync?.value.quorum ?? 0) != 0 && standby == nil
        if (o.config.synchronousMode && standby == nil) || quorumKey {
            if cluster.sync == nil, cluster.unreadableSyncRevision != nil {
                return Decision([], .syncKeyUnreadable, memory: memory)
            }
            // An empty sync key (no leader ever confirmed a synchronous standby) restricts nobody,
            // as in Patroni: no write can have been acknowledged synchronously yet.
            // Otherwise only the members the key names may race: its synchronous standbys, and
            // the leader that wrote it (it has every write it acknowledged; after a crash it is
            // often the only one, when it had no synchronous standby at that moment).
            let sync = cluster.sync
            let restricted = sync.map { $0.value.leader != nil || !$0.value.syncStandbys.isEmpty } ?? false
            let named = sync.map { $0.value.leader == o.me || $0.value.isSynchronous(o.me) } ?? false
            // In quorum commit any member may race; it needs the key's votes (below).
            if restricted, !named, !o.config.quorumCommit, !quorumKey {
                return Decision([], .notSynchronousStandby, memory: memory)
            }
            actions.append(.writeSync(SyncState(leader: o.me, syncStandbys: []), expected: sync?.modRevision))
        }
        let myPosition = o.postgres.walPosition ?? .zero
        // The last leader's position (the status key), else the furthest another member reports.
        // Unknown is not "no lag": with neither, this member's own position would be the
        // reference, and a replica restored from an old backup would promote at once. Only a
        // cluster still being made (the initialize key claimed, empty: no leader ever was) has
        // nothing to lose.
        let othersPosition = cluster.members.filter { $0.name != o.me }.compactMap(\.xlogLocation).max()
        let newCluster = cluster.initialize == "" ? myPosition : nil
        guard let reference = cluster.status?.optime ?? othersPosition ?? newCluster else {
            return Decision([], .lagReferenceUnknown, memory: memory)
        }
        let lag = reference.bytesAhead(of: myPosition)
        if lag > o.config.maximumLagOnFailover {
            return Decision([], .lagTooHigh(lag: lag, limit: o.config.maximumLagOnFailover), memory: memory)
        }
        if o.config.checkTimeline {
            let clusterTimeline = max(
                cluster.history.map { $0.timeline + 1 }.max() ?? 0,
                cluster.members.filter { $0.name != o.me }.compactMap(\.timeline).max() ?? 0)
            if let local = o.postgres.timeline, local < clusterTimeline {
                return Decision([], .timelineBehind(local: local, cluster: clusterTimeline), memory: memory)
            }
        }
        guard let peers = o.peers else {
            return Decision([.fetchPeers], .askingPeers, memory: memory, recheckImmediately: true)
        }
        // A requested candidate is deferred to only while it can actually win; a stale request
        // (candidate gone, down or lagging) must not leave the cluster without a primary.
        if let request = failover?.value, let candidate = request.member, candidate != o.me,
            candidateViable(
                candidate, cluster: cluster, peers: peers, reference: reference, config: o.config, me: o.me,
                myPosition: myPosition)
        {
            return Decision(
                [], request.leader == o.me ? .steppingDownNotRacing : .waitingForCandidate(candidate), memory: memory)
        }
        for peer in peers where peer.name != o.me && peer.reachable {
            if peer.runningAsPrimary {
                return Decision([], .peerIsPrimary(peer.name), memory: memory)
            }
            if requestedForMe || peer.tags.noFailover { continue }
            let position = peer.walPosition ?? .zero
            if position > myPosition {
                return Decision([], .peerAhead(peer.name, peer: position, local: myPosition), memory: memory)
            }
            if position == myPosition, peer.tags.failoverPriority > o.tags.failoverPriority {
                return Decision([], .peerHasPriority(peer.name), memory: memory)
            }
        }
        if standby == nil, let needed = quorumVotesMissing(o, cluster, peers: peers, myPosition: myPosition) {
            return Decision([], needed, memory: memory)
        }
        // In a standby cluster the winner does not promote: it follows the other cluster.
        if let standby {
            if let remote = standby.source { actions.append(.follow(remote)) }
            if let failover { actions.append(.clearFailover(expected: failover.modRevision)) }
            return Decision(
                actions, .racingForStandbyLeader(lag: lag), memory: memory, recheckImmediately: true)
        }
        actions.append(.promote)
        if let failover { actions.append(.clearFailover(expected: failover.modRevision)) }
        return Decision(
            actions, .racing(lag: lag, local: myPosition, reference: reference), memory: memory,
            recheckImmediately: true)
    }

    /// The members whose votes a quorum-shaped `sync` key asks for (its standbys and its leader)
    /// and how many are needed, quorum + 1; nil when the key asks for none (no quorum commit and
    /// quorum 0, or nobody named). A quorum no Patroni or Baton leader writes: every one of them.
    static func quorumVotes(_ sync: SyncState?, config: DynamicConfig) -> (voters: Set<String>, needed: Int)? {
        guard let sync, config.quorumCommit || sync.quorum != 0 else { return nil }
        let voters = Set(sync.syncStandbys).union(sync.leader.map { [$0] } ?? [])
        guard !voters.isEmpty else { return nil }
        return (voters, (0..<voters.count).contains(sync.quorum) ? sync.quorum + 1 : voters.count)
    }

    /// The voters that vote for `name` at `position`: itself when it is one, and each reachable
    /// voter running as a standby at a known position not ahead of it.
    static func votes(for name: String, at position: LSN, voters: Set<String>, peers: [PeerStatus]) -> Set<String> {
        var voted: Set<String> = voters.contains(name) ? [name] : []
        for peer in peers where peer.reachable && !peer.runningAsPrimary && voters.contains(peer.name) {
            if let at = peer.walPosition, at <= position { voted.insert(peer.name) }
        }
        return voted
    }

    /// Quorum commit: a commit was acknowledged once `k` standbys of the setting had it, and the
    /// key's `quorum` q is such that any q + 1 members of its voters and leader include one of
    /// them. So a member may promote only after q + 1 of them (itself included when it is one)
    /// answered, running, and none is ahead of it (checked before). The leader the key names
    /// needs no votes: it has every commit it acknowledged. Nil when the votes are there.
    static func quorumVotesMissing(_ o: Observation, _ cluster: ClusterView, peers: [PeerStatus], myPosition: LSN)
        -> Reason?
    {
        let sync = cluster.sync?.value
        guard sync?.leader != o.me, let (voters, needed) = quorumVotes(sync, config: o.config) else { return nil }
        let count = votes(for: o.me, at: myPosition, voters: voters, peers: peers.filter { $0.name != o.me }).count
        return count >= needed ? nil : .quorumNotReached(votes: count, needed: needed, voters: voters.sorted())
    }

    /// Whether a failover candidate looks able to win the race: a member, not tagged nofailover,
    /// running and within the lag limit — by its own REST answer, or by its member key when its
    /// API cannot be reached.
    static func candidateViable(
        _ name: String, cluster: ClusterView, peers: [PeerStatus], reference: LSN, config: DynamicConfig,
        me: String? = nil, myPosition: LSN? = nil
    ) -> Bool {
        guard let member = cluster.member(named: name), !member.tags.noFailover else { return false }
        // Quorum commit: a candidate that cannot gather its votes will not promote; waiting for
        // it would leave the cluster without a primary. Its votes as this member can see them:
        // itself if a voter, each reachable voter not ahead of it, and this member.
        let sync = cluster.sync?.value
        if sync?.leader != name, let (voters, needed) = quorumVotes(sync, config: config) {
            let candidatePosition =
                peers.first { $0.name == name && $0.reachable }?.walPosition ?? member.xlogLocation ?? .zero
            // This member votes too, as a peer at its own position.
            let me = me.map { [PeerStatus(name: $0, reachable: true, walPosition: myPosition)] } ?? []
            if votes(for: name, at: candidatePosition, voters: voters, peers: peers + me).count < needed {
                return false
            }
        }
        if let peer = peers.first(where: { $0.name == name }), peer.reachable {
            if peer.runningAsPrimary { return true }
            guard let position = peer.walPosition else { return false }
            return reference.bytesAhead(of: position) <= config.maximumLagOnFailover
        }
        // Unreachable over REST: its member key speaks for it until it expires with its session,
        // which bounds how long the others wait for a dead candidate to ttl.
        guard member.state == .running, let position = member.xlogLocation else { return false }
        return reference.bytesAhead(of: position) <= config.maximumLagOnFailover
    }

    // MARK: Sources

    /// Where a new replica clones from: a running replica tagged `clonefrom`, else the leader.
    static func cloneSource(_ cluster: ClusterView, me: String) -> ReplicationSource? {
        let tagged = cluster.members.first {
            $0.name != me && $0.tags.cloneFrom && $0.state == .running && $0.name != cluster.leader?.member
        }
        if let tagged, let source = ReplicationSource(member: tagged) { return source }
        guard let leader = cluster.leaderMember, leader.name != me, leader.state == .running else { return nil }
        return ReplicationSource(member: leader)
    }

    /// Whether a method that needs no server can make this member: in a standby cluster the
    /// methods `standby_cluster.create_replica_methods` names (defined in the agent's file,
    /// listed or not), else the member's own list (as Patroni chooses).
    static func canCreateWithoutServer(_ o: Observation, _ standby: StandbyCluster?) -> Bool {
        guard let names = standby?.createReplicaMethods, !names.isEmpty else { return o.canCreateReplicaWithoutServer }
        return names.contains { o.definedMethodsWithoutServer.contains($0) }
    }

    /// The leader as a source to follow (in a standby cluster, with the archive commands of
    /// `standby_cluster`).
    static func leaderSource(_ o: Observation, _ cluster: ClusterView) -> ReplicationSource? {
        cluster.leaderMember.flatMap(ReplicationSource.init(member:)).map { standbyArchive($0, o) }
    }

    /// In a standby cluster, a member follows with `standby_cluster`'s archive commands (Patroni's
    /// rule): the other cluster's archive is where the WAL its standby leader has not streamed yet
    /// can be found.
    static func standbyArchive(_ source: ReplicationSource, _ o: Observation) -> ReplicationSource {
        guard let standby = o.config.standbyCluster,
            standby.restoreCommand != nil || standby.archiveCleanupCommand != nil
        else { return source }
        var source = source
        source.standbyClusterArchive = StandbyClusterArchive(
            restoreCommand: standby.restoreCommand, archiveCleanupCommand: standby.archiveCleanupCommand)
        return source
    }

    /// What a replica streams from: the member its `replicatefrom` tag names (cascading) while
    /// that one is a running replica streaming on the leader's timeline and does not lead back
    /// to this member through its own tag; the leader otherwise (as Patroni falls back).
    static func upstreamSource(_ o: Observation, _ cluster: ClusterView) -> ReplicationSource? {
        let leader = leaderSource(o, cluster)
        guard let name = o.tags.replicateFrom, name != o.me, name != cluster.leader?.member,
            let upstream = cluster.member(named: name), upstream.state == .running, upstream.role == .replica,
            upstream.replicationState == "streaming"
        else { return leader }
        if let leaderTimeline = cluster.leaderMember?.timeline, upstream.timeline != leaderTimeline { return leader }
        // A chain that comes back here (b from c, c from b) would stream from nobody.
        var hop: Member? = upstream
        for _ in 0..<16 {
            guard let next = hop?.tags.replicateFrom, next != cluster.leader?.member else { break }
            if next == o.me { return leader }
            hop = cluster.member(named: next)
        }
        return ReplicationSource(member: upstream).map { standbyArchive($0, o) } ?? leader
    }
}

extension ReplicationSource {
    /// The host and port of a member's `conn_url` (`postgres://host:port/db`); nil when unreadable.
    public init?(member: Member) {
        guard let (host, port) = ConnURL.hostAndPort(member.connURL) else { return nil }
        self.init(member: member.name, host: host, port: port)
    }
}

/// Reads `postgres://[user@]host[:port][/db][?…]` (through `HostPort`).
public enum ConnURL {
    /// Host and port, the port 5432 when the URL names none; nil when unreadable.
    public static func hostAndPort(_ url: String) -> (String, Int)? {
        guard let address = HostPort(url: url) else { return nil }
        return (address.host, address.port ?? 5432)
    }
}
