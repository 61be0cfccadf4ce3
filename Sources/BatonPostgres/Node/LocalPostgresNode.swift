import BatonCore
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The agent's local PostgreSQL: a supervised postmaster plus one libpq session for status and
/// control. Implements the `PostgresNode` port the HA loop drives.
///
/// Extensions: `+Status` (the one-round-trip status query), `+Bootstrap` (initdb, roles, hba),
/// `+Replication` (clone, promote, demote, follow, rewind, slots).
public final class LocalPostgresNode: PostgresNode {
    public let configuration: LocalPostgresConfiguration
    let logger: Logger
    let osUser: OSUser
    let runner: CommandRunner
    let state = Mutex(State())

    struct State {
        var postmaster: Postmaster?
        var lastExit: PostmasterExit?
        var connection: PostgresConnection?
        var subscribers: [Int: AsyncStream<PostmasterExit>.Continuation] = [:]
        var nextSubscriber = 0
        /// What the leader last asked for; nil until it asks (the agent just started): the value
        /// in the file is then kept, not dropped — postgres may be a primary whose standbys'
        /// commits the sync key counts on.
        var synchronousStandbys: SynchronousSetting?
        /// A standby's floors for the settings it may not have lower than its primary (read from
        /// pg_controldata before each standby start); none for a primary.
        var standbyFloors: [String: Int] = [:]
        /// `postgresql.parameters` as last reloaded from the agent's file; nil: the configuration's.
        var parameters: [String: String]?
        /// The cluster's `postgresql.parameters` (from the `config` key; at start, those last put
        /// in force, kept in the data directory), and whether PostgreSQL has checked them.
        var clusterParameters: [String: String] = [:]
        var clusterParametersChecked = false
        /// Cluster parameters the server refused (name → its value then), left out until changed.
        var refusedByServer: [String: String] = [:]

        /// The cluster's parameters without those the server refused: what is written and kept.
        var acceptedClusterParameters: [String: String] {
            clusterParameters.filter { refusedByServer[$0.key] != $0.value }
        }
        /// Set by `fence()`: no start other than as a standby, no promotion, until `liftFence()`.
        var fenced = false
        /// `postgresql.pg_hba`/`pg_ident` that PostgreSQL has read and that admit the agent
        /// (nil lists: the files are left alone), and where they came from: the only rules ever
        /// written without a check (before a start, a reload).
        var checkedAccessRules = AccessRules()
        var checkedAccessSource = "agent's file"
        /// A check of new rules is running: the files on disk are its candidates until it ends.
        var accessCheckRunning = false
        /// The cluster's `use_slots` as last set by the loop (nil: the configuration's), and the
        /// upstream the recovery settings last named.
        var useSlots: Bool?
        var upstream: ReplicationSource?
    }

    /// The operator's `postgresql.parameters` in force (written on the next start or reload).
    public var parameters: [String: String] {
        state.withLock { $0.parameters } ?? configuration.parameters
    }

    /// Replaces the operator's `postgresql.parameters` (after the agent re-read its file); they
    /// are written to the managed parameters file on the next `reload()` or start.
    public func setParameters(_ parameters: [String: String]) {
        state.withLock { $0.parameters = parameters }
    }

