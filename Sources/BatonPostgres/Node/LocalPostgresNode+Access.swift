import BatonCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `postgresql.pg_hba` and `postgresql.pg_ident`: written into pg_hba.conf and pg_ident.conf,
/// checked by PostgreSQL itself before they are used, and never left in a state that locks out
/// the agent's own session.
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

    /// Where `file` lives when Baton may write it; nil when the operator pointed PostgreSQL
    /// elsewhere (`hba_file`/`ident_file` in the parameters), as Patroni then leaves it alone.
    func managedPath(_ file: AccessFile) -> String? {
        let standard = dataDirectory + "/" + file.name
        let configured = ManagedFiles.parameters(
            {
                var copy = configuration
                copy.parameters = parameters
                return copy
            }(),
            cluster: state.withLock { $0.acceptedClusterParameters })[file.parameter]
        guard configured == nil || configured == standard else { return nil }
        return standard
    }

    /// Puts `rules` in force (`source`: "local configuration" or "config key"). Before a data
    /// directory exists, or while postgres is down, they are only remembered and written at the
    /// next start. While it runs, each changed file is written, read back by PostgreSQL
    /// (`pg_hba_file_rules`, `pg_ident_file_mappings`), reloaded only when it reports no error,
    /// and restored when the agent's own session can no longer connect. Returns what was refused
    /// (the previous file stays in force), empty when everything is in force.
    public func applyAccessRules(_ rules: AccessRules, source: String) async throws -> [String] {
        state.withLock {
            $0.accessRules = rules
            $0.accessSource = source
        }
        guard Posix.fileExists(dataDirectory + "/PG_VERSION"), let postmaster = adoptIfRunning() else { return [] }
        var refused: [String] = []
        for (file, lines) in [(Self.hbaFile, rules.hba), (Self.identFile, rules.ident)] {
            guard let lines, let path = managedPath(file) else { continue }
            let text = AccessRules.fileText(lines, key: file.key, source: source)
            let previous = Posix.readFile(path)
            guard previous != text else { continue }
            try Posix.writeFile(path, contents: text, user: osUser, mode: 0o600)
            do {
                let errors = try await execute(file.errorsQuery).rows.map { row in
                    "line \(((try? row.string("line_number")) ?? nil) ?? "?"): \(((try? row.string("error")) ?? nil) ?? "?")"
                }
                if !errors.isEmpty {
                    try restore(path, previous)
                    refused.append(
                        "\(file.key): PostgreSQL refuses the new \(file.name) (\(errors.joined(separator: "; "))); "
                            + "the previous file stays in force")
                    continue
                }
            } catch {
                try restore(path, previous)
                throw error
            }
            postmaster.send(SIGHUP)
            // The agent's own session must still get in: a fresh connection, as after a restart.
            do {
                try await reloadSettled()
                try await freshSessionQuery("SELECT 1")
            } catch {
                try restore(path, previous)
                postmaster.send(SIGHUP)
                refused.append(
                    "\(file.key): the new \(file.name) refuses the agent's own connection "
                        + "(\(configuration.superuser.username)@\(configuration.localAddress):\(configuration.port)): "
                        + "\(error); add a line admitting it; the previous file stays in force")
                continue
            }
            logger.info(
                "\(file.name) written from \(file.key) (\(source)) and reloaded",
                metadata: ["pg.lines": "\(lines.count)", "pg.pid": "\(postmaster.pid)"])
        }
        return refused
    }

    /// Waits until the postmaster has read its files after a SIGHUP: a new session's
    /// `pg_conf_load_time()` moves (bounded to 1 s; a reload that takes longer is checked anyway).
    private func reloadSettled() async throws {
        let before = try? await execute("SELECT pg_catalog.pg_conf_load_time()::text").rows.first?.values.first
        for _ in 0..<20 {
            try await Task.sleep(for: .milliseconds(50))
            if let now = try? await freshSessionQuery("SELECT pg_catalog.pg_conf_load_time()::text"), now != before {
                return
            }
        }
    }

    /// `sql`'s first value on a new session (a new backend reads the postmaster's configuration
    /// as it is now), closed after; throws when the agent cannot connect.
    @discardableResult
    func freshSessionQuery(_ sql: String) async throws -> String? {
        let connection = try await PostgresConnection.connect(configuration.localConnection)
        do {
            let value = try await connection.query(sql, []).rows.first?.values.first ?? nil
            await connection.close()
            return value
        } catch {
            await connection.close()
            throw error
        }
    }

    private func restore(_ path: String, _ previous: String?) throws {
        if let previous {
            try Posix.writeFile(path, contents: previous, user: osUser, mode: 0o600)
        } else {
            unlink(path)
        }
    }

    /// Before a start: the remembered rules are written as they are (checked by shape when they
    /// were given; PostgreSQL reads them at start-up).
    func writeAccessFiles() throws {
        let (rules, source) = state.withLock { ($0.accessRules, $0.accessSource) }
        for (file, lines) in [(Self.hbaFile, rules.hba), (Self.identFile, rules.ident)] {
            guard let lines, let path = managedPath(file) else { continue }
            let text = AccessRules.fileText(lines, key: file.key, source: source)
            if Posix.readFile(path) != text { try Posix.writeFile(path, contents: text, user: osUser, mode: 0o600) }
        }
    }
}
