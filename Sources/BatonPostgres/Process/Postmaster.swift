import BatonCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A running postmaster that the agent watches: either its own child, started in the foreground
/// with posix_spawn (a dedicated thread blocks in `waitpid`), or one adopted after an agent restart
/// (a dedicated thread blocks in `poll` on a pidfd). Either way its death is reported at once.
final class Postmaster: @unchecked Sendable {
    let pid: pid_t
    let isChild: Bool
    // Guarded by `lock`.
    private let lock = NSLock()
    private var exit: PostmasterExit?
    private var requested = false
    private var waiters: [Int: CheckedContinuation<PostmasterExit?, Never>] = [:]
    private var nextWaiter = 0
    private let onExit: @Sendable (PostmasterExit) -> Void

    private init(pid: pid_t, isChild: Bool, onExit: @escaping @Sendable (PostmasterExit) -> Void) {
        self.pid = pid
        self.isChild = isChild
        self.onExit = onExit
    }

    var exited: PostmasterExit? {
        lock.lock()
        defer { lock.unlock() }
        return exit
    }

    /// Marks the coming exit as asked for (stop, restart, demote).
    func markRequested() {
        lock.lock()
        requested = true
        lock.unlock()
    }

    /// Sends `signal`; false when the process is gone.
    @discardableResult
    func send(_ signal: Int32) -> Bool {
        exited == nil && kill(pid, signal) == 0
    }

    /// Waits until the postmaster exits or `timeout` passes (then nil).
    func waitForExit(timeout: Duration) async -> PostmasterExit? {
        await withCheckedContinuation { (continuation: CheckedContinuation<PostmasterExit?, Never>) in
            lock.lock()
            if let exit {
                lock.unlock()
                continuation.resume(returning: exit)
                return
            }
            let id = nextWaiter
            nextWaiter += 1
            waiters[id] = continuation
            lock.unlock()
            Postmaster.timerQueue.asyncAfter(deadline: .now() + timeout.secondsDouble) { [self] in
                lock.lock()
                let waiter = waiters.removeValue(forKey: id)
                lock.unlock()
                waiter?.resume(returning: nil)
            }
        }
    }

    private func finished(status: Int32?, bySignal: Bool) {
        lock.lock()
        let result = PostmasterExit(pid: pid, status: status, bySignal: bySignal, requested: requested)
        exit = result
        let pending = waiters
        waiters = [:]
        lock.unlock()
        for waiter in pending.values { waiter.resume(returning: result) }
        onExit(result)
    }

    static let timerQueue = DispatchQueue(label: "baton.pg.postmaster-timers")

    // MARK: Starting a child

