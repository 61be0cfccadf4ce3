import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Plain TCP sockets on 127.0.0.1 for tests that must behave like a hostile or broken HTTP
/// client (half a request, pipelining without reading, holding connections idle), which no HTTP
/// client library does.
public enum RawTCP {
    /// A socket connected to 127.0.0.1:`port`, or nil. `timeout` bounds each blocking send and
    /// receive; `nonBlocking` sets O_NONBLOCK after the connect.
    public static func connect(port: Int, timeout: Duration? = nil, nonBlocking: Bool = false) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        if let timeout {
            let (seconds, attoseconds) = timeout.components
            var value = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            close(fd)
            return nil
        }
        if nonBlocking { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        return fd
    }

    /// Sends all of `bytes`; false when the peer closed or a send failed or timed out.
    public static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let sent = send(fd, buffer.baseAddress! + offset, buffer.count - offset, Int32(MSG_NOSIGNAL))
                if sent <= 0 { return false }
                offset += sent
            }
            return true
        }
    }
}

/// A blocking TCP connection to 127.0.0.1, closed when released.
public final class RawConnection {
    public let fd: Int32

    public init(port: Int) throws {
        guard let fd = RawTCP.connect(port: port) else { throw RawConnectionError(port: port, errno: errno) }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Sends all of `text`; false when the peer closed.
    @discardableResult
    public func send(_ text: String) -> Bool { RawTCP.sendAll(fd, Array(text.utf8)) }

    /// Reads until the peer closes or `limit` passes; the bytes read and whether it closed.
    public func readUntilClosed(within limit: Duration) -> (bytes: [UInt8], closed: Bool) {
        let deadline = ContinuousClock.now + limit
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while ContinuousClock.now < deadline {
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let left = deadline - ContinuousClock.now
            let milliseconds = Int32(max(1, left / .milliseconds(1)))
            guard poll(&descriptor, 1, min(milliseconds, 100)) > 0 else { continue }
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { return (received, true) }
            received += buffer[0..<count]
        }
        return (received, false)
    }
}

public struct RawConnectionError: Error, CustomStringConvertible {
    public let port: Int
    public let errno: Int32
    public var description: String { "could not connect to 127.0.0.1:\(port): errno \(errno)" }
}
