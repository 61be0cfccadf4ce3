/// Why the decision core decided what it did: typed for metrics and tests, printed as one line in
/// the log (like Patroni's "no action. I am (node1), the leader with the lock").
public enum Reason: Hashable, Sendable, CustomStringConvertible {
    // Store
    case storeUnreachableKeepingPrimary(remaining: Duration)
    case storeUnreachableFencing
    case storeUnreachableWaiting
    case failsafeConfirmed
    case askingFailsafe
    case noSession
    case sessionTTLChanged(granted: Duration, configured: Duration)
    // Local data and local state
    case dataDirectoryUnusable(String)
    case leaderDataDirectoryUnusable(String)
    case leaderWithoutData
    case recoveryStateUnknown(String)
    case leaderRecoveryStateUnknown(String, elapsed: Duration)
    case leaderCannotSeePostgres(elapsed: Duration)
    case fenceGuardDown
    case failsafeLeaderConfirmed(String)
    case watchdogUnusable
    // Bootstrap
    case bootstrapping
    case bootstrapFinished(systemID: String)
    case waitingForBootstrap
    case takingOverExistingData(systemID: String)
    case systemIdentifierMismatch(cluster: String, local: String)
    case cloning(from: String)
    case waitingForLeaderToClone
    // Postgres not running
    case restartingCrashedPrimary(elapsed: Duration)
    case primaryStartTimeout(elapsed: Duration)
    case startingReplica(following: String)
    case startingReadOnly
    case startBackingOff(failures: Int, retryIn: Duration)
    case postgresStarting
    // Leader
    case holdingLock
    case reattachingLock
    case promotingWithLock
    case notSynchronousReleasing
    case switchoverScheduled(at: String)
    case switchoverSteppingDown(candidate: String?)
    case switchoverRejected(String)
    case synchronousStandbys(String)
    // Replica with a leader
    case demotingForOtherLeader(leader: String)
    case followingNewLeader(leader: String)
    case followingUpstream(String)
    case following(leader: String)
    case standbyStuckOnOlderTimeline(leader: String, local: Int, leaderTimeline: Int, waited: Duration)
    // Race
    case paused(String)
    case waitingForCandidate(String)
    case steppingDownNotRacing
    case noFailoverTag
    case notSynchronousStandby
    case quorumNotReached(votes: Int, needed: Int, voters: [String])
    case syncKeyUnreadable
    case lagTooHigh(lag: UInt64, limit: UInt64)
    case lagReferenceUnknown
    case waitingForPoolers([String])
    case switchoverWithoutPoolers([String])
    case timelineBehind(local: Int, cluster: Int)
    case askingPeers
    case peerIsPrimary(String)
    case peerAhead(String, peer: LSN, local: LSN)
    case peerHasPriority(String)
    case racing(lag: UInt64, local: LSN, reference: LSN)
    case fencingLostLease
    case takingFreeLockAsPrimary
    // Standby cluster
    case bootstrappingStandbyLeader(from: String)
    case standbyLeader(following: String?)
    case standbyClusterWithoutSource
    case noReplicaMethodWithoutServer
    case cloningWithoutLeader
    case demotingCluster(to: String)
    case racingForStandbyLeader(lag: UInt64)
    case configUnknownNotPromoting

