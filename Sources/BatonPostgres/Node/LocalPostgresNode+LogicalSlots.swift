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
                   catalog_xmin::text AS catalog_xmin
            FROM pg_catalog.pg_replication_slots WHERE slot_type = 'logical'
            """)
        var slots: [String: LogicalSlot] = [:]
        for row in result.rows {
            guard let name = try row.string("slot_name") else { continue }
            slots[name] = LogicalSlot(
                database: try row.string("database") ?? "", plugin: try row.string("plugin") ?? "",
                active: try row.bool("active") ?? true,
                confirmedFlush: try row.string("confirmed").flatMap(LSN.init(text:)),
                catalogXmin: try row.string("catalog_xmin").flatMap(TransactionID.init(text:)))
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
    @discardableResult
    public func advanceLogicalSlots(_ advances: [String: LogicalSlotAdvance]) async -> [String] {
        var unusable: [String] = []
        let byDatabase = Dictionary(grouping: advances.sorted { $0.key < $1.key }, by: { $0.value.database })
        for (database, slots) in byDatabase.sorted(by: { $0.key < $1.key }) {
            do {
                try await inDatabase(database, statementTimeout: configuration.cloneTimeout) { connection in
                    for (name, advance) in slots {
                        do {
                            let moved = try await connection.query(
                                """
                                SELECT pg_catalog.pg_replication_slot_advance(slot_name, $2::pg_lsn)
                                FROM pg_catalog.pg_replication_slots
                                WHERE slot_name = $1 AND slot_type = 'logical' AND NOT active
                                  AND confirmed_flush_lsn < $2::pg_lsn
                                """, [name, advance.lsn.description])
                            if !moved.rows.isEmpty {
                                logger.debug(
                                    "logical replication slot advanced",
                                    metadata: ["pg.slot": "\(name)", "pg.lsn": "\(advance.lsn)"])
                            }
                        } catch {
                            if let state = (error as? PostgresError)?.sqlState, state == "58P01" || state == "55000" {
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

    /// The oldest WAL position this server still has in pg_wal (the start of its oldest segment).
    func oldestLocalWAL() async throws -> LSN? {
        let result = try await execute(
            """
            SELECT min(name) AS segment, pg_catalog.current_setting('wal_segment_size') AS size
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
            return UInt64(setting.dropLast(unit.count)).map { $0 * factor }
        }
        return UInt64(setting)
    }

    /// Where WAL segment file `name` (timeline, log, segment: 8 hex digits each) starts.
    static func segmentStart(_ name: String, segmentSize: UInt64) -> LSN? {
        let characters = Array(name)
        guard characters.count == 24, segmentSize > 0, segmentSize <= 1 << 32,
            let log = UInt64(String(characters[8..<16]), radix: 16),
            let segment = UInt64(String(characters[16..<24]), radix: 16)
        else { return nil }
        let perLog = (UInt64(1) << 32) / segmentSize
        return LSN((log * perLog + segment) * segmentSize)
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
    /// slot's state file, read there with `pg_read_binary_file`, checked (kind, database, plugin
    /// as configured; PostgreSQL's magic number and CRC-32C), then written while postgres is
    /// stopped; postgres starts again following its upstream. A slot that does not check out is
    /// skipped and logged. Returns the slots copied; nothing is stopped when none checks out.
    public func copyLogicalSlots(_ slots: [PermanentSlot], from source: ReplicationSource) async throws -> [String] {
        let wanted = Dictionary(uniqueKeysWithValues: slots.map { ($0.name, $0) })
        // A copy is usable only if this server still has the WAL it starts from.
        let oldest = try await oldestLocalWAL()
        let states: [String: [UInt8]] = try await onSource(source) { connection in
            let result = try await connection.query(
                """
                SELECT s.slot_name, s.slot_type, d.datname AS database, s.plugin, s.restart_lsn::text AS restart,
                       pg_catalog.pg_is_in_recovery() AS recovery,
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
                let restart = try row.string("restart").flatMap(LSN.init(text:))
                guard let restart, let oldest, restart >= oldest else {
                    logger.debug(
                        "logical slot not copied yet: it starts from WAL this replica lacks; copied once its consumer moves it",
                        metadata: [
                            "pg.slot": "\(name)", "pg.restart_lsn": "\(restart.map { "\($0)" } ?? "-")",
                            "pg.oldest_wal": "\(oldest.map { "\($0)" } ?? "unknown")",
                        ])
                    continue
                }
                let bytes = try row.string("state").flatMap(Self.bytes(hex:))
                if let problem = bytes.map({ SlotStateFile.problem($0, name: name) }) ?? "unreadable" {
                    logger.warning(
                        "logical slot not copied: its state file on the leader does not check out",
                        metadata: ["pg.slot": "\(name)", "pg.problem": "\(problem)"])
                    continue
                }
                guard let bytes else { continue }
                states[name] = bytes
            }
            return states
        }
        guard !states.isEmpty else { return [] }
        let upstream = state.withLock { $0.upstream }
        logger.info(
            "restarting postgres to load logical slots copied from the leader",
            metadata: ["pg.slots": "\(states.keys.sorted().joined(separator: ","))", "pg.leader": "\(source.member)"])
        try await stop(mode: .fast, timeout: configuration.startTimeout)
        var copied: [String] = []
        var failure: (any Error)?
        for (name, bytes) in states.sorted(by: { $0.key < $1.key }) {
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

    /// Writes `pg_replslot/<name>/state` as PostgreSQL does: a `<name>.tmp` directory (which
    /// PostgreSQL removes at start if left behind), the file, then a rename. A `<name>`
    /// directory already there is not touched: the slot is skipped.
    private func installSlotState(name: String, bytes: [UInt8]) throws {
        let slots = dataDirectory + "/pg_replslot"
        let final = slots + "/" + name
        let temporary = final + ".tmp"
        var info = stat()
        if lstat(final, &info) == 0 {
            throw PostgresError(.io, "\(final) already exists: not replaced")
        }
        if lstat(temporary, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFDIR else {
                throw PostgresError(.io, "\(temporary) is not a directory: not replaced")
            }
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: temporary)) ?? [] {
                unlink(temporary + "/" + entry)
            }
            guard rmdir(temporary) == 0 else {
                throw PostgresError(
                    .io, "could not remove \(temporary)", cause: SystemCallError(call: "rmdir", errno: errno))
            }
        }
        guard mkdir(temporary, 0o700) == 0 else {
            throw PostgresError(
                .io, "could not create \(temporary)", cause: SystemCallError(call: "mkdir", errno: errno))
        }
        try Posix.setOwner(temporary, user: osUser, mode: 0o700)
        try Posix.writeFile(temporary + "/state", bytes: bytes, user: osUser, mode: 0o600)
        try Self.fsyncDirectory(temporary)
        guard rename(temporary, final) == 0 else {
            throw PostgresError(
                .io, "could not rename \(temporary) to \(final)", cause: SystemCallError(call: "rename", errno: errno))
        }
        try Self.fsyncDirectory(slots)
    }

    private static func fsyncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            throw PostgresError(.io, "could not open \(path)", cause: SystemCallError(call: "open", errno: errno))
        }
        defer { close(fd) }
        guard fsync(fd) == 0 else {
            throw PostgresError(.io, "could not fsync \(path)", cause: SystemCallError(call: "fsync", errno: errno))
        }
    }

    /// A short superuser session on the local server in `database`.
    @discardableResult
    func inDatabase<T: Sendable>(
        _ database: String, statementTimeout: Duration? = nil, _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        var parameters = configuration.localConnection
        parameters.database = database
        if let statementTimeout { parameters.statementTimeout = statementTimeout }
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

    /// A short superuser session on `source` (the leader).
    func onSource<T: Sendable>(
        _ source: ReplicationSource, _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        let parameters = ConnectionParameters(
            host: source.host, port: source.port, user: configuration.superuser.username,
            password: configuration.superuser.password, database: "postgres",
            applicationName: "baton-\(configuration.memberName)-slots", connectTimeout: configuration.connectTimeout,
            statementTimeout: configuration.statementTimeout)
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

    /// What is wrong with `bytes` as the state file of slot `name`; nil when it checks out.
    public static func problem(_ bytes: [UInt8], name: String) -> String? {
        guard bytes.count >= 16 + 64, bytes.count <= maximumSize else { return "size \(bytes.count)" }
        func word(_ offset: Int) -> UInt32 {
            UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16
                | UInt32(bytes[offset + 3]) << 24
        }
        guard word(0) == magic else { return "magic number" }
        guard word(4) == CRC32C.checksum(bytes[8...]) else { return "checksum" }
        // The slot's name (NameData, 64 bytes, NUL-padded) opens its data after the 16-byte header.
        let stored = bytes[16..<(16 + 64)].prefix { $0 != 0 }
        guard Array(stored) == Array(name.utf8) else { return "slot name" }
        return nil
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
