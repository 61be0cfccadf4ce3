import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `scripts/lib/tcp_forward.py`: one local port per target, relaying to it. Suspending the process
/// (SIGSTOP) makes every path through it silent, as when a host vanishes: connections, new and
/// established, get no answer and no error. Stopped by PID.
public final class TCPForwarder: Sendable {
    let process: Process
    /// Local `127.0.0.1:port` per target, in the order given.
    public let addresses: [String]

    /// `targets`: `host:port`, or URLs (`http://host:port`) whose scheme is dropped.
    public init(_ targets: [String]) throws {
        let targets = targets.map { $0.components(separatedBy: "://").last ?? $0 }
        let script = AgentCluster.packageRoot.appendingPathComponent("scripts/lib/tcp_forward.py").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [script] + targets
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        var text = ""
        let handle = output.fileHandleForReading
        // Bounded: the script prints one line per target and `ready` at once.
        for _ in 0..<200 where !text.contains("ready\n") {
            let data = handle.availableData
            if data.isEmpty { break }
            text += String(decoding: data, as: UTF8.self)
        }
        guard text.contains("ready\n") else {
            process.terminate()
            throw ClusterFailure(description: "tcp_forward.py did not start: '\(text)'")
        }
        self.process = process
        self.addresses = text.split(separator: "\n").dropLast().compactMap { line in
            line.split(separator: " ").first.map { "127.0.0.1:\($0)" }
        }
    }

    public func suspend() { kill(process.processIdentifier, SIGSTOP) }
    public func resume() { kill(process.processIdentifier, SIGCONT) }

    public func stop() {
        let pid = process.processIdentifier
        kill(pid, SIGKILL)
        kill(pid, SIGCONT)
        process.waitUntilExit()
    }
}
