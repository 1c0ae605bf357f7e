// Shared helpers for the image codec tests: fixtures, deterministic images, PNG byte surgery.

import DataPipeline
import Foundation
import XCTest

enum ImageFixtures {
    /// Written by Scripts/fixtures/make_image_fixtures.py; located from this file so that the
    /// package needs no resource declarations.
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    static func bytes(_ fileName: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: directory.appendingPathComponent(fileName)))
    }
}

extension ImageDecoder {
    func decode(_ bytes: [UInt8]) throws -> DecodedImage {
        try bytes.withUnsafeBytes { try decode($0) }
    }
}

/// SplitMix64: deterministic test data without Foundation's unseeded generators.
struct TestRandom {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }

    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }

    mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in byte() } }
}

/// Smooth gradients with mild noise: the content JPEG is meant for, so error bounds are meaningful.
func smoothImage(width: Int, height: Int, seed: UInt64) -> [UInt8] {
    var random = TestRandom(seed: seed)
    var bgr = [UInt8](repeating: 0, count: width * height * 3)
    for y in 0..<height {
        for x in 0..<width {
            for c in 0..<3 {
                let base = (x * (3 + c) * 255 / max(1, width) + y * (5 - c) * 255 / max(1, height)) / 4 + 40 * c
                let value = base + random.below(9) - 4
                bgr[(y * width + x) * 3 + c] = UInt8(clamping: value)
            }
        }
    }
    return bgr
}

func solidImage(width: Int, height: Int, b: UInt8, g: UInt8, r: UInt8) -> [UInt8] {
    (0..<width * height).flatMap { _ in [b, g, r] }
}

func encodeJPEG(_ bgr: [UInt8], width: Int, height: Int, quality: Int = 95) throws -> [UInt8] {
    try bgr.withUnsafeBufferPointer { try ImageEncoder.jpeg(bgr: $0, width: width, height: height, quality: quality) }
}

func encodePNG(_ bgr: [UInt8], width: Int, height: Int) -> [UInt8] {
    bgr.withUnsafeBufferPointer { ImageEncoder.png(bgr: $0, width: width, height: height) }
}

func meanAbsoluteError(_ a: [UInt8], _ b: [UInt8]) -> Double {
    precondition(a.count == b.count)
    let total = zip(a, b).reduce(0) { $0 + abs(Int($1.0) - Int($1.1)) }
    return Double(total) / Double(a.count)
}

/// Asserts that decoding fails, and returns the error for further checks.
@discardableResult
func assertDecodeFails(_ bytes: [UInt8], _ decoder: ImageDecoder, _ what: String,
                       file: StaticString = #filePath, line: UInt = #line) -> ImageDecodingError? {
    do {
        let image = try decoder.decode(bytes)
        XCTFail("\(what): decoded a \(image.width)×\(image.height) image instead of failing", file: file, line: line)
        return nil
    } catch let error as ImageDecodingError {
        return error
    } catch {
        XCTFail("\(what): unexpected error type \(error)", file: file, line: line)
        return nil
    }
}

/// Byte-level PNG editing, written independently of the decoder's own CRC and chunk code.
enum PNGBytes {
    struct Chunk {
        let type: String
        /// Offset of the length field.
        let offset: Int
        let length: Int
        var dataOffset: Int { offset + 8 }
    }

    static func crc32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }

    static func adler32(_ bytes: [UInt8]) -> UInt32 {
        var a: UInt32 = 1
        var b: UInt32 = 0
        for byte in bytes {
            a = (a + UInt32(byte)) % 65521
            b = (b + a) % 65521
        }
        return b << 16 | a
    }

    static func bigEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
    }

    static func chunks(_ png: [UInt8]) -> [Chunk] {
        var result: [Chunk] = []
        var offset = 8
        while offset + 12 <= png.count {
            let length = Int(png[offset]) << 24 | Int(png[offset + 1]) << 16 | Int(png[offset + 2]) << 8 | Int(png[offset + 3])
            let type = String(decoding: png[offset + 4..<offset + 8], as: UTF8.self)
            result.append(Chunk(type: type, offset: offset, length: length))
            offset += 12 + length
        }
        return result
    }

    static func firstChunk(_ png: [UInt8], _ type: String) -> Chunk {
        chunks(png).first { $0.type == type }!
    }

    /// Rewrites the CRC of the chunk at `chunk`, so that only the intended damage remains.
    static func fixCRC(_ png: inout [UInt8], _ chunk: Chunk) {
        let crc = crc32(png[chunk.offset + 4..<chunk.dataOffset + chunk.length])
        png.replaceSubrange(chunk.dataOffset + chunk.length..<chunk.dataOffset + chunk.length + 4, with: bigEndian(crc))
    }

    static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let body = Array(type.utf8) + data
        return bigEndian(UInt32(data.count)) + body + bigEndian(crc32(body[...]))
    }

    /// zlib stream of one stored block (data up to 65535 bytes).
    static func storedZlib(_ data: [UInt8]) -> [UInt8] {
        let n = data.count
        return [0x78, 0x01, 1, UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            + data + bigEndian(adler32(data))
    }

    /// A PNG from raw (already filtered) scanlines, with optional chunks between IHDR and IDAT.
    static func make(width: Int, height: Int, bitDepth: UInt8, colorType: UInt8, scanlines: [UInt8],
                     before: [[UInt8]] = [], includeIEND: Bool = true) -> [UInt8] {
        let ihdr = bigEndian(UInt32(width)) + bigEndian(UInt32(height)) + [bitDepth, colorType, 0, 0, 0]
        var png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", ihdr)
        for extra in before { png += extra }
        png += chunk("IDAT", storedZlib(scanlines))
        if includeIEND { png += chunk("IEND", []) }
        return png
    }
}
