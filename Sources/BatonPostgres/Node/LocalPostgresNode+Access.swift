import BatonCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `postgresql.pg_hba` and `postgresql.pg_ident`: written into pg_hba.conf and pg_ident.conf,
/// read by PostgreSQL itself before they are used, and never left in a state that locks out the
/// agent's own session. Only rules that passed that check are ever written without it.
extension LocalPostgresNode {
    /// One managed access file: where it goes, the parameter that could move it, the view that
    /// shows PostgreSQL's reading of it (PostgreSQL 15).
    struct AccessFile {
        let key: String
        let name: String
        let parameter: String
        let errorsQuery: String
    }

    static let hbaFile = AccessFile(
        key: "postgresql.pg_hba", name: "pg_hba.conf", parameter: "hba_file",
        errorsQuery: "SELECT line_number::text, error FROM pg_catalog.pg_hba_file_rules WHERE error IS NOT NULL")
    static let identFile = AccessFile(
        key: "postgresql.pg_ident", name: "pg_ident.conf", parameter: "ident_file",
        errorsQuery:
            "SELECT line_number::text, error FROM pg_catalog.pg_ident_file_mappings WHERE error IS NOT NULL")

    /// How long PostgreSQL may take to show that it read its files after a SIGHUP.
    static let reloadDeadline: Duration = .seconds(3)

    /// Where `file` lives when Baton may write it; nil when the operator pointed PostgreSQL
    /// elsewhere (`hba_file`/`ident_file` in the parameters), as Patroni then leaves it alone.
    func managedPath(_ file: AccessFile) -> String? {
        let standard = dataDirectory + "/" + file.name
        var effective = configuration
        effective.parameters = parameters
        let configured = ManagedFiles.parameters(
            effective, cluster: state.withLock { $0.acceptedClusterParameters })[file.parameter]
        guard configured == nil || configured == standard else { return nil }
        return standard
    }

    /// The files `rules` write: (file, path, text) for each list given whose file Baton manages.
    func accessFiles(_ rules: AccessRules, source: String) -> [(file: AccessFile, path: String, text: String)] {
        [(Self.hbaFile, rules.hba), (Self.identFile, rules.ident)].compactMap { file, lines in
            guard let lines, let path = managedPath(file) else { return nil }
            return (file, path, AccessRules.fileText(lines, key: file.key, source: source))
        }
    }

