import Foundation
import Serialization
import XCTest

final class ZstdTests: XCTestCase {
    /// A frame without content size or checksum made of raw (stored) blocks, as a streaming
    /// producer that does not know the size in advance may emit.
    private func rawFrame(_ payload: [UInt8]) -> [UInt8] {
        // Frame header descriptor 0: no content size, no checksum, no dictionary, window descriptor follows.
        // Window descriptor 0x38: 2^(10+7) = 128 KiB, the largest block size.
        var frame: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x38]
        let blockSize = 1 << 17
        var start = 0
        repeat {
            let end = min(start + blockSize, payload.count)
            let last: UInt32 = end == payload.count ? 1 : 0
            let header = last | UInt32(end - start) << 3
            frame += [UInt8(header & 0xFF), UInt8(header >> 8 & 0xFF), UInt8(header >> 16 & 0xFF)]
            frame += payload[start..<end]
            start = end
        } while start < payload.count
        return frame
    }

    func testRoundTripVariousSizes() throws {
        for (count, seed) in [(0, 1), (1, 2), (1000, 3), (300_000, 4)] as [(Int, UInt64)] {
            let random = pseudoRandomBytes(count, seed: seed)
            XCTAssertEqual(try Zstd.decompress(Zstd.compress(random, level: 1)), random, "\(count) random bytes")
        }
        let repetitive = [UInt8]((0..<2_000_000).map { UInt8($0 % 13) })
        let packed = try Zstd.compress(repetitive, level: 19)
        XCTAssertLessThan(packed.count, 1000)
        XCTAssertEqual(try Zstd.decompress(packed), repetitive)
        XCTAssertEqual(try Zstd.decompress(Zstd.compress(repetitive, level: -5)), repetitive)
    }

    func testFramesDeclareContentSizeAndChecksum() throws {
        for count in [0, 10, 100_000] {
            let frame = try Zstd.compress(pseudoRandomBytes(count, seed: 9))
            XCTAssertTrue(frame.withUnsafeBytes(Zstd.isFrame))
            let descriptor = frame[4]
            XCTAssertNotEqual(descriptor & 0x04, 0, "content checksum flag")
            XCTAssertTrue(descriptor & 0xC0 != 0 || descriptor & 0x20 != 0, "content size present")
        }
    }

    func testFramesWithoutContentSizeAndConcatenatedFrames() throws {
        let payload = pseudoRandomBytes(300_000, seed: 5)
        XCTAssertEqual(try Zstd.decompress(rawFrame(payload)), payload, "grows past the initial buffer")
        XCTAssertEqual(try Zstd.decompress(rawFrame([])), [])
        let second = pseudoRandomBytes(777, seed: 6)
        XCTAssertEqual(try Zstd.decompress(try Zstd.compress(payload) + rawFrame(second)), payload + second)
    }

    func testDamagedInputNamesTheSource() throws {
        let frame = try Zstd.compress(pseudoRandomBytes(5000, seed: 7))
        assertSerializationError(try Zstd.decompress([], source: "empty.zst"), kind: .corruptCompression,
                                 source: "empty.zst", mentioning: ["magic"])
        assertSerializationError(try Zstd.decompress([1, 2, 3, 4, 5], source: "magic.zst"), kind: .corruptCompression,
                                 source: "magic.zst", mentioning: ["magic"])
        assertSerializationError(try Zstd.decompress(Array(frame.dropLast(10)), source: "cut.zst"), source: "cut.zst")
        assertSerializationError(try Zstd.decompress(Array(rawFrame([1, 2, 3]).dropLast(1)), source: "cut-raw.zst"),
                                 kind: .truncated, source: "cut-raw.zst", mentioning: ["truncated"])
        assertSerializationError(try Zstd.decompress(frame + [0, 1, 2, 3, 4, 5, 6, 7], source: "tail.zst"),
                                 kind: .corruptCompression, source: "tail.zst")
        var checksum = frame
        checksum[frame.count - 1] ^= 0x80
        assertSerializationError(try Zstd.decompress(checksum, source: "sum.zst"), kind: .corruptCompression,
                                 source: "sum.zst", mentioning: ["checksum"])
    }

    func testRejectsLevelsOutOfRange() throws {
        XCTAssertTrue(Zstd.levels.contains(1) && Zstd.levels.contains(19) && Zstd.levels.contains(-1))
        assertSerializationError(try Zstd.compress([1, 2, 3], level: Zstd.levels.upperBound + 1), kind: .unsupported,
                                 source: "zstd compression", mentioning: ["level"])
    }
}
