import BatonCore
import BatonPostgres
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Unknown is not false, on real PostgreSQL 15: a data directory that is there but not a cluster
/// is never deleted or cloned into; a fence stops postgres without asking it and keeps a slow
/// restart from bringing a primary back; the synchronous standbys are all waited for.
@Suite("LocalPostgresNode: local lies", .serialized)
struct LocalLiesNodeTests {
    /// Relative paths and sizes of every regular file under `root`, for "nothing was deleted".
    static func files(_ root: String) -> [String: Int] {
        var result: [String: Int] = [:]
        guard let walker = FileManager.default.enumerator(atPath: root) else { return result }
        while let path = walker.nextObject() as? String {
            var info = stat()
            if lstat(root + "/" + path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG {
                result[path] = Int(info.st_size)
            }
        }
        return result
    }

    static func chownToPostgres(_ path: String) throws {
        try PostgresFixture.shell("/bin/chown", ["-R", "postgres:postgres", path])
    }

    /// Before: status() said "uninitialized" as soon as PG_VERSION could not be stat'ed, and
    /// cloneReplica deleted every entry of the directory. The issue's first finding.
    @Test func aDataDirectoryWithoutPGVersionIsUnusableAndNeverClonedInto() async throws {
        let fixture = try PostgresFixture("pgversion")
        defer { fixture.cleanUp() }
        let primary = try await fixture.nodeFromTemplate("lead")
        let damaged = try await fixture.nodeFromTemplate("damaged")
        try await primary.start(following: nil)
        try await damaged.start(following: nil)
        let data = damaged.configuration.dataDirectory
        let pid = try #require(damaged.postmasterPID)
        let aside = fixture.root.path + "/PG_VERSION.moved"
        #expect(rename(data + "/PG_VERSION", aside) == 0)
        let before = Self.files(data)

        let status = await damaged.status()
        #expect(status.process == .unusable, "\(status)")
        #expect(status.postmasterPID == pid, "a postmaster still runs on it: \(status)")
        #expect(status.problem?.contains(data) == true && status.problem?.contains("PG_VERSION") == true)

        await #expect(throws: PostgresError.self) {
            try await damaged.cloneReplica(from: fixture.source(primary))
        }
        await #expect(throws: PostgresError.self) { _ = try await damaged.bootstrap() }
        #expect(damaged.postmasterPID == pid, "refusing to clone must not stop postgres either")
        try await damaged.stop(mode: .fast, timeout: .seconds(30))
        let after = Self.files(data).filter { !$0.key.hasPrefix("pg_") && $0.key != "postmaster.pid" }
        let kept = before.filter { !$0.key.hasPrefix("pg_") && $0.key != "postmaster.pid" }
        // pg_internal.init (a relcache file) is postgres's own to remove at start-up.
        let deleted = Set(kept.keys).subtracting(after.keys).filter { !$0.hasSuffix("pg_internal.init") }
        #expect(deleted.isEmpty, "files deleted: \(deleted.sorted())")
        #expect(after.count > 500, "a whole cluster's files are still there: \(after.count)")

        // Repaired by hand, it is a cluster again.
        #expect(rename(aside, data + "/PG_VERSION") == 0)
        #expect(await damaged.status().process == .stopped)
        try await damaged.start(following: nil)
        #expect(await damaged.status().inRecovery == false)
        try await damaged.stop(mode: .fast, timeout: .seconds(30))
        try await primary.stop(mode: .fast, timeout: .seconds(30))
    }

    /// Review finding: a `data_dir` that is a symbolic link to the cluster (common on hosts that
    /// mount storage elsewhere) is a valid data directory, not an unusable one — taking it for
    /// unusable stopped every member at once. A re-clone moves the target aside and keeps the link.
    @Test func aSymlinkedDataDirectoryIsValidAndKeepsItsLink() async throws {
        let fixture = try PostgresFixture("symlink")
        defer { fixture.cleanUp() }
        let primary = try await fixture.nodeFromTemplate("lead")
        let node = try await fixture.nodeFromTemplate("linked")
        let data = node.configuration.dataDirectory
        let real = data + ".real"
        #expect(rename(data, real) == 0)
        #expect(symlink(real, data) == 0)
        #expect(await node.status().process == .stopped)
        try await node.start(following: nil)
        #expect(await node.status().inRecovery == false)
        try await node.stop(mode: .fast, timeout: .seconds(30))
        try await primary.start(following: nil)
        try await node.clearDataDirectory(reason: "test: reinitialize through a link")
        var info = stat()
        #expect(lstat(data, &info) == 0 && (info.st_mode & S_IFMT) == S_IFLNK, "the link stays")
        #expect(await node.status().process == .uninitialized)
        try await node.cloneReplica(from: fixture.source(primary))
        #expect(FileManager.default.fileExists(atPath: real + "/PG_VERSION"), "cloned through the link")
        try await primary.stop(mode: .fast, timeout: .seconds(30))
    }

