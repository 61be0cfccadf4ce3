/// Text from the network or from a file, made safe to put in a log line or an error message.
public enum PrintableText {
    /// At most `limit` bytes as one printable line: control characters (a newline would forge a
    /// log line, an escape sequence would drive the operator's terminal) escaped, invalid UTF-8
    /// replaced, and `…` when it was cut.
    public static func of(_ bytes: some Collection<UInt8>, limit: Int = 120) -> String {
        var text = ""
        for scalar in String(decoding: bytes.prefix(limit), as: UTF8.self).unicodeScalars {
            switch scalar {
            case "\n": text += "\\n"
            case "\r": text += "\\r"
            case "\t": text += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F || (0x80...0x9F).contains(scalar.value):
                text += "\\u{" + String(scalar.value, radix: 16) + "}"
            default: text.unicodeScalars.append(scalar)
            }
        }
        return bytes.count > limit ? text + "…" : text
    }
}
