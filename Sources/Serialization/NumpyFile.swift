/// NumPy `.npy` arrays (format versions 1.0, 2.0 and 3.0).
///
///     try NumpyFile.write(floats: embeddings, shape: [n, 512], to: "emb.npy")     // '<f4', atomic
///     try NumpyFile.write(int64s: labels, shape: [n], to: "labels.npy")          // '<i8'
///     let (shape, values) = try NumpyFile.read(path: "emb.npy")                  // any numeric descr as Float
///     let (_, ids) = try NumpyFile.readInt64s(path: "labels.npy")                // integer/bool descrs only
///
/// Layout: magic "\x93NUMPY", major and minor version bytes, header length (u16 for 1.0, u32
/// otherwise), then a Python dict literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 512), }` padded with spaces and a newline
/// so that the data starts at a multiple of 64 bytes. Readable descrs: '<f2' '<f4' '<f8' '|i1' '<i2'
/// '<i4' '<i8' '|u1' '<u2' '<u4' '<u8' '|b1'. Big-endian data, Fortran order and structured or
/// object arrays are rejected with an `.unsupported` error.
public enum NumpyFile {
    public static func write(floats: UnsafeBufferPointer<Float>, shape: [Int], to path: String) throws {
        try checkCount(floats.count, shape, path)
        try write(TensorDType.f32.encodeFloats(floats), descr: "<f4", shape: shape, to: path)
    }

    public static func write(floats: [Float], shape: [Int], to path: String) throws {
        try floats.withUnsafeBufferPointer { try write(floats: $0, shape: shape, to: path) }
    }

    public static func write(int64s: [Int64], shape: [Int], to path: String) throws {
        try checkCount(int64s.count, shape, path)
        var bytes = [UInt8](repeating: 0, count: int64s.count * 8)
        bytes.withUnsafeMutableBytes { out in
            for (i, value) in int64s.enumerated() { storeLE(out, i, value) }
        }
        try write(bytes, descr: "<i8", shape: shape, to: path)
    }

    /// Reads any supported descr, converting to Float.
    public static func read(path: String) throws -> (shape: [Int], floats: [Float]) {
        let bytes = try FileIO.readAll(path)
        return try parse(bytes, source: path) { array, raw in
            var floats = [Float](repeating: 0, count: array.count)
            floats.withUnsafeMutableBufferPointer { array.dtype.decodeFloats(raw, into: $0) }
            return (array.shape, floats)
        }
    }

    /// Reads an integer or bool array as Int64; floating-point arrays throw instead of truncating.
    public static func readInt64s(path: String) throws -> (shape: [Int], values: [Int64]) {
        let bytes = try FileIO.readAll(path)
        return try parse(bytes, source: path) { array, raw in
            guard let values = array.dtype.decodeInt64s(raw, count: array.count) else {
                throw SerializationError(.mismatch, source: path,
                                         "array of '\(array.descr)' cannot be read as Int64 without loss")
            }
            return (array.shape, values)
        }
    }

    // MARK: - Writing

    private static func checkCount(_ count: Int, _ shape: [Int], _ path: String) throws {
        guard elementCount(of: shape) == count else {
            throw SerializationError(.mismatch, source: path, "\(count) values do not fill shape \(shape)")
        }
    }

