import Foundation

#if canImport(Glibc)
    import Glibc
#endif

func errnoDescription(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "errno \(code)" }
    return String(cString: text)
}

/// An OS account PostgreSQL runs as.
struct OSUser: Sendable, Equatable {
    var name: String
    var uid: uid_t
    var gid: gid_t

    static func lookup(_ name: String) throws -> OSUser {
        guard let entry = getpwnam(name) else {
            throw PostgresError(
                .osUserUnknown,
                "OS user '\(name)' does not exist; create it (useradd --system \(name)) or set postgresql.os_user")
        }
        return OSUser(name: name, uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid)
    }

    static func name(of uid: uid_t) -> String {
        guard let entry = getpwuid(uid), let name = entry.pointee.pw_name else { return "uid \(uid)" }
        return String(cString: name)
    }
}

enum Posix {
    /// True when a process with `pid` exists (also when it belongs to another user).
    static func isAlive(_ pid: pid_t) -> Bool {
        guard pid > 0 else { return false }
        return kill(pid, 0) == 0 || errno == EPERM
    }

    /// Sets owner and permission bits of `path`.
    static func setOwner(_ path: String, user: OSUser?, mode: mode_t) throws {
        if let user, geteuid() == 0 {
            guard chown(path, user.uid, user.gid) == 0 else {
                throw PostgresError(
                    .io, "could not chown \(path) to \(user.name)", cause: SystemCallError(call: "chown", errno: errno))
            }
        }
        guard chmod(path, mode) == 0 else {
            throw PostgresError(.io, "could not chmod \(path)", cause: SystemCallError(call: "chmod", errno: errno))
        }
    }

    /// The temporary file `writeFile` writes before renaming it onto `path`: in the same directory,
    /// named with PostgreSQL's temporary-file prefix so that a base backup or pg_rewind running at
    /// that moment skips it (a root-owned `baton.conf.tmp-N` in the data directory made
    /// pg_basebackup fail with "Permission denied", and the clone hang).
    static func temporaryPath(for path: String) -> String {
        let url = URL(fileURLWithPath: path)
        return url.deletingLastPathComponent().appendingPathComponent(
            "pgsql_tmp.baton.\(url.lastPathComponent).\(getpid())"
        ).path
    }

    /// Writes `contents` to `path` atomically (temp file + rename) with the given owner and mode.
    ///
    /// The agent runs as root and writes into the data directory, which the postgres user owns:
    /// that user could plant a symbolic link (or anything else) where the agent writes. The
    /// temporary file is therefore created new (`O_EXCL`, never following a link: a leftover entry
    /// of that name is removed, not followed), given its owner and mode through its descriptor,
    /// and renamed onto `path` (a link at `path` is replaced, not followed).
    static func writeFile(_ path: String, contents: String, user: OSUser?, mode: mode_t) throws {
        try writeFile(path, bytes: Array(contents.utf8), user: user, mode: mode)
    }

    static func writeFile(_ path: String, bytes: [UInt8], user: OSUser?, mode: mode_t) throws {
        var temporary = temporaryPath(for: path)
        let flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC
        var fd = open(temporary, flags, mode)
        if fd < 0, errno == EEXIST {
            // A leftover of an earlier run, or a planted link: removed (unlink never follows).
            unlink(temporary)
            fd = open(temporary, flags, mode)
        }
        if fd < 0, errno == EEXIST {
            // Planted again at once (a directory others may write, like /tmp): a name nobody can
            // guess instead.
            temporary += ".\(UInt64.random(in: 0...UInt64.max))"
            fd = open(temporary, flags, mode)
        }
        guard fd >= 0 else {
            throw PostgresError(
                .io, "could not create \(temporary)", cause: SystemCallError(call: "open", errno: errno))
        }
        var failure: (call: String, errno: Int32)?
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                failure = ("write", errno)
                break
            }
            offset += written
        }
        if failure == nil, let user, geteuid() == 0, fchown(fd, user.uid, user.gid) != 0 { failure = ("fchown", errno) }
        if failure == nil, fchmod(fd, mode) != 0 { failure = ("fchmod", errno) }
        if failure == nil, fsync(fd) != 0 { failure = ("fsync", errno) }
        close(fd)
        if let failure {
            unlink(temporary)
            throw PostgresError(
                .io, "could not write \(temporary)",
                cause: SystemCallError(call: failure.call, errno: failure.errno))
        }
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw PostgresError(
                .io, "could not rename \(temporary) to \(path)", cause: SystemCallError(call: "rename", errno: code))
        }
    }

    /// Opens (creating it, mode 0600) a file the agent appends to, without following a link and
    /// only when it is a regular file: a link planted there by the postgres user must not make
    /// the agent (root) open, and chown, another file.
    static func openForAppending(_ path: String, owner user: OSUser?) throws -> Int32 {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0o600)
        guard fd >= 0 else {
            let code = errno
            let hint = code == ELOOP ? " (it is a symbolic link; remove it)" : ""
            throw PostgresError(
                .io, "could not open \(path)\(hint)", cause: SystemCallError(call: "open", errno: code))
        }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw PostgresError(.io, "\(path) is not a regular file; remove it and let the agent create it")
        }
        // Back to blocking writes (O_NONBLOCK only kept a FIFO from blocking the open).
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        if let user, geteuid() == 0 { _ = fchown(fd, user.uid, user.gid) }
        return fd
    }

    /// A file's bytes; nil when it does not exist; throws when it exists and cannot be read (a
    /// copy to put back must not be mistaken for "there was none").
    static func readBytes(_ path: String) throws -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw PostgresError(.io, "could not read \(path)", cause: SystemCallError(call: "open", errno: errno))
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else {
                throw PostgresError(.io, "could not read \(path)", cause: SystemCallError(call: "read", errno: errno))
            }
            if count == 0 { return bytes }
            bytes += buffer[0..<count]
        }
    }

    static func readFile(_ path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    static func fileExists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }

    /// The last `maxBytes` of a file, for error messages quoting a server log.
    static func tail(_ path: String, maxBytes: Int = 4096) -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { return "" }
        defer { try? handle.close() }
        let size = (try? handle.seekToEnd()) ?? 0
        let start = size > UInt64(maxBytes) ? size - UInt64(maxBytes) : 0
        try? handle.seek(toOffset: start)
        let data = (try? handle.readToEnd()) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    static func monotonicNow() -> ContinuousClock.Instant { ContinuousClock.now }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    var secondsDouble: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
