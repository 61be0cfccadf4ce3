/// Cuts a byte stream into top-level JSON objects, however the stream was chunked: the watch
/// gateway writes one object per line, but a chunk may hold half an object or several. Bytes
/// between objects (newlines, whitespace) are skipped; strings and escapes are tracked so that
/// braces inside them do not count.
struct JSONObjectSplitter {
    private var buffer: [UInt8] = []
    private var depth = 0
    private var inString = false
    private var escaped = false
    private var start: Int?
    private var scanned = 0
    /// An object longer than this is refused (a stream of garbage must not exhaust memory).
    let maxObjectBytes: Int

    init(maxObjectBytes: Int = 64 << 20) { self.maxObjectBytes = maxObjectBytes }

    /// Adds bytes and returns the objects they completed.
    mutating func append(_ bytes: UnsafeRawBufferPointer) throws(WireError) -> [[UInt8]] {
        buffer.append(contentsOf: bytes)
        return try drain()
    }

    mutating func append(_ bytes: [UInt8]) throws(WireError) -> [[UInt8]] {
        buffer.append(contentsOf: bytes)
        return try drain()
    }

    /// True when bytes of an unfinished object are buffered.
    var hasPartialObject: Bool { start != nil }

    private mutating func drain() throws(WireError) -> [[UInt8]] {
        var objects: [[UInt8]] = []
        var index = scanned
        while index < buffer.count {
            let byte = buffer[index]
            if let objectStart = start {
                if inString {
                    if escaped {
                        escaped = false
                    } else if byte == UInt8(ascii: "\\") {
                        escaped = true
                    } else if byte == UInt8(ascii: "\"") {
                        inString = false
                    }
                } else if byte == UInt8(ascii: "\"") {
                    inString = true
                } else if byte == UInt8(ascii: "{") || byte == UInt8(ascii: "[") {
                    depth += 1
                } else if byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]") {
                    depth -= 1
                    if depth == 0 {
                        objects.append(Array(buffer[objectStart...index]))
                        start = nil
                    }
                }
            } else if byte == UInt8(ascii: "{") {
                start = index
                depth = 1
            } else if !(byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09) {
                throw WireError("unexpected byte 0x\(String(byte, radix: 16)) between JSON objects in stream")
            }
            index += 1
        }
        // Drop what has been consumed.
        let keepFrom = start ?? buffer.count
        if keepFrom > 0 {
            buffer.removeFirst(keepFrom)
            if start != nil { start = 0 }
        }
        scanned = buffer.count
        if buffer.count > maxObjectBytes {
            throw WireError("stream object larger than \(maxObjectBytes) bytes")
        }
        return objects
    }
}
