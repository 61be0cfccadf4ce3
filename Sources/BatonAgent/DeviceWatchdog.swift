import BatonHA
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// A Linux watchdog device (`/dev/watchdog`, softdog or hardware) kept alive only while this
/// member holds the leader key. Opening the device arms it; each keepalive writes to it; a clean
/// disarm writes the magic 'V' before closing so the kernel stops the timer. If the agent hangs
/// while leading, the machine is reset before another member can be promoted.
///
/// Tested against a stand-in device (a FIFO read by the test), since no real one exists here.
public final class DeviceWatchdog: Watchdog, @unchecked Sendable {
    private let path: String
    private let logger: Logger
    private let lock = NSLock()
    private var descriptor: Int32 = -1
    private var configuredTimeout: Int32 = 0

    /// WDIOC_SETTIMEOUT = _IOWR('W', 6, int).
    static let setTimeoutRequest: UInt = 0xC004_5706

    private let safetyMargin: Duration

    /// `safetyMargin`: the device fires this long before the lease could expire.
    public init(path: String, safetyMargin: Duration = .seconds(5), logger: Logger) {
        self.path = path
        self.safetyMargin = safetyMargin
        self.logger = logger
    }

    public func keepAlive(timeout: Duration) async throws {
        try lock.withLock {
            if descriptor < 0 {
                descriptor = open(path, O_WRONLY | O_CLOEXEC)
                guard descriptor >= 0 else {
                    let reason = String(cString: strerror(errno))
                    throw WatchdogError(description: "cannot open watchdog \(path): \(reason)")
                }
                logger.info("watchdog armed", metadata: ["ha.watchdog": "\(path)"])
            }
            var seconds = Int32(max(1, (timeout - safetyMargin).components.seconds))
            if seconds != configuredTimeout {
                // Real devices take the timeout; a stand-in (FIFO, file) refuses the ioctl, which is fine.
                if ioctl(descriptor, Self.setTimeoutRequest, &seconds) == 0 || errno == ENOTTY {
                    configuredTimeout = seconds
                }
            }
            var byte: UInt8 = 0x2E  // any byte but 'V' is a keepalive
            guard write(descriptor, &byte, 1) == 1 else {
                throw WatchdogError(
                    description: "watchdog keepalive to \(path) failed: \(String(cString: strerror(errno)))")
            }
        }
    }

    public func disarm() async throws {
        lock.withLock {
            guard descriptor >= 0 else { return }
            var magic: UInt8 = 0x56  // 'V': magic close, the timer stops
            _ = write(descriptor, &magic, 1)
            close(descriptor)
            descriptor = -1
            configuredTimeout = 0
            logger.info("watchdog disarmed", metadata: ["ha.watchdog": "\(path)"])
        }
    }
}

public struct WatchdogError: Error, CustomStringConvertible {
    public let description: String
}
