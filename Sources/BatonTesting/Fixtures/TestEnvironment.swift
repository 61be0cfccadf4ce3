import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Shared helpers for tests that start real servers: temporary directories, free loopback ports,
/// and the facts of the machine the tests run on.
public enum TestEnvironment {
    /// A fresh directory under the system temp dir (or `$BATON_TEST_TMPDIR`), world-traversable so
    /// that processes running as the `postgres` OS user can reach directories created below it.
    public static func makeTemporaryDirectory(prefix: String) throws -> URL {
        let base = ProcessInfo.processInfo.environment["BATON_TEST_TMPDIR"] ?? NSTemporaryDirectory()
        let url = URL(fileURLWithPath: base, isDirectory: true)
            .appendingPathComponent("\(prefix)-\(getpid())-\(UUID().uuidString.prefix(8))", isDirectory: true)
        try FileManager.default.createDirectory(
            at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        return url
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read back, released).
    /// Ports handed out by this process are never handed out twice.
    public static func freePort() throws -> Int {
        try PortAllocator.shared.next()
    }

    /// `n` distinct free ports.
    public static func freePorts(_ n: Int) throws -> [Int] {
        try (0..<n).map { _ in try freePort() }
    }

    /// True when running as root (then PostgreSQL must be run as another OS user).
    public static var isRoot: Bool { geteuid() == 0 }
}

/// Hands out free loopback ports, remembering those already given.
final class PortAllocator: @unchecked Sendable {
    static let shared = PortAllocator()
    private let lock = NSLock()
    private var given: Set<Int> = []

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    func next() throws -> Int {
        lock.lock()
        defer { lock.unlock() }
        for _ in 0..<100 {
            let port = try probe()
            if given.insert(port).inserted { return port }
        }
        throw Failure(description: "no free port found on 127.0.0.1 after 100 tries")
    }

    private func probe() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket() failed: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else { throw Failure(description: "bind(127.0.0.1:0) failed: errno \(errno)") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw Failure(description: "getsockname failed: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
