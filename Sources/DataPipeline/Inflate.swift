// zlib (RFC 1950) / DEFLATE (RFC 1951) decompression for the PNG decoder.
// PNG knows its exact decompressed size from IHDR, so the output is a caller-owned buffer of
// that size: anything that would overrun or underfill it is corruption, and nothing is allocated.

struct InflateError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// LSB-first bit reader over the compressed bytes.
struct BitReader {
    let base: UnsafePointer<UInt8>
    let count: Int
    /// Next byte to load. Past the end it counts the zero bytes fed as padding, so that a
    /// truncated stream is caught by position instead of a bounds check on every bit.
    var pos = 0
    /// Loaded bits; the bits above `bitCount` are either zero or the true following input bits.
    var bits: UInt64 = 0
    var bitCount = 0

    init(base: UnsafePointer<UInt8>, count: Int) {
        self.base = base
        self.count = count
    }

    /// Loads at least 56 bits.
    @inline(__always)
    mutating func refill() throws {
        if pos &+ 8 <= count {
            let word = UInt64(littleEndian: UnsafeRawPointer(base + pos).loadUnaligned(as: UInt64.self))
            bits |= word &<< UInt64(bitCount)
            pos &+= (63 &- bitCount) &>> 3
            bitCount |= 56
        } else {
            try refillNearEnd()
        }
    }

    @inline(never)
    mutating func refillNearEnd() throws {
        // With at most 56 bits buffered, 8 padding bytes loaded means real input was consumed past its end.
        guard pos < count + 8 else { throw InflateError("compressed data is truncated") }
        while bitCount <= 56 {
            if pos < count { bits |= UInt64(base[pos]) &<< UInt64(bitCount) }
            pos += 1
            bitCount += 8
        }
    }

    /// Takes `n` (0...32) bits; the caller has made sure they are buffered.
    @inline(__always)
    mutating func take(_ n: Int) -> Int {
        let value = Int(truncatingIfNeeded: bits & ((1 &<< UInt64(n)) &- 1))
        bits = bits &>> UInt64(n)
        bitCount &-= n
        return value
    }

    @inline(__always)
    mutating func consume(_ n: Int) {
        bits = bits &>> UInt64(n)
        bitCount &-= n
    }

    /// Drops the bits up to the next byte boundary and returns the byte position reached.
    mutating func alignedBytePosition() -> Int {
        consume(bitCount & 7)
        return pos - bitCount / 8
    }

    /// Restarts reading at byte `position` with an empty bit buffer.
    mutating func restart(at position: Int) {
        pos = position
        bits = 0
        bitCount = 0
    }
}

/// Canonical Huffman decoding: one table lookup for codes of up to `fastBits` bits,
/// a search over code lengths only for the rare longer codes.
struct HuffmanTable {
    static let fastBits = 10
    static let fastSize = 1 << fastBits
    static let maxSymbols = 288

    /// Indexed by the next `fastBits` input bits: `symbol << 4 | length`, or 0 for a longer code.
    let fast: UnsafeMutablePointer<UInt16>
    /// Per code length: first canonical code, index of its first symbol in `symbols`,
    /// and the end of its code range left-justified to 16 bits (`limit[16]` is a sentinel).
    let firstCode: UnsafeMutablePointer<Int32>
    let firstIndex: UnsafeMutablePointer<Int32>
    let limit: UnsafeMutablePointer<Int32>
    let lengthCounts: UnsafeMutablePointer<Int32>
    let nextCode: UnsafeMutablePointer<Int32>
    /// Symbols in canonical code order.
    let symbols: UnsafeMutablePointer<UInt16>

    init() {
        fast = .allocate(capacity: Self.fastSize)
        fast.initialize(repeating: 0, count: Self.fastSize)
        let ints = UnsafeMutablePointer<Int32>.allocate(capacity: 17 * 5)
        ints.initialize(repeating: 0, count: 17 * 5)
        firstCode = ints
        firstIndex = ints + 17
        limit = ints + 34
        lengthCounts = ints + 51
        nextCode = ints + 68
        symbols = .allocate(capacity: Self.maxSymbols)
        symbols.initialize(repeating: 0, count: Self.maxSymbols)
    }

    func deallocate() {
        fast.deallocate()
        firstCode.deallocate()
        symbols.deallocate()
    }

