import BatonCore
import Foundation

/// Why a reply could not be read; becomes `StoreError.malformedReply` with the endpoint attached.
struct WireError: Error, Sendable, CustomStringConvertible {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// A read-only view of one JSON object from the etcd gateway, with the gateway's encoding rules
/// built in: int64 fields arrive as strings (numbers are accepted too), byte fields are base64,
/// and fields holding a default value (0, false, empty) are omitted.
struct WireObject {
    let fields: [String: Any]

    init(fields: [String: Any]) { self.fields = fields }

    /// Parses one JSON object; anything else (truncated, not JSON, an array) is a `WireError`.
    init(json bytes: [UInt8]) throws(WireError) {
        guard !bytes.isEmpty else { throw WireError("empty reply body") }
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: Data(bytes), options: [])
        } catch {
            throw WireError("reply is not valid JSON: \(Self.preview(bytes))")
        }
        guard let object = parsed as? [String: Any] else {
            throw WireError("reply is not a JSON object: \(Self.preview(bytes))")
        }
        self.fields = object
    }

    static func preview(_ bytes: [UInt8]) -> String { printable(bytes, limit: 120) }

    /// At most `limit` bytes of a value from the network as one printable line.
    static func printable(_ bytes: [UInt8], limit: Int) -> String { PrintableText.of(bytes, limit: limit) }

    func has(_ key: String) -> Bool { fields[key] != nil && !(fields[key] is NSNull) }

    func int64(_ key: String) throws(WireError) -> Int64 {
        guard let raw = fields[key], !(raw is NSNull) else { return 0 }
        if let text = raw as? String {
            guard let value = Int64(text) else { throw WireError("\(key): not an int64: \(text)") }
            return value
        }
        if let number = raw as? NSNumber {
            let double = number.doubleValue
            guard double.rounded() == double, abs(double) <= 9.3e18 else {
                throw WireError("\(key): not an integer: \(number)")
            }
            return number.int64Value
        }
        throw WireError("\(key): expected an integer, got \(type(of: raw))")
    }

    /// Unsigned 64-bit fields (member and cluster IDs) can exceed Int64.
    func uint64(_ key: String) throws(WireError) -> UInt64 {
        guard let raw = fields[key], !(raw is NSNull) else { return 0 }
        if let text = raw as? String {
            guard let value = UInt64(text) else { throw WireError("\(key): not a uint64: \(text)") }
            return value
        }
        if let number = raw as? NSNumber { return number.uint64Value }
        throw WireError("\(key): expected an integer, got \(type(of: raw))")
    }

    func bool(_ key: String) throws(WireError) -> Bool {
        guard let raw = fields[key], !(raw is NSNull) else { return false }
        if let value = raw as? Bool { return value }
        if let text = raw as? String {
            switch text {
            case "true": return true
            case "false": return false
            default: break
            }
        }
        throw WireError("\(key): expected a boolean, got \(raw)")
    }

    func string(_ key: String) throws(WireError) -> String? {
        guard let raw = fields[key], !(raw is NSNull) else { return nil }
        guard let text = raw as? String else { throw WireError("\(key): expected a string, got \(type(of: raw))") }
        return text
    }

    /// A base64 field; absent means empty.
    func bytes(_ key: String) throws(WireError) -> [UInt8] {
        guard let text = try string(key) else { return [] }
        guard let data = Data(base64Encoded: text) else { throw WireError("\(key): not base64: \(text.prefix(40))") }
        return [UInt8](data)
    }

    func object(_ key: String) throws(WireError) -> WireObject? {
        guard let raw = fields[key], !(raw is NSNull) else { return nil }
        guard let object = raw as? [String: Any] else {
            throw WireError("\(key): expected an object, got \(type(of: raw))")
        }
        return WireObject(fields: object)
    }

    func objects(_ key: String) throws(WireError) -> [WireObject] {
        guard let raw = fields[key], !(raw is NSNull) else { return [] }
        guard let array = raw as? [Any] else { throw WireError("\(key): expected an array, got \(type(of: raw))") }
        var result: [WireObject] = []
        result.reserveCapacity(array.count)
        for element in array {
            guard let object = element as? [String: Any] else {
                throw WireError("\(key): expected an array of objects")
            }
            result.append(WireObject(fields: object))
        }
        return result
    }

    func strings(_ key: String) throws(WireError) -> [String] {
        guard let raw = fields[key], !(raw is NSNull) else { return [] }
        guard let array = raw as? [Any] else { throw WireError("\(key): expected an array, got \(type(of: raw))") }
        var result: [String] = []
        for element in array {
            guard let text = element as? String else { throw WireError("\(key): expected an array of strings") }
            result.append(text)
        }
        return result
    }

    /// An error reply, in either of the gateway's forms: unary `{"error","code","message"}` or
    /// streaming `{"error": {"grpc_code","http_code","message","http_status"}}`. Nil when the
    /// object is not an error.
    func gatewayError() -> (code: Int, message: String)? {
        if let nested = fields["error"] as? [String: Any] {
            let inner = WireObject(fields: nested)
            let code = (try? inner.int64("grpc_code")).map(Int.init) ?? (try? inner.int64("code")).map(Int.init) ?? 2
            let message = (try? inner.string("message")) ?? nil
            return (code, message ?? "unknown error")
        }
        let hasError = fields["error"] is String
        let code = (try? int64("code")).map(Int.init) ?? 0
        guard hasError || (code != 0 && fields["message"] != nil) else { return nil }
        let message = ((try? string("message")) ?? nil) ?? ((try? string("error")) ?? nil) ?? "unknown error"
        return (code == 0 ? 2 : code, message)
    }
}

/// Builds request bodies: int64 as strings, bytes as base64, as the gateway expects.
enum WireEncoding {
    static func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

    static func int64(_ value: Int64) -> String { String(value) }

    static func encode(_ object: [String: Any]) -> [UInt8] {
        // Only strings, booleans, arrays and dictionaries are ever put in, so this cannot fail;
        // an empty object is the harmless fallback.
        guard JSONSerialization.isValidJSONObject(object),
            let data = try? JSONSerialization.data(withJSONObject: object, options: [])
        else { return Array("{}".utf8) }
        return [UInt8](data)
    }
}

enum WireDecoding {
    static func base64(_ text: String) -> [UInt8]? { Data(base64Encoded: text).map { [UInt8]($0) } }
}
