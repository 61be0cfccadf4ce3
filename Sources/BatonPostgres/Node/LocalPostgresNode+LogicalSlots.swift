import BatonCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Permanent logical slots: created on the primary, copied to replicas (their state file, read
/// from the leader with `pg_read_binary_file`) and advanced there (`LogicalSlots`).
extension LocalPostgresNode {
    /// The logical replication slots on this server, by name.
    public func logicalReplicationSlots() async throws -> [String: LogicalSlot] {
        let result = try await execute(
            """
            SELECT slot_name, database, plugin, active, confirmed_flush_lsn::text AS confirmed,
                   catalog_xmin::text AS catalog_xmin, wal_status = 'lost' AS lost
            FROM pg_catalog.pg_replication_slots WHERE slot_type = 'logical'
            """)
        var slots: [String: LogicalSlot] = [:]
        for row in result.rows {
            guard let name = try row.string("slot_name") else { continue }
            slots[name] = LogicalSlot(
                database: try row.string("database") ?? "", plugin: try row.string("plugin") ?? "",
                active: try row.bool("active") ?? true,
                confirmedFlush: try row.string("confirmed").flatMap(LSN.init(text:)),
                catalogXmin: try row.string("catalog_xmin").flatMap(TransactionID.init(text:)),
                invalidated: try row.bool("lost") ?? false)
        }
        return slots
    }

    /// Each setting's `current_setting` (one not known to the server is left out).
    public func currentSettings(_ names: [String]) async throws -> [String: String] {
        let result = try await execute(
            "SELECT name, setting FROM pg_catalog.pg_settings WHERE name = ANY($1::text[])",
            [Self.textArray(names)])
        var settings: [String: String] = [:]
        for row in result.rows {
            if let name = try row.string("name"), let value = try row.string("setting") { settings[name] = value }
        }
        return settings
    }

    /// Creates logical slots (each in its database, with its plugin) and drops inactive ones.
    /// Each slot on its own: a failure is logged and the others go on.
    @discardableResult
    public func applyLogicalSlots(
        create: [PermanentSlot], drop: [String]
    ) async throws -> (created: [String], dropped: [String]) {
        var result: (created: [String], dropped: [String]) = ([], [])
        for name in drop {
            let sql = """
                SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots
                WHERE slot_name = $1 AND slot_type = 'logical' AND NOT active
                """
            do {
                if try await !execute(sql, [name]).rows.isEmpty {
                    result.dropped.append(name)
                    logger.info("logical replication slot dropped", metadata: ["pg.slot": "\(name)"])
                }
            } catch {
                logger.warning(
                    "could not drop logical replication slot", metadata: ["pg.slot": "\(name)", "error": "\(error)"])
            }
        }
        for slot in create {
            guard case .logical(let database, let plugin) = slot.kind else { continue }
            do {
                let created = try await inDatabase(database) { connection in
                    try await connection.query(
                        """
                        SELECT pg_catalog.pg_create_logical_replication_slot($1, $2)
                        WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1)
                        """, [slot.name, plugin])
                }
                if !created.rows.isEmpty {
                    result.created.append(slot.name)
                    logger.info(
                        "logical replication slot created",
                        metadata: ["pg.slot": "\(slot.name)", "pg.database": "\(database)", "pg.plugin": "\(plugin)"])
                }
            } catch {
                logger.warning(
                    "could not create logical replication slot",
                    metadata: [
                        "pg.slot": "\(slot.name)", "pg.database": "\(database)", "pg.plugin": "\(plugin)",
                        "error": "\(error)",
                    ])
            }
        }
        return result
    }

    /// Advances logical slots on this replica, each in its database (PostgreSQL stops at what
    /// was replayed). Only inactive slots still behind their position; failures are logged.
    /// Returns the slots that cannot be advanced at all: the WAL they start from is gone here
    /// (SQLSTATE 58P01) or the slot was invalidated (55000).
    ///
    /// Each call moves a slot at most `logicalAdvanceStep` bytes, within a short statement
    /// timeout: decoding a long stretch of WAL must not hold the HA loop (a replica that does not
    /// cycle takes no part in a failover); the next cycle goes on from there.
    @discardableResult
    public func advanceLogicalSlots(_ advances: [String: LogicalSlotAdvance]) async -> [String] {
        var unusable: [String] = []
        let byDatabase = Dictionary(grouping: advances.sorted { $0.key < $1.key }, by: { $0.value.database })
        for (database, slots) in byDatabase.sorted(by: { $0.key < $1.key }) {
            do {
                try await inDatabase(database, statementTimeout: .seconds(10)) { connection in
                    for (name, advance) in slots {
                        do {
                            let moved = try await connection.query(
                                """
                                SELECT pg_catalog.pg_replication_slot_advance(slot_name,
                                         LEAST($2::pg_lsn, confirmed_flush_lsn + $3::numeric))
                                FROM pg_catalog.pg_replication_slots
                                WHERE slot_name = $1 AND slot_type = 'logical' AND NOT active
                                  AND confirmed_flush_lsn < $2::pg_lsn
                                """, [name, advance.lsn.description, String(Self.logicalAdvanceStep)])
                            if !moved.rows.isEmpty {
                                logger.debug(
                                    "logical replication slot advanced",
                                    metadata: ["pg.slot": "\(name)", "pg.lsn": "\(advance.lsn)"])
                            }
                        } catch {
                            if let state = (error as? PostgresError)?.sqlState,
                                ["58P01", "55000", "0A000"].contains(state)
                            {
                                unusable.append(name)
                            }
                            logger.warning(
                                "could not advance logical replication slot",
                                metadata: ["pg.slot": "\(name)", "pg.lsn": "\(advance.lsn)", "error": "\(error)"])
                        }
                    }
                }
            } catch {
                logger.warning(
                    "could not advance logical replication slots",
                    metadata: ["pg.database": "\(database)", "error": "\(error)"])
            }
        }
        return unusable
    }

    /// The most one call of `advanceLogicalSlots` moves a slot (256 MiB of WAL to decode).
    static let logicalAdvanceStep: UInt64 = 256 << 20

    /// The oldest WAL position this server still has in pg_wal (the start of its oldest segment).
    func oldestLocalWAL() async throws -> LSN? {
        let result = try await execute(
            """
            SELECT '00000001' || min(substr(name, 9)) AS segment,
                   pg_catalog.current_setting('wal_segment_size') AS size
            FROM pg_catalog.pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'
            """)
        guard let row = result.rows.first, let segment = try row.string("segment"),
            let size = try row.string("size").flatMap(Self.bytes(setting:)), size > 0
        else { return nil }
        return Self.segmentStart(segment, segmentSize: size)
    }

    /// `16MB` → 16,777,216 (`wal_segment_size` as `current_setting` shows it).
    static func bytes(setting: String) -> UInt64? {
        let units: [(String, UInt64)] = [("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10), ("B", 1)]
        for (unit, factor) in units where setting.hasSuffix(unit) {
            guard let number = UInt64(setting.dropLast(unit.count)) else { return nil }
            let (bytes, overflow) = number.multipliedReportingOverflow(by: factor)
            return overflow ? nil : bytes
        }
        return UInt64(setting)
    }

    /// Where WAL segment file `name` (timeline, log, segment: 8 hex digits each) starts.
    static func segmentStart(_ name: String, segmentSize: UInt64) -> LSN? {
        let characters = Array(name)
        // A file planted in pg_wal must not make this trap: every step is checked.
        guard characters.count == 24, segmentSize > 0, segmentSize <= 1 << 32, segmentSize.nonzeroBitCount == 1,
            let log = UInt64(String(characters[8..<16]), radix: 16),
            let segment = UInt64(String(characters[16..<24]), radix: 16)
        else { return nil }
        let perLog = (UInt64(1) << 32) / segmentSize
        guard segment < perLog else { return nil }
        let (base, overflow) = log.multipliedReportingOverflow(by: perLog)
        guard !overflow else { return nil }
        let (start, overflowAgain) = (base + segment).multipliedReportingOverflow(by: segmentSize)
        return overflowAgain ? nil : LSN(start)
    }

    /// The `catalog_xmin` of the named slots on `source` (the leader); a slot there without one
    /// maps to nil, one not there is left out. Throws when `source` is in recovery.
    public func slotCatalogXmins(_ names: [String], on source: ReplicationSource) async throws -> [String:
        TransactionID?]
    {
        try await onSource(source) { connection in
            let result = try await connection.query(
                """
                SELECT slot_name, catalog_xmin::text AS catalog_xmin, pg_catalog.pg_is_in_recovery() AS recovery
                FROM pg_catalog.pg_replication_slots WHERE slot_name = ANY($1::text[])
                """, [Self.textArray(names)])
            var xmins: [String: TransactionID?] = [:]
            for row in result.rows {
                guard try row.bool("recovery") == false else {
                    throw PostgresError(.unexpectedResult, "\(source.member) is in recovery: not the primary")
                }
                guard let name = try row.string("slot_name") else { continue }
                xmins[name] = .some(try row.string("catalog_xmin").flatMap(TransactionID.init(text:)))
            }
            return xmins
        }
    }

    /// Copies logical slots from `source` (the leader) into this replica's data directory: each
    /// slot's state file, read there with `pg_read_binary_file`, checked (same system identifier
    /// as this server; kind, database and plugin as configured; PostgreSQL's layout, magic number
    /// and CRC-32C; a persistent slot starting from WAL this replica has), then written while
    /// postgres is stopped; postgres starts again following its upstream. A slot that does not
    /// check out, or whose directory is already there, is skipped and logged before anything is
    /// stopped. Returns the slots copied; nothing is stopped when none checks out.
    public func copyLogicalSlots(_ slots: [PermanentSlot], from source: ReplicationSource) async throws -> [String] {
        let wanted = Dictionary(slots.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        // A copy is usable only if this server still has the WAL it starts from.
        let oldest = try await oldestLocalWAL()
        let localSystem = try await systemIdentifier()
        let states: [String: [UInt8]] = try await onSource(source) { connection in
            let result = try await connection.query(
                """
                SELECT s.slot_name, s.slot_type, d.datname AS database, s.plugin,
                       pg_catalog.pg_is_in_recovery() AS recovery,
                       (SELECT system_identifier::text FROM pg_catalog.pg_control_system()) AS system_id,
                       pg_catalog.encode(pg_catalog.pg_read_binary_file('pg_replslot/' || s.slot_name || '/state'), 'hex')
                         AS state
                FROM pg_catalog.pg_replication_slots s JOIN pg_catalog.pg_database d ON d.oid = s.datoid
                WHERE s.slot_name = ANY($1::text[])
                """, [Self.textArray(slots.map(\.name))])
            var states: [String: [UInt8]] = [:]
            for row in result.rows {
                guard try row.bool("recovery") == false else {
                    throw PostgresError(.unexpectedResult, "\(source.member) is in recovery: not the primary")
                }
                // Another cluster's server (a leader key naming a stale or foreign address):
                // nothing of it is copied here.
                guard let theirs = try row.string("system_id"), theirs == localSystem else {
                    throw PostgresError(
                        .unexpectedResult,
                        "\(source.member) at \(source.host):\(source.port) has another system identifier than this server"
                    )
                }
                guard let name = try row.string("slot_name"), let slot = wanted[name],
                    case .logical(let database, let plugin) = slot.kind
                else { continue }
                let found = (try row.string("slot_type"), try row.string("database"), try row.string("plugin"))
                guard found.0 == "logical", found.1 == database, found.2 == plugin else {
                    logger.warning(
                        "logical slot not copied: on the leader it is not as configured",
                        metadata: [
                            "pg.slot": "\(name)",
                            "pg.leader_slot": "\(found.0 ?? "?") database=\(found.1 ?? "?") plugin=\(found.2 ?? "?")",
                        ])
                    continue
                }
                let bytes = try row.string("state").flatMap(Self.bytes(hex:))
                guard let bytes, SlotStateFile.problem(bytes, name: name, plugin: plugin) == nil,
                    let restart = SlotStateFile.restartLSN(bytes)
                else {
                    logger.warning(
                        "logical slot not copied: its state file on the leader does not check out",
                        metadata: [
                            "pg.slot": "\(name)",
                            "pg.problem":
                                "\(bytes.map { SlotStateFile.problem($0, name: name, plugin: plugin) ?? "no restart_lsn" } ?? "unreadable")",
                        ])
                    continue
                }
                guard let oldest, restart >= oldest else {
                    logger.debug(
                        "logical slot not copied yet: it starts from WAL this replica lacks; copied once its consumer moves it",
                        metadata: [
                            "pg.slot": "\(name)", "pg.restart_lsn": "\(restart)",
                            "pg.oldest_wal": "\(oldest.map { "\($0)" } ?? "unknown")",
                        ])
                    continue
                }
                states[name] = bytes
            }
            return states
        }
        // Checked before postgres is stopped: a slot that could not be written is not worth a restart.
        let writable = states.filter { name, _ in
            let clear = slotDirectoryIsFree(name)
            if !clear {
                logger.warning(
                    "logical slot not copied: pg_replslot/\(name) or pg_replslot/\(name).tmp is already there",
                    metadata: ["pg.slot": "\(name)"])
            }
            return clear
        }
        guard !writable.isEmpty else { return [] }
        let upstream = state.withLock { $0.upstream }
        logger.info(
            "restarting postgres to load logical slots copied from the leader",
            metadata: ["pg.slots": "\(writable.keys.sorted().joined(separator: ","))", "pg.leader": "\(source.member)"])
        try await stop(mode: .fast, timeout: configuration.startTimeout)
        var copied: [String] = []
        var failure: (any Error)?
        for (name, bytes) in writable.sorted(by: { $0.key < $1.key }) {
            do {
                try installSlotState(name: name, bytes: bytes)
                copied.append(name)
            } catch {
                failure = error
                logger.warning(
                    "could not write a copied logical slot", metadata: ["pg.slot": "\(name)", "error": "\(error)"])
            }
        }
        try await start(following: upstream)
        if copied.isEmpty, let failure { throw failure }
        return copied
    }

    /// Neither `pg_replslot/<name>` nor `<name>.tmp` exists (a link counts as existing).
    private func slotDirectoryIsFree(_ name: String) -> Bool {
        var info = stat()
        let base = dataDirectory + "/pg_replslot/" + name
        return lstat(base, &info) != 0 && errno == ENOENT && lstat(base + ".tmp", &info) != 0 && errno == ENOENT
    }

    /// Writes `pg_replslot/<name>/state` as PostgreSQL does: a `<name>.tmp` directory, the file,
    /// a rename. The agent runs as root in a directory the postgres user owns: every step goes
    /// through descriptors (`mkdirat`, `openat` with `O_NOFOLLOW`, `fchown`, `renameat`) so that
    /// nothing planted there (a link, a directory swapped in) makes root follow it; nothing
    /// already there is removed (PostgreSQL removes `*.tmp` slot directories at start).
    private func installSlotState(name: String, bytes: [UInt8]) throws {
        let slotsPath = dataDirectory + "/pg_replslot"
        func failure(_ call: String, _ what: String) -> PostgresError {
            PostgresError(.io, "could not \(what)", cause: SystemCallError(call: call, errno: errno))
        }
        let slots = open(slotsPath, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard slots >= 0 else { throw failure("open", "open \(slotsPath)") }
        defer { close(slots) }
        let temporary = name + ".tmp"
        guard mkdirat(slots, temporary, 0o700) == 0 else {
            throw failure("mkdirat", "create \(slotsPath)/\(temporary)")
        }
        let directory = openat(slots, temporary, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard directory >= 0 else { throw failure("openat", "open \(slotsPath)/\(temporary)") }
        defer { close(directory) }
        // The directory this agent just made, not one swapped in meanwhile.
        var info = stat()
        guard fstat(directory, &info) == 0, info.st_uid == geteuid() else {
            throw PostgresError(.io, "\(slotsPath)/\(temporary) changed under the agent: not written")
        }
        if geteuid() == 0, fchown(directory, osUser.uid, osUser.gid) != 0 {
            throw failure("fchown", "chown \(slotsPath)/\(temporary)")
        }
        guard fchmod(directory, 0o700) == 0 else { throw failure("fchmod", "chmod \(slotsPath)/\(temporary)") }
        let file = openat(directory, "state", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard file >= 0 else { throw failure("openat", "create \(slotsPath)/\(temporary)/state") }
        var problem: PostgresError?
        var offset = 0
        while offset < bytes.count, problem == nil {
            let written = bytes[offset...].withUnsafeBytes { write(file, $0.baseAddress, $0.count) }
            if written < 0, errno != EINTR { problem = failure("write", "write \(slotsPath)/\(temporary)/state") }
            if written > 0 { offset += written }
        }
        if problem == nil, geteuid() == 0, fchown(file, osUser.uid, osUser.gid) != 0 {
            problem = failure("fchown", "chown \(slotsPath)/\(temporary)/state")
        }
        if problem == nil, fsync(file) != 0 { problem = failure("fsync", "fsync \(slotsPath)/\(temporary)/state") }
        close(file)
        if let problem { throw problem }
        guard fsync(directory) == 0 else { throw failure("fsync", "fsync \(slotsPath)/\(temporary)") }
        guard renameat(slots, temporary, slots, name) == 0 else {
            throw failure("renameat", "rename \(slotsPath)/\(temporary) to \(name)")
        }
        guard fsync(slots) == 0 else { throw failure("fsync", "fsync \(slotsPath)") }
    }

    /// A short superuser session on the local server in `database`.
    @discardableResult
    func inDatabase<T: Sendable>(
        _ database: String, statementTimeout: Duration? = nil, _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        var parameters = configuration.localConnection
        parameters.database = database
        if let statementTimeout { parameters.statementTimeout = statementTimeout }
        return try await Self.withConnection(parameters, body)
    }

    /// A short superuser session on `source` (the leader).
    func onSource<T: Sendable>(
        _ source: ReplicationSource, _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        // libpq takes an empty host for the local socket: never for a source without a server.
        guard source.hasServer else {
            throw PostgresError(.connectionFailed, "\(source.member) has no server to connect to")
        }
        let parameters = ConnectionParameters(
            host: source.host, port: source.port, user: configuration.superuser.username,
            password: configuration.superuser.password, database: "postgres",
            applicationName: "baton-\(configuration.memberName)-slots", connectTimeout: configuration.connectTimeout,
            statementTimeout: configuration.statementTimeout)
        return try await Self.withConnection(parameters, body)
    }

    /// A connection for `body`, closed after it whatever happens.
    static func withConnection<T: Sendable>(
        _ parameters: ConnectionParameters, _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        let connection = try await PostgresConnection.connect(parameters)
        do {
            let value = try await body(connection)
            await connection.close()
            return value
        } catch {
            await connection.close()
            throw error
        }
    }

    /// A text[] literal of slot or setting names (each `[a-z0-9_]`, checked by the caller's
    /// types; anything else is quoted).
    static func textArray(_ names: [String]) -> String {
        "{"
            + names.map {
                "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                    + "\""
            }
            .joined(separator: ",") + "}"
    }

    static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0, digits.count <= 2 * SlotStateFile.maximumSize else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            default: nil
            }
        }
        var index = 0
        while index < digits.count {
            guard let high = value(digits[index]), let low = value(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }
}

/// PostgreSQL's replication slot state file (`ReplicationSlotOnDisk`): a magic number, a CRC-32C
/// of the rest from the version on, the version, the length, the slot's data (its name first).
/// PostgreSQL stops with PANIC at start on a file that does not check out, so a copy is checked
/// before it is written.
public enum SlotStateFile {
    static let magic: UInt32 = 0x0105_1CA1
    static let maximumSize = 64 * 1024
    /// PostgreSQL 15's `SLOT_VERSION` and `ReplicationSlotPersistentData` layout: the name at
    /// 16, the persistency at 84 (0: persistent), `restart_lsn` at 96, the plugin at 129.
    static let version: UInt32 = 2
    static let persistencyOffset = 84
    static let restartOffset = 96
    static let pluginOffset = 129

    static func word(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16
            | UInt32(bytes[offset + 3]) << 24
    }

    static func name(_ bytes: [UInt8], at offset: Int) -> [UInt8] {
        Array(bytes[offset..<(offset + 64)].prefix { $0 != 0 })
    }

    /// What is wrong with `bytes` as the state file of logical slot `name` decoded by `plugin`;
    /// nil when it checks out.
    public static func problem(_ bytes: [UInt8], name: String, plugin: String) -> String? {
        guard bytes.count >= pluginOffset + 64, bytes.count <= maximumSize else { return "size \(bytes.count)" }
        guard word(bytes, 0) == magic else { return "magic number" }
        guard word(bytes, 4) == CRC32C.checksum(bytes[8...]) else { return "checksum" }
        guard word(bytes, 8) == version else { return "version \(word(bytes, 8)) (PostgreSQL 15 writes \(version))" }
        guard Int(word(bytes, 12)) == bytes.count - 16 else { return "length" }
        guard Self.name(bytes, at: 16) == Array(name.utf8) else { return "slot name" }
        guard word(bytes, persistencyOffset) == 0 else { return "not a persistent slot" }
        guard Self.name(bytes, at: pluginOffset) == Array(plugin.utf8) else { return "plugin" }
        return nil
    }

    /// The slot's `restart_lsn` as the file holds it; nil when it has none (never reserved WAL).
    public static func restartLSN(_ bytes: [UInt8]) -> LSN? {
        guard bytes.count >= restartOffset + 8 else { return nil }
        let value = UInt64(word(bytes, restartOffset)) | UInt64(word(bytes, restartOffset + 4)) << 32
        return value == 0 ? nil : LSN(value)
    }
}

/// CRC-32C (Castagnoli), as PostgreSQL's `pg_crc32c`.
public enum CRC32C {
    private static let table: [UInt32] = (0..<256).map { index in
        var crc = UInt32(index)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        return crc
    }

    public static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}