    /// Builds the table from per-symbol code lengths (0...15, 0 = unused). Incomplete codes are
    /// accepted (a stream with one distance code has one); reading an unassigned code is an error.
    func build(_ lengths: UnsafePointer<UInt8>, count: Int) throws {
        fast.update(repeating: 0, count: Self.fastSize)
        lengthCounts.update(repeating: 0, count: 17)
        for i in 0..<count { lengthCounts[Int(lengths[i])] += 1 }
        lengthCounts[0] = 0
        var code: Int32 = 0
        var index: Int32 = 0
        for len in 1...15 {
            firstCode[len] = code
            firstIndex[len] = index
            nextCode[len] = code
            code += lengthCounts[len]
            guard code <= Int32(1) << Int32(len) else {
                throw InflateError("over-subscribed Huffman code lengths")
            }
            limit[len] = code << Int32(16 - len)
            code <<= 1
            index += lengthCounts[len]
        }
        limit[16] = 0x10000
        for symbol in 0..<count {
            let len = Int(lengths[symbol])
            if len == 0 { continue }
            let c = nextCode[len]
            nextCode[len] = c + 1
            symbols[Int(c - firstCode[len] + firstIndex[len])] = UInt16(symbol)
            if len <= Self.fastBits {
                let entry = UInt16(symbol << 4 | len)
                var j = Int(reverse16(UInt32(c)) >> UInt32(16 - len))
                while j < Self.fastSize {
                    fast[j] = entry
                    j += 1 << len
                }
            }
        }
    }

    /// Decodes one symbol; at least 15 bits must be buffered.
    @inline(__always)
    func decode(_ reader: inout BitReader) throws -> Int {
        let entry = fast[Int(truncatingIfNeeded: reader.bits) & (Self.fastSize - 1)]
        if entry != 0 {
            reader.consume(Int(entry & 15))
            return Int(entry >> 4)
        }
        let (symbol, length) = try decodeLong(reader.bits)
        reader.consume(length)
        return symbol
    }

    @inline(never)
    func decodeLong(_ bits: UInt64) throws -> (symbol: Int, length: Int) {
        // Canonical codes are read MSB first, so compare the next 16 bits in reversed order.
        let k = Int32(reverse16(UInt32(truncatingIfNeeded: bits) & 0xFFFF))
        var len = Self.fastBits + 1
        while k >= limit[len] { len += 1 }
        guard len <= 15 else { throw InflateError("invalid Huffman code") }
        let index = (k >> Int32(16 - len)) - firstCode[len] + firstIndex[len]
        return (Int(symbols[Int(index)]), len)
    }
}

@inline(__always)
func reverse16(_ x: UInt32) -> UInt32 {
    var v = x
    v = ((v & 0xAAAA) >> 1) | ((v & 0x5555) << 1)
    v = ((v & 0xCCCC) >> 2) | ((v & 0x3333) << 2)
    v = ((v & 0xF0F0) >> 4) | ((v & 0x0F0F) << 4)
    v = ((v & 0xFF00) >> 8) | ((v & 0x00FF) << 8)
    return v
}

/// zlib decompressor. Owns its Huffman tables so that decoding allocates nothing;
/// one instance per thread.
final class Inflater {
    private let literalTable = HuffmanTable()
    private let distanceTable = HuffmanTable()
    private let codeLengthTable = HuffmanTable()
    private let fixedLiteralTable = HuffmanTable()
    private let fixedDistanceTable = HuffmanTable()
    /// Code lengths of one dynamic block (literal/length then distance), and of its code-length code.
    private let lengths = UnsafeMutablePointer<UInt8>.allocate(capacity: 320)
    private let codeLengthLengths = UnsafeMutablePointer<UInt8>.allocate(capacity: 19)
    /// Base value and extra-bit count for length symbols 257...285 and distance symbols 0...29.
    private let lengthBase = UnsafeMutablePointer<UInt16>.allocate(capacity: 29)
    private let lengthExtra = UnsafeMutablePointer<UInt8>.allocate(capacity: 29)
    private let distanceBase = UnsafeMutablePointer<UInt16>.allocate(capacity: 30)
    private let distanceExtra = UnsafeMutablePointer<UInt8>.allocate(capacity: 30)

