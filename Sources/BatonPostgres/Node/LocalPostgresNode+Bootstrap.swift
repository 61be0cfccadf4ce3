import BatonCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

extension LocalPostgresNode {
    /// initdb (checksums, scram-sha-256 over TCP, peer locally, superuser password from a 0600
    /// pwfile), pg_hba.conf, managed parameters, start as primary, then the replication and rewind
    /// roles. Returns the database system identifier.
    public func bootstrap() async throws -> String {
        if Posix.fileExists(dataDirectory + "/PG_VERSION") {
            throw PostgresError(
                .dataDirectoryNotEmpty,
                "\(dataDirectory) already holds a PostgreSQL cluster; refusing to bootstrap over it — start it, or remove it first"
            )
        }
        let started = ContinuousClock.now
        try prepareEmptyDataDirectory(wipe: false)
        if let method = configuration.bootstrapMethod {
            return try await restoreBootstrap(method, started: started)
        }
        let pwfile = dataDirectory + ".pwfile"
        try Posix.writeFile(pwfile, contents: configuration.superuser.password + "\n", user: osUser, mode: 0o600)
        defer { unlink(pwfile) }
        // Baton's own arguments last: initdb takes the last of a repeated option.
        let arguments =
            ManagedFiles.initdbArguments(configuration)
            + ["-D", dataDirectory, "-U", configuration.superuser.username, "--pwfile=\(pwfile)"]
        let output = try await runner.run(configuration.binary("initdb"), arguments, timeout: .seconds(300))
        guard output.succeeded else {
            throw PostgresError(
                .commandFailed, "initdb of \(dataDirectory) failed (exit \(output.status)): \(output.text.suffix(800))")
        }
        try Posix.writeFile(
            dataDirectory + "/pg_hba.conf", contents: ManagedFiles.hbaText(configuration), user: osUser, mode: 0o600)
        logger.info("initdb done", metadata: ["pg.elapsed_ms": "\((ContinuousClock.now - started).milliseconds)"])
        try await start(following: nil)
        try await createRoles()
        do {
            try await runPostBootstrap()
        } catch {
            // The cluster this bootstrap made, and nothing else: the directory was empty before.
            await removeFailedBootstrap()
            throw error
        }
        let identifier = try await systemIdentifier()
        logger.info(
            "bootstrapped new cluster",
            metadata: [
                "pg.system_id": "\(identifier)", "pg.elapsed_ms": "\((ContinuousClock.now - started).milliseconds)",
            ])
        return identifier
    }

