/// One step the I/O shell performs for a decision. A decision's actions run in order; the first
/// that fails, or loses its compare-and-swap, ends the sequence and the loop observes again.
public enum Action: Hashable, Sendable, CustomStringConvertible {
    /// Create a store session (etcd lease) with the configured ttl.
    case createSession
    /// Keep the session alive and extend the fencing deadline.
    case renewLease
    /// Create a session with the ttl in force and move this member's keys (and the leader key,
    /// when held) onto it; the old session is then revoked. A dynamic `ttl` change.
    case replaceSession
    /// Race for the leader key (CREATE == 0 on the session). Losing ends the sequence.
    case acquireLeader
    /// Re-attach the leader key to the current session (VALUE == me).
    case reattachLeader
    /// Delete the leader key if it still names this member.
    case releaseLeader
    /// Race for the `initialize` key, holding `""` while bootstrapping.
    case claimInitialize
    /// Record the new cluster's system identifier in the `initialize` key.
    case recordSystemIdentifier(String)
    /// Delete the `initialize` key after a failed bootstrap.
    case cancelInitialize
    /// initdb, configure and start a new primary.
    case bootstrap
    /// Clone the data directory from a running member.
    case cloneReplica(from: ReplicationSource)
    /// Start postgres: as a standby of `following` when given, as a primary when `asPrimary`,
    /// else as a standby without an upstream (read-only).
    case startPostgres(following: ReplicationSource?, asPrimary: Bool)
    /// Stop postgres and leave it stopped.
    case stopPostgres(StopMode)
    /// Promote the local standby and wait until it accepts writes; runs the pre-promote hook.
    case promote
    /// Stop being primary (and release the key if the mode says so); the next cycle starts the
    /// node as a replica of whoever leads then, rewinding first if needed.
    case demote(DemoteMode)
    /// Re-point a running standby at another upstream.
    case follow(ReplicationSource)
    /// pg_rewind from `source` if the local timeline diverged (a no-op when not needed).
    case rewindIfNeeded(from: ReplicationSource)
    /// Stop a running standby, pg_rewind it onto `source` when its timeline diverged (pg_rewind
    /// decides), and start it following `source`: for a standby that holds WAL of an older timeline
    /// past the point where the leader's timeline forked off, which PostgreSQL cannot follow.
    case rejoinDiverged(from: ReplicationSource)
    /// Delete the `failover` key (at the revision it was read).
    case clearFailover(expected: Int64)
    /// Delete the `sync` key (synchronous mode was turned off).
    case clearSync(expected: Int64)
    /// Compare-and-swap the `sync` key.
    case writeSync(SyncState, expected: Int64?)
    /// Apply `synchronous_standby_names`.
    case setSynchronousStandbys(SynchronousSetting)
    /// Ask peers for their status (REST), then decide again.
    case fetchPeers
    /// Ask every member to confirm this primary while the store is unreachable (failsafe mode);
    /// a confirmation by all extends the fencing deadline as a renewal would.
    case askFailsafeConfirmation
    /// Write (or, with nil, delete) the `failsafe` key: every member's name and REST API URL.
    case writeFailsafe([String: String]?)
    /// `demote-cluster`: the primary stops, keeping the leader key, and follows the other
    /// cluster's primary (pg_rewind from it first where it diverged).
    case demoteCluster(to: ReplicationSource)

    public var description: String {
        switch self {
        case .createSession: return "create session"
        case .renewLease: return "renew lease"
        case .replaceSession: return "replace session (new ttl)"
        case .acquireLeader: return "acquire leader key"
        case .reattachLeader: return "reattach leader key"
        case .releaseLeader: return "release leader key"
        case .claimInitialize: return "claim initialize key"
        case .recordSystemIdentifier(let id): return "record system identifier \(id)"
        case .cancelInitialize: return "cancel initialize"
        case .bootstrap: return "bootstrap a new cluster"
        case .cloneReplica(let source): return "clone from \(source.member)"
        case .startPostgres(let source?, _): return "start postgres following \(source.member)"
        case .startPostgres(nil, true): return "start postgres as primary"
        case .startPostgres(nil, false): return "start postgres read-only"
        case .stopPostgres(let mode): return "stop postgres (\(mode.rawValue))"
        case .promote: return "promote"
        case .demote(let mode): return "demote (\(mode.rawValue))"
        case .follow(let source): return "follow \(source.member)"
        case .rewindIfNeeded(let source): return "rewind from \(source.member) if needed"
        case .rejoinDiverged(let source): return "stop, rewind onto \(source.member) if diverged, and follow it"
        case .clearFailover: return "clear failover key"
        case .clearSync: return "clear sync key"
        case .writeSync(let state, _): return "write sync key (\(state.sync_standby ?? "none"))"
        case .setSynchronousStandbys(let setting): return "set synchronous standbys \(setting)"
        case .fetchPeers: return "fetch peers' status"
        case .askFailsafeConfirmation: return "ask members to confirm failsafe"
        case .writeFailsafe(let members?): return "write failsafe key (\(members.count) members)"
        case .writeFailsafe(nil): return "delete failsafe key"
        case .demoteCluster(let source): return "demote to a standby leader following \(source.member)"
        }
    }
}

/// How a primary steps down.
public enum DemoteMode: String, Hashable, Sendable {
    /// Clean shutdown (WAL shipped to standbys), release the key, then follow: a switchover.
    case graceful
    /// Immediate shutdown, release the key, follow the new leader.
    case immediate
    /// Immediate shutdown without touching the store (the key is not ours, or the store is gone).
    case immediateNoLock = "immediate-nolock"
    /// Stop and stay stopped until the store is reachable again (fencing on store loss).
    case offline
}
