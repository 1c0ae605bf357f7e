// Decoding of PNG and JPEG files written by other encoders (Python zlib + struct, Pillow),
// compared with the expected BGR pixels stored beside each fixture.

import DataPipeline
import XCTest

final class ImageFixtureDecodingTests: XCTestCase {
    private var decoder: ImageDecoder!

    override func setUpWithError() throws {
        decoder = try ImageDecoder()
    }

    override func tearDown() {
        decoder = nil  // XCTest keeps test case instances alive; release the decoder's buffers
    }

    private func assertFixture(_ name: String, ext: String = "png", width: Int, height: Int, tolerance: Int = 0,
                               file: StaticString = #filePath, line: UInt = #line) throws {
        let bytes = try ImageFixtures.bytes("\(name).\(ext)")
        let expected = try ImageFixtures.bytes("\(name).bgr")
        let image = try decoder.decode(bytes)
        XCTAssertEqual(image.width, width, "\(name) width", file: file, line: line)
        XCTAssertEqual(image.height, height, "\(name) height", file: file, line: line)
        XCTAssertEqual(image.bgr.count, expected.count, "\(name) byte count", file: file, line: line)
        guard image.bgr.count == expected.count else { return }
        if let i = (0..<expected.count).first(where: { i in abs(Int(image.bgr[i]) - Int(expected[i])) > tolerance }) {
            let pixel = i / 3
            XCTFail("\(name): pixel (x \(pixel % width), y \(pixel / width)) channel \(i % 3) is \(image.bgr[i]), "
                    + "expected \(expected[i]) ± \(tolerance)", file: file, line: line)
        }
    }

    func testRGB8WithDynamicHuffmanAllFiltersAndLongMatches() throws {
        try assertFixture("rgb8", width: 16, height: 16)
    }

    func testPaethPredictorTieBreaking() throws {
        try assertFixture("paeth_ties", width: 12, height: 10)
    }

    func testRGBA8DropsAlpha() throws {
        try assertFixture("rgba8", width: 9, height: 7)
    }

    func testGray8WithFixedHuffmanBlock() throws {
        try assertFixture("gray8_fixed", width: 10, height: 6)
    }

    func testGrayAlpha8WithStoredBlock() throws {
        try assertFixture("graya8_stored", width: 7, height: 5)
    }

    func testPalette8IgnoresTransparencyChunk() throws {
        try assertFixture("palette8_trns", width: 11, height: 7)
    }

    func testPalette4Bit() throws {
        try assertFixture("palette4", width: 9, height: 5)
    }

    func testGrayLowBitDepthsScaleToFullRange() throws {
        try assertFixture("gray1", width: 11, height: 3)
        try assertFixture("gray2", width: 7, height: 3)
        try assertFixture("gray4", width: 5, height: 4)
    }

    func testSixteenBitTakesHighByte() throws {
        try assertFixture("rgb16", width: 7, height: 5)
        try assertFixture("rgba16", width: 5, height: 3)
        try assertFixture("gray16", width: 6, height: 4)
        try assertFixture("graya16", width: 4, height: 3)
    }

    func testAdam7Interlaced() throws {
        try assertFixture("interlaced_rgb8", width: 13, height: 11)
    }

    func testAdam7InterlacedWithEmptyPasses() throws {
        try assertFixture("interlaced_palette2", width: 3, height: 2)
    }

    func testSplitIDATChunksAndAncillaryChunks() throws {
        try assertFixture("multi_idat", width: 12, height: 9)
    }

    func testHuffmanCodesLongerThanTheLookupTable() throws {
        try assertFixture("long_codes", width: 20, height: 18)
    }

    func testPillowWrittenPNGs() throws {
        try assertFixture("pillow_rgb", width: 10, height: 8)
        try assertFixture("pillow_palette", width: 6, height: 6)
    }

    func testGrayscaleJPEGExpandsToEqualChannels() throws {
        try assertFixture("gray_q95", ext: "jpg", width: 12, height: 10, tolerance: 2)
        let image = try decoder.decode(try ImageFixtures.bytes("gray_q95.jpg"))
        for p in 0..<image.width * image.height {
            XCTAssertEqual(image.bgr[3 * p], image.bgr[3 * p + 1])
            XCTAssertEqual(image.bgr[3 * p], image.bgr[3 * p + 2])
        }
    }

    func testProgressiveSubsampledJPEGFromPillow() throws {
        try assertFixture("rgb420_progressive_q95", ext: "jpg", width: 16, height: 16, tolerance: 2)
    }

    /// One decoder reused over every fixture through the allocation-free path: stale scratch state
    /// (palette, Huffman tables, buffer sizes) from one image must not leak into the next.
    func testDecodeIntoMatchesDecodeAcrossReusedDecoder() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: ImageFixtures.directory.path)
            .filter { $0.hasSuffix(".png") || $0.hasSuffix(".jpg") }.sorted()
        XCTAssertGreaterThanOrEqual(names.count, 20)
        let reference = try ImageDecoder()
        for name in names + names.reversed() {
            let bytes = try ImageFixtures.bytes(name)
            let expected = try reference.decode(bytes)
            var output = [UInt8](repeating: 0xAB, count: expected.bgr.count)
            try output.withUnsafeMutableBufferPointer { buffer in
                try bytes.withUnsafeBytes {
                    try decoder.decode($0, into: buffer, expectedWidth: expected.width, expectedHeight: expected.height)
                }
            }
            XCTAssertEqual(output, expected.bgr, name)
        }
    }
}
