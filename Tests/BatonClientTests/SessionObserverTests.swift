import NIOCore
import Testing

@testable import BatonClient

/// The wire-level session tracking under postgres-nio: message framing across arbitrary chunk
/// boundaries, ReadyForQuery statuses against requests sent, COPY's ignored Sync, lost framing.
@Suite struct SessionObserverTests {
    static func message(_ type: Character, _ payload: [UInt8] = []) -> [UInt8] {
        let length = UInt32(payload.count + 4)
        return [type.asciiValue!] + withUnsafeBytes(of: length.bigEndian, Array.init) + payload
    }

    /// Feeds `bytes` to a framer in chunks of `size`; returns the (type, first byte) seen.
    static func frame(_ bytes: [UInt8], chunk size: Int) -> ([(Character, UInt8?)], Bool) {
        var framer = MessageFramer()
        var seen: [(Character, UInt8?)] = []
        var ok = true
        var index = 0
        while index < bytes.count {
            let buffer = ByteBuffer(bytes: bytes[index..<min(bytes.count, index + size)])
            ok = framer.feed(buffer.readableBytesView) { seen.append((Character(UnicodeScalar($0)), $1)) } && ok
            index += size
        }
        return (seen, ok)
    }

    @Test func framingSurvivesEveryChunkSize() {
        let stream =
            Self.message("T", Array(repeating: 7, count: 40)) + Self.message("D", [1, 2, 3])
            + Self.message("C", [65, 0])
            + Self.message("Z", [UInt8(ascii: "T")]) + Self.message("n") + Self.message("Z", [UInt8(ascii: "I")])
        for size in 1...stream.count {
            let (seen, ok) = Self.frame(stream, chunk: size)
            #expect(ok)
            #expect(seen.map(\.0) == ["T", "D", "C", "Z", "n", "Z"], "chunk size \(size)")
            #expect(seen[3].1 == UInt8(ascii: "T") && seen[5].1 == UInt8(ascii: "I") && seen[4].1 == nil)
        }
    }

    @Test func aLengthOutOfRangeLosesTrackForGood() {
        let (_, ok) = Self.frame(Self.message("Z", [73]) + [UInt8(ascii: "Z"), 0, 0, 0, 2], chunk: 3)
        #expect(!ok)
    }

    @Test func trackerStatesAndCopyIn() {
        let tracker = SessionTracker()
        #expect(tracker.transaction == .idle)
        tracker.requestSent(UInt8(ascii: "S"))
        #expect(tracker.transaction == .unknown)  // in flight
        tracker.readyForQuery(UInt8(ascii: "T"))
        #expect(tracker.transaction == .open)
        tracker.requestSent(UInt8(ascii: "S"))
        tracker.readyForQuery(UInt8(ascii: "E"))
        #expect(tracker.transaction == .failed)
        tracker.requestSent(UInt8(ascii: "Q"))
        tracker.readyForQuery(UInt8(ascii: "I"))
        #expect(tracker.transaction == .idle && tracker.blocksEnded == 1)
        // COPY FROM STDIN over the extended protocol: the Sync sent with Execute is ignored by the
        // server in copy-in mode; the one after CopyDone is answered.
        tracker.requestSent(UInt8(ascii: "S"))
        tracker.copyIn()
        tracker.requestSent(UInt8(ascii: "S"))
        #expect(tracker.transaction == .unknown)
        tracker.readyForQuery(UInt8(ascii: "I"))
        #expect(tracker.transaction == .idle)
        tracker.lostTrack()
        #expect(tracker.transaction == .unknown)
    }
}