    private static let codeLengthOrder = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]

    init() {
        lengths.initialize(repeating: 0, count: 320)
        codeLengthLengths.initialize(repeating: 0, count: 19)
        lengthBase.initialize(from: [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
                                     35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258], count: 29)
        lengthExtra.initialize(from: [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
                                      3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0], count: 29)
        distanceBase.initialize(from: [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193,
                                       257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
                                       8193, 12289, 16385, 24577], count: 30)
        distanceExtra.initialize(from: [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6,
                                        7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13], count: 30)
        // Fixed codes (RFC 1951 3.2.6); both are complete, so building cannot fail.
        lengths.update(repeating: 8, count: 144)
        (lengths + 144).update(repeating: 9, count: 112)
        (lengths + 256).update(repeating: 7, count: 24)
        (lengths + 280).update(repeating: 8, count: 8)
        try! fixedLiteralTable.build(lengths, count: 288)
        lengths.update(repeating: 5, count: 32)
        try! fixedDistanceTable.build(lengths, count: 32)
    }

    deinit {
        for table in [literalTable, distanceTable, codeLengthTable, fixedLiteralTable, fixedDistanceTable] {
            table.deallocate()
        }
        lengths.deallocate()
        codeLengthLengths.deallocate()
        lengthBase.deallocate()
        lengthExtra.deallocate()
        distanceBase.deallocate()
        distanceExtra.deallocate()
    }

    /// Decompresses the zlib stream `input` into exactly `output.count` bytes and checks its Adler-32.
    func inflate(zlib input: UnsafeRawBufferPointer, into output: UnsafeMutableBufferPointer<UInt8>) throws {
        guard input.count >= 2, let inBase = input.baseAddress?.assumingMemoryBound(to: UInt8.self) else {
            throw InflateError("zlib stream is truncated")
        }
        guard output.count > 0, let out = output.baseAddress else {
            throw InflateError("nothing to decompress into")
        }
        let cmf = Int(inBase[0])
        let flg = Int(inBase[1])
        guard cmf & 0x0F == 8, cmf >> 4 <= 7 else {
            throw InflateError("zlib header 0x\(String(cmf, radix: 16)) is not deflate with a 32K window")
        }
        guard (cmf << 8 | flg) % 31 == 0 else { throw InflateError("zlib header check bits are wrong") }
        guard flg & 0x20 == 0 else { throw InflateError("zlib stream needs a preset dictionary") }

        var reader = BitReader(base: inBase + 2, count: input.count - 2)
        let outCount = output.count
        var outPos = 0
        var isFinal = false
        repeat {
            if reader.bitCount < 3 { try reader.refill() }
            isFinal = reader.take(1) == 1
            switch reader.take(2) {
            case 0:
                outPos = try copyStoredBlock(&reader, out, outPos, outCount)
            case 1:
                outPos = try decodeBlock(&reader, fixedLiteralTable, fixedDistanceTable, out, outPos, outCount)
            case 2:
                try readDynamicTables(&reader)
                outPos = try decodeBlock(&reader, literalTable, distanceTable, out, outPos, outCount)
            default:
                throw InflateError("invalid deflate block type 3")
            }
        } while !isFinal

        guard outPos == outCount else {
            throw InflateError("decompressed data ends after \(outPos) of \(outCount) bytes")
        }
        let p = reader.alignedBytePosition()
        guard p + 4 <= reader.count else { throw InflateError("zlib stream is truncated before its Adler-32") }
        let b = reader.base + p
        let stored = UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3])
        let computed = Adler32.checksum(out, outCount)
        guard stored == computed else {
            throw InflateError("Adler-32 mismatch (stored 0x\(String(stored, radix: 16)), "
                               + "computed 0x\(String(computed, radix: 16)))")
        }
    }

    private func copyStoredBlock(_ reader: inout BitReader, _ out: UnsafeMutablePointer<UInt8>,
                                 _ outPos: Int, _ outCount: Int) throws -> Int {
        var p = reader.alignedBytePosition()
        guard p + 4 <= reader.count else { throw InflateError("compressed data is truncated") }
        let b = reader.base
        let length = Int(b[p]) | Int(b[p + 1]) << 8
        let complement = Int(b[p + 2]) | Int(b[p + 3]) << 8
        guard length == ~complement & 0xFFFF else { throw InflateError("stored block length check failed") }
        p += 4
        guard length <= reader.count - p else { throw InflateError("compressed data is truncated") }
        guard length <= outCount - outPos else {
            throw InflateError("decompresses to more than the expected \(outCount) bytes")
        }
        (out + outPos).update(from: b + p, count: length)
        reader.restart(at: p + length)
        return outPos + length
    }

    private func readDynamicTables(_ reader: inout BitReader) throws {
        if reader.bitCount < 14 { try reader.refill() }
        let literalCount = reader.take(5) + 257
        let distanceCount = reader.take(5) + 1
        let codeLengthCount = reader.take(4) + 4
        guard literalCount <= 286, distanceCount <= 30 else {
            throw InflateError("dynamic block declares too many codes")
        }
        codeLengthLengths.update(repeating: 0, count: 19)
        for i in 0..<codeLengthCount {
            if reader.bitCount < 3 { try reader.refill() }
            codeLengthLengths[Self.codeLengthOrder[i]] = UInt8(reader.take(3))
        }
        try codeLengthTable.build(codeLengthLengths, count: 19)

        let total = literalCount + distanceCount
        var i = 0
        while i < total {
            // A code-length code is at most 7 bits, followed by at most 7 extra bits.
            if reader.bitCount < 14 { try reader.refill() }
            let symbol = try codeLengthTable.decode(&reader)
            if symbol < 16 {
                lengths[i] = UInt8(symbol)
                i += 1
                continue
            }
            let value: UInt8
            let repeatCount: Int
            switch symbol {
            case 16:
                guard i > 0 else { throw InflateError("code length repeat with no previous length") }
                value = lengths[i - 1]
                repeatCount = 3 + reader.take(2)
            case 17:
                value = 0
                repeatCount = 3 + reader.take(3)
            default:
                value = 0
                repeatCount = 11 + reader.take(7)
            }
            guard repeatCount <= total - i else { throw InflateError("code length repeat overruns the table") }
            (lengths + i).update(repeating: value, count: repeatCount)
            i += repeatCount
        }
        guard lengths[256] != 0 else { throw InflateError("dynamic block has no end-of-block code") }
        try literalTable.build(lengths, count: literalCount)
        try distanceTable.build(lengths + literalCount, count: distanceCount)
    }

    @inline(__always)
    private func decodeBlock(_ reader: inout BitReader, _ literals: HuffmanTable, _ distances: HuffmanTable,
                             _ out: UnsafeMutablePointer<UInt8>, _ start: Int, _ outCount: Int) throws -> Int {
        var pos = start
        let lengthBase = self.lengthBase, lengthExtra = self.lengthExtra
        let distanceBase = self.distanceBase, distanceExtra = self.distanceExtra
        while true {
            // The longest symbol sequence, length code + extra + distance code + extra, is 48 bits.
            if reader.bitCount < 48 { try reader.refill() }
            let symbol = try literals.decode(&reader)
            if symbol < 256 {
                guard pos < outCount else {
                    throw InflateError("decompresses to more than the expected \(outCount) bytes")
                }
                out[pos] = UInt8(truncatingIfNeeded: symbol)
                pos += 1
                continue
            }
            if symbol == 256 { return pos }
            let lengthSymbol = symbol - 257
            guard lengthSymbol < 29 else { throw InflateError("invalid length symbol \(symbol)") }
            let length = Int(lengthBase[lengthSymbol]) + reader.take(Int(lengthExtra[lengthSymbol]))
            let distanceSymbol = try distances.decode(&reader)
            guard distanceSymbol < 30 else { throw InflateError("invalid distance symbol \(distanceSymbol)") }
            let distance = Int(distanceBase[distanceSymbol]) + reader.take(Int(distanceExtra[distanceSymbol]))
            guard distance <= pos else {
                throw InflateError("back-reference distance \(distance) reaches before the start of the data")
            }
            guard length <= outCount - pos else {
                throw InflateError("decompresses to more than the expected \(outCount) bytes")
            }
            let dst = out + pos
            let src = dst - distance
            if distance >= 8 && length + 8 <= outCount - pos {
                // Eight bytes at a time; each load reads only bytes already written (distance ≥ 8),
                // and the overshoot stays inside the buffer and is overwritten later.
                var s = UnsafeRawPointer(src)
                var d = UnsafeMutableRawPointer(dst)
                let end = d + length
                repeat {
                    d.storeBytes(of: s.loadUnaligned(as: UInt64.self), as: UInt64.self)
                    s += 8
                    d += 8
                } while d < end
            } else if distance == 1 {
                dst.update(repeating: src[0], count: length)
            } else {
                for k in 0..<length { dst[k] = src[k] }
            }
            pos += length
        }
    }
}
