import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// What is in the data directory, as far as deciding whether it may be written into. Unknown is
/// not "empty": anything that cannot be read, or that holds files without a cluster, is unusable
/// and is never bootstrapped, cloned into or deleted.
enum DataDirectoryContents: Equatable {
    /// Missing, or an empty directory: a bootstrap or a clone may fill it.
    case missingOrEmpty
    /// PG_VERSION and global/pg_control are present.
    case valid
    /// Anything else; says what is wrong, where, and how to fix it.
    case unusable(String)
}

extension LocalPostgresNode {
    /// Looks at the data directory without changing it. Two `stat`s on the common path (a valid
    /// cluster); the directory is listed only when it holds no cluster.
    func inspectDataDirectory() -> DataDirectoryContents {
        Self.inspect(dataDirectory)
    }

    static func inspect(_ path: String) -> DataDirectoryContents {
        // stat, not lstat: a data_dir that is a symbolic link to a directory is common and fine.
        var info = stat()
        if stat(path, &info) != 0 {
            let code = errno
            if code == ENOENT {
                var link = stat()
                if lstat(path, &link) == 0 {
                    return .unusable("\(path) is a symbolic link to a missing directory; fix the link or data_dir")
                }
                return .missingOrEmpty
            }
            return .unusable("cannot stat \(path): \(String(cString: strerror(code))); check the path and its parents")
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else {
            return .unusable("\(path) is not a directory; point data_dir at a directory")
        }
        let version = exists(path + "/PG_VERSION")
        let control = exists(path + "/global/pg_control")
        if version && control { return .valid }
        let entries: [String]
        do {
            entries = try FileManager.default.contentsOfDirectory(atPath: path)
        } catch {
            return .unusable("cannot list \(path): \(error.localizedDescription); check its owner and mode")
        }
        if entries.isEmpty { return .missingOrEmpty }
        let missing = [version ? nil : "PG_VERSION", control ? nil : "global/pg_control"].compactMap { $0 }
        let shown = entries.sorted().prefix(5).joined(separator: ", ")
        let more = entries.count > 5 ? " and \(entries.count - 5) more" : ""
        return .unusable(
            "\(path) is not empty (\(entries.count) entries: \(shown)\(more)) but holds no usable PostgreSQL cluster "
                + "(missing \(missing.joined(separator: " and "))); Baton neither deletes nor overwrites it: restore "
                + "the missing files, or move the directory away to have this member cloned again")
    }

    private static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    /// Moves the whole data directory aside (a rename next to it: no copy, no deletion) and returns
    /// where it went; nil when it is a mount point, which cannot be renamed.
    func moveDataDirectoryAside(reason: String) throws -> String? {
        // A symbolic link stays where it is; the directory it points to is moved and made anew.
        let real: String
        if let resolved = realpath(dataDirectory, nil) {
            real = String(cString: resolved)
            free(resolved)
        } else {
            real = dataDirectory
        }
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        var parts = tm()
        var seconds = time.tv_sec
        gmtime_r(&seconds, &parts)
        let stamp = String(
            format: "%04d%02d%02dT%02d%02d%02dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
            Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
        let target = "\(real).baton-moved-\(stamp)"
        guard rename(real, target) == 0 else {
            let code = errno
            if code == EBUSY || code == EXDEV { return nil }
            throw PostgresError(
                .io,
                "could not move \(dataDirectory) aside to \(target) before re-cloning (\(reason)): "
                    + "\(String(cString: strerror(code))); nothing was deleted — free the name or move it by hand")
        }
        logger.warning(
            "data directory moved aside before re-cloning",
            metadata: ["pg.moved_to": "\(target)", "pg.reason": "\(reason)"])
        if real != dataDirectory {
            try? FileManager.default.createDirectory(atPath: real, withIntermediateDirectories: false)
            try? Posix.setOwner(real, user: osUser, mode: 0o700)
        }
        return target
    }

    /// Empties the data directory before a re-clone that the agent has proven it may do (an
    /// operator's reinitialize, a pg_rewind that cannot work with
    /// `remove_data_directory_on_rewind_failure`): postgres is stopped, the directory is moved aside
    /// (renamed next to itself; kept for the operator to inspect and remove), and only when it is a
    /// mount point that cannot be renamed are its contents removed, logged with the reason.
    public func clearDataDirectory(reason: String) async throws {
        try await stop(mode: .fast, timeout: .seconds(60))
        if inspectDataDirectory() == .missingOrEmpty { return }
        if try moveDataDirectoryAside(reason: reason) == nil {
            logger.warning(
                "data directory is a mount point that cannot be moved aside: removing its contents before re-cloning",
                metadata: ["pg.reason": "\(reason)"])
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: dataDirectory)) ?? [] {
                do { try FileManager.default.removeItem(atPath: dataDirectory + "/" + entry) } catch {
                    throw PostgresError(
                        .io, "could not remove \(dataDirectory)/\(entry) before re-cloning", cause: error)
                }
            }
        }
    }
}
