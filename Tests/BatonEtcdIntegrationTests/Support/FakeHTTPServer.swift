import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A tiny HTTP server on a loopback socket that answers every request with the same canned bytes
/// (or never answers), to test how the client copes with broken replies.
final class FakeHTTPServer: @unchecked Sendable {
    enum Behaviour: Sendable {
        /// Send these bytes, then close the connection.
        case reply([UInt8])
        /// Accept and read the request, then never answer (until stopped).
        case silent
        /// Read the request, wait, then send these bytes and close: an etcd slow but alive.
        case delayed(Duration, [UInt8])
    }

    let port: Int
    private let listener: Int32
    private let behaviour: Behaviour
    private let lock = NSLock()
    private var stopped = false
    private var connections: [Int32] = []
    private var requestsRead = 0

    /// Requests whose head (and body) arrived.
    var requests: Int { lock.withLock { requestsRead } }

    struct Failure: Error { let message: String }

    init(_ behaviour: Behaviour) throws {
        self.behaviour = behaviour
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(message: "socket") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            close(fd)
            throw Failure(message: "bind/listen")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        listener = fd
        port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    var endpoint: String { "http://127.0.0.1:\(port)" }

    /// Stops answering. Sockets are only shut down here; each thread closes its own descriptor
    /// when it notices. Closing them here let a thread still sleeping (a delayed reply) or still
    /// in accept() use the number after the kernel had handed it to a new socket of a later test:
    /// a "silent" server then answered with another server's bytes (the flaky
    /// aSilentEndpointCostsOnlyItsShare: the silent endpoint "won" and stayed preferred).
    func stop() {
        lock.lock()
        stopped = true
        let open = connections
        lock.unlock()
        for fd in open { shutdown(fd, Int32(SHUT_RDWR)) }
        shutdown(listener, Int32(SHUT_RDWR))
    }

    private var isStopped: Bool { lock.withLock { stopped } }

    private func acceptLoop() {
        defer { close(listener) }
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 { return }
            lock.lock()
            if stopped {
                lock.unlock()
                close(fd)
                return
            }
            connections.append(fd)
            lock.unlock()
            let thread = Thread { [self] in serve(fd) }
            thread.start()
        }
    }

    /// Serves one connection and closes it (the only place that closes it).
    private func serve(_ fd: Int32) {
        defer {
            lock.withLock { connections.removeAll { $0 == fd } }
            close(fd)
        }
        readRequest(fd)
        lock.withLock { requestsRead += 1 }
        var behaviour = self.behaviour
        if case .delayed(let delay, let bytes) = behaviour {
            Thread.sleep(
                forTimeInterval: Double(delay.components.seconds) + Double(delay.components.attoseconds) / 1e18)
            behaviour = .reply(bytes)
        }
        switch behaviour {
        case .reply(let bytes):
            guard !isStopped else { return }
            bytes.withUnsafeBytes { buffer in
                var offset = 0
                while offset < buffer.count {
                    let written = send(
                        fd, buffer.baseAddress.map { $0 + offset }, buffer.count - offset, Int32(MSG_NOSIGNAL))
                    if written <= 0 { break }
                    offset += written
                }
            }
            shutdown(fd, Int32(SHUT_RDWR))
        case .silent, .delayed:
            // Never answers: holds the connection until the client closes it or stop() shuts it.
            var byte: UInt8 = 0
            while recv(fd, &byte, 1, 0) > 0 {}
        }
    }

    /// Reads the request head and its Content-Length body.
    private func readRequest(_ fd: Int32) {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { return }
            data.append(contentsOf: buffer[0..<count])
            let text = String(decoding: data, as: UTF8.self)
            guard let headEnd = text.range(of: "\r\n\r\n") else { continue }
            let head = text[..<headEnd.lowerBound].lowercased()
            var length = 0
            for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
                length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
            }
            let bodyBytes = text[headEnd.upperBound...].utf8.count
            if bodyBytes >= length { return }
        }
    }
}
