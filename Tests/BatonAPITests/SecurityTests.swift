import BatonAPI
import BatonCore
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@Suite struct SecurityTests {
    static func basic(_ user: String, _ password: String) -> String {
        "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
    }

    @Test func basicAuthGuardsUnsafeMethodsOnly() async throws {
        let source = try await ControlTests.seeded()
        var configuration = APIConfiguration(port: 0)
        configuration.auth = .init(username: "admin", password: "s3cret")
        try await Fixture.application(source, configuration: configuration).test(.router) { client in
            try await client.execute(uri: "/config", method: .patch, body: jsonBody(#"{"loop_wait": 5}"#)) { response in
                #expect(response.status == .unauthorized)
                #expect(response.headers[.wwwAuthenticate] == #"Basic realm="Baton""#)
                #expect(!response.text.contains("s3cret"))
            }
            try await client.execute(
                uri: "/config", method: .patch, headers: [.authorization: Self.basic("admin", "wrong")],
                body: jsonBody(#"{"loop_wait": 5}"#)
            ) { #expect($0.status == .unauthorized) }
            try await client.execute(
                uri: "/config", method: .patch, headers: [.authorization: Self.basic("admin", "s3cret")],
                body: jsonBody(#"{"loop_wait": 5}"#)
            ) { #expect($0.status == .ok) }
            // Reads stay open for load balancers and monitoring.
            try await client.execute(uri: "/patroni", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/primary", method: .get) { #expect($0.status == .ok) }
        }
    }

    @Test func credentialsDescriptionHidesThePassword() {
        let auth = APIConfiguration.BasicAuth(username: "admin", password: "s3cret")
        #expect(!"\(auth)".contains("s3cret"))
    }

    @Test func allowlistRefusesOtherClients() async throws {
        let source = try await ControlTests.seeded()
        var configuration = APIConfiguration(port: 0)
        configuration.allowlist = [try CIDRNetwork("10.0.0.0/8")]
        try await Fixture.application(source, configuration: configuration).test(.live) { client in
            try await client.execute(uri: "/config", method: .patch, body: jsonBody(#"{"loop_wait": 5}"#)) { response in
                #expect(response.status == .forbidden)
                #expect(response.json["error"]?.stringValue?.contains("allowlist") == true)
            }
            try await client.execute(uri: "/patroni", method: .get) { #expect($0.status == .ok) }
        }
        configuration.allowlist = [try CIDRNetwork("127.0.0.0/8"), try CIDRNetwork("::1")]
        try await Fixture.application(source, configuration: configuration).test(.live) { client in
            try await client.execute(uri: "/config", method: .patch, body: jsonBody(#"{"loop_wait": 5}"#)) {
                #expect($0.status == .ok)
            }
        }
    }

    /// Patroni's allowlist_include_members (before: refused at load): a member's api_url address
    /// is allowed beside the allowlist; anyone else still gets 403.
    @Test func allowlistIncludesTheMembersWhenAsked() async throws {
        let source = try await ControlTests.seeded()
        var configuration = APIConfiguration(port: 0)
        configuration.allowlist = [try CIDRNetwork("10.9.0.0/16")]
        configuration.allowlistIncludeMembers = true
        try await Fixture.application(source, configuration: configuration).test(.live) { client in
            try await client.execute(uri: "/config", method: .patch, body: jsonBody(#"{"loop_wait": 5}"#)) {
                #expect($0.status == .forbidden, "127.0.0.1 is no member's address yet")
            }
        }
        source.update { status in
            status.cluster?.members[2].apiURL = "http://127.0.0.1:8008/patroni"
        }
        try await Fixture.application(source, configuration: configuration).test(.live) { client in
            try await client.execute(uri: "/config", method: .patch, body: jsonBody(#"{"loop_wait": 5}"#)) {
                #expect($0.status == .ok, "a member's address is allowed")
            }
        }
    }

    @Test func networks() throws {
        let v4 = try CIDRNetwork("192.168.1.77/24")
        #expect(v4.description == "192.168.1.0/24")
        #expect(v4.contains("192.168.1.200"))
        #expect(!v4.contains("192.168.2.1"))
        #expect(v4.contains("::ffff:192.168.1.9"))
        let v6 = try CIDRNetwork("fd00::/8")
        #expect(v6.contains("fd12:3456::1"))
        #expect(!v6.contains("fe80::1"))
        #expect(try CIDRNetwork("::1").contains("::1"))
        #expect(try CIDRNetwork("0.0.0.0/0").contains("8.8.8.8"))
        #expect(throws: CIDRNetwork.Invalid.self) { try CIDRNetwork("10.0.0.0/33") }
        #expect(throws: CIDRNetwork.Invalid.self) { try CIDRNetwork("10.0.0/8") }
        #expect(throws: CIDRNetwork.Invalid.self) { try CIDRNetwork("fd00:::1") }
    }
}
