// baton-fence-guard: the agent's fencing backstop, a process of its own.
//
// The agent starts it (`baton-fence-guard --data-dir DIR`) and sends it, over a pipe on standard
// input, `arm <milliseconds> <postmaster pid>` after each lease renewal while primary and `disarm`
// otherwise. When a deadline passes without a re-arm, the guard stops with an immediate shutdown
// (SIGQUIT, then SIGKILL after one second) the postmaster it was told about *and* the one
// postmaster.pid names at that moment (a restart may have replaced it since the last arm), then
// watches the data directory for 5 s for a start that was under way at the deadline. It keeps
// running when the agent is frozen (SIGSTOP) or killed (SIGKILL): that is its purpose.
//
// It imports nothing but the C library (and <sys/timerfd.h>) and works on bytes, not Strings: it runs on every database
// node for as long as the agent does, so it is kept small (a few MB resident, see `scripts/bench
// footprint`) and its inputs (a pipe, files in a directory the postgres user owns, /proc) are read
// without following links and without blocking.

#if canImport(Glibc)
    import CTimerFD
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

// MARK: - Bytes

/// Decimal digits of a non-negative number; nil for an empty, signed, non-digit or overflowing text.
func parseUnsigned(_ bytes: ArraySlice<UInt8>) -> UInt64? {
    guard !bytes.isEmpty, bytes.count <= 20 else { return nil }
    var value: UInt64 = 0
    for byte in bytes {
        guard byte >= 48, byte <= 57 else { return nil }
        let (times, overflowA) = value.multipliedReportingOverflow(by: 10)
        let (sum, overflowB) = times.addingReportingOverflow(UInt64(byte - 48))
        if overflowA || overflowB { return nil }
        value = sum
    }
    return value
}

func parsePID(_ bytes: ArraySlice<UInt8>) -> Int32? {
    guard let value = parseUnsigned(bytes), value <= UInt64(Int32.max) else { return nil }
    return Int32(value)
}

/// Splits at every `separator`, dropping empty pieces.
func fields(_ bytes: ArraySlice<UInt8>, separator: UInt8) -> [ArraySlice<UInt8>] {
    var result: [ArraySlice<UInt8>] = []
    var start = bytes.startIndex
    for index in bytes.indices where bytes[index] == separator {
        if index > start { result.append(bytes[start..<index]) }
        start = index + 1
    }
    if start < bytes.endIndex { result.append(bytes[start..<bytes.endIndex]) }
    return result
}

func hasSuffix(_ bytes: ArraySlice<UInt8>, _ suffix: StaticString) -> Bool {
    let count = suffix.utf8CodeUnitCount
    guard bytes.count >= count else { return false }
    let tail = bytes.suffix(count)
    return suffix.withUTF8Buffer { Array($0) == Array(tail) }
}

func equals(_ bytes: ArraySlice<UInt8>, _ word: StaticString) -> Bool {
    word.withUTF8Buffer { bytes.count == $0.count && Array($0) == Array(bytes) }
}

/// `prefix` followed by the decimal PID and `suffix`, NUL-terminated for the C library.
func procPath(_ pid: Int32, _ suffix: StaticString) -> [CChar] {
    var path = Array("/proc/".utf8) + Array(String(pid).utf8)
    suffix.withUTF8Buffer { path.append(contentsOf: $0) }
    return path.map { CChar(bitPattern: $0) } + [0]
}

func cPath(_ bytes: [UInt8]) -> [CChar] { bytes.map { CChar(bitPattern: $0) } + [0] }

// MARK: - Output

/// One line on standard error (the agent's log), written whole.
func log(_ parts: String...) {
    var line = Array("baton fence-guard: ".utf8)
    for part in parts { line.append(contentsOf: part.utf8) }
    line.append(10)
    line.withUnsafeBytes { buffer in
        var offset = 0
        while offset < buffer.count {
            let written = write(2, buffer.baseAddress! + offset, buffer.count - offset)
            if written < 0 && errno == EINTR { continue }
            if written <= 0 { return }
            offset += written
        }
    }
}

