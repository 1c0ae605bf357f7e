import Foundation
import Serialization
import XCTest

final class ChecksumTests: SerializationTestCase {
    func testKnownVectors() {
        XCTAssertEqual(Checksum.crc32c(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(Checksum.crc32c([]), 0)
        // RFC 3720 (iSCSI) appendix B.4.
        XCTAssertEqual(Checksum.crc32c([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
        XCTAssertEqual(Checksum.crc32c([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
        XCTAssertEqual(Checksum.crc32c((0..<32).map { UInt8($0) }), 0x46DD_794E)
        XCTAssertEqual(Checksum.crc32c((0..<32).reversed().map { UInt8($0) }), 0x113F_DB5C)
    }

    func testStreamingEqualsOneShotAtEverySplit() {
        let bytes = pseudoRandomBytes(300, seed: 11)
        let whole = Checksum.crc32c(bytes)
        for split in 0...bytes.count {
            let first = Checksum.crc32c(Array(bytes[..<split]))
            XCTAssertEqual(Checksum.crc32c(Array(bytes[split...]), seed: first), whole, "split at \(split)")
        }
        // Unaligned starts inside a larger buffer.
        bytes.withUnsafeBytes { raw in
            for offset in 1..<9 {
                let tail = UnsafeRawBufferPointer(rebasing: raw[offset...])
                XCTAssertEqual(Checksum.crc32c(tail), Checksum.crc32c(Array(bytes[offset...])))
            }
        }
    }

    func testFileChecksumStreamsAcrossChunks() throws {
        let bytes = pseudoRandomBytes((9 << 20) + 3, seed: 12)
        let file = try writeRaw(bytes, to: "big.bin")
        XCTAssertEqual(try Checksum.crc32c(fileAt: file), Checksum.crc32c(bytes))
        let empty = try writeRaw([], to: "empty.bin")
        XCTAssertEqual(try Checksum.crc32c(fileAt: empty), 0)
        let missing = path("missing.bin")
        assertSerializationError(try Checksum.crc32c(fileAt: missing), kind: .io, source: missing,
                                 mentioning: ["No such file or directory"])
    }
}
