// PNG decoding (ISO/IEC 15948) to 8-bit BGR: chunk walk with CRC checks, zlib inflate,
// scanline unfiltering, Adam7 de-interlacing and conversion of every standard colour type.
// zlib is not a dependency of the package, hence the own inflate (Inflate.swift).

struct PNGHeader {
    static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    let width: Int
    let height: Int
    let bitDepth: Int
    let colorType: Int
    let interlaced: Bool

    var channels: Int {
        switch colorType {
        case 2: return 3
        case 4: return 2
        case 6: return 4
        default: return 1
        }
    }

    var bitsPerPixel: Int { channels * bitDepth }

    /// Byte distance to the corresponding byte of the previous pixel, as the filters use it.
    var filterStride: Int { max(1, bitsPerPixel / 8) }

    func rowBytes(width w: Int) -> Int { (w * bitsPerPixel + 7) / 8 }

    /// Reads and validates the signature and IHDR (its CRC is checked by the full chunk walk).
    init(_ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count >= 33 else { throw ImageDecodingError.corruptPNG("file is truncated before the end of IHDR") }
        let b = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
        for i in 0..<8 where b[i] != Self.signature[i] {
            throw ImageDecodingError.corruptPNG("bad signature")
        }
        guard readBigEndian32(b + 8) == 13, readBigEndian32(b + 12) == chunkIHDR else {
            throw ImageDecodingError.corruptPNG("first chunk is not a 13-byte IHDR")
        }
        width = readBigEndian32(b + 16)
        height = readBigEndian32(b + 20)
        bitDepth = Int(b[24])
        colorType = Int(b[25])
        guard width > 0, height > 0, width <= 0x7FFF_FFFF, height <= 0x7FFF_FFFF else {
            throw ImageDecodingError.corruptPNG("invalid size \(width)×\(height)")
        }
        // Depths are powers of two: 1...16 for gray, 1...8 for palette, 8 or 16 otherwise.
        let depthIsValid: Bool
        switch colorType {
        case 0: depthIsValid = bitDepth.nonzeroBitCount == 1 && bitDepth <= 16
        case 3: depthIsValid = bitDepth.nonzeroBitCount == 1 && bitDepth <= 8
        case 2, 4, 6: depthIsValid = bitDepth == 8 || bitDepth == 16
        default: throw ImageDecodingError.corruptPNG("invalid colour type \(colorType)")
        }
        guard depthIsValid else {
            throw ImageDecodingError.corruptPNG("invalid bit depth \(bitDepth) for colour type \(colorType)")
        }
        guard b[26] == 0, b[27] == 0 else {
            throw ImageDecodingError.corruptPNG("unknown compression method \(b[26]) or filter method \(b[27])")
        }
        guard b[28] <= 1 else { throw ImageDecodingError.corruptPNG("unknown interlace method \(b[28])") }
        interlaced = b[28] == 1
    }
}

/// Adam7 passes: first column, first row, column step, row step.
private let adam7: [(x0: Int, y0: Int, dx: Int, dy: Int)] = [
    (0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2),
]
/// A non-interlaced image as a single pass (a constant, so decoding does not allocate it).
private let singlePass: [(x0: Int, y0: Int, dx: Int, dy: Int)] = [(0, 0, 1, 1)]

private let chunkIHDR = 0x4948_4452
private let chunkPLTE = 0x504C_5445
private let chunkIDAT = 0x4944_4154
private let chunkIEND = 0x4945_4E44

@inline(__always)
private func readBigEndian32(_ p: UnsafePointer<UInt8>) -> Int {
    Int(p[0]) << 24 | Int(p[1]) << 16 | Int(p[2]) << 8 | Int(p[3])
}

private func chunkName(_ p: UnsafePointer<UInt8>) -> String {
    String(decoding: UnsafeBufferPointer(start: p, count: 4), as: UTF8.self)
}

/// A grow-only byte buffer reused across images, so steady-state decoding does not allocate.
private final class ScratchBuffer {
    private(set) var pointer: UnsafeMutablePointer<UInt8>?
    private var capacity = 0

    func reserve(_ count: Int) -> UnsafeMutablePointer<UInt8> {
        if count > capacity || pointer == nil {
            pointer?.deallocate()
            let newCapacity = max(count, 1)
            pointer = .allocate(capacity: newCapacity)
            capacity = newCapacity
        }
        return pointer!
    }

    deinit { pointer?.deallocate() }
}

/// PNG decoder state reused across images; one per thread.
final class PNGDecoder {
    private let inflater = Inflater()
    private let compressed = ScratchBuffer()
    private let filtered = ScratchBuffer()
    /// Palette in BGR order, 256 entries.
    private let palette = UnsafeMutablePointer<UInt8>.allocate(capacity: 256 * 3)
    private var paletteCount = 0

    init() { palette.initialize(repeating: 0, count: 256 * 3) }

    deinit { palette.deallocate() }