    /// Throws when the OS user does not exist.
    public init(configuration: LocalPostgresConfiguration, logger: Logger) throws {
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "pg.datadir"] = "\(configuration.dataDirectory)"
        self.logger = logger
        self.osUser = try OSUser.lookup(configuration.osUser)
        self.runner = CommandRunner(runAs: osUser, logger: logger)
        // The cluster's parameters last put in force: a start before the agent reads etcd (or
        // while it cannot) keeps them instead of falling back to the defaults.
        if let kept = Self.keptClusterParameters(configuration.dataDirectory) {
            state.withLock { $0.clusterParameters = kept }
        }
    }

    deinit {
        let subscribers = state.withLock { $0.subscribers }
        for continuation in subscribers.values { continuation.finish() }
    }

    var dataDirectory: String { configuration.dataDirectory }

    // MARK: Supervision

    public func terminations() -> AsyncStream<PostmasterExit> {
        let (stream, continuation) = AsyncStream<PostmasterExit>.makeStream(bufferingPolicy: .bufferingNewest(16))
        let id = state.withLock { state in
            let id = state.nextSubscriber
            state.nextSubscriber += 1
            state.subscribers[id] = continuation
            return id
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    /// The PID of the postmaster this node supervises (child or adopted), while it runs.
    public var postmasterPID: Int32? { runningPostmaster?.pid }

    /// The postmaster we watch, when it is still running.
    var runningPostmaster: Postmaster? {
        state.withLock { state in
            guard let postmaster = state.postmaster, postmaster.exited == nil else { return nil }
            return postmaster
        }
    }

    /// Called on the watcher thread the moment the postmaster exits.
    private func postmasterExited(_ exit: PostmasterExit) {
        let (subscribers, connection, current) = state.withLock {
            state -> ([AsyncStream<PostmasterExit>.Continuation], PostgresConnection?, Bool) in
            guard state.postmaster?.pid == exit.pid else { return ([], nil, false) }
            state.postmaster = nil
            state.lastExit = exit
            let connection = state.connection
            state.connection = nil
            return (Array(state.subscribers.values), connection, true)
        }
        guard current else { return }
        _ = connection  // released here; its thread finishes the PGconn
        let status =
            exit.status.map { exit.bySignal ? "signal \($0)" : "exit code \($0)" } ?? "status unknown (not our child)"
        if exit.requested {
            logger.info("postmaster stopped", metadata: ["pg.pid": "\(exit.pid)", "pg.exit": "\(status)"])
        } else {
            logger.error("postmaster died unexpectedly", metadata: ["pg.pid": "\(exit.pid)", "pg.exit": "\(status)"])
        }
        for subscriber in subscribers { subscriber.yield(exit) }
    }

    private func watch(_ make: (@escaping @Sendable (PostmasterExit) -> Void) throws -> Postmaster) rethrows
        -> Postmaster
    {
        try make { [weak self] exit in self?.postmasterExited(exit) }
    }

    /// Adopts a postmaster already running on our data directory (after an agent restart): checks
    /// postmaster.pid, that the PID is alive, is a postgres binary and runs in our data directory.
    @discardableResult
    func adoptIfRunning() -> Postmaster? {
        if let running = runningPostmaster { return running }
        guard let pid = Self.runningPostmasterPID(dataDirectory: dataDirectory) else { return nil }
        let adopted = watch { Postmaster.adopt(pid: pid, onExit: $0) }
        let chosen = state.withLock { state -> Postmaster in
            if let existing = state.postmaster, existing.exited == nil { return existing }
            state.postmaster = adopted
            return adopted
        }
        if chosen === adopted {
            logger.info("adopted running postmaster", metadata: ["pg.pid": "\(pid)"])
        }
        return chosen
    }

    /// The postmaster that `dataDirectory/postmaster.pid` names, when that process is alive, not a
    /// zombie, a postgres binary and working in that directory (a stale file's reused PID is not
    /// it); nil otherwise. What adoption trusts, and what `baton migrate` checks.
    public static func runningPostmasterPID(dataDirectory: String) -> pid_t? {
        guard let text = Posix.readFile(dataDirectory + "/postmaster.pid"),
            let pidFile = ToolOutput.postmasterPID(text),
            Postmaster.isPostmaster(pid: pidFile.pid, dataDirectory: dataDirectory)
        else { return nil }
        return pidFile.pid
    }

    // MARK: Start, stop, reload, restart

    public func start(following source: ReplicationSource?) async throws {
        if let running = adoptIfRunning() {
            logger.info("postgres already running", metadata: ["pg.pid": "\(running.pid)"])
            if let source { try await follow(source) }
            return
        }
        try checkDataDirectory()
        // A standby must not run with lower max_connections & co. than its primary recorded:
        // PostgreSQL would refuse to run recovery. Unknown (pg_controldata failed): the
        // configured values, as before.
        let standby = source != nil || Posix.fileExists(dataDirectory + "/standby.signal")
        let floors = standby ? ((try? await controlData()).map(ManagedFiles.standbyFloors) ?? [:]) : [:]
        state.withLock { $0.standbyFloors = floors }
        try writeConfiguration(following: source, standby: source != nil ? true : nil)
        // A start "as it was" of a data directory without standby.signal may come up as a primary.
        let mayBePrimary = source == nil && !Posix.fileExists(dataDirectory + "/standby.signal")
        if mayBePrimary, state.withLock({ $0.fenced }) { throw fencedStart() }
        let logOffset = fileSize(configuration.logFile)
        let postmaster = try watch {
            try Postmaster.spawn(
                executable: configuration.binary("postgres"), arguments: ["-D", dataDirectory], runAs: osUser,
                logFile: configuration.logFile, environment: CommandRunner.baseEnvironment, onExit: $0)
        }
        let fencedMeanwhile = state.withLock { state -> Bool in
            state.postmaster = postmaster
            state.lastExit = nil
            return state.fenced
        }
        if mayBePrimary, fencedMeanwhile {
            // fence() ran between the check and the spawn and may not have seen this postmaster.
            postmaster.markRequested()
            postmaster.send(SIGQUIT)
            _ = await postmaster.waitForExit(timeout: .seconds(5))
            throw fencedStart()
        }
        logger.info(
            "starting postgres",
            metadata: [
                "pg.pid": "\(postmaster.pid)", "pg.port": "\(configuration.port)",
                "pg.upstream": "\(source.map { "\($0.host):\($0.port)" } ?? "-")",
            ])
        try await waitUntilAccepting(postmaster, logOffset: logOffset)
    }

    /// Waits until the server accepts a query, the postmaster dies (then says why, from the log) or
    /// `startTimeout` passes. Polls postmaster.pid every 20 ms and connects only once the postmaster
    /// reports `ready` (primary) or `standby` (hot standby open), so a port held by another process
    /// never makes us wait on someone else's socket.
    func waitUntilAccepting(_ postmaster: Postmaster, logOffset: UInt64) async throws {
        let started = ContinuousClock.now
        let deadline = started + configuration.startTimeout
        var lastError: (any Error)?
        while ContinuousClock.now < deadline {
            if postmaster.exited != nil {
                throw startFailure(logOffset: logOffset)
            }
            if postmasterReportsReady(postmaster.pid) {
                do {
                    let connection = try await sessionConnection()
                    _ = try await connection.query("SELECT 1")
                    logger.info(
                        "postgres accepts connections",
                        metadata: [
                            "pg.pid": "\(postmaster.pid)",
                            "pg.elapsed_ms": "\((ContinuousClock.now - started).milliseconds)",
                        ])
                    return
                } catch let error as PostgresError where error.code == .authenticationFailed {
                    throw error
                } catch {
                    lastError = error
                    dropConnection()
                }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw PostgresError(
            .startTimeout,
            "postgres (PID \(postmaster.pid)) on \(dataDirectory) did not accept connections within "
                + "\(configuration.startTimeout); it keeps running — see \(configuration.logFile)", cause: lastError)
    }

    /// The status line of postmaster.pid (PostgreSQL 10+): `starting`, `stopping`, `ready`, `standby`.
    func postmasterReportsReady(_ pid: pid_t) -> Bool {
        let status = postmasterStatusLine(pid)
        return status == "ready" || status == "standby"
    }

    /// Line 8 of postmaster.pid when it belongs to `pid`: `starting`, `stopping`, `ready` (a primary
    /// open for connections) or `standby` (a hot standby open for connections).
    func postmasterStatusLine(_ pid: pid_t) -> String? {
        guard let text = Posix.readFile(dataDirectory + "/postmaster.pid") else { return nil }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count > 7, Int32(lines[0].trimmingCharacters(in: .whitespaces)) == pid else { return nil }
        return lines[7].trimmingCharacters(in: .whitespaces)
    }

    /// Explains why the postmaster exited during start, from what it wrote to the log.
    func startFailure(logOffset: UInt64) -> PostgresError {
        let log = readLog(from: logOffset)
        let excerpt = log.split(separator: "\n").suffix(6).joined(separator: " | ")
        if log.contains("Address already in use") {
            return PostgresError(
                .portInUse,
                "port \(configuration.port) on \(configuration.listenAddress) is already in use by another process, so "
                    + "postgres for \(dataDirectory) could not listen; stop that process or configure another port "
                    + "— server log: \(excerpt)")
        }
        if log.contains("invalid permissions") || log.contains("group or world access")
            || log.contains("wrong ownership")
        {
            return PostgresError(
                .dataDirectoryPermissions,
                "postgres refused data directory \(dataDirectory) because of its owner or mode; run "
                    + "chown -R \(osUser.name): \(dataDirectory) && chmod 700 \(dataDirectory) — server log: \(excerpt)"
            )
        }
        if log.contains("lock file") && log.contains("already exists") {
            return PostgresError(
                .startFailed,
                "another postmaster already runs on \(dataDirectory) (postmaster.pid exists); stop it or let the agent "
                    + "adopt it — server log: \(excerpt)")
        }
        return PostgresError(
            .startFailed,
            "postgres for \(dataDirectory) exited during start-up; see \(configuration.logFile) — server log: \(excerpt)"
        )
    }

    public func stop(mode: StopMode, timeout: Duration) async throws {
        guard let postmaster = adoptIfRunning() else {
            logger.debug("postgres already stopped")
            return
        }
        postmaster.markRequested()
        let escalation: [(StopMode?, Int32)] =
            switch mode {
            case .smart: [(.smart, SIGTERM), (.fast, SIGINT), (.immediate, SIGQUIT), (nil, SIGKILL)]
            case .fast: [(.fast, SIGINT), (.immediate, SIGQUIT), (nil, SIGKILL)]
            case .immediate: [(.immediate, SIGQUIT), (nil, SIGKILL)]
            }
        let started = ContinuousClock.now
        dropConnection()
        for (step, (stepMode, signal)) in escalation.enumerated() {
            postmaster.send(signal)
            let wait = step == 0 ? timeout : .seconds(5)
            if await postmaster.waitForExit(timeout: wait) != nil {
                logger.info(
                    "postgres stopped",
                    metadata: [
                        "pg.pid": "\(postmaster.pid)", "pg.mode": "\(stepMode?.rawValue ?? "kill")",
                        "pg.elapsed_ms": "\((ContinuousClock.now - started).milliseconds)",
                    ])
                return
            }
            logger.warning(
                "postgres did not stop in time; escalating",
                metadata: ["pg.pid": "\(postmaster.pid)", "pg.mode": "\(stepMode?.rawValue ?? "kill")"])
        }
        throw PostgresError(
            .stopTimeout,
            "postgres (PID \(postmaster.pid)) on \(dataDirectory) survived SIGKILL; check for a stuck process (D state) on the host"
        )
    }

    func fencedStart() -> PostgresError {
        PostgresError(
            .fenced,
            "not starting postgres on \(dataDirectory) as it was (it may come up as a primary): the node was fenced "
                + "at its lease deadline and stays so until its agent holds a valid lease again")
    }

    // MARK: Fencing

    public func fence() async {
        state.withLock { $0.fenced = true }
        let pid = adoptIfRunning()?.pid
        logger.error(
            "fencing: immediate shutdown of every postmaster of the data directory, without asking postgres",
            metadata: ["pg.pid": "\(pid.map(String.init) ?? "-")"])
        do {
            try await stop(mode: .immediate, timeout: .seconds(1))
        } catch {
            logger.critical("fencing stop failed: \(error)")
        }
    }

    public func liftFence() {
        let was = state.withLock { state -> Bool in
            defer { state.fenced = false }
            return state.fenced
        }
        if was { logger.info("fence lifted: the agent holds a valid lease as leader again") }
    }

    public func reload() async throws {
        guard let postmaster = adoptIfRunning() else {
            throw PostgresError(
                .notRunning, "cannot reload: postgres is not running on \(dataDirectory); start it first")
        }
        try writeConfiguration(following: nil, standby: nil)
        postmaster.send(SIGHUP)
        logger.info("postgres reloaded", metadata: ["pg.pid": "\(postmaster.pid)"])
    }

    /// Where the cluster's parameters last put in force are kept: in the data directory, so that
    /// a clone or a rewind copies them from its source with the rest (they are the same on every
    /// member).
    static func clusterParametersFile(_ dataDirectory: String) -> String {
        dataDirectory + "/baton.cluster-parameters.json"
    }

    /// The kept parameters, read as input (checked again like the `config` key's); nil when there
    /// are none or the file is not a mapping of names to strings.
    static func keptClusterParameters(_ dataDirectory: String) -> [String: String]? {
        guard let text = Posix.readFile(clusterParametersFile(dataDirectory)),
            let kept = try? JSONDecoder().decode([String: String].self, from: Data(text.utf8))
        else { return nil }
        return PostgresParameters.fromCluster(kept.mapValues { .string($0) }).parameters
    }

    public func applyClusterParameters(_ parameters: [String: String]) async throws -> [PostgresParameters.Refusal]? {
        let previous = state.withLock {
            state -> (parameters: [String: String], refused: [String: String], checked: Bool)? in
            guard state.clusterParameters != parameters || !state.clusterParametersChecked else { return nil }
            defer {
                state.clusterParameters = parameters
                state.clusterParametersChecked = false
                // A refused parameter is tried again once its value changes.
                state.refusedByServer = state.refusedByServer.filter { parameters[$0.key] == $0.value }
            }
            return (state.clusterParameters, state.refusedByServer, state.clusterParametersChecked)
        }
        guard let previous else { return [] }
        // No cluster yet (before bootstrap or a clone): they are written at the first start, and
        // checked by the server once there is a data directory (nil: not checked yet).
        guard Posix.fileExists(dataDirectory + "/PG_VERSION") else { return nil }
        do {
            var refusals: [PostgresParameters.Refusal] = []
            // The server's own start-up check of the files, until it accepts them: what it names
            // is left out (on a restart, one bad line would stop it from starting; on a reload,
            // it would ignore every change in the file). Each round refuses at least one
            // parameter or ends.
            for _ in 0...parameters.count {
                try writeConfiguration(following: nil, standby: nil)
                guard let problems = try await configurationProblems() else { break }
                let newly = refuse(problems, changedSince: previous.parameters)
                guard !newly.isEmpty else {
                    throw PostgresError(
                        .commandFailed,
                        "PostgreSQL refuses its configuration for a reason outside the cluster's parameters: "
                            + problems.map { "\($0.key): \($0.value)" }.sorted().joined(separator: "; "))
                }
                refusals += newly
            }
            // Kept without what the server refused: the next agent starts with what passed.
            let accepted = state.withLock { state in
                state.clusterParametersChecked = true
                return state.acceptedClusterParameters
            }
            let kept = String(decoding: try JSONEncoder().encode(accepted), as: UTF8.self)
            try Posix.writeFile(
                Self.clusterParametersFile(dataDirectory), contents: kept, user: osUser, mode: 0o600)
            if let postmaster = adoptIfRunning() {
                postmaster.send(SIGHUP)
                logger.info(
                    "cluster parameters written and reloaded",
                    metadata: ["pg.pid": "\(postmaster.pid)", "pg.refused": "\(refusals.map(\.name).sorted())"])
            }
            return refusals.sorted { $0.name < $1.name }
        } catch {
            // Nothing half-applied: the previous parameters are written back and tried again later.
            state.withLock { state in
                state.clusterParameters = previous.parameters
                state.refusedByServer = previous.refused
                state.clusterParametersChecked = previous.checked
            }
            try? writeConfiguration(following: nil, standby: nil)
            throw error
        }
    }

    /// Leaves out the cluster parameters PostgreSQL named. When it named none of them (its message
    /// hid the name, or the problem is elsewhere), the ones that changed are left out, since the
    /// files were accepted without them; when none changed, the problem is not theirs.
    private func refuse(_ problems: [String: String], changedSince previous: [String: String])
        -> [PostgresParameters.Refusal]
    {
        state.withLock { state -> [PostgresParameters.Refusal] in
            var refusals: [PostgresParameters.Refusal] = problems.compactMap { name, reason in
                guard let value = state.clusterParameters[name], state.refusedByServer[name] != value else {
                    return nil
                }
                state.refusedByServer[name] = value
                return PostgresParameters.Refusal(name: name, reason: reason)
            }
            if refusals.isEmpty {
                let message = problems.values.sorted().joined(separator: "; ")
                for (name, value) in state.clusterParameters
                where previous[name] != value && state.refusedByServer[name] != value {
                    state.refusedByServer[name] = value
                    refusals.append(
                        PostgresParameters.Refusal(
                            name: name, reason: "PostgreSQL refused the files with it: \(message)"))
                }
            }
            return refusals
        }
    }

    /// Runs `postgres -C port` on the data directory: PostgreSQL reads every configuration file as
    /// it does at start-up. Nil when it accepts them; otherwise the parameters it names, with its
    /// message (`invalid value for parameter …`, `unrecognized configuration parameter …`).
    func configurationProblems() async throws -> [String: String]? {
        let output = try await runner.run(
            configuration.binary("postgres"), ["-D", dataDirectory, "-C", "port"], timeout: .seconds(30))
        guard !output.succeeded else { return nil }
        var problems: [String: String] = [:]
        for line in output.text.split(separator: "\n") {
            guard let start = line.range(of: "parameter \""),
                let end = line[start.upperBound...].firstIndex(of: "\"")
            else { continue }
            let name = String(line[start.upperBound..<end]).lowercased()
            let message = line.range(of: ":  ").map { String(line[$0.upperBound...]) } ?? String(line)
            problems[name] = PrintableText.of(Array(message.utf8), limit: 200)
        }
        if problems.isEmpty { problems["(configuration)"] = PrintableText.of(Array(output.text.utf8), limit: 300) }
        return problems
    }

    public func restart(stopTimeout: Duration = .seconds(60)) async throws {
        try await stop(mode: .fast, timeout: stopTimeout)
        try await start(following: nil)
    }

    // MARK: Session

    /// The agent's superuser session, connected on demand and reused.
    func sessionConnection() async throws -> PostgresConnection {
        if let existing = state.withLock({ $0.connection }) { return existing }
        let connection = try await PostgresConnection.connect(configuration.localConnection)
        return state.withLock { state in
            if let existing = state.connection { return existing }
            state.connection = connection
            return connection
        }
    }

    func dropConnection() {
        let connection = state.withLock { state -> PostgresConnection? in
            let connection = state.connection
            state.connection = nil
            return connection
        }
        _ = connection
    }

    /// Runs a statement on the session, dropping the session when the connection broke.
    func execute(_ sql: String, _ parameters: [String?] = [], timeout: Duration? = nil) async throws -> QueryResult {
        let connection = try await sessionConnection()
        do {
            return try await connection.query(sql, parameters, timeout: timeout)
        } catch let error as PostgresError where error.code == .connectionClosed {
            dropConnection()
            throw error
        }
    }

    // MARK: Files

    /// Checks that the data directory exists, is initialised, belongs to the OS user and is 0700/0750.
    func checkDataDirectory() throws {
        var info = stat()
        guard stat(dataDirectory, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw PostgresError(
                .dataDirectoryMissing,
                "data directory \(dataDirectory) does not exist; bootstrap a new cluster or clone a replica into it, "
                    + "or fix the configured data directory")
        }
        guard Posix.fileExists(dataDirectory + "/PG_VERSION") else {
            throw PostgresError(
                .dataDirectoryNotInitialized,
                "\(dataDirectory) is not a PostgreSQL data directory (no PG_VERSION file); bootstrap or clone into it, "
                    + "or fix the configured data directory")
        }
        if info.st_uid != osUser.uid {
            throw PostgresError(
                .dataDirectoryPermissions,
                "data directory \(dataDirectory) is owned by \(OSUser.name(of: info.st_uid)), not by \(osUser.name) "
                    + "who runs postgres; run chown -R \(osUser.name): \(dataDirectory)")
        }
        let mode = info.st_mode & 0o777
        if mode & 0o027 != 0 {
            throw PostgresError(
                .dataDirectoryPermissions,
                "data directory \(dataDirectory) has mode \(String(mode, radix: 8)); PostgreSQL requires 0700 "
                    + "(or 0750); run chmod 700 \(dataDirectory)")
        }
    }

    /// Writes the managed files. `following` rewrites the recovery file (nil leaves it);
    /// `standby` creates (true) or removes (false) standby.signal (nil leaves it).
    func writeConfiguration(following source: ReplicationSource?, standby: Bool?) throws {
        try removeRecoveryControlFromAutoConf()
        let conf = dataDirectory + "/postgresql.conf"
        let existing = Posix.readFile(conf) ?? ""
        let missing = ManagedFiles.includeLines.filter { line in
            !existing.contains(line.components(separatedBy: "\t").first ?? line)
        }
        if !missing.isEmpty {
            let separator = existing.isEmpty || existing.hasSuffix("\n") ? "" : "\n"
            try Posix.writeFile(
                conf, contents: existing + separator + missing.joined(separator: "\n") + "\n", user: osUser, mode: 0o600
            )
        }
        var parametersConfiguration = configuration
        parametersConfiguration.parameters = parameters
        let (synchronous, cluster, floors) = state.withLock {
            ($0.synchronousStandbys, $0.acceptedClusterParameters, $0.standbyFloors)
        }
        let parametersPath = dataDirectory + "/" + ManagedFiles.parametersFile
        var kept = ""
        if synchronous == nil, let previous = Posix.readFile(parametersPath),
            let line = previous.split(separator: "\n").last(where: { $0.hasPrefix("synchronous_standby_names = ") })
        {
            kept = "# Kept until the leader sets it:\n" + line + "\n"
        }
        try Posix.writeFile(
            parametersPath,
            contents: ManagedFiles.parametersText(
                parametersConfiguration, cluster: cluster, synchronousStandbys: synchronous ?? .empty,
                standbyFloors: floors) + kept,
            user: osUser, mode: 0o600)
        let recoveryPath = dataDirectory + "/" + ManagedFiles.recoveryFile
        if let source {
            var recoveryConfiguration = configuration
            recoveryConfiguration.useReplicationSlots = state.withLock { state in
                state.upstream = source
                return state.useSlots ?? configuration.useReplicationSlots
            }
            try Posix.writeFile(
                recoveryPath, contents: ManagedFiles.recoveryText(recoveryConfiguration, source: source), user: osUser,
                mode: 0o600)
        } else if !Posix.fileExists(recoveryPath) {
            try Posix.writeFile(
                recoveryPath, contents: ManagedFiles.recoveryText(configuration, source: nil), user: osUser, mode: 0o600
            )
        }
        let signal = dataDirectory + "/standby.signal"
        switch standby {
        case true?:
            if !Posix.fileExists(signal) { try Posix.writeFile(signal, contents: "", user: osUser, mode: 0o600) }
        case false?: unlink(signal)
        case nil: break
        }
        try writeAccessFiles()
        try writePassfile()
    }

    func writePassfile() throws {
        try Posix.writeFile(
            configuration.passfile, contents: ManagedFiles.passfileText(configuration), user: osUser, mode: 0o600)
    }

    /// postgresql.auto.conf is read after every other file: a recovery target or promotion
    /// trigger left there (by a backup tool's restore, `pg_basebackup -R`, ALTER SYSTEM) would end
    /// a standby's recovery — promote it — without the leader key, whatever Baton's recovery file
    /// says. Such lines are removed (as Patroni does) and logged. Only a regular file is read.
    func removeRecoveryControlFromAutoConf() throws {
        let path = dataDirectory + "/postgresql.auto.conf"
        var info = stat()
        guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, let text = Posix.readFile(path) else {
            return
        }
        var removed: [String] = []
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).filter { line in
            let name = line.drop { $0 == " " || $0 == "\t" }.prefix { $0.isLetter || $0 == "_" }.lowercased()
            guard PostgresParameters.recoveryControl.contains(name) else { return true }
            removed.append(name)
            return false
        }
        guard !removed.isEmpty else { return }
        try Posix.writeFile(path, contents: lines.joined(separator: "\n"), user: osUser, mode: 0o600)
        logger.warning(
            "recovery settings removed from postgresql.auto.conf (they would end a standby's recovery without the leader key)",
            metadata: ["pg.removed": "\(removed.joined(separator: ","))"])
    }

    func fileSize(_ path: String) -> UInt64 {
        var info = stat()
        return stat(path, &info) == 0 ? UInt64(info.st_size) : 0
    }

    func readLog(from offset: UInt64) -> String {
        guard let handle = FileHandle(forReadingAtPath: configuration.logFile) else { return "" }
        defer { try? handle.close() }
        try? handle.seek(toOffset: offset)
        let data = (try? handle.readToEnd()) ?? Data()
        return String(decoding: data.suffix(8192), as: UTF8.self)
    }
}
