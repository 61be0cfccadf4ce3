import Yams

/// YAML read as Patroni's PyYAML reads it (YAML 1.1 plain scalars: `on`/`off` are booleans,
/// `0x1F` and `1_000` integers, `~` null), without Yams' default resolver: that one compiles its
/// rules as `NSRegularExpression`s, which loads ICU's regex engine and locale data into the agent
/// for the handful of scalars in a configuration file. The same rules are written out here.
enum YAMLText {
    /// The document's root node with every plain scalar's type resolved, or nil for an empty one.
    static func compose(_ text: String) throws -> Node? {
        try Yams.compose(yaml: text, .basic).map(resolved)
    }

    static func resolved(_ node: Node) -> Node {
        switch node {
        case .scalar(let scalar):
            // Quoted scalars and explicit tags (`!!str 5`) already carry their type.
            guard scalar.tag.rawValue == Tag.Name.implicit.rawValue else { return node }
            let tag = Tag(PlainScalar.tag(of: scalar.string), .basic, .default)
            return .scalar(Node.Scalar(scalar.string, tag, scalar.style, scalar.mark, scalar.anchor))
        case .mapping(let mapping):
            let pairs = mapping.map { (resolved($0.key), resolved($0.value)) }
            return .mapping(Node.Mapping(pairs, mapping.tag, mapping.style, mapping.mark, mapping.anchor))
        case .sequence(let sequence):
            let nodes = sequence.map(resolved)
            return .sequence(Node.Sequence(nodes, sequence.tag, sequence.style, sequence.mark, sequence.anchor))
        case .alias:
            return node
        }
    }
}

/// The YAML 1.1 implicit types of a plain scalar, tried in the order of Yams' default resolver
/// (bool, int, float, merge, null, timestamp, value); anything else is a string.
enum PlainScalar {
    static func tag(of text: String) -> Tag.Name {
        let bytes = Array(text.utf8)
        if isBool(text) { return .bool }
        if isInt(bytes) { return .int }
        if isFloat(bytes) { return .float }
        if text == "<<" { return .merge }
        if ["", "~", "null", "Null", "NULL"].contains(text) { return .null }
        if isTimestamp(bytes) { return .timestamp }
        if text == "=" { return .value }
        return .str
    }

    static func isBool(_ text: String) -> Bool {
        [
            "yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE", "on", "On",
            "ON", "off", "Off", "OFF",
        ].contains(text)
    }

    /// `[-+]?` then `0b[01_]+`, `0o?[0-7_]+`, `0|[1-9][0-9_]*`, `0x[0-9a-fA-F_]+` or the
    /// sexagesimal `[1-9][0-9_]*(:[0-5]?[0-9])+`.
    static func isInt(_ text: [UInt8]) -> Bool {
        var s = Scanner(text)
        s.skip(where: isSign)
        let body = s
        if s.take("0"), s.take("b"), s.skipOneOrMore(where: { $0 == 0x30 || $0 == 0x31 || $0 == 0x5F }), s.atEnd {
            return true
        }
        s = body
        if s.take("0") {
            _ = s.take("o")
            if s.skipOneOrMore(where: { isOctal($0) || $0 == 0x5F }), s.atEnd { return true }
        }
        s = body
        if s.take("0"), s.atEnd { return true }
        s = body
        if s.take("0"), s.take("x"), s.skipOneOrMore(where: { isHex($0) || $0 == 0x5F }), s.atEnd { return true }
        s = body
        guard s.skip(where: { $0 >= 0x31 && $0 <= 0x39 }) else { return false }
        s.skipAll(where: isDigitOrUnderscore)
        if s.atEnd { return true }
        return s.sexagesimalGroups() && s.atEnd
    }

    /// `[-+]?[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?`, `\.[0-9_]+([eE][-+][0-9]+)?`,
    /// `[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*`, `[-+]?\.(inf|Inf|INF)` or `\.(nan|NaN|NAN)`.
    static func isFloat(_ text: [UInt8]) -> Bool {
        var s = Scanner(text)
        let signed = s.skip(where: isSign)
        let body = s
        if s.skip(where: isDigit) {
            s.skipAll(where: isDigitOrUnderscore)
            let integerPart = s
            if s.take(".") { s.skipAll(where: isDigitOrUnderscore) }
            if s.skip(where: { $0 == 0x65 || $0 == 0x45 }) {
                s.skip(where: isSign)
                guard s.skipOneOrMore(where: isDigit) else { return sexagesimalFloat(integerPart) }
            }
            if s.atEnd { return true }
            return sexagesimalFloat(integerPart)
        }
        s = body
        if s.take("."), ["inf", "Inf", "INF"].contains(s.rest) { return true }
        guard !signed else { return false }
        s = body
        if s.take("."), ["nan", "NaN", "NAN"].contains(s.rest) { return true }
        s = body
        guard s.take("."), s.skipOneOrMore(where: isDigitOrUnderscore) else { return false }
        if s.atEnd { return true }
        guard s.skip(where: { $0 == 0x65 || $0 == 0x45 }), s.skip(where: isSign), s.skipOneOrMore(where: isDigit)
        else { return false }
        return s.atEnd
    }