    /// Decodes the PNG in `bytes`, whose IHDR is `header`, into `out` (width × height × 3 bytes).
    func decode(_ bytes: UnsafeRawBufferPointer, header: PNGHeader, into out: UnsafeMutablePointer<UInt8>) throws {
        let b = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let count = bytes.count
        var offset = 8
        var idatCount = 0
        var idatBytes = 0
        var firstIDAT = 0
        var sawIEND = false
        paletteCount = 0
        while offset < count && !sawIEND {
            guard count - offset >= 12 else {
                throw ImageDecodingError.corruptPNG("file is truncated inside the chunk at byte \(offset)")
            }
            let length = readBigEndian32(b + offset)
            let type = b + offset + 4
            for i in 0..<4 where !((type[i] >= 0x41 && type[i] <= 0x5A) || (type[i] >= 0x61 && type[i] <= 0x7A)) {
                throw ImageDecodingError.corruptPNG("invalid chunk type at byte \(offset)")
            }
            guard length <= count - offset - 12 else {
                throw ImageDecodingError.corruptPNG(
                    "file is truncated: chunk \(chunkName(type)) of \(length) bytes runs past the end")
            }
            let data = type + 4
            let stored = UInt32(readBigEndian32(data + length))
            let computed = CRC32.update(0, type, length + 4)
            guard stored == computed else {
                throw ImageDecodingError.corruptPNG("chunk \(chunkName(type)) has a bad CRC (stored 0x"
                                                    + "\(String(stored, radix: 16)), computed 0x\(String(computed, radix: 16)))")
            }
            switch readBigEndian32(type) {
            case chunkIHDR:
                guard offset == 8 else { throw ImageDecodingError.corruptPNG("second IHDR chunk") }
            case chunkPLTE:
                guard length % 3 == 0, length >= 3, length <= 768 else {
                    throw ImageDecodingError.corruptPNG("PLTE chunk of \(length) bytes")
                }
                paletteCount = length / 3
                for i in 0..<paletteCount {
                    palette[3 * i] = data[3 * i + 2]
                    palette[3 * i + 1] = data[3 * i + 1]
                    palette[3 * i + 2] = data[3 * i]
                }
            case chunkIDAT:
                if idatCount == 0 { firstIDAT = offset + 8 }
                idatCount += 1
                idatBytes += length
            case chunkIEND:
                sawIEND = true
            default:
                // Ancillary chunks (lower-case first letter: tRNS, gAMA, text...) do not change the BGR pixels.
                guard type[0] & 0x20 != 0 else {
                    throw ImageDecodingError.unsupported("PNG has unknown critical chunk \(chunkName(type))")
                }
            }
            offset += 12 + length
        }
        guard sawIEND else { throw ImageDecodingError.corruptPNG("file is truncated: no IEND chunk") }
        guard idatCount > 0 else { throw ImageDecodingError.corruptPNG("no IDAT chunk") }
        if header.colorType == 3 && paletteCount == 0 {
            throw ImageDecodingError.corruptPNG("palette image without a PLTE chunk")
        }

        let stream: UnsafeRawBufferPointer
        if idatCount == 1 {
            stream = UnsafeRawBufferPointer(start: b + firstIDAT, count: idatBytes)
        } else {
            stream = UnsafeRawBufferPointer(start: gatherIDAT(b, idatBytes), count: idatBytes)
        }

        let passes = header.interlaced ? adam7 : singlePass
        var rawSize = 0
        for pass in passes {
            let (w, h) = passSize(header, pass)
            if w > 0 && h > 0 { rawSize += h * (1 + header.rowBytes(width: w)) }
        }
        let raw = filtered.reserve(rawSize)
        do {
            try inflater.inflate(zlib: stream, into: UnsafeMutableBufferPointer(start: raw, count: rawSize))
        } catch let error as InflateError {
            throw ImageDecodingError.corruptPNG("image data: \(error.message)")
        }

        var rows = raw
        for pass in passes {
            let (w, h) = passSize(header, pass)
            if w == 0 || h == 0 { continue }
            let rowBytes = header.rowBytes(width: w)
            try unfilter(rows, rowBytes: rowBytes, height: h, stride: header.filterStride)
            for y in 0..<h {
                let dst = out + ((pass.y0 + y * pass.dy) * header.width + pass.x0) * 3
                try convertRow(rows + y * (rowBytes + 1) + 1, pixels: w, header: header,
                               to: dst, pixelStride: 3 * pass.dx)
            }
            rows += h * (rowBytes + 1)
        }
    }

    private func passSize(_ header: PNGHeader, _ pass: (x0: Int, y0: Int, dx: Int, dy: Int)) -> (Int, Int) {
        ((header.width - pass.x0 + pass.dx - 1) / pass.dx, (header.height - pass.y0 + pass.dy - 1) / pass.dy)
    }

