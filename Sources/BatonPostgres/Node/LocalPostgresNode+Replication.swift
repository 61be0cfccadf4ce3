import BatonCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

extension LocalPostgresNode {
    // MARK: Clone

    public func cloneReplica(from source: ReplicationSource, progress: (@Sendable (CloneProgress) -> Void)?)
        async throws
    {
        // Never over data: only a missing or empty directory is cloned into. A re-clone goes
        // through `clearDataDirectory(reason:)` first, which moves the old one aside.
        switch inspectDataDirectory() {
        case .missingOrEmpty: break
        case .valid:
            throw PostgresError(
                .dataDirectoryNotEmpty,
                "\(dataDirectory) already holds a PostgreSQL cluster; refusing to clone over it (Baton replaces a "
                    + "cluster only on reinitialize or after a failed pg_rewind, and moves it aside first)")
        case .unusable(let problem):
            throw PostgresError(.dataDirectoryUnusable, problem)
        }
        try await stop(mode: .fast, timeout: .seconds(60))
        let started = ContinuousClock.now
        try prepareEmptyDataDirectory(wipe: false)
        try writePassfile()
        // create_replica_methods in order: the first that succeeds makes the replica.
        let methods = try replicaMethods(for: source)
        var failures: [String] = []
        for (index, method) in methods.enumerated() {
            // The directory was empty when this clone began: what an earlier method left (kept
            // for its own sake with keep_data, or written by a command that timed out) is removed
            // before the next one, unless this one keeps data itself.
            if index > 0, !Self.keepsData(method), inspectDataDirectory() != .missingOrEmpty {
                try prepareEmptyDataDirectory(wipe: true)
            }
            do {
                switch method {
                case .basebackup(let options):
                    try await basebackup(from: source, options: options, progress: progress)
                case .command(let name, let argv, let parameters, let keepData, let noParams, _):
                    try await runReplicaCommand(
                        name: name, argv: argv, parameters: parameters, keepData: keepData, noParams: noParams,
                        source: source, progress: progress)
                }
                try writeConfiguration(following: source, standby: true)
                logger.info(
                    "replica created",
                    metadata: [
                        "pg.method": "\(method.name)", "pg.upstream": "\(source.member)",
                        "pg.elapsed_ms": "\((ContinuousClock.now - started).milliseconds)",
                        "pg.size_mb": "\(Self.directorySize(dataDirectory) >> 20)",
                    ])
                return
            } catch {
                failures.append("\(method.name): \(error)")
                logger.warning(
                    "replica method failed", metadata: ["pg.method": "\(method.name)", "error": "\(error)"])
            }
        }
        // Nothing of a failed clone stays: a partial copy must never be started as a replica.
        try? prepareEmptyDataDirectory(wipe: true)
        throw PostgresError(
            .cloneFailed,
            "no replica method succeeded (\(methods.map(\.name).joined(separator: ", "))): "
                + failures.joined(separator: "; "))
    }

    public var canCreateReplicaWithoutServer: Bool { configuration.replicaMethods.contains { $0.worksWithoutServer } }

    public var definedMethodsWithoutServer: Set<String> {
        Set(
            (configuration.replicaMethods + configuration.definedReplicaMethods).filter(\.worksWithoutServer).map(
                \.name))
    }

