import BatonCore
import Logging

extension HALoop {
    /// The member record for the current state.
    func memberRecord(_ pg: PostgresStatus) -> Member {
        var state: Member.State
        switch pg.process {
        case .running: state = .running
        case .starting: state = .starting
        case .stopped: state = .stopped
        case .crashed: state = .crashed
        case .uninitialized: state = .stopped
        case .unusable: state = pg.postmasterPID != nil ? .running : .stopped
        }
        if let activity { state = activity }
        let primary = pg.process == .running && pg.inRecovery == false
        // Unknown is not "replica": while the agent cannot tell (status query failed), a postgres
        // that last ran as primary is published as primary, so that no peer takes it for a standby.
        let blindExPrimary = pg.process == .running && pg.inRecovery == nil && lastRunningRole == .primary
        var role: Member.Role = primary || blindExPrimary ? .primary : .replica
        // A standby cluster's leader: holds the key, runs as a standby.
        if role == .replica, status.holdsLeaderKey, pg.process == .running, pg.inRecovery == true {
            role = .standbyLeader
        }
        if pg.process == .uninitialized && activity == nil { role = .uninitialized }
        var member = Member(
            name: configuration.name, connURL: configuration.connURL, apiURL: configuration.apiURL, state: state,
            role: role, version: BatonCore.version, xlogLocation: pg.walPosition,
            receiveLSN: primary ? nil : pg.receiveLSN, replayLSN: primary ? nil : pg.replayLSN,
            replicationState: primary || pg.process != .running
                ? nil : (pg.streaming ? "streaming" : "in archive recovery"),
            timeline: pg.timeline, tags: configuration.tags, pendingRestart: pg.pendingRestart,
            paused: effectiveConfig(status.cluster).pause, pendingRestartReason: pg.pendingRestartReason)
        member.proxyURL = configuration.proxyURL
        member.cloneProgress = activity == .creatingReplica ? cloneProgress : nil
        member.scheduledRestart = scheduledRestart.map { request in
            NodeStatusDocument.ScheduledRestart(
                schedule: request.scheduledAtText ?? "", role: request.role?.rawValue,
                restartPending: request.onlyIfPending ? true : nil, postgresVersion: request.postgresVersionBelow)
        }
        return member
    }

    /// Writes the member key when it changed (WAL-position-only changes at most every
    /// max(loop_wait, 5 s)), and as leader the status key (at most every max(loop_wait, 2 s)) and
    /// a missing config key: under one store write per second per agent at steady state.
    ///
    /// `postgres` is a status read after actions that changed postgres; otherwise the observation's
    /// own status is current and is not read again.
    func publish(after observation: Observation, postgres: PostgresStatus? = nil) async {
        guard let session else { return }
        let pg = postgres ?? observation.postgres
        status.postgres = pg
        // Unknown is not "replica": a blind cycle keeps the role last seen.
        if pg.process == .running, let inRecovery = pg.inRecovery {
            lastRunningRole = inRecovery ? .replica : .primary
            failedStarts = 0
            lastFailedStartAt = nil
        }
        // A cycle that could not read the store does not write to it either: each write would
        // wait out the store's timeout, and a failsafe leader, whose deadline runs from its last
        // confirmation, must get back to asking its members before ttl runs out (with etcd gone
        // and retry_timeout 5 s, a member key and a status key write took 10 s of a 15 s window).
        guard observation.cluster != nil else {
            noteProgress()
            return
        }
        let record = memberRecord(pg)
        let now = clock.now
        let config = effectiveConfig(status.cluster)
        var changed = lastPublished != record
        if changed, var previous = lastPublished, let lastAt = lastPublishedAt {
            previous.xlogLocation = record.xlogLocation
            previous.receiveLSN = record.receiveLSN
            previous.replayLSN = record.replayLSN
            let onlyPositions = previous == record
            if onlyPositions, now - lastAt < max(config.loopWait, .seconds(5)) { changed = false }
        }
        let registered = status.cluster?.member(named: configuration.name) != nil
        if changed || !registered || lastPublishedSession != session {
            do {
                try await store.publishMember(record, session: session)
                lastPublished = record
                lastPublishedAt = now
                lastPublishedSession = session
                status.published = record
            } catch {
                forgetSessionIfLost(error, session: session)
                logger.warning("could not publish the member key: \(error)")
            }
        }
        // Each bounded step counts as progress for the lease keeper (a publish can be several).
        noteProgress()
        // A standby cluster's leader keeps its members' slots and the status key as a primary does.
        let standbyLeader = pg.inRecovery == true && config.standbyCluster != nil
        guard status.holdsLeaderKey, pg.process == .running, pg.inRecovery == false || standbyLeader else {
            // What a leader remembers about member slots is its own: a later term starts afresh.
            if !status.holdsLeaderKey {
                memberSlotMemory = MemberSlots.Memory()
                lastRetainedSlots = nil
            }
            if pg.process == .running, pg.inRecovery == true {
                await maintainPermanentSlotCopies(observation, config: config)
                await maintainLogicalSlotCopies(observation, config: config, replayLSN: pg.replayLSN, now: now)
            }
            return
        }
        let kept = await maintainMemberSlots(observation, config: config, now: now, optime: pg.walPosition)
        if let optime = pg.walPosition,
            lastStatusWrite.map({
                ($0.optime != optime || $0.retained != kept?.retain || $0.slots != kept?.slots)
                    && now - $0.at >= max(config.loopWait, .seconds(2))
            }) ?? true
        {
            do {
                try await store.writeStatus(LeaderStatus(optime: optime, slots: kept?.slots, retainSlots: kept?.retain))
                lastStatusWrite = (optime, kept?.retain, kept?.slots, now)
            } catch {
                logger.warning("could not write the status key: \(error)")
            }
            noteProgress()
        }
        // A missing config key is written by the leader: the last valid one this agent read (a
        // standby_cluster section, say, is not lost), else the agent file's — by a standby leader
        // only when it made the cluster (otherwise that file may lack the section it runs under).
        if let cluster = observation.cluster, cluster.config == nil,
            pg.inRecovery == false || acceptedConfig != nil || bootstrappedHere
        {
            if (try? await store.writeConfig(acceptedConfig ?? configuration.initialDynamicConfig, expected: nil))
                == true
            {
                logger.info("wrote the initial dynamic configuration to the config key")
            }
        }
    }