    /// A short stable identifier, for metrics labels.
    public var code: String {
        switch self {
        case .storeUnreachableKeepingPrimary: return "store_unreachable_keeping_primary"
        case .storeUnreachableFencing: return "store_unreachable_fencing"
        case .storeUnreachableWaiting: return "store_unreachable_waiting"
        case .failsafeConfirmed: return "failsafe_confirmed"
        case .askingFailsafe: return "asking_failsafe"
        case .noSession: return "no_session"
        case .sessionTTLChanged: return "session_ttl_changed"
        case .dataDirectoryUnusable: return "data_directory_unusable"
        case .leaderDataDirectoryUnusable: return "leader_data_directory_unusable"
        case .leaderWithoutData: return "leader_without_data"
        case .recoveryStateUnknown: return "recovery_state_unknown"
        case .leaderRecoveryStateUnknown: return "leader_recovery_state_unknown"
        case .leaderCannotSeePostgres: return "leader_cannot_see_postgres"
        case .fenceGuardDown: return "fence_guard_down"
        case .failsafeLeaderConfirmed: return "failsafe_leader_confirmed"
        case .watchdogUnusable: return "watchdog_unusable"
        case .bootstrapping: return "bootstrapping"
        case .bootstrapFinished: return "bootstrap_finished"
        case .waitingForBootstrap: return "waiting_for_bootstrap"
        case .takingOverExistingData: return "taking_over_existing_data"
        case .systemIdentifierMismatch: return "system_identifier_mismatch"
        case .cloning: return "cloning"
        case .waitingForLeaderToClone: return "waiting_for_leader_to_clone"
        case .restartingCrashedPrimary: return "restarting_crashed_primary"
        case .primaryStartTimeout: return "primary_start_timeout"
        case .startingReplica: return "starting_replica"
        case .startingReadOnly: return "starting_read_only"
        case .startBackingOff: return "start_backing_off"
        case .bootstrappingStandbyLeader: return "bootstrapping_standby_leader"
        case .standbyLeader: return "standby_leader"
        case .standbyClusterWithoutSource: return "standby_cluster_without_source"
        case .noReplicaMethodWithoutServer: return "no_replica_method_without_server"
        case .cloningWithoutLeader: return "cloning_without_leader"
        case .demotingCluster: return "demoting_cluster"
        case .racingForStandbyLeader: return "racing_for_standby_leader"
        case .configUnknownNotPromoting: return "config_unknown_not_promoting"
        case .postgresStarting: return "postgres_starting"
        case .holdingLock: return "holding_lock"
        case .reattachingLock: return "reattaching_lock"
        case .promotingWithLock: return "promoting_with_lock"
        case .notSynchronousReleasing: return "not_synchronous_releasing"
        case .switchoverScheduled: return "switchover_scheduled"
        case .switchoverSteppingDown: return "switchover_stepping_down"
        case .switchoverRejected: return "switchover_rejected"
        case .synchronousStandbys: return "synchronous_standbys"
        case .demotingForOtherLeader: return "demoting_for_other_leader"
        case .followingNewLeader: return "following_new_leader"
        case .standbyStuckOnOlderTimeline: return "standby_stuck_on_older_timeline"
        case .following: return "following"
        case .followingUpstream: return "following_upstream"
        case .paused: return "paused"
        case .waitingForCandidate: return "waiting_for_candidate"
        case .steppingDownNotRacing: return "stepping_down_not_racing"
        case .noFailoverTag: return "nofailover_tag"
        case .notSynchronousStandby: return "not_synchronous_standby"
        case .quorumNotReached: return "quorum_not_reached"
        case .syncKeyUnreadable: return "sync_key_unreadable"
        case .lagTooHigh: return "lag_too_high"
        case .lagReferenceUnknown: return "lag_reference_unknown"
        case .waitingForPoolers: return "waiting_for_poolers"
        case .switchoverWithoutPoolers: return "switchover_without_poolers"
        case .timelineBehind: return "timeline_behind"
        case .askingPeers: return "asking_peers"
        case .peerIsPrimary: return "peer_is_primary"
        case .peerAhead: return "peer_ahead"
        case .peerHasPriority: return "peer_has_priority"
        case .racing: return "racing"
        case .fencingLostLease: return "fencing_lost_lease"
        case .takingFreeLockAsPrimary: return "taking_free_lock_as_primary"
        }
    }