    /// A `data_dir` that points by mistake at a non-empty directory: refused with its path and
    /// what is in it; the files stay byte for byte. Before: emptied by the clone.
    @Test func aForeignNonEmptyDirectoryIsRefusedWithWhatIsInIt() async throws {
        let fixture = try PostgresFixture("foreign")
        defer { fixture.cleanUp() }
        let primary = try await fixture.nodeFromTemplate("lead")
        try await primary.start(following: nil)
        let configuration = try fixture.configuration("foreign")
        let data = configuration.dataDirectory
        try FileManager.default.createDirectory(atPath: data + "/photos", withIntermediateDirectories: true)
        try Data("do not delete\n".utf8).write(to: URL(fileURLWithPath: data + "/important.txt"))
        try Data(repeating: 7, count: 4096).write(to: URL(fileURLWithPath: data + "/photos/1.jpg"))
        try Self.chownToPostgres(data)
        chmod(data, 0o700)
        let node = try fixture.node(configuration)

        let status = await node.status()
        #expect(status.process == .unusable, "\(status)")
        #expect(status.problem?.contains("important.txt") == true, "names what is there: \(status.problem ?? "")")
        do {
            try await node.cloneReplica(from: fixture.source(primary))
            Issue.record("cloning into a non-empty directory must be refused")
        } catch let error as PostgresError {
            #expect(error.code == .dataDirectoryUnusable, "\(error)")
            #expect(error.message.contains(data), "\(error)")
        }
        #expect(Self.files(data) == ["important.txt": 14, "photos/1.jpg": 4096])
        #expect(try String(contentsOfFile: data + "/important.txt", encoding: .utf8) == "do not delete\n")
        try await primary.stop(mode: .fast, timeout: .seconds(30))
    }

