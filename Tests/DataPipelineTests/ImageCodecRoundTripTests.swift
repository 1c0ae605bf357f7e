// Encoder → decoder round trips, channel order, and the fixed-size decode path.

import DataPipeline
import Dispatch
import Foundation
import XCTest

final class ImageCodecRoundTripTests: XCTestCase {
    func testPNGRoundTripIsExact() throws {
        let decoder = try ImageDecoder()
        // 200×150 spans two stored deflate blocks (over 65535 bytes of scanlines).
        for (width, height, seed) in [(37, 23, UInt64(1)), (1, 1, 2), (200, 150, 3)] {
            var random = TestRandom(seed: seed)
            let bgr = random.bytes(width * height * 3)
            let image = try decoder.decode(encodePNG(bgr, width: width, height: height))
            XCTAssertEqual(image.width, width)
            XCTAssertEqual(image.height, height)
            XCTAssertEqual(image.bgr, bgr, "\(width)×\(height)")
        }
    }

    func testJPEGQuality95IsClose() throws {
        let decoder = try ImageDecoder()
        let (width, height) = (64, 48)
        let bgr = smoothImage(width: width, height: height, seed: 7)
        let image = try decoder.decode(encodeJPEG(bgr, width: width, height: height, quality: 95))
        XCTAssertEqual(image.width, width)
        XCTAssertEqual(image.height, height)
        let error = meanAbsoluteError(image.bgr, bgr)
        XCTAssertLessThan(error, 2.0, "mean absolute error at quality 95")
        // A lower quality must be measurably worse, or the quality argument is not reaching TurboJPEG.
        let rough = try decoder.decode(encodeJPEG(bgr, width: width, height: height, quality: 20))
        XCTAssertGreaterThan(meanAbsoluteError(rough.bgr, bgr), error)
    }

    func testJPEGKeepsBGROrder() throws {
        let decoder = try ImageDecoder()
        for (b, g, r) in [(UInt8(255), UInt8(0), UInt8(0)), (0, 0, 255), (0, 255, 0)] {
            let image = try decoder.decode(encodeJPEG(solidImage(width: 16, height: 16, b: b, g: g, r: r),
                                                      width: 16, height: 16))
            for p in 0..<256 {
                let pixel = [image.bgr[3 * p], image.bgr[3 * p + 1], image.bgr[3 * p + 2]]
                for (channel, want) in zip(pixel, [b, g, r]) {
                    XCTAssertLessThanOrEqual(abs(Int(channel) - Int(want)), 12, "pixel \(p) is \(pixel), sent \([b, g, r])")
                }
            }
        }
    }

    func testJPEGRejectsQualityOutOfRange() {
        let bgr = solidImage(width: 8, height: 8, b: 1, g: 2, r: 3)
        for quality in [0, 101] {
            XCTAssertThrowsError(try encodeJPEG(bgr, width: 8, height: 8, quality: quality)) { error in
                XCTAssertTrue("\(error)".contains("\(quality)"), "\(error)")
            }
        }
    }

    func testDecodeIntoBufferMatchesDecode() throws {
        let decoder = try ImageDecoder()
        let bgr = smoothImage(width: 112, height: 112, seed: 11)
        for bytes in [encodePNG(bgr, width: 112, height: 112), try encodeJPEG(bgr, width: 112, height: 112)] {
            let expected = try decoder.decode(bytes)
            var output = [UInt8](repeating: 0, count: 112 * 112 * 3)
            try output.withUnsafeMutableBufferPointer { buffer in
                try bytes.withUnsafeBytes { try decoder.decode($0, into: buffer, expectedWidth: 112, expectedHeight: 112) }
            }
            XCTAssertEqual(output, expected.bgr)
        }
    }

    func testDecodeIntoRejectsWrongSizeNamingBothSizes() throws {
        let decoder = try ImageDecoder()
        let bgr = smoothImage(width: 120, height: 100, seed: 5)
        for bytes in [encodePNG(bgr, width: 120, height: 100), try encodeJPEG(bgr, width: 120, height: 100)] {
            var output = [UInt8](repeating: 0x5A, count: 112 * 112 * 3)
            XCTAssertThrowsError(try output.withUnsafeMutableBufferPointer { buffer in
                try bytes.withUnsafeBytes { try decoder.decode($0, into: buffer, expectedWidth: 112, expectedHeight: 112) }
            }) { error in
                let decodingError = error as? ImageDecodingError
                XCTAssertEqual(decodingError?.reason, .wrongSize)
                XCTAssertEqual("\(error)", "image is 120×100, expected 112×112")
            }
            XCTAssertTrue(output.allSatisfy { $0 == 0x5A }, "a wrong-size image must not be written")
        }
    }

    func testFormatDetection() {
        func detect(_ bytes: [UInt8]) -> ImageFormat? { bytes.withUnsafeBytes { ImageFormat.detect($0) } }
        XCTAssertEqual(detect(encodePNG([1, 2, 3], width: 1, height: 1)), .png)
        XCTAssertEqual(detect([0xFF, 0xD8, 0xFF, 0xE0]), .jpeg)
        XCTAssertNil(detect([]))
        XCTAssertNil(detect([0xFF, 0xD8]))
        XCTAssertNil(detect([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A]))
        XCTAssertNil(detect(Array("GIF89a".utf8)))
    }

    /// Encoders make a handle per call and decoders are per thread: running both on many threads
    /// at once must give the same bytes as running them on one.
    func testEncodersAndPerThreadDecodersRunConcurrently() throws {
        let bgr = smoothImage(width: 48, height: 40, seed: 3)
        let referenceJPEG = try encodeJPEG(bgr, width: 48, height: 40)
        let referenceImage = try ImageDecoder().decode(referenceJPEG)
        let lock = NSLock()
        var failures: [String] = []
        DispatchQueue.concurrentPerform(iterations: 16) { i in
            do {
                let decoder = try ImageDecoder()
                for _ in 0..<10 {
                    let jpeg = try encodeJPEG(bgr, width: 48, height: 40)
                    let png = encodePNG(bgr, width: 48, height: 40)
                    guard jpeg == referenceJPEG, try decoder.decode(jpeg) == referenceImage,
                          try decoder.decode(png).bgr == bgr else {
                        throw Mismatch(iteration: i)
                    }
                }
            } catch {
                lock.lock()
                failures.append("\(error)")
                lock.unlock()
            }
        }
        XCTAssertEqual(failures, [])
    }

    private struct Mismatch: Error {
        let iteration: Int
    }
}