    /// Starts `executable arguments…` in the foreground (its own process group, default signal
    /// dispositions, stdout and stderr appended to `logFile`), as `runAs` when we are root.
    static func spawn(
        executable: String, arguments: [String], runAs: OSUser?, logFile: String, environment: [String: String],
        onExit: @escaping @Sendable (PostmasterExit) -> Void
    ) throws -> Postmaster {
        var path = executable
        var argv = [executable] + arguments
        if geteuid() == 0, let user = runAs, user.uid != 0 {
            path = "/usr/bin/setpriv"
            argv = [path, "--reuid=\(user.uid)", "--regid=\(user.gid)", "--init-groups", "--"] + argv
        }
        // The log file belongs to the postgres user, so that it can reopen it. Opened here, once,
        // without following a link, and handed to the child as its descriptor: never opened by
        // path as root again.
        let logFD = try Posix.openForAppending(logFile, owner: geteuid() == 0 ? runAs : nil)
        defer { close(logFD) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, logFD, 1)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else of the agent's: a descriptor without FD_CLOEXEC (the REST API's listening
        // socket was one) would otherwise live on in postgres after the agent dies, and keep the
        // restarted agent from binding its port.
        closeInheritedDescriptors(&actions)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGPIPE, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM] {
            sigaddset(&defaults, signal)
        }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))

        let cArguments = argv.map { strdup($0) } + [nil]
        let cEnvironment = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for argument in cArguments { free(argument) }
            for entry in cEnvironment { free(entry) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, &attributes, cArguments, cEnvironment)
        guard result == 0 else {
            throw PostgresError(
                .startFailed, "could not start \(executable); check bin_dir",
                cause: SystemCallError(call: "posix_spawn", errno: result))
        }
        let postmaster = Postmaster(pid: pid, isChild: true, onExit: onExit)
        let thread = Thread { postmaster.reapChild() }
        thread.name = "baton.pg.waitpid \(pid)"
        thread.start()
        return postmaster
    }

    /// Adds "close every descriptor from 3 on" to `actions`: glibc's
    /// posix_spawn_file_actions_addclosefrom_np (2.34+, looked up at run time because the C
    /// importer does not see it), else one close per descriptor open now.
    static func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32
        if let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") {
            let closeFrom = unsafeBitCast(symbol, to: CloseFrom.self)
            if closeFrom(&actions, 3) == 0 { return }
        }
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for descriptor in open.compactMap({ Int32($0) }) where descriptor > 2 {
            posix_spawn_file_actions_addclose(&actions, descriptor)
        }
    }

    /// Blocks in waitpid until the child ends (runs on its own thread, for the child's lifetime).
    private func reapChild() {
        var status: Int32 = 0
        while true {
            let result = waitpid(pid, &status, 0)
            if result == pid { break }
            if result < 0 && errno == EINTR { continue }
            // ECHILD: someone else collected it; the exit status is lost.
            finished(status: nil, bySignal: false)
            return
        }
        let signal = status & 0x7f
        if signal == 0 {
            finished(status: (status >> 8) & 0xff, bySignal: false)
        } else {
            finished(status: signal, bySignal: true)
        }
    }

    // MARK: Adopting a running postmaster

    /// Watches a postmaster that is not our child: a pidfd (Linux 5.3+) that becomes readable when it
    /// exits, or, where pidfd_open is missing, `kill(pid, 0)` every 20 ms.
    static func adopt(pid: pid_t, onExit: @escaping @Sendable (PostmasterExit) -> Void) -> Postmaster {
        let postmaster = Postmaster(pid: pid, isChild: false, onExit: onExit)
        let pidfd = openPidfd(pid)
        let thread = Thread { postmaster.watchAdopted(pidfd: pidfd) }
        thread.name = "baton.pg.pidfd \(pid)"
        thread.start()
        return postmaster
    }

    private func watchAdopted(pidfd: Int32) {
        if pidfd >= 0 {
            defer { close(pidfd) }
            var descriptor = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
            while true {
                let ready = poll(&descriptor, 1, -1)
                if ready > 0 { break }
                if ready < 0 && errno != EINTR { break }
            }
        }
        // Fallback, and a guard against a spurious wake-up: lasts as long as the process does.
        while Posix.isAlive(pid) && !Postmaster.isZombie(pid) { usleep(20_000) }
        finished(status: nil, bySignal: false)
    }

    private static func openPidfd(_ pid: pid_t) -> Int32 {
        typealias PidfdOpen = @convention(c) (pid_t, UInt32) -> Int32
        guard let library = dlopen(nil, RTLD_NOW), let symbol = dlsym(library, "pidfd_open") else { return -1 }
        let function = unsafeBitCast(symbol, to: PidfdOpen.self)
        return function(pid, 0)
    }

    static func isZombie(_ pid: pid_t) -> Bool {
        guard let stat = Posix.readFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    /// True when `pid` is a live postgres server whose working directory is `dataDirectory`
    /// (the postmaster chdirs into its data directory).
    static func isPostmaster(pid: pid_t, dataDirectory: String) -> Bool {
        guard Posix.isAlive(pid), !isZombie(pid) else { return false }
        guard let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe"),
            (executable as NSString).lastPathComponent.hasPrefix("postgres")
        else { return false }
        guard let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd") else {
            return false
        }
        let expected = URL(fileURLWithPath: dataDirectory).resolvingSymlinksInPath().path
        return URL(fileURLWithPath: cwd).standardizedFileURL.path == expected
    }
}
