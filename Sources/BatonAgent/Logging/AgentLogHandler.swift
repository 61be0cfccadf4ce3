import Dispatch
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One log record, with the time it was made (wall clock, for people reading logs).
struct LogRecord {
    var level: Logger.Level
    var message: String
    var metadata: Logger.Metadata
    var source: String
    var file: String
    var function: String
    var line: UInt
    var label: String
    var seconds: Int
    var nanoseconds: Int
}

/// Turns records into lines as `LogSettings` asks: Baton's layout, Patroni's `format`, or JSON.
/// Pure (the time comes in the record), unit-tested.
enum LogFormatter {
    static func line(_ record: LogRecord, _ settings: LogSettings) -> String {
        switch settings.kind {
        case .plain:
            guard let pieces = settings.plainFormat else { return batonLine(record, settings) }
            var text = ""
            for piece in pieces {
                switch piece {
                case .text(let literal): text += literal
                case .field(let field, let width, let leftAligned):
                    let value = self.value(field, record, settings, plain: true)
                    let padding = String(repeating: " ", count: max(0, width - value.count))
                    text += leftAligned ? value + padding : padding + value
                }
            }
            return text
        case .json:
            var object = "{"
            var first = true
            func add(_ key: String, _ value: String, quoted: Bool = true) {
                object += (first ? "" : ", ") + quote(key) + ": " + (quoted ? quote(value) : value)
                first = false
            }
            for (field, key) in settings.jsonFields {
                let value = self.value(field, record, settings, plain: false)
                add(key, value, quoted: ![.levelno, .lineno, .process, .created, .msecs].contains(field))
            }
            for (key, value) in record.metadata.sorted(by: { $0.key < $1.key }) { add(key, "\(value)") }
            for (key, value) in settings.staticFields.sorted(by: { $0.key < $1.key }) { add(key, value) }
            return object + "}"
        }
    }

    /// `2026-12-06T23:36:10.123+0000 info baton: key=value [BatonHA] message`: swift-log's own
    /// layout, with milliseconds.
    static func batonLine(_ record: LogRecord, _ settings: LogSettings) -> String {
        let meta = metadataText(record.metadata)
        return "\(timestamp(record, settings)) \(record.level) \(record.label):\(meta.isEmpty ? "" : " " + meta) "
            + "[\(record.source)] \(record.message)"
    }

    static func metadataText(_ metadata: Logger.Metadata) -> String {
        metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    }

    static func value(_ field: LogSettings.Field, _ record: LogRecord, _ settings: LogSettings, plain: Bool) -> String {
        switch field {
        case .asctime: return timestamp(record, settings)
        case .levelname: return pythonName(record.level)
        case .levelno: return String(pythonNumber(record.level))
        case .message:
            // A plain line keeps the structured details after the text: nothing is lost.
            let meta = plain ? metadataText(record.metadata) : ""
            return meta.isEmpty ? record.message : record.message + " " + meta
        case .name, .module: return record.source
        case .filename: return String(record.file.split(separator: "/").last ?? Substring(record.file))
        case .funcName: return record.function
        case .lineno: return String(record.line)
        case .process: return String(getpid())
        case .created:
            let millis = record.nanoseconds / 1_000_000
            return "\(record.seconds).\(String(repeating: "0", count: 3 - String(millis).count))\(millis)"
        case .msecs: return String(record.nanoseconds / 1_000_000)
        }
    }

    static func pythonName(_ level: Logger.Level) -> String {
        switch level {
        case .trace, .debug: return "DEBUG"
        case .info, .notice: return "INFO"
        case .warning: return "WARNING"
        case .error: return "ERROR"
        case .critical: return "CRITICAL"
        }
    }

    static func pythonNumber(_ level: Logger.Level) -> Int {
        switch level {
        case .trace: return 5
        case .debug: return 10
        case .info: return 20
        case .notice: return 25
        case .warning: return 30
        case .error: return 40
        case .critical: return 50
        }
    }