// MARK: - Files and processes

/// The first 4 KiB of a regular file, opened without following a symbolic link and without
/// blocking (the guard runs as root; the data directory belongs to the postgres user, who could
/// plant a link or a FIFO there).
func readSmallRegularFile(_ path: [CChar]) -> [UInt8]? {
    let descriptor = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
    guard descriptor >= 0 else { return nil }
    defer { close(descriptor) }
    var info = stat()
    guard fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
    var buffer = [UInt8](repeating: 0, count: 4096)
    let count = read(descriptor, &buffer, buffer.count)
    return count > 0 ? Array(buffer[0..<count]) : nil
}

/// The canonical path (links resolved); the input itself when it cannot be resolved.
func resolvedPath(_ path: [UInt8]) -> [UInt8] {
    guard let resolved = realpath(cPath(path), nil) else { return path }
    defer { free(resolved) }
    return Array(UnsafeBufferPointer(start: resolved, count: strlen(resolved))).map { UInt8(bitPattern: $0) }
}

/// The target of a symbolic link, e.g. /proc/PID/cwd.
func readLink(_ path: [CChar]) -> [UInt8]? {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let count = readlink(path, &buffer, Int(PATH_MAX))
    guard count > 0 else { return nil }
    return buffer[0..<count].map { UInt8(bitPattern: $0) }
}

/// Fields after the command of /proc/PID/stat (the command may contain spaces and parentheses).
func statFields(_ pid: Int32) -> [ArraySlice<UInt8>]? {
    guard let data = readSmallRegularFile(procPath(pid, "/stat")), let close = data.lastIndex(of: 41) else {
        return nil
    }
    return fields(data[(close + 1)...], separator: 32)
}

/// The parent PID (field 4 of /proc/PID/stat).
func parentOf(_ pid: Int32) -> Int32? {
    guard let fields = statFields(pid), fields.count > 1 else { return nil }
    return parsePID(fields[1])
}

/// The start time in clock ticks after boot (field 22 of /proc/PID/stat).
func startTime(_ pid: Int32) -> UInt64? {
    guard let fields = statFields(pid), fields.count > 19 else { return nil }
    return parseUnsigned(fields[19])
}

/// Guards against PID reuse: only a process whose command is postgres is signalled.
func isPostgres(_ pid: Int32) -> Bool {
    guard let data = readSmallRegularFile(procPath(pid, "/cmdline")) else { return false }
    let command = data.prefix { $0 != 0 }
    return hasSuffix(command, "postgres") || hasSuffix(command, "postmaster")
}

/// A postmaster started with standby.signal is a standby: it accepts no write unless promoted,
/// which only an agent holding the key does. The agent (a new one, after a crash) restarts a
/// fenced node that way; the guard must leave it alone.
func isStandby(_ dataDirectory: [UInt8]) -> Bool {
    var info = stat()
    return lstat(cPath(dataDirectory + Array("/standby.signal".utf8)), &info) == 0
}

/// The PID in `<dataDirectory>/postmaster.pid` when that process is a postgres whose working
/// directory is the data directory (guards against a stale file and a reused PID).
func postmasterOf(_ dataDirectory: [UInt8]) -> Int32? {
    guard let data = readSmallRegularFile(cPath(dataDirectory + Array("/postmaster.pid".utf8))),
        let line = fields(data[...], separator: 10).first,
        let pid = parsePID(line.drop { $0 == 32 || $0 == 9 }.prefix { $0 != 32 && $0 != 9 && $0 != 13 }),
        pid > 0, isPostgres(pid),
        let cwd = readLink(procPath(pid, "/cwd")), resolvedPath(cwd) == dataDirectory
    else { return nil }
    return pid
}

