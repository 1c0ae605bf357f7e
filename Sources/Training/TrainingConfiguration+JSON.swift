// The JSON layer under the training configuration: a strict parser that reports line and column,
// keeps key order and rejects duplicate keys, and a writer with sorted keys for the resolved file
// and the canonical form that ranks hash.
// Own parser rather than JSONSerialization: it must tell integers from fractions, report positions,
// and print numbers the same way on every rank.
import Foundation
import Serialization

/// A parsed JSON value. Integers written without a fraction or exponent stay `.integer`.
enum ConfigJSON: Equatable {
    case object([(key: String, value: ConfigJSON)])
    case array([ConfigJSON])
    case string(String)
    case integer(Int)
    case double(Double)
    case bool(Bool)
    case null

    static func == (a: ConfigJSON, b: ConfigJSON) -> Bool {
        switch (a, b) {
        case let (.object(x), .object(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case let (.array(x), .array(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.integer(x), .integer(y)): return x == y
        case let (.double(x), .double(y)): return x == y
        case let (.bool(x), .bool(y)): return x == y
        case (.null, .null): return true
        default: return false
        }
    }

    /// Value of `key` in an object (nil when absent or not an object).
    subscript(key: String) -> ConfigJSON? {
        guard case let .object(members) = self else { return nil }
        return members.first { $0.key == key }?.value
    }

    /// "an integer", "a string", … for type errors.
    var kindDescription: String {
        switch self {
        case .object: return "an object"
        case .array: return "an array"
        case .string: return "a string"
        case .integer, .double: return "a number"
        case .bool: return "a boolean"
        case .null: return "null"
        }
    }
}

// MARK: - Parsing

struct ConfigJSONSyntaxError: Error {
    let message: String
    let line: Int
    let column: Int
}

struct ConfigJSONParser {
    private let bytes: [UInt8]
    private var position = 0
    private var depth = 0
    /// Bounds recursion so that "[[[[…" cannot overflow the stack.
    private let maximumDepth = 64

    static func parse(_ bytes: [UInt8]) throws -> ConfigJSON {
        var parser = ConfigJSONParser(bytes: bytes)
        // A UTF-8 byte-order mark is harmless; editors on some systems add one.
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { parser.position = 3 }
        parser.skipWhitespace()
        guard parser.current != nil else { throw parser.error("the file is empty") }
        let value = try parser.parseValue()
        parser.skipWhitespace()
        guard parser.position == bytes.count else { throw parser.error("unexpected text after the JSON value") }
        return value
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private func error(_ message: String, at offset: Int? = nil) -> ConfigJSONSyntaxError {
        let end = min(offset ?? position, bytes.count)
        var line = 1, lineStart = 0
        for i in 0..<end where bytes[i] == 0x0A { line += 1; lineStart = i + 1 }
        // Columns count characters, not bytes.
        let column = String(decoding: bytes[lineStart..<end], as: UTF8.self).count + 1
        return ConfigJSONSyntaxError(message: message, line: line, column: column)
    }

    private var current: UInt8? { position < bytes.count ? bytes[position] : nil }

    private mutating func skipWhitespace() {
        while let c = current, c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { position += 1 }
    }

    private mutating func expect(_ byte: UInt8, _ what: String) throws {
        if current == UInt8(ascii: "/") { throw error("comments are not allowed in JSON") }
        guard current == byte else {
            throw error(current == nil ? "unexpected end of file, expected \(what)" : "expected \(what)")
        }
        position += 1
    }

    private mutating func parseValue() throws -> ConfigJSON {
        guard let c = current else { throw error("unexpected end of file") }
        switch c {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try parseLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try parseLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try parseLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        case UInt8(ascii: "/"): throw error("comments are not allowed in JSON")
        default: throw error("unexpected character '\(Unicode.Scalar(c))'")
        }
    }

    private mutating func nest() throws {
        depth += 1
        if depth > maximumDepth { throw error("nesting deeper than \(maximumDepth) levels") }
    }

    private mutating func parseObject() throws -> ConfigJSON {
        try nest()
        defer { depth -= 1 }
        position += 1
        var members: [(key: String, value: ConfigJSON)] = []
        var seen = Set<String>()
        skipWhitespace()
        if current == UInt8(ascii: "}") { position += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard current == UInt8(ascii: "\"") else {
                throw error(current == UInt8(ascii: "}") ? "trailing comma before '}'" : "expected a quoted key")
            }
            let keyOffset = position
            let key = try parseString()
            guard seen.insert(key).inserted else { throw error("duplicate key \"\(key)\"", at: keyOffset) }
            skipWhitespace()
            try expect(UInt8(ascii: ":"), "':' after the key \"\(key)\"")
            skipWhitespace()
            members.append((key, try parseValue()))
            skipWhitespace()
            if current == UInt8(ascii: ",") { position += 1; continue }
            try expect(UInt8(ascii: "}"), "',' or '}'")
            return .object(members)
        }
    }

    private mutating func parseArray() throws -> ConfigJSON {
        try nest()
        defer { depth -= 1 }
        position += 1
        var elements: [ConfigJSON] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") { position += 1; return .array(elements) }
        while true {
            skipWhitespace()
            if current == UInt8(ascii: "]") { throw error("trailing comma before ']'") }
            elements.append(try parseValue())
            skipWhitespace()
            if current == UInt8(ascii: ",") { position += 1; continue }
            try expect(UInt8(ascii: "]"), "',' or ']'")
            return .array(elements)
        }
    }

    private mutating func parseLiteral(_ word: String) throws {
        let text = Array(word.utf8)
        guard position + text.count <= bytes.count, Array(bytes[position..<position + text.count]) == text else {
            throw error("invalid literal (strings need double quotes)")
        }
        position += text.count
    }

    private mutating func parseNumber() throws -> ConfigJSON {
        let start = position
        if current == UInt8(ascii: "-") { position += 1 }
        func digits(_ parser: inout ConfigJSONParser) -> Int {
            let from = parser.position
            while let c = parser.current, c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") { parser.position += 1 }
            return parser.position - from
        }
        let leadingZero = current == UInt8(ascii: "0")
        let integerDigits = digits(&self)
        guard integerDigits > 0 else { throw error("invalid number") }
        guard !(leadingZero && integerDigits > 1) else { throw error("number with a leading zero", at: start) }
        var isInteger = true
        if current == UInt8(ascii: ".") {
            position += 1
            isInteger = false
            guard digits(&self) > 0 else { throw error("invalid number") }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            position += 1
            isInteger = false
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
            guard digits(&self) > 0 else { throw error("invalid number") }
        }
        let text = String(decoding: bytes[start..<position], as: UTF8.self)
        if isInteger, let value = Int(text) { return .integer(value) }
        guard let value = Double(text), value.isFinite else { throw error("number \(text) is out of range", at: start) }
        return .double(value)
    }

    private mutating func parseString() throws -> String {
        let start = position
        position += 1
        var utf8: [UInt8] = []
        while true {
            guard let c = current else { throw error("unterminated string", at: start) }
            position += 1
            switch c {
            case UInt8(ascii: "\""):
                guard let string = String(validating: utf8, as: UTF8.self) else {
                    throw error("string is not valid UTF-8", at: start)
                }
                return string
            case UInt8(ascii: "\\"):
                guard let e = current else { throw error("unterminated string", at: start) }
                position += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(e)
                case UInt8(ascii: "b"): utf8.append(0x08)
                case UInt8(ascii: "f"): utf8.append(0x0C)
                case UInt8(ascii: "n"): utf8.append(0x0A)
                case UInt8(ascii: "r"): utf8.append(0x0D)
                case UInt8(ascii: "t"): utf8.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = UInt32(try parseHex4())
                    if (0xD800..<0xDC00).contains(scalar) {
                        guard current == UInt8(ascii: "\\"), position + 1 < bytes.count,
                              bytes[position + 1] == UInt8(ascii: "u") else { throw error("unpaired surrogate") }
                        position += 2
                        let low = UInt32(try parseHex4())
                        guard (0xDC00..<0xE000).contains(low) else { throw error("unpaired surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let unicode = Unicode.Scalar(scalar) else { throw error("unpaired surrogate") }
                    utf8.append(contentsOf: String(Character(unicode)).utf8)
                default:
                    throw error("invalid escape '\\\(Unicode.Scalar(e))'")
                }
            case 0..<0x20:
                throw error(c == 0x0A ? "unterminated string (newline inside quotes)" : "control character in string")
            default:
                utf8.append(c)
            }
        }
    }

    private mutating func parseHex4() throws -> UInt16 {
        guard position + 4 <= bytes.count else { throw error("truncated \\u escape") }
        var value: UInt16 = 0
        for _ in 0..<4 {
            let c = bytes[position]
            let digit: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = c - UInt8(ascii: "A") + 10
            default: throw error("invalid \\u escape")
            }
            value = value << 4 | UInt16(digit)
            position += 1
        }
        return value
    }
}

// MARK: - Writing

extension ConfigJSON {
    /// Compact, keys sorted: the canonical form that is hashed.
    var compactText: String {
        var out = ""
        writeCompact(into: &out)
        return out
    }

    /// Two-space indentation, keys sorted, arrays of plain values on one line.
    var prettyText: String {
        var out = ""
        writePretty(into: &out, indent: "")
        return out + "\n"
    }

    private static func sorted(_ members: [(key: String, value: ConfigJSON)]) -> [(key: String, value: ConfigJSON)] {
        members.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
    }

    private func writeCompact(into out: inout String) {
        switch self {
        case let .object(members):
            out += "{"
            for (i, member) in Self.sorted(members).enumerated() {
                if i > 0 { out += "," }
                out += jsonQuoted(member.key) + ":"
                member.value.writeCompact(into: &out)
            }
            out += "}"
        case let .array(elements):
            out += "["
            for (i, element) in elements.enumerated() {
                if i > 0 { out += "," }
                element.writeCompact(into: &out)
            }
            out += "]"
        default:
            out += scalarText
        }
    }

    private func writePretty(into out: inout String, indent: String) {
        let inner = indent + "  "
        switch self {
        case let .object(members) where !members.isEmpty:
            out += "{\n"
            for (i, member) in Self.sorted(members).enumerated() {
                out += inner + jsonQuoted(member.key) + ": "
                member.value.writePretty(into: &out, indent: inner)
                out += i + 1 < members.count ? ",\n" : "\n"
            }
            out += indent + "}"
        case let .array(elements) where elements.contains(where: \.isContainer):
            out += "[\n"
            for (i, element) in elements.enumerated() {
                out += inner
                element.writePretty(into: &out, indent: inner)
                out += i + 1 < elements.count ? ",\n" : "\n"
            }
            out += indent + "]"
        case let .array(elements):
            out += "[" + elements.map(\.scalarText).joined(separator: ", ") + "]"
        case .object:
            out += "{}"
        default:
            out += scalarText
        }
    }

    private var isContainer: Bool {
        switch self {
        case .object, .array: return true
        default: return false
        }
    }

    /// Numbers print as Swift's shortest round-trip form (whole ones without ".0"), so every rank
    /// writes the same bytes.
    private var scalarText: String {
        switch self {
        case let .string(s): return jsonQuoted(s)
        case let .integer(i): return String(i)
        case let .double(d): return d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : d.description
        case let .bool(b): return b ? "true" : "false"
        case .null: return "null"
        case .object, .array: return compactText
        }
    }

}
