import Foundation
import Logging
import Testing

@testable import BatonAgent

/// Patroni's `log` section (before: only `level`; `dir`, `format`, `type: json`, `loggers` were
/// refused at load): parsed at the edge, lines formatted as Patroni writes them, rotation as
/// Python's RotatingFileHandler does it.
@Suite struct LogSettingsTests {
    static func settings(_ log: String, environment: [String: String] = [:]) throws -> LogSettings {
        try AgentConfiguration.parse(
            AgentConfigurationTests.minimal + "\nlog:\n" + log,
            environment: AgentConfigurationTests.secrets.merging(environment) { $1 }
        )
        .log
    }

    static let record = LogRecord(
        level: .warning, message: "lease renewed", metadata: ["ha.member": "node1"], source: "BatonHA",
        file: "/src/Sources/BatonHA/HALoop.swift", function: "renew()", line: 42, label: "baton",
        seconds: 1_765_063_000, nanoseconds: 7_000_000)

    @Test func patronisLogSectionLoads() throws {
        let settings = try Self.settings(
            """
              level: DEBUG
              type: plain
              format: '%(asctime)s %(levelname)-8s %(name)s: %(message)s'
              dateformat: '%H:%M:%S'
              max_queue_size: 500
              dir: /var/log/patroni
              mode: 0640
              file_num: 10
              file_size: 50000000
              traceback_level: INFO
              loggers:
                patroni.dcs.etcd3: WARNING
                urllib3: ERROR
                BatonPostgres: info
            """)
        #expect(settings.level == .debug && settings.kind == .plain && settings.dateFormat == "%H:%M:%S")
        #expect(settings.maxQueueSize == 500 && settings.fileNum == 10 && settings.fileSize == 50_000_000)
        #expect(settings.filePath == "/var/log/patroni/patroni.log" && settings.mode == 0o640)
        // patroni.dcs.etcd3 (WARNING) and urllib3 (ERROR) both mean BatonEtcd: the more verbose wins.
        #expect(settings.moduleLevels == ["BatonEtcd": .warning, "BatonPostgres": .info])
        let line = LogFormatter.line(Self.record, settings)
        #expect(line.hasSuffix(" WARNING  BatonHA: lease renewed ha.member=node1"), "\(line)")
        #expect(line.count == "00:00:00 WARNING  BatonHA: lease renewed ha.member=node1".count, "\(line)")
    }

    /// Baton's own layout keeps swift-log's, now with milliseconds (a failover is read in them).
    @Test func batonsLayoutHasMilliseconds() throws {
        let line = LogFormatter.line(Self.record, LogSettings())
        let pattern =
            #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.007[+-]\d{4} warning baton: ha\.member=node1 \[BatonHA\] lease renewed$"#
        #expect(line.range(of: pattern, options: .regularExpression) != nil, "\(line)")
    }

    @Test func jsonLinesAreObjectsWithPatronisFieldNames() throws {
        var settings = try Self.settings("  type: json\n  static_fields: {app: baton}")
        var line = LogFormatter.line(Self.record, settings)
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
        #expect(object["levelname"] as? String == "WARNING" && object["message"] as? String == "lease renewed")
        #expect(object["ha.member"] as? String == "node1" && object["app"] as? String == "baton")
        #expect((object["asctime"] as? String)?.hasSuffix(",007") == true, "\(line)")
        settings = try Self.settings("  type: json\n  format: {levelname: level, message: msg, lineno: line}")
        var hostile = Self.record
        hostile.message = "quote \" backslash \\ newline \n tab \t nul \u{0} ls \u{2028}"
        line = LogFormatter.line(hostile, settings)
        #expect(!line.contains("\n"), "one record, one line")
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(parsed["msg"] as? String == hostile.message && parsed["line"] as? Int == 42, "\(line)")
        #expect(parsed["level"] as? String == "WARNING")
    }