    /// The methods that may make a replica of `source`: `standby_cluster.create_replica_methods`
    /// for a standby cluster's leader when it names any (each defined in this agent's file, or
    /// `basebackup`), else the member's own; with no server to copy from, only those that need
    /// none (`no_leader`). Throws, naming why, when none is left.
    func replicaMethods(for source: ReplicationSource) throws -> [ReplicaMethod] {
        let defined = configuration.replicaMethods + configuration.definedReplicaMethods
        var methods = configuration.replicaMethods
        if let names = source.remote?.createReplicaMethods, !names.isEmpty {
            methods = names.compactMap { name in
                defined.first { $0.name == name } ?? (name == "basebackup" ? .basebackup(options: []) : nil)
            }
            let undefined = names.filter { name in name != "basebackup" && !methods.contains { $0.name == name } }
            if !undefined.isEmpty {
                logger.warning(
                    "standby_cluster.create_replica_methods names methods this agent does not define: \(PrintableText.of(Array(undefined.joined(separator: ", ").utf8), limit: 300)) (give postgresql.NAME.command)"
                )
            }
        }
        if !source.hasServer { methods = methods.filter(\.worksWithoutServer) }
        guard !methods.isEmpty else {
            throw PostgresError(
                .cloneFailed,
                source.hasServer
                    ? "no replica method to make this member with (create_replica_methods is empty)"
                    : "\(source.member) has no server to copy from, and no replica method can run without one: define a "
                        + "restore under postgresql.NAME with command and no_leader: true, and list it in create_replica_methods"
            )
        }
        return methods
    }

    static func keepsData(_ method: ReplicaMethod) -> Bool {
        if case .command(_, _, _, let keepData, _, _) = method { return keepData }
        return false
    }

    /// pg_basebackup from `source`, with the operator's options after Baton's (a repeated option
    /// takes the operator's value).
    private func basebackup(
        from source: ReplicationSource, options: [String], progress: (@Sendable (CloneProgress) -> Void)?
    ) async throws {
        guard source.hasServer else { throw PostgresError(.cloneFailed, "\(source.member) has no server to copy from") }
        let logger = self.logger
        let arguments =
            [
                "-D", dataDirectory, "-X", "stream", "--progress", "--checkpoint=fast", "--no-password",
                "-h", source.host, "-p", String(source.port), "-U", configuration.replication.username,
                "-d",
                ConnInfo.make([
                    ("application_name", "\(configuration.memberName)-clone"), ("passfile", configuration.passfile),
                ]),
            ] + options
        logger.info(
            "cloning replica",
            metadata: [
                "pg.upstream": "\(source.member) \(source.host):\(source.port)",
                "pg.options": "\(options.joined(separator: " "))",
            ])
        let output = try await runner.run(
            configuration.binary("pg_basebackup"), arguments, environment: ["PGPASSFILE": configuration.passfile],
            timeout: configuration.cloneTimeout
        ) { line in
            if let report = ToolOutput.basebackupProgress(line) {
                progress?(report)
            } else {
                logger.debug("pg_basebackup", metadata: ["pg.output": "\(line)"])
            }
        }
        guard output.succeeded else {
            // Only what this pg_basebackup wrote: the directory was empty before it ran.
            try? prepareEmptyDataDirectory(wipe: true)
            throw PostgresError(
                .cloneFailed,
                "pg_basebackup from \(source.host):\(source.port) into \(dataDirectory) failed (exit \(output.status)); "
                    + "check that the primary runs, admits \(configuration.replication.username) for replication in pg_hba.conf "
                    + "and that the password matches — output: \(output.text.suffix(800))")
        }
    }

