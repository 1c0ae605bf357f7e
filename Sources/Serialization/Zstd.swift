import CZstd

/// zstd compression of whole buffers.
///
/// Frames written here carry their content size and a content checksum (XXH64, low 32 bits), so
/// decompression detects corruption. `decompress` also accepts frames without a content size
/// (e.g. from `zstd` reading a pipe) and several concatenated frames. Failures throw
/// `SerializationError` whose `source` is the `source` argument, normally the file path.
public enum Zstd {
    /// Compression levels accepted by `compress` (negative levels are the fast modes).
    public static var levels: ClosedRange<Int> { Int(ZSTD_minCLevel())...Int(ZSTD_maxCLevel()) }

    /// True when `bytes` starts with the zstd frame magic number 0xFD2FB528 (little-endian).
    public static func isFrame(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.count >= 4 && bytes[0] == 0x28 && bytes[1] == 0xB5 && bytes[2] == 0x2F && bytes[3] == 0xFD
    }

    public static func compress(_ bytes: [UInt8], level: Int = 3) throws -> [UInt8] {
        try bytes.withUnsafeBytes { try compress($0, level: level) }
    }

    public static func compress(_ bytes: UnsafeRawBufferPointer, level: Int = 3) throws -> [UInt8] {
        try compress(parts: [bytes], level: level)
    }

    public static func decompress(_ bytes: [UInt8], source: String = "zstd data") throws -> [UInt8] {
        try bytes.withUnsafeBytes { try decompress($0, source: source) }
    }

    /// Compresses the concatenation of `parts` into a single frame.
    static func compress(parts: [UnsafeRawBufferPointer], level: Int) throws -> [UInt8] {
        let source = "zstd compression"
        guard levels.contains(level) else {
            throw SerializationError(.unsupported, source: source,
                                     "level \(level) is outside \(levels.lowerBound)...\(levels.upperBound)")
        }
        guard let context = ZSTD_createCCtx() else {
            throw SerializationError(.io, source: source, "cannot allocate a compression context")
        }
        defer { ZSTD_freeCCtx(context) }
        let total = parts.reduce(0) { $0 + $1.count }
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, Int32(level)), source)
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1), source)
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 1), source)
        // Streaming input loses the size unless it is pledged up front.
        try check(ZSTD_CCtx_setPledgedSrcSize(context, UInt64(total)), source)

        // The bound guarantees the whole frame fits, so the output never needs to grow.
        var output = [UInt8](repeating: 0, count: ZSTD_compressBound(total))
        let written = try output.withUnsafeMutableBytes { out -> Int in
            var outBuffer = ZSTD_outBuffer(dst: out.baseAddress, size: out.count, pos: 0)
            for (index, part) in parts.enumerated() {
                let last = index == parts.count - 1
                var inBuffer = ZSTD_inBuffer(src: part.baseAddress, size: part.count, pos: 0)
                while true {
                    let remaining = ZSTD_compressStream2(context, &outBuffer, &inBuffer, last ? ZSTD_e_end : ZSTD_e_continue)
                    try check(remaining, source)
                    if last ? remaining == 0 : inBuffer.pos == inBuffer.size { break }
                    if outBuffer.pos == outBuffer.size {
                        throw SerializationError(.io, source: source, "output exceeded ZSTD_compressBound")
                    }
                }
            }
            if parts.isEmpty {
                var inBuffer = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
                while try check(ZSTD_compressStream2(context, &outBuffer, &inBuffer, ZSTD_e_end), source) != 0 {}
            }
            return outBuffer.pos
        }
        output.removeLast(output.count - written)
        return output
    }

    public static func decompress(_ bytes: UnsafeRawBufferPointer, source: String = "zstd data") throws -> [UInt8] {
        guard isFrame(bytes) else {
            throw SerializationError(.corruptCompression, source: source, "not a zstd frame (bad magic number)")
        }
        guard let context = ZSTD_createDCtx() else {
            throw SerializationError(.io, source: source, "cannot allocate a decompression context")
        }
        defer { ZSTD_freeDCtx(context) }

        // A declared content size sizes the output exactly; it is capped because a corrupt header
        // could claim anything, and the loop below grows the buffer when the cap was too small.
        let declared = ZSTD_getFrameContentSize(bytes.baseAddress, bytes.count)
        let unknownOrError = UInt64.max - 1
        var capacity = 1 << 16
        if declared < unknownOrError {
            let cap = bytes.count.multipliedReportingOverflow(by: 64)
            capacity = Int(min(declared, UInt64(cap.overflow ? Int.max : max(cap.partialValue, 1 << 16))))
        }

        var output = [UInt8](repeating: 0, count: capacity)
        var produced = 0
        var inBuffer = ZSTD_inBuffer(src: bytes.baseAddress, size: bytes.count, pos: 0)
        while true {
            if produced == output.count {
                output += [UInt8](repeating: 0, count: max(output.count, 1 << 16))
            }
            var full = false
            let hint = try output.withUnsafeMutableBytes { out -> Int in
                var outBuffer = ZSTD_outBuffer(dst: out.baseAddress! + produced, size: out.count - produced, pos: 0)
                let result = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
                produced += outBuffer.pos
                full = outBuffer.pos == outBuffer.size
                return try checkFrame(result, source)
            }
            let inputDone = inBuffer.pos == inBuffer.size
            // hint == 0: a frame ended and is fully flushed; more input means another frame follows.
            if hint == 0 && inputDone { break }
            if inputDone && !full {
                throw SerializationError(.truncated, source: source,
                                         "zstd frame is truncated (\(bytes.count) compressed bytes, decoded \(produced) so far)")
            }
        }
        output.removeLast(output.count - produced)
        return output
    }

    @discardableResult
    private static func check(_ code: Int, _ source: String) throws -> Int {
        if ZSTD_isError(code) != 0 {
            throw SerializationError(.io, source: source, "zstd: \(String(cString: ZSTD_getErrorName(code)))")
        }
        return code
    }

    private static func checkFrame(_ code: Int, _ source: String) throws -> Int {
        if ZSTD_isError(code) != 0 {
            // zstd_errors.h (not reachable through the shim) pins ZSTD_error_checksum_wrong to 22
            // since v1.3.1; an error result is the negated code.
            let checksum = 0 &- code == 22
            throw SerializationError(.corruptCompression, source: source,
                                     (checksum ? "zstd content checksum mismatch: " : "corrupt zstd frame: ")
                                        + String(cString: ZSTD_getErrorName(code)))
        }
        return code
    }
}
