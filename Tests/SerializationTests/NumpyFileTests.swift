import Foundation
import Serialization
import XCTest

final class NumpyFileTests: SerializationTestCase {
    /// An .npy file with a hand-written header dict (version 1.0, padded like numpy).
    private func npyBytes(_ dict: String, data: [UInt8], version: UInt8 = 1) -> [UInt8] {
        var header = Array(dict.utf8)
        let prefix = version == 1 ? 10 : 12
        header += [UInt8](repeating: 0x20, count: (64 - (prefix + header.count + 1) % 64) % 64) + [0x0A]
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [version, 0]
        bytes += version == 1 ? [UInt8(header.count & 0xFF), UInt8(header.count >> 8)]
                              : [UInt8(header.count & 0xFF), UInt8(header.count >> 8), 0, 0]
        return bytes + header + data
    }

    func testFloatRoundTripAndHeaderLayout() throws {
        for shape in [[], [0], [3], [2, 3], [1, 1, 4]] as [[Int]] {
            let count = shape.reduce(1, *)
            let values = (0..<count).map { Float($0) * -1.5 + 0.25 }
            let file = path("array.npy")
            try NumpyFile.write(floats: values, shape: shape, to: file)
            let read = try NumpyFile.read(path: file)
            XCTAssertEqual(read.shape, shape)
            XCTAssertEqual(read.floats, values)

            let bytes = try readRaw(file)
            let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            XCTAssertEqual(Array(bytes[0..<8]), [0x93] + Array("NUMPY".utf8) + [1, 0])
            XCTAssertEqual((10 + headerLength) % 64, 0, "data starts 64-byte aligned")
            XCTAssertEqual(bytes[10 + headerLength - 1], 0x0A, "header ends with a newline")
            XCTAssertEqual(bytes.count, 10 + headerLength + 4 * count)
            let header = String(decoding: bytes[10..<(10 + headerLength)], as: UTF8.self)
            let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
            XCTAssertTrue(header.hasPrefix("{'descr': '<f4', 'fortran_order': False, 'shape': \(shapeText), }"), header)
        }
    }

    func testInt64RoundTrip() throws {
        let values: [Int64] = [.min, -1, 0, (1 << 53) + 1, .max, 42]
        let file = path("labels.npy")
        try NumpyFile.write(int64s: values, shape: [3, 2], to: file)
        let read = try NumpyFile.readInt64s(path: file)
        XCTAssertEqual(read.shape, [3, 2])
        XCTAssertEqual(read.values, values)
        XCTAssertEqual(try NumpyFile.read(path: file).floats[5], 42)
        XCTAssertEqual(String(decoding: try readRaw(file)[10..<31], as: UTF8.self), "{'descr': '<i8', 'for")
    }

    func testWriteChecksCountAgainstShape() throws {
        let file = path("bad.npy")
        assertSerializationError(try NumpyFile.write(floats: [1, 2, 3], shape: [2, 2], to: file), kind: .mismatch,
                                 source: file, mentioning: ["shape [2, 2]"])
        assertSerializationError(try NumpyFile.write(int64s: [1], shape: [-1], to: file), kind: .mismatch, source: file)
        XCTAssertFalse(FileManager.default.fileExists(atPath: file))
    }

    func testReadInt64sRejectsFloatArrays() throws {
        let file = path("floats.npy")
        try NumpyFile.write(floats: [1.5], shape: [1], to: file)
        assertSerializationError(try NumpyFile.readInt64s(path: file), kind: .mismatch, source: file, mentioning: ["<f4"])
    }

    func testAcceptsVariantHeaderSpellings() throws {
        let data: [UInt8] = [0, 0, 0x80, 0x3F, 0, 0, 0, 0x40]   // 1.0, 2.0 as '<f4'
        let dicts = [
            "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,)}",
            "{'shape': (2L,), 'fortran_order': False, 'descr': '<f4'}",
            "{ 'descr' : '=f4' , 'fortran_order' : False , 'shape' : ( 2 , ) , }",
        ]
        for dict in dicts {
            let file = try writeRaw(npyBytes(dict, data: data), to: "variant.npy")
            let read = try NumpyFile.read(path: file)
            XCTAssertEqual(read.shape, [2], dict)
            XCTAssertEqual(read.floats, [1, 2], dict)
        }
        let v2 = try writeRaw(npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", data: data, version: 2),
                              to: "v2.npy")
        XCTAssertEqual(try NumpyFile.read(path: v2).floats, [1, 2])
    }

    func testRejectsUnsupportedAndDamagedFiles() throws {
        let f4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
        let eight = [UInt8](repeating: 0, count: 8)
        let cases: [([UInt8], SerializationError.Kind, [String])] = [
            (npyBytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 1), }", data: eight), .unsupported, ["Fortran"]),
            (npyBytes("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", data: eight), .unsupported, ["big-endian"]),
            (npyBytes("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", data: eight), .unsupported, ["<c8"]),
            (npyBytes("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", data: eight), .unsupported, ["|O"]),
            (npyBytes("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", data: eight), .unsupported,
             ["structured"]),
            (npyBytes("{'descr': '<f4', 'shape': (2,), }", data: eight), .malformedHeader, ["fortran_order"]),
            (npyBytes("{'descr': '<f4', 'fortran_order': False}", data: eight), .malformedHeader, ["shape"]),
            (npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,) ", data: eight), .malformedHeader,
             ["Python dict"]),
            (npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", data: eight), .malformedHeader,
             ["integer"]),
            (npyBytes(f4, data: [0, 0, 0]), .truncated, ["needs 2 × 4 bytes"]),
            (npyBytes(f4, data: eight + [0]), .malformedHeader, ["1 unexpected bytes"]),
            (Array(npyBytes(f4, data: eight).prefix(40)), .truncated, ["header length"]),
            (Array("NUMPY".utf8) + eight, .malformedHeader, ["magic"]),
            ([0x93, 0x4E], .truncated, ["too short"]),
            ({ var b = npyBytes(f4, data: eight); b[6] = 9; return b }(), .unsupported, ["version 9.0"]),
        ]
        for (bytes, kind, expected) in cases {
            let file = try writeRaw(bytes, to: "damaged.npy")
            assertSerializationError(try NumpyFile.read(path: file), kind: kind, source: file, mentioning: expected)
        }
        let missing = path("missing.npy")
        assertSerializationError(try NumpyFile.read(path: missing), kind: .io, source: missing)
    }
}
