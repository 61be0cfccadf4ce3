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
        guard status.holdsLeaderKey, pg.process == .running, pg.inRecovery == false else {
            // What a leader remembers about member slots is its own: a later term starts afresh.
            if !status.holdsLeaderKey {
                memberSlotMemory = MemberSlots.Memory()
                lastRetainedSlots = nil
            }
            if pg.process == .running, pg.inRecovery == true {
                await maintainPermanentSlotCopies(observation, config: config)
            }
            return
        }
        let kept = await maintainMemberSlots(observation, config: config, now: now, optime: pg.currentLSN)
        if let optime = pg.currentLSN,
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
        if let cluster = observation.cluster, cluster.config == nil {
            if (try? await store.writeConfig(configuration.initialDynamicConfig, expected: nil)) == true {
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

    /// `use_slots`: the `config` key's (one value for the whole cluster: a leader and its
    /// standbys must agree), else the agent's file, else true (Patroni's default).
    func effectiveUseSlots(_ config: DynamicConfig) -> Bool {
        config.useSlots ?? configuration.localUseSlots ?? true
    }
}