    /// On the leader: member slots as `MemberSlots.plan` decides (members seen now, those a
    /// previous leader retained, kept for `member_slots_ttl`); returns what the status key names
    /// (`retain_slots`, and `slots`: each kept slot's restart LSN and this leader's optime, as
    /// Patroni writes them). When the slots cannot be read, the last ones written stay.
    func maintainMemberSlots(
        _ observation: Observation, config: DynamicConfig, now: MonotonicInstant, optime: LSN?
    ) async -> (retain: [String], slots: [String: LSN])? {
        guard let cluster = observation.cluster else { return lastRetainedSlots }
        memberSlotMemory.note(
            members: cluster.members, retained: cluster.status?.retainSlots ?? [], me: configuration.name, now: now)
        let (permanent, ignored) = permanentSlotSettings(config)
        do {
            let existing = try await node.physicalReplicationSlots()
            // A copy that is gone (dropped by anyone) is forgotten: a later slot of that name is
            // not proven Baton's. Those this agent made as a replica are its own as leader too.
            permanentSlotCopies.formIntersection(existing.keys)
            memberSlotMemory.created.formUnion(permanentSlotCopies)
            let plan = MemberSlots.plan(
                me: configuration.name, members: cluster.members, existing: existing.mapValues(\.active),
                memory: memberSlotMemory, now: now, ttl: config.memberSlotsTTL, useSlots: effectiveUseSlots(config),
                permanent: permanent, ignored: ignored, paused: config.pause)
            if !plan.create.isEmpty || !plan.drop.isEmpty {
                let done = try await node.applyReplicationSlots(create: plan.create, drop: plan.drop)
                memberSlotMemory.created.formUnion(done.created)
                if !done.dropped.isEmpty {
                    for name in done.dropped {
                        memberSlotMemory.seen[name] = nil
                        memberSlotMemory.wanted[name] = nil
                        memberSlotMemory.retained[name] = nil
                        memberSlotMemory.created.remove(name)
                        permanentSlotCopies.remove(name)
                    }
                    logger.info(
                        "replication slots dropped: \(done.dropped.joined(separator: ", ")) (members gone for member_slots_ttl, use_slots off, or no longer permanent)"
                    )
                }
            }
            let advances = MemberSlots.permanentAdvances(
                permanent: plan.permanent, members: cluster.members, existing: existing)
            await node.advanceReplicationSlots(advances)
            var positions: [String: LSN] = [:]
            for name in plan.retain + plan.permanent {
                if let lsn = advances[name] ?? existing[name]?.restartLSN { positions[name] = lsn }
            }
            if let optime { positions[MemberSlots.slotName(forMember: configuration.name)] = optime }
            // Permanent logical slots: their confirmed positions, for the replicas' copies (a
            // standby leader cannot create one before PostgreSQL 16).
            if config.standbyCluster == nil {
                for (name, lsn) in await maintainLogicalSlots(
                    config: config, members: cluster.members, physical: Set(existing.keys))
                where positions[name] == nil {
                    positions[name] = lsn
                }
            }
            lastRetainedSlots = (plan.retain, positions)
            return lastRetainedSlots
        } catch {
            logger.debug("replication slots not maintained: \(error)")
            return lastRetainedSlots
        }
    }

