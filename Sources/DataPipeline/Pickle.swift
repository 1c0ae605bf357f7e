// A reader for the Python pickles that hold InsightFace verification sets (`lfw.bin`, …): the part of
// the pickle machine (protocols 0 to 5) that builds plain values — bytes, strings, numbers, lists,
// tuples, dicts — and numpy arrays. It never imports or runs anything: a global outside a short list
// of known constructors is an error that names it.

import Foundation

/// A value built by `PickleReader`. Lists, dicts, arrays and dtypes are objects, as in Python, because
/// the memo shares them and later opcodes (APPENDS, BUILD) change them in place.
enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple([PickleValue])
    case list(PickleList)
    case dict(PickleDict)
    case global(PickleGlobal)
    case dtype(NumpyDType)
    case array(NumpyArray)
    /// A numpy scalar such as `numpy.bool_(True)`: its dtype and raw bytes.
    case scalar(NumpyDType, [UInt8])

    var kind: String {
        switch self {
        case .none: return "None"
        case .bool: return "bool"
        case .int: return "int"
        case .float: return "float"
        case .string: return "str"
        case .bytes: return "bytes"
        case .tuple: return "tuple"
        case .list: return "list"
        case .dict: return "dict"
        case .global(let g): return "global \(g.name)"
        case .dtype: return "numpy dtype"
        case .array(let a): return "numpy array of \(a.dtype?.descriptor ?? "unknown type")"
        case .scalar(let d, _): return "numpy scalar of \(d.descriptor)"
        }
    }

    /// The elements of a list or tuple.
    var sequence: [PickleValue]? {
        switch self {
        case .tuple(let items): return items
        case .list(let list): return list.items
        default: return nil
        }
    }

    /// Text of a str, or of a Python 2 str (bytes) holding ASCII.
    var text: String? {
        switch self {
        case .string(let s): return s
        case .bytes(let b): return String(decoding: b, as: UTF8.self)
        default: return nil
        }
    }
}

final class PickleList {
    var items: [PickleValue]
    init(_ items: [PickleValue] = []) { self.items = items }
}

final class PickleDict {
    var entries: [(key: PickleValue, value: PickleValue)] = []
}

/// The globals a verification set may refer to: numpy's array and scalar constructors, and what
/// Python 3 uses to pickle bytes under protocols 0–2.
enum PickleGlobal {
    case reconstruct, ndarray, dtype, scalar, fromBuffer, codecsEncode, bytes, bytearray

    init?(module: String, name: String) {
        switch (module, name) {
        case ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"): self = .reconstruct
        case ("numpy", "ndarray"): self = .ndarray
        case ("numpy", "dtype"): self = .dtype
        case ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"): self = .scalar
        case ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"): self = .fromBuffer
        case ("_codecs", "encode"): self = .codecsEncode
        case ("__builtin__", "bytes"), ("builtins", "bytes"): self = .bytes
        case ("__builtin__", "bytearray"), ("builtins", "bytearray"): self = .bytearray
        default: return nil
        }
    }

    var name: String {
        switch self {
        case .reconstruct: return "numpy.core.multiarray._reconstruct"
        case .ndarray: return "numpy.ndarray"
        case .dtype: return "numpy.dtype"
        case .scalar: return "numpy.core.multiarray.scalar"
        case .fromBuffer: return "numpy.core.numeric._frombuffer"
        case .codecsEncode: return "_codecs.encode"
        case .bytes: return "builtins.bytes"
        case .bytearray: return "builtins.bytearray"
        }
    }
}

/// A numpy dtype of fixed-size numbers: kind (b, i, u, f), item size and byte order.
final class NumpyDType {
    let kind: Character
    let itemSize: Int
    var byteOrder: Character = "|"

    init?(_ descriptor: String) {
        var text = Substring(descriptor)
        if let first = text.first, "<>|=".contains(first) {
            byteOrder = first
            text = text.dropFirst()
        }
        guard let kind = text.first, "biuf".contains(kind), let size = Int(text.dropFirst()),
              [1, 2, 4, 8].contains(size) else { return nil }
        self.kind = kind
        itemSize = size
    }

