import BatonCore
import BatonEtcd
import BatonPostgres
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// What `baton pooler` needs: who it is, PgBouncer's include file and admin console, the
/// databases it keeps pointed at the cluster.
public struct PoolerOptions: Sendable {
    public var name: String
    /// The file PgBouncer's configuration includes (`%include FILE`) in place of its own
    /// `[databases]` section.
    public var includeFile: String
    /// PgBouncer's admin console (database `pgbouncer`), as an admin user.
    public var admin: ConnectionParameters
    public var databases: [PoolerDatabase]
    /// A replica further behind than this is left out of the read-only databases.
    public var maxLagBytes: UInt64
    /// The registration key's session: it disappears this long after the pooler stops.
    public var ttl: Duration = .seconds(10)
    /// Whether the read-write databases are paused around a planned switchover (off: re-pointed
    /// and the old primary's connections cut, as on a failover).
    public var pausesOnSwitchover = true

    public init(
        name: String, includeFile: String, admin: ConnectionParameters, databases: [PoolerDatabase],
        maxLagBytes: UInt64
    ) {
        self.name = name
        self.includeFile = includeFile
        self.admin = admin
        self.databases = databases
        self.maxLagBytes = maxLagBytes
    }
}

/// Keeps PgBouncer's databases pointed at the cluster: follows the topology in etcd (a watch,
/// with a re-read every 2 s as a backstop), rewrites the include file and `RELOAD`s when a
/// target changes, and on a change of primary `KILL`s the read-write databases (every server
/// connection to the old primary goes at once: no pooled session keeps writing to a fenced
/// node) and `RESUME`s them on the new one. It registers under `poolers/<name>` on a session of
/// its own. When etcd cannot be read it keeps its last configuration and says so.
public final class PoolerRunner: Sendable {
    let options: PoolerOptions
    let store: EtcdClusterStore
    let logger: Logger
    /// What the status endpoint shows, and when the topology was last read.
    let status: Mutex<(health: PoolerHealth, lastRead: ContinuousClock.Instant?)>

    public init(options: PoolerOptions, store: EtcdClusterStore, logger: Logger) {
        self.options = options
        self.store = store
        self.logger = logger
        self.status = Mutex(
            (PoolerHealth(name: options.name, pausesForSwitchover: options.pausesOnSwitchover), nil))
    }

    /// The pooler's state now, for `GET /health` and `GET /metrics`.
    public func health() -> PoolerHealth {
        status.withLock { status in
            var health = status.health
            health.topologyAgeSeconds = status.lastRead.map { (ContinuousClock.now - $0) / .seconds(1) }
            return health
        }
    }

    func updateHealth(_ change: (inout PoolerHealth) -> Void) {
        status.withLock { change(&$0.health) }
    }

    /// State carried from one pass to the next.
    struct Memory {
        var targets: [String: [PoolerServer]] = [:]
        var primary: PoolerServer?
        var fileText: String?
        var session: SessionID?
        var lastKeepAlive: ContinuousClock.Instant?
        var published: PoolerRecord?
        var storeFailing = false
        var adminFailing = false
        /// When PgBouncer's admin console last answered (it is asked again when this is old).
        var lastAdminContact: ContinuousClock.Instant?
        /// The switchover (failover key revision) the read-write databases are paused for, the
        /// leader then, and since when; the one pausing failed for.
        var pausedFor: Int64?
        var pausedLeader: String?
        var pausedAt: ContinuousClock.Instant?
        var pauseFailedFor: Int64?
        /// Switchover requests already paused for (or given up on): never paused for twice.
        var handledRequests: [Int64] = []
        /// A RESUME that has not been confirmed yet: tried again on every pass.
        var resumePending = false
        /// Since when another session holds this pooler's key: an earlier run of this pooler
        /// (its session expires within the ttl), or another pooler given the same name.
        var keyHeldSince: ContinuousClock.Instant?
        /// Held longer than the ttl: another pooler has this name.
        var nameTaken = false
        /// Whether PgBouncer still has to be asked for a pause or KILL an earlier run left.
        var leftoverCheckPending = true
        /// The read-write databases were found paused (or killed) by an earlier run, with no
        /// switchover under way (or PgBouncer cannot say): resumed once the cluster names a
        /// running primary and PgBouncer points at it (no KILL: nothing runs on them). Since
        /// `pausedAt`, bounded by `pauseLimit`.
        var pausedByEarlierRun = false
        /// A pause taken over from an earlier run whose server connections did not go idle in
        /// time: reported as failed, and the old primary's connections are cut when it changes.
        var pauseIncomplete = false

