import BatonCore
import Logging

/// An operator request waiting for the loop, and the caller waiting for its answer.
struct PendingOperatorRequest {
    var request: OperatorRequest
    var reply: CheckedContinuation<OperatorReply, Never>
}

extension HALoop {
    /// Hands `request` to the loop and waits for its answer. The loop is woken at once and runs
    /// the request at the start of its next cycle, before it observes and decides, so the request
    /// never runs concurrently with an HA action.
    public func submit(_ request: OperatorRequest) async -> OperatorReply {
        if stopped { return OperatorReply(503, "the agent is shutting down; retry when it is back") }
        return await withCheckedContinuation { continuation in
            operatorQueue.append(PendingOperatorRequest(request: request, reply: continuation))
            wakeSignal.signal("operator request: \(request)")
        }
    }

    /// Runs the queued operator requests, then a scheduled restart that is due.
    func runOperatorRequests() async {
        while !operatorQueue.isEmpty, !stopped {
            let pending = operatorQueue.removeFirst()
            logger.info("operator request: \(pending.request)")
            switch pending.request {
            case .restart(let request) where request.scheduledAt != nil:
                pending.reply.resume(returning: schedule(request))
            case .restart(let request):
                pending.reply.resume(returning: await restartNow(request))
            case .cancelScheduledRestart:
                if scheduledRestart == nil {
                    pending.reply.resume(returning: OperatorReply(404, "no restarts are scheduled"))
                } else {
                    scheduledRestart = nil
                    pending.reply.resume(returning: OperatorReply(200, "scheduled restart deleted"))
                }
            case .reload:
                pending.reply.resume(returning: await reload())
            case .reinitialize(let force):
                await reinitialize(force: force, reply: pending.reply)
            }
        }
        if let due = scheduledRestart, let at = due.scheduledAt, wallClock() >= at {
            scheduledRestart = nil
            let reply = await restartNow(due)
            logger.info("scheduled restart (\(due.scheduledAtText ?? "\(at)")): \(reply.message)")
        }
    }

    /// Answers every waiting request when the agent shuts down.
    func failPendingOperatorRequests() {
        let pending = operatorQueue
        operatorQueue = []
        for item in pending {
            item.reply.resume(returning: OperatorReply(503, "the agent is shutting down; retry when it is back"))
        }
    }

    func schedule(_ request: RestartRequest) -> OperatorReply {
        if effectiveConfig(status.cluster).pause {
            return OperatorReply(409, "Can't schedule restart in the paused state; resume the cluster first")
        }
        if scheduledRestart != nil {
            return OperatorReply(
                409, "Another restart is already scheduled; cancel it first (DELETE /restart)")
        }
        scheduledRestart = request
        return OperatorReply(202, "Restart scheduled")
    }

    /// Restarts postgres in place (fast shutdown, start as it was), if the request's conditions hold.
    func restartNow(_ request: RestartRequest) async -> OperatorReply {
        let observation = await observe(peers: nil, failsafe: nil)
        if let why = request.unmetCondition(status) {
            return OperatorReply(503, "restart conditions are not satisfied: \(why)")
        }
        if status.postgres.process == .uninitialized {
            return OperatorReply(503, "postgres has no data directory yet: nothing to restart")
        }
        let leader = status.holdsLeaderKey
        if leader {
            // A fresh lease before postgres goes down: the restart must not run into the fence.
            do {
                _ = try await renewLease(observation)
            } catch {
                forgetSessionIfLost(error)
                return OperatorReply(503, "restart refused: could not renew the leader lease (\(error)); retry")
            }
        }
        let started = clock.now
        activity = .restarting
        await publish(after: observation)
        do {
            // The lease is renewed beside the restart: a slow shutdown or start-up never runs into
            // the fence while the store answers; when it does not, the fence stops the node and
            // its latch keeps the restart from bringing a primary back.
            let node = self.node
            // A clean shutdown may take its time (60 s, as before), except a primary's in
            // synchronous mode with primary_stop_timeout.
            let stopTimeout = effectiveConfig(status.cluster).stopTimeout(
                primary: status.postgres.inRecovery == false, agentDefault: .seconds(60))
            if leader {
                let limit = stopTimeout + configuration.startTimeout + .seconds(15)
                try await whileRenewing(limit: limit) { try await node.restart(stopTimeout: stopTimeout) }
            } else {
                try await node.restart(stopTimeout: stopTimeout)
            }
        } catch {
            activity = nil
            logger.error("restart failed: \(error)")
            if leader, let timeout = request.timeout {
                // The next cycles restart a down leader in place and release the key once it has been
                // down longer than primary_start_timeout: count the restart's own timeout instead.
                let limit = effectiveConfig(status.cluster).primaryStartTimeout
                memory.crashRecoveryStartedAt = started - max(.zero, limit - timeout)
            }
            return OperatorReply(503, "restart failed: \(error)")
        }
        activity = nil
        let after = await node.status()
        await publish(after: observation, postgres: after)
        await hooks.callback?("on_restart", status.role)
        logger.info(
            "postgres restarted on request",
            metadata: ["pg.elapsed_ms": "\((clock.now - started).components.seconds * 1000)"])
        return OperatorReply(200, "restarted successfully")
    }