    private static func write(_ data: [UInt8], descr: String, shape: [Int], to path: String) throws {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = Array("{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }".utf8)
        // Version 1.0 stores the header length in 16 bits; longer headers need 2.0.
        let major: UInt8 = header.count + 1 + 10 + 63 <= Int(UInt16.max) ? 1 : 2
        let prefix = major == 1 ? 10 : 12
        header.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (64 - (prefix + header.count + 1) % 64) % 64))
        header.append(UInt8(ascii: "\n"))

        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [major, 0]
        if major == 1 {
            bytes += [UInt8(header.count & 0xFF), UInt8(header.count >> 8)]
        } else {
            bytes += (0..<4).map { UInt8((header.count >> (8 * $0)) & 0xFF) }
        }
        bytes += header
        bytes += data
        try AtomicFile.write(bytes, to: path)
    }

    // MARK: - Reading

    private struct ArrayHeader {
        let descr: String
        let dtype: TensorDType
        let shape: [Int]
        let count: Int
    }

    private static func parse<Result>(_ bytes: [UInt8], source: String,
                                      _ convert: (ArrayHeader, UnsafeRawBufferPointer) throws -> Result) throws -> Result {
        func fail(_ kind: SerializationError.Kind, _ message: String) -> SerializationError {
            SerializationError(kind, source: source, message)
        }
        let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)
        guard bytes.count >= 8 else { throw fail(.truncated, "file is \(bytes.count) bytes, too short for an .npy header") }
        guard Array(bytes[0..<6]) == magic else { throw fail(.malformedHeader, "not an .npy file (bad magic)") }
        let major = bytes[6], minor = bytes[7]
        let lengthSize: Int
        switch (major, minor) {
        case (1, 0): lengthSize = 2
        case (2, 0), (3, 0): lengthSize = 4
        default: throw fail(.unsupported, "unsupported .npy format version \(major).\(minor)")
        }
        guard bytes.count >= 8 + lengthSize else { throw fail(.truncated, "file ends inside the header length") }
        let headerLength = (0..<lengthSize).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
        let dataStart = 8 + lengthSize + headerLength
        guard dataStart <= bytes.count else {
            throw fail(.truncated, "header length \(headerLength) exceeds the file size \(bytes.count)")
        }

        let dictionary: [String: PythonLiteral]
        do {
            var parser = PythonLiteralParser(Array(bytes[(8 + lengthSize)..<dataStart]))
            dictionary = try parser.parseHeaderDictionary()
        } catch let error as PythonLiteralParser.SyntaxError {
            throw fail(.malformedHeader, "header is not a valid Python dict literal: \(error.message) at header byte \(error.offset)")
        }

        guard case .string(let descr)? = dictionary["descr"] else {
            if case .list? = dictionary["descr"] { throw fail(.unsupported, "structured arrays are not supported") }
            throw fail(.malformedHeader, "header has no string 'descr'")
        }
        guard case .bool(let fortranOrder)? = dictionary["fortran_order"] else {
            throw fail(.malformedHeader, "header has no boolean 'fortran_order'")
        }
        guard case .tuple(let shape)? = dictionary["shape"] else {
            throw fail(.malformedHeader, "header has no 'shape' tuple")
        }
        let dtype = try dtype(descr, fail)
        guard !fortranOrder else {
            throw fail(.unsupported, "Fortran-ordered arrays are not supported (save with np.ascontiguousarray)")
        }

        guard let count = elementCount(of: shape) else { throw fail(.malformedHeader, "shape \(shape) is too large") }
        let (needed, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        let available = bytes.count - dataStart
        guard !overflow, needed <= available else {
            throw fail(.truncated, "shape \(shape) of '\(descr)' needs \(count) × \(dtype.byteSize) bytes but only \(available) follow the header")
        }
        guard needed == available else {
            throw fail(.malformedHeader, "\(available - needed) unexpected bytes after the \(needed)-byte array data")
        }
        let header = ArrayHeader(descr: descr, dtype: dtype, shape: shape, count: count)
        return try bytes.withUnsafeBytes { try convert(header, UnsafeRawBufferPointer(rebasing: $0[dataStart...])) }
    }

    private static func dtype(_ descr: String,
                              _ fail: (SerializationError.Kind, String) -> SerializationError) throws -> TensorDType {
        guard descr.count >= 2 else { throw fail(.unsupported, "unsupported descr '\(descr)'") }
        let order = descr.first!
        let code = String(descr.dropFirst())
        let types: [String: TensorDType] = [
            "f2": .f16, "f4": .f32, "f8": .f64,
            "i1": .i8, "i2": .i16, "i4": .i32, "i8": .i64,
            "u1": .u8, "u2": .u16, "u4": .u32, "u8": .u64, "b1": .bool,
        ]
        guard let dtype = types[code], "<>|=".contains(order) else {
            throw fail(.unsupported, "unsupported descr '\(descr)'")
        }
        // Byte order is irrelevant for one-byte types; '=' means native, which is little-endian here.
        if dtype.byteSize > 1 {
            if order == ">" { throw fail(.unsupported, "big-endian data ('\(descr)') is not supported") }
            #if _endian(big)
            throw fail(.unsupported, "this reader supports little-endian hosts only")
            #endif
            if order == "|" { throw fail(.unsupported, "descr '\(descr)' lacks a byte order") }
        }
        return dtype
    }
}