    var descriptor: String { "\(byteOrder)\(kind)\(itemSize)" }

    /// Element `i` of `data` as an integer (bool and integer kinds).
    func integer(_ data: [UInt8], _ i: Int) -> Int {
        let bigEndian = byteOrder == ">"
        var value: UInt64 = 0
        for k in 0..<itemSize {
            let byte = data[i * itemSize + (bigEndian ? k : itemSize - 1 - k)]
            value = value << 8 | UInt64(byte)
        }
        if kind == "i" && itemSize < 8 {
            let shift = UInt64(64 - 8 * itemSize)
            return Int(Int64(bitPattern: value << shift) >> Int64(shift))
        }
        return Int(truncatingIfNeeded: value)
    }
}

final class NumpyArray {
    var shape: [Int]
    var dtype: NumpyDType?
    var data: [UInt8]

    init(shape: [Int], dtype: NumpyDType?, data: [UInt8]) {
        self.shape = shape
        self.dtype = dtype
        self.data = data
    }

    var elementCount: Int { shape.reduce(1, *) }
}

/// Runs a pickle up to its STOP and returns the value it built. Errors are `DataError`s that name
/// `source` (a file path) and the byte offset.
struct PickleReader {
    private let bytes: UnsafeRawBufferPointer
    private let source: String
    private var position = 0
    private var stack: [PickleValue] = []
    private var marks: [Int] = []
    private var memo: [Int: PickleValue] = [:]

    init(_ bytes: UnsafeRawBufferPointer, source: String) {
        self.bytes = bytes
        self.source = source
    }

    static func load(_ bytes: UnsafeRawBufferPointer, source: String) throws -> PickleValue {
        var reader = PickleReader(bytes, source: source)
        return try reader.run()
    }

    // MARK: - The machine

