import BatonCore
import Testing

@testable import BatonPostgres

/// The checks a logical slot's state file passes before a replica writes it (PostgreSQL stops
/// with PANIC at start on one that does not check out).
@Suite struct SlotStateFileTests {
    @Test func crc32cMatchesTheCastagnoliCheckValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }

    /// A state file as PostgreSQL 15 lays it out: magic, CRC-32C of the rest, version, length,
    /// then the slot's data, its name first.
    static func file(name: String, size: Int = 200) -> [UInt8] {
        func le(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
        var body = le(2) + le(UInt32(size - 16))
        body += Array(name.utf8) + [UInt8](repeating: 0, count: 64 - name.utf8.count)
        body += (0..<(size - 8 - body.count)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        return le(0x0105_1CA1) + le(CRC32C.checksum(body)) + body
    }

    @Test func aWellFormedFileChecksOut() {
        #expect(SlotStateFile.problem(Self.file(name: "cdc"), name: "cdc") == nil)
    }

    @Test func aDamagedOrForeignFileIsRefused() {
        let good = Self.file(name: "cdc")
        var flipped = good
        flipped[100] ^= 1
        #expect(SlotStateFile.problem(flipped, name: "cdc") == "checksum")
        var magic = good
        magic[0] ^= 1
        #expect(SlotStateFile.problem(magic, name: "cdc") == "magic number")
        #expect(SlotStateFile.problem(good, name: "cdc2") == "slot name")
        #expect(SlotStateFile.problem(Array(good.prefix(40)), name: "cdc") == "size 40")
        #expect(SlotStateFile.problem([], name: "cdc") == "size 0")
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
    }
}
