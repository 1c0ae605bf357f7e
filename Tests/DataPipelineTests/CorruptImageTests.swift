// Damaged records must throw (so the loader can skip and count them): never crash, never
// return an image.

import DataPipeline
import XCTest

final class CorruptImageTests: XCTestCase {
    private var decoder: ImageDecoder!

    override func setUpWithError() throws {
        decoder = try ImageDecoder()
    }

    override func tearDown() {
        decoder = nil  // XCTest keeps test case instances alive; release the decoder's buffers
    }

    private func jpegSample(width: Int = 96, height: Int = 80) throws -> [UInt8] {
        try encodeJPEG(smoothImage(width: width, height: height, seed: 21), width: width, height: height)
    }

    /// Byte range of the entropy-coded data of a single-scan JPEG (after the SOS header, before EOI).
    private func scanData(_ jpeg: [UInt8]) -> Range<Int> {
        let sos = (0..<jpeg.count - 1).first { jpeg[$0] == 0xFF && jpeg[$0 + 1] == 0xDA }!
        let headerLength = Int(jpeg[sos + 2]) << 8 | Int(jpeg[sos + 3])
        return sos + 2 + headerLength..<jpeg.count - 2
    }

    // MARK: - Not an image

    func testEmptyInputThrowsUnknownFormat() {
        XCTAssertEqual(assertDecodeFails([], decoder, "empty array")?.reason, .unknownFormat)
        XCTAssertThrowsError(try decoder.decode(UnsafeRawBufferPointer(start: nil, count: 0))) { error in
            XCTAssertEqual((error as? ImageDecodingError)?.reason, .unknownFormat)
        }
    }

    func testRandomBytesThrow() {
        var random = TestRandom(seed: 99)
        let jpegMagic: [UInt8] = [0xFF, 0xD8, 0xFF]
        let pngMagic: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        for i in 0..<300 {
            let body = random.bytes(random.below(400))
            assertDecodeFails(body, decoder, "random bytes #\(i)")
            XCTAssertEqual(assertDecodeFails(jpegMagic + body, decoder, "JPEG magic + random #\(i)")?.reason, .corruptJPEG)
            XCTAssertEqual(assertDecodeFails(pngMagic + body, decoder, "PNG signature + random #\(i)")?.reason, .corruptPNG)
        }
    }

    // MARK: - JPEG

    func testTruncatedJPEGThrowsInsteadOfReturningGrey() throws {
        let jpeg = try jpegSample()
        let scan = scanData(jpeg)
        let cut = scan.lowerBound + scan.count / 2
        let error = assertDecodeFails(Array(jpeg[..<cut]), decoder, "JPEG cut in the middle of its scan data")
        XCTAssertEqual(error?.reason, .corruptJPEG)
        XCTAssertTrue(error?.message.contains("Premature end of JPEG file") ?? false, "\(String(describing: error))")
    }

    func testEveryTruncationOfAJPEGThrows() throws {
        let jpeg = try jpegSample(width: 16, height: 16)
        for length in 0..<jpeg.count {
            assertDecodeFails(Array(jpeg[..<length]), decoder, "JPEG cut to \(length) of \(jpeg.count) bytes")
        }
        // The same decoder must still read a valid file: a TurboJPEG handle left mid-header by a
        // failed call used to fail the next image with "Bogus DQT index".
        XCTAssertNoThrow(try decoder.decode(jpeg))
    }

    /// Two kinds of damage to the entropy-coded data that libjpeg reports only as warnings: bytes cut
    /// out (the scan ends early: "premature end of data segment"), and garbage holding a marker-like
    /// 0xFF pair. Garbage without one can be undetectable: Huffman decoding resynchronises and
    /// yields a locally damaged but well-formed image, so that case is only required not to crash
    /// (see `testRandomlyMutatedFilesNeverCrash`); catching it needs a record checksum.
    func testJPEGWithGarbageInTheMiddleThrows() throws {
        let jpeg = try jpegSample()
        let scan = scanData(jpeg)
        var random = TestRandom(seed: 5)
        for trial in 0..<40 {
            var damaged = jpeg
            let start = scan.lowerBound + scan.count / 4 + random.below(scan.count / 2)
            if trial % 2 == 0 {
                damaged.removeSubrange(start..<start + 48)
            } else {
                var garbage = random.bytes(48)
                let marker = random.below(47)
                garbage[marker] = 0xFF
                garbage[marker + 1] = UInt8(1 + random.below(254))
                damaged.replaceSubrange(start..<start + 48, with: garbage)
            }
            let what = trial % 2 == 0 ? "JPEG with 48 scan bytes removed at \(start)" : "JPEG with garbage at \(start)"
            XCTAssertEqual(assertDecodeFails(damaged, decoder, what)?.reason, .corruptJPEG, what)
        }
    }