// MARK: - The header's Python literal

enum PythonLiteral {
    case string(String)
    case bool(Bool)
    case tuple([Int])
    case list
}

/// Parses the restricted Python syntax numpy writes: a dict with string keys whose values are
/// strings, True/False, or tuples of integers. A list value (structured descr) is recognised only
/// so that it can be reported as unsupported.
struct PythonLiteralParser {
    struct SyntaxError: Error {
        let message: String
        let offset: Int
    }

    private let text: [UInt8]
    private var position = 0

    init(_ text: [UInt8]) {
        self.text = text
    }

    private var current: UInt8? { position < text.count ? text[position] : nil }

    private func error(_ message: String) -> SyntaxError { SyntaxError(message: message, offset: position) }

    private mutating func skipWhitespace() {
        while let c = current, c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { position += 1 }
    }

    private mutating func expect(_ character: Character) throws {
        skipWhitespace()
        guard current == character.asciiValue else { throw error("expected '\(character)'") }
        position += 1
    }

    /// True (and consumed) when the next non-blank character is `character`.
    private mutating func take(_ character: Character) -> Bool {
        skipWhitespace()
        guard current == character.asciiValue else { return false }
        position += 1
        return true
    }

    mutating func parseHeaderDictionary() throws -> [String: PythonLiteral] {
        try expect("{")
        var result: [String: PythonLiteral] = [:]
        while !take("}") {
            let key = try parseString()
            try expect(":")
            guard result.updateValue(try parseValue(), forKey: key) == nil else { throw error("duplicate key '\(key)'") }
            if !take(",") {
                try expect("}")
                break
            }
        }
        skipWhitespace()
        guard position == text.count else { throw error("unexpected text after the dict") }
        return result
    }

    private mutating func parseValue() throws -> PythonLiteral {
        skipWhitespace()
        switch current {
        case UInt8(ascii: "'"), UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "("): return .tuple(try parseTuple())
        case UInt8(ascii: "["): try skipList(); return .list
        case UInt8(ascii: "T"): try parseWord("True"); return .bool(true)
        case UInt8(ascii: "F"): try parseWord("False"); return .bool(false)
        default: throw error("unsupported value")
        }
    }

    /// Consumes a bracketed list, nested brackets and quoted strings included, without interpreting it.
    private mutating func skipList() throws {
        var depth = 0
        repeat {
            guard let c = current else { throw error("unterminated list") }
            switch c {
            case UInt8(ascii: "["), UInt8(ascii: "("): depth += 1; position += 1
            case UInt8(ascii: "]"), UInt8(ascii: ")"): depth -= 1; position += 1
            case UInt8(ascii: "'"), UInt8(ascii: "\""): _ = try parseString()
            default: position += 1
            }
        } while depth > 0
    }

    private mutating func parseWord(_ word: String) throws {
        let utf8 = Array(word.utf8)
        guard position + utf8.count <= text.count, Array(text[position..<position + utf8.count]) == utf8 else {
            throw error("expected \(word)")
        }
        position += utf8.count
    }

    private mutating func parseString() throws -> String {
        skipWhitespace()
        guard let quote = current, quote == UInt8(ascii: "'") || quote == UInt8(ascii: "\"") else {
            throw error("expected a quoted string")
        }
        position += 1
        let start = position
        // numpy's keys and descrs never contain escapes, so an escape is treated as malformed.
        while let c = current, c != quote {
            guard c != UInt8(ascii: "\\") else { throw error("escapes in strings are not supported") }
            position += 1
        }
        guard current == quote else { throw error("unterminated string") }
        position += 1
        return String(decoding: text[start..<(position - 1)], as: UTF8.self)
    }

    private mutating func parseTuple() throws -> [Int] {
        try expect("(")
        var values: [Int] = []
        while !take(")") {
            skipWhitespace()
            let start = position
            while let c = current, c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") { position += 1 }
            guard let value = Int(String(decoding: text[start..<position], as: UTF8.self)) else {
                throw error("expected a non-negative integer")
            }
            // Python 2 era files spell long integers with an 'L' suffix.
            if current == UInt8(ascii: "L") { position += 1 }
            values.append(value)
            if !take(",") {
                try expect(")")
                break
            }
        }
        return values
    }
}