    private mutating func run() throws -> PickleValue {
        if bytes.isEmpty { throw DataError(.truncated, "\(source): empty file, not a pickle") }
        while true {
            let opcodeOffset = position
            let opcode = try readByte()
            switch opcode {
            case 0x80:  // PROTO
                let version = try readByte()
                guard version <= 5 else {
                    throw DataError(.badFormat,
                                    "\(source): pickle protocol \(version) is newer than 5, the last this reader knows")
                }
            case 0x95: _ = try readInteger(8, signed: false)  // FRAME: only a length hint
            case UInt8(ascii: "."):  // STOP
                return try pop(opcodeOffset)
            case UInt8(ascii: "("): marks.append(stack.count)  // MARK
            case UInt8(ascii: "N"): stack.append(.none)
            case 0x88: stack.append(.bool(true))
            case 0x89: stack.append(.bool(false))
            case UInt8(ascii: "K"): stack.append(.int(try readInteger(1, signed: false)))
            case UInt8(ascii: "M"): stack.append(.int(try readInteger(2, signed: false)))
            case UInt8(ascii: "J"): stack.append(.int(try readInteger(4, signed: true)))
            case 0x8A: stack.append(.int(try readLong(try readInteger(1, signed: false), opcodeOffset)))  // LONG1
            case 0x8B: stack.append(.int(try readLong(try readLength(4), opcodeOffset)))  // LONG4
            case UInt8(ascii: "G"):  // BINFLOAT, big-endian
                var bits: UInt64 = 0
                for byte in try read(8) { bits = bits << 8 | UInt64(byte) }
                stack.append(.float(Double(bitPattern: bits)))
            case UInt8(ascii: "I"): stack.append(try parseIntLine(try readLine(), opcodeOffset))
            case UInt8(ascii: "L"):
                var line = try readLine()
                if line.last == UInt8(ascii: "L") { line.removeLast() }
                guard let value = Int(String(decoding: line, as: UTF8.self)) else {
                    throw malformed("LONG", opcodeOffset)
                }
                stack.append(.int(value))
            case UInt8(ascii: "F"):
                guard let value = Double(String(decoding: try readLine(), as: UTF8.self)) else {
                    throw malformed("FLOAT", opcodeOffset)
                }
                stack.append(.float(value))
            // Byte strings: Python 3 bytes, Python 2 str, bytearray.
            case UInt8(ascii: "C"): stack.append(.bytes(try read(try readLength(1))))
            case UInt8(ascii: "B"): stack.append(.bytes(try read(try readLength(4))))
            case 0x8E, 0x96: stack.append(.bytes(try read(try readLength(8))))  // BINBYTES8, BYTEARRAY8
            case UInt8(ascii: "U"): stack.append(.bytes(try read(try readLength(1))))
            case UInt8(ascii: "T"):
                let length = try readInteger(4, signed: true)
                guard length >= 0 else { throw malformed("BINSTRING", opcodeOffset) }
                stack.append(.bytes(try read(length)))
            case UInt8(ascii: "S"): stack.append(.bytes(try unquote(try readLine(), opcodeOffset)))
            // Text.
            case 0x8C: stack.append(.string(String(decoding: try read(try readLength(1)), as: UTF8.self)))
            case UInt8(ascii: "X"): stack.append(.string(String(decoding: try read(try readLength(4)), as: UTF8.self)))
            case 0x8D: stack.append(.string(String(decoding: try read(try readLength(8)), as: UTF8.self)))
            case UInt8(ascii: "V"): stack.append(.string(try rawUnicodeEscape(try readLine(), opcodeOffset)))
            // Containers.
            case UInt8(ascii: ")"): stack.append(.tuple([]))
            case UInt8(ascii: "]"): stack.append(.list(PickleList()))
            case UInt8(ascii: "}"): stack.append(.dict(PickleDict()))
            case UInt8(ascii: "t"): stack.append(.tuple(try popToMark(opcodeOffset)))
            case 0x85, 0x86, 0x87:  // TUPLE1, TUPLE2, TUPLE3
                let count = Int(opcode - 0x84)
                guard stack.count >= count else { throw underflow(opcodeOffset) }
                let items = Array(stack.suffix(count))
                stack.removeLast(count)
                stack.append(.tuple(items))
            case UInt8(ascii: "l"): stack.append(.list(PickleList(try popToMark(opcodeOffset))))
            case UInt8(ascii: "d"):
                let dict = PickleDict()
                try addPairs(try popToMark(opcodeOffset), to: dict, opcodeOffset)
                stack.append(.dict(dict))
            case UInt8(ascii: "a"):  // APPEND
                let item = try pop(opcodeOffset)
                try list(at: opcodeOffset).items.append(item)
            case UInt8(ascii: "e"):  // APPENDS
                let items = try popToMark(opcodeOffset)
                try list(at: opcodeOffset).items.append(contentsOf: items)
            case UInt8(ascii: "s"):  // SETITEM
                let value = try pop(opcodeOffset)
                let key = try pop(opcodeOffset)
                try addPairs([key, value], to: dict(at: opcodeOffset), opcodeOffset)
            case UInt8(ascii: "u"):  // SETITEMS
                let items = try popToMark(opcodeOffset)
                try addPairs(items, to: dict(at: opcodeOffset), opcodeOffset)
            // Stack and memo.
            case UInt8(ascii: "0"): _ = try pop(opcodeOffset)
            case UInt8(ascii: "1"): _ = try popToMark(opcodeOffset)
            case UInt8(ascii: "2"):
                guard let top = stack.last else { throw underflow(opcodeOffset) }
                stack.append(top)
            case UInt8(ascii: "p"): try store(try parseIndex(try readLine(), opcodeOffset), opcodeOffset)
            case UInt8(ascii: "q"): try store(try readInteger(1, signed: false), opcodeOffset)
            case UInt8(ascii: "r"): try store(try readInteger(4, signed: false), opcodeOffset)
            case 0x94: try store(memo.count, opcodeOffset)  // MEMOIZE
            case UInt8(ascii: "g"): try fetch(try parseIndex(try readLine(), opcodeOffset), opcodeOffset)
            case UInt8(ascii: "h"): try fetch(try readInteger(1, signed: false), opcodeOffset)
            case UInt8(ascii: "j"): try fetch(try readInteger(4, signed: false), opcodeOffset)
            // Objects.
            case UInt8(ascii: "c"):  // GLOBAL
                let module = String(decoding: try readLine(), as: UTF8.self)
                let name = String(decoding: try readLine(), as: UTF8.self)
                stack.append(.global(try lookUp(module, name)))
            case 0x93:  // STACK_GLOBAL
                let name = try pop(opcodeOffset)
                let module = try pop(opcodeOffset)
                guard case .string(let m) = module, case .string(let n) = name else {
                    throw DataError(.badFormat, "\(source): STACK_GLOBAL at offset \(opcodeOffset) needs two strings")
                }
                stack.append(.global(try lookUp(m, n)))
            case UInt8(ascii: "R"), 0x81:  // REDUCE, NEWOBJ: callable(*args)
                let arguments = try pop(opcodeOffset)
                let callable = try pop(opcodeOffset)
                stack.append(try call(callable, arguments, opcodeOffset))
            case UInt8(ascii: "b"):  // BUILD: object.__setstate__(state)
                let state = try pop(opcodeOffset)
                guard let object = stack.last else { throw underflow(opcodeOffset) }
                try build(object, state, opcodeOffset)
            case 0x97:
                throw DataError(.badFormat, "\(source): the pickle uses an out-of-band buffer " +
                                "(offset \(opcodeOffset)), which a file cannot carry")
            case 0x98: break  // READONLY_BUFFER: the bytes stay as they are
            default:
                let hex = (opcode < 16 ? "0" : "") + String(opcode, radix: 16)
                throw DataError(.badFormat,
                                "\(source): unknown or unsupported pickle opcode 0x\(hex) at offset \(opcodeOffset)")
            }
        }
    }

