import BatonCore
import Foundation
import Logging
import Testing

@testable import BatonPostgres

/// The checks a logical slot's state file passes before a replica writes it (PostgreSQL stops
/// with PANIC at start on one that does not check out).
@Suite struct SlotStateFileTests {
    @Test func crc32cMatchesTheCastagnoliCheckValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }

    /// A state file as PostgreSQL 15 lays it out (200 bytes): magic, CRC-32C of the rest, version
    /// 2, length 184, then the slot's data: name @16, database @80, persistency @84, xmin @88,
    /// catalog_xmin @92, restart_lsn @96, …, plugin @129.
    static func file(
        name: String, plugin: String = "pgoutput", version: UInt32 = 2, persistency: UInt32 = 0,
        restart: UInt64 = 0x0300_0028
    ) -> [UInt8] {
        func le(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
        func padded(_ text: String) -> [UInt8] { Array(text.utf8) + [UInt8](repeating: 0, count: 64 - text.utf8.count) }
        var data = padded(name) + le(16384) + le(persistency) + le(730) + le(731)
        data += le(UInt32(truncatingIfNeeded: restart)) + le(UInt32(truncatingIfNeeded: restart >> 32))
        data += [UInt8](repeating: 0, count: 129 - 16 - data.count) + padded(plugin)
        data += [UInt8](repeating: 0, count: 200 - 16 - data.count)
        let body = le(version) + le(184) + data
        return le(0x0105_1CA1) + le(CRC32C.checksum(body)) + body
    }

    @Test func aWellFormedFileChecksOut() {
        let file = Self.file(name: "cdc")
        #expect(file.count == 200)
        #expect(SlotStateFile.problem(file, name: "cdc", plugin: "pgoutput") == nil)
        #expect(SlotStateFile.restartLSN(file) == LSN(text: "0/3000028"))
        #expect(SlotStateFile.restartLSN(Self.file(name: "cdc", restart: 0)) == nil)
    }

    @Test func aDamagedOrForeignFileIsRefused() {
        let good = Self.file(name: "cdc")
        var flipped = good
        flipped[100] ^= 1
        #expect(SlotStateFile.problem(flipped, name: "cdc", plugin: "pgoutput") == "checksum")
        var magic = good
        magic[0] ^= 1
        #expect(SlotStateFile.problem(magic, name: "cdc", plugin: "pgoutput") == "magic number")
        #expect(SlotStateFile.problem(good, name: "cdc2", plugin: "pgoutput") == "slot name")
        #expect(SlotStateFile.problem(good, name: "cdc", plugin: "wal2json") == "plugin")
        #expect(
            SlotStateFile.problem(Self.file(name: "cdc", version: 5), name: "cdc", plugin: "pgoutput")?.hasPrefix(
                "version 5") == true)
        // A temporary or ephemeral slot's file is not one PostgreSQL keeps: never copied.
        #expect(
            SlotStateFile.problem(Self.file(name: "cdc", persistency: 1), name: "cdc", plugin: "pgoutput")
                == "not a persistent slot")
        #expect(SlotStateFile.problem(Array(good.prefix(40)), name: "cdc", plugin: "pgoutput") == "size 40")
        #expect(SlotStateFile.problem([], name: "cdc", plugin: "pgoutput") == "size 0")
    }

    /// A copy is made only when this replica still has the WAL the slot starts from: the start
    /// of its oldest segment file.
    @Test func walSegmentNamesMapToTheirStartPositions() {
        let size: UInt64 = 16 << 20
        #expect(LocalPostgresNode.segmentStart("000000010000000000000001", segmentSize: size) == LSN(text: "0/1000000"))
        #expect(
            LocalPostgresNode.segmentStart("0000000300000002000000FF", segmentSize: size) == LSN(text: "2/FF000000"))
        #expect(
            LocalPostgresNode.segmentStart("000000010000000000000001", segmentSize: 1 << 30) == LSN(text: "0/40000000"))
        #expect(LocalPostgresNode.segmentStart("00000001000000000000001", segmentSize: size) == nil)
        #expect(LocalPostgresNode.segmentStart("00000001000000000000000G", segmentSize: size) == nil)
        #expect(LocalPostgresNode.bytes(setting: "16MB") == size)
        #expect(LocalPostgresNode.bytes(setting: "1GB") == 1 << 30)
        #expect(LocalPostgresNode.bytes(setting: "8192") == 8192)
        #expect(LocalPostgresNode.bytes(setting: "x") == nil)
        // A name planted in pg_wal does not make the agent trap.
        #expect(LocalPostgresNode.segmentStart("00000000FFFFFFFFFFFFFFFF", segmentSize: size) == nil)
        #expect(
            LocalPostgresNode.segmentStart("00000001FFFFFFFF000000FF", segmentSize: size)
                == LSN(text: "FFFFFFFF/FF000000"))
        #expect(LocalPostgresNode.segmentStart("000000010000000000000001", segmentSize: 3 << 20) == nil)
        #expect(LocalPostgresNode.bytes(setting: "99999999999999999999GB") == nil)
        #expect(LocalPostgresNode.bytes(setting: "17179869184GB") == nil)
    }
}

/// A recovery target left in postgresql.auto.conf (by a backup tool's restore, `pg_basebackup
/// -R`, ALTER SYSTEM) would promote a standby without the leader key: removed before every start.
@Suite struct AutoConfRecoverySettingsTests {
    static func node(_ directory: String) throws -> LocalPostgresNode {
        let user = geteuid() == 0 ? "postgres" : (ProcessInfo.processInfo.environment["USER"] ?? "root")
        return try LocalPostgresNode(
            configuration: LocalPostgresConfiguration(
                memberName: "n1", dataDirectory: directory, osUser: user,
                superuser: Credentials(username: "postgres", password: "s"),
                replication: Credentials(username: "replicator", password: "r")),
            logger: Logger(label: "test"))
    }

    @Test func recoveryTargetsAreRemovedAndTheRestKept() throws {
        let directory = NSTemporaryDirectory() + "baton-autoconf-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/postgresql.auto.conf"
        try """
        # Do not edit this file manually!
        restore_command = 'pgbackrest --stanza=main archive-get %f "%p"'
        recovery_target_time = '2026-12-07 10:00:00+00'
          recovery_target_action = 'promote'
        work_mem = '8MB'
        """.write(toFile: path, atomically: true, encoding: .utf8)
        try Self.node(directory).removeRecoveryControlFromAutoConf()
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(!text.contains("recovery_target"))
        #expect(text.contains("restore_command") && text.contains("work_mem") && text.contains("Do not edit"))
    }

    @Test func aLinkInPlaceOfTheFileIsNotFollowed() throws {
        let directory = NSTemporaryDirectory() + "baton-autoconf-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let target = directory + "/elsewhere"
        try "recovery_target_time = 'x'\n".write(toFile: target, atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(
            atPath: directory + "/postgresql.auto.conf", withDestinationPath: target)
        try Self.node(directory).removeRecoveryControlFromAutoConf()
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "recovery_target_time = 'x'\n")
    }
}
