import BatonCore
import Foundation
import Logging
import Synchronization

extension HALoop {
    /// What executing a decision produced for the next observation in the same cycle.
    struct Outcome {
        var completed = true
        /// The action that failed or lost its race, when one did.
        var failed: Action?
        var peers: [PeerStatus]?
        var failsafe: Bool?
    }

    /// Runs `actions` in order; stops at the first that fails or loses its race.
    func execute(_ actions: [Action], observation: Observation) async -> Outcome {
        var outcome = Outcome()
        // Whether this run claimed the initialize key (an empty one, for a new cluster).
        var claimedInitialize = false
        for action in actions {
            defer { noteProgress() }
            do {
                let succeeded = try await perform(action, observation: observation, outcome: &outcome)
                if action == .claimInitialize, succeeded { claimedInitialize = true }
                if case .rejoinDiverged = action { lastRejoinFailed = !succeeded }
                // A new data directory starts with a clean slate.
                if succeeded, action.startsANewDataDirectory { lastRejoinFailed = false }
                if !succeeded {
                    logger.info("\(action) did not succeed; skipping the rest", metadata: ["ha.action": "\(action)"])
                    outcome.completed = false
                    outcome.failed = action
                    break
                }
            } catch {
                logger.error("\(action) failed: \(error)", metadata: ["ha.action": "\(action)"])
                forgetSessionIfLost(error)
                if case .startPostgres = action {
                    failedStarts += 1
                    lastFailedStartAt = clock.now
                }
                if case .rejoinDiverged = action { lastRejoinFailed = true }
                outcome.completed = false
                outcome.failed = action
                // A new cluster that failed to come into being (initdb, or the copy that makes a
                // standby cluster's leader) frees the initialize key this run claimed: otherwise
                // every member would wait for a bootstrap that never ends. A key this run did not
                // claim (another member's system identifier) is never touched.
                if action == .bootstrap || (action.startsANewDataDirectory && claimedInitialize) {
                    try? await store.cancelInitialize()
                    logger.warning("bootstrap failed: released the initialize key so that a member can try again")
                }
                break
            }
        }
        return outcome
    }

    var timing: (ttl: Duration, margin: Duration) {
        let config = effectiveConfig(status.cluster)
        let margin =
            (try? TimingPolicy(ttl: config.ttl, loopWait: config.loopWait, retryTimeout: config.retryTimeout))?
            .fencingMargin ?? config.ttl / 4
        return (config.ttl, margin)
    }

