import BatonCore
import Foundation
import Yams

/// Output of the operator commands (`baton topology`, `history`, `show-config`, `edit-config`),
/// kept apart from the command line so that it can be tested without a cluster.
public enum OperatorFormatting {
    // MARK: topology

    /// A member in the replication tree, with the members that replicate from it.
    struct TopologyNode: Encodable {
        var member: String
        var host: String
        var role: String
        var state: String
        var timeline: Int?
        var lag: UInt64?
        var replicas: [TopologyNode]
    }

    /// Who replicates from whom: the leader at the root, each replica under the member it streams
    /// from (its `replicatefrom` tag when that names a member, the leader otherwise). Members that
    /// are not part of the tree (no leader, a primary without the lock) are further roots.
    public static func topology(_ view: ClusterView, scope: String, format: String) -> String {
        let rows = ClusterTable.rows(view)
        let byName = Dictionary(rows.map { ($0.member, $0) }, uniquingKeysWith: { first, _ in first })
        let leader = view.leader.flatMap { byName[$0.member] == nil ? nil : $0.member }
        var children: [String: [String]] = [:]
        var roots: [String] = []
        for member in view.members {
            if member.name == leader || member.role == .primary {
                roots.append(member.name)
                continue
            }
            if let upstream = member.tags["replicatefrom"]?.stringValue, upstream != member.name,
                byName[upstream] != nil
            {
                children[upstream, default: []].append(member.name)
            } else if let leader {
                children[leader, default: []].append(member.name)
            } else {
                roots.append(member.name)
            }
        }
        // The leader first, then the other roots by name.
        roots.sort { ($0 == leader ? 0 : 1, $0) < ($1 == leader ? 0 : 1, $1) }
        var visited = Set<String>()
        func node(_ name: String) -> TopologyNode? {
            guard let row = byName[name], visited.insert(name).inserted else { return nil }
            let replicas = (children[name] ?? []).sorted().compactMap(node)
            return TopologyNode(
                member: row.member, host: row.host, role: row.role, state: row.state, timeline: row.timeline,
                lag: row.lag, replicas: replicas)
        }
        var trees = roots.compactMap(node)
        // A `replicatefrom` cycle leaves members unreached: show them as roots rather than hide them.
        trees += view.members.map(\.name).filter { !visited.contains($0) }.sorted().compactMap(node)

        if format == "json" || format == "yaml" {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            guard let data = try? encoder.encode(trees) else { return "[]" }
            if format == "json" { return String(decoding: data, as: UTF8.self) }
            return String(yaml((try? JSONDecoder().decode(JSONValue.self, from: data)) ?? .array([])).dropLast())
        }
        var body: [[String]] = []
        func walk(_ node: TopologyNode, prefix: String, branch: String) {
            let row = ClusterTable.Row(
                member: branch + node.member, host: node.host, role: node.role, state: node.state,
                timeline: node.timeline, lag: node.lag)
            body.append(row.cells)
            for (index, child) in node.replicas.enumerated() {
                let last = index == node.replicas.count - 1
                walk(child, prefix: prefix + (last ? "   " : "│  "), branch: prefix + (last ? "└─ " : "├─ "))
            }
        }
        for tree in trees { walk(tree, prefix: "", branch: "") }
        var lines = [ClusterTable.title(view, scope: scope)]
        lines += ClusterTable.table(header: ClusterTable.header, rows: body)
        lines += ClusterTable.footer(view)
        return lines.joined(separator: "\n")
    }

    // MARK: history

    /// The `history` key (one row per timeline switch, oldest first) as a table, JSON or YAML.
    public static func history(_ entries: [HistoryEntry], format: String) -> String {
        struct Row: Encodable {
            var timeline: Int
            var lsn: String
            var reason: String
            var timestamp: String?
            var new_leader: String?
        }
        let rows = entries.sorted { $0.timeline < $1.timeline }.map {
            Row(
                timeline: $0.timeline, lsn: $0.lsn.description, reason: $0.reason, timestamp: $0.timestamp,
                new_leader: $0.newLeader)
        }
        if format == "json" || format == "yaml" {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            guard let data = try? encoder.encode(rows) else { return "[]" }
            if format == "json" { return String(decoding: data, as: UTF8.self) }
            return String(yaml((try? JSONDecoder().decode(JSONValue.self, from: data)) ?? .array([])).dropLast())
        }
        let header = ["TL", "LSN", "Reason", "Timestamp", "New Leader"]
        let body = rows.map { [String($0.timeline), $0.lsn, $0.reason, $0.timestamp ?? "", $0.new_leader ?? ""] }
        return ClusterTable.table(header: header, rows: body).joined(separator: "\n")
    }

    // MARK: YAML

    /// A JSON value as block YAML, keys sorted, strings quoted whenever YAML could read them as
    /// something else. Ends with a newline.
    public static func yaml(_ value: JSONValue) -> String {
        switch value {
        case .object(let object) where !object.isEmpty:
            return yamlLines(value, indent: 0).joined(separator: "\n") + "\n"
        case .array(let array) where !array.isEmpty:
            return yamlLines(value, indent: 0).joined(separator: "\n") + "\n"
        default:
            return yamlScalar(value) + "\n"
        }
    }

