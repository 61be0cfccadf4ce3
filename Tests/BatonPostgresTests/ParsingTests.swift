import BatonCore
import Foundation
import Testing

@testable import BatonPostgres

@Suite("conninfo and postgresql.conf quoting")
struct QuotingTests {
    @Test func plainValuesStayBare() {
        #expect(ConnInfo.make([("host", "10.0.0.1"), ("port", "5432")]) == "host=10.0.0.1 port=5432")
    }

    @Test func spacesQuotesAndBackslashesAreQuoted() {
        #expect(ConnInfo.quote("") == "''")
        #expect(ConnInfo.quote("a b") == "'a b'")
        #expect(ConnInfo.quote("it's") == #"'it\'s'"#)
        #expect(ConnInfo.quote(#"c:\dir"#) == #"'c:\\dir'"#)
    }

    @Test func confValuesDoubleQuotesAndEscapeBackslashes() {
        #expect(PostgresConf.quote("on") == "'on'")
        #expect(PostgresConf.quote("host='x' port=1") == "'host=''x'' port=1'")
        #expect(PostgresConf.quote(#"a\b"#) == #"'a\\b'"#)
        #expect(PostgresConf.quote("line\nbreak") == "'line break'")
    }

    @Test func renderSortsParameters() {
        #expect(PostgresConf.render(["port": "5432", "hot_standby": "on"]) == "hot_standby = 'on'\nport = '5432'")
    }

    @Test func slotNamesAreSanitised() {
        #expect(PostgresConf.slotName(forMember: "Node-1.example") == "node_1_example")
        #expect(PostgresConf.slotName(forMember: "") == "member")
        #expect(PostgresConf.slotName(forMember: String(repeating: "x", count: 80)).count == 63)
    }
}

