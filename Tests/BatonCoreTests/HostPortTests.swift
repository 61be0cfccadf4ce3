import BatonCore
import Testing

/// One parser for every address Baton reads (configuration, client endpoints, members'
/// `conn_url`s); before, three hand-written ones disagreed on edge cases (the /cluster document's
/// took `host:99999` and `host:abc`, the client's took `+80`).
@Suite struct HostPortTests {
    struct Row: Sendable, CustomStringConvertible {
        let text: String
        let expected: HostPort?
        var description: String { text }
    }

    static let rows: [Row] = [
        Row(text: "db1", expected: HostPort(host: "db1", port: nil)),
        Row(text: "db1:5433", expected: HostPort(host: "db1", port: 5433)),
        Row(text: "10.0.0.1:1", expected: HostPort(host: "10.0.0.1", port: 1)),
        Row(text: "[::1]", expected: HostPort(host: "::1", port: nil)),
        Row(text: "[::1]:8008", expected: HostPort(host: "::1", port: 8008)),
        Row(text: "fe80::1", expected: HostPort(host: "fe80::1", port: nil)),
        Row(text: "", expected: nil),
        Row(text: ":5432", expected: nil),
        Row(text: "db1:", expected: nil),
        Row(text: "db1:0", expected: nil),
        Row(text: "db1:65536", expected: nil),
        Row(text: "db1:99999999999999999999", expected: nil),
        Row(text: "db1:+80", expected: nil),
        Row(text: "db1:8 0", expected: nil),
        Row(text: "db1:abc", expected: nil),
        Row(text: "[::1", expected: nil),
        Row(text: "[]:80", expected: nil),
        Row(text: "[::1]x", expected: nil),
        Row(text: "[::1]:", expected: nil),
    ]

    @Test(arguments: rows) func parses(_ row: Row) {
        #expect(HostPort(parsing: row.text) == row.expected)
    }

    @Test func urls() {
        #expect(
            HostPort(url: "postgres://u:p@db.example:6000/x?sslmode=require")
                == HostPort(host: "db.example", port: 6000))
        #expect(HostPort(url: "postgresql://[::1]:5434/x") == HostPort(host: "::1", port: 5434))
        #expect(HostPort(url: "postgres://host/db") == HostPort(host: "host", port: nil))
        #expect(HostPort(url: "postgres://host:99999/db") == nil)
        #expect(HostPort(url: "host:5432") == nil)
        #expect(ConnURL.hostAndPort("postgres://host/db")! == ("host", 5432))
    }
}