    private static func yamlLines(_ value: JSONValue, indent: Int) -> [String] {
        let pad = String(repeating: " ", count: indent)
        switch value {
        case .object(let object):
            var lines: [String] = []
            for key in object.keys.sorted() {
                let child = object[key] ?? .null
                let name = yamlString(key)
                if isBlock(child) {
                    lines.append("\(pad)\(name):")
                    lines += yamlLines(child, indent: indent + 2)
                } else {
                    lines.append("\(pad)\(name): \(yamlScalar(child))")
                }
            }
            return lines
        case .array(let array):
            var lines: [String] = []
            for item in array {
                if isBlock(item) {
                    var nested = yamlLines(item, indent: indent + 2)
                    if case .object = item, !nested.isEmpty {
                        nested[0] = pad + "- " + nested[0].dropFirst(indent + 2)
                        lines += nested
                    } else {
                        lines.append("\(pad)-")
                        lines += nested
                    }
                } else {
                    lines.append("\(pad)- \(yamlScalar(item))")
                }
            }
            return lines
        default:
            return [pad + yamlScalar(value)]
        }
    }

    private static func isBlock(_ value: JSONValue) -> Bool {
        switch value {
        case .object(let object): return !object.isEmpty
        case .array(let array): return !array.isEmpty
        default: return false
        }
    }

    private static func yamlScalar(_ value: JSONValue) -> String {
        switch value {
        case .null: return "null"
        case .bool(let value): return value ? "true" : "false"
        case .number(let value):
            if value.rounded() == value, abs(value) < 9.0e15 { return String(Int64(value)) }
            return String(value)
        case .string(let value): return yamlString(value)
        case .array: return "[]"
        case .object: return "{}"
        }
    }

