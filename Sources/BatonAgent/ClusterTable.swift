import BatonCore
import Foundation

/// `baton list` output: a table like `patronictl list`, JSON or YAML.
public enum ClusterTable {
    /// One member as `baton list` shows it.
    struct Row: Encodable {
        var member: String
        var host: String
        var role: String
        var state: String
        var timeline: Int?
        var lag: UInt64?
        var tags: [String: String]?
        var pendingRestart: Bool?
        var pendingRestartReason: [String: String]?

        var cells: [String] {
            [
                member, host, role, state, timeline.map(String.init) ?? "",
                lag.map { String(format: "%.1f", Double($0) / 1_048_576) } ?? "",
            ]
        }
    }

    static let header = ["Member", "Host", "Role", "State", "TL", "Lag in MB"]
    static let extendedHeader = header + ["Pending restart", "Pending restart reason", "Tags"]

    static func extendedCells(_ row: Row) -> [String] {
        // Member keys are anyone's with etcd access: no control characters reach the terminal.
        func printable(_ text: String) -> String {
            String(text.unicodeScalars.map { $0.properties.generalCategory == .control ? "?" : Character($0) })
        }
        return row.cells + [
            row.pendingRestart == true ? "*" : "",
            printable(
                (row.pendingRestartReason ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }
                    .joined(separator: ", ")),
            printable(
                (row.tags ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")),
        ]
    }

    static func rows(_ view: ClusterView) -> [Row] {
        let leader = view.leader?.member
        let optime = view.status?.optime ?? view.leaderMember?.xlogLocation
        let sync = Set(view.sync?.value.syncStandbys ?? [])
        return view.members.map { member in
            let host = ConnURL.hostAndPort(member.connURL).map { "\($0.0):\($0.1)" } ?? member.connURL
            let role: String
            if member.name == leader {
                role = member.role == .standbyLeader ? "Standby Leader" : "Leader"
            } else if sync.contains(member.name) {
                role = view.config?.value.quorumCommit == true ? "Quorum Standby" : "Sync Standby"
            } else {
                role = member.role == .primary ? "Primary (no lock)" : "Replica"
            }
            var state = member.state.rawValue
            if member.name != leader, member.state == .running, member.replicationState == "streaming" {
                state = "streaming"
            }
            if member.state == .creatingReplica, let progress = member.cloneProgress {
                state += " (\(progress.summary))"
            }
            let lag = member.name == leader ? nil : optime.map { $0.bytesAhead(of: member.xlogLocation ?? .zero) }
            let tags = member.tags.values.isEmpty ? nil : member.tags.values.mapValues { "\($0)" }
            let reasons = member.pendingRestartReason.mapValues { "\($0.oldValue)->\($0.newValue)" }
            return Row(
                member: member.name, host: host, role: role, state: state, timeline: member.timeline, lag: lag,
                tags: tags, pendingRestart: member.pendingRestart ? true : nil,
                pendingRestartReason: reasons.isEmpty ? nil : reasons)
        }
    }

    public static func render(_ view: ClusterView, scope: String, format: String, extended: Bool = false) -> String {
        let rows = rows(view)
        if format == "json" || format == "yaml" {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            guard let data = try? encoder.encode(rows) else { return format == "json" ? "[]" : "[]\n" }
            if format == "json" { return String(decoding: data, as: UTF8.self) }
            let value = (try? JSONDecoder().decode(JSONValue.self, from: data)) ?? .array([])
            return String(OperatorFormatting.yaml(value).dropLast())
        }
        var lines = [title(view, scope: scope)]
        lines +=
            extended
            ? table(header: extendedHeader, rows: rows.map(extendedCells))
            : table(header: header, rows: rows.map(\.cells))
        lines += footer(view)
        lines += poolers(view)
        return lines.joined(separator: "\n")
    }

    /// The poolers registered in etcd (`baton pooler`), as a second table; nothing when none is.
    static func poolers(_ view: ClusterView) -> [String] {
        guard !view.poolers.isEmpty else { return [] }
        // Values another writer may have put in etcd: one printable line each, bounded.
        func cell(_ text: String?) -> String {
            // No control character (C0, DEL, C1) and no bidirectional override reaches a terminal.
            let printable = String(
                (text ?? "").unicodeScalars.filter {
                    $0.value >= 0x20 && !(0x7F...0x9F).contains($0.value) && !(0x200E...0x200F).contains($0.value)
                        && !(0x202A...0x202E).contains($0.value) && !(0x2066...0x2069).contains($0.value)
                })
            return printable.count > 80 ? String(printable.prefix(77)) + "..." : printable
        }
        let rows = view.poolers.map { pooler in
            [
                cell(pooler.name), cell(pooler.state), cell(pooler.primary ?? "-"),
                cell(pooler.replicas.map { $0.isEmpty ? "-" : $0.joined(separator: ",") } ?? "-"),
                cell(pooler.databases.joined(separator: " ")),
            ]
        }
        return [" Poolers:"] + table(header: ["Pooler", "State", "Primary", "Replicas", "Databases"], rows: rows)
    }

    static func title(_ view: ClusterView, scope: String) -> String {
        "+ Cluster: \(scope)" + (view.initialize.map { " (\($0))" } ?? "") + " +"
    }

    static func footer(_ view: ClusterView) -> [String] {
        var lines: [String] = []
        if view.dynamicConfig.pause { lines.append(" Maintenance mode: on") }
        // The key as stored: an invalid one is never put in force by the agents (they keep the
        // last valid configuration), which an operator must see.
        if let config = view.config?.value {
            let problems = config.validationErrors()
            if !problems.isEmpty {
                lines.append(
                    " Config key invalid, ignored by the agents (they keep the last valid one): "
                        + problems.joined(separator: "; ") + " — fix it with baton edit-config")
            }
        }
        if let failover = view.failover?.value {
            lines.append(
                " Switchover scheduled: \(failover.leader ?? "?") → \(failover.member ?? "any") \(failover.scheduled_at ?? "")"
            )
        }
        return lines
    }

    public static func table(header: [String], rows: [[String]]) -> [String] {
        var widths = header.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            "| "
                + cells.enumerated().map {
                    $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0)
                }
                .joined(separator: " | ") + " |"
        }
        let rule = "+" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "+") + "+"
        return [rule, line(header), rule] + rows.map(line) + [rule]
    }
}