    /// A re-clone the agent may do (reinitialize) moves the old directory aside first; nothing is
    /// deleted, and the clone then goes into an empty directory.
    @Test func clearingBeforeAReCloneMovesTheDirectoryAside() async throws {
        let fixture = try PostgresFixture("aside")
        defer { fixture.cleanUp() }
        let primary = try await fixture.nodeFromTemplate("lead")
        let replica = try await fixture.nodeFromTemplate("again")
        try await primary.start(following: nil)
        let data = replica.configuration.dataDirectory
        let before = Self.files(data)
        await #expect(throws: PostgresError.self) { try await replica.cloneReplica(from: fixture.source(primary)) }
        try await replica.clearDataDirectory(reason: "test: reinitialize")
        let siblings = try FileManager.default.contentsOfDirectory(atPath: (data as NSString).deletingLastPathComponent)
        let moved = try #require(
            siblings.first { $0.hasPrefix((data as NSString).lastPathComponent + ".baton-moved-") })
        let movedPath = (data as NSString).deletingLastPathComponent + "/" + moved
        #expect(Self.files(movedPath) == before)
        try await replica.cloneReplica(from: fixture.source(primary))
        #expect(await replica.status().process == .stopped)
        try await primary.stop(mode: .fast, timeout: .seconds(30))
    }

    /// Fencing does not ask postgres: it stops the postmaster at once, and until the fence is
    /// lifted no start can bring up a primary — including the start half of a restart whose
    /// shutdown outlasted the lease (the checkpointer is held with SIGSTOP so that the fast
    /// shutdown hangs). A standby start stays allowed. Before: the fence asked postgres for its
    /// status, found "stopped"/"starting" and did nothing; the restart then came back writable.
    @Test func aFenceStopsPostgresAndOutlivesASlowRestart() async throws {
        let fixture = try PostgresFixture("fence")
        defer { fixture.cleanUp() }
        let node = try await fixture.nodeFromTemplate("fenced")
        try await node.start(following: nil)
        let pid = try #require(node.postmasterPID)
        let checkpointer = try #require(Self.child(of: pid, named: "checkpointer"), "no checkpointer under \(pid)")
        #expect(kill(checkpointer, SIGSTOP) == 0)
        let restart = Task { try await node.restart() }
        try await Task.sleep(for: .milliseconds(800))
        #expect(kill(pid, 0) == 0, "the fast shutdown is still waiting for the stopped checkpointer")
        let fence = Task { await node.fence() }
        try await Task.sleep(for: .milliseconds(300))
        kill(checkpointer, SIGCONT)
        await fence.value
        do {
            try await restart.value
            Issue.record("the restart must not bring postgres back while fenced")
        } catch let error as PostgresError {
            #expect(error.code == .fenced, "\(error)")
        }
        try await Task.sleep(for: .milliseconds(500))
        #expect(node.postmasterPID == nil)
        #expect(await node.status().process != .running)
        await #expect(throws: PostgresError.self) { try await node.start(following: nil) }
        await #expect(throws: PostgresError.self) { try await node.restart() }

        node.liftFence()
        try await node.start(following: nil)
        #expect(await node.status().inRecovery == false)
        try await node.stop(mode: .fast, timeout: .seconds(30))
    }

    /// `synchronous_node_count` 2: postgres waits for both standbys the key would name.
    /// Before: `FIRST 1 (a,b)` — postgres waited for `a` only.
    @Test func everySynchronousStandbyIsWaitedFor() async throws {
        let fixture = try PostgresFixture("syncn")
        defer { fixture.cleanUp() }
        let node = try await fixture.nodeFromTemplate("syncp")
        try await node.start(following: nil)
        let appliedAt = try await node.setSynchronousStandbys(["b", "c"])
        // Returned once postgres shows the value: the flush position from which commits wait.
        #expect(appliedAt != nil)
        let session = try await fixture.connect(node)
        try await PostgresFixture.eventually("the setting is reloaded") {
            let value = try? await session.query("SHOW synchronous_standby_names").single().string(
                "synchronous_standby_names")
            return value == #"FIRST 2 ("b","c")"#
        }
        _ = try await node.setSynchronousStandbys(["b"])
        try await PostgresFixture.eventually("narrowed to one") {
            let value = try? await session.query("SHOW synchronous_standby_names").single().string(
                "synchronous_standby_names")
            return value == #"FIRST 1 ("b")"#
        }
        // The agent restarts (a new node object on the same running server) and rewrites the
        // managed files before its leader sets anything: the value in force is kept (review
        // finding: it was dropped, and commits stopped waiting while the key still counted on b).
        let restarted = try fixture.node(node.configuration)
        _ = try await restarted.applyClusterParameters(["work_mem": "8MB"])
        let file = try String(
            contentsOfFile: node.configuration.dataDirectory + "/" + ManagedFiles.parametersFile, encoding: .utf8)
        #expect(file.contains(#"synchronous_standby_names = 'FIRST 1 ("b")'"#), "\(file)")
        // Quorum commit: any 1 of the two.
        let quorumAt = try await node.setSynchronousStandbys(
            SynchronousSetting(names: ["c", "b"], count: 1, quorum: true))
        let shown = try await session.query("SHOW synchronous_standby_names").single().string(
            "synchronous_standby_names")
        #expect(shown == #"ANY 1 ("b","c")"#)
        let flushed = try await session.query("SELECT pg_current_wal_flush_lsn() AS lsn").single().lsn("lsn")
        #expect(quorumAt != nil && flushed != nil && quorumAt! <= flushed!)
        // Back to none: the value the configuration has (none here).
        #expect(try await node.setSynchronousStandbys(.empty) != nil)
        await session.close()
        try await node.stop(mode: .fast, timeout: .seconds(30))
    }

    /// An old primary killed (fenced) after standby.signal was already written for its rejoin
    /// rewinds on the first attempt. Found by fault scenario 18 in synchronous mode: pg_rewind's
    /// single-user crash recovery refused standby mode ("standby mode is not supported by
    /// single-user servers") about 850 times in 3 minutes; only a reinit brought the node back.
    @Test func aFencedPrimaryWithAStandbySignalRewinds() async throws {
        let fixture = try PostgresFixture("fencedrewind")
        defer { fixture.cleanUp() }
        let a = try await fixture.nodeFromTemplate("old")
        let b = try fixture.node(try fixture.configuration("new"))
        try await a.start(following: nil)
        try await a.syncReplicationSlots(forMembers: ["old", "new"])
        try await b.cloneReplica(from: fixture.source(a))
        try await b.start(following: fixture.source(a))
        try await PostgresFixture.eventually("new streams") { await b.status().streaming }
        try await b.promote(timeout: .seconds(30))
        try await b.syncReplicationSlots(forMembers: ["old", "new"])
        let session = try await fixture.connect(a)
        _ = try await session.query("CREATE TABLE diverged (id int)")
        await session.close()
        // The old primary is killed while standby.signal is in place (a start as a standby was
        // being prepared when the fence struck).
        #expect(
            FileManager.default.createFile(atPath: a.configuration.dataDirectory + "/standby.signal", contents: Data()))
        await a.fence()
        a.liftFence()
        try await a.rewind(from: fixture.source(b))
        try await PostgresFixture.eventually("old follows new") {
            let status = await a.status()
            return status.inRecovery == true && status.streaming && status.timeline == 2
        }
        try await a.stop(mode: .fast, timeout: .seconds(30))
        try await b.stop(mode: .fast, timeout: .seconds(30))
    }

    /// A rewind whose source is still in recovery (a new leader that took the key but has not
    /// finished promoting) is refused and changes nothing: the member tries again later. Before,
    /// the checkpoint was skipped and the rewind went on (fault scenario 13: the standby then could
    /// not start, "requested timeline 6 does not contain minimum recovery point … on timeline 3");
    /// here the old primary was quietly turned into a standby of a standby.
    @Test func aRewindFromASourceStillInRecoveryIsRefused() async throws {
        let fixture = try PostgresFixture("notready")
        defer { fixture.cleanUp() }
        let a = try await fixture.nodeFromTemplate("primary")
        let b = try fixture.node(try fixture.configuration("standby"))
        try await a.start(following: nil)
        try await a.syncReplicationSlots(forMembers: ["primary", "standby"])
        try await b.cloneReplica(from: fixture.source(a))
        try await b.start(following: fixture.source(a))
        try await PostgresFixture.eventually("standby streams") { await b.status().streaming }
        do {
            try await a.rewind(from: fixture.source(b))
            Issue.record("a rewind from a source in recovery went on")
        } catch let error as PostgresError {
            #expect(error.code == .rewindSourceNotReady, "\(error)")
        }
        #expect(
            !FileManager.default.fileExists(atPath: a.configuration.dataDirectory + "/standby.signal"),
            "the primary was made a standby of a standby")
        try? await b.stop(mode: .fast, timeout: .seconds(30))
        try? await a.stop(mode: .fast, timeout: .seconds(30))
    }

    /// The agent's own backend stopped with SIGSTOP (it honours neither statement_timeout nor a
    /// cancel request): the status query answers "unknown" within its deadline instead of
    /// hanging the HA cycle for ever, and answers again once the backend is gone or resumed.
    @Test func aHungStatusQueryBecomesUnknownWithinItsDeadline() async throws {
        let fixture = try PostgresFixture("hungstatus")
        defer { fixture.cleanUp() }
        var configuration = try fixture.configuration("hung")
        configuration.statusTimeout = .seconds(1)
        let node = try fixture.node(configuration)
        _ = try await node.bootstrap()
        #expect(await node.status().inRecovery == false)
        let observer = try await fixture.connect(node)
        let backend = try #require(
            try await observer.query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'baton-hung'"
            ).rows.first?.int("pid"))
        #expect(kill(Int32(backend), SIGSTOP) == 0)
        defer { kill(Int32(backend), SIGCONT) }
        let started = ContinuousClock.now
        let blind = await node.status()
        let elapsed = ContinuousClock.now - started
        #expect(blind.process == .running && blind.inRecovery == nil, "\(blind)")
        #expect(blind.problem?.contains("did not answer") == true, "\(blind.problem ?? "")")
        #expect(elapsed < .seconds(5), "took \(elapsed)")
        // The next query runs on a new session; the stopped backend no longer matters.
        #expect(await node.status().inRecovery == false)
        kill(Int32(backend), SIGCONT)
        await observer.close()
        try await node.stop(mode: .fast, timeout: .seconds(30))
    }

    static func child(of parent: Int32, named name: String) -> Int32? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for entry in entries {
            guard let pid = Int32(entry),
                let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 2, Int32(fields[1]) == parent,
                let command = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8),
                command.contains(name)
            else { continue }
            return pid
        }
        return nil
    }
}