/// Arms `timer` (a CLOCK_BOOTTIME timerfd) at `milliseconds` on that clock; 0 disarms it.
func setTimer(_ timer: Int32, at milliseconds: UInt64) -> Bool {
    var value = itimerspec()
    value.it_value.tv_sec = Int(milliseconds / 1000)
    value.it_value.tv_nsec = Int(milliseconds % 1000) * 1_000_000
    return timerfd_settime(timer, Int32(TFD_TIMER_ABSTIME), &value, nil) == 0
}

/// Milliseconds on CLOCK_BOOTTIME, which, unlike CLOCK_MONOTONIC, goes on while the host is
/// suspended: a deadline that passed during a suspend has passed on resume.
func monotonicMilliseconds() -> UInt64 {
    var spec = timespec()
    clock_gettime(CLOCK_BOOTTIME, &spec)
    return UInt64(spec.tv_sec) * 1000 + UInt64(spec.tv_nsec) / 1_000_000
}

// MARK: - Fencing

func fence(_ pid: Int32) {
    guard pid > 0, isPostgres(pid) else { return }
    log("lease deadline passed without renewal: immediate shutdown of postmaster ", String(pid))
    kill(pid, SIGQUIT)
    for _ in 0..<100 {
        if kill(pid, 0) != 0 { return }
        usleep(10_000)
    }
    if isPostgres(pid) {
        log("postmaster ", String(pid), " still alive after SIGQUIT: SIGKILL")
        kill(pid, SIGKILL)
    }
}

/// Whose postmasters this guard may stop besides the PID it was armed with. The guard outlives
/// the agent that started it, so when the agent was killed and a new one started, a postmaster in
/// the same data directory may be the new agent's, promoted under a lease of its own: the old
/// guard must leave that one alone. Found by the client failover test: the killed agent's guard,
/// still watching after its deadline, stopped the node's new primary right after a switchover
/// promoted it.
struct Ownership {
    /// This guard's start, in clock ticks after boot (/proc/PID/stat); unknown reads as "now and
    /// for ever", so that no postmaster looks newer than the guard.
    let guardStart: UInt64
    var logged: [Int32] = []

    /// False only for a postmaster whose parent is a live process that started after this guard: a
    /// supervisor that came later (a new agent). The agent that started the guard started before
    /// it (even when a new agent has since reused its PID, the start time tells them apart); an
    /// orphan is re-parented to init or a subreaper, which started before too; a parent that
    /// cannot be read is not "someone else's": all of those are fenced.
    mutating func mayFence(_ postmaster: Int32) -> Bool {
        guard let parent = parentOf(postmaster), parent > 1, let parentStart = startTime(parent),
            parentStart > guardStart,
            parentOf(postmaster) == parent  // the parent did not die and its PID get reused meanwhile
        else { return true }
        if !logged.contains(postmaster) {
            if logged.count >= 64 { logged.removeFirst() }
            logged.append(postmaster)
            log(
                "postmaster ", String(postmaster), " is supervised by process ", String(parent),
                ", started after this guard (a new agent): left alone")
        }
        return false
    }
}

// MARK: - Main loop

