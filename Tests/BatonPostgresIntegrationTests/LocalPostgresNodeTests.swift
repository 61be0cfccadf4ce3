import BatonCore
import BatonPostgres
import BatonTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Real PostgreSQL 15 processes. Serialized: two cores, and timings are measured.
@Suite("LocalPostgresNode on PostgreSQL 15", .serialized)
struct LocalPostgresNodeTests {
    /// Role passwords reach the server as SCRAM verifiers computed by libpq, never as text: with
    /// every statement logged, the log shows the verifier and not the password, and the password
    /// still logs in. Before, `ALTER ROLE … PASSWORD '<the password>'` was sent (escaped, in clear).
    @Test func rolePasswordsTravelAsVerifiers() async throws {
        let fixture = try PostgresFixture("scram")
        defer { fixture.cleanUp() }
        let node = try await fixture.nodeFromTemplate("scram")
        try await node.start(following: nil)
        let connection = try await fixture.connect(node)
        _ = try await connection.query("SET log_statement = 'all'")
        let secret = "plain-text-secret-42"
        try await connection.setRolePassword("scram_probe", password: secret, attributes: "LOGIN", create: true)
        try await connection.setRolePassword("scram_probe", password: secret + "b", attributes: "LOGIN", create: false)
        let stored = try await connection.query("SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_probe'")
        #expect(try stored.single().string("rolpassword")?.hasPrefix("SCRAM-SHA-256$") == true)
        await connection.close()
        let login = try await PostgresConnection.connect(
            ConnectionParameters(
                host: "127.0.0.1", port: node.configuration.port, user: "scram_probe", password: secret + "b",
                database: "postgres"))
        await login.close()
        let log = try String(contentsOfFile: node.configuration.logFile, encoding: .utf8)
        #expect(
            log.contains("ROLE \"scram_probe\" WITH LOGIN PASSWORD 'SCRAM-SHA-256$"), "the statement was not logged")
        #expect(!log.contains(secret), "the password is in the server log")
        try await node.stop(mode: .fast, timeout: .seconds(30))
    }

    /// The cluster's `postgresql.parameters` reach a running server by a reload (before, they were
    /// accepted and never applied); what the server cannot use (an unknown name, an invalid value)
    /// is left out of its configuration, so that neither the reload nor the next start fails; a
    /// change that needs a restart shows as pending_restart; the local file still wins.
    @Test func clusterParametersAreReloadedAndBadOnesLeftOut() async throws {
        let fixture = try PostgresFixture("params")
        defer { fixture.cleanUp() }
        let node = try await fixture.nodeFromTemplate("params")
        node.setParameters(["maintenance_work_mem": "96MB"])
        try await node.start(following: nil)
        let connection = try await fixture.connect(node)
        func show(_ name: String) async throws -> String? {
            try await connection.query("SHOW \(name)").single().values.first ?? nil
        }
        let refused = try #require(
            try await node.applyClusterParameters([
                "work_mem": "64MB", "wokr_mem": "1MB", "statement_timeout": "not a duration",
                "maintenance_work_mem": "32MB", "max_connections": "150",
            ]))
        #expect(Set(refused.map(\.name)) == ["wokr_mem", "statement_timeout"], "\(refused)")
        #expect(refused.allSatisfy { !$0.reason.isEmpty && !$0.reason.contains("\n") })
        var applied = false
        for _ in 0..<50 where !applied {
            applied = try await show("work_mem") == "64MB"
            if !applied { try await Task.sleep(for: .milliseconds(100)) }
        }
        let workMem = try await show("work_mem")
        #expect(applied, "work_mem is \(workMem ?? "?")")
        #expect(try await show("maintenance_work_mem") == "96MB")
        let written = try await connection.query(
            "SELECT name FROM pg_file_settings WHERE name IN ('wokr_mem', 'statement_timeout', 'work_mem')")
        #expect(written.rows.map { $0.values.first ?? nil } == ["work_mem"])
        #expect(await node.status().pendingRestart)
        // Which change waits for the restart, as Patroni 4's pending_restart_reason says it.
        let reason = await node.status().pendingRestartReason
        #expect(
            reason["max_connections"]?.newValue == "150" && reason["max_connections"]?.oldValue != "150", "\(reason)")
        // Unchanged parameters are not written or reloaded again.
        #expect(
            try await node.applyClusterParameters([
                "work_mem": "64MB", "wokr_mem": "1MB", "statement_timeout": "not a duration",
                "maintenance_work_mem": "32MB", "max_connections": "150",
            ])?.isEmpty == true)
        await connection.close()
        // The restart takes max_connections, and the refused lines did not stop it.
        try await node.restart()
        let after = try await fixture.connect(node)
        #expect(try await after.query("SHOW max_connections").single().values.first == "150")
        #expect(await node.status().pendingRestart == false)
        await after.close()
        try await node.stop(mode: .fast, timeout: .seconds(30))
        // An agent that starts again and starts postgres before it reads etcd (or cannot) keeps
        // the parameters last put in force, kept in the data directory (before: the defaults, so
        // max_connections fell back to 100).
        let again = try fixture.node(node.configuration)
        try await again.start(following: nil)
        let restarted = try await fixture.connect(again)
        #expect(try await restarted.query("SHOW max_connections").single().values.first == "150")
        #expect(try await restarted.query("SHOW work_mem").single().values.first == "64MB")
        await restarted.close()
        try await again.stop(mode: .fast, timeout: .seconds(30))
    }

    /// `postgresql.pg_hba`/`pg_ident` (before: refused at load): written and reloaded; files
    /// PostgreSQL cannot read (a bad address, a bad ident line) are refused with its own message
    /// and both previous files stay; rules that would lock the agent's session out are put back;
    /// only checked rules are written again at a start (a clone brings its source's file).
    @Test func accessRulesAreCheckedByPostgresBeforeTheyAreUsed() async throws {
        let fixture = try PostgresFixture("hba")
        defer { fixture.cleanUp() }
        let node = try await fixture.nodeFromTemplate("hba")
        // Postgres is not running: nothing is written, the caller asks again.
        #expect(try await node.applyAccessRules(AccessRules(hba: ["local all all trust"]), source: "config key") == nil)
        try await node.start(following: nil)
        let hbaPath = node.configuration.dataDirectory + "/pg_hba.conf"
        let identPath = node.configuration.dataDirectory + "/pg_ident.conf"
        let good = [
            "local all all peer map=baton_test",
            "host all all 127.0.0.1/32 scram-sha-256",
            "host replication all 127.0.0.1/32 scram-sha-256",
            "host all probe_user 10.9.8.0/24 reject",
        ]
        let rules = AccessRules(hba: good, ident: ["baton_test postgres postgres"])
        let refused = try await node.applyAccessRules(rules, source: "agent's file")
        #expect(refused?.isEmpty == true, "\(String(describing: refused))")
        let hba = try String(contentsOfFile: hbaPath, encoding: .utf8)
        let ident = try String(contentsOfFile: identPath, encoding: .utf8)
        #expect(hba.contains("10.9.8.0/24 reject") && hba.hasPrefix("# Managed by Baton from postgresql.pg_hba"))
        let connection = try await fixture.connect(node)
        let read = try await connection.query(
            "SELECT count(*) FROM pg_hba_file_rules WHERE address = '10.9.8.0' AND error IS NULL")
        #expect(try read.single().int("count") == 1)
        let maps = try await connection.query("SELECT map_name FROM pg_ident_file_mappings WHERE error IS NULL")
        #expect(maps.rows.map { $0.values.first ?? nil } == ["baton_test"])

        // PostgreSQL refuses the address: the file in force stays, with PostgreSQL's reason.
        let bad = try await node.applyAccessRules(
            AccessRules(hba: good + ["host all all 10.0.0.0/33 md5"], ident: rules.ident), source: "config key")
        #expect(bad?.count == 1 && bad?[0].contains("postgresql.pg_hba") == true, "\(String(describing: bad))")
        #expect(bad?[0].contains("line 6") == true, "\(String(describing: bad))")
        #expect(try String(contentsOfFile: hbaPath, encoding: .utf8) == hba)

        // A new hba naming a new map, with an ident file PostgreSQL refuses: neither goes in
        // (before, pg_hba.conf was reloaded alone and pointed at a map that did not exist).
        let paired = try await node.applyAccessRules(
            AccessRules(hba: ["local all all peer map=newmap"] + good.dropFirst(), ident: ["newmap postgres"]),
            source: "config key")
        #expect(
            paired?.count == 1 && paired?[0].contains("postgresql.pg_ident") == true, "\(String(describing: paired))")
        #expect(try String(contentsOfFile: hbaPath, encoding: .utf8) == hba)
        #expect(try String(contentsOfFile: identPath, encoding: .utf8) == ident)

        // Rules that admit nobody over TCP from 127.0.0.1 would lock the agent out: put back.
        let lockout = try await node.applyAccessRules(
            AccessRules(hba: ["local all all peer", "host all all 127.0.0.1/32 reject"], ident: nil),
            source: "config key")
        #expect(
            lockout?.count == 1 && lockout?[0].contains("refuse the agent's own connection") == true,
            "\(String(describing: lockout))")
        #expect(try String(contentsOfFile: hbaPath, encoding: .utf8) == hba)
        let still = try await fixture.connect(node)
        await still.close()

        // A start writes the rules last checked over whatever is there, never unchecked ones.
        try await node.stop(mode: .fast, timeout: .seconds(30))
        try "host all all 0.0.0.0/0 trust\n".write(toFile: hbaPath, atomically: true, encoding: .utf8)
        try await node.start(following: nil)
        #expect(try String(contentsOfFile: hbaPath, encoding: .utf8) == hba)
        await connection.close()
        try await node.stop(mode: .fast, timeout: .seconds(30))
    }

    @Test func bootstrapStartStatusStop() async throws {
        let fixture = try PostgresFixture("bootstrap")
        defer { fixture.cleanUp() }
        let node = try fixture.node(try fixture.configuration("alpha"))
        #expect(await node.status().process == .uninitialized)

        let systemIdentifier = try await node.bootstrap()
        let status = await node.status()
        #expect(status.process == .running, "\(status)")
        #expect(status.inRecovery == false)
        #expect(status.timeline == 1)
        #expect(status.systemIdentifier == systemIdentifier)
        #expect((status.serverVersion ?? 0) >= 150_000)
        #expect(status.currentLSN != nil)
        #expect(status.postmasterStartTime != nil)
        #expect(status.postmasterPID == node.postmasterPID)
        #expect(status.pendingRestart == false)

        // Data directory owned by postgres, 0700; passfile 0600.
        var info = stat()
        #expect(stat(node.configuration.dataDirectory, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o700)
        #expect(stat(node.configuration.passfile, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)

        try await node.reload()
        let pid = node.postmasterPID
        try await node.restart()
        #expect(node.postmasterPID != pid)
        #expect(await node.status().process == .running)

        try await node.stop(mode: .fast, timeout: .seconds(30))
        #expect(await node.status().process == .stopped)
        try await node.start(following: nil)
        #expect(await node.status().process == .running)
        try await node.stop(mode: .smart, timeout: .seconds(30))
        #expect(await node.status().process == .stopped)
    }

    @Test func cloneStreamPromoteAndRewind() async throws {
        let fixture = try PostgresFixture("failover")
        defer { fixture.cleanUp() }
        let a = try await fixture.nodeFromTemplate("node-a")
        let b = try fixture.node(try fixture.configuration("node-b"))
        try await a.start(following: nil)
        try await a.syncReplicationSlots(forMembers: ["node-a", "node-b"])
        #expect(await a.status().slots.map(\.name) == ["node_b"])
        let sessionA = try await fixture.connect(a)
        _ = try await sessionA.query("CREATE TABLE t (id int PRIMARY KEY, origin text)")
        _ = try await sessionA.query("INSERT INTO t SELECT g, 'a' FROM generate_series(1, 1000) g")

        // Clone.
        let reports = ProgressLog()
        let cloneStart = ContinuousClock.now
        try await b.cloneReplica(from: fixture.source(a)) { reports.append($0) }
        let cloneTime = ContinuousClock.now - cloneStart
        #expect(reports.last?.percent == 100)
        try await b.start(following: fixture.source(a))

        // Streaming with zero lag.
        try await PostgresFixture.eventually("node-b streams from node-a with zero lag") {
            let primary = await a.status()
            let replica = await b.status()
            guard let row = primary.replication.first(where: { $0.applicationName == "node-b" }) else { return false }
            return row.state == "streaming" && replica.streaming && replica.inRecovery == true
                && replica.replayLSN == primary.currentLSN && row.replayLSN == primary.currentLSN
        }
        #expect(await a.status().slots.first?.active == true)
        #expect(await b.status().upstream == "127.0.0.1:\(a.configuration.port)")
        // Slots: an active one is never dropped, whatever the plan says; an inactive one is.
        try await a.applyReplicationSlots(create: ["pgbackrest"], drop: [])
        #expect(try await a.physicalReplicationSlots().mapValues(\.active) == ["node_b": true, "pgbackrest": false])
        try await a.applyReplicationSlots(create: [], drop: ["node_b", "pgbackrest"])
        #expect(try await a.physicalReplicationSlots().mapValues(\.active) == ["node_b": true])
        // use_slots off on a running standby: it stops naming its slot (reloaded), and back.
        try await b.setReplicationSlotUse(false)
        try await PostgresFixture.eventually("node-b streams without its slot") {
            let slots = try? await a.physicalReplicationSlots().mapValues(\.active)
            let streaming = await a.status().replication.first { $0.applicationName == "node-b" }?.state
            return slots == ["node_b": false] && streaming == "streaming"
        }
        try await b.setReplicationSlotUse(true)
        try await PostgresFixture.eventually("node-b streams through its slot again") {
            (try? await a.physicalReplicationSlots().mapValues(\.active)) == ["node_b": true]
        }
        // What /patroni shows as xlog.paused and xlog.replayed_timestamp (before: always false
        // and null): a standby whose replay an operator paused says so.
        #expect(await b.status().replayPaused == false)
        _ = try await sessionA.query("INSERT INTO t VALUES (1001, 'a')")
        try await PostgresFixture.eventually("node-b shows when it replayed the last commit") {
            await b.status().lastReplayTimestamp?.hasSuffix(" UTC") == true
        }
        let standbySession = try await fixture.connect(b)
        _ = try await standbySession.query("SELECT pg_wal_replay_pause()")
        try await PostgresFixture.eventually("node-b reports its replay paused") {
            await b.status().replayPaused == true
        }
        _ = try await standbySession.query("SELECT pg_wal_replay_resume()")
        await standbySession.close()
        #expect(await a.status().replayPaused == false)

        // Promote B while A keeps running (a partition), and see writes on timeline 2.
        let promoteStart = ContinuousClock.now
        try await b.promote(timeout: .seconds(30))
        let promoteTime = ContinuousClock.now - promoteStart
        let sessionB = try await fixture.connect(b)
        _ = try await sessionB.query("INSERT INTO t VALUES ($1, $2)", ["2001", "b"])
        let promoted = await b.status()
        #expect(promoted.inRecovery == false)
        #expect(promoted.timeline == 2)
        try await b.syncReplicationSlots(forMembers: ["node-a", "node-b"])

        // A diverges on timeline 1, then is demoted and rewound into a replica of B.
        _ = try await sessionA.query("INSERT INTO t VALUES ($1, $2)", ["3001", "a-diverged"])
        await sessionA.close()
        // The old primary goes down uncleanly (as in a failover), so pg_rewind must recover it first.
        try await a.stop(mode: .immediate, timeout: .seconds(30))
        let rewindStart = ContinuousClock.now
        try await a.rewind(from: fixture.source(b))
        try await PostgresFixture.eventually("node-a streams from node-b with zero lag") {
            let primary = await b.status()
            let replica = await a.status()
            return replica.streaming && replica.inRecovery == true && replica.timeline == 2
                && replica.replayLSN == primary.currentLSN
        }
        let rewindTime = ContinuousClock.now - rewindStart
        let check = try await fixture.connect(a)
        let rows = try await check.query("SELECT origin, count(*)::int AS n FROM t GROUP BY origin ORDER BY origin")
        #expect(try rows.rows.map { try $0.string("origin") } == ["a", "b"])
        await check.close()
        await sessionB.close()

        print(
            "MEASURED clone=\(ms(cloneTime)) ms (\(reports.last?.totalKB ?? 0) kB) "
                + "promote-to-writable=\(ms(promoteTime)) ms rewind-rejoin=\(ms(rewindTime)) ms")
        try await a.stop(mode: .fast, timeout: .seconds(30))
        try await b.stop(mode: .fast, timeout: .seconds(30))
    }

    /// An asynchronous standby ahead of the standby that gets promoted (it received WAL of the old
    /// timeline past the fork point) cannot follow the new primary: PostgreSQL refuses the new
    /// timeline, and the standby reports itself in recovery, not streaming, on the old timeline —
    /// the signal the HA loop acts on (`HADecider.rejoinIfStuck`). pg_rewind brings it back.
    @Test func aStandbyAheadOfTheNewPrimaryIsStuckUntilRewound() async throws {
        let fixture = try PostgresFixture("diverged-standby")
        defer { fixture.cleanUp() }
        let a = try await fixture.nodeFromTemplate("node-a")
        let b = try fixture.node(try fixture.configuration("node-b"))
        let c = try fixture.node(try fixture.configuration("node-c"))
        try await a.start(following: nil)
        try await a.syncReplicationSlots(forMembers: ["node-a", "node-b", "node-c"])
        let sessionA = try await fixture.connect(a)
        _ = try await sessionA.query("CREATE TABLE t (id int PRIMARY KEY, origin text)")
        for node in [b, c] {
            try await node.cloneReplica(from: fixture.source(a), progress: nil)
            try await node.start(following: fixture.source(a))
        }
        try await PostgresFixture.eventually("node-b and node-c stream from node-a") {
            let primary = await a.status()
            let (sb, sc) = (await b.status(), await c.status())
            return sb.streaming && sc.streaming && sb.replayLSN == primary.currentLSN
                && sc.replayLSN == primary.currentLSN
        }
        // node-c stops; node-a writes more, which only node-b receives; node-a dies.
        try await c.stop(mode: .fast, timeout: .seconds(30))
        _ = try await sessionA.query("INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g")
        let end = await a.status().currentLSN
        try await PostgresFixture.eventually("node-b replays node-a's last write") {
            await b.status().replayLSN == end
        }
        await sessionA.close()
        try await a.stop(mode: .immediate, timeout: .seconds(30))

        // node-c, behind node-b, becomes the primary (timeline 2); node-b is pointed at it.
        try await c.start(following: fixture.source(a))
        try await c.promote(timeout: .seconds(30))
        try await c.syncReplicationSlots(forMembers: ["node-a", "node-b", "node-c"])
        #expect(await c.status().timeline == 2)
        try await b.follow(fixture.source(c))
        // Stuck: in recovery, not streaming, on timeline 1, for as long as we look (3 s).
        for _ in 0..<6 {
            try await Task.sleep(for: .milliseconds(500))
            let stuck = await b.status()
            #expect(stuck.inRecovery == true && !stuck.streaming && stuck.timeline == 1, "\(stuck)")
        }

        // What `rejoinDiverged` runs: stop, pg_rewind (it diverged), start following node-c.
        try await b.rewind(from: fixture.source(c))
        try await PostgresFixture.eventually("node-b streams from node-c on timeline 2") {
            let primary = await c.status()
            let replica = await b.status()
            return replica.streaming && replica.timeline == 2 && replica.replayLSN == primary.currentLSN
        }
        // node-b now has node-c's history: none of the rows only node-b had received.
        let check = try await fixture.connect(b)
        let count = try await check.query("SELECT count(*)::int AS n FROM t").single().int("n")
        #expect(count == 0)
        await check.close()
        for node in [b, c] { try await node.stop(mode: .fast, timeout: .seconds(30)) }
    }

    /// A planned switchover: the old primary is demoted (clean stop, restarted as a standby), the
    /// replica that received all of its WAL is promoted, and the old primary follows it by reload,
    /// without a rewind.
    /// Patroni's rule (before: not applied): a standby whose primary runs with a higher
    /// max_connections than the standby's configuration starts with the primary's (from
    /// pg_controldata). Without it PostgreSQL refuses to run recovery.
    @Test func aStandbyStartsWithThePrimarysHigherMaxConnections() async throws {
        let fixture = try PostgresFixture("floors")
        defer { fixture.cleanUp() }
        let a = try await fixture.nodeFromTemplate("fl-a")
        let b = try fixture.node(try fixture.configuration("fl-b"))
        try await a.start(following: nil)
        _ = try await a.applyClusterParameters(["max_connections": "150"])
        try await a.restart()
        try await b.cloneReplica(from: fixture.source(a))
        try await b.start(following: fixture.source(a))
        let session = try await fixture.connect(b)
        let value = try await session.query("SHOW max_connections").single().string("max_connections")
        await session.close()
        #expect(value == "150")
        try await b.stop(mode: .fast, timeout: .seconds(30))
        try await a.stop(mode: .fast, timeout: .seconds(30))
    }

    @Test func switchoverDemoteAndFollow() async throws {
        let fixture = try PostgresFixture("switchover")
        defer { fixture.cleanUp() }
        let a = try await fixture.nodeFromTemplate("sw-a")
        let b = try fixture.node(try fixture.configuration("sw-b"))
        try await a.start(following: nil)
        try await a.syncReplicationSlots(forMembers: ["sw-a", "sw-b"])
        try await b.cloneReplica(from: fixture.source(a))
        try await b.start(following: fixture.source(a))
        _ = try await a.setSynchronousStandbys(["sw-b"])
        try await PostgresFixture.eventually("sw-b is a synchronous standby") {
            await a.status().replication.first { $0.applicationName == "sw-b" }?.syncState == "sync"
        }

        try await a.demote(toFollow: nil, mode: .fast)
        let demoted = await a.status()
        #expect(demoted.inRecovery == true)
        let endOfOldPrimary = try #require(demoted.replayLSN)
        try await PostgresFixture.eventually("node-b received all of node-a's WAL") {
            (await b.status().replayLSN ?? .zero) >= endOfOldPrimary
        }
        try await b.promote(timeout: .seconds(30))
        try await b.syncReplicationSlots(forMembers: ["sw-a", "sw-b"])
        let pidBefore = a.postmasterPID
        try await a.follow(fixture.source(b))
        try await PostgresFixture.eventually("old primary streams from the new one on timeline 2") {
            let primary = await b.status()
            let replica = await a.status()
            return replica.streaming && replica.timeline == 2 && replica.replayLSN == primary.currentLSN
        }
        #expect(a.postmasterPID == pidBefore, "follow must reload, not restart")

        // With pg_rewind disabled and re-clone allowed, a rejoin falls back to a fresh clone.
        var recloning = a.configuration
        recloning.usePgRewind = false
        recloning.removeDataDirectoryOnRewindFailure = true
        let a2 = try fixture.node(recloning)
        try await a2.rewind(from: fixture.source(b))
        try await PostgresFixture.eventually("re-cloned member streams from the new primary") {
            let primary = await b.status()
            let replica = await a2.status()
            return replica.streaming && replica.timeline == 2 && replica.replayLSN == primary.currentLSN
        }
        try await a2.stop(mode: .fast, timeout: .seconds(30))
        try await b.stop(mode: .fast, timeout: .seconds(30))
    }

    @Test func sigkillIsNoticedAtOnce() async throws {
        let fixture = try PostgresFixture("kill")
        defer { fixture.cleanUp() }
        let node = try await fixture.nodeFromTemplate("kill")
        try await node.start(following: nil)
        let pid = try #require(node.postmasterPID)
        let exits = node.terminations()
        let killed = ContinuousClock.now
        kill(pid, SIGKILL)
        var iterator = exits.makeAsyncIterator()
        let exit = try #require(await iterator.next())
        let noticed = ContinuousClock.now - killed
        print("MEASURED child SIGKILL noticed after \(ms(noticed)) ms")
        #expect(exit.pid == pid)
        #expect(exit.bySignal && exit.status == SIGKILL)
        #expect(exit.requested == false)
        #expect(noticed < .milliseconds(200))
        #expect(await node.status().process == .crashed)
    }

    @Test func adoptsARunningPostmaster() async throws {
        let fixture = try PostgresFixture("adopt")
        defer { fixture.cleanUp() }
        let first = try await fixture.nodeFromTemplate("adopt")
        try await first.start(following: nil)
        let pid = try #require(first.postmasterPID)

        // A second agent on the same data directory (an agent restart) adopts instead of starting.
        let second = try fixture.node(first.configuration)
        let status = await second.status()
        #expect(status.process == .running)
        #expect(status.postmasterPID == pid)
        try await second.start(following: nil)
        #expect(second.postmasterPID == pid)

        let exits = second.terminations()
        let killed = ContinuousClock.now
        kill(pid, SIGKILL)
        var iterator = exits.makeAsyncIterator()
        let exit = try #require(await iterator.next())
        let noticed = ContinuousClock.now - killed
        print("MEASURED adopted SIGKILL noticed after \(ms(noticed)) ms")
        #expect(exit.pid == pid)
        #expect(noticed < .milliseconds(200))
        #expect(await second.status().process == .crashed)
    }

    @Test func wrongDataDirectory() async throws {
        let fixture = try PostgresFixture("nodir")
        defer { fixture.cleanUp() }
        let node = try fixture.node(try fixture.configuration("missing"))
        let error = try await #require(throws: PostgresError.self) { try await node.start(following: nil) }
        #expect(error.code == .dataDirectoryMissing)
        #expect(error.message.contains(node.configuration.dataDirectory))

        try FileManager.default.createDirectory(
            atPath: node.configuration.dataDirectory, withIntermediateDirectories: true)
        let notInitialized = try await #require(throws: PostgresError.self) { try await node.start(following: nil) }
        #expect(notInitialized.code == .dataDirectoryNotInitialized)
        #expect(notInitialized.message.contains("PG_VERSION"))
    }

    @Test func wrongPermissions() async throws {
        let fixture = try PostgresFixture("perms")
        defer { fixture.cleanUp() }
        let node = try await fixture.nodeFromTemplate("perms")
        chmod(node.configuration.dataDirectory, 0o755)
        let error = try await #require(throws: PostgresError.self) { try await node.start(following: nil) }
        #expect(error.code == .dataDirectoryPermissions)
        #expect(error.message.contains("chmod 700 \(node.configuration.dataDirectory)"))
        #expect(node.postmasterPID == nil)
    }

    @Test func portInUse() async throws {
        let fixture = try PostgresFixture("port")
        defer { fixture.cleanUp() }
        let port = try TestEnvironment.freePort()
        let listener = try Listener(port: port)
        defer { listener.close() }
        let node = try await fixture.nodeFromTemplate("port", port: port)
        let error = try await #require(throws: PostgresError.self) { try await node.start(following: nil) }
        #expect(error.code == .portInUse)
        #expect(error.message.contains("port \(port)"))
        #expect(node.postmasterPID == nil)
    }

    @Test func wrongPassword() async throws {
        let fixture = try PostgresFixture("password")
        defer { fixture.cleanUp() }
        let node = try await fixture.nodeFromTemplate("password")
        try await node.start(following: nil)
        let error = try await #require(throws: PostgresError.self) {
            _ = try await PostgresConnection.connect(
                ConnectionParameters(
                    host: "127.0.0.1", port: node.configuration.port, user: "postgres", password: "wrong"))
        }
        #expect(error.code == .authenticationFailed)
        #expect(error.sqlState == "28P01")
        #expect(error.message.contains("postgres") && error.message.contains("127.0.0.1:\(node.configuration.port)"))
        #expect(!error.description.contains("wrong"))

        // The agent configured with a wrong password reports it in its status instead of hanging.
        let misconfigured = try fixture.node(
            try fixture.configuration(
                "password", port: node.configuration.port,
                superuser: Credentials(username: "postgres", password: "nope")))
        let status = await misconfigured.status()
        #expect(status.problem?.contains("password authentication failed") == true)
        try await node.stop(mode: .fast, timeout: .seconds(30))
    }

    @Test func connectDeadline() async throws {
        let port = try TestEnvironment.freePort()
        let silent = try Listener(port: port)  // accepts TCP, never speaks
        defer { silent.close() }
        let started = ContinuousClock.now
        let error = try await #require(throws: PostgresError.self) {
            _ = try await PostgresConnection.connect(
                ConnectionParameters(
                    host: "127.0.0.1", port: port, user: "postgres", connectTimeout: .milliseconds(300)))
        }
        #expect(error.code == .connectTimeout)
        #expect(ContinuousClock.now - started < .seconds(1))
    }

    @Test func statementDeadlineAndSQLState() async throws {
        let fixture = try PostgresFixture("deadline")
        defer { fixture.cleanUp() }
        let node = try await fixture.nodeFromTemplate("deadline")
        try await node.start(following: nil)
        let session = try await PostgresConnection.connect(
            ConnectionParameters(
                host: "127.0.0.1", port: node.configuration.port, user: PostgresFixture.superuser.username,
                password: PostgresFixture.superuser.password, statementTimeout: .milliseconds(300)))
        let started = ContinuousClock.now
        let timeout = try await #require(throws: PostgresError.self) {
            _ = try await session.query("SELECT pg_sleep(5)")
        }
        #expect(timeout.code == .statementTimeout)
        #expect(timeout.sqlState == "57014")
        #expect(ContinuousClock.now - started < .seconds(2))
        let missing = try await #require(throws: PostgresError.self) {
            _ = try await session.query("SELECT * FROM nope")
        }
        #expect(missing.sqlState == "42P01")
        let typed = try await session.query("SELECT $1::int + 1 AS n, NULL::text AS nothing, true AS yes", ["41"])
            .single()
        #expect(try typed.int("n") == 42)
        #expect(try typed.string("nothing") == nil)
        #expect(try typed.bool("yes") == true)
        await session.close()
        try await node.stop(mode: .immediate, timeout: .seconds(30))
    }
}

final class ProgressLog: @unchecked Sendable {
    private let lock = NSLock()
    private var reports: [CloneProgress] = []
    func append(_ report: CloneProgress) { lock.withLock { reports.append(report) } }
    var last: CloneProgress? { lock.withLock { reports.last } }
}

/// A TCP listener on 127.0.0.1:port, to occupy a port.
struct Listener {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 1) == 0 else {
            Glibc.close(fd)
            throw PostgresError(.io, "could not listen on 127.0.0.1:\(port)")
        }
    }

    func close() { Glibc.close(fd) }
}

/// Whole milliseconds of `duration`.
func ms(_ duration: Duration) -> Int64 {
    let (seconds, attoseconds) = duration.components
    return seconds * 1000 + attoseconds / 1_000_000_000_000_000
}