    /// Concatenates the data of all IDAT chunks (already validated by the chunk walk).
    private func gatherIDAT(_ b: UnsafePointer<UInt8>, _ total: Int) -> UnsafeMutablePointer<UInt8> {
        let dst = compressed.reserve(total)
        var offset = 8
        var filled = 0
        while filled < total {
            let length = readBigEndian32(b + offset)
            if readBigEndian32(b + offset + 4) == chunkIDAT {
                (dst + filled).update(from: b + offset + 8, count: length)
                filled += length
            }
            offset += 12 + length
        }
        return dst
    }

    /// Undoes the per-row filters in place; each row is a filter-type byte followed by `rowBytes` bytes.
    private func unfilter(_ rows: UnsafeMutablePointer<UInt8>, rowBytes: Int, height: Int, stride: Int) throws {
        var previous: UnsafeMutablePointer<UInt8>? = nil
        for y in 0..<height {
            let line = rows + y * (rowBytes + 1)
            let row = line + 1
            switch line[0] {
            case 0:
                break
            case 1:
                for i in stride..<max(stride, rowBytes) { row[i] &+= row[i - stride] }
            case 2:
                if let up = previous {
                    for i in 0..<rowBytes { row[i] &+= up[i] }
                }
            case 3:
                if let up = previous {
                    for i in 0..<min(stride, rowBytes) { row[i] &+= up[i] >> 1 }
                    for i in stride..<max(stride, rowBytes) {
                        row[i] &+= UInt8(truncatingIfNeeded: (Int(row[i - stride]) + Int(up[i])) >> 1)
                    }
                } else {
                    for i in stride..<max(stride, rowBytes) { row[i] &+= row[i - stride] >> 1 }
                }
            case 4:
                if let up = previous {
                    for i in 0..<min(stride, rowBytes) { row[i] &+= up[i] }
                    for i in stride..<max(stride, rowBytes) {
                        row[i] &+= paeth(row[i - stride], up[i], up[i - stride])
                    }
                } else {
                    // With no row above, Paeth predicts from the left neighbour, like Sub.
                    for i in stride..<max(stride, rowBytes) { row[i] &+= row[i - stride] }
                }
            default:
                throw ImageDecodingError.corruptPNG("unknown filter type \(line[0]) in row \(y)")
            }
            previous = row
        }
    }

    /// Converts one unfiltered row of `pixels` pixels to BGR, writing pixel i at `dst + i * pixelStride`.
    private func convertRow(_ src: UnsafePointer<UInt8>, pixels: Int, header: PNGHeader,
                            to dst: UnsafeMutablePointer<UInt8>, pixelStride: Int) throws {
        let depth = header.bitDepth
        // 16-bit samples are big-endian: the high byte comes first.
        let sampleBytes = depth == 16 ? 2 : 1
        switch header.colorType {
        case 0 where depth >= 8, 4:
            let step = header.channels * sampleBytes
            for x in 0..<pixels {
                let v = src[x * step]
                let d = dst + x * pixelStride
                d[0] = v
                d[1] = v
                d[2] = v
            }
        case 0:
            let scale = UInt8(255 / ((1 << depth) - 1))
            for x in 0..<pixels {
                let v = UInt8(truncatingIfNeeded: packedSample(src, x, depth)) &* scale
                let d = dst + x * pixelStride
                d[0] = v
                d[1] = v
                d[2] = v
            }
        case 2, 6:
            let step = header.channels * sampleBytes
            for x in 0..<pixels {
                let s = src + x * step
                let d = dst + x * pixelStride
                d[0] = s[2 * sampleBytes]
                d[1] = s[sampleBytes]
                d[2] = s[0]
            }
        default:
            for x in 0..<pixels {
                let index = depth == 8 ? Int(src[x]) : packedSample(src, x, depth)
                guard index < paletteCount else {
                    throw ImageDecodingError.corruptPNG(
                        "palette index \(index) is out of range (the palette has \(paletteCount) entries)")
                }
                let p = palette + 3 * index
                let d = dst + x * pixelStride
                d[0] = p[0]
                d[1] = p[1]
                d[2] = p[2]
            }
        }
    }
}

/// Sample `x` of a row packed at 1, 2 or 4 bits per sample, most significant bits first.
@inline(__always)
private func packedSample(_ src: UnsafePointer<UInt8>, _ x: Int, _ depth: Int) -> Int {
    let bit = x * depth
    return (Int(src[bit >> 3]) >> (8 - depth - (bit & 7))) & ((1 << depth) - 1)
}

@inline(__always)
private func paeth(_ a: UInt8, _ b: UInt8, _ c: UInt8) -> UInt8 {
    let a = Int(a), b = Int(b), c = Int(c)
    let pa = abs(b - c)
    let pb = abs(a - c)
    let pc = abs(a + b - 2 * c)
    if pa <= pb && pa <= pc { return UInt8(a) }
    return pb <= pc ? UInt8(b) : UInt8(c)
}