    // MARK: - Objects

    private func lookUp(_ module: String, _ name: String) throws -> PickleGlobal {
        guard let global = PickleGlobal(module: module, name: name) else {
            throw DataError(.badFormat, "\(source): the pickle refers to \(module).\(name), which this reader does not load " +
                            "(it reads bytes, strings, numbers, lists, tuples, dicts and numpy arrays)")
        }
        return global
    }

    private func call(_ callable: PickleValue, _ arguments: PickleValue, _ offset: Int) throws -> PickleValue {
        guard case .global(let function) = callable else {
            throw DataError(.badFormat, "\(source): a \(callable.kind) is called at offset \(offset)")
        }
        guard case .tuple(let args) = arguments else {
            throw DataError(.badFormat,
                            "\(source): \(function.name) called with a \(arguments.kind) at offset \(offset), not a tuple")
        }
        func bad() -> DataError {
            let kinds = args.map(\.kind).joined(separator: ", ")
            return DataError(.badFormat,
                             "\(source): \(function.name) called with unexpected arguments (\(kinds)) at offset \(offset)")
        }
        switch function {
        case .reconstruct:
            // _reconstruct(ndarray, (0,), b'b'): an empty array that BUILD then fills.
            guard args.count == 3, case .global(.ndarray) = args[0] else { throw bad() }
            return .array(NumpyArray(shape: [0], dtype: nil, data: []))
        case .dtype:
            guard args.count >= 1, let descriptor = args[0].text else { throw bad() }
            guard let dtype = NumpyDType(descriptor) else {
                throw DataError(.badFormat, "\(source): numpy dtype '\(descriptor)' is not supported (only fixed-size numbers)")
            }
            return .dtype(dtype)
        case .scalar:
            guard args.count == 2, case .dtype(let dtype) = args[0], case .bytes(let raw) = args[1],
                  raw.count == dtype.itemSize else { throw bad() }
            return .scalar(dtype, raw)
        case .fromBuffer:
            // _frombuffer(buffer, dtype, shape, order), numpy's protocol-5 form.
            guard args.count == 4, case .bytes(let raw) = args[0], case .dtype(let dtype) = args[1],
                  let shape = try? self.shape(args[2], offset) else { throw bad() }
            return .array(try array(shape: shape, dtype: dtype, data: raw, offset))
        case .codecsEncode:
            // Python 3 writes bytes under protocols 0–2 as _codecs.encode(text, 'latin1').
            guard args.count == 2, case .string(let text) = args[0], let encoding = args[1].text,
                  ["latin1", "latin-1", "iso-8859-1"].contains(encoding.lowercased()) else { throw bad() }
            return .bytes(try latin1(text, offset))
        case .bytes, .bytearray:
            if args.isEmpty { return .bytes([]) }
            if args.count == 1, case .bytes(let raw) = args[0] { return .bytes(raw) }
            if args.count == 2, case .string(let text) = args[0], let encoding = args[1].text,
               ["latin1", "latin-1"].contains(encoding.lowercased()) {
                return .bytes(try latin1(text, offset))
            }
            throw bad()
        case .ndarray:
            throw bad()
        }
    }