    // MARK: - PNG

    func testPNGWithBadCRCThrows() throws {
        let png = try ImageFixtures.bytes("rgb8.png")
        for type in ["IHDR", "IDAT", "IEND"] {
            let chunk = PNGBytes.firstChunk(png, type)
            var damaged = png
            damaged[chunk.dataOffset + chunk.length] ^= 0x01  // first CRC byte
            let error = assertDecodeFails(damaged, decoder, "bad \(type) CRC")
            XCTAssertEqual(error?.reason, .corruptPNG)
            XCTAssertTrue(error?.message.contains("\(type) has a bad CRC") ?? false, "\(String(describing: error))")
        }
        var damagedData = png
        damagedData[PNGBytes.firstChunk(png, "IDAT").dataOffset + 10] ^= 0x40
        XCTAssertTrue(assertDecodeFails(damagedData, decoder, "IDAT data damaged")?.message.contains("CRC") ?? false)
    }

    func testEveryTruncationOfAPNGThrows() throws {
        for png in [try ImageFixtures.bytes("rgb8.png"), try ImageFixtures.bytes("interlaced_rgb8.png"),
                    encodePNG(smoothImage(width: 9, height: 7, seed: 1), width: 9, height: 7)] {
            for length in 0..<png.count {
                assertDecodeFails(Array(png[..<length]), decoder, "PNG cut to \(length) of \(png.count) bytes")
            }
            XCTAssertNoThrow(try decoder.decode(png))
        }
    }

    func testDamagedZlibStreamThrowsAdlerMismatch() throws {
        // Stored blocks: a changed pixel byte leaves the stream well-formed, so only Adler-32 can tell.
        let width = 9, height = 7
        let encoded = encodePNG(smoothImage(width: width, height: height, seed: 2), width: width, height: height)
        // Dynamic Huffman: damage the stored Adler-32 itself.
        let dynamic = try ImageFixtures.bytes("rgb8.png")
        let dynamicIDAT = PNGBytes.firstChunk(dynamic, "IDAT")
        for (png, position) in [(encoded, PNGBytes.firstChunk(encoded, "IDAT").dataOffset + 7 + 20),
                                (dynamic, dynamicIDAT.dataOffset + dynamicIDAT.length - 1)] {
            var damaged = png
            damaged[position] ^= 0x01
            PNGBytes.fixCRC(&damaged, PNGBytes.firstChunk(damaged, "IDAT"))
            let error = assertDecodeFails(damaged, decoder, "damaged zlib stream")
            XCTAssertEqual(error?.reason, .corruptPNG)
            XCTAssertTrue(error?.message.contains("Adler-32 mismatch") ?? false, "\(String(describing: error))")
        }
    }

    /// Any single-byte change in a Huffman-coded stream (chunk CRC repaired) must be caught:
    /// as an invalid code, a bad distance, a size mismatch or at the latest by Adler-32.
    func testEveryDamagedByteOfACompressedStreamThrows() throws {
        for name in ["rgb8.png", "long_codes.png", "gray8_fixed.png", "interlaced_rgb8.png"] {
            let png = try ImageFixtures.bytes(name)
            let idat = PNGBytes.firstChunk(png, "IDAT")
            for i in 0..<idat.length {
                var damaged = png
                // Bit 0 of the last deflate byte: its high bits may be padding after the final block.
                damaged[idat.dataOffset + i] ^= i == idat.length - 5 ? 1 : UInt8(1 << (i % 8))
                PNGBytes.fixCRC(&damaged, idat)
                assertDecodeFails(damaged, decoder, "\(name) with IDAT byte \(i) damaged")
            }
        }
    }