    /// A custom replica method (`create_replica_methods`): the command as the PostgreSQL OS user,
    /// its output in the agent's log, the data directory's size and the rate every 10 s (a
    /// command reports no progress of its own). It succeeded when it exits 0 and the data
    /// directory holds a cluster.
    private func runReplicaCommand(
        name: String, argv: [String], parameters: [String], keepData: Bool, noParams: Bool,
        source: ReplicationSource, progress: (@Sendable (CloneProgress) -> Void)?
    ) async throws {
        guard let executable = argv.first else { throw PostgresError(.cloneFailed, "\(name): no command") }
        var arguments = Array(argv.dropFirst()) + parameters
        if !noParams {
            arguments += ["--scope=\(configuration.scope)", "--datadir=\(dataDirectory)", "--role=replica"]
            // No server (a restore while no member leads): no connection string to give.
            if source.hasServer {
                let connstring = ConnInfo.make([
                    ("host", source.host), ("port", String(source.port)), ("user", configuration.replication.username),
                    ("dbname", "postgres"), ("application_name", "\(configuration.memberName)-clone"),
                ])
                arguments.append("--connstring=\(connstring)")
            }
        }
        logger.info(
            "creating replica with a custom method",
            metadata: ["pg.method": "\(name)", "pg.command": "\(executable)", "pg.upstream": "\(source.member)"])
        let logger = self.logger
        let directory = dataDirectory
        let started = ContinuousClock.now
        let watcher = Task {
            var reported: UInt64 = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(10))
                if Task.isCancelled { break }
                let size = Self.directorySize(directory)
                let seconds = max(1, (ContinuousClock.now - started).components.seconds)
                // A command reports no total: the percentage is unknown.
                progress?(CloneProgress(doneKB: Int64(size >> 10), totalKB: 0, percent: -1))
                if size != reported {
                    reported = size
                    logger.info(
                        "creating replica with \(name): \(size >> 20) MB so far, \(size >> 20 / UInt64(seconds)) MB/s")
                }
            }
        }
        defer { watcher.cancel() }
        // The command gets the replication role's password only (not the superuser's).
        let passfile = configuration.passfile + ".replica-method"
        try Posix.writeFile(
            passfile, contents: ManagedFiles.replicationPassfileText(configuration), user: osUser, mode: 0o600)
        defer { unlink(passfile) }
        let output = try await runner.run(
            executable, arguments, environment: ["PGPASSFILE": passfile, "PGDATA": dataDirectory],
            timeout: configuration.cloneTimeout
        ) { line in
            logger.info("\(name): \(PrintableText.of(Array(line.utf8), limit: 300))")
        }
        let valid =
            Posix.fileExists(dataDirectory + "/PG_VERSION") && Posix.fileExists(dataDirectory + "/global/pg_control")
        guard output.succeeded, valid else {
            if !keepData {
                // Only what this method wrote: the directory was empty before it ran.
                try? prepareEmptyDataDirectory(wipe: true)
            }
            throw PostgresError(
                .cloneFailed,
                output.succeeded
                    ? "\(executable) exited 0 but \(dataDirectory) holds no PostgreSQL cluster (no PG_VERSION or pg_control)"
                    : "\(executable) failed (exit \(output.status)): \(output.text.suffix(400))")
        }
        // The data directory as PostgreSQL requires it (a tool may leave other modes behind).
        try Posix.setOwner(dataDirectory, user: osUser, mode: 0o700)
    }

    /// The bytes under `path` (files only, links not followed): a clone's progress.
    static func directorySize(_ path: String) -> UInt64 {
        guard let enumerator = FileManager.default.enumerator(atPath: path) else { return 0 }
        var total: UInt64 = 0
        var info = stat()
        while let entry = enumerator.nextObject() as? String {
            if lstat(path + "/" + entry, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG {
                total += UInt64(info.st_size)
            }
        }
        return total
    }

    // MARK: Promote, demote, follow

    public func promote(timeout: Duration) async throws {
        // A primary runs with its own settings again (in force from its next restart).
        state.withLock { $0.standbyFloors = [:] }
        if state.withLock({ $0.fenced }) {
            throw PostgresError(
                .fenced, "not promoting \(dataDirectory): the node is fenced until its agent holds a valid lease again")
        }
        guard runningPostmaster != nil || adoptIfRunning() != nil else {
            throw PostgresError(
                .notRunning, "cannot promote: postgres is not running on \(dataDirectory); start it as a standby first")
        }
        let started = ContinuousClock.now
        let inRecovery = try await execute("SELECT pg_is_in_recovery() AS r").single().bool("r")
        if inRecovery == true {
            // Signal only: pg_promote(wait => true) checks for the end of recovery every 100 ms,
            // which would add up to 100 ms to every failover. We poll below every 5 ms instead.
            let signalled = try await execute("SELECT pg_promote(false) AS promoted").single().bool("promoted")
            guard signalled == true else {
                throw PostgresError(
                    .promoteFailed,
                    "pg_promote() could not signal the end of recovery on \(dataDirectory); see \(configuration.logFile)"
                )
            }
        }
        // Accepting writes: a transaction ID can be assigned (fails during recovery). Bounded by `timeout`.
        let deadline = started + timeout
        while true {
            do {
                _ = try await execute("SELECT pg_current_xact_id()")
                break
            } catch let error as PostgresError where error.sqlState == "25006" || error.code == .connectionClosed {
                guard ContinuousClock.now < deadline else {
                    throw PostgresError(
                        .promoteFailed,
                        "pg_promote() did not finish within \(timeout) on \(dataDirectory): it still refuses writes; "
                            + "see \(configuration.logFile)",
                        cause: error)
                }
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        try writeConfiguration(following: nil, standby: false)
        try Posix.writeFile(
            dataDirectory + "/" + ManagedFiles.recoveryFile,
            contents: ManagedFiles.recoveryText(configuration, source: nil),
            user: osUser, mode: 0o600)
        // A primary follows nobody: a later slot-use change must not write the old upstream back.
        state.withLock { $0.upstream = nil }
        let lsn = try? await execute("SELECT pg_current_wal_lsn() AS lsn").single().lsn("lsn")
        logger.info(
            "promoted; accepting writes",
            metadata: [
                "pg.lsn": "\(lsn.map { "\($0)" } ?? "?")",
                "pg.elapsed_ms": "\((ContinuousClock.now - started).milliseconds)",
            ])
    }

    public func demote(toFollow source: ReplicationSource?, mode: StopMode) async throws {
        try await stop(mode: mode, timeout: .seconds(60))
        try writeConfiguration(following: source, standby: true)
        logger.info(
            "demoting to standby", metadata: ["pg.upstream": "\(source.map { "\($0.host):\($0.port)" } ?? "none")"])
        try await start(following: source)
    }

    /// Points the standby at `source`. Running standby: rewrite the recovery file and reload
    /// (primary_conninfo and primary_slot_name are reloadable since PostgreSQL 13). Running primary:
    /// demote. Stopped: only configure.
    public func follow(_ source: ReplicationSource) async throws {
        guard runningPostmaster != nil || adoptIfRunning() != nil else {
            try writeConfiguration(following: source, standby: true)
            return
        }
        let inRecovery = try await execute("SELECT pg_is_in_recovery() AS r").single().bool("r")
        guard inRecovery == true else {
            try await demote(toFollow: source, mode: .fast)
            return
        }
        try writeConfiguration(following: source, standby: true)
        _ = try await execute("SELECT pg_reload_conf()")
        logger.info(
            "following new upstream (reload)",
            metadata: ["pg.upstream": "\(source.member) \(source.host):\(source.port)"])
    }

    public func setSynchronousStandbys(_ setting: SynchronousSetting) async throws -> LSN? {
        state.withLock { $0.synchronousStandbys = setting }
        try writeConfiguration(following: nil, standby: nil)
        guard let postmaster = runningPostmaster else { return nil }
        postmaster.send(SIGHUP)
        logger.info("synchronous standbys set", metadata: ["pg.sync": "\(setting)"])
        // A new session reads the configuration the postmaster has now: once it shows the new
        // value, the flush position bounds every commit that may have waited for the old one.
        var parametersConfiguration = configuration
        parametersConfiguration.parameters = parameters
        let wanted =
            ManagedFiles.synchronousStandbyNames(
                parametersConfiguration, cluster: state.withLock { $0.acceptedClusterParameters },
                synchronousStandbys: setting) ?? ""
        let deadline = ContinuousClock.now + Self.reloadDeadline
        while ContinuousClock.now < deadline {
            if let shown = try? await freshSessionQuery("SHOW synchronous_standby_names", connectTimeout: .seconds(1)),
                shown == wanted, try await walSendersFollow(setting)
            {
                return try await execute("SELECT pg_catalog.pg_current_wal_flush_lsn() AS lsn").single().lsn("lsn")
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        logger.warning(
            "synchronous_standby_names: the reload was not confirmed; no standby newly counts as synchronous",
            metadata: ["pg.sync": "\(setting)"])
        return nil
    }

    /// Whether every walsender has taken the setting in: each decides on its own which of its
    /// acknowledgements release a commit, from its own copy of the configuration; its
    /// `sync_priority` shows that copy (above 0 when listed, 0 when not). Before they all show
    /// it, a commit may still be released by a standby the setting no longer lists.
    func walSendersFollow(_ setting: SynchronousSetting) async throws -> Bool {
        // None (the sync key then names no standby either) or the configuration's own value.
        if setting.isEmpty { return true }
        let names = Set(setting.names.map { $0.lowercased() })
        let rows = try await execute(
            "SELECT application_name AS name, sync_priority::text AS priority FROM pg_catalog.pg_stat_replication")
        for row in rows.rows {
            let name = (try row.string("name") ?? "").lowercased()
            guard let priority = try row.string("priority").flatMap({ Int($0) }) else { return false }
            let listed = names.contains("*") || names.contains(name)
            if listed != (priority > 0) { return false }
        }
        return true
    }

    /// The physical replication slots on this server, by name.
    public func physicalReplicationSlots() async throws -> [String: PhysicalSlot] {
        let existing = try await execute(
            "SELECT slot_name, active, restart_lsn::text AS restart FROM pg_replication_slots WHERE slot_type = 'physical'"
        )
        var slots: [String: PhysicalSlot] = [:]
        for row in existing.rows {
            guard let name = try row.string("slot_name") else { continue }
            // Unknown counts as in use: never dropped.
            slots[name] = PhysicalSlot(
                active: try row.bool("active") ?? true, restartLSN: try row.string("restart").flatMap(LSN.init(text:)))
        }
        return slots
    }

    /// Creates and drops physical slots as `MemberSlots.plan` decided. A slot is dropped only if
    /// it is still inactive when the statement runs (one that became active since is kept). Each
    /// slot on its own: a failure is logged and the others go on.
    @discardableResult
    public func applyReplicationSlots(
        create: [String], drop: [String]
    ) async throws -> (created: [String], dropped: [String]) {
        var result: (created: [String], dropped: [String]) = ([], [])
        for name in drop {
            let sql = """
                SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots
                WHERE slot_name = $1 AND slot_type = 'physical' AND NOT active
                """
            if await slotStatement(sql, name, "drop") { result.dropped.append(name) }
        }
        for name in create {
            let sql = """
                SELECT pg_catalog.pg_create_physical_replication_slot($1, true)
                WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1)
                """
            if await slotStatement(sql, name, "create") { result.created.append(name) }
        }
        return result
    }

    /// Runs one slot statement (`what`: create or drop); true when it acted (a row came back).
    /// A failure is logged, not thrown: the next slot goes on.
    private func slotStatement(_ sql: String, _ name: String, _ what: String) async -> Bool {
        do {
            guard try await !execute(sql, [name]).rows.isEmpty else { return false }
            logger.info("replication slot \(what == "drop" ? "dropped" : "created")", metadata: ["pg.slot": "\(name)"])
            return true
        } catch {
            logger.warning("could not \(what) replication slot", metadata: ["pg.slot": "\(name)", "error": "\(error)"])
            return false
        }
    }

    /// Advances inactive physical slots to their positions (PostgreSQL stops at what a standby
    /// has replayed); active slots and those already past theirs are left alone. Each slot on its
    /// own: a failure is logged and the others go on.
    public func advanceReplicationSlots(_ advances: [String: LSN]) async {
        for (name, lsn) in advances.sorted(by: { $0.key < $1.key }) {
            do {
                let advanced = try await execute(
                    """
                    SELECT pg_catalog.pg_replication_slot_advance(slot_name, $2::pg_lsn)
                    FROM pg_catalog.pg_replication_slots
                    WHERE slot_name = $1 AND slot_type = 'physical' AND NOT active AND restart_lsn < $2::pg_lsn
                    """, [name, lsn.description])
                if !advanced.rows.isEmpty {
                    logger.debug("replication slot advanced", metadata: ["pg.slot": "\(name)", "pg.lsn": "\(lsn)"])
                }
            } catch {
                logger.warning(
                    "could not advance replication slot",
                    metadata: ["pg.slot": "\(name)", "pg.lsn": "\(lsn)", "error": "\(error)"])
            }
        }
    }

    /// Creates the slots of `members` (the local member skipped); drops nothing.
    public func syncReplicationSlots(forMembers members: [String]) async throws {
        let existing = try await physicalReplicationSlots()
        let wanted = members.filter { $0 != configuration.memberName }.map { PostgresConf.slotName(forMember: $0) }
        try await applyReplicationSlots(create: wanted.filter { existing[$0] == nil }.sorted(), drop: [])
    }

    /// Whether a standby names its slot on the primary (`primary_slot_name`): the cluster's
    /// `use_slots` as the loop reads it. A change on a running standby rewrites its recovery
    /// settings for the upstream it follows and reloads.
    public func setReplicationSlotUse(_ use: Bool) async throws {
        let (previous, upstream) = state.withLock { state -> (Bool?, ReplicationSource?) in
            defer { state.useSlots = use }
            return (state.useSlots, state.upstream)
        }
        guard previous != use, let upstream else { return }
        do {
            try writeConfiguration(following: upstream, standby: nil)
        } catch {
            // Not in force: the next call tries again.
            state.withLock { $0.useSlots = previous }
            throw error
        }
        if let postmaster = runningPostmaster {
            postmaster.send(SIGHUP)
            logger.info(
                "replication slot use changed: \(use ? "primary_slot_name set" : "no primary_slot_name")",
                metadata: ["pg.upstream": "\(upstream.member)"])
        }
    }

    // MARK: Rewind

    /// Rejoins this (old primary's) data directory to `source`: stops postgres, checks that pg_rewind
    /// is possible (wal_log_hints or data checksums) and needed (`pg_rewind --dry-run` finds a
    /// divergence), rewinds, and starts as a standby of `source`. Falls back to a fresh clone when
    /// rewinding is impossible or fails and `removeDataDirectoryOnRewindFailure` is set.
    public func rewind(from source: ReplicationSource) async throws {
        let started = ContinuousClock.now
        try await stop(mode: .fast, timeout: .seconds(60))
        try checkDataDirectory()
        do {
            try await rewindDataDirectory(from: source)
        } catch let error as PostgresError where error.code == .rewindNotPossible || error.code == .rewindFailed {
            guard configuration.removeDataDirectoryOnRewindFailure else { throw error }
            logger.warning("rewind impossible; re-cloning", metadata: ["pg.error": "\(error.message)"])
            try await clearDataDirectory(reason: "pg_rewind from \(source.member) impossible: \(error.message)")
            try await cloneReplica(from: source, progress: nil)
        }
        try writeConfiguration(following: source, standby: true)
        try await start(following: source)
        logger.info(
            "rejoined as standby",
            metadata: [
                "pg.upstream": "\(source.member)", "pg.elapsed_ms": "\((ContinuousClock.now - started).milliseconds)",
            ])
    }

    /// Never re-clones (this primary may hold the only copy of its last writes): the other
    /// cluster's server must have this data directory's system identifier; pg_rewind runs only
    /// when it is a primary, and its failure leaves the data as it is (stopped).
    public func rejoinOtherCluster(_ source: ReplicationSource) async throws {
        try await stop(mode: .fast, timeout: .seconds(60))
        try checkDataDirectory()
        // An archive only: no server to compare with or rewind from. The data stays as it is and
        // recovers from the archive (restore_command) as a standby: it accepts no write again.
        guard source.hasServer else {
            logger.info(
                "following the other cluster's archive (standby_cluster names no host): no pg_rewind possible",
                metadata: ["pg.upstream": "\(source.member)"])
            try writeConfiguration(following: source, standby: true)
            try await start(following: source)
            return
        }
        let local = try await controlData()["Database system identifier"]
        let (theirs, inRecovery) = try await onSource(source) { connection in
            let row = try await connection.query(
                """
                SELECT (SELECT system_identifier::text FROM pg_catalog.pg_control_system()) AS id,
                       pg_catalog.pg_is_in_recovery() AS recovery
                """
            ).single()
            return (try row.string("id"), try row.bool("recovery"))
        }
        guard let local, let theirs, local == theirs else {
            throw PostgresError(
                .rewindNotPossible,
                "\(source.host):\(source.port) has system identifier \(theirs ?? "?"), this data directory \(local ?? "?"): "
                    + "not the same cluster's history; standby_cluster must name a copy of this cluster (nothing changed here)"
            )
        }
        if inRecovery == false {
            try await rewindDataDirectory(from: source)
        } else {
            logger.info(
                "\(source.member) is not a primary (yet): following it without pg_rewind",
                metadata: ["pg.upstream": "\(source.host):\(source.port)"])
        }
        try writeConfiguration(following: source, standby: true)
        try await start(following: source)
    }

    /// A freshly promoted primary keeps its old timeline in pg_control until its first checkpoint,
    /// and pg_rewind reads the source's timeline from there: without this checkpoint it reports
    /// "no rewind required" for a target that did diverge, and the standby then cannot follow
    /// ("new timeline forked off … before current recovery point"). Patroni does the same.
    /// Returns the source's timeline (after the checkpoint), when it reports one.
    ///
    /// The source must be a primary whose checkpoint names its current timeline; otherwise this
    /// throws `rewindSourceNotReady` and nothing is rewound. Found by fault scenario 13 (primary
    /// and synchronous standby die together): a standby saw the new leader's key a moment before
    /// that leader finished promoting, rewound from it while it was still in recovery (no
    /// checkpoint, pg_control on timeline 3), and its postgres then refused to start ("requested
    /// timeline 6 does not contain minimum recovery point … on timeline 3"), 365 times a minute.
    @discardableResult
    func checkpointSource(_ source: ReplicationSource) async throws -> Int? {
        guard source.hasServer else {
            throw PostgresError(.rewindSourceNotReady, "\(source.member) has no server to rewind from")
        }
        let parameters = ConnectionParameters(
            host: source.host, port: source.port, user: configuration.superuser.username,
            password: configuration.superuser.password, database: "postgres",
            applicationName: "baton-\(configuration.memberName)-rewind", connectTimeout: configuration.connectTimeout,
            statementTimeout: configuration.cloneTimeout)
        let connection = try await PostgresConnection.connect(parameters)
        do {
            let primary = try await connection.query("SELECT NOT pg_is_in_recovery() AS primary").single()
                .bool("primary")
            guard primary == true else {
                throw PostgresError(
                    .rewindSourceNotReady,
                    "the rewind source \(source.member) is still in recovery (not promoted yet): not rewinding from it now"
                )
            }
            _ = try await connection.query("CHECKPOINT")
            let row = try await connection.query(
                """
                SELECT timeline_id,
                       ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS current_timeline
                FROM pg_control_checkpoint()
                """
            ).single()
            let timeline = try row.int("timeline_id")
            let current = try row.int("current_timeline")
            guard let timeline, timeline == current else {
                throw PostgresError(
                    .rewindSourceNotReady,
                    "the rewind source \(source.member)'s checkpoint is on timeline \(timeline.map(String.init) ?? "?") "
                        + "but it writes timeline \(current.map(String.init) ?? "?"): not rewinding now")
            }
            await connection.close()
            logger.info("checkpoint requested on the rewind source", metadata: ["pg.upstream": "\(source.member)"])
            return timeline
        } catch {
            await connection.close()
            throw error
        }
    }

    func rewindDataDirectory(from source: ReplicationSource) async throws {
        guard configuration.usePgRewind else {
            throw PostgresError(
                .rewindNotPossible, "pg_rewind is disabled in the configuration (use_pg_rewind); re-clone this member")
        }
        let control = try await controlData()
        let hints = control["wal_log_hints setting"] == "on"
        let checksums = (control["Data page checksum version"] ?? "0") != "0"
        guard hints || checksums else {
            throw PostgresError(
                .rewindNotPossible,
                "pg_rewind needs wal_log_hints=on or data checksums, and \(dataDirectory) has neither; re-clone this member"
            )
        }
        try writePassfile()
        let sourceTimeline = try await checkpointSource(source)
        if let sourceTimeline, ToolOutput.standbyAlreadyOnTimeline(control, sourceTimeline: sourceTimeline) {
            logger.info(
                "no rewind required: this standby already replayed the source's timeline",
                metadata: ["pg.upstream": "\(source.member)", "pg.timeline": "\(sourceTimeline)"])
            return
        }
        // A crashed (or immediately stopped) target has WAL past its last checkpoint: pg_rewind must
        // run crash recovery before comparing, which a dry run does not do; the real run performs it
        // and then decides by itself (printing "no rewind required" when the timelines agree).
        let state = control["Database cluster state"] ?? ""
        let cleanlyShutDown = state == "shut down" || state == "shut down in recovery"
        let credentials = configuration.rewindCredentials
        let sourceServer = ConnInfo.make([
            ("host", source.host), ("port", String(source.port)), ("user", credentials.username),
            ("dbname", "postgres"), ("passfile", configuration.passfile), ("connect_timeout", "5"),
        ])
        let arguments = ["--target-pgdata=\(dataDirectory)", "--source-server=\(sourceServer)"]
        let environment = ["PGPASSFILE": configuration.passfile]
        if !cleanlyShutDown {
            // pg_rewind recovers an unclean target in single-user mode, which refuses standby mode
            // ("standby mode is not supported by single-user servers") — on every attempt. Both a
            // standby that crashed and a primary fenced after a start as a standby was prepared
            // (standby.signal written, postmaster killed) are in that state. The signal files are
            // written again at the start that follows.
            unlink(dataDirectory + "/standby.signal")
            unlink(dataDirectory + "/recovery.signal")
        }
        guard cleanlyShutDown else {
            logger.info(
                "target was not shut down cleanly; pg_rewind recovers it, then rewinds if needed",
                metadata: ["pg.state": "\(state)"])
            try await runRewind(arguments, environment: environment, source: source)
            return
        }
        let check = try await runner.run(
            configuration.binary("pg_rewind"), arguments + ["--dry-run"], environment: environment,
            timeout: configuration.cloneTimeout)
        guard check.succeeded else {
            throw PostgresError(
                .rewindFailed,
                "pg_rewind --dry-run against \(source.host):\(source.port) failed: \(check.text.suffix(800))")
        }
        switch ToolOutput.rewindCheck(check.text) {
        case .notRequired:
            logger.info(
                "no rewind required: timelines have not diverged", metadata: ["pg.upstream": "\(source.member)"])
            return
        case .required(let lsn, let timeline):
            logger.info(
                "rewind required",
                metadata: [
                    "pg.lsn": "\(lsn.map { "\($0)" } ?? "?")", "pg.timeline": "\(timeline.map(String.init) ?? "?")",
                ])
        case .unknown:
            logger.info("rewind check inconclusive; rewinding", metadata: ["pg.output": "\(check.text.suffix(300))"])
        }
        try await runRewind(arguments, environment: environment, source: source)
    }

    private func runRewind(_ arguments: [String], environment: [String: String], source: ReplicationSource) async throws
    {
        let output = try await runner.run(
            configuration.binary("pg_rewind"), arguments, environment: environment, timeout: configuration.cloneTimeout)
        guard output.succeeded else {
            throw PostgresError(
                .rewindFailed,
                "pg_rewind of \(dataDirectory) from \(source.host):\(source.port) failed: \(output.text.suffix(800))")
        }
        let outcome = output.text.contains("no rewind required") ? "no rewind required" : "rewound"
        logger.info("pg_rewind done", metadata: ["pg.outcome": "\(outcome)"])
    }

    func controlData() async throws -> [String: String] {
        let output = try await runner.run(
            configuration.binary("pg_controldata"), ["-D", dataDirectory], timeout: .seconds(30))
        guard output.succeeded else {
            throw PostgresError(.commandFailed, "pg_controldata -D \(dataDirectory) failed: \(output.text.suffix(500))")
        }
        return ToolOutput.controlData(output.text)
    }
}
