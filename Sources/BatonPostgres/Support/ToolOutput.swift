import BatonCore
import Foundation

/// Parsers for the text the PostgreSQL tools print. Pure, unit-tested.
enum ToolOutput {
    /// One `pg_basebackup --progress` line, e.g. `  1234/23456 kB (5%), 0/1 tablespace (…)`.
    static func basebackupProgress(_ line: String) -> CloneProgress? {
        guard let match = line.firstMatch(of: /(\d+)\/(\d+) kB \((\d+)%\)/),
            let done = Int64(match.1), let total = Int64(match.2), let percent = Int(match.3)
        else { return nil }
        return CloneProgress(doneKB: done, totalKB: total, percent: percent)
    }

    /// `pg_controldata` output as a dictionary of `key: value` lines.
    static func controlData(_ text: String) -> [String: String] {
        var fields: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            fields[key] = value
        }
        return fields
    }

    /// The result of `pg_rewind --dry-run`.
    enum RewindCheck: Equatable {
        case notRequired
        case required(divergedAt: LSN?, timeline: Int?)
        case unknown
    }

    static func rewindCheck(_ text: String) -> RewindCheck {
        if text.contains("no rewind required") { return .notRequired }
        if let match = text.firstMatch(
            of: /servers diverged at WAL location ([0-9A-Fa-f]+\/[0-9A-Fa-f]+) on timeline (\d+)/)
        {
            return .required(divergedAt: LSN(text: String(match.1)), timeline: Int(match.2))
        }
        return .unknown
    }

    /// True when pg_controldata (`control`) shows a standby (shut down in recovery, or crashed while
    /// in archive recovery) that had
    /// already replayed WAL of `sourceTimeline` (its minimum recovery point is on that timeline):
    /// a standby writes no WAL of its own, so it cannot have diverged from a source still on that
    /// timeline, and needs no rewind. pg_rewind itself must not be asked: it reads the timeline of
    /// the last restartpoint, which may be an older one (no checkpoint replayed since the switch),
    /// then looks for that timeline's WAL past the fork point, which the standby never had, and
    /// fails ("could not find previous WAL record") on every attempt.
    static func standbyAlreadyOnTimeline(_ control: [String: String], sourceTimeline: Int) -> Bool {
        let state = control["Database cluster state"]
        guard state == "shut down in recovery" || state == "in archive recovery",
            let timeline = control["Min recovery ending loc's timeline"].flatMap({ Int($0) }),
            let location = control["Minimum recovery ending location"], location != "0/0"
        else { return false }
        return timeline == sourceTimeline
    }

    /// `postmaster.pid`: pid, data directory, start time (epoch), port.
    struct PostmasterPID: Equatable {
        var pid: Int32
        var dataDirectory: String
        var startEpoch: Int?
        var port: Int?
    }

    static func postmasterPID(_ text: String) -> PostmasterPID? {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        guard lines.count >= 2, let pid = Int32(lines[0]), pid > 0 else { return nil }
        return PostmasterPID(
            pid: pid, dataDirectory: lines[1],
            startEpoch: lines.count > 2 ? Int(lines[2]) : nil,
            port: lines.count > 3 ? Int(lines[3]) : nil)
    }
}
