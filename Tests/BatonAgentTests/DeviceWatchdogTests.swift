import BatonAgent
import Foundation
import Logging
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The watchdog against a stand-in device: a FIFO whose reader sees every byte the agent writes.
@Suite struct DeviceWatchdogTests {
    @Test func keepalivesWhileArmedAndMagicCloseOnDisarm() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let fifo = dir.appendingPathComponent("watchdog").path
        #expect(mkfifo(fifo, 0o600) == 0)
        // The reader end must be open before a writer's open() returns.
        let reader = open(fifo, O_RDONLY | O_NONBLOCK)
        #expect(reader >= 0)
        defer { close(reader) }

        let watchdog = DeviceWatchdog(path: fifo, logger: Logger(label: "test"))
        try await watchdog.keepAlive(timeout: .seconds(10))
        try await watchdog.keepAlive(timeout: .seconds(10))
        try await watchdog.disarm()

        var buffer = [UInt8](repeating: 0, count: 16)
        let count = read(reader, &buffer, buffer.count)
        #expect(count == 3)
        #expect(Array(buffer[0..<2]) == [0x2E, 0x2E], "two keepalives")
        #expect(buffer[2] == 0x56, "the last byte is the magic close 'V'")
    }

    @Test func missingDeviceIsAClearError() async {
        let watchdog = DeviceWatchdog(path: "/nonexistent/watchdog", logger: Logger(label: "test"))
        await #expect {
            try await watchdog.keepAlive(timeout: .seconds(5))
        } throws: { error in
            "\(error)".contains("/nonexistent/watchdog")
        }
    }
}