    /// Re-reads the agent's configuration file (when the agent gave a hook) and reloads postgres.
    func reload() async -> OperatorReply {
        var notes: [String] = []
        if let reloadConfiguration = hooks.reloadConfiguration {
            do {
                notes.append(try await reloadConfiguration())
            } catch {
                return OperatorReply(
                    503, "reload refused: the configuration file cannot be used (\(error)); fix it and retry")
            }
        }
        let pg = await node.status()
        if pg.process == .running || pg.process == .starting {
            do {
                try await node.reload()
                notes.append("postgres reloaded")
                await hooks.callback?("on_reload", status.role)
            } catch {
                return OperatorReply(503, "reloading postgres failed: \(error)")
            }
        } else {
            notes.append("postgres is not running, so it was not reloaded")
        }
        return OperatorReply(202, "reload scheduled: " + notes.joined(separator: "; "))
    }

    /// Erases the data directory and clones it again from the leader, then starts following it.
    /// Answers as soon as the clone begins (Patroni answers "reinitialize started").
    func reinitialize(force: Bool, reply: CheckedContinuation<OperatorReply, Never>) async {
        let cluster = (try? await store.loadCluster()) ?? status.cluster
        guard let cluster, let leader = cluster.leader else {
            reply.resume(returning: OperatorReply(503, "Cluster has no leader, can not reinitialize"))
            return
        }
        if leader.member == configuration.name {
            reply.resume(returning: OperatorReply(503, "I am the leader, can not reinitialize"))
            return
        }
        guard let leaderMember = cluster.leaderMember, let source = ReplicationSource(member: leaderMember) else {
            reply.resume(
                returning: OperatorReply(
                    503, "the leader \(leader.member) publishes no usable conn_url yet; retry in a few seconds"))
            return
        }
        let observation = await observe(peers: nil, failsafe: nil)
        reply.resume(returning: OperatorReply(200, "reinitialize started"))
        logger.warning(
            "reinitializing on request: erasing the data directory and cloning from \(source.member)",
            metadata: ["ha.force": "\(force)"])
        following = nil
        do {
            try await node.clearDataDirectory(reason: "reinitialize requested through the REST API")
        } catch {
            logger.error("reinitialize: could not clear the data directory, nothing cloned: \(error)")
            return
        }
        // Only once the old data is gone: the clone that follows cannot have diverged.
        lastRunningRole = nil
        memory.mayHaveDiverged = false
        let outcome = await execute(
            [.cloneReplica(from: source), .startPostgres(following: source, asPrimary: false)],
            observation: observation)
        await publish(after: observation, postgres: await node.status())
        if outcome.completed {
            logger.info("reinitialized from \(source.member): streaming again")
        } else {
            logger.error("reinitialize from \(source.member) failed; the next cycles clone again")
        }
    }
}
