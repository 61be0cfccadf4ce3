import Logging

/// Patroni's `log` section, typed: how the agent's lines look (plain or JSON, Patroni's format
/// and date format), where they go (stderr, or `dir/patroni.log` rotated by size), which loggers
/// log at which level, and how many lines may wait for a slow sink.
public struct LogSettings: Sendable, Equatable {
    public enum Kind: String, Sendable { case plain, json }

    /// One field of a record, as Patroni's `format` names it (Python's LogRecord attributes).
    public enum Field: String, Sendable, CaseIterable {
        case asctime, levelname, levelno, message, name, module, filename, funcName, lineno, process, created, msecs
    }

    /// A piece of a plain format: literal text, or a field with Python's `%(name)-8s` padding.
    public enum Piece: Sendable, Equatable {
        case text(String)
        case field(Field, width: Int, leftAligned: Bool)
    }

    public var kind: Kind = .plain
    public var level: Logger.Level = .info
    /// Plain: the pieces of `format`; nil: Baton's own layout (ISO 8601 with milliseconds).
    public var plainFormat: [Piece]?
    /// JSON: the fields written and the key each is written as (`format` as a list or mapping).
    public var jsonFields: [(field: Field, key: String)] = [
        (.asctime, "asctime"), (.levelname, "levelname"), (.message, "message"),
    ]
    /// `dateformat` (strftime); nil: Python's `2026-12-06 23:36:10,123` with a format, else
    /// Baton's ISO 8601 with milliseconds.
    public var dateFormat: String?
    /// JSON: fields added to every record.
    public var staticFields: [String: String] = [:]
    /// Lines that may wait for the writer before new ones are dropped (and counted).
    public var maxQueueSize = 1000
    /// `dir`: lines go to `dir/patroni.log` (Patroni's file name, so that log shippers set up for
    /// Patroni keep working), rotated at `fileSize` bytes into `fileNum` older files.
    public var directory: String?
    public var fileSize = 25_000_000
    public var fileNum = 4
    /// The log files' permissions; nil: 0600.
    public var mode: Int?
    /// Levels by Baton module (`BatonHA`, `BatonEtcd`, …), from `loggers` (Patroni's logger names
    /// are mapped onto them).
    public var moduleLevels: [String: Logger.Level] = [:]

    public init() {}

    public static func == (lhs: LogSettings, rhs: LogSettings) -> Bool {
        lhs.kind == rhs.kind && lhs.level == rhs.level && lhs.plainFormat == rhs.plainFormat
            && lhs.jsonFields.map(\.field) == rhs.jsonFields.map(\.field)
            && lhs.jsonFields.map(\.key) == rhs.jsonFields.map(\.key) && lhs.dateFormat == rhs.dateFormat
            && lhs.staticFields == rhs.staticFields && lhs.maxQueueSize == rhs.maxQueueSize
            && lhs.directory == rhs.directory && lhs.fileSize == rhs.fileSize && lhs.fileNum == rhs.fileNum
            && lhs.mode == rhs.mode && lhs.moduleLevels == rhs.moduleLevels
    }

    /// The file lines go to, when `dir` is set.
    public var filePath: String? { directory.map { ($0.hasSuffix("/") ? $0 : $0 + "/") + "patroni.log" } }

    /// The lowest level any logger may log at (the handler's own threshold).
    public var lowestLevel: Logger.Level { ([level] + moduleLevels.values).min() ?? level }

    /// A level by Python's or swift-log's name (`DEBUG`, `warning`, `WARN`, `NOTSET`), or nil.
    public static func level(_ text: String) -> Logger.Level? {
        switch text.lowercased() {
        case "trace", "notset": return .trace
        case "debug": return .debug
        case "info": return .info
        case "notice": return .notice
        case "warning", "warn": return .warning
        case "error": return .error
        case "critical", "fatal": return .critical
        default: return nil
        }
    }

    /// Baton's modules a Patroni logger name stands for; nil when the name means nothing here.
    public static func modules(forLogger name: String) -> [String]? {
        let baton = ["BatonHA", "BatonEtcd", "BatonPostgres", "BatonAPI", "BatonAgent", "BatonCore"]
        if baton.contains(name) { return [name] }
        let lower = name.lowercased()
        switch lower {
        case "patroni", "baton": return baton
        case "patroni.ha": return ["BatonHA"]
        case "patroni.api", "patroni.request", "patroni.restapi": return ["BatonAPI"]
        case "urllib3", "etcd", "etcd.client": return ["BatonEtcd"]
        default: break
        }
        if lower.hasPrefix("patroni.dcs") { return ["BatonEtcd"] }
        if lower.hasPrefix("patroni.postgresql") { return ["BatonPostgres"] }
        return nil
    }

    /// A Python `%`-format of LogRecord fields (`%(asctime)s %(levelname)-8s: %(message)s`), as
    /// pieces; the problem when it names a field Baton does not have or is malformed.
    public static func parsePlainFormat(_ text: String) -> Result<[Piece], FormatProblem> {
        var pieces: [Piece] = []
        var literal = ""
        var rest = Substring(text)
        while let percent = rest.firstIndex(of: "%") {
            literal += rest[..<percent]
            rest = rest[rest.index(after: percent)...]
            if rest.first == "%" {
                literal += "%"
                rest = rest.dropFirst()
                continue
            }
            guard rest.first == "(", let close = rest.firstIndex(of: ")") else {
                return .failure(FormatProblem("'%' must be followed by (field) or another '%'"))
            }
            let name = String(rest[rest.index(after: rest.startIndex)..<close])
            guard let field = Field(rawValue: name) else {
                return .failure(
                    FormatProblem(
                        "unknown field '\(name)'; known: \(Field.allCases.map(\.rawValue).joined(separator: ", "))"))
            }
            rest = rest[rest.index(after: close)...]
            let leftAligned = rest.first == "-"
            if leftAligned { rest = rest.dropFirst() }
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            rest = rest.dropFirst(digits.count)
            if rest.first == "." {  // a precision (%(created).3f): accepted, the default is kept
                rest = rest.dropFirst()
                rest = rest.drop { $0.isASCII && $0.isNumber }
            }
            guard let conversion = rest.first, "sdfr".contains(conversion) else {
                return .failure(FormatProblem("field '\(name)' needs a conversion: s, d, f or r"))
            }
            rest = rest.dropFirst()
            guard let width = Int(digits.isEmpty ? "0" : String(digits)), width <= 200 else {
                return .failure(FormatProblem("the width of '\(name)' is too large"))
            }
            if !literal.isEmpty { pieces.append(.text(literal)) }
            literal = ""
            pieces.append(.field(field, width: width, leftAligned: leftAligned))
        }
        literal += rest
        if !literal.isEmpty { pieces.append(.text(literal)) }
        return .success(pieces)
    }

    public struct FormatProblem: Error, Sendable {
        public let message: String
        init(_ message: String) { self.message = message }
    }
}