    /// Puts `rules` in force while postgres runs: both files are written, PostgreSQL reads them
    /// (`pg_hba_file_rules`, `pg_ident_file_mappings`), one SIGHUP, then a new session of the
    /// agent must get in and see the reload; on any failure both files are put back (and
    /// reloaded). Returns what was refused (the previous files stay in force), empty when the
    /// rules are in force; nil when postgres does not run (nothing written: asked again later;
    /// a start writes only rules checked before).
    public func applyAccessRules(_ rules: AccessRules, source: String) async throws -> [String]? {
        guard Posix.fileExists(dataDirectory + "/PG_VERSION"), let postmaster = adoptIfRunning() else { return nil }
        let checked = state.withLock { $0.checkedAccessRules }
        let files = accessFiles(rules, source: source)
        // Rules already in force (and on disk as written): nothing to do.
        let onDisk = files.allSatisfy { (try? Posix.readBytes($0.path)) == Array($0.text.utf8) }
        if rules == checked, onDisk { return [] }
        guard
            state.withLock({ state -> Bool in
                defer { state.accessCheckRunning = true }
                return !state.accessCheckRunning
            })
        else { throw PostgresError(.commandFailed, "another check of pg_hba/pg_ident is running; tried again later") }
        defer { state.withLock { $0.accessCheckRunning = false } }

        // The bytes to put back: a file that cannot be read is never mistaken for "none".
        let previous = try files.map { try Posix.readBytes($0.path) }
        func restore(reload: Bool) throws {
            for (index, entry) in files.enumerated() {
                if let bytes = previous[index] {
                    try Posix.writeFile(entry.path, bytes: bytes, user: osUser, mode: 0o600)
                } else {
                    unlink(entry.path)
                }
            }
            if reload { postmaster.send(SIGHUP) }
        }
        let loadedBefore = try await freshSessionQuery("SELECT pg_catalog.pg_conf_load_time()::text")
        do {
            for entry in files { try Posix.writeFile(entry.path, contents: entry.text, user: osUser, mode: 0o600) }
            var refused: [String] = []
            for entry in files {
                let errors = try await execute(entry.file.errorsQuery).rows.map { row in
                    "line \(((try? row.string("line_number")) ?? nil) ?? "?"): \(((try? row.string("error")) ?? nil) ?? "?")"
                }
                if !errors.isEmpty {
                    refused.append(
                        "\(entry.file.key): PostgreSQL refuses the new \(entry.file.name) (\(errors.joined(separator: "; "))); "
                            + "the previous files stay in force")
                }
            }
            if !refused.isEmpty {
                try restore(reload: false)
                return refused
            }
        } catch {
            try restore(reload: false)
            throw error
        }
        postmaster.send(SIGHUP)
        // A new session shows the postmaster's load time: moved means reloaded, and getting in
        // means the new rules admit the agent. Not confirmed within the deadline is a failure.
        let deadline = ContinuousClock.now + Self.reloadDeadline
        var lastProblem = "PostgreSQL did not show a reload within \(Self.reloadDeadline)"
        while ContinuousClock.now < deadline {
            do {
                let loaded = try await freshSessionQuery(
                    "SELECT pg_catalog.pg_conf_load_time()::text", connectTimeout: .seconds(1))
                if loaded != loadedBefore {
                    state.withLock {
                        $0.checkedAccessRules = rules
                        $0.checkedAccessSource = source
                    }
                    logger.info(
                        "pg_hba.conf/pg_ident.conf written from the \(source) and reloaded",
                        metadata: ["pg.rules": "\(rules)", "pg.pid": "\(postmaster.pid)"])
                    return []
                }
            } catch let error as PostgresError where error.code == .authenticationFailed {
                lastProblem =
                    "the new rules refuse the agent's own connection (\(configuration.superuser.username)@"
                    + "\(configuration.localAddress):\(configuration.port)): \(error); add a line admitting it"
                break
            } catch {
                lastProblem = "the agent could not open a session after the reload: \(error)"
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        try restore(reload: true)
        return ["postgresql.pg_hba/pg_ident: \(lastProblem); the previous files stay in force"]
    }

    /// `sql`'s first value on a new session (a new backend reads the postmaster's configuration
    /// as it is now), closed after; throws when the agent cannot connect.
    @discardableResult
    func freshSessionQuery(_ sql: String, connectTimeout: Duration? = nil) async throws -> String? {
        var parameters = configuration.localConnection
        if let connectTimeout { parameters.connectTimeout = connectTimeout }
        let connection = try await PostgresConnection.connect(parameters)
        do {
            let value = try await connection.query(sql, []).rows.first?.values.first ?? nil
            await connection.close()
            return value
        } catch {
            await connection.close()
            throw error
        }
    }

    /// Before a start or a reload: the rules last checked by PostgreSQL are written again (a
    /// clone brings its source's files, an operator may have edited them); unchecked ones never
    /// are, and nothing is written while a check runs (its candidates are on disk).
    func writeAccessFiles() throws {
        let (rules, source, running) = state.withLock {
            ($0.checkedAccessRules, $0.checkedAccessSource, $0.accessCheckRunning)
        }
        guard !running else { return }
        for entry in accessFiles(rules, source: source) where Posix.readFile(entry.path) != entry.text {
            try Posix.writeFile(entry.path, contents: entry.text, user: osUser, mode: 0o600)
        }
    }
}