    @Test func environmentVariablesAsPatroniNamesThem() throws {
        let settings = try Self.settings(
            "  level: INFO",
            environment: ["PATRONI_LOG_LEVEL": "ERROR", "PATRONI_LOG_TYPE": "json", "PATRONI_LOG_DIR": "/tmp/logs"])
        #expect(settings.level == .error && settings.kind == .json && settings.directory == "/tmp/logs")
    }

    @Test(arguments: [
        ("  type: xml", "log.type: must be plain or json"),
        ("  format: '%(asctime)s %(hostname)s'", "unknown field 'hostname'"),
        ("  format: '%(message)'", "needs a conversion"),
        ("  format: '100% sure'", "'%' must be followed by"),
        ("  dir: logs", "expected an absolute directory"),
        ("  mode: 0999", "expected file permissions"),
        ("  file_num: -1", "expected files from 0 to 1000"),
        ("  max_queue_size: 0", "expected lines from 1 to 1000000"),
        ("  loggers: {patroni.ha: LOUD}", "expected a level"),
        ("  loggers: {kazoo: DEBUG}", "is not a logger Baton has"),
        ("  level: loud", "log.level: must be one of"),
        ("  colour: true", "unknown key 'colour'"),
    ])
    func badLogSettingsAreRefused(_ yaml: String, _ message: String) {
        do {
            _ = try Self.settings(yaml)
            Issue.record("accepted \(yaml)")
        } catch {
            #expect("\(error)".contains(message), "\(error)")
        }
    }

    /// Python's RotatingFileHandler: past file_size the file becomes .1, .1 becomes .2, and so on
    /// up to file_num; nothing is lost but what falls off the end.
    @Test func filesRotateBySize() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("baton-log-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var file = RotatingFile(path: directory + "/patroni.log", maxBytes: 100, backups: 2, mode: 0o640)
        for index in 0..<12 { file.write(String(repeating: "\(index % 10)", count: 39) + "\n") }
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        #expect(names == ["patroni.log", "patroni.log.1", "patroni.log.2"], "\(names)")
        let current = try String(contentsOfFile: directory + "/patroni.log", encoding: .utf8)
        #expect(current.split(separator: "\n").count == 2 && current.hasPrefix("0000"), "\(current)")
        let mode = try FileManager.default.attributesOfItem(atPath: directory + "/patroni.log")[.posixPermissions]
        #expect(mode as? Int == 0o640)
        // A symlink in the file's place is not followed (the agent may run as root).
        try FileManager.default.removeItem(atPath: directory + "/patroni.log")
        try FileManager.default.createSymbolicLink(atPath: directory + "/patroni.log", withDestinationPath: "/etc/x")
        var again = RotatingFile(path: directory + "/patroni.log", maxBytes: 100, backups: 2, mode: nil)
        again.open()
        #expect(again.fd < 0 && !FileManager.default.fileExists(atPath: "/etc/x"))
    }

    /// A sink that cannot keep up drops new lines past max_queue_size and says how many.
    @Test func aSlowSinkDropsAndCounts() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("baton-sink-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var settings = LogSettings()
        settings.directory = directory
        settings.maxQueueSize = 5
        let sink = LogSink(settings: settings)
        for index in 0..<5000 { sink.write("line \(index)") }
        sink.flush()
        sink.write("after")
        sink.flush()
        let text = try String(contentsOfFile: directory + "/patroni.log", encoding: .utf8)
        let lines = text.split(separator: "\n")
        #expect(lines.last == "after")
        let lostNotes = lines.filter { $0.hasPrefix("log: ") && $0.contains("lines lost") }
        let written = lines.filter { $0.hasPrefix("line ") }.count
        let lost = lostNotes.compactMap { $0.split(separator: " ").dropFirst().first.flatMap { Int($0) } }.reduce(0, +)
        #expect(written + lost == 5000, "\(written) written, \(lost) counted lost")
    }
}
