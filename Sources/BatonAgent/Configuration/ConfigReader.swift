import BatonCore
import Foundation
import Yams

/// A configuration problem with where it is and how to fix it.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    /// The key path, like `postgresql.authentication.superuser.password`.
    public var path: String
    /// 1-based line in the file, when known.
    public var line: Int?
    public var message: String
    public var file: String?

    public init(path: String, line: Int? = nil, message: String, file: String? = nil) {
        self.path = path
        self.line = line
        self.message = message
        self.file = file
    }

    public var description: String {
        var location = file ?? "configuration"
        if let line { location += ":\(line)" }
        return "\(location): \(path.isEmpty ? "(top level)" : path): \(message)"
    }
}

/// Reads a YAML mapping strictly: every key must be read by the schema, types must match, and
/// errors name the key path and line. Unknown keys are reported with the keys that are allowed.
struct ConfigReader {
    let node: Node?
    let path: String
    let file: String?
    private let mapping: Node.Mapping?

    init(node: Node?, path: String, file: String?) throws {
        self.node = node
        self.path = path
        self.file = file
        if let node, !(node.isNull) {
            guard let mapping = node.mapping else {
                throw ConfigurationError(
                    path: path, line: node.line, message: "expected a mapping of keys to values", file: file)
            }
            self.mapping = mapping
        } else {
            self.mapping = nil
        }
    }

    /// `overlay`: keys set as if the file had them (Patroni's environment variables).
    static func parse(_ text: String, file: String?, overlay: [PatroniEnvironment.Entry] = []) throws -> ConfigReader {
        do {
            let node = PatroniEnvironment.overlay(try YAMLText.compose(text), overlay)
            return try ConfigReader(node: node, path: "", file: file)
        } catch let error as ConfigurationError {
            throw error
        } catch let error as YamlError {
            throw ConfigurationError(
                path: "", line: error.line, message: "not valid YAML: \(error.summary)", file: file)
        } catch {
            throw ConfigurationError(path: "", message: "not valid YAML: \(error)", file: file)
        }
    }

    var line: Int? { node?.line }

    func childPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func value(_ key: String) -> Node? {
        guard let mapping else { return nil }
        for (k, v) in mapping where k.string == key { return v.isNull ? nil : v }
        return nil
    }

    func error(_ key: String, _ message: String) -> ConfigurationError {
        ConfigurationError(path: childPath(key), line: value(key)?.line ?? line, message: message, file: file)
    }

    /// Fails on any key not in `allowed`.
    func rejectUnknownKeys(_ allowed: Set<String>) throws {
        guard let mapping else { return }
        var seen: Set<String> = []
        for (key, value) in mapping {
            guard let name = key.string else {
                throw ConfigurationError(path: path, line: key.line, message: "keys must be strings", file: file)
            }
            guard seen.insert(name).inserted else {
                throw ConfigurationError(
                    path: childPath(name), line: key.line,
                    message: "duplicate key '\(name)': give each key once (the second would silently win)", file: file)
            }
            if !allowed.contains(name), let reason = PatroniKeys.refused[childPath(name)] {
                throw ConfigurationError(
                    path: childPath(name), line: key.line ?? value.line, message: "refused: \(reason)", file: file)
            }
            if !allowed.contains(name) {
                let suggestion = allowed.min { editDistance($0, name) < editDistance($1, name) }
                var message = "unknown key '\(name)'"
                if let suggestion, editDistance(suggestion, name) <= 3 { message += " (did you mean '\(suggestion)'?)" }
                message += "; allowed here: \(allowed.sorted().joined(separator: ", "))"
                throw ConfigurationError(
                    path: childPath(name), line: value.line ?? key.line, message: message, file: file)
            }
        }
    }

    func section(_ key: String) throws -> ConfigReader {
        try ConfigReader(node: value(key), path: childPath(key), file: file)
    }

    func string(_ key: String) throws -> String? {
        guard let node = value(key) else { return nil }
        guard let scalar = node.scalar, node.mapping == nil, node.sequence == nil else {
            throw error(key, "expected a string")
        }
        return scalar.string
    }

    func string(_ key: String, default fallback: String) throws -> String { try string(key) ?? fallback }

    func requiredString(_ key: String) throws -> String {
        guard let value = try string(key), !value.isEmpty else {
            throw error(key, "is required")
        }
        return value
    }

    func int(_ key: String) throws -> Int? {
        guard let node = value(key) else { return nil }
        guard let value = node.int else { throw error(key, "expected a whole number, got '\(node.string ?? "?")'") }
        return value
    }

    func double(_ key: String) throws -> Double? {
        guard let node = value(key) else { return nil }
        guard let value = node.float ?? node.int.map(Double.init) else {
            throw error(key, "expected a number, got '\(node.string ?? "?")'")
        }
        return value
    }

    /// A number of seconds: finite, from 0 to one year (a larger one is a typo, and would overflow
    /// the conversion to a duration).
    func seconds(_ key: String) throws -> Double? {
        guard let value = try double(key) else { return nil }
        guard Duration(checkedSeconds: value) != nil else {
            throw error(key, "expected seconds from 0 to \(Int(Duration.maximumSettingSeconds)), got \(value)")
        }
        return value
    }

