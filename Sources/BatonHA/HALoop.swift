import BatonCore
import Logging
import Synchronization

/// The HA loop: observe → decide (`HADecider`, pure) → execute the actions → publish. It wakes
/// on `loop_wait`, on a store watch event that matters (a deleted leader key starts the race at
/// once), on a postmaster exit, and on `wake(_:)` (REST requests).
///
/// It owns the store session. The self-fencing deadline is computed on the monotonic clock from
/// the *send* time of the last successful keepalive: `sent + ttl − margin`. A separate fence task
/// stops a primary postgres at that deadline even if the loop is stuck in a slow call.
public actor HALoop {
    let configuration: HAConfiguration
    let store: any ClusterStore
    let node: any PostgresNode
    let clock: any MonotonicClock
    let peers: any PeerProbe
    let hooks: HAHooks
    let watchdog: (any Watchdog)?
    let fenceBackstop: (any FenceGuard)?
    let wallClock: @Sendable () -> Double
    var logger: Logger
    let wakeSignal = WakeSignal()

    // State carried across cycles.
    var memory = HAMemory()
    var session: SessionID?
    /// The ttl `session` was created with (a dynamic ttl change replaces the session).
    var sessionTTL: Duration?
    /// The last `config` key value that passed validation, and the revision of a rejected one.
    var acceptedConfig: DynamicConfig?
    /// This agent claimed the initialize key: the cluster's configuration is its file's
    /// `bootstrap.dcs` until the config key says otherwise.
    var bootstrappedHere = false
    var rejectedConfigRevision: Int64?
    /// The undecodable keys already logged (see `reportUndecodableKeys`).
    var reportedKeyProblems = Set<String>()
    /// The retry_timeout the store's requests are bounded by.
    var appliedRetryTimeout: Duration?
    /// When a promotion was last refused because `watchdog.mode: required` could not be met.
    var watchdogRefusedAt: MonotonicInstant?
    var leaseDeadline: MonotonicInstant? {
        didSet { if leaseDeadline != oldValue { deadlineChanged.signal("lease deadline changed") } }
    }
    /// Wakes the fence task when the lease deadline moves, so that it sleeps until the deadline
    /// instead of polling (an idle agent used to wake 10 times a second for it).
    let deadlineChanged = WakeSignal()
    var following: String?
    /// What this agent last asked postgres to wait for, and the WAL position from which every
    /// commit waited for it; forgotten on every promotion and demotion (unknown: asked again).
    var appliedSynchronousStandbys: SynchronousSetting?
    var synchronousAppliedAt: LSN?
    var lastPublished: Member?
    var lastPublishedAt: MonotonicInstant?
    var lastPublishedSession: SessionID?
    /// When the last successful keepalive was sent.
    var lastRenewalSent: MonotonicInstant?
    /// When the last keepalive (successful or not) was sent, and whether one is in flight.
    var lastRenewalAttempt: MonotonicInstant?
    var renewalsInFlight = 0
    /// When the oldest keepalive still in flight was sent.
    var oldestRenewalInFlight: MonotonicInstant?
    /// When the cycle last finished a step (observe, an action, publish) or went idle; the lease
    /// keeper renews a leader's lease only while this is recent or a declared long action runs.
    var lastProgress: MonotonicInstant
    /// Long actions running beside the loop (`whileRenewing`), and until when the latest of them
    /// may keep the lease renewed: each declares its own limit, past which the cycle counts as stuck.
    var longActions = 0
    var longActionsUntil: MonotonicInstant?
    /// Whether the "cycle is stuck" error was logged for the current stall (once per stall).
    var stallLogged = false
    /// Starts of postgres that failed in a row, and when the last one did (the decider backs off).
    var failedStarts = 0
    /// Whether the last rejoin (pg_rewind onto a leader) failed; see `Observation.lastRejoinFailed`.
    var lastRejoinFailed = false
    var lastFailedStartAt: MonotonicInstant?
    /// Whether the last observation read the cluster from the store (false: `status.cluster` is
    /// the last view read, possibly stale).
    var clusterViewIsFresh = false
    /// The cluster's `postgresql.parameters` last put in force, and the refusals last logged.
    var appliedClusterParameters: [String: String]?
    var refusedClusterParameters: [PostgresParameters.Refusal] = []
    /// Parameters whose application failed, and when they are tried again.
    var failedClusterParameters: (parameters: [String: String], retryAt: MonotonicInstant)?
    /// `postgresql.pg_hba`/`pg_ident` last put in force (from the agent's file or the config key),
    /// the config key's lists last accepted, the problems last logged, and a failed application.
    var appliedAccessRules: AccessRules?
    var acceptedClusterAccessRules = AccessRules()
    var accessProblems: [String] = []
    var failedAccessRules: (rules: AccessRules, retryAt: MonotonicInstant)?
    /// The role postgres last ran in (the decider skips pg_rewind for a member that was a standby).
    var lastRunningRole: Member.Role?
    /// The last decision's deadline for deciding again (before loop_wait).
    var recheckAfter: Duration?
    var lastStatusWrite: (optime: LSN, retained: [String]?, slots: [String: LSN]?, at: MonotonicInstant)?
    /// What this agent remembers about member slots while it leads (reset when it does not).
    var memberSlotMemory = MemberSlots.Memory()
    /// The last `retain_slots`/`slots` written: kept when the slots cannot be read in a cycle.
    var lastRetainedSlots: (retain: [String], slots: [String: LSN])?
    /// The config key revision whose unusable slot entries were last logged.
    var warnedSlotsRevision: Int64?
    /// Permanent slot copies this agent created as a replica (`PermanentSlotCopies`): the only
    /// ones it ever drops as a replica, and its own as leader. Kept across roles; not across a
    /// restart of the agent (a copy then stays until an operator drops it).
    var permanentSlotCopies: Set<String> = []
    /// Logical slots this agent made on this data directory (created as leader, copied as
    /// replica): the only logical slots it ever drops. Forgotten when they are gone.
    var ownedLogicalSlots: Set<String> = []
    /// Copied logical slots not yet safe to decode from after a promotion.
    var logicalSlotReadiness = LogicalSlotReadiness()
    /// When a copy of logical slots may be tried again after one that did not copy them all
    /// (`logicalCopyRetry`), and what about logical slots was last logged (logged again only
    /// when it changes).
    var lastLogicalCopyFailure: MonotonicInstant?
    var loggedLogicalSlotProblem: String?
    var loggedLogicalCopyProblem: String?
    /// While a replica is being created: how far the copy is (published in the member key).
    var cloneProgress: Member.CloneProgressRecord?
    /// Per slot: how many copies were made since it was last ready, and when the next may be.
    var logicalCopyAttempts: [String: (count: Int, next: MonotonicInstant)] = [:]
    /// The `use_slots` last given to the node.
    var appliedUseSlots: Bool?
    var lastReasonCode: String?
    var activity: Member.State?
    /// Operator requests waiting for the next cycle, with who waits for each answer.
    var operatorQueue: [PendingOperatorRequest] = []
    /// A restart scheduled through `POST /restart {"schedule": ...}`.
    var scheduledRestart: RestartRequest? {
        didSet { status.scheduledRestart = scheduledRestart }
    }
    var status: HAStatus {
        didSet {
            published.withLock { published in
                let next = published.generation &+ 1
                published = status
                published.generation = next
            }
        }
    }
    /// The latest status, readable without waiting for the actor (the REST API reads it on every
    /// request; it must neither queue behind a running cycle nor delay it).
    nonisolated let published: Mutex<HAStatus>
    /// Latency and failures of this loop's store requests, for `GET /metrics`.
    public nonisolated let storeMetrics: StoreRequestMetrics
    /// The last failsafe leader this member confirmed over REST, and when.
    nonisolated let failsafeConfirmation = Mutex<(leader: String, at: MonotonicInstant)?>(nil)
    var stopped = false

    public init(
        configuration: HAConfiguration, store: any ClusterStore, node: any PostgresNode,
        clock: any MonotonicClock = SystemMonotonicClock(), peers: any PeerProbe, hooks: HAHooks = HAHooks(),
        watchdog: (any Watchdog)? = nil, fenceGuard: (any FenceGuard)? = nil,
        wallClock: @escaping @Sendable () -> Double, logger: Logger
    ) {
        self.configuration = configuration
        let storeMetrics = StoreRequestMetrics()
        self.storeMetrics = storeMetrics
        self.store = MeteredClusterStore(base: store, metrics: storeMetrics, clock: clock)
        self.node = node
        self.clock = clock
        self.peers = peers
        self.hooks = hooks
        self.watchdog = watchdog
        self.fenceBackstop = fenceGuard
        self.wallClock = wallClock
        var logger = logger
        logger[metadataKey: "ha.member"] = "\(configuration.name)"
        self.logger = logger
        var initial = HAStatus(member: configuration.name)
        initial.config = configuration.initialDynamicConfig
        self.status = initial
        self.published = Mutex(initial)
        self.lastProgress = clock.now
    }

    /// The latest snapshot, through the actor.
    public func snapshot() -> HAStatus { status }

    /// The latest snapshot without an actor hop; for the REST API's hot path.
    public nonisolated func latestStatus() -> HAStatus { published.withLock { $0 } }

    /// The latest snapshot's generation, without copying the snapshot: a reader that cached what
    /// it derived from generation `g` may keep using it while this is still `g`.
    public nonisolated func latestGeneration() -> UInt64 { published.withLock { $0.generation } }

    /// Records a `POST /failsafe` confirmation: this member then stays out of the race for ttl.
    public nonisolated func noteFailsafeConfirmed(leader: String) {
        let now = clock.now
        failsafeConfirmation.withLock { $0 = (leader, now) }
    }

    /// Wakes the loop for an immediate cycle.
    public nonisolated func wake(_ reason: String) { wakeSignal.signal(reason) }

    // MARK: Running

    /// Runs until the task is cancelled: the cycle loop, the watch, postmaster exits and the fence.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.watchStore() }
            group.addTask { await self.watchPostmaster() }
            group.addTask { await self.fenceGuard() }
            group.addTask { await self.leaseKeeper() }
            group.addTask { await self.cycleLoop() }
            await group.next()
            group.cancelAll()
        }
    }

    func cycleLoop() async {
        while !Task.isCancelled {
            await runCycle()
            let loopWait = effectiveConfig(status.cluster).loopWait
            let wait = recheckAfter.map { min($0, loopWait) } ?? loopWait
            noteProgress()
            if let reason = await wakeSignal.wait(until: clock.now + wait, clock: clock) {
                logger.debug("woken early", metadata: ["ha.wake": "\(reason)"])
            }
        }
    }

    /// Runs one cycle (and its immediate rechecks, at most 8).
    public func runCycle() async {
        let started = clock.now
        var peerStatus: [PeerStatus]?
        var failsafe: Bool?
        noteProgress()
        await runOperatorRequests()
        for _ in 0..<8 {
            let observation = await observe(peers: peerStatus, failsafe: failsafe)
            noteProgress()
            // Before any action: a start (the first after the agent started, or after a clone)
            // writes the cluster's parameters, not the defaults.
            await applyClusterParameters()
            await applyAccessRules()
            await applyReplicationSlotUse()
            let decision = HADecider.decide(observation)
            memory = decision.memory
            recheckAfter = decision.recheckAfter
            logDecision(decision)
            let outcome = await execute(decision.actions, observation: observation)
            peerStatus = outcome.peers
            failsafe = outcome.failsafe
            let changed = decision.actions.contains(where: \.changesPostgres)
            await publish(after: observation, postgres: changed ? await node.status() : nil)
            noteProgress()
            if !decision.recheckImmediately || Task.isCancelled { break }
            // An action on postgres that failed (a rewind whose target still holds its shared
            // memory, a start that timed out) is tried again next cycle, after loop_wait or a
            // wake-up, not up to eight times in a row: each pg_rewind asks the leader for a checkpoint.
            // (A lost race for the key, or any other failed store action, rechecks at once as before.)
            if outcome.failed?.changesPostgres == true { break }
        }
        await syncBackstop(primary: status.postgres.process == .running && status.postgres.inRecovery == false)
        let finished = clock.now
        status.lastCycleAt = finished
        status.lastCycleDuration = finished - started
        status.cycleDurations.observe(finished - started)
    }

    /// Puts the `config` key's `postgresql.parameters` in force when they changed (written, and
    /// reloaded when postgres runs); one log line per change and per refusal. Without a fresh and
    /// readable view of them nothing changes: unknown is not "no parameters". A value refused here
    /// keeps the one in force before it (a typo must not turn max_connections back to 100).
    func applyClusterParameters() async {
        guard clusterViewIsFresh, let cluster = status.cluster else { return }
        let config = effectiveConfig(cluster)
        if let problem = PostgresParameters.structureProblem(config) {
            let refusal = [PostgresParameters.Refusal(name: "postgresql", reason: problem)]
            if refusedClusterParameters != refusal {
                refusedClusterParameters = refusal
                logger.warning("config key: \(problem); the parameters in force stay until it is fixed")
            }
            return
        }
        var (parameters, refused) = PostgresParameters.fromCluster(config.parameters)
        for refusal in refused {
            if let kept = appliedClusterParameters?[refusal.name] { parameters[refusal.name] = kept }
        }
        if refused != refusedClusterParameters {
            refusedClusterParameters = refused
            if !refused.isEmpty {
                let text = refused.map(\.description).joined(separator: "; ")
                logger.warning("config key: postgresql.parameters refused, fix them with 'baton edit-config': \(text)")
            }
        }
        guard parameters != appliedClusterParameters else { return }
        if let failed = failedClusterParameters, failed.parameters == parameters, clock.now < failed.retryAt {
            return
        }
        do {
            guard let serverRefused = try await node.applyClusterParameters(parameters) else { return }
            let before = appliedClusterParameters ?? [:]
            let changed = Set(parameters.keys).union(before.keys).filter { parameters[$0] != before[$0] }.sorted()
            appliedClusterParameters = parameters
            failedClusterParameters = nil
            logger.info(
                "cluster postgresql.parameters in force: \(changed.isEmpty ? "none changed" : changed.joined(separator: ", "))",
                metadata: ["ha.parameters": "\(changed)"])
            if !serverRefused.isEmpty {
                let text = serverRefused.map(\.description).joined(separator: "; ")
                logger.warning("PostgreSQL refused parameters, left out of its configuration: \(text)")
            }
        } catch {
            // The same parameters are tried again after a while, not every cycle.
            let wait = max(config.loopWait * 3, .seconds(30))
            if failedClusterParameters?.parameters != parameters {
                logger.warning("cluster postgresql.parameters not applied (tried again in \(wait)): \(error)")
            }
            failedClusterParameters = (parameters, clock.now + wait)
        }
    }

    /// Puts `postgresql.pg_hba`/`pg_ident` in force when they changed: the agent's file wins
    /// over the `config` key, list by list (Patroni's precedence). Without a fresh view of the key
    /// nothing changes; a bad list in the key is logged once and the one accepted before it stays
    /// (half a pg_hba could lock clients out). What PostgreSQL refuses leaves the previous file.
    func applyAccessRules() async {
        guard clusterViewIsFresh, let cluster = status.cluster else { return }
        let config = effectiveConfig(cluster)
        let (fromKey, problems) = AccessRules.fromCluster(config.postgresql)
        if problems != accessProblems {
            accessProblems = problems
            if !problems.isEmpty {
                logger.warning(
                    "config key: \(problems.joined(separator: "; ")); the rules accepted before stay until it is fixed")
            }
        }
        var clusterRules = acceptedClusterAccessRules
        if !problems.contains(where: { $0.hasPrefix("postgresql.pg_hba") }) { clusterRules.hba = fromKey.hba }
        if !problems.contains(where: { $0.hasPrefix("postgresql.pg_ident") }) { clusterRules.ident = fromKey.ident }
        acceptedClusterAccessRules = clusterRules
        let local = hooks.localAccessRules?() ?? AccessRules()
        let rules = AccessRules.effective(local: local, cluster: clusterRules)
        guard rules != appliedAccessRules, rules.hba != nil || rules.ident != nil || appliedAccessRules != nil else {
            return
        }
        if let failed = failedAccessRules, failed.rules == rules, clock.now < failed.retryAt { return }
        let fromFile = [local.hba, local.ident].contains { $0 != nil }
        let fromKeyUsed =
            (local.hba == nil && clusterRules.hba != nil) || (local.ident == nil && clusterRules.ident != nil)
        let source =
            fromFile && fromKeyUsed ? "agent's file and config key" : fromFile ? "agent's file" : "config key"
        do {
            // Nil: postgres does not run; asked again next cycle (a start writes only checked rules).
            guard let refused = try await node.applyAccessRules(rules, source: source) else { return }
            appliedAccessRules = rules
            failedAccessRules = nil
            if refused.isEmpty {
                logger.info("postgresql.pg_hba/pg_ident in force from the \(source): \(rules)")
            }
            // Refused rules are not tried again until they change; the previous files stay.
            for refusal in refused { logger.error("\(refusal)") }
        } catch {
            let wait = max(config.loopWait * 3, .seconds(30))
            if failedAccessRules?.rules != rules {
                logger.warning("postgresql.pg_hba/pg_ident not applied (tried again in \(wait)): \(error)")
            }
            failedAccessRules = (rules, clock.now + wait)
        }
    }

    /// Tells the node whether standbys name their slot (`use_slots`), when it changed; unknown
    /// (no fresh view) changes nothing.
    func applyReplicationSlotUse() async {
        guard clusterViewIsFresh, let cluster = status.cluster else { return }
        // A nostream member names no slot, nor one cascading from another member: the leader
        // keeps none for them.
        let cascading = MemberSlots.cascades(
            configuration.name, tags: configuration.tags, members: cluster.members, leader: cluster.leader?.member)
        let use = effectiveUseSlots(effectiveConfig(cluster)) && !configuration.tags.noStream && !cascading
        guard use != appliedUseSlots else { return }
        do {
            try await node.setReplicationSlotUse(use)
            if appliedUseSlots != nil { logger.info("use_slots is now \(use)") }
            appliedUseSlots = use
        } catch {
            logger.warning("use_slots \(use) not applied: \(error)")
        }
    }

    func watchStore() async {
        var revision = status.cluster?.revision ?? 0
        while !Task.isCancelled {
            if revision == 0 {
                guard let view = try? await store.loadCluster() else {
                    try? await clock.sleep(for: .seconds(1))
                    continue
                }
                revision = view.revision
            }
            for await event in store.watch(after: revision) {
                switch event {
                case .put(let key, let rev), .delete(let key, let rev):
                    revision = rev
                    if case .member(let name) = key {
                        // A member appearing (or coming back) needs a replication slot on the leader now.
                        let known = status.cluster?.members.contains { $0.name == name } ?? false
                        if known || !status.holdsLeaderKey { continue }
                    }
                    if key == .status || key == .history { continue }
                    wakeSignal.signal("\(key) changed")
                case .resync:
                    revision = 0
                    wakeSignal.signal("store watch resync")
                }
                if revision == 0 { break }
            }
            if !Task.isCancelled { try? await clock.sleep(for: .milliseconds(200)) }
        }
    }

    func watchPostmaster() async {
        for await exit in node.terminations() {
            if !exit.requested {
                logger.warning(
                    "postmaster exited unexpectedly",
                    metadata: ["pg.pid": "\(exit.pid)", "pg.status": "\(exit.status.map(String.init) ?? "?")"])
                wakeSignal.signal("postmaster exited")
            }
        }
    }

    /// Keeps the session (and the keys on it) alive beside the cycle, every ttl/3 from the last
    /// keepalive's send: renewal never waits behind a slow store call, a slow status query, a hook
    /// or a restart. A leader's lease is renewed only while its cycle makes progress (each step is
    /// bounded: store calls by retry_timeout, the status query by its deadline) or a declared long
    /// action runs (`whileRenewing`, bounded by its own timeout). A cycle stuck past that loses
    /// the lease and is fenced, as a frozen agent is.
    func leaseKeeper() async {
        while !Task.isCancelled {
            let interval = renewInterval
            let now = clock.now
            var next = (lastRenewalSent ?? now) + interval
            if let attempt = lastRenewalAttempt, lastRenewalSent.map({ attempt > $0 }) ?? true {
                // The last attempt failed: try again soon, but not in a tight loop.
                next = min(next, attempt + min(interval, .milliseconds(500)))
            }
            // Nothing to do now (no session, a keepalive in flight, a stuck cycle): look again
            // in 100 ms rather than spinning on the actor.
            try? await clock.sleep(until: max(next, now + .milliseconds(100)))
            guard !Task.isCancelled else { return }
            await renewIfDue()
        }
    }

    /// The ttl of the lease actually held: the session's when it was granted under another ttl
    /// than the one in force (a dynamic change not applied yet), whichever is shorter.
    var heldTTL: Duration { min(currentTTL(), sessionTTL ?? currentTTL()) }

    /// How often the session is renewed: a third of the ttl of the lease held.
    var renewInterval: Duration { heldTTL / 3 }

    /// How long one step of the cycle may take before the lease keeper counts the cycle as stuck:
    /// the longest bounded step (a store call within retry_timeout, the status query within its
    /// deadline, slot maintenance within its statement timeout) with room to spare.
    var stuckCycleAfter: Duration { heldTTL + configuration.stepAllowance }

    func noteProgress() {
        lastProgress = clock.now
        stallLogged = false
    }

    /// Whether this agent's session holds (or, as last seen, held) the leader key: renewing it
    /// keeps the key alive, so only a cycle that makes progress may.
    var sessionHoldsLeaderKey: Bool {
        status.holdsLeaderKey || (session != nil && status.cluster?.leader?.session == session)
    }

    /// Whether a declared long action still keeps the lease renewed.
    var longActionRunning: Bool {
        guard longActions > 0, let until = longActionsUntil else { return false }
        return clock.now < until
    }

    /// One turn of the lease keeper: renews the session when its last renewal is ttl/3 old (or
    /// the last attempt failed), unless a keepalive is in flight and young, or the cycle of a
    /// session that holds the leader key is stuck.
    public func renewIfDue() async {
        guard !stopped, let current = session else { return }
        let now = clock.now
        // One keepalive at a time, unless the one in flight is older than the renewal interval:
        // a slow etcd answering each call close to retry_timeout must not stretch the gap between
        // renewals to interval + retry_timeout.
        if let since = oldestRenewalInFlight, now - since < renewInterval { return }
        if let sent = lastRenewalSent, now - sent < renewInterval,
            lastRenewalAttempt.map({ $0 <= sent }) ?? true
        {
            return
        }
        if sessionHoldsLeaderKey, !longActionRunning, now - lastProgress > stuckCycleAfter {
            if !stallLogged {
                stallLogged = true
                logger.error(
                    """
                    the HA cycle has made no progress for \(now - lastProgress): not renewing the session that \
                    holds the leader key; the fence stops postgres at the deadline and the key expires
                    """,
                    metadata: ["ha.deadline": "\(leaseDeadline.map { "\($0)" } ?? "none")"])
            }
            return
        }
        do {
            _ = try await renewLease(nil)
        } catch {
            forgetSessionIfLost(error, session: current)
            logger.debug("keepalive failed: \(error)")
        }
    }

    /// Whether the local postgres may accept writes, as far as the agent knows without asking it:
    /// it holds the key, last saw a primary, or cannot tell and did not last see a standby
    /// (unknown is not "standby"; a restart or start in flight counts as unknown).
    var mayBePrimary: Bool {
        if status.holdsLeaderKey || status.postgres.inRecovery == false { return true }
        guard status.postgres.inRecovery == nil, lastRunningRole != .replica else { return false }
        // A postgres that ran (or is being started or restarted) as a primary or in a state the
        // agent never learnt; not a node that never had one (a new member, a bootstrap to come).
        return lastRunningRole == .primary || status.postgres.postmasterPID != nil
            || [.running, .starting, .unusable].contains(status.postgres.process)
    }

    /// Stops a primary at its lease deadline if the lease was not renewed by then, whatever the
    /// loop is doing.
    func fenceGuard() async {
        while !Task.isCancelled {
            let now = clock.now
            if let deadline = leaseDeadline, now >= deadline, mayBePrimary {
                await fence(deadline: deadline)
            }
            // Sleep until the deadline or until it moves (a renewal, a new session, a fence). The
            // clock's timers run on CLOCK_BOOTTIME (a continuous-clock sleep is a timerfd on
            // clockid 7, checked in /proc/PID/fdinfo): a deadline that passes while the host is
            // suspended fires on resume, so no extra wake-up is needed for that. A deadline that
            // passed on a node that is not (yet) a primary is looked at every 100 ms, as before,
            // in case it becomes one.
            let next: MonotonicInstant
            switch leaseDeadline {
            case .some(let deadline) where deadline > now:
                next = min(deadline, now + .seconds(60))
            case .some:
                next = now + .milliseconds(100)
            case .none:
                next = now + .seconds(60)
            }
            _ = await deadlineChanged.wait(until: next, clock: clock)
        }
    }

    /// Fences now if the lease deadline has passed (what the fence task does at the deadline).
    public func checkFence() async {
        if let deadline = leaseDeadline, clock.now >= deadline {
            await fence(deadline: deadline)
        }
    }

    /// Fencing does not ask postgres for permission: a status query can hang or lie, and a
    /// restart in flight reports "stopped" or "starting" until it brings a primary back. The node
    /// stops every postmaster of its data directory and refuses to start one as a primary until
    /// this agent holds a valid lease as leader again.
    func fence(deadline: MonotonicInstant) async {
        guard leaseDeadline == deadline, !stopped else { return }
        guard mayBePrimary else {
            leaseDeadline = nil
            return
        }
        logger.error(
            """
            lease deadline passed without renewal: fencing (immediate shutdown of every postmaster of the data \
            directory, no start as primary until the lease is valid again)
            """,
            metadata: ["ha.deadline": "\(deadline)"])
        await node.fence()
        // It may have run as a primary: whatever follows it must go through pg_rewind.
        lastRunningRole = .primary
        status.holdsLeaderKey = false
        leaseDeadline = nil
        try? await watchdog?.disarm()
        await fenceBackstop?.disarm()
        wakeSignal.signal("fenced")
    }

    // MARK: Observe

    func effectiveConfig(_ cluster: ClusterView?) -> DynamicConfig {
        var config = cluster?.config?.value ?? status.config
        for (key, value) in configuration.localOverrides { config.document[key] = value }
        return config
    }

    func observe(peers: [PeerStatus]?, failsafe: Bool?) async -> Observation {
        async let pgStatus = node.status()
        var cluster: ClusterView?
        var problem: String?
        do {
            cluster = try await store.loadCluster()
        } catch {
            problem = "\(error)"
        }
        var configUnknown = false
        if let loaded = cluster {
            reportUndecodableKeys(loaded)
            cluster = acceptingValidConfig(loaded)
            // An existing cluster whose config key is missing or invalid, and no valid one read by
            // this agent: the configuration in force is only the agent file's guess.
            let initialized = !(loaded.initialize ?? "").isEmpty
            let invalid = loaded.config == nil || !status.configProblems.isEmpty
            configUnknown = initialized && invalid && acceptedConfig == nil && !bootstrappedHere
        }
        let pg = await pgStatus
        clusterViewIsFresh = cluster != nil
        let config = effectiveConfig(cluster)
        if config.retryTimeout != appliedRetryTimeout {
            // Every store request is bounded by the retry_timeout in force, from the next one on.
            store.setRequestTimeout(config.retryTimeout)
            if appliedRetryTimeout != nil {
                logger.info(
                    "store request timeout follows retry_timeout",
                    metadata: ["ha.retry_timeout": "\(config.retryTimeout)"])
            }
            appliedRetryTimeout = config.retryTimeout
        }
        if let cluster {
            status.cluster = cluster
            status.clusterReadAt = clock.now
        }
        status.config = cluster?.config?.value ?? status.config
        status.postgres = pg
        status.holdsLeaderKey =
            cluster.map { $0.leader?.member == configuration.name && $0.leader?.session == session }
            ?? status.holdsLeaderKey
        status.leaseDeadline = leaseDeadline
        var observation = Observation(
            me: configuration.name, now: clock.now, wallClockSeconds: wallClock(), cluster: cluster,
            storeProblem: problem, postgres: pg, following: following,
            appliedSynchronousStandbys: appliedSynchronousStandbys, synchronousAppliedAt: synchronousAppliedAt,
            lease: LeaseState(session: session, deadline: leaseDeadline, ttl: sessionTTL), config: config,
            tags: configuration.tags,
            peers: peers, failsafeConfirmed: failsafe, memory: memory,
            fenceGuardRunning: fenceBackstop?.isRunning ?? true,
            confirmedFailsafeLeader: recentFailsafeConfirmation(ttl: config.ttl),
            watchdogUsable: watchdogRefusedAt.map { clock.now - $0 >= config.ttl } ?? true,
            lastRunningRole: lastRunningRole, failedStarts: failedStarts, lastFailedStartAt: lastFailedStartAt,
            lastRejoinFailed: lastRejoinFailed)
        observation.configUnknown = configUnknown
        observation.canCreateReplicaWithoutServer = node.canCreateReplicaWithoutServer
        observation.definedMethodsWithoutServer = node.definedMethodsWithoutServer
        return observation
    }

    /// A `config` key that fails validation (a ttl of 1e300, a negative loop_wait, a timing that
    /// cannot be kept, written with etcdctl or by a newer tool) is never put in force: the view
    /// keeps the last valid configuration, under the key's revision (so that a `PATCH /config`
    /// merges onto the valid one and replaces the bad one). Logged once per revision.
    func acceptingValidConfig(_ view: ClusterView) -> ClusterView {
        let config: Versioned<DynamicConfig>
        let problems: [String]
        if let present = view.config {
            config = present
            problems = present.value.validationErrors()
        } else if let revision = view.unreadableConfigRevision {
            // Not a JSON object at all: as invalid as a bad value, and kept out the same way.
            config = Versioned(DynamicConfig(), modRevision: revision)
            let detail = view.unreadableConfigProblem ?? "unreadable"
            problems = ["the config key is not a JSON object (\(detail))"]
        } else {
            return view
        }
        if problems.isEmpty {
            acceptedConfig = config.value
            rejectedConfigRevision = nil
            status.configProblems = []
            // Slot entries Patroni would skip are skipped too: said once per revision.
            let slotProblems = config.value.slotProblems()
            if !slotProblems.isEmpty, warnedSlotsRevision != config.modRevision {
                warnedSlotsRevision = config.modRevision
                logger.warning(
                    "the config key's slots/ignore_slots entries that cannot be used are skipped: \(slotProblems.joined(separator: "; "))",
                    metadata: ["ha.config_revision": "\(config.modRevision)"])
            }
            return view
        }
        let inForce = acceptedConfig ?? configuration.initialDynamicConfig
        if rejectedConfigRevision != config.modRevision {
            rejectedConfigRevision = config.modRevision
            logger.error(
                """
                the config key (revision \(config.modRevision)) is invalid and ignored: \
                \(problems.joined(separator: "; ")); the last valid configuration stays in force \
                (ttl \(inForce.ttl), loop_wait \(inForce.loopWait)); fix it with baton edit-config or PATCH /config
                """,
                metadata: ["ha.config_revision": "\(config.modRevision)"])
        }
        status.configProblems = problems
        var view = view
        view.config = Versioned(inForce, modRevision: config.modRevision)
        return view
    }

    /// Logs each key that could not be decoded (the store reports them in `problems`), once per
    /// problem while it lasts: the key is ignored (the view goes on without it), and the operator
    /// learns which key to fix.
    func reportUndecodableKeys(_ view: ClusterView) {
        let current = Set(view.problems)
        // An unreadable config key is logged by acceptingValidConfig, with what stays in force.
        for problem in view.problems
        where !reportedKeyProblems.contains(problem) && problem != view.unreadableConfigProblem {
            logger.error(
                "a key in the store cannot be read and is ignored: \(problem); rewrite or delete it",
                metadata: ["ha.store_revision": "\(view.revision)"])
        }
        reportedKeyProblems = current
    }

    /// The leader this member confirmed in failsafe mode within the last `ttl`, if any.
    func recentFailsafeConfirmation(ttl: Duration) -> String? {
        guard let confirmation = failsafeConfirmation.withLock({ $0 }), clock.now - confirmation.at < ttl else {
            return nil
        }
        return confirmation.leader
    }

    func logDecision(_ decision: Decision) {
        let code = decision.reason.code
        let metadata: Logger.Metadata = [
            "ha.reason": "\(code)",
            "ha.actions": "\(decision.actions.map(\.description).joined(separator: ", "))",
        ]
        if decision.actions.contains(where: { $0 != .renewLease }) || code != lastReasonCode {
            logger.info("\(decision.reason)", metadata: metadata)
        } else {
            logger.debug("\(decision.reason)", metadata: metadata)
        }
        lastReasonCode = code
        status.decisions[code, default: 0] += 1
        status.lastReason = decision.reason
        status.lastActions = decision.actions
    }
}