    /// The rest of `[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*` after its integer part.
    private static func sexagesimalFloat(_ integerPart: Scanner) -> Bool {
        var s = integerPart
        guard s.sexagesimalGroups(), s.take(".") else { return false }
        s.skipAll(where: isDigitOrUnderscore)
        return s.atEnd
    }

    /// `YYYY-MM-DD`, or `YYYY-M-D` then `T`, `t` or blanks, `h:mm:ss`, an optional fraction and an
    /// optional zone (`Z`, `±h`, `±hh:mm`) after optional blanks.
    static func isTimestamp(_ text: [UInt8]) -> Bool {
        var s = Scanner(text)
        guard s.digits(exactly: 4), s.take("-") else { return false }
        let afterYear = s
        if s.digits(exactly: 2), s.take("-"), s.digits(exactly: 2), s.atEnd { return true }
        s = afterYear
        guard s.digits(1...2), s.take("-"), s.digits(1...2) else { return false }
        let blanks = s.skipOneOrMore(where: isBlank)
        guard blanks || s.skip(where: { $0 == 0x54 || $0 == 0x74 }) else { return false }
        guard s.digits(1...2), s.take(":"), s.digits(exactly: 2), s.take(":"), s.digits(exactly: 2) else {
            return false
        }
        if s.take(".") { s.skipAll(where: isDigit) }
        if s.atEnd { return true }
        s.skipAll(where: isBlank)
        if s.take("Z") { return s.atEnd }
        guard s.skip(where: isSign), s.digits(1...2) else { return false }
        if s.take(":") { guard s.digits(exactly: 2) else { return false } }
        return s.atEnd
    }

    static func isSign(_ c: UInt8) -> Bool { c == 0x2B || c == 0x2D }
    static func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }
    static func isOctal(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x37 }
    static func isDigitOrUnderscore(_ c: UInt8) -> Bool { isDigit(c) || c == 0x5F }
    static func isBlank(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 }
    static func isHex(_ c: UInt8) -> Bool {
        isDigit(c) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46)
    }

    /// A cursor over a scalar's bytes; a copy is a saved position to go back to.
    struct Scanner {
        let bytes: [UInt8]
        var index = 0

        init(_ bytes: [UInt8]) { self.bytes = bytes }

        var atEnd: Bool { index == bytes.count }
        var rest: String { String(decoding: bytes[index...], as: UTF8.self) }

        /// Takes one byte when it is the (ASCII) character given.
        mutating func take(_ character: Unicode.Scalar) -> Bool {
            skip(where: { $0 == UInt8(ascii: character) })
        }

        @discardableResult
        mutating func skip(where matches: (UInt8) -> Bool) -> Bool {
            guard index < bytes.count, matches(bytes[index]) else { return false }
            index += 1
            return true
        }

        mutating func skipAll(where matches: (UInt8) -> Bool) {
            while skip(where: matches) {}
        }

        mutating func skipOneOrMore(where matches: (UInt8) -> Bool) -> Bool {
            guard skip(where: matches) else { return false }
            skipAll(where: matches)
            return true
        }

        mutating func digits(exactly count: Int) -> Bool { digits(count...count) }

        /// Takes as many digits as it can up to the range's upper bound, at least its lower bound.
        mutating func digits(_ range: ClosedRange<Int>) -> Bool {
            var taken = 0
            while taken < range.upperBound, skip(where: PlainScalar.isDigit) { taken += 1 }
            return taken >= range.lowerBound
        }

        /// `(:[0-5]?[0-9])+`: at least one group.
        mutating func sexagesimalGroups() -> Bool {
            var groups = 0
            while take(":") {
                guard index < bytes.count, PlainScalar.isDigit(bytes[index]) else { return false }
                if bytes[index] <= 0x35, index + 1 < bytes.count, PlainScalar.isDigit(bytes[index + 1]) {
                    index += 2
                } else {
                    index += 1
                }
                groups += 1
            }
            return groups > 0
        }
    }
}