    func bool(_ key: String) throws -> Bool? {
        guard let node = value(key) else { return nil }
        guard let value = node.bool else { throw error(key, "expected true or false, got '\(node.string ?? "?")'") }
        return value
    }

    func stringList(_ key: String) throws -> [String]? {
        guard let node = value(key) else { return nil }
        if let scalar = node.scalar { return scalar.string.split(separator: ",").map { String($0).trimmed } }
        guard let sequence = node.sequence else { throw error(key, "expected a list of strings") }
        return try sequence.map { item in
            guard let text = item.string, item.scalar != nil else {
                throw ConfigurationError(
                    path: childPath(key), line: item.line, message: "expected a list of strings", file: file)
            }
            return text
        }
    }

    /// A list of configuration-file lines (`pg_hba`, `pg_ident`), each checked by `check`; the
    /// error names the item's line in this file.
    func lines(_ key: String, check: (String) -> String?) throws -> [String]? {
        guard let node = value(key) else { return nil }
        guard let sequence = node.sequence else {
            throw error(key, "expected a list of lines, one item per line (- host all all 10.0.0.0/8 scram-sha-256)")
        }
        return try sequence.enumerated().map { index, item in
            guard let text = item.string, item.scalar != nil else {
                throw ConfigurationError(
                    path: childPath(key) + "[\(index)]", line: item.line, message: "expected a string (one line)",
                    file: file)
            }
            if let problem = check(text) {
                throw ConfigurationError(
                    path: childPath(key) + "[\(index)]", line: item.line, message: problem, file: file)
            }
            return text
        }
    }

    /// A free-form mapping (PostgreSQL parameters, tags) as JSON values.
    func json(_ key: String) throws -> [String: JSONValueBox]? {
        guard let node = value(key) else { return nil }
        guard case .object(let object) = try Self.jsonValue(node, path: childPath(key), file: file) else {
            throw error(key, "expected a mapping")
        }
        return object.mapValues(JSONValueBox.init)
    }

    static func jsonValue(_ node: Node, path: String, file: String?) throws -> JSONValueBox.Value {
        if let mapping = node.mapping {
            var object: [String: JSONValueBox.Value] = [:]
            for (key, value) in mapping {
                guard let name = key.string else {
                    throw ConfigurationError(path: path, line: key.line, message: "keys must be strings", file: file)
                }
                object[name] = try jsonValue(value, path: "\(path).\(name)", file: file)
            }
            return .object(object)
        }
        if let sequence = node.sequence {
            return .array(try sequence.map { try jsonValue($0, path: path, file: file) })
        }
        if node.isNull { return .null }
        if let value = node.bool { return .bool(value) }
        if let value = node.int { return .number(Double(value)) }
        if let value = node.float { return .number(value) }
        return .string(node.string ?? "")
    }
}

/// A JSON value read from YAML, before it becomes a `BatonCore.JSONValue`.
struct JSONValueBox {
    indirect enum Value {
        case null, bool(Bool), number(Double), string(String), array([Value]), object([String: Value])
    }
    let value: Value
    init(_ value: Value) { self.value = value }
}

extension Node {
    var line: Int? {
        guard let mark else { return nil }
        return mark.line
    }

    var isNull: Bool {
        guard let scalar else { return false }
        return scalar.tag.rawValue == Tag.Name.null.rawValue
            || (scalar.style == .plain && ["", "~", "null", "Null", "NULL"].contains(scalar.string))
    }
}

extension YamlError {
    var line: Int? {
        switch self {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return mark.line
        case .duplicatedKeysInMapping(_, let context):
            return context.mark.line
        default:
            return nil
        }
    }

    var summary: String {
        switch self {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _):
            return problem
        case .duplicatedKeysInMapping(let duplicates, _):
            return "duplicate key '\(duplicates.joined(separator: "', '"))': give each key once"
        default:
            return "\(self)"
        }
    }
}

extension String {
    var trimmed: String {
        var text = Substring(self)
        while text.first?.isWhitespace == true { text.removeFirst() }
        while text.last?.isWhitespace == true { text.removeLast() }
        return String(text)
    }
}

func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a)
    let b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    for i in 1...a.count {
        var current = [i] + Array(repeating: 0, count: b.count)
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[b.count]
}