@Suite("tool output parsing")
struct ToolOutputTests {
    @Test func basebackupProgress() {
        let report = ToolOutput.basebackupProgress("  22683/22683 kB (100%), 1/1 tablespace")
        #expect(report == CloneProgress(doneKB: 22683, totalKB: 22683, percent: 100))
        #expect(
            ToolOutput.basebackupProgress("    0/31234 kB (0%), 0/1 tablespace (/var/lib/x/base/1/112)")?.totalKB
                == 31234)
        #expect(ToolOutput.basebackupProgress("pg_basebackup: initiating base backup") == nil)
    }

    @Test func controlData() {
        let text = """
            pg_control version number:            1300
            Database system identifier:           7312345678901234567
            Latest checkpoint's TimeLineID:       2
            wal_log_hints setting:                on
            Data page checksum version:           1
            """
        let fields = ToolOutput.controlData(text)
        #expect(fields["Database system identifier"] == "7312345678901234567")
        #expect(fields["Latest checkpoint's TimeLineID"] == "2")
        #expect(fields["wal_log_hints setting"] == "on")
        #expect(fields["Data page checksum version"] == "1")
    }

    @Test func rewindCheck() {
        #expect(
            ToolOutput.rewindCheck(
                "pg_rewind: source and target cluster are on the same timeline\npg_rewind: no rewind required\n")
                == .notRequired)
        let diverged =
            "pg_rewind: servers diverged at WAL location 0/3000148 on timeline 1\npg_rewind: rewinding from last common checkpoint at 0/2000060 on timeline 1\n"
        #expect(ToolOutput.rewindCheck(diverged) == .required(divergedAt: LSN(text: "0/3000148"), timeline: 1))
        #expect(ToolOutput.rewindCheck("something else") == .unknown)
    }

    /// Regression (fault matrix scenario 9 after 8, on network namespaces): a standby that followed
    /// a promotion onto timeline 6 but replayed no checkpoint since was stopped; its last
    /// restartpoint is still on timeline 5, and `pg_rewind --dry-run` failed on every cycle
    /// ("could not find previous WAL record at 0/58A3C70"), so it never came back. Its minimum
    /// recovery point is on timeline 6: no rewind is needed. (pg_controldata of that standby.)
    @Test func standbyThatAlreadyReplayedTheSourceTimelineNeedsNoRewind() {
        let text = """
            Database cluster state:               shut down in recovery
            Latest checkpoint location:           0/5167578
            Latest checkpoint's REDO location:    0/5167540
            Latest checkpoint's TimeLineID:       5
            Latest checkpoint's PrevTimeLineID:   5
            Minimum recovery ending location:     0/58C27C8
            Min recovery ending loc's timeline:   6
            """
        let control = ToolOutput.controlData(text)
        #expect(ToolOutput.standbyAlreadyOnTimeline(control, sourceTimeline: 6))
        // A source that forked again since, or a standby still on the older timeline: ask pg_rewind.
        #expect(!ToolOutput.standbyAlreadyOnTimeline(control, sourceTimeline: 7))
        let older = ToolOutput.controlData(text.replacingOccurrences(of: "timeline:   6", with: "timeline:   5"))
        #expect(!ToolOutput.standbyAlreadyOnTimeline(older, sourceTimeline: 6))
        // An old primary (shut down, not in recovery) may have diverged whatever its timeline.
        let primary = ToolOutput.controlData(
            text.replacingOccurrences(of: "shut down in recovery", with: "shut down"))
        #expect(!ToolOutput.standbyAlreadyOnTimeline(primary, sourceTimeline: 6))
        // A standby killed while in archive recovery (soak): the same holds.
        let crashed = ToolOutput.controlData(
            text.replacingOccurrences(of: "shut down in recovery", with: "in archive recovery"))
        #expect(ToolOutput.standbyAlreadyOnTimeline(crashed, sourceTimeline: 6))
        let unset = ToolOutput.controlData(text.replacingOccurrences(of: "0/58C27C8", with: "0/0"))
        #expect(!ToolOutput.standbyAlreadyOnTimeline(unset, sourceTimeline: 6))
    }

    /// Regression (fault matrix start-up on network namespaces): two replicas cloning while the
    /// leader rewrote baton.conf; its root-owned temporary file in the data directory made
    /// BASE_BACKUP fail ("could not open file ./baton.conf.tmp-892: Permission denied"). Temporary
    /// files carry PostgreSQL's prefix, which base backups and pg_rewind skip.
    @Test func temporaryFilesAreSkippedByBaseBackups() throws {
        let temporary = Posix.temporaryPath(for: "/var/lib/postgresql/15/main/baton.conf")
        #expect(temporary.hasPrefix("/var/lib/postgresql/15/main/pgsql_tmp"))
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("baton-posix-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let target = directory.appendingPathComponent("baton.conf").path
        try Posix.writeFile(target, contents: "a = 1\n", user: nil, mode: 0o600)
        #expect(Posix.readFile(target) == "a = 1\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["baton.conf"])
    }

    @Test func postmasterPID() {
        let text =
            "12345\n/var/lib/postgresql/15/main\n1700000000\n5432\n/var/run/postgresql\n*\n  1234567     32768\nready   \n"
        #expect(
            ToolOutput.postmasterPID(text)
                == .init(
                    pid: 12345, dataDirectory: "/var/lib/postgresql/15/main", startEpoch: 1_700_000_000, port: 5432))
        #expect(ToolOutput.postmasterPID("garbage") == nil)
        #expect(ToolOutput.postmasterPID("") == nil)
    }
}

@Suite("managed files")
struct ManagedFilesTests {
    let configuration = LocalPostgresConfiguration(
        memberName: "node-b", dataDirectory: "/data/pg/", port: 5433,
        superuser: Credentials(username: "postgres", password: "s:e\\cret"),
        replication: Credentials(username: "replicator", password: "r"),
        parameters: ["max_connections": "50", "wal_keep_size": "1GB"])

    @Test func defaultsAreDerivedFromTheDataDirectory() {
        #expect(configuration.dataDirectory == "/data/pg")
        #expect(configuration.passfile == "/data/pg.pgpass")
        #expect(configuration.logFile == "/data/pg.log")
    }