    /// The permanent physical slots' names and the `ignore_slots` test, read once per cycle.
    func permanentSlotSettings(_ config: DynamicConfig) -> (permanent: [String], ignored: (String) -> Bool) {
        let matchers = config.ignoreSlots
        return (
            config.permanentSlots.filter(\.isPhysical).map(\.name),
            { name in matchers.contains { $0.matches(name: name, type: "physical") } }
        )
    }

    /// On a running replica: copies of the permanent physical slots, advanced to the leader's
    /// positions (`PermanentSlotCopies`), so that a promotion finds them in place.
    func maintainPermanentSlotCopies(_ observation: Observation, config: DynamicConfig) async {
        guard let cluster = observation.cluster else { return }
        let (permanent, ignored) = permanentSlotSettings(config)
        do {
            let existing = try await node.physicalReplicationSlots()
            permanentSlotCopies.formIntersection(existing.keys)
            let plan = PermanentSlotCopies.plan(
                me: configuration.name, members: cluster.members, tags: configuration.tags,
                useSlots: effectiveUseSlots(config), permanent: permanent, ignored: ignored, existing: existing,
                leaderPositions: cluster.status?.slots ?? [:], copies: permanentSlotCopies, paused: config.pause)
            guard plan != PermanentSlotCopies.Plan() else { return }
            if !plan.create.isEmpty || !plan.drop.isEmpty {
                let done = try await node.applyReplicationSlots(create: plan.create, drop: plan.drop)
                permanentSlotCopies.formUnion(done.created)
                permanentSlotCopies.subtract(done.dropped)
                if !done.created.isEmpty {
                    logger.info("permanent slots copied to this replica: \(done.created.joined(separator: ", "))")
                }
                if !done.dropped.isEmpty {
                    logger.info(
                        "permanent slot copies dropped: \(done.dropped.joined(separator: ", ")) (no longer permanent here)"
                    )
                }
            }
            await node.advanceReplicationSlots(plan.advance)
        } catch {
            logger.debug("permanent slot copies not maintained: \(error)")
        }
    }

    /// The permanent logical slots wanted, and the `ignore_slots` test for a logical slot.
    func logicalSlotSettings(
        _ config: DynamicConfig, members: [Member]
    ) -> (wanted: [String: PermanentSlot], ignored: (String, LogicalSlot) -> Bool) {
        let matchers = config.ignoreSlots
        let ignored = { (name: String, database: String?, plugin: String?) in
            matchers.contains { $0.matches(name: name, type: "logical", database: database, plugin: plugin) }
        }
        let memberSlots = Set((members.map(\.name) + [configuration.name]).map(MemberSlots.slotName(forMember:)))
        let wanted = LogicalSlots.wanted(config.permanentSlots, memberSlots: memberSlots) { slot in
            guard case .logical(let database, let plugin) = slot.kind else { return false }
            return ignored(slot.name, database, plugin)
        }
        return (wanted, { name, slot in ignored(name, slot.database, slot.plugin) })
    }

    /// On the leader: creates the permanent logical slots, drops those this agent made that are
    /// no longer permanent; returns their confirmed positions for the status key.
    func maintainLogicalSlots(config: DynamicConfig, members: [Member], physical: Set<String>) async -> [String: LSN] {
        let (wanted, ignored) = logicalSlotSettings(config, members: members)
        guard !wanted.isEmpty || !ownedLogicalSlots.isEmpty else { return [:] }
        logicalSlotReadiness.reset()
        do {
            let existing = try await node.logicalReplicationSlots()
            ownedLogicalSlots.formIntersection(existing.keys)
            let plan = LogicalSlots.primaryPlan(
                wanted: wanted, existing: existing, physical: physical, owned: ownedLogicalSlots,
                named: config.permanentSlotNames, ignoredName: ignored, paused: config.pause)
            var problems: [String] = []
            if !plan.mismatched.isEmpty {
                problems.append(
                    "permanent logical slots held by a slot of another kind, database or plugin, left alone: "
                        + plan.mismatched.joined(separator: ", "))
            }
            var create = plan.create
            if !create.isEmpty, let level = try await node.currentSettings(["wal_level"])["wal_level"],
                level != "logical"
            {
                problems.append(
                    "permanent logical slots not created: wal_level is \(level); set postgresql.parameters.wal_level: logical"
                )
                create = []
            }
            noteLogicalSlotProblem(problems.isEmpty ? nil : problems.joined(separator: "; "))
            if !create.isEmpty || !plan.drop.isEmpty {
                let done = try await node.applyLogicalSlots(create: create, drop: plan.drop)
                ownedLogicalSlots.formUnion(done.created)
                ownedLogicalSlots.subtract(done.dropped)
            }
            return plan.positions
        } catch {
            logger.debug("logical slots not maintained: \(error)")
            return [:]
        }
    }

