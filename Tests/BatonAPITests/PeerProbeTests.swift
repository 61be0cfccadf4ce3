import BatonAPI
import BatonCore
import BatonHA
import Hummingbird
import HummingbirdTesting
import Logging
import Testing

@Suite struct PeerProbeTests {
    @Test func probesRealAPIsAndReportsUnreachablePeers() async throws {
        let probe = try HTTPPeerProbe(timeout: .milliseconds(500), logger: Logger(label: "probe"))
        try await Fixture.application(FakeSource(Fixture.replica())).test(.live) { client in
            let port = try #require(client.port)
            let members = [
                Member(name: "node2", apiURL: "http://127.0.0.1:\(port)/patroni"),
                // Nothing listens on port 1; a TEST-NET address never answers.
                Member(name: "closed", apiURL: "http://127.0.0.1:1/patroni"),
                Member(name: "blackhole", apiURL: "http://192.0.2.1:8008/patroni"),
                Member(name: "bad-url", apiURL: "not a url"),
            ]
            let started = ContinuousClock.now
            let statuses = await probe.status(of: members)
            // Bounded by the probe's timeout, not by the system's connect timeout (minutes for a
            // black hole). Generous: this asserts that nothing hangs, not how fast (CI machines are
            // shared; 2 s was once exceeded under load).
            #expect(ContinuousClock.now - started < .seconds(10))
            #expect(statuses.map(\.name) == ["node2", "closed", "blackhole", "bad-url"])
            #expect(
                statuses[0]
                    == PeerStatus(
                        name: "node2", reachable: true, runningAsPrimary: false, walPosition: LSN(49_999_000),
                        timeline: 3, tags: Tags(["zone": .string("a")])))
            #expect(statuses[1...].allSatisfy { !$0.reachable })
        }
        try await Fixture.application(FakeSource(Fixture.primary())).test(.live) { client in
            let port = try #require(client.port)
            let statuses = await probe.status(of: [Member(name: "node1", apiURL: "http://localhost:\(port)/patroni")])
            #expect(statuses.first?.runningAsPrimary == true)
            #expect(statuses.first?.walPosition == LSN(50_000_000))
        }
    }

    @Test func failsafeConfirmation() async throws {
        let probe = try HTTPPeerProbe(timeout: .milliseconds(500), logger: Logger(label: "probe"))
        var replica = Fixture.replica()
        replica.config = DynamicConfig(["failsafe_mode": .bool(true)])
        try await Fixture.application(FakeSource(replica)).test(.live) { client in
            let port = try #require(client.port)
            let url = "http://127.0.0.1:\(port)/patroni"
            #expect(
                await probe.confirmFailsafe(
                    leader: "node1", connURL: "postgres://h:5432/postgres", apiURL: "http://h:8008/patroni",
                    members: ["node2": url]))
            #expect(
                await probe.confirmFailsafe(
                    leader: "node1", connURL: "postgres://h:5432/postgres", apiURL: "http://h:8008/patroni",
                    members: [:]))
            #expect(
                !(await probe.confirmFailsafe(
                    leader: "node1", connURL: "postgres://h:5432/postgres", apiURL: "http://h:8008/patroni",
                    members: ["node2": url, "x": "http://127.0.0.1:1/"])))
        }
        try await Fixture.application(FakeSource(Fixture.replica())).test(.live) { client in
            let port = try #require(client.port)
            #expect(
                !(await probe.confirmFailsafe(
                    leader: "node1", connURL: "postgres://h:5432/postgres", apiURL: "http://h:8008/patroni",
                    members: ["node2": "http://127.0.0.1:\(port)/patroni"])))
        }
    }

    @Test func failsafeConfirmationCarriesTheClustersRESTCredentials() async throws {
        var replica = Fixture.replica()
        replica.config = DynamicConfig(["failsafe_mode": .bool(true)])
        var configuration = APIConfiguration(port: 0)
        configuration.auth = .init(username: "admin", password: "s3cret")
        let anonymous = try HTTPPeerProbe(timeout: .milliseconds(500), logger: Logger(label: "probe"))
        let wrong = try HTTPPeerProbe(
            timeout: .milliseconds(500), username: "admin", password: "nope", logger: Logger(label: "probe"))
        let member = try HTTPPeerProbe(
            timeout: .milliseconds(500), username: "admin", password: "s3cret", logger: Logger(label: "probe"))
        try await Fixture.application(FakeSource(replica), configuration: configuration).test(.live) { client in
            let url = "http://127.0.0.1:\(try #require(client.port))/patroni"
            #expect(
                !(await anonymous.confirmFailsafe(
                    leader: "node1", connURL: "postgres://h:5432/postgres", apiURL: "http://h:8008/patroni",
                    members: ["node2": url])))
            #expect(
                !(await wrong.confirmFailsafe(
                    leader: "node1", connURL: "postgres://h:5432/postgres", apiURL: "http://h:8008/patroni",
                    members: ["node2": url])))
            #expect(
                await member.confirmFailsafe(
                    leader: "node1", connURL: "postgres://h:5432/postgres", apiURL: "http://h:8008/patroni",
                    members: ["node2": url]))
        }
    }

    @Test func parsesPatroniDocuments() throws {
        let body = Array(
            #"{"state":"running","role":"master","xlog":{"location":123},"timeline":2,"tags":{"nofailover":true}}"#
                .utf8)
        let status = try HTTPPeerProbe.parseStatus(name: "p", body: body)
        #expect(status.runningAsPrimary)
        #expect(status.walPosition == LSN(123))
        #expect(status.tags.noFailover)
        #expect(throws: (any Error).self) { try HTTPPeerProbe.parseStatus(name: "p", body: Array("[]".utf8)) }
    }

    /// Review finding: two member keys naming one API address made one node's answer count as
    /// two members' votes in quorum commit. An answer signed by another member gives no position
    /// (no vote); its claim to be a primary still counts.
    @Test func anAnswerSignedByAnotherMemberIsNoVote() throws {
        let replica = #"{"state":"running","role":"replica","patroni":{"name":"b"},"xlog":{"received_location":9}}"#
        #expect(try HTTPPeerProbe.parseStatus(name: "b", body: Array(replica.utf8)).walPosition == LSN(9))
        let other = try HTTPPeerProbe.parseStatus(name: "c", body: Array(replica.utf8))
        #expect(other.walPosition == nil && other.reachable)
        let primary = #"{"state":"running","role":"primary","patroni":{"name":"b"},"xlog":{"location":9}}"#
        #expect(try HTTPPeerProbe.parseStatus(name: "c", body: Array(primary.utf8)).runningAsPrimary)
    }

    /// Audit finding: a peer's WAL position beyond UInt64 (or not a whole number) trapped the agent
    /// that probed it (`UInt64(1e20)`); it is unknown now.
    @Test func hostilePositionsAreUnknownNotATrap() throws {
        for value in ["1e20", "18446744073709551616", "1.5e300", "\"inf\"", "-1"] {
            let json = #"{"state":"running","role":"replica","xlog":{"received_location":"# + value + "}}"
            let status = try HTTPPeerProbe.parseStatus(name: "p", body: Array(json.utf8))
            #expect(status.walPosition == nil, "\(value)")
        }
        // The document is read field by field (BatonCore.NodeStatusDocument): a field of the wrong
        // type is absent, the rest still counts; a role of the wrong type is unknown, and unknown
        // is a possible primary.
        let odd = try HTTPPeerProbe.parseStatus(
            name: "p",
            body: Array(
                #"{"state":"running","role":"replica","timeline":"x","tags":"y","xlog":{"received_location":9}}"#.utf8))
        #expect(odd.walPosition == LSN(9) && odd.timeline == nil && !odd.runningAsPrimary)
        let noRole = try HTTPPeerProbe.parseStatus(name: "p", body: Array(#"{"state":"running","role":5}"#.utf8))
        #expect(noRole.runningAsPrimary)
    }

    /// Unknown is not "replica": a peer whose postgres may accept writes vetoes the race — one that
    /// says it is demoted (stepping down, not yet fenced), one still starting or restarting as a
    /// primary, one that does not say what it is. Before, only `primary`/`master` in state
    /// `running` counted, so a demoted-but-running primary was invisible to the race.
    @Test func aPeerThatMayAcceptWritesIsAPossiblePrimary() throws {
        func parse(_ json: String) throws -> PeerStatus {
            try HTTPPeerProbe.parseStatus(name: "p", body: Array(json.utf8))
        }
        #expect(try parse(#"{"state":"running","role":"demoted","xlog":{"location":7}}"#).runningAsPrimary)
        #expect(try parse(#"{"state":"restarting","role":"primary"}"#).runningAsPrimary)
        #expect(try parse(#"{"state":"starting","role":"master"}"#).runningAsPrimary)
        #expect(try parse(#"{"state":"running"}"#).runningAsPrimary)
        #expect(try parse(#"{"state":"running","role":"demoted","xlog":{"location":7}}"#).walPosition == LSN(7))
        #expect(try !parse(#"{"state":"running","role":"replica","xlog":{"received_location":5}}"#).runningAsPrimary)
        #expect(try !parse(#"{"state":"stopped","role":"primary"}"#).runningAsPrimary)
        #expect(try !parse(#"{"state":"crashed","role":"demoted"}"#).runningAsPrimary)
        #expect(try !parse(#"{"state":"running","role":"uninitialized"}"#).runningAsPrimary)
        // An answer that is not a status document at all (an error body) is no answer: the peer
        // counts as unreachable rather than as a primary that would veto every race for ever.
        #expect(throws: (any Error).self) { try parse(#"{"error":"not found"}"#) }
    }
}