    /// Patroni's `bootstrap.initdb` (before: refused at load, initdb's arguments fixed): an option
    /// given there replaces Baton's default for it; the rest of the defaults stay.
    @Test func initdbOptionsReplaceTheDefaultsTheyName() {
        #expect(
            ManagedFiles.initdbArguments(configuration) == [
                "--auth-local=peer", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8",
                "--data-checksums",
            ])
        // Baton's own arguments (data directory, superuser, password file) come after these in
        // bootstrap(): initdb takes the last of a repeated option.
        var patroni = configuration
        patroni.initdbOptions = ["--encoding=SQL_ASCII", "--data-checksums", "--auth-host=md5", "--lc-messages=C"]
        #expect(
            ManagedFiles.initdbArguments(patroni) == [
                "--auth-local=peer", "--locale=C.UTF-8", "--encoding=SQL_ASCII", "--data-checksums",
                "--auth-host=md5", "--lc-messages=C",
            ])
    }

    @Test func recoveryConfigurationPointsAtTheSource() {
        let text = ManagedFiles.recoveryText(
            configuration, source: ReplicationSource(member: "node-a", host: "10.0.0.1", port: 5432))
        #expect(
            text.contains(
                "primary_conninfo = 'host=10.0.0.1 port=5432 user=replicator passfile=/data/pg.pgpass application_name=node-b"
            ))
        // A silent peer drops the replication connection after 5 s, on both ends (the walsender's
        // through the session's startup options; quoted once for conninfo, once for the file).
        #expect(text.contains("tcp_user_timeout=5000 options=''-c tcp_user_timeout=5000''"))
        #expect(text.contains("primary_slot_name = 'node_b'"))
        #expect(text.contains("recovery_target_timeline = 'latest'"))
        // Whatever another file sets, a standby has no recovery target to reach (and promote at).
        #expect(text.contains("recovery_target = ''") && text.contains("recovery_target_time = ''"))
        #expect(text.contains("recovery_target_action = 'pause'"))
        #expect(!text.contains("password"))
    }

    /// A source without a server (a standby cluster's archive, a restore while no member leads):
    /// recovery from the archive only, no replication connection and no slot to ask for.
    @Test func aSourceWithoutAServerRecoversFromTheArchiveOnly() {
        let archive = ManagedFiles.recoveryText(
            configuration,
            source: .withoutServer(
                "standby_cluster archive", remote: RemoteRecovery(restoreCommand: "cp /archive/%f %p")))
        #expect(archive.contains("primary_conninfo = ''") && archive.contains("primary_slot_name = ''"), "\(archive)")
        #expect(archive.contains("restore_command = 'cp /archive/%f %p'"))
        var own = configuration
        own.recoveryConf = ["restore_command": "cp /mine/%f %p"]
        let backup = ManagedFiles.recoveryText(own, source: .backupWithoutLeader)
        #expect(backup.contains("primary_conninfo = ''") && backup.contains("restore_command = 'cp /mine/%f %p'"))
        #expect(!ReplicationSource.backupWithoutLeader.hasServer)
        // A member of a standby cluster following its standby leader: the other cluster's
        // archive commands over its own, and its own other settings.
        var member = ReplicationSource(member: "node-a", host: "10.0.0.1", port: 5432)
        member.standbyClusterArchive = StandbyClusterArchive(
            restoreCommand: "cp /theirs/%f %p", archiveCleanupCommand: "true")
        own.recoveryConf["recovery_min_apply_delay"] = "1min"
        let follower = ManagedFiles.recoveryText(own, source: member)
        #expect(follower.contains("restore_command = 'cp /theirs/%f %p'") && !follower.contains("/mine/"))
        #expect(follower.contains("archive_cleanup_command = 'true'"))
        #expect(
            follower.contains("recovery_min_apply_delay = '1min'")
                && follower.contains("primary_conninfo = 'host=10.0.0.1"))
    }

    /// `no_leader` marks the only methods that may run with no server to copy from.
    @Test func onlyNoLeaderCommandsWorkWithoutAServer() {
        #expect(!ReplicaMethod.basebackup(options: []).worksWithoutServer)
        let restore = ReplicaMethod.command(
            name: "restore", argv: ["/bin/true"], parameters: [], keepData: false, noParams: true, noLeader: true)
        let needsLeader = ReplicaMethod.command(
            name: "walg", argv: ["/bin/true"], parameters: [], keepData: false, noParams: false, noLeader: false)
        #expect(restore.worksWithoutServer && !needsLeader.worksWithoutServer)
    }

    /// Patroni's precedence: the cluster's parameters over Baton's defaults, the local file's over
    /// both, except for the parameters every member must share (the local max_connections and
    /// wal_keep_size are ignored; before, the local file won for those too).
    @Test func parametersFollowPatronisPrecedence() {
        let local = ManagedFiles.parameters(configuration)
        #expect(local["wal_keep_size"] == "128MB")
        #expect(local["max_connections"] == "100")
        #expect(local["wal_level"] == "replica")
        #expect(local["port"] == "5433")
        let cluster = ManagedFiles.parameters(
            configuration, cluster: ["max_connections": "200", "work_mem": "8MB", "wal_keep_size": "1GB"])
        #expect(cluster["max_connections"] == "200" && cluster["wal_keep_size"] == "1GB")
        #expect(cluster["work_mem"] == "8MB")
        var withLocal = configuration
        withLocal.parameters["work_mem"] = "16MB"
        #expect(ManagedFiles.parameters(withLocal, cluster: ["work_mem": "8MB"])["work_mem"] == "16MB")
        let text = ManagedFiles.parametersText(configuration, cluster: ["work_mem": "8MB"], synchronousStandbys: ["b"])
        #expect(text.contains("work_mem = '8MB'") && text.contains(#"synchronous_standby_names = 'FIRST 1 ("b")'"#))
    }

    @Test func passfileEscapesSeparators() {
        let text = ManagedFiles.passfileText(configuration)
        #expect(text.contains(#"*:*:*:postgres:s\:e\\cret"#))
        #expect(text.contains("*:*:*:replicator:r"))
    }

    @Test func credentialsNeverPrintTheirPassword() {
        #expect(!"\(configuration.superuser)".contains("cret"))
        let parameters = ConnectionParameters(host: "h", port: 1, user: "u", password: "topsecret")
        #expect(!"\(parameters)".contains("topsecret"))
    }
}

