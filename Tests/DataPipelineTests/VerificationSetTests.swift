// InsightFace .bin verification sets: every pickle form written by Scripts/reference/make_bin_fixtures.py
// loads with the right pairs and images; damaged or foreign pickles fail with a DataError that says why.

import DataPipeline
import Foundation
import XCTest

final class VerificationSetTests: XCTestCase {
    private static let directory = ImageFixtures.directory.appendingPathComponent("bin")
    private static let forms = ["py2_list", "py2_numpy", "py2_protocol0", "py3_protocol0", "py3_protocol1",
                                "py3_numpy_p2", "py3_list_p5", "py3_numpy_p5"]

    private func path(_ name: String) -> String { Self.directory.appendingPathComponent(name + ".bin").path }

    private func bytes(_ name: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path(name)))) }

    /// Pixel (x, y) of fixture image k, as the script draws it, in BGR.
    private func expectedImage(_ k: Int, side: Int = 112) -> [UInt8] {
        var bgr: [UInt8] = []
        for y in 0..<side {
            for x in 0..<side {
                bgr += [UInt8((x + y + 50 * k) % 256), UInt8((2 * y + 31 * k) % 256), UInt8((2 * x + 17 * k) % 256)]
            }
        }
        return bgr
    }

    private func assertFails(_ pickle: [UInt8], _ reason: DataError.Reason, _ fragments: [String],
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try VerificationSet(pickle: pickle, name: "probe.bin"), file: file, line: line) { error in
            guard let error = error as? DataError else {
                return XCTFail("not a DataError: \(error)", file: file, line: line)
            }
            XCTAssertEqual(error.reason, reason, error.message, file: file, line: line)
            for fragment in fragments {
                XCTAssertTrue(error.message.contains(fragment), "'\(error.message)' lacks '\(fragment)'", file: file, line: line)
            }
        }
    }

    // MARK: - The forms met in the wild

    func testEveryPickleFormLoadsWithItsPairsAndImages() throws {
        let decoder = try ImageDecoder()
        var pixels = [UInt8](repeating: 0, count: 112 * 112 * 3)
        var reference: [[UInt8]]?
        for form in Self.forms {
            let set = try VerificationSet.read(path: path(form))
            XCTAssertEqual(set.name, form)
            XCTAssertEqual(set.pairCount, 2, form)
            XCTAssertEqual(set.issame, [true, false], form)
            XCTAssertEqual(set.images.count, 4, form)
            // Bytes, Python 2 str and numpy uint8 arrays all give the same encoded images.
            if let reference { XCTAssertEqual(set.images, reference, form) } else { reference = set.images }
            for k in 0..<4 {
                try pixels.withUnsafeMutableBufferPointer { try set.decode(k, into: $0, using: decoder) }
                XCTAssertEqual(pixels, expectedImage(k), "\(form) image \(k)")
            }
        }
    }

    func testImageOfTheWrongSizeIsNamed() throws {
        let decoder = try ImageDecoder()
        let set = try VerificationSet.read(path: path("wrong_size"))
        XCTAssertEqual(set.pairCount, 1)
        var pixels = [UInt8](repeating: 0, count: 112 * 112 * 3)
        try pixels.withUnsafeMutableBufferPointer { try set.decode(0, into: $0, using: decoder) }
        XCTAssertThrowsError(try pixels.withUnsafeMutableBufferPointer { try set.decode(1, into: $0, using: decoder) }) { error in
            let error = error as? DataError
            XCTAssertEqual(error?.reason, .wrongSize)
            XCTAssertTrue(error?.message.contains("wrong_size image 1") ?? false, "\(String(describing: error))")
            XCTAssertTrue(error?.message.contains("8×8") ?? false, "\(String(describing: error))")
        }
    }

    // MARK: - Damage

    func testEveryTruncationIsReportedAsTruncated() throws {
        for form in ["py2_list", "py2_protocol0", "py3_numpy_p5", "py2_numpy"] {
            let whole = try bytes(form)
            for length in 0..<whole.count {
                assertFails(Array(whole[..<length]), .truncated, ["probe.bin"])
            }
        }
    }

    func testUnknownOpcodeIsNamedWithItsOffset() throws {
        var damaged = try bytes("py3_list_p5")
        XCTAssertEqual(Array(damaged[0..<3]), [0x80, 0x05, 0x95], "protocol 5 starts with PROTO and FRAME")
        damaged[11] = 0xFF  // the first opcode in the frame
        assertFails(damaged, .badFormat, ["opcode 0xff", "offset 11"])
    }

    func testForeignGlobalsAreRefusedByName() {
        // os.system('ls') through GLOBAL (protocol 2) and subprocess.call through STACK_GLOBAL (protocol 4).
        let viaGlobal: [UInt8] = [0x80, 2] + Array("cos\nsystem\n".utf8) + [0x55, 2] + Array("ls".utf8) + [0x85, 0x52, 0x2E]
        assertFails(viaGlobal, .badFormat, ["os.system"])
        let module = Array("subprocess".utf8), name = Array("call".utf8)
        let viaStack: [UInt8] = [0x80, 4, 0x8C, UInt8(module.count)] + module + [0x8C, UInt8(name.count)] + name + [0x93, 0x2E]
        assertFails(viaStack, .badFormat, ["subprocess.call"])
    }

    func testWrongShapesAreExplained() {
        let image: [UInt8] = [0x43, 3, 1, 2, 3]  // SHORT_BINBYTES b'\x01\x02\x03'
        // ([img, img, img], [True]): three images for one pair.
        let odd: [UInt8] = [0x80, 2, 0x5D, 0x28] + image + image + image + [0x65, 0x5D, 0x88, 0x61, 0x86, 0x2E]
        assertFails(odd, .badFormat, ["3 images for 1 pairs"])
        // A bare list instead of the (bins, issame) pair.
        assertFails([0x80, 2, 0x5D, 0x88, 0x61, 0x2E], .badFormat, ["(bins, issame_list)"])
        // issame holding a string.
        let text: [UInt8] = [0x80, 2, 0x5D, 0x28] + image + image + [0x65, 0x5D, 0x8C, 1, 0x78, 0x61, 0x86, 0x2E]
        assertFails(text, .badFormat, ["issame[0] is a str"])
        // APPENDS without a MARK, and a memo entry read before it is written.
        assertFails([0x80, 2, 0x5D, 0x65, 0x2E], .badFormat, ["MARK"])
        assertFails([0x80, 2, 0x68, 7, 0x2E], .badFormat, ["memo entry 7"])
    }

    func testMissingFileIsUnreadable() {
        let missing = path("missing")
        XCTAssertThrowsError(try VerificationSet.read(path: missing)) { error in
            XCTAssertEqual((error as? DataError)?.reason, .unreadable)
            XCTAssertTrue((error as? DataError)?.message.contains(missing) ?? false)
        }
    }

    func testRandomDamageNeverCrashes() throws {
        var random = TestRandom(seed: 31)
        for form in ["py2_numpy", "py2_protocol0", "py3_numpy_p2", "py3_numpy_p5"] {
            let whole = try bytes(form)
            for _ in 0..<400 {
                var damaged = whole
                for _ in 0..<1 + random.below(3) { damaged[random.below(damaged.count)] = random.byte() }
                do {
                    _ = try VerificationSet(pickle: damaged, name: form)
                } catch is DataError {
                    continue
                }
            }
        }
    }
}
