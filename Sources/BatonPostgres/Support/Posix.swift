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
    static func writeFile(_ path: String, contents: String, user: OSUser?, mode: mode_t) throws {
        let temporary = temporaryPath(for: path)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else {
            throw PostgresError(
                .io, "could not create \(temporary)", cause: SystemCallError(call: "open", errno: errno))
        }
        var failure: Int32 = 0
        let bytes = Array(contents.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                failure = errno
                break
            }
            offset += written
        }
        if failure == 0 && fsync(fd) != 0 { failure = errno }
        close(fd)
        guard failure == 0 else {
            unlink(temporary)
            throw PostgresError(
                .io, "could not write \(temporary)", cause: SystemCallError(call: "write", errno: failure))
        }
        try setOwner(temporary, user: user, mode: mode)
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw PostgresError(
                .io, "could not rename \(temporary) to \(path)", cause: SystemCallError(call: "rename", errno: code))
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