/// Reads commands from standard input and fences at deadlines; returns the exit status.
func run(dataDirectory configured: [UInt8]?) -> Int32 {
    signal(SIGINT, SIG_IGN)
    signal(SIGPIPE, SIG_IGN)
    // postmaster's working directory is the resolved path: compare with the resolved data_dir.
    let dataDirectory = configured.map(resolvedPath)
    var owner = Ownership(guardStart: startTime(getpid()) ?? .max)
    var deadline: UInt64?
    /// After a fence, until when a postmaster that appears in the data directory is fenced too (a
    /// start that was already under way when the deadline passed).
    var watchUntil: UInt64?
    var pid: Int32 = 0
    var buffer: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    var inputOpen = true
    // A timer on CLOCK_BOOTTIME, armed at the deadline: the guard sleeps until a command or the
    // deadline, also across a host suspend (poll's own timeout does not advance while suspended,
    // CLOCK_BOOTTIME does). Without one (timerfd_create failed), it wakes every 100 ms instead.
    let timer = timerfd_create(CLOCK_BOOTTIME, Int32(TFD_CLOEXEC))
    var timerSetFor: UInt64?
    while true {
        let now = monotonicMilliseconds()
        var timeout: Int32 = -1
        if let deadline {
            if deadline <= now {
                timeout = 0
            } else if timer >= 0 {
                if timerSetFor != deadline, setTimer(timer, at: deadline) { timerSetFor = deadline }
                if timerSetFor != deadline { timeout = Int32(min(deadline - now, 100)) }
            } else {
                timeout = Int32(min(deadline - now, 100))
            }
        } else if timerSetFor != nil {
            _ = setTimer(timer, at: 0)
            timerSetFor = nil
        }
        if let until = watchUntil {
            if now >= until { watchUntil = nil } else { timeout = timeout < 0 ? 100 : min(timeout, 100) }
        }
        if !inputOpen {
            guard deadline != nil || watchUntil != nil else { return 0 }
        }
        var descriptors = [
            pollfd(fd: inputOpen ? 0 : -1, events: Int16(POLLIN), revents: 0),
            pollfd(fd: timerSetFor != nil ? timer : -1, events: Int16(POLLIN), revents: 0),
        ]
        let polled = poll(&descriptors, 2, timeout)
        if polled > 0, descriptors[1].revents != 0 {
            var expirations: UInt64 = 0
            _ = read(timer, &expirations, 8)
            timerSetFor = nil
        }
        let ready: Int32 = polled > 0 && descriptors[0].revents != 0 ? 1 : 0
        if ready > 0 {
            let count = read(0, &chunk, chunk.count)
            if count < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            if count <= 0 {
                inputOpen = false
                continue
            }
            buffer.append(contentsOf: chunk[0..<count])
            // A line longer than any command is garbage: drop it rather than grow without bound.
            if buffer.count > 65_536, buffer.firstIndex(of: 10) == nil { buffer.removeAll() }
            while let newline = buffer.firstIndex(of: 10) {
                let words = fields(buffer[..<newline], separator: 32)
                if let command = words.first {
                    if equals(command, "arm"), words.count == 3 {
                        if let milliseconds = parseUnsigned(words[1]), let target = parsePID(words[2]) {
                            // At most a day ahead: a garbled line cannot overflow the deadline.
                            deadline = monotonicMilliseconds() + min(milliseconds, 86_400_000)
                            pid = target
                            watchUntil = nil
                        }
                    } else if equals(command, "disarm") {
                        deadline = nil
                        watchUntil = nil
                    } else if equals(command, "exit") {
                        return 0
                    }
                }
                buffer.removeSubrange(...newline)
            }
            continue
        }
        if let current = deadline, monotonicMilliseconds() >= current {
            fence(pid)
            // The postmaster of the data directory now, when another one replaced the armed PID (a
            // restart, a start in flight) since the last arm.
            if let dataDirectory, let now = postmasterOf(dataDirectory), now != pid, !isStandby(dataDirectory),
                owner.mayFence(now)
            {
                fence(now)
            }
            deadline = nil
            if dataDirectory != nil { watchUntil = monotonicMilliseconds() + 5_000 }
        } else if watchUntil != nil, let dataDirectory, !isStandby(dataDirectory),
            let late = postmasterOf(dataDirectory), owner.mayFence(late)
        {
            fence(late)
        }
    }
}

// MARK: - Arguments

var dataDirectory: [UInt8]?
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
    switch argument {
    case "--data-dir":
        guard let value = arguments.next(), !value.isEmpty else {
            log("--data-dir needs a directory")
            exit(64)
        }
        dataDirectory = Array(value.utf8)
    case "--help", "-h":
        log(
            "usage: baton-fence-guard [--data-dir DIR]; started by `baton agent`, which sends it "
                + "`arm <ms> <pid>`, `disarm` and `exit` on standard input")
        exit(0)
    default:
        log("unknown argument '", argument, "': usage: baton-fence-guard [--data-dir DIR]")
        exit(64)
    }
}
exit(run(dataDirectory: dataDirectory))
