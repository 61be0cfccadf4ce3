import Foundation
import Testing

@testable import BatonPostgres

#if canImport(Glibc)
    import Glibc
#endif

/// The agent runs as root and writes where the postgres user can plant things (the data
/// directory, the server log next to it). A symbolic link planted where it writes must never
/// make it write to, truncate or chown another file.
@Suite struct FileSafetyTests {
    static func directory(_ name: String) throws -> String {
        let path = NSTemporaryDirectory() + "baton-files-\(getpid())-\(name)"
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A file that must stay as it is: its contents and mode.
    static func victim(in directory: String) throws -> String {
        let path = directory + "/victim"
        try "precious\n".write(toFile: path, atomically: false, encoding: .utf8)
        chmod(path, 0o644)
        return path
    }

    static func unchanged(_ path: String) -> Bool {
        var info = stat()
        guard lstat(path, &info) == 0 else { return false }
        return (try? String(contentsOfFile: path, encoding: .utf8)) == "precious\n" && info.st_mode & 0o777 == 0o644
            && info.st_uid == geteuid()
    }

    /// Before, the temporary file was opened with O_CREAT|O_TRUNC, which followed a link planted
    /// at its (predictable) name: the victim was truncated, overwritten and chowned.
    @Test func aLinkAtTheTemporaryPathIsNotFollowed() throws {
        let directory = try Self.directory("temporary")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let victim = try Self.victim(in: directory)
        let target = directory + "/postgresql.auto.conf"
        #expect(symlink(victim, Posix.temporaryPath(for: target)) == 0)
        try Posix.writeFile(target, contents: "work_mem = '8MB'\n", user: nil, mode: 0o600)
        #expect(Self.unchanged(victim), "the victim behind the planted link was written to")
        #expect((try? String(contentsOfFile: target, encoding: .utf8)) == "work_mem = '8MB'\n")
        var info = stat()
        #expect(lstat(target, &info) == 0 && info.st_mode & S_IFMT == S_IFREG)
        #expect(info.st_mode & 0o777 == 0o600)
    }

    /// A link at the final path is replaced by the file, never written through.
    @Test func aLinkAtThePathIsReplacedNotFollowed() throws {
        let directory = try Self.directory("final")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let victim = try Self.victim(in: directory)
        let target = directory + "/standby.signal"
        #expect(symlink(victim, target) == 0)
        try Posix.writeFile(target, contents: "", user: nil, mode: 0o600)
        #expect(Self.unchanged(victim))
        var info = stat()
        #expect(lstat(target, &info) == 0 && info.st_mode & S_IFMT == S_IFREG, "the link is still there")
    }

    /// The server log is opened once, without following a link; a link there is refused with a
    /// message that says what to do. Before, root opened (appending to) and fchowned the victim.
    @Test func aLinkAtTheServerLogIsRefused() throws {
        let directory = try Self.directory("log")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let victim = try Self.victim(in: directory)
        let log = directory + "/data.log"
        #expect(symlink(victim, log) == 0)
        let error = #expect(throws: PostgresError.self) {
            _ = try Postmaster.spawn(
                executable: "/bin/true", arguments: [], runAs: nil, logFile: log, environment: [:], onExit: { _ in })
        }
        #expect(error?.description.contains("symbolic link") == true, "\(String(describing: error))")
        #expect(Self.unchanged(victim))
    }

    /// As root, the owner is set through the descriptor: the file ends up the postgres user's.
    @Test(.enabled(if: geteuid() == 0 && getpwnam("postgres") != nil))
    func theOwnerIsSetThroughTheDescriptor() throws {
        let directory = try Self.directory("owner")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let user = try OSUser.lookup("postgres")
        let target = directory + "/passfile"
        try Posix.writeFile(target, contents: "secret\n", user: user, mode: 0o600)
        var info = stat()
        #expect(lstat(target, &info) == 0)
        #expect(info.st_uid == user.uid && info.st_gid == user.gid && info.st_mode & 0o777 == 0o600)
    }
}
