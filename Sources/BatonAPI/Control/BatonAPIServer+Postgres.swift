import BatonCore
import BatonHA
import Foundation
import Hummingbird

/// `POST /restart`, `DELETE /restart`, `POST /reload`, `POST /reinitialize`: checked here, carried
/// out by the HA loop between two decisions (`APIStateSource.submit`).
extension BatonAPIServer {
    func restart(_ request: Request, context: APIRequestContext) async -> Response {
        let object: [String: JSONValue]
        switch await optionalJSONObject(request) {
        case .success(let value): object = value
        case .failure(let error): return APIResponse.error(error)
        }
        let parsed: RestartRequest
        switch Self.parseRestart(object, wallClock: source.wallClockSeconds()) {
        case .success(let value): parsed = value
        case .failure(let error): return APIResponse.error(error)
        }
        let reply = await source.submit(.restart(parsed))
        return reply.response
    }

    func cancelScheduledRestart() async -> Response {
        await source.submit(.cancelScheduledRestart).response
    }

    func reload(_ request: Request) async -> Response {
        if case .failure(let error) = await optionalJSONObject(request) { return APIResponse.error(error) }
        return await source.submit(.reload).response
    }

    func reinitialize(_ request: Request) async -> Response {
        let object: [String: JSONValue]
        switch await optionalJSONObject(request) {
        case .success(let value): object = value
        case .failure(let error): return APIResponse.error(error)
        }
        var force = false
        for (key, value) in object {
            switch key {
            case "force", "from_leader":
                guard let flag = Self.flag(value) else {
                    return APIResponse.error(
                        APIInputError("\(key): expected true or false, got \(Self.kind(of: value))"))
                }
                if key == "force" { force = flag }
            default:
                return APIResponse.error(APIInputError("unknown field \(key); expected force (true or false)"))
            }
        }
        return await source.submit(.reinitialize(force: force)).response
    }

    /// Patroni's restart body: `schedule`, `role`, `postgres_version`, `timeout`, `restart_pending`.
    static func parseRestart(_ object: [String: JSONValue], wallClock: Double) -> Result<RestartRequest, APIInputError>
    {
        var request = RestartRequest()
        for key in object.keys.sorted() {
            let value = object[key] ?? .null
            switch key {
            case "schedule":
                guard case .string(let text) = value, !text.isEmpty else {
                    return .failure(APIInputError("schedule: expected an ISO 8601 timestamp string"))
                }
                guard let seconds = ISO8601.secondsSince1970(text) else {
                    return .failure(
                        APIInputError(
                            "schedule: unable to parse '\(text)'. It should be in an unambiguous format, e.g. "
                                + "ISO 8601 like 2026-11-22T15:00:00+00:00", statusCode: 422))
                }
                guard ISO8601.hasTimeZone(text) else {
                    return .failure(
                        APIInputError(
                            "schedule: Timezone information is mandatory for the scheduled restart, "
                                + "e.g. 2026-11-22T15:00:00+00:00"))
                }
                if seconds < wallClock {
                    return .failure(APIInputError("Cannot schedule restart in the past (\(text))", statusCode: 422))
                }
                request.scheduledAt = seconds
                request.scheduledAtText = text
            case "role":
                switch value.stringValue {
                case "primary", "master": request.role = .primary
                case "replica": request.role = .replica
                case "standby_leader": request.role = .standbyLeader
                default:
                    return .failure(
                        APIInputError("role: PostgreSQL role should be either primary, standby_leader, or replica"))
                }
            case "postgres_version":
                guard let text = value.stringValue, let version = postgresVersionNumber(text) else {
                    return .failure(
                        APIInputError(
                            "postgres_version: invalid PostgreSQL version format: X.Y or X.Y.Z is accepted "
                                + "(e.g. \"15.4\")"))
                }
                request.postgresVersionBelow = version
            case "timeout":
                guard let seconds = seconds(value), seconds > 0, let timeout = Duration(checkedSeconds: seconds),
                    timeout >= .milliseconds(1)
                else {
                    return .failure(
                        APIInputError(
                            "timeout: Timeout should be a positive number of seconds up to one year (e.g. 60 or \"60s\")"
                        ))
                }
                request.timeout = timeout
            case "restart_pending":
                guard let flag = flag(value) else {
                    return .failure(APIInputError("restart_pending: expected true or false"))
                }
                request.onlyIfPending = flag
            default:
                return .failure(
                    APIInputError(
                        "Unknown filter for the scheduled restart: \(key); expected schedule, role, "
                            + "postgres_version, timeout, restart_pending"))
            }
        }
        return .success(request)
    }

    /// `15.4` → 150004, `9.6.3` → 90603, `15` → 150000: as `server_version_num`.
    public static func postgresVersionNumber(_ text: String) -> Int? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false).map { Int($0) }
        // Each part at most 9999 (PostgreSQL's are far smaller): the arithmetic below cannot overflow.
        guard !parts.isEmpty, parts.count <= 3, parts.allSatisfy({ $0 != nil && (0...9999).contains($0!) }) else {
            return nil
        }
        let numbers = parts.compactMap { $0 }
        if numbers[0] >= 10 {
            guard numbers.count <= 2 else { return nil }
            return numbers[0] * 10000 + (numbers.count > 1 ? numbers[1] : 0)
        }
        guard numbers.count >= 2 else { return nil }
        return numbers[0] * 10000 + numbers[1] * 100 + (numbers.count > 2 ? numbers[2] : 0)
    }

    /// A number of seconds: `60`, `"60"`, `"60s"`, `"2min"`.
    static func seconds(_ value: JSONValue) -> Double? {
        switch value {
        case .number(let number): return number
        case .string(let text):
            let trimmed = text.trimmingCharacters(in: .whitespaces)
            for (suffix, factor) in [("ms", 0.001), ("min", 60.0), ("s", 1.0), ("h", 3600.0)] {
                if trimmed.hasSuffix(suffix), let number = Double(trimmed.dropLast(suffix.count)) {
                    return number * factor
                }
            }
            return Double(trimmed)
        default: return nil
        }
    }

    /// `true`/`false`, or Patroni's lenient strings (`"on"`, `"yes"`, `"1"`, …).
    static func flag(_ value: JSONValue) -> Bool? {
        switch value {
        case .bool(let flag): return flag
        case .string(let text):
            switch text.lowercased() {
            case "true", "on", "yes", "1": return true
            case "false", "off", "no", "0": return false
            default: return nil
            }
        case .number(let number) where number == 0 || number == 1: return number == 1
        default: return nil
        }
    }

    /// The body as a JSON object; an empty body is an empty object (these endpoints take optional bodies).
    func optionalJSONObject(_ request: Request) async -> Result<[String: JSONValue], APIInputError> {
        if request.headers[.contentLength] == "0" { return .success([:]) }
        let result = await jsonObject(request)
        if case .failure(let error) = result, error.message.hasPrefix("the request body is empty") {
            return .success([:])
        }
        return result
    }
}

extension OperatorReply {
    var response: Response {
        let status = HTTPResponse.Status(code: status)
        if (200..<300).contains(self.status) {
            return APIResponse.text(status, message)
        }
        return APIResponse.error(status, message)
    }
}
