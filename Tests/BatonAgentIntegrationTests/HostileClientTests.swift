import BatonCore
import BatonTestCluster
import BatonTesting
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Clients that try to exhaust the agents' REST servers, against a real cluster: slowloris
/// connections, a client that pipelines health checks and never reads, 2,000 idle connections and
/// a flood of `GET /config`, all at once on every agent. The leader keeps its key while it lasts,
/// a whole-node failover under the same attack completes within ttl + 1 s, and the agents' memory
/// stays bounded.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct HostileClientTests {
    /// Every attacker, each on threads of its own, until `stop()`.
    final class Attack: Sendable {
        let running = Atomic<Bool>(true)
        let slowlorisClosed = Atomic<Int>(0)
        let pipelinedSent = Atomic<Int>(0)
        let configAnswers = Atomic<Int>(0)
        let idleOpened = Atomic<Int>(0)
        private let finished = Atomic<Int>(0)
        private let started = Atomic<Int>(0)

        var isRunning: Bool { running.load(ordering: .relaxed) }

        private func thread(_ body: @escaping @Sendable () -> Void) {
            started.add(1, ordering: .relaxed)
            Thread { [self] in
                body()
                finished.add(1, ordering: .relaxed)
            }.start()
        }

        func start(apiPorts: [Int], leaderPort: Int) {
            for port in apiPorts {
                // Slowloris: 100 connections, one byte of a never-ending head each every 500 ms.
                thread { [self] in
                    var sockets: [Int32] = []
                    defer { for fd in sockets { close(fd) } }
                    while isRunning {
                        while sockets.count < 100,
                            let fd = RawTCP.connect(port: port, timeout: .seconds(2), nonBlocking: true)
                        {
                            _ = RawTCP.sendAll(fd, Array("GET /primary HTTP/1.1\r\nHost: t\r\nX-A: ".utf8))
                            sockets.append(fd)
                        }
                        sockets = sockets.filter { fd in
                            if RawTCP.sendAll(fd, [UInt8(ascii: "a")]) { return true }
                            close(fd)
                            slowlorisClosed.add(1, ordering: .relaxed)
                            return false
                        }
                        usleep(500_000)
                    }
                }
                // Pipelined health checks as fast as the socket takes them; no answer read.
                thread { [self] in
                    let batch = Array(
                        (0..<500).map { _ in Array("GET /replica HTTP/1.1\r\nHost: t\r\n\r\n".utf8) }.joined())
                    var fd: Int32?
                    defer { if let fd { close(fd) } }
                    while isRunning {
                        if fd == nil { fd = RawTCP.connect(port: port, timeout: .seconds(2), nonBlocking: true) }
                        guard let socket = fd else {
                            usleep(100_000)
                            continue
                        }
                        let sent = batch.withUnsafeBytes {
                            send(socket, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL))
                        }
                        if sent > 0 {
                            pipelinedSent.add(sent / 36, ordering: .relaxed)
                        } else if errno == EAGAIN || errno == EWOULDBLOCK {
                            usleep(20_000)
                        } else {
                            close(socket)
                            fd = nil
                        }
                    }
                }
                // A GET /config flood on kept-alive connections, answers read.
                for _ in 0..<1 {
                    thread { [self] in
                        var buffer = [UInt8](repeating: 0, count: 65536)
                        while isRunning {
                            guard let fd = RawTCP.connect(port: port, timeout: .seconds(2)) else {
                                usleep(100_000)
                                continue
                            }
                            defer { close(fd) }
                            for _ in 0..<200 where isRunning {
                                guard
                                    RawTCP.sendAll(
                                        fd, Array("GET /config HTTP/1.1\r\nHost: t\r\n\r\n".utf8)),
                                    recv(fd, &buffer, buffer.count, 0) > 0
                                else { break }
                                configAnswers.add(1, ordering: .relaxed)
                            }
                        }
                    }
                }
            }
            // 2,000 idle connections to the leader's API, held (the server closes them).
            thread { [self] in
                var sockets: [Int32] = []
                defer { for fd in sockets { close(fd) } }
                for _ in 0..<2000 where isRunning {
                    guard let fd = RawTCP.connect(port: leaderPort, timeout: .seconds(2), nonBlocking: true) else {
                        break
                    }
                    sockets.append(fd)
                    idleOpened.add(1, ordering: .relaxed)
                }
                while isRunning { usleep(100_000) }
            }
        }

        /// Stops every attacker and waits (bounded) for their threads.
        func stop() {
            running.store(false, ordering: .relaxed)
            for _ in 0..<100 where finished.load(ordering: .relaxed) < started.load(ordering: .relaxed) {
                usleep(50_000)
            }
        }
    }

    /// Resident memory of a process, in MiB (0 when unreadable).
    static func rss(_ pid: pid_t?) -> Int {
        guard let pid, let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return 0 }
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
    }

    /// One health check on a fresh connection: its duration, or nil when unanswered within 2 s.
    static func healthCheck(_ port: Int) -> Duration? {
        let started = ContinuousClock.now
        guard let fd = RawTCP.connect(port: port, timeout: .seconds(2)) else { return nil }
        defer { close(fd) }
        guard RawTCP.sendAll(fd, Array("GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".utf8)) else {
            return nil
        }
        var buffer = [UInt8](repeating: 0, count: 4096)
        guard recv(fd, &buffer, buffer.count, 0) > 0 else { return nil }
        return ContinuousClock.now - started
    }

    @Test(
        "slowloris, a never-reading pipeliner, 2,000 idle connections and a GET /config flood on every agent: the leader keeps its key, a failover completes within ttl + 1 s, memory stays bounded"
    )
    func resourceAttacksDuringAFailover() async throws {
        var options = ClusterOptions()
        options.restapiExtra = ["request_timeout: 2", "idle_timeout: 5", "max_connections: 500"]
        let cluster = try AgentCluster.start("hostile-clients", options)
        defer { cluster.stop() }
        let leader = try await cluster.waitHealthy()
        let before = try await cluster.view()
        let lock = try #require(before.leader)
        let ports = cluster.nodes.map(\.apiPort)
        let leaderPort = try cluster.node(leader).apiPort
        let rssBefore = Dictionary(
            uniqueKeysWithValues: cluster.nodes.map { ($0.name, Self.rss(cluster.agentPID($0.name))) })

        let attack = Attack()
        attack.start(apiPorts: ports, leaderPort: leaderPort)
        defer { attack.stop() }

        // 1. ttl + 2 s of attack: the leader keeps its key (same member, same session).
        let holdUntil = ContinuousClock.now + .seconds(options.ttl + 2)
        var lostKey: String?
        var replicaChecks: [Duration?] = []
        let replicaPort = try cluster.node(cluster.nodes.map(\.name).first { $0 != leader }!).apiPort
        while ContinuousClock.now < holdUntil, lostKey == nil {
            let view = try await cluster.view()
            if view.leader?.member != lock.member || view.leader?.session != lock.session {
                lostKey = "\(view.leader?.member ?? "none")/\(String(describing: view.leader?.session))"
            }
            replicaChecks.append(Self.healthCheck(replicaPort))
            try await Task.sleep(for: .milliseconds(250))
        }
        if let lostKey {
            await cluster.fail("the leader lost its key under the attack: now \(lostKey)")
            return
        }

        // 2. The leader's node dies under the same attack: a replica takes over within ttl + 1 s.
        let killedAt = ContinuousClock.now
        try cluster.killNode(leader)
        var newLeader: String?
        while ContinuousClock.now < killedAt + .seconds(options.ttl + 10), newLeader == nil {
            if let member = try? await cluster.view().leader?.member, member != leader { newLeader = member }
            if newLeader == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        let failover = ContinuousClock.now - killedAt
        let survivors = cluster.nodes.map(\.name).filter { $0 != leader }
        let rssAfter = Dictionary(uniqueKeysWithValues: survivors.map { ($0, Self.rss(cluster.agentPID($0))) })
        attack.stop()

        let answered = replicaChecks.compactMap { $0 }
        AgentFailoverTests.measure(
            "hostile-clients",
            [
                "failover_s": seconds(failover), "new_leader": newLeader ?? "none",
                "slowloris_closed": "\(attack.slowlorisClosed.load(ordering: .relaxed))",
                "pipelined_requests_sent": "\(attack.pipelinedSent.load(ordering: .relaxed))",
                "config_answers": "\(attack.configAnswers.load(ordering: .relaxed))",
                "idle_opened": "\(attack.idleOpened.load(ordering: .relaxed))",
                "replica_health_answered": "\(answered.count)/\(replicaChecks.count)",
                "replica_health_worst_ms": "\(answered.max().map { Int($0 / .milliseconds(1)) } ?? -1)",
                "rss_mb_before": "\(survivors.map { rssBefore[$0] ?? 0 })",
                "rss_mb_after": "\(survivors.map { rssAfter[$0] ?? 0 })",
            ])
        guard let newLeader else {
            await cluster.fail("no new leader within ttl + 10 s of the leader node's death under the attack")
            return
        }
        #expect(survivors.contains(newLeader))
        #expect(failover < .seconds(options.ttl + 1), "failover took \(failover) under the attack")
        #expect(attack.slowlorisClosed.load(ordering: .relaxed) > 0, "no slowloris connection was ever closed")
        #expect(
            answered.count * 2 >= replicaChecks.count,
            "the replica answered \(answered.count)/\(replicaChecks.count) health checks")
        for name in survivors {
            let growth = (rssAfter[name] ?? 0) - (rssBefore[name] ?? 0)
            #expect(growth < 64, "\(name)'s agent grew by \(growth) MiB under the attack")
        }
    }
}