        /// Every pause this pooler holds or took over is over (RESUME sent, or a KILL+RESUME).
        mutating func clearPause() {
            pausedFor = nil
            pausedLeader = nil
            pausedAt = nil
            pausedByEarlierRun = false
            pauseIncomplete = false
        }

        var isPaused: Bool { pausedFor != nil || pausedByEarlierRun }
    }

    /// A pause that no new primary ended within this is lifted (the switchover did not happen).
    static let pauseLimit: Duration = .seconds(60)

    /// Runs until the task is cancelled.
    public func run() async {
        var memory = Memory()
        // What PgBouncer was last told (by an earlier run): the targets stay in force while the
        // cluster does not say better (no leader now is not "no database"), and a primary in the
        // file that is not the cluster's is cut (KILL) like any change of primary. The file is
        // written and reloaded on the first pass whatever it holds (a crash may have come
        // between the write and the RELOAD); a pause or KILL left behind is found on the first
        // pass and lifted once PgBouncer points where the cluster says (`adoptLeftoverPause`).
        if let text = try? String(contentsOfFile: options.includeFile, encoding: .utf8) {
            memory.targets = PoolerPlan.parseInclude(text, databases: options.databases)
            memory.primary = options.databases.first { $0.role == .primary }.flatMap { memory.targets[$0.name]?.first }
        }
        let (wakes, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let watcher = Task { [store] in
            var revision: Int64 = 0
            while !Task.isCancelled {
                if revision == 0 { revision = (try? await store.loadCluster().revision) ?? 0 }
                for await _ in store.watch(after: revision) {
                    wake.yield()
                }
                try? await Task.sleep(for: .seconds(1))
                revision = 0
            }
        }
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(2))
                wake.yield()
            }
        }
        defer {
            watcher.cancel()
            ticker.cancel()
        }
        logger.info(
            "pooler started",
            metadata: [
                "pooler.name": "\(options.name)", "pooler.include_file": "\(options.includeFile)",
                "pooler.databases":
                    "\(options.databases.map { "\($0.name)=\($0.role.rawValue)" }.joined(separator: ","))",
            ])
        await pass(&memory)
        for await _ in wakes {
            if Task.isCancelled { break }
            await pass(&memory)
        }
        // Never left paused: what this pooler paused is resumed before it goes.
        if memory.isPaused || memory.resumePending { await resumePrimaryDatabases(&memory) }
        if let session = memory.session { try? await store.revokeSession(session) }
    }

    /// RESUMEs the read-write databases (each on its own: one that is not paused answers with an
    /// error, which is fine); `resumePending` stays set until PgBouncer could be reached.
    func resumePrimaryDatabases(_ memory: inout Memory) async {
        let names = options.databases.filter { $0.role == .primary }.map(\.name)
        guard !names.isEmpty else {
            memory.resumePending = false
            return
        }
        do {
            try await admin(names.map { "RESUME \($0)" }, timeout: .seconds(5), tolerating: true)
            memory.resumePending = false
            memory.clearPause()
            memory.lastAdminContact = .now
            updateHealth { $0.paused = false }
        } catch {
            memory.resumePending = true
            logger.error("could not reach PgBouncer to resume the read-write databases: \(error)")
        }
    }

    /// One pass: read the cluster, point PgBouncer where it says, publish the registration.
    func pass(_ memory: inout Memory) async {
        // Bounded whatever etcd says (or does not): a pause outlives no minute.
        if memory.isPaused, memory.pausedAt.map({ ContinuousClock.now - $0 > Self.pauseLimit }) ?? true {
            logger.warning("a pause outlived its limit (no new primary): resuming the read-write databases")
            memory.resumePending = true
        }
        if memory.resumePending { await resumePrimaryDatabases(&memory) }
        let view: ClusterView
        do {
            view = try await store.loadCluster()
            if memory.storeFailing { logger.info("etcd answers again: following the cluster") }
            memory.storeFailing = false
            status.withLock {
                $0.lastRead = .now
                $0.health.storeReachable = true
            }
        } catch {
            if !memory.storeFailing {
                logger.warning(
                    "cannot read the cluster from etcd: keeping PgBouncer's last configuration",
                    metadata: ["error": "\(error)"])
            }
            memory.storeFailing = true
            memory.session = nil
            updateHealth {
                $0.storeReachable = false
                $0.state = "store_unreachable"
            }
            return
        }
        if memory.leftoverCheckPending { await adoptLeftoverPause(view, &memory) }
        await pauseForSwitchover(view, &memory)
        let viewTargets = PoolerPlan.targets(view, databases: options.databases, maxLagBytes: options.maxLagBytes)
        var targets = memory.targets
        for (name, servers) in viewTargets { targets[name] = servers }
        let text = PoolerPlan.includeText(databases: options.databases, targets: targets)
        let primaryDatabases = options.databases.filter { $0.role == .primary }
        let newPrimary = primaryDatabases.first.flatMap { targets[$0.name]?.first }
        // A pause an earlier run left is lifted only once the cluster itself names a running
        // primary (not the file's): until then the waiting transactions stay in PgBouncer.
        let liftLeftover =
            memory.pausedByEarlierRun && primaryDatabases.first.flatMap { viewTargets[$0.name]?.first } != nil
        if liftLeftover { memory.fileText = nil }
        var state = "following"
        if text != memory.fileText {
            do {
                try Self.writeAtomically(options.includeFile, text)
                memory.fileText = text
                var commands = ["RELOAD"]
                let primaryChanged = memory.primary.map { old in newPrimary.map { old != $0 } ?? false } ?? false
                if liftLeftover, !primaryChanged {
                    commands += primaryDatabases.map { "RESUME \($0.name)" }
                    logger.notice("read-write databases resumed on the primary (a pause an earlier run left)")
                }
                if let old = memory.primary, let newPrimary, old != newPrimary {
                    if memory.isPaused, !memory.pauseIncomplete {
                        // Paused for this switchover: nothing ran on the old primary since; the
                        // waiting transactions go on to the new one.
                        commands += primaryDatabases.map { "RESUME \($0.name)" }
                        logger.notice(
                            "switchover done: read-write databases re-pointed and resumed",
                            metadata: ["pooler.old_primary": "\(old)", "pooler.primary": "\(newPrimary)"])
                    } else {
                        // A new primary: the old one's connections go now (KILL), and the
                        // databases take clients again (RESUME) on the new one.
                        for database in primaryDatabases {
                            commands += ["KILL \(database.name)", "RESUME \(database.name)"]
                        }
                        logger.notice(
                            "primary changed: read-write databases re-pointed, connections to the old primary cut",
                            metadata: ["pooler.old_primary": "\(old)", "pooler.primary": "\(newPrimary)"])
                    }
                }
                try await admin(commands)
                // A change of primary ends every pause (RESUME, or KILL and RESUME), as does
                // lifting a leftover one.
                if primaryChanged || liftLeftover { memory.clearPause() }
                memory.lastAdminContact = .now
                updateHealth {
                    $0.repoints += 1
                    if primaryChanged { $0.primaryChanges += 1 }
                }
                memory.targets = targets
                memory.primary = newPrimary ?? memory.primary
                if memory.adminFailing { logger.info("PgBouncer's admin console answers again") }
                memory.adminFailing = false
                logger.info(
                    "PgBouncer re-pointed",
                    metadata: [
                        "pooler.targets":
                            "\(options.databases.compactMap { db in targets[db.name].map { "\(db.name)=\($0.map(\.description).joined(separator: ","))" } }.joined(separator: " "))"
                    ])
            } catch {
                // Not in force: the next pass tries again (the file is rewritten and reloaded).
                memory.fileText = nil
                state = "pgbouncer_unreachable"
                if !memory.adminFailing {
                    logger.error("could not re-point PgBouncer: \(error)")
                }
                memory.adminFailing = true
            }
        } else if memory.primary == nil {
            memory.primary = newPrimary
            memory.targets = targets
        }
        // PgBouncer is asked whether it answers when nothing was said to it for a while (it may
        // have stopped while the topology stayed the same).
        if !memory.adminFailing, memory.lastAdminContact.map({ ContinuousClock.now - $0 > .seconds(5) }) ?? true {
            do {
                try await admin(["SHOW VERSION"], timeout: .seconds(3))
                memory.lastAdminContact = .now
            } catch {
                // Not yet reported: the next pass rewrites and reloads, and only a failure of
                // that marks PgBouncer unreachable (one lost probe does not take this pooler out
                // of a switchover).
                logger.warning("PgBouncer's admin console did not answer a probe: \(error)")
                memory.fileText = nil
            }
        }
        if memory.adminFailing { state = "pgbouncer_unreachable" }
        if memory.nameTaken { state = "name_taken" }
        updateHealth {
            $0.state = state
            $0.pgbouncerReachable = !memory.adminFailing
            $0.primary = memory.primary?.description
            $0.replicas = self.options.databases.first { $0.role == .replica }.flatMap { memory.targets[$0.name] }?.map(
                \.description)
            $0.paused = memory.isPaused
        }
        await register(&memory, state: state, targets: targets)
    }

    /// What an earlier run left in PgBouncer (it was stopped or crashed mid-switchover, or between
    /// a KILL and its RESUME): read-write databases paused. While a switchover is under way (the
    /// failover key is there) the pause is taken over and ends like this run's own, with RESUME
    /// on the new primary, once PgBouncer shows no server connection busy (a PAUSE still waiting
    /// for transactions is not a pause yet); otherwise they are resumed once the cluster names a
    /// running primary and PgBouncer points at it. Resuming at once would send the waiting
    /// transactions to the old primary. A PgBouncer that does not show a `paused` column is
    /// treated as paused (unknown is not "not paused"). The primary PgBouncer really uses (a
    /// crash may have come between writing the file and its RELOAD) becomes the one a change of
    /// primary is judged against.
    func adoptLeftoverPause(_ view: ClusterView, _ memory: inout Memory) async {
        let names = Set(options.databases.filter { $0.role == .primary }.map(\.name))
        guard !names.isEmpty else {
            memory.leftoverCheckPending = false
            return
        }
        guard let databases = try? await admin(["SHOW DATABASES"], timeout: .seconds(5)) else {
            return  // asked again on the next pass
        }
        memory.leftoverCheckPending = false
        memory.lastAdminContact = .now
        let rows = databases.rows.filter { row in (try? row.value("name")).map(names.contains) ?? false }
        if let row = rows.first, let host = try? row.value("host"), let port = try? row.value("port"),
            let number = Int(port), PoolerPlan.isSafe(PoolerServer(host: host, port: number))
        {
            memory.primary = PoolerServer(host: host, port: number)
        }
        let known = databases.columns.contains("paused")
        let paused: [String] = rows.compactMap { row in
            guard let name = try? row.value("name") else { return nil }
            return !known || (try? row.value("paused")) == "1" ? name : nil
        }.sorted()
        guard !paused.isEmpty else { return }
        if !known {
            logger.warning(
                "PgBouncer's SHOW DATABASES has no 'paused' column: treating the read-write databases as paused")
        }
        if known, options.pausesOnSwitchover, let failover = view.failover, Self.isDue(failover.value) {
            memory.pausedFor = failover.modRevision
            memory.pausedLeader = failover.value.leader ?? view.leader?.member
            memory.pausedAt = ContinuousClock.now
            memory.handledRequests = Array((memory.handledRequests + [failover.modRevision]).suffix(32))
            if await serversIdle(paused, timeout: view.dynamicConfig.poolerPauseTimeout) {
                updateHealth { $0.paused = true }
                logger.notice(
                    "found the read-write databases paused by an earlier run, a switchover under way: they stay paused until the new primary",
                    metadata: [
                        "pooler.paused": "\(paused.joined(separator: ","))",
                        "pooler.request": "\(failover.modRevision)",
                    ])
            } else {
                memory.pauseIncomplete = true
                memory.pauseFailedFor = failover.modRevision
                updateHealth { $0.pauseFailures += 1 }
                logger.error(
                    "found the read-write databases paused by an earlier run with server connections still busy after pooler_pause_timeout: reported as a failed pause; the old primary's connections are cut when it changes",
                    metadata: ["pooler.request": "\(failover.modRevision)"])
            }
        } else {
            memory.pausedByEarlierRun = true
            memory.pausedAt = ContinuousClock.now
            // Server connections still busy (a PAUSE that never took hold): a change of primary
            // cuts them (KILL) rather than leaving them on the old one.
            let idle = known ? await serversIdle(paused, timeout: .milliseconds(500)) : false
            memory.pauseIncomplete = !idle
            logger.notice(
                "found the read-write databases paused by an earlier run: resuming them once PgBouncer points at the primary",
                metadata: ["pooler.paused": "\(paused.joined(separator: ","))"])
        }
    }

    /// Whether PgBouncer shows no busy server connection (`SHOW POOLS` `sv_active` 0) for
    /// `databases` within `timeout`; false when it cannot say.
    func serversIdle(_ databases: [String], timeout: Duration) async -> Bool {
        let wanted = Set(databases)
        let started = ContinuousClock.now
        return
            (try? await withAdmin(timeout: timeout + .seconds(1)) { connection in
                while ContinuousClock.now - started < timeout {
                    guard let pools = try await connection.queryBatch("SHOW POOLS", timeout: .seconds(2)).last,
                        pools.columns.contains("sv_active")
                    else { return false }
                    let busy = try pools.rows.reduce(0) { sum, row in
                        guard let name = try row.value("database"), wanted.contains(name) else { return sum }
                        return sum + (Int(try row.value("sv_active") ?? "1") ?? 1)
                    }
                    if busy == 0 { return true }
                    try await Task.sleep(for: .milliseconds(50))
                }
                return false
            }) ?? false
    }

    /// A planned switchover (the failover key, due, naming the current leader or none): the
    /// read-write databases are paused for it once — in-flight transactions finish on the old
    /// primary, new ones wait in PgBouncer — and the registration says so, which the leader waits
    /// for. A pause that cannot finish within the leader's pooler_pause_timeout is lifted and
    /// reported. A pause the switchover does not follow (the request gone with the same leader,
    /// or no new primary within a minute) is lifted.
    func pauseForSwitchover(_ view: ClusterView, _ memory: inout Memory) async {
        let primaryDatabases = options.databases.filter { $0.role == .primary }
        guard !primaryDatabases.isEmpty, options.pausesOnSwitchover else { return }
        if let pausedFor = memory.pausedFor {
            let abandoned = view.failover?.modRevision != pausedFor && view.leader?.member == memory.pausedLeader
            if abandoned {
                logger.warning(
                    "switchover withdrawn or refused: resuming the read-write databases on the same primary",
                    metadata: ["pooler.request": "\(pausedFor)"])
                memory.resumePending = true
                await resumePrimaryDatabases(&memory)
            }
            return
        }
        // Not in maintenance mode (the leader does not hand over then), and once per request.
        guard let failover = view.failover, let leader = view.leader?.member, memory.primary != nil,
            !view.dynamicConfig.pause, !memory.handledRequests.contains(failover.modRevision),
            failover.value.leader == nil || failover.value.leader == leader, failover.value.member != leader,
            Self.isDue(failover.value)
        else { return }
        memory.handledRequests = Array((memory.handledRequests + [failover.modRevision]).suffix(32))
        let timeout = view.dynamicConfig.poolerPauseTimeout
        let started = ContinuousClock.now
        do {
            try await admin(primaryDatabases.map { "PAUSE \($0.name)" }, timeout: timeout)
            memory.pausedFor = failover.modRevision
            memory.pausedLeader = leader
            memory.pausedAt = ContinuousClock.now
            memory.lastAdminContact = .now
            updateHealth {
                $0.paused = true
                $0.switchoverPauses += 1
                $0.lastPauseSeconds = (ContinuousClock.now - started) / .seconds(1)
            }
            logger.notice(
                "switchover requested: read-write databases paused (transactions in flight finished)",
                metadata: [
                    "pooler.request": "\(failover.modRevision)",
                    "pooler.elapsed_ms": "\(Int((ContinuousClock.now - started) / .milliseconds(1)))",
                ])
        } catch {
            memory.pauseFailedFor = failover.modRevision
            memory.resumePending = true
            updateHealth { $0.pauseFailures += 1 }
            await resumePrimaryDatabases(&memory)
            logger.error(
                "could not pause the read-write databases within pooler_pause_timeout (\(timeout)): resumed; the switchover goes on without this pooler",
                metadata: ["error": "\(error)"])
        }
    }

    /// A switchover with no time, or one whose time has come.
    static func isDue(_ request: FailoverRequest) -> Bool {
        guard let scheduled = request.scheduled_at else { return true }
        guard let at = ISO8601.secondsSince1970(scheduled) else { return false }
        return Date().timeIntervalSince1970 >= at
    }

    /// The registration key, on a session of the pooler's own; written when it changes (the
    /// session keeps it alive in between).
    func register(_ memory: inout Memory, state: String, targets: [String: [PoolerServer]]) async {
        let primary = options.databases.first { $0.role == .primary }.flatMap { targets[$0.name]?.first }
        let replicas = options.databases.first { $0.role == .replica }.flatMap { targets[$0.name] }
        var record = PoolerRecord(
            name: options.name, state: state, primary: primary?.description, replicas: replicas?.map(\.description),
            databases: options.databases.map { "\($0.name)=\($0.role.rawValue)" }, version: BatonCore.version)
        // A pause taken over whose servers did not go idle is not reported as one.
        record.pausedFor = memory.pauseIncomplete ? nil : memory.pausedFor
        record.pauseFailedFor = memory.pauseFailedFor
        record.pauses = options.pausesOnSwitchover ? nil : false
        do {
            let now = ContinuousClock.now
            if let session = memory.session,
                memory.lastKeepAlive.map({ now - $0 >= options.ttl / 3 }) ?? true
            {
                if case .expired = try await store.keepAlive(session) { memory.session = nil }
                memory.lastKeepAlive = now
            }
            if memory.session == nil {
                memory.session = try await store.createSession(ttl: options.ttl)
                memory.lastKeepAlive = now
                memory.published = nil
            }
            guard let session = memory.session, memory.published != record else { return }
            var stamped = record
            stamped.updated = Date().formatted(.iso8601)
            guard try await store.publishPooler(stamped, session: session) else {
                // An earlier run's key outlives it by its ttl at most; held longer, the name is
                // another pooler's.
                let since = memory.keyHeldSince ?? now
                if memory.keyHeldSince == nil {
                    logger.info(
                        "poolers/\(options.name) is held by another etcd session (an earlier run of this pooler, until its ttl runs out, or another pooler of that name): registering when it is free"
                    )
                }
                memory.keyHeldSince = since
                if !memory.nameTaken, now - since > options.ttl + .seconds(2) {
                    logger.error(
                        "another pooler is registered as \(options.name) (its etcd session holds poolers/\(options.name)): give each pooler its own --name; this one is not registered, and the leader does not wait for it"
                    )
                    memory.nameTaken = true
                    updateHealth { $0.state = "name_taken" }
                }
                return
            }
            if memory.keyHeldSince != nil { logger.info("registered as \(options.name)") }
            memory.keyHeldSince = nil
            memory.nameTaken = false
            memory.published = record
        } catch {
            logger.warning("could not register in etcd: \(error)")
            memory.session = nil
        }
    }

    /// Runs admin console commands in order, on a connection of their own, all within `timeout`:
    /// past it the connection's socket is shut (PgBouncer ignores a cancel of `PAUSE db`, which
    /// in session pooling waits for clients to leave).
    /// With `tolerating`, a command PgBouncer answers with an error (`RESUME` of a database that is
    /// not paused) does not stop the others. The last command's result.
    @discardableResult
    func admin(_ commands: [String], timeout: Duration = .seconds(10), tolerating: Bool = false) async throws
        -> QueryResult?
    {
        try await withAdmin(timeout: timeout) { connection in
            var last: QueryResult?
            for command in commands {
                do {
                    last = try await connection.queryBatch(command, timeout: timeout).last
                } catch let error as PostgresError where tolerating && error.code == .queryFailed {
                    continue
                }
            }
            return last
        }
    }

    /// `body` on an admin console connection of its own, within `timeout`: past it the socket is
    /// shut, so that a PgBouncer that stops answering (frozen, or ignoring a cancel) cannot hold a
    /// pass.
    func withAdmin<T: Sendable>(timeout: Duration, _ body: (PostgresConnection) async throws -> T) async throws -> T {
        let connection = try await PostgresConnection.connect(options.admin)
        defer { Task { await connection.close() } }
        let deadline = Task {
            try await Task.sleep(for: timeout + .milliseconds(200))
            connection.interrupt()
        }
        defer { deadline.cancel() }
        return try await body(connection)
    }

    /// Writes `text` to `path` through a new file beside it (never through a link), then renames
    /// it into place: PgBouncer reads either the old file or the new one.
    static func writeAtomically(_ path: String, _ text: String) throws {
        let temporary = path + ".baton-\(getpid()).tmp"
        unlink(temporary)
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw PoolerSettingError("cannot create \(temporary): \(String(cString: strerror(errno)))")
        }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        let synced = fsync(descriptor)
        close(descriptor)
        guard written == bytes.count, synced == 0 else {
            unlink(temporary)
            throw PoolerSettingError("cannot write \(temporary)")
        }
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw PoolerSettingError("cannot rename \(temporary) to \(path): \(reason)")
        }
    }
}
