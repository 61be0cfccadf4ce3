import BatonCore
import Foundation
import Testing

/// `ClusterDocument` is declared once (BatonCore) and used by the REST API to write `/cluster` and
/// by BatonClient to read it: what one writes the other reads back unchanged, and a Patroni
/// member's document (extra keys, `"lag": "unknown"`) reads too.
@Suite struct ClusterDocumentTests {
    @Test func whatTheServerWritesTheClientReadsBack() throws {
        var leader = ClusterDocument.Member(
            name: "a", role: "leader", state: "running", apiURL: "http://a:8008/patroni")
        leader.host = "10.0.0.1"
        leader.port = 5432
        leader.timeline = 3
        var replica = ClusterDocument.Member(name: "b", role: "replica", state: "streaming")
        replica.lag = .bytes(1 << 60)  // beyond a Double's whole numbers: kept exactly
        replica.lsn = "0/5000000"
        replica.tags = Tags(["nofailover": .bool(true)])
        var lost = ClusterDocument.Member(name: "c", role: "replica", state: "stopped")
        lost.lag = .unknown
        let document = ClusterDocument(
            scope: "demo", members: [leader, replica, lost], pause: true, configProblems: ["ttl: 1e300"],
            scheduledSwitchover: .init(at: "2099-01-01T00:00:00+00:00", from: "a"),
            poolers: [
                PoolerRecord(
                    name: "pool1", state: "following", primary: "a:5432", replicas: nil, databases: ["app=primary"])
            ])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(document)
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("\"lag\":\"unknown\""))
        #expect(text.contains("\"lag\":1152921504606846976"))
        #expect(
            text.contains("\"api_url\":\"http:\\/\\/a:8008\\/patroni\"")
                || text.contains("\"api_url\":\"http://a:8008/patroni\""))
        #expect(!text.contains("\"pending_restart\""), "an absent field is left out")
        #expect(text.contains("\"poolers\":[{\"databases\":[\"app=primary\"],\"name\":\"pool1\""), "\(text)")
        #expect(try JSONDecoder().decode(ClusterDocument.self, from: data) == document)
    }

    @Test func aPatroniDocumentReads() throws {
        let patroni = """
            {"members": [{"name": "pg1", "role": "leader", "state": "running", "api_url": "http://pg1:8008/patroni",
              "host": "pg1", "port": 5432, "timeline": 2, "xlog": {"location": 123}},
             {"name": "pg2", "role": "sync_standby", "state": "streaming", "host": "pg2", "port": 5432,
              "timeline": 2, "receive_lag": 0, "replay_lag": 0, "lag": 0, "lsn": "0/7B"},
             {"name": "pg3", "role": "replica", "state": "stopped", "lag": "unknown"}],
             "scope": "batman", "failsafe": {"pg1": "http://pg1:8008/patroni"}}
            """
        let document = try JSONDecoder().decode(ClusterDocument.self, from: Data(patroni.utf8))
        #expect(document.scope == "batman")
        #expect(document.members.map(\.role) == ["leader", "sync_standby", "replica"])
        #expect(document.members[1].lag == .bytes(0))
        #expect(document.members[2].lag == .unknown)
    }
}