    /// `bootstrap.method`: the command fills the data directory, PostgreSQL recovers to the
    /// target and promotes itself, and the cluster goes on from there as a new one. What the
    /// method wrote is removed on failure (the directory was empty before it ran).
    private func restoreBootstrap(_ method: BootstrapMethod, started: ContinuousClock.Instant) async throws -> String {
        do {
            guard let executable = method.argv.first else {
                throw PostgresError(.commandFailed, "bootstrap.\(method.name): no command")
            }
            var arguments = Array(method.argv.dropFirst())
            if !method.noParams { arguments += ["--scope=\(configuration.scope)", "--datadir=\(dataDirectory)"] }
            logger.info(
                "bootstrapping from a backup", metadata: ["pg.method": "\(method.name)", "pg.command": "\(executable)"])
            let logger = self.logger
            let output = try await runner.run(
                executable, arguments, environment: ["PGDATA": dataDirectory], timeout: configuration.cloneTimeout
            ) { line in
                logger.info("\(method.name): \(PrintableText.of(Array(line.utf8), limit: 300))")
            }
            guard output.succeeded, Posix.fileExists(dataDirectory + "/PG_VERSION") else {
                throw PostgresError(
                    .commandFailed,
                    output.succeeded
                        ? "bootstrap.\(method.name): \(executable) exited 0 but left no PostgreSQL cluster in \(dataDirectory)"
                        : "bootstrap.\(method.name): \(executable) failed (exit \(output.status)): \(output.text.suffix(600))"
                )
            }
            try Posix.setOwner(dataDirectory, user: osUser, mode: 0o700)
            // Baton's access rules, and recovery to the target; PostgreSQL promotes itself there.
            try Posix.writeFile(
                dataDirectory + "/pg_hba.conf", contents: ManagedFiles.hbaText(configuration), user: osUser, mode: 0o600
            )
            for signal in ["standby.signal", "recovery.signal"] { unlink(dataDirectory + "/" + signal) }
            try writeConfiguration(following: nil, standby: nil)
            var recovery = method.recoveryConf
            if recovery["recovery_target_action"] == nil { recovery["recovery_target_action"] = "promote" }
            try Posix.writeFile(
                dataDirectory + "/" + ManagedFiles.recoveryFile,
                contents: "# Managed by Baton: recovery of bootstrap.\(method.name).\n" + PostgresConf.render(recovery)
                    + "\n", user: osUser, mode: 0o600)
            try Posix.writeFile(dataDirectory + "/recovery.signal", contents: "", user: osUser, mode: 0o600)
            try await start(following: nil)
            let deadline = ContinuousClock.now + configuration.cloneTimeout
            var inRecovery: Bool? = true
            while ContinuousClock.now < deadline {
                inRecovery = try? await execute("SELECT pg_is_in_recovery() AS r").single().bool("r")
                if inRecovery == false { break }
                try await Task.sleep(for: .milliseconds(500))
            }
            guard inRecovery == false else {
                throw PostgresError(
                    .commandFailed,
                    "bootstrap.\(method.name): PostgreSQL did not finish recovery within \(configuration.cloneTimeout) "
                        + "(a target it never reaches, a restore_command that fails?); see \(configuration.logFile)")
            }
            // Done: the recovery settings are not wanted at the next start.
            try Posix.writeFile(
                dataDirectory + "/" + ManagedFiles.recoveryFile,
                contents: ManagedFiles.recoveryText(configuration, source: nil), user: osUser, mode: 0o600)
            try await createRoles()
            try await runPostBootstrap()
            let identifier = try await systemIdentifier()
            logger.info(
                "bootstrapped from a backup",
                metadata: [
                    "pg.method": "\(method.name)", "pg.system_id": "\(identifier)",
                    "pg.elapsed_ms": "\((ContinuousClock.now - started).milliseconds)",
                ])
            return identifier
        } catch {
            // Only what this bootstrap wrote: the directory was empty before it began.
            await removeFailedBootstrap()
            throw error
        }
    }

    /// The running server's database system identifier.
    func systemIdentifier() async throws -> String {
        let identifier = try await execute("SELECT system_identifier::text AS id FROM pg_control_system()").single()
            .string("id")
        guard let identifier else {
            throw PostgresError(.unexpectedResult, "pg_control_system() returned no system identifier")
        }
        return identifier
    }

    /// After a failed bootstrap: postgres stopped (fenced if a stop fails: it may have promoted),
    /// then what this bootstrap wrote removed — only once no postmaster runs on it.
    func removeFailedBootstrap() async {
        do {
            try await stop(mode: .immediate, timeout: .seconds(10))
        } catch {
            await fence()
        }
        guard adoptIfRunning() == nil else {
            logger.error("a postmaster still runs on \(dataDirectory) after a failed bootstrap: its files are kept")
            return
        }
        do {
            try prepareEmptyDataDirectory(wipe: true)
        } catch {
            logger.error("could not remove what a failed bootstrap wrote: \(error)")
        }
    }