    /// On a running replica: copies of the permanent logical slots (copied from the leader, which
    /// restarts postgres once), advanced to the leader's confirmed positions, and their
    /// readiness for a failover (`LogicalSlots.replicaPlan`, `LogicalSlotReadiness`).
    func maintainLogicalSlotCopies(
        _ observation: Observation, config: DynamicConfig, replayLSN: LSN?, now: MonotonicInstant
    ) async {
        guard let cluster = observation.cluster else { return }
        let (wanted, ignored) = logicalSlotSettings(config, members: cluster.members)
        guard !wanted.isEmpty || !ownedLogicalSlots.isEmpty else { return }
        do {
            let existing = try await node.logicalReplicationSlots()
            ownedLogicalSlots.formIntersection(existing.keys)
            let physical = try await node.physicalReplicationSlots()
            let settings = try await node.currentSettings(["wal_level", "hot_standby_feedback"])
            let plan = LogicalSlots.replicaPlan(
                wanted: wanted, tags: configuration.tags, useSlots: effectiveUseSlots(config), existing: existing,
                physical: Set(physical.keys), leaderPositions: cluster.status?.slots ?? [:], replayLSN: replayLSN,
                copies: ownedLogicalSlots, named: config.permanentSlotNames,
                hotStandbyFeedback: settings["hot_standby_feedback"].map { $0 == "on" },
                walLevel: settings["wal_level"], ignoredName: ignored, paused: config.pause)
            var problems: [String] = []
            if let blocked = plan.blocked { problems.append("logical slots not copied to this replica: " + blocked) }
            if !plan.mismatched.isEmpty {
                problems.append(
                    "permanent logical slots held here by a slot of another kind, database or plugin, left alone: "
                        + plan.mismatched.joined(separator: ", "))
            }
            noteLogicalSlotProblem(problems.isEmpty ? nil : problems.joined(separator: "; "))
            if !plan.drop.isEmpty {
                let done = try await node.applyLogicalSlots(create: [], drop: plan.drop)
                ownedLogicalSlots.subtract(done.dropped)
                if !done.dropped.isEmpty {
                    logger.info(
                        "logical slot copies dropped: \(done.dropped.joined(separator: ", ")) (no longer permanent here)"
                    )
                }
            }
            // A copy that cannot be advanced (the WAL it starts from is gone here, or it was
            // invalidated) is of no use after a failover: this agent's own is dropped and copied
            // again from the leader.
            let unusable = await node.advanceLogicalSlots(plan.advance).filter { ownedLogicalSlots.contains($0) }
            if !unusable.isEmpty, !config.pause {
                let done = try await node.applyLogicalSlots(create: [], drop: unusable)
                ownedLogicalSlots.subtract(done.dropped)
                if !done.dropped.isEmpty {
                    logger.warning(
                        "logical slot copies dropped to be copied again: \(done.dropped.joined(separator: ", ")) (they start from WAL this replica no longer has, or were invalidated)"
                    )
                }
            }
            // Each slot's copies are spaced out (10 s, 40 s, 160 s, … up to an hour after the
            // one before, whatever came of it): a copy that PostgreSQL does not keep, or that
            // cannot be used, does not restart postgres every cycle.
            let due = plan.copy.filter { name in logicalCopyAttempts[name].map { now >= $0.next } ?? true }
            if !due.isEmpty, lastLogicalCopyFailure.map({ now >= $0 }) ?? true,
                let leader = cluster.leaderMember, leader.name != configuration.name,
                let source = ReplicationSource(member: leader)
            {
                await copyLogicalSlots(due.compactMap { wanted[$0] }, from: source, now: now)
                // `existing` predates the copy (and the restart): readiness waits for the next cycle.
                return
            }
            await checkLogicalSlotReadiness(cluster: cluster, existing: existing)
        } catch {
            logger.debug("logical slot copies not maintained: \(error)")
        }
    }