@Suite("connection error classification")
struct ConnectErrorTests {
    let parameters = ConnectionParameters(host: "127.0.0.1", port: 5432, user: "postgres")

    @Test func wrongPassword() {
        let error = classifyConnectError(
            "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password authentication failed for user \"postgres\"",
            parameters)
        #expect(error.code == .authenticationFailed)
        #expect(error.sqlState == "28P01")
        #expect(error.message.contains("127.0.0.1:5432"))
    }

    @Test func refused() {
        let error = classifyConnectError(
            "connection to server at \"127.0.0.1\", port 5432 failed: Connection refused", parameters)
        #expect(error.code == .connectionFailed)
        #expect(error.message.contains("is PostgreSQL running"))
    }

    @Test func starting() {
        let error = classifyConnectError("FATAL:  the database system is starting up", parameters)
        #expect(error.code == .serverStarting)
        #expect(error.sqlState == "57P03")
    }
}

/// Patroni's rule (before: not applied): a hot standby runs with at least the max_connections,
/// max_worker_processes, max_wal_senders, max_prepared_transactions and
/// max_locks_per_transaction its primary recorded in pg_controldata, or PostgreSQL refuses to run
/// recovery; a configured value that is higher stays.
@Suite struct StandbyFloorTests {
    @Test func floorsFromControlDataRaiseOnlyLowerValues() {
        let control = ToolOutput.controlData(
            """
            max_connections setting:              150
            max_worker_processes setting:         8
            max_wal_senders setting:              10
            max_prepared_xacts setting:           5
            max_locks_per_xact setting:           64
            """)
        let floors = ManagedFiles.standbyFloors(controlData: control)
        #expect(floors["max_connections"] == 150 && floors["max_prepared_transactions"] == 5)
        let configuration = LocalPostgresConfiguration(
            memberName: "node-b", dataDirectory: "/data/pg/", port: 5433,
            superuser: Credentials(username: "postgres", password: "s"),
            replication: Credentials(username: "replicator", password: "r"),
            parameters: [:])
        let text = ManagedFiles.parametersText(
            configuration, cluster: ["max_connections": "100", "max_locks_per_transaction": "128"],
            standbyFloors: floors)
        #expect(text.contains("max_connections = '150'"), "\(text)")
        #expect(text.contains("max_prepared_transactions = '5'"), "\(text)")
        #expect(text.contains("max_locks_per_transaction = '128'"), "\(text)")
    }

    /// Patroni sets `cluster_name` to the scope; a data directory moved from Patroni to Baton (or
    /// back) must keep it, since only a restart can change it.
    @Test func clusterNameIsTheScopeAsPatroniSetsIt() {
        var configuration = LocalPostgresConfiguration(
            memberName: "node-b", dataDirectory: "/data/pg/", port: 5433,
            superuser: Credentials(username: "postgres", password: "s"),
            replication: Credentials(username: "replicator", password: "r"),
            parameters: ["cluster_name": "local-choice"])
        configuration.scope = "orders"
        #expect(ManagedFiles.parameters(configuration)["cluster_name"] == "orders")
        configuration.scope = ""
        #expect(ManagedFiles.parameters(configuration)["cluster_name"] == "node-b")
    }
}