    public var description: String {
        switch self {
        case .storeUnreachableKeepingPrimary(let remaining):
            return "store unreachable: staying primary until the lease deadline in \(remaining.secondsText)"
        case .storeUnreachableFencing:
            return "store unreachable and the lease deadline has passed: demoting to avoid a split brain"
        case .storeUnreachableWaiting: return "store unreachable: no action until it answers"
        case .failsafeConfirmed: return "store unreachable, failsafe mode: every member confirms this primary"
        case .askingFailsafe: return "store unreachable, failsafe mode: asking every member to confirm this primary"
        case .noSession: return "no store session yet: creating one"
        case .sessionTTLChanged(let granted, let configured):
            return
                "ttl changed from \(granted.secondsText) to \(configured.secondsText): moving to a session with the new ttl"
        case .dataDirectoryUnusable(let what):
            return "the data directory is unusable (\(what)): not starting, bootstrapping, cloning into or deleting "
                + "it; staying out of the leader race until an operator repairs it"
        case .leaderDataDirectoryUnusable(let what):
            return "holding the leader key but the data directory is unusable (\(what)): stopping postgres and "
                + "releasing the key so that a healthy replica takes over; nothing is deleted"
        case .leaderWithoutData:
            return "holding the leader key without local data: releasing the key (a leader never clones)"
        case .recoveryStateUnknown(let why):
            return "cannot tell whether postgres is a primary or a standby (\(why)): not racing, not promoting"
        case .leaderRecoveryStateUnknown(let why, let elapsed):
            return "holding the leader key but cannot tell whether postgres is a primary or a standby for "
                + "\(elapsed.secondsText) (\(why)): keeping the key, not promoting"
        case .watchdogUnusable:
            return "watchdog mode is required but the watchdog could not be armed: not racing for ttl"
        case .failsafeLeaderConfirmed(let leader):
            return "leader key free but this member confirmed \(leader) as failsafe primary within ttl: not racing"
        case .fenceGuardDown:
            return "the fence guard process is not running and could not be restarted: not leading, not racing"
        case .leaderCannotSeePostgres(let elapsed):
            return "holding the leader key but postgres has not answered the status query for \(elapsed.secondsText) "
                + "(≥ ttl): stopping it and releasing the key so that a replica the cluster can see takes over"
        case .bootstrapping: return "no cluster yet: bootstrapping a new one"
        case .bootstrapFinished(let id): return "bootstrap finished (system identifier \(id)): taking the leader key"
        case .waitingForBootstrap: return "another member is bootstrapping the cluster: waiting"
        case .takingOverExistingData(let id):
            return "no initialize key but local data (system identifier \(id)): taking the leader key"
        case .systemIdentifierMismatch(let cluster, let local):
            return "local data belongs to another cluster (system identifier \(local), cluster \(cluster)): "
                + "no action; reinitialise this member"
        case .cloning(let source): return "no local data: cloning a replica from \(source)"
        case .waitingForLeaderToClone: return "no local data and no running member to clone from: waiting"
        case .restartingCrashedPrimary(let elapsed):
            return "postgres is down on the leader: restarting it in place (down for \(elapsed.secondsText))"
        case .primaryStartTimeout(let elapsed):
            return "postgres did not come back within primary_start_timeout (\(elapsed.secondsText)): "
                + "releasing the leader key for a failover"
        case .startingReplica(let leader): return "postgres is not running: starting it as a replica of \(leader)"
        case .startingReadOnly: return "postgres is not running and there is no leader: starting it read-only"
        case .startBackingOff(let failures, let retryIn):
            return "postgres failed to start \(failures) time(s) in a row (see the error above and the server log): "
                + "next attempt in \(retryIn.secondsText)"
        case .postgresStarting: return "postgres is starting: waiting"
        case .holdingLock: return "no action: I am the leader with the lock"
        case .reattachingLock: return "the leader key is on an old session: re-attaching it to mine"
        case .promotingWithLock: return "holding the leader key as a standby: promoting"
        case .notSynchronousReleasing:
            return "holding the leader key but not a synchronous standby: releasing it without promoting"
        case .switchoverScheduled(let at): return "switchover scheduled at \(at): waiting"
        case .switchoverSteppingDown(let candidate):
            return "switchover: stepping down" + (candidate.map { " for \($0)" } ?? "")
        case .switchoverRejected(let why): return "switchover request rejected: \(why)"
        case .synchronousStandbys(let what): return "synchronous mode: \(what)"
        case .demotingForOtherLeader(let leader):
            return "running as primary but \(leader) holds the leader key: demoting"
        case .followingNewLeader(let leader): return "re-pointing replication to the new leader \(leader)"
        case .followingUpstream(let upstream):
            return "re-pointing replication to \(upstream) (replicatefrom: cascading from a replica)"
        case .following(let leader): return "no action: streaming from the leader \(leader)"
        case .standbyStuckOnOlderTimeline(let leader, let local, let leaderTimeline, let waited):
            return "not streaming for \(waited.secondsText) on timeline \(local) while the leader \(leader) is on "
                + "timeline \(leaderTimeline) (this standby may hold WAL past the fork point, which PostgreSQL "
                + "cannot follow): pg_rewind onto \(leader) if diverged, then follow it"
        case .paused(let what): return "paused: \(what)"
        case .waitingForCandidate(let name): return "leader key free, failover requested to \(name): not racing"
        case .steppingDownNotRacing: return "leader key free but this member is stepping down: not racing"
        case .noFailoverTag: return "leader key free but this member is tagged nofailover: not racing"
        case .notSynchronousStandby:
            return "leader key free but this member is not a synchronous standby: not racing"
        case .syncKeyUnreadable:
            return "leader key free but the sync key cannot be read (who may promote is unknown): not racing"
        case .quorumNotReached(let votes, let needed, let voters):
            return "leader key free but only \(votes) of the \(needed) votes quorum commit needs from "
                + "[\(voters.joined(separator: ","))] (members reachable, running, not ahead): not racing"
        case .waitingForPoolers(let names):
            return
                "switchover: waiting for the poolers to pause their read-write databases (\(names.joined(separator: ", ")))"
        case .switchoverWithoutPoolers(let names):
            return
                "switchover: poolers did not pause within pooler_pause_timeout (\(names.joined(separator: ", "))): stepping down without them; their clients may see errors"
        case .lagReferenceUnknown:
            return
                "leader key free, but the last leader's position is unknown (no status key, no other member's position): not racing"
        case .lagTooHigh(let lag, let limit):
            return "leader key free but not eligible: lag \(lag) bytes exceeds maximum_lag_on_failover \(limit)"
        case .timelineBehind(let local, let cluster):
            return "leader key free but not eligible: timeline \(local) is behind the cluster's \(cluster)"
        case .askingPeers: return "leader key free: asking peers before racing"
        case .peerIsPrimary(let name): return "leader key free but \(name) still runs as primary: not racing"
        case .peerAhead(let name, let peer, let local):
            return "leader key free but \(name) is further ahead (\(peer) > \(local)): not racing"
        case .peerHasPriority(let name):
            return "leader key free but \(name) is as far ahead with a higher failover priority: not racing"
        case .racing(let lag, let local, let reference):
            return
                "leader key free and this member is the healthiest (lag \(lag) bytes: at \(local), cluster optime \(reference)): promoting"
        case .fencingLostLease: return "running as primary without a valid lease: demoting"
        case .takingFreeLockAsPrimary: return "leader key free and this member runs as primary: taking it"
        case .bootstrappingStandbyLeader(let remote):
            return "new standby cluster: cloning from \(remote) and following it as the standby leader"
        case .standbyLeader(let remote?): return "no action: I am the standby leader with the lock, following \(remote)"
        case .standbyLeader(nil):
            return
                "no action: I am the standby leader with the lock, restoring from the archive (no standby_cluster.host)"
        case .standbyClusterWithoutSource:
            return "standby_cluster names neither host nor restore_command: there is nothing to follow"
        case .noReplicaMethodWithoutServer:
            return
                "standby_cluster restores from an archive only (no host), and no create_replica_methods entry can make the standby leader without a server (a command with no_leader): waiting"
        case .cloningWithoutLeader:
            return "no local data and no leader: restoring this member from a backup (a replica method with no_leader)"
        case .demotingCluster(let remote):
            return "standby_cluster set: demoting this primary to a standby leader following \(remote)"
        case .configUnknownNotPromoting:
            return
                "the config key is missing or invalid and this agent has read no valid one: whether this is a standby cluster is unknown: not promoting"
        case .racingForStandbyLeader(let lag):
            return "leader key free and this member is the healthiest (lag \(lag) bytes): becoming the standby leader"
        }
    }
}

extension Duration {
    /// "1.25 s": seconds with two decimals, for one-line log messages.
    public var secondsText: String {
        let milliseconds = components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
        let sign = milliseconds < 0 ? "-" : ""
        let magnitude = abs(milliseconds)
        let fraction = (magnitude % 1000) / 10
        return "\(sign)\(magnitude / 1000).\(fraction < 10 ? "0" : "")\(fraction) s"
    }
}