    func perform(_ action: Action, observation: Observation, outcome: inout Outcome) async throws -> Bool {
        let me = configuration.name
        switch action {
        case .createSession:
            let granted = try await grantSession()
            adopt(granted)
            logger.info("store session created", metadata: ["ha.session": "\(granted.id)", "ha.ttl": "\(granted.ttl)"])
            return true

        case .replaceSession:
            return try await replaceSession(observation)

        case .renewLease:
            // The lease keeper renews beside the cycle: a renewal sent within ttl/3, or one in
            // flight while the deadline is still ahead, is fresh enough for this decision.
            if let sent = lastRenewalSent, clock.now - sent < renewInterval { return session != nil }
            if renewalsInFlight > 0, let deadline = leaseDeadline, clock.now < deadline { return session != nil }
            return try await renewLease(observation)

        case .acquireLeader:
            guard let session else { return false }
            guard try await store.acquireLeader(member: me, session: session) else { return false }
            status.holdsLeaderKey = true
            liftFenceIfLeaseValid()
            await syncBackstop(primary: observation.postgres.inRecovery == false)
            logger.info("acquired the leader key", metadata: ["ha.session": "\(session)"])
            return true

        case .reattachLeader:
            guard let session else { return false }
            let attached = try await store.reattachLeader(member: me, session: session)
            status.holdsLeaderKey = attached
            if attached { liftFenceIfLeaseValid() }
            return attached

        case .releaseLeader:
            status.holdsLeaderKey = false
            _ = try await store.releaseLeader(member: me)
            try? await watchdog?.disarm()
            return true

        case .claimInitialize:
            let claimed = try await store.claimInitialize(systemID: "")
            // This agent makes the cluster: its file's bootstrap.dcs is the cluster's configuration.
            if claimed { bootstrappedHere = true }
            return claimed

        case .recordSystemIdentifier(let systemID):
            if let revision = observation.cluster?.initializeRevision {
                return try await store.updateInitialize(systemID: systemID, expected: revision)
            }
            return try await store.claimInitialize(systemID: systemID)

        case .cancelInitialize:
            try await store.cancelInitialize()
            return true

        case .bootstrap:
            activity = .initializingNewCluster
            await publish(after: observation)
            liftFenceIfLeaseValid()
            defer { activity = nil }
            let systemID = try await node.bootstrap()
            logger.info("bootstrapped a new cluster", metadata: ["pg.system_id": "\(systemID)"])
            await hooks.callback?("on_start", .primary)
            return true

        case .cloneReplica(let source):
            activity = .creatingReplica
            cloneProgress = nil
            await publish(after: observation)
            defer {
                activity = nil
                cloneProgress = nil
            }
            let logger = self.logger
            let lastPercent = Mutex(-10)
            // The member key shows how far the copy is (baton list), every 2 s while it runs.
            let latest = LatestCloneProgress()
            let startedAt = ContinuousClock.now
            let publisher = Task { [weak self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(2))
                    guard !Task.isCancelled, let self, let progress = latest.value else { continue }
                    await self.publishCloneProgress(progress, since: startedAt, observation: observation)
                }
            }
            defer { publisher.cancel() }
            try await node.cloneReplica(from: source) { progress in
                latest.value = progress
                let report = lastPercent.withLock { last -> Bool in
                    guard progress.percent >= last + 10 || progress.percent == 100 else { return false }
                    last = progress.percent
                    return true
                }
                if report {
                    logger.info(
                        "cloning from \(source.member): \(progress.percent)% (\(progress.doneKB)/\(progress.totalKB) kB)"
                    )
                }
            }
            return true

        case .startPostgres(let source, let asPrimary):
            // Register first: the leader creates this member's replication slot once it sees the
            // member key, and a standby cannot stream (nor open for connections) without it.
            activity = .starting
            await publish(after: observation)
            if source != nil { await reRegisterIfSessionLost(observation) }
            defer { activity = nil }
            if let source {
                try await node.start(following: source)
                following = source.member
            } else if asPrimary {
                liftFenceIfLeaseValid()
                lastRunningRole = .primary
                // Crash recovery can take long: the leader keeps its lease while it runs (the
                // decider releases the key after primary_start_timeout).
                let node = self.node
                if status.holdsLeaderKey {
                    try await whileRenewing(limit: configuration.startTimeout + .seconds(5)) {
                        try await node.start(following: nil)
                    }
                } else {
                    try await node.start(following: nil)
                }
                following = nil
            } else {
                // Read-only: a standby without an upstream, never "as it was" (it may have been a primary).
                try await node.demote(toFollow: nil, mode: .fast)
                following = nil
            }
            await hooks.callback?("on_start", asPrimary ? .primary : .replica)
            return true

        case .stopPostgres(let mode):
            if mode != .immediate, let beforeStop = hooks.beforeStop {
                try await whileRenewing(limit: configuration.hookTimeout + .seconds(5)) { await beforeStop() }
            }
            try await stopKeepingTheKey(mode: mode)
            await hooks.callback?("on_stop", status.role)
            return true

        case .promote:
            forgetSynchronousSetting()
            return try await promote(observation)

        case .demote(let mode):
            forgetSynchronousSetting()
            try await demote(mode)
            return true

        case .follow(let source):
            try await node.follow(source)
            following = source.member
            return true

        case .demoteCluster(let remote):
            forgetSynchronousSetting()
            try await demoteCluster(to: remote, observation)
            return true

        case .rejoinDiverged(let source), .rewindIfNeeded(let source):
            // The decider asks for pg_rewind where the data directory may have diverged (pg_rewind
            // itself is a no-op when it did not).
            try await rewind(from: source, observation)
            return true

        case .clearFailover(let expected):
            _ = try await store.deleteFailover(expected: expected)
            return true

        case .clearSync(let expected):
            _ = try await store.deleteSync(expected: expected)
            return true

        case .writeSync(let state, let expected):
            return try await store.writeSync(state, expected: expected)

        case .setSynchronousStandbys(let setting):
            // Unknown while it is applied: a failure leaves it unknown, not the old value.
            appliedSynchronousStandbys = nil
            synchronousAppliedAt = nil
            // Waits (up to seconds) for postgres to show the value: the lease is renewed meanwhile.
            let node = self.node
            let appliedAt = try await whileRenewing(limit: .seconds(15)) {
                try await node.setSynchronousStandbys(setting)
            }
            guard let appliedAt else {
                // Not confirmed (an ALTER SYSTEM value over Baton's, a reload refused): what
                // postgres waits for stays unknown; the sync key names no standby until it is.
                logger.warning(
                    "synchronous_standby_names \(setting) not confirmed by postgres: the sync key names no standby; asked again next cycle"
                )
                return false
            }
            synchronousAppliedAt = appliedAt
            appliedSynchronousStandbys = setting
            return true

        case .fetchPeers:
            let others = observation.cluster?.members.filter { $0.name != me } ?? []
            outcome.peers = await peers.status(of: others)
            return true

        case .askFailsafeConfirmation:
            let members =
                status.cluster?.failsafe
                ?? Dictionary(
                    (status.cluster?.members ?? []).filter { $0.name != me }.map { ($0.name, $0.apiURL) },
                    uniquingKeysWith: { first, _ in first })
            let sent = clock.now
            let confirmed = await peers.confirmFailsafe(
                leader: me, connURL: configuration.connURL, apiURL: configuration.apiURL, members: members)
            outcome.failsafe = confirmed
            if confirmed, session != nil, observation.postgres.inRecovery == false {
                // Every member confirmed this primary after `sent`: none of them will promote
                // while it keeps asking, so the fence (and the guard, and the watchdog) may wait
                // as long as after a renewal sent then.
                let (ttl, margin) = timing
                leaseDeadline = max(leaseDeadline ?? sent, sent + ttl - margin)
                await syncBackstop(primary: true)
                if let watchdog, let deadline = leaseDeadline {
                    try? await watchdog.keepAlive(timeout: max(.zero, deadline + margin - clock.now))
                }
            }
            return true

        case .writeFailsafe(let members):
            try await store.writeFailsafe(members)
            return true
        }
    }

    /// Renews the session now, whatever its age (a replica's member key hangs on it too). Failures
    /// are left to the decision: an expired session is forgotten, and the core then asks for a
    /// new one.
    /// A promotion or demotion leaves what postgres waits for unknown to the decider (it asks again).
    func forgetSynchronousSetting() {
        appliedSynchronousStandbys = nil
        synchronousAppliedAt = nil
    }

    func keepSessionAlive() async {
        guard let current = session else { return }
        do {
            _ = try await renewLease(nil)
        } catch {
            forgetSessionIfLost(error, session: current)
            logger.debug("keepalive failed: \(error)")
        }
    }

    /// Arms the fence backstop with the current deadline while this node leads or runs as primary;
    /// disarms it otherwise.
    func syncBackstop(primary: Bool) async {
        guard let fenceBackstop else { return }
        if let deadline = leaseDeadline, status.holdsLeaderKey || primary || status.postgres.inRecovery == false,
            status.postgres.process == .running || status.holdsLeaderKey
        {
            await fenceBackstop.arm(remaining: deadline - clock.now)
        } else {
            await fenceBackstop.disarm()
        }
    }

    /// A standby cannot stream, nor open for connections, before the leader has created its
    /// replication slot, which the leader does only for members it sees in the store. When this
    /// member's session was found lost while it was about to rejoin (its lease expired during a
    /// partition the cycle has not noticed), it registers again with a new session before it
    /// starts postgres; otherwise postgres waits for a slot that never comes, and the cycle with it.
    /// pg_rewind onto `source` and follow it, published as `rewinding` while it runs; a member
    /// whose session was lost registers again first, so the leader keeps its slot.
    private func rewind(from source: ReplicationSource, _ observation: Observation) async throws {
        activity = .rewinding
        await publish(after: observation)
        await reRegisterIfSessionLost(observation)
        defer { activity = nil }
        try await node.rewind(from: source)
        following = source.member
    }

    func reRegisterIfSessionLost(_ observation: Observation) async {
        guard session == nil, !status.holdsLeaderKey else { return }
        do {
            let granted = try await grantSession()
            adopt(granted)
            logger.info(
                "store session lost before rejoining: registered again with a new one",
                metadata: ["ha.session": "\(granted.id)"])
            await publish(after: observation)
        } catch {
            logger.warning("could not create a store session before rejoining: \(error)")
        }
    }

    /// Forgets the session after the store said its lease is gone — only if `lost` (the session
    /// the failed request used; the current one when nil) is still the current session.
    func forgetSessionIfLost(_ error: any Error, session lost: SessionID? = nil) {
        guard let error = error as? StoreError, error.code == .leaseNotFound else { return }
        guard lost == nil || lost == session else { return }
        logger.warning("store session lost: \(error.message)")
        session = nil
        // The lease is gone: a postgres that may be primary is fenced now (the fence task acts on a
        // passed deadline), not left without a deadline.
        leaseDeadline = leaseDeadline.map { min($0, clock.now) }
        status.holdsLeaderKey = false
    }

    /// Keeps the session alive; the new deadline counts from the moment the request was sent.
    func renewLease(_ observation: Observation?) async throws -> Bool {
        guard let current = session else { return false }
        let sent = clock.now
        let (ttl, margin) = timing
        lastRenewalAttempt = sent
        renewalsInFlight += 1
        if oldestRenewalInFlight == nil { oldestRenewalInFlight = sent }
        defer {
            renewalsInFlight -= 1
            if renewalsInFlight == 0 { oldestRenewalInFlight = nil }
        }
        let renewed = try await store.keepAlive(current)
        // The session may have been replaced while the request was in flight (the cycle found it
        // lost and registered a new one): the answer about the old one must not touch the new one.
        guard session == current else { return false }
        switch renewed {
        case .alive(let granted):
            let lease = min(ttl, granted, sessionTTL ?? granted)
            // Each successful keepalive proves the lease alive until its own send + lease: with two
            // in flight, an older answer arriving last must not pull the deadline back.
            let deadline = sent + lease - min(margin, lease / 4)
            leaseDeadline = max(deadline, leaseDeadline ?? deadline)
            lastRenewalSent = max(sent, lastRenewalSent ?? sent)
            if status.holdsLeaderKey { liftFenceIfLeaseValid() }
            await syncBackstop(primary: observation.map { $0.postgres.inRecovery == false } ?? false)
            if status.holdsLeaderKey, let watchdog {
                do {
                    // Counted from the keepalive's send, like the lease: the watchdog fires before
                    // etcd can expire the lease (sent + ttl), never after.
                    try await watchdog.keepAlive(timeout: max(.zero, sent + min(ttl, granted) - clock.now))
                } catch {
                    logger.error("watchdog keepalive failed: \(error)")
                }
            }
            return true
        case .expired:
            logger.warning("store session expired", metadata: ["ha.session": "\(current)"])
            session = nil
            leaseDeadline = leaseDeadline.map { min($0, clock.now) }
            status.holdsLeaderKey = false
            return false
        }
    }

    /// A store session granted with the ttl in force, and when its request was sent.
    struct GrantedSession {
        let id: SessionID
        let sent: MonotonicInstant
        let ttl: Duration
    }

    func grantSession() async throws -> GrantedSession {
        let sent = clock.now
        let ttl = timing.ttl
        return GrantedSession(id: try await store.createSession(ttl: ttl), sent: sent, ttl: ttl)
    }

    /// Makes `granted` this agent's session; its fencing deadline counts from the request's send.
    func adopt(_ granted: GrantedSession) {
        session = granted.id
        sessionTTL = granted.ttl
        leaseDeadline = granted.sent + granted.ttl - timing.margin
    }

    /// Lets the node start as a primary again after a fence, once this agent holds the leader key
    /// under a lease whose deadline has not passed.
    func liftFenceIfLeaseValid() {
        guard let deadline = leaseDeadline, clock.now < deadline, session != nil else { return }
        node.liftFence()
    }

    /// A dynamic ttl change: a new session with the ttl in force; the leader key (when held) and
    /// the member key move onto it before the old session is revoked, so that neither key is ever
    /// without a lease. Losing the leader key meanwhile keeps the old session and ends the sequence.
    func replaceSession(_ observation: Observation) async throws -> Bool {
        guard let old = session else { return false }
        let granted = try await grantSession()
        if observation.cluster?.leader?.member == configuration.name {
            guard try await store.reattachLeader(member: configuration.name, session: granted.id) else {
                try? await store.revokeSession(granted.id)
                logger.warning("ttl change: the leader key could not be moved to the new session; keeping the old one")
                return false
            }
            status.holdsLeaderKey = true
        }
        adopt(granted)
        lastRenewalSent = granted.sent
        await publish(after: observation)
        do {
            try await store.revokeSession(old)
        } catch {
            logger.warning("ttl change: could not revoke the old session (it expires by itself): \(error)")
        }
        await syncBackstop(primary: observation.postgres.inRecovery == false)
        logger.info(
            "moved to a session with the new ttl",
            metadata: ["ha.session": "\(granted.id)", "ha.ttl": "\(granted.ttl)", "ha.old_session": "\(old)"])
        return true
    }

    /// Runs a long action the leader takes deliberately (a hook, an operator's restart, crash
    /// recovery, a promotion) while its lease is renewed beside it every ttl/3: renewal never waits
    /// behind the action, and the lease keeper does not count the cycle as stuck while it runs.
    /// When the store stops answering, renewal fails and the fence acts at the deadline as always.
    ///
    /// `limit` bounds how long the action keeps the lease renewed: an action that is still running
    /// past it (a query on a frozen backend ignores its cancel) no longer counts as progress, and
    /// the lease keeper lets the lease go as for a stuck cycle.
    func whileRenewing<T: Sendable>(
        limit: Duration, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        longActions += 1
        let until = clock.now + limit
        longActionsUntil = max(until, longActionsUntil ?? until)
        defer {
            longActions -= 1
            if longActions == 0 { longActionsUntil = nil }
            noteProgress()
        }
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                // Beside the lease keeper (the simulation drives no keeper task): whichever runs
                // first renews, the other finds the renewal fresh or in flight.
                while !Task.isCancelled {
                    let interval = await self.renewInterval
                    try await self.clock.sleep(for: interval)
                    await self.renewIfDue()
                }
                return nil
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let value = result { return value }
            }
            throw CancellationError()
        }
    }

    func currentTTL() -> Duration { effectiveConfig(status.cluster).ttl }

    func promote(_ observation: Observation) async throws -> Bool {
        if let prePromote = hooks.prePromote,
            !(try await whileRenewing(limit: configuration.hookTimeout + .seconds(5), { await prePromote() }))
        {
            logger.warning("pre-promote hook vetoed the promotion: releasing the leader key")
            _ = try? await store.releaseLeader(member: configuration.name)
            status.holdsLeaderKey = false
            return false
        }
        let before = observation.postgres
        // Arm the backstop before postgres becomes writable: from here on a frozen agent must not
        // leave a primary running past its lease.
        guard let deadline = leaseDeadline, deadline > clock.now else {
            logger.warning("not promoting: the lease deadline has passed")
            return false
        }
        await fenceBackstop?.arm(remaining: deadline - clock.now)
        if let refusal = await armWatchdogBeforePromotion(deadline: deadline) {
            watchdogRefusedAt = clock.now
            logger.error("not promoting: \(refusal); releasing the leader key and staying out of the race for ttl")
            _ = try? await store.releaseLeader(member: configuration.name)
            status.holdsLeaderKey = false
            await fenceBackstop?.disarm()
            return false
        }
        let node = self.node
        let promoteTimeout = configuration.promoteTimeout
        // From here on it may run as a primary: whatever follows it later goes through pg_rewind,
        // even if no status read confirms the promotion.
        lastRunningRole = .primary
        try await whileRenewing(limit: promoteTimeout + .seconds(5)) { try await node.promote(timeout: promoteTimeout) }
        status.promotions += 1
        following = nil
        if !logicalSlotReadiness.pending.isEmpty {
            logger.warning(
                "logical slots that may be unsafe to use after this promotion (their catalog rows were not yet held by the old leader): \(logicalSlotReadiness.pending.keys.sorted().joined(separator: ", "))"
            )
            logicalSlotReadiness.reset()
        }
        logicalCopyAttempts = [:]
        await warnAboutMissingLogicalSlots(observation)
        let previousLeader = observation.cluster?.history.last?.newLeader
        let reason: String
        if let request = observation.cluster?.failover?.value {
            reason = request.leader != nil ? "switchover from \(request.leader ?? "?")" : "manual failover"
        } else {
            reason = "failover" + (previousLeader.map { " from \($0)" } ?? "")
            status.failovers += 1
        }
        // The timeline that ended is the new one minus one. Read after the promotion: a standby
        // whose WAL receiver was down reports its last checkpoint's timeline, which can lag.
        let promotedTimeline = await node.status().timeline
        let endedTimeline = promotedTimeline.map { max(1, $0 - 1) } ?? before.timeline ?? 1
        let entry = HistoryEntry(
            timeline: endedTimeline, lsn: before.walPosition ?? .zero, reason: reason,
            timestamp: Self.isoTimestamp(wallClock()), newLeader: configuration.name)
        do {
            try await store.writeHistory(
                observation.config.history(observation.cluster?.history ?? [], appending: entry))
        } catch {
            logger.warning("could not record the promotion in the history key: \(error)")
        }
        logger.info(
            "promoted: now the primary", metadata: ["pg.timeline": "\(promotedTimeline ?? endedTimeline + 1)"])
        await hooks.callback?("on_role_change", .primary)
        return true
    }

    /// Arms the watchdog before postgres becomes writable; with `watchdog.mode: required` a
    /// watchdog that is missing or cannot be armed refuses the promotion (returns why).
    func armWatchdogBeforePromotion(deadline: MonotonicInstant) async -> String? {
        guard let watchdog else {
            return configuration.watchdogRequired ? "watchdog mode is required but no watchdog is open" : nil
        }
        do {
            try await watchdog.keepAlive(timeout: max(.zero, deadline - clock.now))
            return nil
        } catch {
            if configuration.watchdogRequired {
                return "watchdog mode is required but the watchdog could not be armed (\(error))"
            }
            logger.warning("could not arm the watchdog before promoting (mode automatic): \(error)")
            return nil
        }
    }

    func demote(_ mode: DemoteMode) async throws {
        let stopMode: StopMode = mode == .graceful ? .fast : .immediate
        // A standby leader stepping down (a switchover inside a standby cluster) ran as a standby:
        // it follows the next leader without pg_rewind. Unknown is taken for a primary.
        let wasStandby = status.postgres.inRecovery == true
        if mode == .graceful, let beforeStop = hooks.beforeStop {
            try await whileRenewing(limit: configuration.hookTimeout + .seconds(5)) { await beforeStop() }
        }
        try await stopKeepingTheKey(mode: stopMode)
        // Peers ask this member's REST API before they race: it must not report the primary it
        // was a moment ago once the key is free.
        status.postgres = await node.status()
        if mode == .graceful || mode == .immediate {
            _ = try? await store.releaseLeader(member: configuration.name)
        }
        status.holdsLeaderKey = false
        following = nil
        lastRunningRole = wasStandby ? .replica : .primary
        try? await watchdog?.disarm()
        await fenceBackstop?.disarm()
        logger.info("demoted (\(mode.rawValue)): postgres stopped")
        await hooks.callback?("on_role_change", wasStandby ? .replica : .demoted)
    }

    /// After a promotion: permanent logical slots this member had no copy of. The leader creates
    /// them anew, at the current position: their consumers miss every change in between.
    func warnAboutMissingLogicalSlots(_ observation: Observation) async {
        let config = effectiveConfig(observation.cluster)
        let (wanted, _) = logicalSlotSettings(config, members: observation.cluster?.members ?? [])
        guard !wanted.isEmpty, let existing = try? await node.logicalReplicationSlots() else { return }
        let missing = wanted.keys.filter { existing[$0] == nil }.sorted()
        guard !missing.isEmpty else { return }
        logger.error(
            "permanent logical slots this member had no copy of when it was promoted: \(missing.joined(separator: ", ")); they are created anew at the current position and their consumers miss the changes in between: resynchronise them"
        )
    }

    /// Puts how far the copy is into the member key (`clone_progress`) and publishes it.
    func publishCloneProgress(
        _ progress: CloneProgress, since started: ContinuousClock.Instant, observation: Observation
    )
        async
    {
        guard activity == .creatingReplica else { return }
        let seconds = max(1, (ContinuousClock.now - started).components.seconds)
        cloneProgress = Member.CloneProgressRecord(
            doneKB: progress.doneKB, totalKB: progress.totalKB > 0 ? progress.totalKB : nil,
            rateKBs: progress.doneKB / seconds, method: nil)
        await publish(after: observation)
    }

    /// `demote-cluster`: the primary stops (a fast shutdown, the lease renewed meanwhile), keeps
    /// the leader key, and rejoins as the standby leader following the other cluster: pg_rewind
    /// from it where this one diverged (its promotion forked off this history), then a start as
    /// its standby. Its own standbys go on streaming from it.
    func demoteCluster(to remote: ReplicationSource, _ observation: Observation) async throws {
        if let beforeStop = hooks.beforeStop {
            try await whileRenewing(limit: configuration.hookTimeout + .seconds(5)) { await beforeStop() }
        }
        try await stopKeepingTheKey(mode: .fast)
        status.postgres = await node.status()
        lastRunningRole = .primary
        following = nil
        try? await watchdog?.disarm()
        await fenceBackstop?.disarm()
        logger.info(
            "demoting the cluster: postgres stopped; rejoining as the standby leader following \(remote.member)")
        await hooks.callback?("on_role_change", .standbyLeader)
        activity = .rewinding
        await publish(after: observation)
        defer { activity = nil }
        let node = self.node
        try await whileRenewing(limit: configuration.startTimeout + .seconds(600)) {
            try await node.rejoinOtherCluster(remote)
        }
        following = remote.member
        lastRunningRole = .replica
    }

    /// Stops postgres; a leader's fast shutdown (a switchover's, the shutdown checkpoint can take
    /// long) keeps the lease renewed until postgres is down, so that it is never cut short by the
    /// fence into an immediate shutdown that loses what the standbys have not received yet.
    func stopKeepingTheKey(mode: StopMode) async throws {
        let node = self.node
        let config = effectiveConfig(status.cluster)
        let timeout = config.stopTimeout(
            primary: status.postgres.inRecovery == false, agentDefault: configuration.stopTimeout)
        if status.holdsLeaderKey, mode != .immediate {
            try await whileRenewing(limit: timeout + .seconds(15)) { try await node.stop(mode: mode, timeout: timeout) }
        } else {
            try await node.stop(mode: mode, timeout: timeout)
        }
    }

    /// Now as Patroni writes it in `history`; the clock's answer is not trusted blindly (a wall
    /// clock outside 0001–9999 writes the epoch rather than trapping).
    static func isoTimestamp(_ seconds: Double) -> String {
        ISO8601.string(secondsSince1970: seconds) ?? "1970-01-01T00:00:00.000+00:00"
    }
}

extension Action {
    /// Whether this action replaces the data directory (bootstrap, clone).
    var startsANewDataDirectory: Bool {
        switch self {
        case .bootstrap, .cloneReplica: return true
        default: return false
        }
    }

    /// Whether running this action can change the local postgres (so its status must be read again).
    var changesPostgres: Bool {
        switch self {
        case .bootstrap, .cloneReplica, .startPostgres, .stopPostgres, .promote, .demote, .follow, .rewindIfNeeded,
            .rejoinDiverged, .setSynchronousStandbys, .demoteCluster:
            return true
        case .createSession, .renewLease, .replaceSession, .acquireLeader, .reattachLeader, .releaseLeader,
            .claimInitialize,
            .recordSystemIdentifier, .cancelInitialize, .clearFailover, .clearSync, .writeSync, .fetchPeers,
            .askFailsafeConfirmation, .writeFailsafe:
            return false
        }
    }
}

/// The last progress a clone reported (from the tool's thread), read by the publishing task.
final class LatestCloneProgress: Sendable {
    private let state = Mutex<CloneProgress?>(nil)

    var value: CloneProgress? {
        get { state.withLock { $0 } }
        set { state.withLock { $0 = newValue } }
    }
}