    /// Local time: `dateformat` when given; Python's `2026-12-06 23:36:10,123` under a Patroni
    /// format; Baton's `2026-12-06T23:36:10.123+0000` otherwise.
    static func timestamp(_ record: LogRecord, _ settings: LogSettings) -> String {
        var seconds = time_t(record.seconds)
        var parts = tm()
        localtime_r(&seconds, &parts)
        func format(_ pattern: String) -> String {
            var buffer = [Int8](repeating: 0, count: 256)
            let count = strftime(&buffer, buffer.count, pattern, &parts)
            return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        let millis = String(record.nanoseconds / 1_000_000)
        let padded = String(repeating: "0", count: 3 - millis.count) + millis
        if let dateFormat = settings.dateFormat { return format(dateFormat) }
        if settings.plainFormat != nil || settings.kind == .json { return format("%Y-%m-%d %H:%M:%S") + "," + padded }
        return format("%Y-%m-%dT%H:%M:%S") + "." + padded + format("%z")
    }

    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x2028 || scalar.value == 0x2029 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

/// Where lines go: written by one background queue, so that a slow or blocked sink (a full pipe,
/// a slow disk) never stalls the HA loop; at most `maxQueueSize` lines wait, newer ones are
/// dropped and counted, and the count is written as soon as the sink takes lines again.
public final class LogSink: Sendable {
    private let queue = DispatchQueue(label: "baton.log")
    private let pending = Mutex((waiting: 0, lost: 0))
    private let maxQueueSize: Int
    private let output: Mutex<LogOutput>

    init(settings: LogSettings) {
        maxQueueSize = max(1, settings.maxQueueSize)
        if let path = settings.filePath {
            output = Mutex(
                .file(
                    RotatingFile(
                        path: path, maxBytes: settings.fileSize, backups: settings.fileNum, mode: settings.mode)))
        } else {
            output = Mutex(.standardError)
        }
    }

    func write(_ line: String) {
        let accepted = pending.withLock { state -> Bool in
            guard state.waiting < maxQueueSize else {
                state.lost += 1
                return false
            }
            state.waiting += 1
            return true
        }
        guard accepted else { return }
        queue.async { [self] in
            let lost = pending.withLock { state -> Int in
                state.waiting -= 1
                defer { state.lost = 0 }
                return state.lost
            }
            output.withLock { output in
                if lost > 0 {
                    output.write("log: \(lost) lines lost: the log sink was slower than the agent (log.max_queue_size)")
                }
                output.write(line)
            }
        }
    }

    /// Returns when every line written before has reached the sink.
    public func flush() { queue.sync {} }
}

enum LogOutput {
    case standardError
    case file(RotatingFile)

    mutating func write(_ line: String) {
        switch self {
        case .standardError: Self.writeAll(2, line + "\n")
        case .file(var file):
            file.write(line + "\n")
            self = .file(file)
        }
    }

    static func writeAll(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return }
            offset += written
        }
    }
}

/// Python's RotatingFileHandler, as Patroni's `file_size`/`file_num` use it: before a line that
/// would take the file past `maxBytes`, `patroni.log` becomes `patroni.log.1` (and so on up to
/// `backups`, the oldest dropped). Opened without following a symlink; a file that cannot be
/// written sends its lines to stderr instead, with one note.
struct RotatingFile {
    let path: String
    let maxBytes: Int
    let backups: Int
    let mode: mode_t
    var fd: Int32 = -1
    var size = 0
    var failed = false

    init(path: String, maxBytes: Int, backups: Int, mode: Int?) {
        self.path = path
        self.maxBytes = maxBytes
        self.backups = backups
        self.mode = mode_t(mode ?? 0o600)
    }

    mutating func open() {
        fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else {
            if !failed {
                LogOutput.writeAll(2, "log: cannot open \(path) (errno \(errno)); lines go to stderr\n")
                failed = true
            }
            return
        }
        failed = false
        var info = stat()
        size = fstat(fd, &info) == 0 ? Int(info.st_size) : 0
    }

    mutating func write(_ text: String) {
        if fd < 0 { open() }
        // Rotation as Python does it: never with a size or a backup count of zero.
        if fd >= 0, maxBytes > 0, backups > 0, size > 0, size + text.utf8.count > maxBytes { rotate() }
        guard fd >= 0 else {
            LogOutput.writeAll(2, text)
            return
        }
        LogOutput.writeAll(fd, text)
        size += text.utf8.count
    }

    mutating func rotate() {
        close(fd)
        fd = -1
        for index in stride(from: backups - 1, through: 1, by: -1) {
            _ = rename("\(path).\(index)", "\(path).\(index + 1)")
        }
        _ = rename(path, "\(path).1")
        open()
    }
}

/// The agent's swift-log handler: levels per module, lines formatted by `LogFormatter` and
/// handed to the sink.
public struct AgentLogHandler: LogHandler {
    let label: String
    let settings: LogSettings
    let sink: LogSink
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]

    public init(label: String, settings: LogSettings, sink: LogSink) {
        self.label = label
        self.settings = settings
        self.sink = sink
        self.logLevel = settings.lowestLevel
    }

    /// The sink the agent's handlers share, made once from the settings.
    public static func makeSink(_ settings: LogSettings) -> LogSink { LogSink(settings: settings) }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        guard event.level >= (settings.moduleLevels[event.source] ?? settings.level) else { return }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var details = metadata.merging(event.metadata ?? [:]) { $1 }
        if let error = event.error { details["error"] = "\(error)" }
        let record = LogRecord(
            level: event.level, message: event.message.description, metadata: details, source: event.source,
            file: event.file, function: event.function, line: event.line, label: label, seconds: now.tv_sec,
            nanoseconds: now.tv_nsec)
        sink.write(LogFormatter.line(record, settings))
    }
}