    private func build(_ object: PickleValue, _ state: PickleValue, _ offset: Int) throws {
        switch object {
        case .dtype(let dtype):
            // (version, byte order, subarray, names, fields, item size, alignment, flags[, metadata])
            guard let items = state.sequence, items.count >= 2, let order = items[1].text, order.count == 1 else {
                throw DataError(.badFormat, "\(source): unexpected numpy dtype state at offset \(offset)")
            }
            if items.count > 3 {
                guard case .none = items[3] else {
                    throw DataError(.badFormat, "\(source): structured numpy dtypes are not supported (offset \(offset))")
                }
            }
            dtype.byteOrder = order.first!
        case .array(let array):
            // (version, shape, dtype, is_fortran, data), or the older form without the version.
            guard var items = state.sequence, items.count == 4 || items.count == 5 else {
                throw DataError(.badFormat, "\(source): unexpected numpy array state at offset \(offset)")
            }
            if items.count == 5 { items.removeFirst() }
            guard case .dtype(let dtype) = items[1] else {
                throw DataError(.badFormat, "\(source): numpy array state without a dtype at offset \(offset)")
            }
            let raw: [UInt8]
            switch items[3] {
            case .bytes(let b): raw = b
            case .string(let s): raw = try latin1(s, offset)
            default:
                throw DataError(.badFormat, "\(source): numpy array data is a \(items[3].kind) at offset \(offset); " +
                                "object arrays are not supported")
            }
            let built = try self.array(shape: shape(items[0], offset), dtype: dtype, data: raw, offset)
            array.shape = built.shape
            array.dtype = built.dtype
            array.data = built.data
        default:
            throw DataError(.badFormat, "\(source): cannot set the state of a \(object.kind) (offset \(offset))")
        }
    }

    private func shape(_ value: PickleValue, _ offset: Int) throws -> [Int] {
        guard let items = value.sequence else {
            throw DataError(.badFormat, "\(source): numpy shape is a \(value.kind) at offset \(offset)")
        }
        return try items.map {
            guard case .int(let n) = $0, n >= 0 else {
                throw DataError(.badFormat, "\(source): bad numpy shape entry (\($0.kind)) at offset \(offset)")
            }
            return n
        }
    }

