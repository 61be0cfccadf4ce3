import BatonCore
import BatonHA
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// Asks peers for their status over their REST API (`GET /patroni`), each with a 1 s deadline,
/// on a dedicated thread per request (blocking sockets never run on Swift's cooperative pool).
struct HTTPPeers: PeerProbe {
    let logger: Logger
    var timeoutMilliseconds: Int32 = 1000

    func status(of members: [Member]) async -> [PeerStatus] {
        await withTaskGroup(of: PeerStatus.self) { group in
            for member in members {
                group.addTask { await self.fetch(member) }
            }
            var result: [PeerStatus] = []
            for await status in group { result.append(status) }
            return result.sorted { $0.name < $1.name }
        }
    }

    func confirmFailsafe(leader: String, members: [String: String]) async -> Bool {
        // Failsafe confirmation needs POST /failsafe on every peer; until the API serves it,
        // nothing is confirmed and the primary fences at its deadline (the safe answer).
        false
    }

    func fetch(_ member: Member) async -> PeerStatus {
        let unreachable = PeerStatus(name: member.name, reachable: false, tags: member.tags)
        guard let (host, port, path) = Self.split(member.apiURL) else { return unreachable }
        let timeout = timeoutMilliseconds
        let body: Data? = await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(returning: Self.get(host: host, port: port, path: path, timeout: timeout))
            }
        }
        guard let body, let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any] else {
            return unreachable
        }
        let role = object["role"] as? String
        let state = object["state"] as? String
        let xlog = object["xlog"] as? [String: Any]
        let positions = ["location", "received_location", "replayed_location"].compactMap { key -> UInt64? in
            (xlog?[key] as? NSNumber)?.uint64Value
        }
        return PeerStatus(
            name: member.name, reachable: true,
            runningAsPrimary: state == "running" && (role == "primary" || role == "master"),
            walPosition: positions.max().map { LSN(rawValue: $0) }, timeline: object["timeline"] as? Int,
            tags: member.tags)
    }

    /// `http://host:port/path` → parts; nil when unreadable.
    static func split(_ url: String) -> (String, Int, String)? {
        guard url.hasPrefix("http://") else { return nil }
        let rest = url.dropFirst("http://".count)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = String(rest[..<slash])
        let path = slash == rest.endIndex ? "/" : String(rest[slash...])
        guard let (host, port) = ConnURL.hostAndPort("x://" + authority) else { return nil }
        return (host, authority.contains(":") ? port : 80, path)
    }

    /// A blocking HTTP/1.0 GET with one deadline for connect, send and receive.
    static func get(host: String, port: Int, path: String, timeout: Int32) -> Data? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var info: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &info) == 0, let first = info else { return nil }
        defer { freeaddrinfo(info) }
        let fd = socket(first.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        let flags = fcntl(fd, F_GETFL, 0)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(timeout) * 1_000_000
        func remaining() -> Int32 {
            let now = DispatchTime.now().uptimeNanoseconds
            return now >= deadline ? 0 : Int32((deadline - now) / 1_000_000)
        }
        if connect(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) != 0 {
            guard errno == EINPROGRESS else { return nil }
            var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            guard poll(&descriptor, 1, remaining()) == 1 else { return nil }
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            guard error == 0 else { return nil }
        }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: \(host):\(port)\r\nAccept: application/json\r\n\r\n".utf8)
        var sent = 0
        while sent < request.count {
            var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            guard poll(&descriptor, 1, remaining()) == 1 else { return nil }
            let count = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { return nil }
            sent += count
        }
        var response = Data()
        var buffer = [UInt8](repeating: 0, count: 16_384)
        while response.count < 1_048_576 {
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, remaining()) == 1 else { return nil }
            let count = recv(fd, &buffer, buffer.count, 0)
            if count == 0 { break }
            guard count > 0 else { return nil }
            response.append(contentsOf: buffer[0..<count])
        }
        guard let headerEnd = response.range(of: Data("\r\n\r\n".utf8)) else { return nil }
        let statusLine = String(decoding: response[..<headerEnd.lowerBound].prefix { $0 != 13 }, as: UTF8.self)
        // Health-style endpoints answer 503 with a full status body; both carry the status.
        guard statusLine.contains(" 200") || statusLine.contains(" 503") else { return nil }
        return response[headerEnd.upperBound...]
    }
}
