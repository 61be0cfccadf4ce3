import ArgumentParser
import BatonAgent
import BatonCore
import BatonPostgres
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `baton migrate`: moves this node from Patroni to Baton while the cluster runs. The decisions
/// (ready or not, whom to switch over to, healthy or not) are `Migration`'s; this command reads
/// etcd, acts, and prints each step.
///
/// Patroni is stopped with SIGKILL, not SIGTERM: on SIGTERM Patroni stops its PostgreSQL, while
/// its postmaster runs in a session of its own and outlives a SIGKILL. Baton then adopts the
/// running postmaster, so a replica is never restarted (and a synchronous standby never stops
/// acknowledging). Only a replica's Patroni is killed — the leader is switched over first — and a
/// replica's Patroni holds no leader key and no active watchdog.
struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Move this node from Patroni to Baton, live (the leader through a switchover first).",
        discussion: """
            Checks the node (the file loads, its member key is Patroni's, a supported release, a running leader, \
            no pause or pending switchover), switches over to a streaming replica if the node leads, stops Patroni \
            (SIGKILL: its PostgreSQL keeps running), runs --start, and waits until Baton serves the node. \
            Prints each step and a summary table. Exit 0 when Baton serves the node, 1 when a step failed \
            (with how to roll back), 2 when the node is not ready (nothing was touched).
            """)

    @OptionGroup var options: ConfigOptions
    @Option(help: "The PID of this node's Patroni (checked: a 'patroni' process whose file has this name and scope).")
    var patroniPid: Int32?
    @Option(help: "The shell command that starts the Baton agent with this file; it must return once started.")
    var start = "systemctl start baton-agent"
    @Option(help: "The member to switch over to when this node leads (default: one on Baton, else the least lagging).")
    var candidate: String?
    @Option(help: "Seconds to wait for the switchover, and again for Baton to serve the node.")
    var timeout: Double = 120
    @Flag(help: "Check and print the plan; change nothing.") var dryRun = false
    @Flag(help: "Do not ask for confirmation before a switchover.") var force = false

    func validate() throws {
        guard timeout.isFinite, timeout >= 5, timeout <= 3600 else {
            throw ValidationError("--timeout \(timeout): give seconds between 5 and 3600")
        }
        if let patroniPid, patroniPid <= 1 { throw ValidationError("--patroni-pid \(patroniPid) is not a process") }
        if !dryRun, patroniPid == nil {
            throw ValidationError(
                "--patroni-pid is needed: the PID of this node's Patroni ('systemctl show -p MainPID patroni')")
        }
        if start.trimmingCharacters(in: .whitespaces).isEmpty { throw ValidationError("--start is empty") }
        if !FileManager.default.fileExists(atPath: options.config) {
            throw ValidationError(
                "baton migrate needs this node's configuration file (-c \(options.config) does not exist); "
                    + "--dcs-url and --scope alone do not name the node")
        }
    }

    /// One line of the summary table.
    struct Step {
        var name: String
        var result: String
        var took: Duration?
    }

    func run() async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        let name = op.configuration.name
        let dataDirectory = op.configuration.postgresql.dataDirectory
        var steps: [Step] = []
        let begun = ContinuousClock.now

        // 1. Checks. Nothing is touched until they pass.
        var view = try await op.load()
        let decided = Migration.plan(view, member: name, batonVersion: BatonCore.version, preferred: candidate)
        let inspected = patroniPid.map { Self.inspectPatroni(pid: $0, expected: op.configuration) }
        if case .success(.alreadyBaton) = decided {
            if let patroniPid, case .success = inspected {
                op.fail(
                    "\(name)'s member key is Baton's, yet Patroni (PID \(patroniPid)) still runs for it: two agents "
                        + "manage one node; stop one of them by hand ('baton list', docs/runbooks.md)", code: 2)
            }
            print("\(name) already runs Baton (member key written by Baton \(BatonCore.version)); nothing to do")
            return
        }
        var reasons: [String] = []
        if case .failure(let refusal) = decided { reasons = refusal.reasons }
        if let patroniPid, case .failure(let problem) = inspected {
            reasons.append("--patroni-pid \(patroniPid): \(problem.text)")
        }
        var postmasterBefore = Self.postmasterPID(dataDirectory)
        if postmasterBefore == nil {
            reasons.append(
                "no running postmaster found in \(dataDirectory)/postmaster.pid (run baton migrate as root or as the "
                    + "data directory's owner, on the node itself)")
        }
        guard case .success(let plan) = decided, reasons.isEmpty else {
            op.fail("\(name) is not ready to move to Baton:\n  - " + reasons.joined(separator: "\n  - "), code: 2)
        }
        let version = view.member(named: name)?.version ?? "?"
        let leader = view.leader?.member ?? "?"
        let position = plan == .replica ? "replica of \(leader)" : "the leader"
        steps.append(Step(name: "check", result: "Patroni \(version), \(position)", took: nil))
        print("[1/4] \(name) in scope \(op.configuration.scope): Patroni \(version); \(plan)")
        if dryRun {
            print("dry run: nothing changed. Without --dry-run: the steps above, then '\(start)'.")
            return
        }
        guard let patroniPid, case .success(let patroni) = inspected else {
            op.fail("--patroni-pid is needed", code: 2)
        }

        // 2. The switchover, when this node leads.
        if case .leader(let candidate) = plan {
            if !force, !confirm("\(name) leads: switch over to \(candidate) first?") { op.fail("aborted", code: 1) }
            let started = ContinuousClock.now
            print("[2/4] switching over from \(name) to \(candidate) …")
            let body = JSONValue.object(["leader": .string(name), "candidate": .string(candidate)])
            guard
                let (via, reply) = await postToFirstAPI(
                    op, view.apiMembersLeaderFirst, path: "/switchover", body: body, timeout: timeout)
            else { op.fail("no member's REST API answered the switchover; nothing was changed") }
            switch reply?.status {
            case 412?:
                // Patroni's precondition failed (e.g. the sync standby changed): nothing was done.
                op.fail("\(via.name) refused the switchover: \(reply!.message); nothing was changed", code: 2)
            case 503?, nil:
                // Patroni answers 503 when it could not confirm in time: the switchover may still happen.
                print("      \(via.name) did not confirm the switchover in time; watching the cluster")
            case let other?:
                if !(200..<300).contains(other) { checkReply(op, reply!, via) }
            }
            view = try await waitUntil(op, "\(name) to follow a new leader under Patroni", started: started) { view in
                guard let now = view.leader?.member, now != name, let me = view.member(named: name) else {
                    return false
                }
                return me.role == .replica && me.state == .running && me.replicationState == "streaming"
            }
            let now = view.leader?.member ?? "?"
            steps.append(
                Step(
                    name: "switchover", result: "\(name) → \(now)" + (now == candidate ? "" : " (not \(candidate))"),
                    took: ContinuousClock.now - started))
        } else {
            print("[2/4] no switchover needed: \(name) does not lead")
            steps.append(Step(name: "switchover", result: "not needed", took: nil))
        }
        // A demoted leader runs a new postmaster (Patroni restarted it as a replica).
        postmasterBefore = Self.postmasterPID(dataDirectory)
        guard postmasterBefore != nil else {
            op.fail("no postmaster runs in \(dataDirectory) now; Patroni was left running ('baton list')")
        }

        // 3. Patroni stops; its postmaster keeps running. Patroni is frozen (SIGSTOP) while the
        // last checks run, so that it cannot take the leader key or arm its watchdog in between;
        // any doubt lets it go on (SIGCONT) and stops here.
        let stopped = ContinuousClock.now
        guard Self.startTime(patroniPid) == patroni.startTime, kill(patroniPid, SIGSTOP) == 0 else {
            op.fail("PID \(patroniPid) is no longer the Patroni that was checked; nothing was changed")
        }
        var doubt: String?
        if Self.startTime(patroniPid) != patroni.startTime {
            doubt = "PID \(patroniPid) is no longer the Patroni that was checked"
        } else if let watchdog = Self.openWatchdog(patroniPid) {
            doubt = "Patroni holds \(watchdog) open (it arms its watchdog as leader)"
        } else if let now = try? await op.store.loadCluster() {
            guard case .success(.replica) = Migration.plan(now, member: name, batonVersion: BatonCore.version) else {
                kill(patroniPid, SIGCONT)
                op.fail("\(name) is no longer a replica ready to move ('baton list'); Patroni was left running")
            }
            if postmasterBefore != Self.postmasterPID(dataDirectory) {
                doubt = "the postmaster changed while Patroni was being stopped"
            }
        } else {
            doubt = "etcd did not answer the last check"
        }
        if let doubt {
            kill(patroniPid, SIGCONT)
            op.fail("\(doubt); Patroni was left running, nothing was changed")
        }
        kill(patroniPid, SIGKILL)
        let deadline = ContinuousClock.now + .seconds(10)
        while Self.isRunning(patroniPid), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        if Self.isRunning(patroniPid) { op.fail("Patroni (PID \(patroniPid)) did not exit after SIGKILL") }
        let keptRunning = Self.postmasterPID(dataDirectory) == postmasterBefore
        if keptRunning {
            print(
                "[3/4] Patroni (PID \(patroniPid)) stopped with SIGKILL; postgres keeps running (PID \(postmasterBefore!))"
            )
        } else {
            printError(
                "warning: postgres (PID \(postmasterBefore!)) stopped with Patroni (a service manager's KillMode?); "
                    + "Baton will start it")
        }
        // Nothing may still answer on Patroni's REST address: that would be a second Patroni for
        // this node, and Baton beside it a second agent.
        if let address = patroni.restAddress {
            var answering = Self.accepts(address)
            let freed = ContinuousClock.now + .seconds(5)
            while answering, ContinuousClock.now < freed {
                try await Task.sleep(for: .milliseconds(100))
                answering = Self.accepts(address)
            }
            if answering {
                op.fail(
                    "something still answers on Patroni's REST address \(address.host):\(address.port) after the kill: "
                        + "another Patroni may run for \(name); Baton was not started")
            }
        }
        steps.append(
            Step(
                name: "stop Patroni",
                result: "SIGKILL to \(patroniPid)" + (keptRunning ? ", postgres kept running" : ", postgres stopped"),
                took: ContinuousClock.now - stopped))

        // 4. Baton starts and serves the node.
        let starting = ContinuousClock.now
        print("[4/4] starting Baton: \(start)")
        let status = await Self.shell(start, timeout: timeout)
        guard status == 0 else {
            op.fail(
                "'\(start)' " + (status.map { "exited with \($0)" } ?? "did not return within \(Int(timeout)) s")
                    + ": Baton may not have started. Patroni is stopped"
                    + (keptRunning ? " and postgres still runs" : "") + ". Check 'baton list' and the agent's log; "
                    + "to roll back, make sure no Baton agent runs for \(name), then start Patroni with the same file")
        }
        var lastProblem = ""
        let serveDeadline = ContinuousClock.now + .seconds(timeout)
        while true {
            let now = try? await op.store.loadCluster()
            guard let now else {
                lastProblem = "etcd did not answer"
                if ContinuousClock.now > serveDeadline { break }
                try await Task.sleep(for: .milliseconds(500))
                continue
            }
            guard let problem = Migration.healthyUnderBaton(now, member: name, batonVersion: BatonCore.version) else {
                view = now
                lastProblem = ""
                break
            }
            if problem != lastProblem { print("      waiting: \(problem)") }
            lastProblem = problem
            if ContinuousClock.now > serveDeadline { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        if !lastProblem.isEmpty {
            op.fail(
                "Baton did not serve \(name) within \(Int(timeout)) s (\(lastProblem)). Its agent may still be "
                    + "starting: check 'baton list' and its log. To roll back: stop the Baton agent first "
                    + "('systemctl stop baton-agent'), then start Patroni with the same file (docs/runbooks.md)")
        }
        let postmasterAfter = Self.postmasterPID(dataDirectory)
        let restarted = postmasterAfter != postmasterBefore
        let role = view.member(named: name).map { $0.role == .replica ? "streaming replica" : "\($0.role)" } ?? "?"
        steps.append(
            Step(
                name: "Baton serves", result: "\(role); postgres " + (restarted ? "restarted" : "not restarted"),
                took: ContinuousClock.now - starting))
        let rows = steps.map { [$0.name, $0.result, $0.took?.secondsText ?? "-"] }
        print(ClusterTable.table(header: ["Step", "Result", "Took"], rows: rows).joined(separator: "\n"))
        print("\(name) moved to Baton in \((ContinuousClock.now - begun).secondsText)")
    }

    /// Polls the cluster until `done`, or fails after --timeout.
    func waitUntil(
        _ op: OperatorStore, _ what: String, started: ContinuousClock.Instant, _ done: (ClusterView) -> Bool
    ) async throws -> ClusterView {
        while ContinuousClock.now - started < .seconds(timeout) {
            if let view = try? await op.store.loadCluster(), done(view) { return view }
            try await Task.sleep(for: .milliseconds(250))
        }
        op.fail("timed out after \(Int(timeout)) s waiting for \(what); Patroni was left running ('baton list')")
    }

    /// The Patroni process that was checked.
    struct PatroniProcess {
        /// /proc/PID/stat's start time: the same PID with another start time is another process.
        var startTime: String
        /// Where its REST API listens (nil when the file names none).
        var restAddress: (host: String, port: Int)?
    }

    struct Problem: Error {
        var text: String
        init(_ text: String) { self.text = text }
    }

    /// `pid` is this node's Patroni: a Python process running `patroni` with a configuration file
    /// that, read with Patroni's own environment and from its own root and working directory,
    /// names this member, scope, namespace and data directory; signalable; and, when it is a
    /// systemd unit's main process, a unit that neither restarts it nor stops the postmaster
    /// with it. Anything unknown is a problem.
    static func inspectPatroni(pid: Int32, expected: AgentConfiguration) -> Result<PatroniProcess, Problem> {
        guard let startTime = startTime(pid), let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
            !data.isEmpty
        else { return .failure(Problem("no such process")) }
        guard kill(pid, 0) == 0 else {
            return .failure(Problem("cannot signal it (\(String(cString: strerror(errno)))): run as root"))
        }
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) ?? "?"
        guard (executable as NSString).lastPathComponent.hasPrefix("python") else {
            return .failure(
                Problem(
                    "its executable is \(executable), not Python: give the PID of the Python process that runs "
                        + "patroni, not of a wrapper (sudo, su, sh)"))
        }
        let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        guard let script = arguments.firstIndex(where: { ($0 as NSString).lastPathComponent == "patroni" }) else {
            return .failure(
                Problem("not a Patroni process (its command line: \(arguments.prefix(3).joined(separator: " ")))"))
        }
        guard let file = arguments.dropFirst(script + 1).last(where: { !$0.hasPrefix("-") }) else {
            return .failure(Problem("Patroni runs without a configuration file argument; move this node by hand"))
        }
        // Its file as it sees it: relative to its working directory, absolute within its root.
        let path = file.hasPrefix("/") ? "/proc/\(pid)/root\(file)" : "/proc/\(pid)/cwd/\(file)"
        guard let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else {
            return .failure(Problem("cannot read its environment: run as root"))
        }
        var environment: [String: String] = [:]
        for entry in environ.split(separator: 0) {
            let text = String(decoding: entry, as: UTF8.self)
            if let equals = text.firstIndex(of: "=") {
                environment[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
        }
        let loaded: AgentConfiguration
        do {
            loaded = try AgentConfiguration.load(path: path, environment: environment, requireSecrets: false)
        } catch {
            return .failure(Problem("cannot read its configuration file \(file): \(error)"))
        }
        func standard(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.path }
        if loaded.name != expected.name || loaded.scope != expected.scope || loaded.namespace != expected.namespace
            || standard(loaded.postgresql.dataDirectory) != standard(expected.postgresql.dataDirectory)
        {
            return .failure(
                Problem(
                    "it runs member '\(loaded.name)' of scope '\(loaded.scope)' on \(loaded.postgresql.dataDirectory) "
                        + "(\(file)), not '\(expected.name)' of '\(expected.scope)' on "
                        + expected.postgresql.dataDirectory))
        }
        if let problem = unitProblem(pid) { return .failure(Problem(problem)) }
        let host =
            ["", "*", "0.0.0.0", "::"].contains(loaded.restapi.listenHost) ? "127.0.0.1" : loaded.restapi.listenHost
        return .success(PatroniProcess(startTime: startTime, restAddress: (host, loaded.restapi.listenPort)))
    }

    /// When `pid` is a systemd unit's main process: a unit that would restart Patroni after the
    /// kill (Restart=) or stop the postmaster with it (KillMode=control-group/mixed) is refused.
    static func unitProblem(_ pid: Int32) -> String? {
        guard let cgroup = try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8),
            let unit = cgroup.split(whereSeparator: { $0 == "/" || $0 == "\n" }).last(where: {
                $0.hasSuffix(".service")
            }),
            FileManager.default.isExecutableFile(atPath: "/usr/bin/systemctl")
                || FileManager.default.isExecutableFile(
                    atPath: "/bin/systemctl")
        else { return nil }
        guard
            let shown = capture(["systemctl", "show", "-p", "MainPID", "-p", "KillMode", "-p", "Restart", String(unit)])
        else { return "cannot ask systemd about \(unit) (systemctl show failed)" }
        var properties: [String: String] = [:]
        for line in shown.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { properties[parts[0]] = parts[1] }
        }
        guard properties["MainPID"] == String(pid) else { return nil }
        let killMode = properties["KillMode"] ?? "?"
        let restart = properties["Restart"] ?? "?"
        if !["process", "none"].contains(killMode) || restart != "no" {
            return "\(unit) has KillMode=\(killMode) and Restart=\(restart): systemd would "
                + (restart != "no" ? "start Patroni again after the kill" : "stop postgres with Patroni")
                + "; set KillMode=process and Restart=no ('systemctl edit \(unit)', then 'systemctl daemon-reload')"
        }
        return nil
    }

    /// A watchdog device `pid` holds open, if any.
    static func openWatchdog(_ pid: Int32) -> String? {
        guard let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else {
            return "an unknown set of files (its /proc/\(pid)/fd is unreadable)"
        }
        for fd in fds {
            if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)"),
                target.contains("watchdog")
            {
                return target
            }
        }
        return nil
    }

    /// Field 22 of /proc/PID/stat (start time in clock ticks since boot); nil when gone or a zombie.
    static func startTime(_ pid: Int32) -> String? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // fields[0] is the state (field 3); the start time is field 22.
        guard fields.count > 19, fields[0] != "Z" else { return nil }
        return String(fields[19])
    }

    /// Alive and not a zombie.
    static func isRunning(_ pid: Int32) -> Bool { startTime(pid) != nil }

    /// The postmaster running on `dataDirectory`, checked as the agent checks it before adopting
    /// it (a stale postmaster.pid whose PID now belongs to another process is not it).
    static func postmasterPID(_ dataDirectory: String) -> Int32? {
        LocalPostgresNode.runningPostmasterPID(dataDirectory: dataDirectory)
    }

    /// Whether a TCP connection to `address` is accepted within a second.
    static func accepts(_ address: (host: String, port: Int)) -> Bool {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(address.host, String(address.port), &hints, &list) == 0, let first = list else {
            return false
        }
        defer { freeaddrinfo(list) }
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let info = entry {
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
            if fd >= 0 {
                var limit = timeval(tv_sec: 1, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
                let connected = connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0
                close(fd)
                if connected { return true }
            }
            entry = info.pointee.ai_next
        }
        return false
    }

    /// `argv` run to completion (10 s at most), its standard output; nil when it failed.
    static func capture(_ argv: [String]) -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = argv
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return nil }
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return process.terminationStatus == 0 ? String(decoding: output, as: UTF8.self) : nil
    }

    /// `/bin/sh -c command` in a process group of its own, its output passed through; its exit
    /// status, or nil when it did not return within `timeout` seconds (the whole group is then
    /// sent SIGTERM, so that nothing it started goes on starting Baton later).
    static func shell(_ command: String, timeout: Double) async -> Int32? {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        var pid: pid_t = 0
        let argv = ["/bin/sh", "-c", command]
        var cArguments = argv.map { strdup($0) } + [nil]
        defer { for pointer in cArguments { free(pointer) } }
        let spawned = posix_spawn(&pid, "/bin/sh", nil, &attributes, &cArguments, environ)
        guard spawned == 0 else {
            printError("cannot run /bin/sh: \(String(cString: strerror(spawned)))")
            return 127
        }
        let deadline = ContinuousClock.now + .seconds(timeout)
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            if ContinuousClock.now > deadline {
                kill(-pid, SIGTERM)
                _ = waitpid(pid, &status, 0)
                return nil
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}