    /// Plain when that reads back as the same string, double-quoted (JSON escapes) otherwise.
    static func yamlString(_ text: String) -> String {
        let reserved: Set<String> = [
            "", "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE", "yes", "Yes", "YES",
            "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF", "y", "Y", "n", "N",
        ]
        let first = text.first.map { "-?:,[]{}#&*!|>'\"%@` ".contains($0) } ?? true
        let plain =
            !reserved.contains(text) && !first && text.last != " " && !text.contains(": ") && !text.contains(" #")
            && !text.hasSuffix(":") && Double(text) == nil && !text.contains(where: { $0.isNewline || $0 == "\t" })
            && !text.unicodeScalars.contains(where: { $0.value < 0x20 })
            && !(text.first.map { "0123456789+-.".contains($0) } == true
                && text.allSatisfy { "0123456789.:_+-eExXoObBabcdfABCDF".contains($0) })
        if plain { return text }
        let data = (try? JSONEncoder().encode(text)) ?? Data("\"\"".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    // MARK: diff

    /// A unified-style line diff of `old` against `new` (`-` removed, `+` added, three lines of
    /// context, `@@` between distant changes); empty when they are equal.
    public static func diff(old: String, new: String, oldName: String = "current", newName: String = "proposed")
        -> String
    {
        let a = old.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let b = new.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if a == b { return "" }
        // Longest common subsequence, then walk it into an edit script.
        var lcs = Array(repeating: Array(repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in stride(from: a.count - 1, through: 0, by: -1) {
            for j in stride(from: b.count - 1, through: 0, by: -1) {
                lcs[i][j] = a[i] == b[j] ? lcs[i + 1][j + 1] + 1 : max(lcs[i + 1][j], lcs[i][j + 1])
            }
        }
        enum Edit {
            case keep(String), remove(String), add(String)
        }
        var edits: [Edit] = []
        var i = 0
        var j = 0
        while i < a.count || j < b.count {
            if i < a.count, j < b.count, a[i] == b[j] {
                edits.append(.keep(a[i]))
                i += 1
                j += 1
            } else if i < a.count, j == b.count || lcs[i + 1][j] >= lcs[i][j + 1] {
                edits.append(.remove(a[i]))
                i += 1
            } else {
                edits.append(.add(b[j]))
                j += 1
            }
        }
        // Drop the trailing empty line both texts get from a final newline.
        if case .keep("") = edits.last { edits.removeLast() }
        let changed = edits.indices.filter {
            if case .keep = edits[$0] { return false }
            return true
        }
        var shown = Set<Int>()
        for index in changed { shown.formUnion(max(0, index - 3)...min(edits.count - 1, index + 3)) }
        var lines = ["--- \(oldName)", "+++ \(newName)"]
        var previous: Int?
        for index in shown.sorted() {
            if previous.map({ index != $0 + 1 }) ?? (index != 0) { lines.append("@@") }
            previous = index
            switch edits[index] {
            case .keep(let line): lines.append(" " + line)
            case .remove(let line): lines.append("-" + line)
            case .add(let line): lines.append("+" + line)
            }
        }
        return lines.joined(separator: "\n")
    }
}

/// Parsing what the operator types for `baton edit-config`.
/// What a member's `GET /patroni` says about the pause, for `pause --wait` and `resume --wait`.
public enum PauseReport {
    /// True or false when the body is a member's status document (Patroni leaves `pause` out when
    /// not paused); nil when it is not one, or its `pause` is not a boolean: unknown is not "not
    /// paused", and the member stays pending.
    public static func reportedPause(in body: [UInt8]) -> Bool? {
        guard case .object(let document)? = try? JSONDecoder().decode(JSONValue.self, from: Data(body)),
            case .string? = document["state"]
        else { return nil }
        switch document["pause"] {
        case nil, .null?: return false
        case .bool(let paused)?: return paused
        default: return nil
        }
    }
}

public enum ConfigEdit {
    public struct InputError: Error, CustomStringConvertible, Equatable {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    /// `-s key=value`: a dotted path (`postgresql.use_pg_rewind`) and a value read as JSON or a
    /// YAML scalar (`10`, `true`, `null` deletes the key, `"10"` stays a string, anything else is
    /// a string).
    public static func parseSetting(_ text: String) throws(InputError) -> (path: [String], value: JSONValue) {
        guard let equals = text.firstIndex(of: "=") else {
            throw InputError("'\(text)' is not key=value (e.g. -s loop_wait=5, -s postgresql.use_pg_rewind=true)")
        }
        let key = String(text[..<equals]).trimmingCharacters(in: .whitespaces)
        let path = key.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard !key.isEmpty, !path.contains(where: \.isEmpty) else {
            throw InputError("'\(text)': the key must be a name or a dotted path like postgresql.use_pg_rewind")
        }
        return (path, parseValue(String(text[text.index(after: equals)...])))
    }

    /// `-p name=value`: a PostgreSQL parameter (the name is not split on dots:
    /// `pg_stat_statements.max` is one parameter).
    public static func parseParameter(_ text: String) throws(InputError) -> (name: String, value: JSONValue) {
        guard let equals = text.firstIndex(of: "="), equals != text.startIndex else {
            throw InputError("'\(text)' is not name=value (e.g. -p max_connections=200, -p work_mem=16MB)")
        }
        let name = String(text[..<equals]).trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty else { throw InputError("'\(text)': the parameter name is empty") }
        return (name, parseValue(String(text[text.index(after: equals)...])))
    }

    /// A command-line value: JSON when it parses as JSON, a YAML scalar or flow collection when
    /// YAML reads it as one, the text itself otherwise.
    public static func parseValue(_ text: String) -> JSONValue {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let value = try? JSONDecoder().decode(JSONValue.self, from: Data(trimmed.utf8)) { return value }
        if let node = try? YAMLText.compose(trimmed),
            let value = try? ConfigReader.jsonValue(node, path: "", file: nil).json
        {
            // A plain scalar stays exactly as typed ('a #b' is not a comment here); a quoted one is unquoted.
            if case .string = value, trimmed.first != "'" { return .string(text) }
            return value
        }
        return .string(text)
    }

    /// The merge patch for `-s` and `-p` arguments, applied in order (a later one wins).
    public static func patch(settings: [String], parameters: [String]) throws(InputError) -> JSONValue {
        var patch: JSONValue = .object([:])
        for setting in settings {
            let (path, value) = try parseSetting(setting)
            patch = combine(patch, nested(path, value))
        }
        for parameter in parameters {
            let (name, value) = try parseParameter(parameter)
            patch = combine(patch, nested(["postgresql", "parameters", name], value))
        }
        return patch
    }

    /// A YAML or JSON document (`--apply FILE`) as a merge patch; it must be a mapping.
    public static func parseDocument(_ text: String, source: String) throws(InputError) -> JSONValue {
        let node: Node?
        do {
            node = try YAMLText.compose(text)
        } catch let error as YamlError {
            throw InputError("\(source): not valid YAML or JSON: \(error.summary)")
        } catch {
            throw InputError("\(source): not valid YAML or JSON: \(error)")
        }
        guard let node, node.mapping != nil else {
            throw InputError("\(source): expected a mapping of config keys, e.g. 'loop_wait: 5'")
        }
        do {
            return try ConfigReader.jsonValue(node, path: "", file: source).json
        } catch {
            throw InputError("\(error)")
        }
    }

    /// `{a: {b: value}}` for the path `[a, b]`. `null` values stay in the patch: a merge patch
    /// deletes those keys.
    static func nested(_ path: [String], _ value: JSONValue) -> JSONValue {
        path.reversed().reduce(value) { inner, key in .object([key: inner]) }
    }

    /// Two patches as one, keeping `null`s (which a merge patch would apply as deletions).
    public static func combine(_ base: JSONValue, _ overlay: JSONValue) -> JSONValue {
        guard case .object(var object) = base, case .object(let other) = overlay else { return overlay }
        for (key, value) in other { object[key] = object[key].map { combine($0, value) } ?? value }
        return .object(object)
    }

    /// Merges a patch where `null` removes a key; the merge itself is `DynamicConfig.merging`.
    public static func proposed(_ current: DynamicConfig, patch: JSONValue) -> DynamicConfig {
        current.merging(patch: patch)
    }
}
