import BatonAgent
import BatonCore
import Foundation
import Testing

@Suite struct OperatorFormattingTests {
    static func view(leader: String? = "node1", members: [Member], history: [HistoryEntry] = []) -> ClusterView {
        ClusterView(
            revision: 10, initialize: "7312", config: nil,
            leader: leader.map { LeaderLock(member: $0, session: nil, modRevision: 1) }, members: members,
            failover: nil, sync: nil, history: history, status: LeaderStatus(optime: LSN(0x300_0000)))
    }

    static func member(_ name: String, role: Member.Role = .replica, port: Int, tags: Tags = Tags()) -> Member {
        Member(
            name: name, connURL: "postgres://127.0.0.1:\(port)/postgres", state: .running, role: role,
            xlogLocation: LSN(role == .primary ? 0x300_0000 : 0x200_0000), replicationState: "streaming",
            timeline: 2, tags: tags)
    }

    @Test func topologyPutsReplicasUnderTheLeader() {
        let view = Self.view(members: [
            Self.member("node3", port: 5434), Self.member("node1", role: .primary, port: 5432),
            Self.member("node2", port: 5433),
        ])
        let text = OperatorFormatting.topology(view, scope: "demo", format: "table")
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines[0] == "+ Cluster: demo (7312) +")
        #expect(lines[4].hasPrefix("| node1    | 127.0.0.1:5432 | Leader "))
        #expect(lines[5].hasPrefix("| ├─ node2 | 127.0.0.1:5433 | Replica | streaming | 2  | 16.0"))
        #expect(lines[6].hasPrefix("| └─ node3 |"))
    }

    @Test func topologyFollowsReplicateFromAndSurvivesCycles() throws {
        let view = Self.view(members: [
            Self.member("node1", role: .primary, port: 5432),
            Self.member("node2", port: 5433),
            Self.member("node3", port: 5434, tags: Tags(["replicatefrom": .string("node2")])),
            Self.member("a", port: 5435, tags: Tags(["replicatefrom": .string("b")])),
            Self.member("b", port: 5436, tags: Tags(["replicatefrom": .string("a")])),
        ])
        let json = OperatorFormatting.topology(view, scope: "demo", format: "json")
        let trees = try #require(try JSONDecoder().decode(JSONValue.self, from: Data(json.utf8)).arrayOrNil)
        #expect(trees.first?.objectValue?["member"] == .string("node1"))
        let text = OperatorFormatting.topology(view, scope: "demo", format: "table")
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines[5].hasPrefix("| └─ node2    | 127.0.0.1:5433 |"))
        #expect(lines[6].hasPrefix("|    └─ node3 | 127.0.0.1:5434 |"))
        // The a/b replicatefrom cycle is not lost: both still appear, after the leader's tree.
        #expect(lines[7].hasPrefix("| a           |"))
        #expect(lines[8].hasPrefix("| └─ b        |"))
    }

    @Test func topologyWithoutLeaderListsEveryMemberAsRoot() {
        let view = Self.view(
            leader: nil, members: [Self.member("node2", port: 5433), Self.member("node1", port: 5432)])
        let text = OperatorFormatting.topology(view, scope: "demo", format: "table")
        #expect(!text.contains("─"))
        #expect(text.contains("| node1 ") && text.contains("| node2 "))
    }

    @Test func historyTableAndJSON() throws {
        let entries = [
            HistoryEntry(
                timeline: 2, lsn: LSN(0x300_0060), reason: "switchover to node2",
                timestamp: "2026-11-22T15:00:00+00:00",
                newLeader: "node2"),
            HistoryEntry(timeline: 1, lsn: LSN(0x100_0000), reason: "no recovery target specified"),
        ]
        let lines = OperatorFormatting.history(entries, format: "table").split(separator: "\n").map(String.init)
        #expect(lines[1].hasPrefix("| TL | LSN "))
        #expect(lines[3].hasPrefix("| 1  | 0/1000000 | no recovery target specified |"))
        #expect(lines[4].contains("| 2  | 0/3000060 | switchover to node2"))
        #expect(lines[4].hasSuffix("| 2026-11-22T15:00:00+00:00 | node2      |"))
        let json = OperatorFormatting.history(entries, format: "json")
        #expect(json.hasPrefix(#"[{"lsn":"0/1000000","reason":"no recovery target specified","timeline":1}"#))
    }

    @Test func yamlRoundTripsThroughAYAMLParser() throws {
        let value: JSONValue = .object([
            "ttl": .number(30), "pause": .bool(true), "ratio": .number(0.5), "empty": .object([:]),
            "postgresql": .object([
                "parameters": .object([
                    "work_mem": .string("16MB"), "synchronous_commit": .string("on"), "port": .string("5432"),
                    "search_path": .string("\"$user\", public"), "note": .string("a: b # c"),
                    "blank": .string(""), "multi": .string("one\ntwo"),
                ]),
                "use_pg_rewind": .bool(false),
            ]),
            "list": .array([.string("a"), .object(["k": .number(1), "l": .null]), .array([.number(2)])]),
        ])
        let text = OperatorFormatting.yaml(value)
        #expect(text.contains("ttl: 30\n"))
        #expect(text.contains("    synchronous_commit: \"on\"\n"))
        #expect(text.contains("    work_mem: 16MB\n"))
        #expect(try ConfigEdit.parseDocument(text, source: "yaml") == value)
    }

    @Test func diffShowsOnlyChangesWithContext() {
        let old = (1...12).map { "line\($0)" }.joined(separator: "\n") + "\n"
        var newLines = (1...12).map { "line\($0)" }
        newLines[1] = "LINE2"
        newLines.append("line13")
        let diff = OperatorFormatting.diff(old: old, new: newLines.joined(separator: "\n") + "\n")
        #expect(
            diff == """
                --- current
                +++ proposed
                 line1
                -line2
                +LINE2
                 line3
                 line4
                 line5
                @@
                 line10
                 line11
                 line12
                +line13
                """)
        #expect(OperatorFormatting.diff(old: old, new: old).isEmpty)
    }

    @Test func settingsBecomeANestedMergePatch() throws {
        let patch = try ConfigEdit.patch(
            settings: ["loop_wait=5", "postgresql.use_pg_rewind=true", "synchronous_mode=null", "tag=\"10\""],
            parameters: ["max_connections=200", "work_mem=16MB", "pg_stat_statements.max=1000"])
        #expect(
            patch
                == .object([
                    "loop_wait": .number(5), "synchronous_mode": .null, "tag": .string("10"),
                    "postgresql": .object([
                        "use_pg_rewind": .bool(true),
                        "parameters": .object([
                            "max_connections": .number(200), "work_mem": .string("16MB"),
                            "pg_stat_statements.max": .number(1000),
                        ]),
                    ]),
                ]))
        let current = DynamicConfig(["ttl": .number(30), "synchronous_mode": .bool(true)])
        let proposed = ConfigEdit.proposed(current, patch: patch)
        #expect(proposed.document["synchronous_mode"] == nil)
        #expect(proposed.loopWait == .seconds(5))
    }

    @Test func valuesParseAsJSONOrYAMLScalars() {
        #expect(ConfigEdit.parseValue("10") == .number(10))
        #expect(ConfigEdit.parseValue("1.5") == .number(1.5))
        #expect(ConfigEdit.parseValue("false") == .bool(false))
        #expect(ConfigEdit.parseValue("[a, b]") == .array([.string("a"), .string("b")]))
        #expect(ConfigEdit.parseValue("{\"a\": 1}") == .object(["a": .number(1)]))
        #expect(ConfigEdit.parseValue("\"10\"") == .string("10"))
        #expect(ConfigEdit.parseValue("16MB") == .string("16MB"))
        #expect(ConfigEdit.parseValue("hot_standby") == .string("hot_standby"))
    }

    @Test func badSettingsSayWhatToType() {
        #expect(throws: ConfigEdit.InputError.self) { try ConfigEdit.parseSetting("loop_wait") }
        #expect(throws: ConfigEdit.InputError.self) { try ConfigEdit.parseSetting("a..b=1") }
        #expect(throws: ConfigEdit.InputError.self) { try ConfigEdit.parseParameter("=1") }
    }

    @Test func applyDocumentsMustBeMappings() throws {
        #expect(
            try ConfigEdit.parseDocument("loop_wait: 5\npostgresql: {parameters: {work_mem: 8MB}}", source: "f")
                == .object([
                    "loop_wait": .number(5),
                    "postgresql": .object(["parameters": .object(["work_mem": .string("8MB")])]),
                ]))
        #expect(try ConfigEdit.parseDocument(#"{"ttl": 20}"#, source: "f") == .object(["ttl": .number(20)]))
        #expect(throws: ConfigEdit.InputError.self) { try ConfigEdit.parseDocument("- a", source: "f") }
        #expect(throws: ConfigEdit.InputError.self) { try ConfigEdit.parseDocument("a: [", source: "f") }
    }

    @Test func listShowsAnInvalidConfigKey() {
        var view = Self.view(members: [Self.member("node1", role: .primary, port: 5432)])
        view.config = Versioned(DynamicConfig(["ttl": .number(1e300)]), modRevision: 7)
        let text = ClusterTable.render(view, scope: "demo", format: "table")
        #expect(text.contains("Config key invalid, ignored by the agents"), "\(text)")
        #expect(text.contains("ttl: must be at most"), "\(text)")
        view.config = Versioned(DynamicConfig(["ttl": .number(30)]), modRevision: 8)
        #expect(!ClusterTable.render(view, scope: "demo", format: "table").contains("Config key invalid"))
    }

    @Test func listRendersYAML() {
        let view = Self.view(members: [Self.member("node1", role: .primary, port: 5432)])
        let text = ClusterTable.render(view, scope: "demo", format: "yaml")
        #expect(text.hasPrefix("- host: \"127.0.0.1:5432\"\n  member: node1\n  role: Leader\n"))
    }
}