    /// A slot not copied (nothing restarted: it starts from WAL this replica lacks, or does not
    /// check out on the leader) is tried again after the short wait; a copy that failed after
    /// postgres was stopped for it, after the long one (each such attempt restarts postgres).
    static var logicalCopyRetry: (skipped: Duration, failed: Duration) { (.seconds(10), .seconds(120)) }

    private func copyLogicalSlots(_ slots: [PermanentSlot], from source: ReplicationSource, now: MonotonicInstant) async
    {
        do {
            let copied = try await node.copyLogicalSlots(slots, from: source)
            ownedLogicalSlots.formUnion(copied)
            logicalSlotReadiness.copied(copied)
            for name in copied {
                let count = (logicalCopyAttempts[name]?.count ?? 0) + 1
                let wait = min(Duration.seconds(10) * (1 << min(2 * (count - 1), 20)), .seconds(3600))
                logicalCopyAttempts[name] = (count, now + wait)
            }
            if !copied.isEmpty {
                logger.info(
                    "logical slots copied from \(source.member): \(copied.joined(separator: ", ")) (postgres restarted to load them)"
                )
            }
            let missing = slots.map(\.name).filter { !copied.contains($0) }
            lastLogicalCopyFailure = missing.isEmpty ? nil : now + Self.logicalCopyRetry.skipped
            noteLogicalCopyProblem(
                missing.isEmpty
                    ? nil
                    : "logical slots not copied from \(source.member) yet: \(missing.joined(separator: ", ")) (on the leader a slot starts from WAL this replica lacks until its consumer moves it on, or is not as configured; tried again every \(Self.logicalCopyRetry.skipped))"
            )
        } catch {
            lastLogicalCopyFailure = now + Self.logicalCopyRetry.failed
            noteLogicalCopyProblem(
                "could not copy logical slots from \(source.member): \(error) (tried again in \(Self.logicalCopyRetry.failed))"
            )
        }
    }

    /// Logs a problem with copying logical slots once (again when it changes), and its end.
    private func noteLogicalCopyProblem(_ problem: String?) {
        noteOnce(
            problem, last: &loggedLogicalCopyProblem, level: .warning,
            ended: "logical slots: copied from the leader as configured")
    }

    /// Asks the leader for the `catalog_xmin` of this replica's physical slot (and of the slots
    /// whose value is still to be remembered) while copies are pending; logs each that is ready.
    private func checkLogicalSlotReadiness(cluster: ClusterView, existing: [String: LogicalSlot]) async {
        guard !logicalSlotReadiness.pending.isEmpty else { return }
        let mine = MemberSlots.slotName(forMember: configuration.name)
        var physical: TransactionID?
        var leader: [String: TransactionID] = [:]
        if let member = cluster.leaderMember, member.name != configuration.name,
            let source = ReplicationSource(member: member)
        {
            do {
                let xmins = try await node.slotCatalogXmins(
                    [mine] + logicalSlotReadiness.unremembered, on: source)
                physical = xmins[mine] ?? nil
                for (name, value) in xmins where name != mine { if let value { leader[name] = value } }
            } catch {
                logger.debug("could not read slot catalog_xmin on the leader: \(error)")
                return
            }
        }
        for name in logicalSlotReadiness.observe(physical: physical, leader: leader, local: existing) {
            logger.info("logical slot \(name) is safe to use after a failover")
            logicalCopyAttempts[name] = nil
        }
    }

    /// Logs a logical slot problem once (again when it changes), and its end.
    private func noteLogicalSlotProblem(_ problem: String?) {
        noteOnce(
            problem, last: &loggedLogicalSlotProblem, level: .error, ended: "logical slots: the earlier problem is gone"
        )
    }

    /// Logs `problem` at `level` when it differs from `last` (the one logged before), and `ended`
    /// when a problem is gone.
    private func noteOnce(_ problem: String?, last: inout String?, level: Logger.Level, ended: String) {
        guard problem != last else { return }
        if let problem {
            logger.log(level: level, "\(problem)")
        } else {
            logger.info("\(ended)")
        }
        last = problem
    }

    /// `use_slots`: the `config` key's (one value for the whole cluster: a leader and its
    /// standbys must agree), else the agent's file, else true (Patroni's default).
    func effectiveUseSlots(_ config: DynamicConfig) -> Bool {
        config.useSlots ?? configuration.localUseSlots ?? true
    }
}
