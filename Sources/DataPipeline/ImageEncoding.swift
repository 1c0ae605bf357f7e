// Encoding of BGR images to JPEG (TurboJPEG) and PNG, for the synthetic data generator and tests.

import CTurboJPEG

public struct ImageEncodingError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// Stateless: every call creates its own TurboJPEG handle, so encoders may run on any thread.
public enum ImageEncoder {
    /// Encodes a `width` × `height` BGR image as a baseline JPEG with 4:4:4 chroma (no subsampling):
    /// face crops are only ~112 pixels wide, so halving chroma resolution would visibly smear colour
    /// edges, and the size saving at that resolution is a few hundred bytes.
    public static func jpeg(bgr: UnsafeBufferPointer<UInt8>, width: Int, height: Int, quality: Int) throws -> [UInt8] {
        precondition(width > 0 && height > 0 && bgr.count >= width * height * 3,
                     "BGR buffer of \(bgr.count) bytes does not hold a \(width)×\(height) image")
        guard (1...100).contains(quality) else {
            throw ImageEncodingError(message: "JPEG quality must be in 1...100, got \(quality)")
        }
        guard let handle = tjInitCompress() else {
            throw ImageEncodingError(message: "cannot create a TurboJPEG compressor: \(String(cString: tjGetErrorStr2(nil)))")
        }
        defer { tjDestroy(handle) }
        var output: UnsafeMutablePointer<UInt8>? = nil
        var size: UInt = 0
        defer { if let output { tjFree(output) } }
        // TurboJPEG defaults to the fast integer DCT when compressing; the accurate one costs little at this size.
        let status = tjCompress2(handle, bgr.baseAddress, Int32(width), Int32(width * 3), Int32(height),
                                 Int32(TJPF_BGR.rawValue), &output, &size, Int32(TJSAMP_444.rawValue),
                                 Int32(quality), TJFLAG_ACCURATEDCT)
        guard status == 0, let output else {
            throw ImageEncodingError(message: "JPEG encoding failed: \(String(cString: tjGetErrorStr2(handle)))")
        }
        return Array(UnsafeBufferPointer(start: output, count: Int(size)))
    }

    /// Encodes a `width` × `height` BGR image as an 8-bit RGB PNG (colour type 2, no filtering,
    /// stored deflate blocks): exact and simple; size is not a concern for generated data.
    public static func png(bgr: UnsafeBufferPointer<UInt8>, width: Int, height: Int) -> [UInt8] {
        precondition(width > 0 && height > 0 && bgr.count >= width * height * 3,
                     "BGR buffer of \(bgr.count) bytes does not hold a \(width)×\(height) image")
        let rowBytes = 1 + width * 3
        let rawCount = height * rowBytes
        var raw = [UInt8](repeating: 0, count: rawCount)
        raw.withUnsafeMutableBufferPointer { rawBuffer in
            let dst = rawBuffer.baseAddress!
            let src = bgr.baseAddress!
            for y in 0..<height {
                let row = dst + y * rowBytes + 1  // the filter byte stays 0 (None)
                let source = src + y * width * 3
                for x in 0..<width {
                    row[3 * x] = source[3 * x + 2]
                    row[3 * x + 1] = source[3 * x + 1]
                    row[3 * x + 2] = source[3 * x]
                }
            }
        }

        let maxBlock = 65535
        let blockCount = (rawCount + maxBlock - 1) / maxBlock
        let zlibCount = 2 + rawCount + 5 * blockCount + 4
        var png = PNGHeader.signature
        png.reserveCapacity(8 + 25 + 12 + zlibCount + 12)

        var ihdr = [UInt8]()
        appendBigEndian32(&ihdr, width)
        appendBigEndian32(&ihdr, height)
        ihdr += [8, 2, 0, 0, 0]  // 8-bit, RGB, deflate, adaptive filtering method, no interlace
        appendChunk(&png, "IHDR", ihdr)

        var zlib = [UInt8]()
        zlib.reserveCapacity(zlibCount)
        zlib += [0x78, 0x01]  // deflate, 32K window, no dictionary; check bits make 0x7801 % 31 == 0
        var start = 0
        while start < rawCount {
            let length = min(maxBlock, rawCount - start)
            zlib.append(start + length == rawCount ? 1 : 0)  // BFINAL, BTYPE 00 (stored)
            zlib += [UInt8(length & 0xFF), UInt8(length >> 8), UInt8(~length & 0xFF), UInt8((~length >> 8) & 0xFF)]
            zlib += raw[start..<start + length]
            start += length
        }
        let adler = raw.withUnsafeBufferPointer { Adler32.checksum($0.baseAddress, $0.count) }
        appendBigEndian32(&zlib, Int(adler))
        appendChunk(&png, "IDAT", zlib)
        appendChunk(&png, "IEND", [])
        return png
    }

    private static func appendBigEndian32(_ bytes: inout [UInt8], _ value: Int) {
        bytes += [UInt8(truncatingIfNeeded: value >> 24), UInt8(truncatingIfNeeded: value >> 16),
                  UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value)]
    }

    private static func appendChunk(_ png: inout [UInt8], _ type: String, _ data: [UInt8]) {
        appendBigEndian32(&png, data.count)
        let start = png.count
        png += Array(type.utf8)
        png += data
        let crc = png.withUnsafeBufferPointer { CRC32.update(0, $0.baseAddress! + start, 4 + data.count) }
        appendBigEndian32(&png, Int(crc))
    }
}