    /// `bootstrap.post_bootstrap`, as Patroni runs it: the command as the PostgreSQL OS user with
    /// one argument, a connection URL for the superuser (no password in it); the password is in
    /// the agent's 0600 passfile (`PGPASSFILE`). A failure fails the bootstrap.
    func runPostBootstrap() async throws {
        guard let argv = configuration.postBootstrap, let executable = argv.first else { return }
        try writePassfile()
        let passfile = configuration.passfile
        let host =
            configuration.localAddress.contains(":") ? "[\(configuration.localAddress)]" : configuration.localAddress
        let user = configuration.superuser.username.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        let url = "postgres://\(user)@\(host):\(configuration.port)/postgres"
        logger.info("running post_bootstrap", metadata: ["pg.command": "\(executable)"])
        let logger = self.logger
        let output = try await runner.run(
            executable, Array(argv.dropFirst()) + [url], environment: ["PGPASSFILE": passfile],
            timeout: configuration.cloneTimeout
        ) { line in
            logger.info("post_bootstrap: \(PrintableText.of(Array(line.utf8), limit: 300))")
        }
        guard output.succeeded else {
            throw PostgresError(
                .commandFailed,
                "post_bootstrap \(executable) failed (exit \(output.status)): \(output.text.suffix(400)); the new cluster is removed and the bootstrap tried again"
            )
        }
    }

    /// The replication role and the pg_rewind role with the least privileges pg_rewind needs.
    /// Passwords are sent as SCRAM verifiers computed by libpq (never as text), with statement
    /// logging switched off for the session as well.
    func createRoles() async throws {
        let connection = try await sessionConnection()
        _ = try await connection.query("SET log_statement = 'none'")
        _ = try await connection.query("SET log_min_error_statement = 'panic'")
        defer { dropConnection() }  // do not keep a session with those settings around
        func ensureRole(_ credentials: Credentials, attributes: String) async throws {
            let exists = try await connection.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [credentials.username])
            try await connection.setRolePassword(
                credentials.username, password: credentials.password, attributes: attributes,
                create: exists.rows.isEmpty)
        }
        if configuration.replication.username != configuration.superuser.username {
            try await ensureRole(configuration.replication, attributes: "LOGIN REPLICATION")
        }
        if let rewind = configuration.rewind, rewind.username != configuration.superuser.username {
            try await ensureRole(rewind, attributes: "LOGIN")
            let name = try await connection.escapeIdentifier(rewind.username)
            for function in [
                "pg_catalog.pg_ls_dir(text, boolean, boolean)", "pg_catalog.pg_stat_file(text, boolean)",
                "pg_catalog.pg_read_binary_file(text)", "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
            ] {
                _ = try await connection.query("GRANT EXECUTE ON FUNCTION \(function) TO \(name)")
            }
        }
        logger.info("roles created", metadata: ["pg.replication_user": "\(configuration.replication.username)"])
    }

    /// Makes the data directory exist, empty, owned by the OS user, mode 0700.
    func prepareEmptyDataDirectory(wipe: Bool) throws {
        let manager = FileManager.default
        var linkInfo = stat()
        if wipe, lstat(dataDirectory, &linkInfo) == 0, (linkInfo.st_mode & S_IFMT) == S_IFLNK {
            // Replaced by a link (by the postgres user, or a command run as it): never emptied by
            // root, which would empty wherever it points.
            throw PostgresError(
                .dataDirectoryUnusable, "\(dataDirectory) is a symbolic link now: not emptied; an operator must look")
        }
        var isDirectory: ObjCBool = false
        if manager.fileExists(atPath: dataDirectory, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw PostgresError(
                    .dataDirectoryMissing,
                    "\(dataDirectory) exists but is not a directory; remove it or fix the data directory")
            }
            let contents: [String]
            do {
                contents = try manager.contentsOfDirectory(atPath: dataDirectory)
            } catch {
                throw PostgresError(.io, "could not list \(dataDirectory)", cause: error)
            }
            if !contents.isEmpty {
                guard wipe else {
                    throw PostgresError(
                        .dataDirectoryNotEmpty,
                        "\(dataDirectory) is not empty; empty it or choose another data directory")
                }
                for entry in contents {
                    do { try manager.removeItem(atPath: dataDirectory + "/" + entry) } catch {
                        throw PostgresError(
                            .io, "could not remove \(dataDirectory)/\(entry) before cloning", cause: error)
                    }
                }
            }
        } else {
            do {
                try manager.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
            } catch {
                throw PostgresError(
                    .io,
                    "could not create data directory \(dataDirectory); check that its parent exists and is writable",
                    cause: error)
            }
        }
        try Posix.setOwner(dataDirectory, user: osUser, mode: 0o700)
    }
}
