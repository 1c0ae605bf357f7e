/// Element types of safetensors files; raw values are the header spellings.
///
/// All multi-byte types are little-endian in the file. The 8-bit float formats (F8_*) are not
/// supported and are rejected with an `.unsupported` error.
public enum TensorDType: String, CaseIterable, Sendable {
    case bool = "BOOL"
    case u8 = "U8"
    case i8 = "I8"
    case u16 = "U16"
    case i16 = "I16"
    case f16 = "F16"
    case bf16 = "BF16"
    case u32 = "U32"
    case i32 = "I32"
    case f32 = "F32"
    case u64 = "U64"
    case i64 = "I64"
    case f64 = "F64"

    public var byteSize: Int {
        switch self {
        case .bool, .u8, .i8: return 1
        case .u16, .i16, .f16, .bf16: return 2
        case .u32, .i32, .f32: return 4
        case .u64, .i64, .f64: return 8
        }
    }

    public var isFloatingPoint: Bool {
        switch self {
        case .f16, .bf16, .f32, .f64: return true
        default: return false
        }
    }
}

/// Number of elements of `shape` (1 for a scalar); nil for a negative dimension or on overflow.
func elementCount(of shape: [Int]) -> Int? {
    var count = 1
    for dimension in shape {
        guard dimension >= 0 else { return nil }
        let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
        guard !overflow else { return nil }
        count = product
    }
    return count
}

// MARK: - Element conversion (little-endian bytes <-> Float / Int64)

extension TensorDType {
    /// Converts `into.count` elements of this type from `raw` to Float.
    func decodeFloats(_ raw: UnsafeRawBufferPointer, into out: UnsafeMutableBufferPointer<Float>) {
        precondition(raw.count == out.count * byteSize)
        switch self {
        case .f32:
            #if _endian(little)
            if let base = out.baseAddress, !raw.isEmpty {
                UnsafeMutableRawPointer(base).copyMemory(from: raw.baseAddress!, byteCount: raw.count)
            }
            #else
            for i in out.indices { out[i] = Float(bitPattern: loadLE(raw, i, UInt32.self)) }
            #endif
        case .f64: for i in out.indices { out[i] = Float(Double(bitPattern: loadLE(raw, i, UInt64.self))) }
        case .f16: for i in out.indices { out[i] = Float(Float16(bitPattern: loadLE(raw, i, UInt16.self))) }
        case .bf16: for i in out.indices { out[i] = Float(bitPattern: UInt32(loadLE(raw, i, UInt16.self)) << 16) }
        case .bool: for i in out.indices { out[i] = raw[i] != 0 ? 1 : 0 }
        case .u8: for i in out.indices { out[i] = Float(raw[i]) }
        case .i8: for i in out.indices { out[i] = Float(Int8(bitPattern: raw[i])) }
        case .u16: for i in out.indices { out[i] = Float(loadLE(raw, i, UInt16.self)) }
        case .i16: for i in out.indices { out[i] = Float(Int16(bitPattern: loadLE(raw, i, UInt16.self))) }
        case .u32: for i in out.indices { out[i] = Float(loadLE(raw, i, UInt32.self)) }
        case .i32: for i in out.indices { out[i] = Float(Int32(bitPattern: loadLE(raw, i, UInt32.self))) }
        case .u64: for i in out.indices { out[i] = Float(loadLE(raw, i, UInt64.self)) }
        case .i64: for i in out.indices { out[i] = Float(Int64(bitPattern: loadLE(raw, i, UInt64.self))) }
        }
    }

    /// Converts integer (and bool) elements to Int64; nil for floating-point types or a U64 value
    /// above Int64.max, so that nothing is silently truncated.
    func decodeInt64s(_ raw: UnsafeRawBufferPointer, count: Int) -> [Int64]? {
        precondition(raw.count == count * byteSize)
        switch self {
        case .f16, .bf16, .f32, .f64: return nil
        case .bool: return (0..<count).map { raw[$0] != 0 ? 1 : 0 }
        case .u8: return (0..<count).map { Int64(raw[$0]) }
        case .i8: return (0..<count).map { Int64(Int8(bitPattern: raw[$0])) }
        case .u16: return (0..<count).map { Int64(loadLE(raw, $0, UInt16.self)) }
        case .i16: return (0..<count).map { Int64(Int16(bitPattern: loadLE(raw, $0, UInt16.self))) }
        case .u32: return (0..<count).map { Int64(loadLE(raw, $0, UInt32.self)) }
        case .i32: return (0..<count).map { Int64(Int32(bitPattern: loadLE(raw, $0, UInt32.self))) }
        case .i64: return (0..<count).map { Int64(bitPattern: loadLE(raw, $0, UInt64.self)) }
        case .u64:
            var values = [Int64]()
            values.reserveCapacity(count)
            for i in 0..<count {
                let value = loadLE(raw, i, UInt64.self)
                guard value <= UInt64(Int64.max) else { return nil }
                values.append(Int64(value))
            }
            return values
        }
    }

    /// Encodes floats as this floating-point type (F16/BF16 round to nearest even).
    func encodeFloats(_ floats: UnsafeBufferPointer<Float>) -> [UInt8] {
        precondition(isFloatingPoint, "floats can only be stored as F16, BF16, F32 or F64, not \(rawValue)")
        var bytes = [UInt8](repeating: 0, count: floats.count * byteSize)
        bytes.withUnsafeMutableBytes { out in
            switch self {
            case .f32: for (i, x) in floats.enumerated() { storeLE(out, i, x.bitPattern) }
            case .f64: for (i, x) in floats.enumerated() { storeLE(out, i, Double(x).bitPattern) }
            case .f16: for (i, x) in floats.enumerated() { storeLE(out, i, Float16(x).bitPattern) }
            case .bf16: for (i, x) in floats.enumerated() { storeLE(out, i, bfloat16Bits(x)) }
            default: break
            }
        }
        return bytes
    }
}

/// Float to bfloat16 with round-to-nearest-even; NaNs stay NaN (quiet bit forced).
func bfloat16Bits(_ x: Float) -> UInt16 {
    let bits = x.bitPattern
    if x.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
    let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
    return UInt16(truncatingIfNeeded: rounded >> 16)
}

@inline(__always)
func loadLE<T: FixedWidthInteger>(_ raw: UnsafeRawBufferPointer, _ index: Int, _: T.Type) -> T {
    T(littleEndian: raw.loadUnaligned(fromByteOffset: index * MemoryLayout<T>.size, as: T.self))
}

@inline(__always)
func storeLE<T: FixedWidthInteger>(_ raw: UnsafeMutableRawBufferPointer, _ index: Int, _ value: T) {
    raw.storeBytes(of: value.littleEndian, toByteOffset: index * MemoryLayout<T>.size, as: T.self)
}