/// Patroni keys Baton knows and does not take, each with the reason and what to do instead: a
/// `patroni.yml` that uses one is refused by name, not as a typo.
enum PatroniKeys {
    static let otherStores =
        "Baton keeps the cluster's state in etcd through its v3 API only; move the cluster to etcd 3.4+ and write etcd3:"
    static let refused: [String: String] = [
        "etcd":
            "Patroni's etcd: section speaks etcd's v2 API, whose keys the v3 API does not see (a Baton agent beside "
            + "Patroni agents would not see their leader key); write the same settings under etcd3: (etcd 3.4+)",
        "consul": otherStores, "zookeeper": otherStores, "exhibitor": otherStores, "kubernetes": otherStores,
        "raft": otherStores,
        "citus": "Citus clusters (coordinator and worker groups) are not supported",
        "etcd3.srv": "DNS SRV discovery is not supported; list the members in etcd3.hosts",
        "etcd3.srv_suffix": "DNS SRV discovery is not supported; list the members in etcd3.hosts",
        "etcd3.use_proxies": "member discovery is not used; list the members in etcd3.hosts",
        "etcd3.cert_reqs": "the server certificate is always verified against etcd3.cacert",
        "etcd3.ca_cert": "write it as etcd3.cacert",
        "postgresql.config_dir":
            "Baton keeps postgresql.conf in the data directory; PostgreSQL with a separate configuration directory "
            + "(Debian's /etc/postgresql layout) is not supported yet",
        "postgresql.custom_conf": "not supported yet: put its parameters under postgresql.parameters",
        "postgresql.bin_name": "not supported yet: PostgreSQL's programs must have their standard names in bin_dir",
        "postgresql.use_unix_socket":
            "the agent connects over TCP to its listen address (admit it in pg_hba); not supported yet",
        "postgresql.use_unix_socket_repl": "replication connects over TCP; not supported yet",
        "postgresql.pg_ctl_timeout": "Baton supervises postgres directly; use stop_timeout",
        "postgresql.remove_data_directory_on_diverged_timelines":
            "use remove_data_directory_on_rewind_failure (a diverged replica is rewound first)",
        "postgresql.pg_ctl": "Baton supervises postgres directly, not through pg_ctl",
        "bootstrap.users": "Patroni 4 removed it too: create roles with SQL after bootstrap",
        "bootstrap.pg_hba": "Patroni 4 removed it too: write bootstrap.dcs.postgresql.pg_hba",
    ].merging(authenticationTLS) { first, _ in first }

    /// libpq's TLS and GSS settings of the agent's roles (`PATRONI_SUPERUSER_SSLMODE`, …).
    static let authenticationTLS: [String: String] = {
        var refused: [String: String] = [:]
        for role in ["superuser", "replication", "rewind"] {
            for key in [
                "sslmode", "sslkey", "sslpassword", "sslcert", "sslrootcert", "sslcrl", "sslcrldir", "gssencmode",
                "channel_binding",
            ] {
                refused["postgresql.authentication.\(role).\(key)"] =
                    "the agent's and the standbys' connections use sslmode=prefer and a password; libpq's TLS "
                    + "settings per role are not supported yet"
            }
        }
        return refused
    }()
}

extension ConfigReader {
    /// `command` (the value of `key`) as argv: split as a shell splits words, its program an
    /// absolute path (found in PATH when given by name); an error at `key` otherwise.
    func commandLine(_ key: String, _ command: String) throws -> [String] {
        guard let argv = ShellWords.split(command), let program = argv.first else {
            throw error(key, "cannot be read as a command line (an unclosed quote?): \(command)")
        }
        guard let resolved = ShellWords.resolve(program) else {
            throw error(key, "'\(program)' is not an executable file (nor found in PATH)")
        }
        return [resolved] + argv.dropFirst()
    }
}

/// A command line split as a POSIX shell splits words (Patroni's `shlex.split`): blanks
/// separate, single quotes keep everything, double quotes keep all but `\\` escapes, a backslash
/// outside quotes escapes the next character. No expansion of any kind.
enum ShellWords {
    static func split(_ line: String) -> [String]? {
        var words: [String] = []
        var current = ""
        var inWord = false
        var iterator = Array(line).makeIterator()
        while let character = iterator.next() {
            switch character {
            case " ", "\t", "\n":
                if inWord { words.append(current) }
                current = ""
                inWord = false
            case "'":
                inWord = true
                var closed = false
                while let next = iterator.next() {
                    if next == "'" {
                        closed = true
                        break
                    }
                    current.append(next)
                }
                if !closed { return nil }
            case "\"":
                inWord = true
                var closed = false
                while let next = iterator.next() {
                    if next == "\"" {
                        closed = true
                        break
                    }
                    if next == "\\" {
                        guard let escaped = iterator.next() else { return nil }
                        if !["\"", "\\", "$", "`"].contains(escaped) { current.append("\\") }
                        current.append(escaped)
                        continue
                    }
                    current.append(next)
                }
                if !closed { return nil }
            case "\\":
                guard let escaped = iterator.next() else { return nil }
                inWord = true
                current.append(escaped)
            default:
                inWord = true
                current.append(character)
            }
        }
        if inWord { words.append(current) }
        return words
    }

    /// `program` as an absolute path: as given when it names a file, else found in PATH.
    static func resolve(_ program: String) -> String? {
        let manager = FileManager.default
        // A relative path would be looked up from wherever the agent was started, and run from /.
        if program.contains("/") {
            return program.hasPrefix("/") && manager.isExecutableFile(atPath: program) ? program : nil
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") where directory.hasPrefix("/") {
            let candidate = "\(directory)/\(program)"
            if manager.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