    func testInvalidPNGStructureThrows() throws {
        let rgbRow: [UInt8] = [0, 10, 20, 30, 40, 50, 60]  // filter None, two RGB pixels
        let palette = PNGBytes.chunk("PLTE", [255, 0, 0, 0, 255, 0])
        let cases: [(String, [UInt8], ImageDecodingError.Reason, String)] = [
            ("colour type 2 at 4 bits",
             PNGBytes.make(width: 2, height: 1, bitDepth: 4, colorType: 2, scanlines: [0, 0, 0, 0]),
             .corruptPNG, "bit depth 4"),
            ("colour type 5", PNGBytes.make(width: 2, height: 1, bitDepth: 8, colorType: 5, scanlines: rgbRow),
             .corruptPNG, "colour type 5"),
            ("zero width", PNGBytes.make(width: 0, height: 1, bitDepth: 8, colorType: 2, scanlines: [0]),
             .corruptPNG, "0×1"),
            ("filter type 5", PNGBytes.make(width: 2, height: 1, bitDepth: 8, colorType: 2, scanlines: [5] + rgbRow.dropFirst()),
             .corruptPNG, "filter type 5"),
            ("too few scanline bytes", PNGBytes.make(width: 2, height: 2, bitDepth: 8, colorType: 2, scanlines: rgbRow),
             .corruptPNG, "ends after 7 of 14 bytes"),
            ("too many scanline bytes", PNGBytes.make(width: 2, height: 1, bitDepth: 8, colorType: 2, scanlines: rgbRow + rgbRow),
             .corruptPNG, "more than the expected 7 bytes"),
            ("palette without PLTE", PNGBytes.make(width: 2, height: 1, bitDepth: 8, colorType: 3, scanlines: [0, 0, 1]),
             .corruptPNG, "without a PLTE"),
            ("palette index out of range",
             PNGBytes.make(width: 2, height: 1, bitDepth: 8, colorType: 3, scanlines: [0, 1, 2], before: [palette]),
             .corruptPNG, "palette index 2 is out of range"),
            ("no IEND", PNGBytes.make(width: 2, height: 1, bitDepth: 8, colorType: 2, scanlines: rgbRow, includeIEND: false),
             .corruptPNG, "no IEND"),
            ("unknown critical chunk",
             PNGBytes.make(width: 2, height: 1, bitDepth: 8, colorType: 2, scanlines: rgbRow, before: [PNGBytes.chunk("ABCD", [1])]),
             .unsupported, "ABCD"),
            ("over the pixel limit",
             PNGBytes.make(width: 100_000, height: 100_000, bitDepth: 8, colorType: 2, scanlines: rgbRow),
             .unsupported, "100000×100000"),
        ]
        for (what, png, reason, fragment) in cases {
            let error = assertDecodeFails(png, decoder, what)
            XCTAssertEqual(error?.reason, reason, what)
            XCTAssertTrue(error?.message.contains(fragment) ?? false, "\(what): \(String(describing: error))")
        }
        // The same construction with valid values decodes, so the failures above are the intended ones.
        let valid = try decoder.decode(PNGBytes.make(width: 2, height: 1, bitDepth: 8, colorType: 3,
                                                     scanlines: [0, 1, 0], before: [palette]))
        XCTAssertEqual(valid.bgr, [0, 255, 0, 0, 0, 255])
    }

    /// Random damage anywhere in valid files: the decoder may throw or (where only ancillary data or
    /// JPEG coefficients changed) return an image, but must not crash or return a malformed one.
    func testRandomlyMutatedFilesNeverCrash() throws {
        let samples = [try ImageFixtures.bytes("rgb8.png"), try ImageFixtures.bytes("interlaced_rgb8.png"),
                       try ImageFixtures.bytes("palette4.png"), try ImageFixtures.bytes("rgb420_progressive_q95.jpg"),
                       try jpegSample()]
        var random = TestRandom(seed: 1234)
        for trial in 0..<3000 {
            var bytes = samples[trial % samples.count]
            for _ in 0..<(1 + random.below(4)) {
                bytes[random.below(bytes.count)] = random.byte()
            }
            if let image = try? decoder.decode(bytes) {
                XCTAssertEqual(image.bgr.count, image.width * image.height * 3)
            }
        }
    }
}