extension JSONValue {
    var arrayOrNil: [JSONValue]? {
        if case .array(let value) = self { return value }
        return nil
    }
}

/// `pause --wait` and `resume --wait` count a member as confirmed only when its `GET /patroni`
/// says so; before, any body that did not decode counted as "not paused", so `resume --wait`
/// returned while a member's answer was an error page or garbage.
@Suite struct PauseReportTests {
    static func report(_ text: String) -> Bool? { PauseReport.reportedPause(in: Array(text.utf8)) }

    @Test func aMemberStatusDocumentSaysWhetherItIsPaused() {
        #expect(Self.report(#"{"state": "running", "role": "replica", "pause": true}"#) == true)
        #expect(Self.report(#"{"state": "running", "role": "replica", "pause": false}"#) == false)
        // Patroni leaves the field out when the cluster is not paused.
        #expect(Self.report(#"{"state": "running", "role": "primary"}"#) == false)
        #expect(Self.report(#"{"state": "stopped", "pause": null}"#) == false)
    }

    @Test func anythingElseIsUnknownNotUnpaused() {
        for body in [
            "", "garbage", "<html>502 Bad Gateway</html>", "{}", "[]", "null", #"{"error": "forbidden"}"#,
            #"{"state": 5}"#, #"{"state": "running", "pause": "yes"}"#, #"{"state": "running", "pause": 1}"#,
            #"{"state": "running", "pause": {}}"#, #"{"state": "running""#,
        ] {
            #expect(Self.report(body) == nil, "\(body)")
        }
    }
}