    private func array(shape: [Int], dtype: NumpyDType, data: [UInt8], _ offset: Int) throws -> NumpyArray {
        var count = 1
        for n in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: n)
            guard !overflow else { throw DataError(.badFormat, "\(source): numpy shape \(shape) overflows at offset \(offset)") }
            count = product
        }
        guard count.multipliedReportingOverflow(by: dtype.itemSize).partialValue == data.count else {
            throw DataError(.badFormat, "\(source): numpy array of shape \(shape) and dtype \(dtype.descriptor) " +
                            "carries \(data.count) bytes (offset \(offset))")
        }
        return NumpyArray(shape: shape, dtype: dtype, data: data)
    }

    private func latin1(_ text: String, _ offset: Int) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            guard scalar.value < 256 else {
                let code = String(scalar.value, radix: 16)
                throw DataError(.badFormat, "\(source): text meant as latin-1 bytes holds U+\(code) at offset \(offset)")
            }
            out.append(UInt8(scalar.value))
        }
        return out
    }

    // MARK: - Stack and memo

    private mutating func pop(_ offset: Int) throws -> PickleValue {
        guard let top = stack.popLast(), stack.count >= (marks.last ?? 0) else { throw underflow(offset) }
        return top
    }

    private mutating func popToMark(_ offset: Int) throws -> [PickleValue] {
        guard let mark = marks.popLast(), mark <= stack.count else {
            throw DataError(.badFormat, "\(source): no MARK for the opcode at offset \(offset)")
        }
        let items = Array(stack[mark...])
        stack.removeSubrange(mark...)
        return items
    }

    private func list(at offset: Int) throws -> PickleList {
        guard case .list(let list)? = stack.last else {
            throw DataError(.badFormat, "\(source): append to a \(stack.last?.kind ?? "empty stack") at offset \(offset)")
        }
        return list
    }

    private func dict(at offset: Int) throws -> PickleDict {
        guard case .dict(let dict)? = stack.last else {
            throw DataError(.badFormat, "\(source): set item on a \(stack.last?.kind ?? "empty stack") at offset \(offset)")
        }
        return dict
    }

    private func addPairs(_ items: [PickleValue], to dict: PickleDict, _ offset: Int) throws {
        guard items.count % 2 == 0 else {
            throw DataError(.badFormat, "\(source): odd number of dict items at offset \(offset)")
        }
        for i in stride(from: 0, to: items.count, by: 2) {
            dict.entries.append((items[i], items[i + 1]))
        }
    }

    private mutating func store(_ index: Int, _ offset: Int) throws {
        guard let top = stack.last else { throw underflow(offset) }
        memo[index] = top
    }

    private mutating func fetch(_ index: Int, _ offset: Int) throws {
        guard let value = memo[index] else {
            throw DataError(.badFormat, "\(source): memo entry \(index) is read before it is written (offset \(offset))")
        }
        stack.append(value)
    }

    private func underflow(_ offset: Int) -> DataError {
        DataError(.badFormat, "\(source): pickle stack underflow at offset \(offset)")
    }

    private func malformed(_ opcode: String, _ offset: Int) -> DataError {
        DataError(.badFormat, "\(source): malformed \(opcode) at offset \(offset)")
    }

    // MARK: - Reading bytes

    private func truncated(_ what: String) -> DataError {
        DataError(.truncated, "\(source): the pickle ends inside \(what) at offset \(position) " +
                  "(file of \(bytes.count) bytes); truncated file?")
    }

    private mutating func readByte() throws -> UInt8 {
        guard position < bytes.count else {
            throw DataError(.truncated,
                            "\(source): the pickle ends at offset \(position) without its STOP opcode; truncated file?")
        }
        defer { position += 1 }
        return bytes[position]
    }

    private mutating func read(_ count: Int) throws -> [UInt8] {
        guard count <= bytes.count - position else { throw truncated("a \(count)-byte field") }
        defer { position += count }
        return [UInt8](UnsafeRawBufferPointer(rebasing: bytes[position..<position + count]))
    }

    private mutating func readInteger(_ width: Int, signed: Bool) throws -> Int {
        guard width <= bytes.count - position else { throw truncated("a \(width)-byte integer") }
        var value: UInt64 = 0
        for k in (0..<width).reversed() { value = value << 8 | UInt64(bytes[position + k]) }
        position += width
        if signed && width < 8 {
            let shift = UInt64(64 - 8 * width)
            return Int(Int64(bitPattern: value << shift) >> Int64(shift))
        }
        return Int(truncatingIfNeeded: value)
    }

    /// A length field; one that cannot fit in the rest of the file is reported as truncation.
    private mutating func readLength(_ width: Int) throws -> Int {
        let length = try readInteger(width, signed: false)
        guard length >= 0 && length <= bytes.count - position else {
            throw truncated("a field of \(UInt64(bitPattern: Int64(length))) bytes")
        }
        return length
    }

    /// LONG1/LONG4: little-endian two's complement, here at most 8 bytes.
    private mutating func readLong(_ count: Int, _ offset: Int) throws -> Int {
        guard count <= 8 else {
            throw DataError(.badFormat, "\(source): integer of \(count) bytes at offset \(offset) is too large")
        }
        let raw = try read(count)
        guard !raw.isEmpty else { return 0 }
        var value: UInt64 = raw.last! >= 0x80 ? ~0 : 0
        for byte in raw.reversed() { value = value << 8 | UInt64(byte) }
        return Int(truncatingIfNeeded: value)
    }

    /// Protocol 0's newline-terminated argument, without the newline.
    private mutating func readLine() throws -> [UInt8] {
        guard let end = bytes[position...].firstIndex(of: UInt8(ascii: "\n")) else { throw truncated("a text line") }
        defer { position = end + 1 }
        return [UInt8](UnsafeRawBufferPointer(rebasing: bytes[position..<end]))
    }

    private func parseIndex(_ line: [UInt8], _ offset: Int) throws -> Int {
        guard let value = Int(String(decoding: line, as: UTF8.self)), value >= 0 else { throw malformed("memo index", offset) }
        return value
    }

    /// Protocols 0 and 1 write booleans as INT lines "01" and "00".
    private func parseIntLine(_ line: [UInt8], _ offset: Int) throws -> PickleValue {
        let text = String(decoding: line, as: UTF8.self)
        if text == "01" { return .bool(true) }
        if text == "00" { return .bool(false) }
        guard let value = Int(text) else { throw malformed("INT", offset) }
        return .int(value)
    }

    /// Protocol 0's STRING: a quoted Python 2 repr with backslash escapes.
    private func unquote(_ line: [UInt8], _ offset: Int) throws -> [UInt8] {
        guard line.count >= 2, let quote = line.first, quote == UInt8(ascii: "'") || quote == UInt8(ascii: "\""),
              line.last == quote else { throw malformed("STRING", offset) }
        var out: [UInt8] = []
        out.reserveCapacity(line.count)
        var i = 1
        let end = line.count - 1
        func hex(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        while i < end {
            let byte = line[i]
            i += 1
            guard byte == UInt8(ascii: "\\") else { out.append(byte); continue }
            guard i < end else { throw malformed("STRING escape", offset) }
            let escaped = line[i]
            i += 1
            switch escaped {
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "a"): out.append(0x07)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "v"): out.append(0x0B)
            case UInt8(ascii: "x"):
                guard i + 1 < end, let high = hex(line[i]), let low = hex(line[i + 1]) else {
                    throw malformed("STRING escape", offset)
                }
                out.append(high << 4 | low)
                i += 2
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                var value = Int(escaped - UInt8(ascii: "0"))
                var digits = 1
                while digits < 3, i < end, (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(line[i]) {
                    value = value * 8 + Int(line[i] - UInt8(ascii: "0"))
                    i += 1
                    digits += 1
                }
                out.append(UInt8(truncatingIfNeeded: value))
            case UInt8(ascii: "\\"), UInt8(ascii: "'"), UInt8(ascii: "\""): out.append(escaped)
            default: out.append(UInt8(ascii: "\\")); out.append(escaped)  // unknown escapes stay as written
            }
        }
        return out
    }

    /// Protocol 0's UNICODE: raw-unicode-escape, i.e. latin-1 bytes plus \uXXXX and \UXXXXXXXX.
    private func rawUnicodeEscape(_ line: [UInt8], _ offset: Int) throws -> String {
        var scalars = String.UnicodeScalarView()
        var i = 0
        while i < line.count {
            if line[i] == UInt8(ascii: "\\"), i + 1 < line.count,
               line[i + 1] == UInt8(ascii: "u") || line[i + 1] == UInt8(ascii: "U") {
                let digits = line[i + 1] == UInt8(ascii: "u") ? 4 : 8
                guard i + 2 + digits <= line.count,
                      let value = UInt32(String(decoding: line[i + 2..<i + 2 + digits], as: UTF8.self), radix: 16),
                      let scalar = Unicode.Scalar(value) else { throw malformed("UNICODE escape", offset) }
                scalars.append(scalar)
                i += 2 + digits
            } else {
                scalars.append(Unicode.Scalar(line[i]))
                i += 1
            }
        }
        return String(scalars)
    }
}
