import BatonCore
import Foundation

/// `baton list` output: a table like `patronictl list`, or JSON.
public enum ClusterTable {
    public static func render(_ view: ClusterView, scope: String, format: String) -> String {
        let leader = view.leader?.member
        let optime = view.status?.optime ?? view.leaderMember?.xlogLocation
        let sync = Set(view.sync?.value.syncStandbys ?? [])
        struct Row: Encodable {
            var member: String
            var host: String
            var role: String
            var state: String
            var timeline: Int?
            var lag: UInt64?
            var tags: [String: String]?
        }
        let rows: [Row] = view.members.map { member in
            let host = ConnURL.hostAndPort(member.connURL).map { "\($0.0):\($0.1)" } ?? member.connURL
            let role: String
            if member.name == leader {
                role = "Leader"
            } else if sync.contains(member.name) {
                role = "Sync Standby"
            } else {
                role = member.role == .primary ? "Primary (no lock)" : "Replica"
            }
            var state = member.state.rawValue
            if member.name != leader, member.state == .running, member.replicationState == "streaming" {
                state = "streaming"
            }
            let lag = member.name == leader ? nil : optime.map { $0.bytesAhead(of: member.xlogLocation ?? .zero) }
            let tags = member.tags.values.isEmpty ? nil : member.tags.values.mapValues { "\($0)" }
            return Row(
                member: member.name, host: host, role: role, state: state, timeline: member.timeline, lag: lag,
                tags: tags)
        }
        if format == "json" {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return (try? encoder.encode(rows)).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
        }
        let header = ["Member", "Host", "Role", "State", "TL", "Lag in MB"]
        let body = rows.map { row in
            [
                row.member, row.host, row.role, row.state, row.timeline.map(String.init) ?? "",
                row.lag.map { String(format: "%.1f", Double($0) / 1_048_576) } ?? "",
            ]
        }
        var lines = ["+ Cluster: \(scope)" + (view.initialize.map { " (\($0))" } ?? "") + " +"]
        lines += table(header: header, rows: body)
        if view.dynamicConfig.pause { lines.append(" Maintenance mode: on") }
        if let failover = view.failover?.value {
            lines.append(
                " Switchover scheduled: \(failover.leader ?? "?") → \(failover.member ?? "any") \(failover.scheduled_at ?? "")"
            )
        }
        return lines.joined(separator: "\n")
    }

    static func table(header: [String], rows: [[String]]) -> [String] {
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
