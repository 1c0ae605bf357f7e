import Foundation
import Serialization
import XCTest

final class SafeTensorsRoundTripTests: SerializationTestCase {
    /// Element bit patterns per dtype and their expected Float conversion.
    private let samples: [(TensorDType, [UInt64], [Float])] = [
        (.bool, [0, 1, 1], [0, 1, 1]),
        (.u8, [0, 7, 255], [0, 7, 255]),
        (.i8, [0x80, 0xFF, 0x7F], [-128, -1, 127]),
        (.u16, [0, 0xFFFF], [0, 65535]),
        (.i16, [0x8000, 0xFFFE, 0x7FFF], [-32768, -2, 32767]),
        (.f16, [0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00], [1, -2, 65504, 5.9604645e-08, .infinity]),
        (.bf16, [0x3FC0, 0xC010, 0x7F80, 0x0000], [1.5, -2.25, .infinity, 0]),
        (.u32, [0, 0xFFFF_FFFF], [0, 4_294_967_296]),   // nearest Float
        (.i32, [0xFFFF_FFFB, 0x7FFF_FFFF], [-5, 2_147_483_648]),
        (.f32, [UInt64(Float(3.5).bitPattern), UInt64(Float(-0.1).bitPattern)], [3.5, -0.1]),
        (.u64, [0, 1 << 40], [0, 1_099_511_627_776]),
        (.i64, [UInt64(bitPattern: -9), UInt64(bitPattern: Int64.max)], [-9, 9.223372e18]),
        (.f64, [Double(0.1).bitPattern, Double(-1e300).bitPattern], [0.1, -.infinity]),
    ]

    private func littleEndianBytes(_ patterns: [UInt64], size: Int) -> [UInt8] {
        patterns.flatMap { pattern in (0..<size).map { UInt8(truncatingIfNeeded: pattern >> (8 * $0)) } }
    }

    func testEveryDTypeRoundTripsBytesAndConvertsToFloat() throws {
        XCTAssertEqual(Set(samples.map(\.0)), Set(TensorDType.allCases), "every dtype has a sample")
        var writer = SafeTensorsWriter()
        for (dtype, patterns, _) in samples {
            writer.add(dtype.rawValue, dtype: dtype, shape: [patterns.count],
                       bytes: littleEndianBytes(patterns, size: dtype.byteSize))
        }
        let file = path("dtypes.safetensors")
        try writer.write(to: file)
        let read = try SafeTensorsFile.read(path: file)
        XCTAssertEqual(read.names, samples.map(\.0.rawValue))
        for (dtype, patterns, expected) in samples {
            let info = try XCTUnwrap(read.info(dtype.rawValue))
            XCTAssertEqual(info.dtype, dtype)
            XCTAssertEqual(info.shape, [patterns.count])
            XCTAssertEqual(try read.bytes(dtype.rawValue), littleEndianBytes(patterns, size: dtype.byteSize), "\(dtype)")
            XCTAssertEqual(try read.floats(dtype.rawValue), expected, "\(dtype)")
        }
    }

    func testIntegerTensorsReadAsInt64Exactly() throws {
        var writer = SafeTensorsWriter()
        let values: [Int64] = [.min, -1, 0, (1 << 53) + 1, .max]
        writer.add("labels", shape: [5], int64s: values)
        writer.add("small", dtype: .i16, shape: [2], bytes: [0x00, 0x80, 0xFF, 0x7F])
        writer.add("huge", dtype: .u64, shape: [1], bytes: [UInt8](repeating: 0xFF, count: 8))
        writer.add("weights", shape: [1], floats: [1.5])
        let read = try SafeTensorsFile(bytes: writer.encoded(), source: "ints")
        XCTAssertEqual(try read.int64s("labels"), values)
        XCTAssertEqual(try read.int64s("small"), [-32768, 32767])
        assertSerializationError(try read.int64s("huge"), kind: .mismatch, source: "ints", mentioning: ["huge", "U64"])
        assertSerializationError(try read.int64s("weights"), kind: .mismatch, source: "ints", mentioning: ["weights", "F32"])
    }

    func testFloatsStoredAsNarrowTypesRoundToNearestEven() throws {
        // Exact midpoints must round to the neighbour with an even last mantissa bit.
        let inputs: [Float] = [1, 1 + 1.0 / 256, 1 + 3.0 / 256, -3.0e38, .infinity, 1 + 1.0 / 2048, 1 + 3.0 / 2048]
        var writer = SafeTensorsWriter()
        writer.add("bf16", shape: [inputs.count], floats: inputs, storedAs: .bf16)
        writer.add("f16", shape: [inputs.count], floats: inputs, storedAs: .f16)
        writer.add("f64", shape: [inputs.count], floats: inputs, storedAs: .f64)
        writer.add("nan", shape: [1], floats: [.nan], storedAs: .bf16)
        let read = try SafeTensorsFile(bytes: writer.encoded(), source: "narrow")
        let bf16: [Float] = [1, 1, 1 + 4.0 / 256, -3.0040553e38, .infinity, 1, 1]
        let f16: [Float] = [1, 1 + 1.0 / 256, 1 + 3.0 / 256, -.infinity, .infinity, 1, 1 + 4.0 / 2048]
        XCTAssertEqual(try read.floats("bf16"), bf16)
        XCTAssertEqual(try read.floats("f16"), f16)
        XCTAssertEqual(try read.floats("f64"), inputs)
        XCTAssertEqual(read.info("bf16")?.dtype, .bf16)
        XCTAssertTrue(try read.floats("nan")[0].isNaN)
    }

    func testMetadataRoundTripsWithEscapesAndUnicode() throws {
        var writer = SafeTensorsWriter()
        writer.metadata = ["step": "1200", "quote\"key": "back\\slash", "ctrl": "tab\tnl\ncr\r\u{1}\u{1F}",
                           "unicode ✓": "ελληνικά 🚀", "empty": ""]
        writer.add("w", shape: [2], floats: [1, 2])
        let file = path("meta.safetensors")
        try writer.write(to: file)
        let read = try SafeTensorsFile.read(path: file)
        XCTAssertEqual(read.metadata, writer.metadata)

        var plain = SafeTensorsWriter()
        plain.add("w", shape: [1], floats: [1])
        XCTAssertFalse(String(decoding: plain.encoded(), as: UTF8.self).contains("__metadata__"),
                       "no metadata block when there is no metadata, as in Python")
        XCTAssertEqual(try SafeTensorsFile(bytes: plain.encoded(), source: "plain").metadata, [:])
    }

    func testScalarAndZeroSizeTensors() throws {
        var writer = SafeTensorsWriter()
        writer.add("before", shape: [0, 3], floats: [])
        writer.add("scalar", shape: [], floats: [42.5])
        writer.add("empty", shape: [5, 0], floats: [])
        writer.add("alsoEmpty", dtype: .i64, shape: [0], bytes: [])
        writer.add("after", shape: [2], int64s: [4, 5])
        let read = try SafeTensorsFile(bytes: writer.encoded(), source: "shapes")
        XCTAssertEqual(read.names, ["before", "scalar", "empty", "alsoEmpty", "after"])
        XCTAssertEqual(read.info("scalar")?.shape, [])
        XCTAssertEqual(read.info("scalar")?.elementCount, 1)
        XCTAssertEqual(try read.floats("scalar"), [42.5])
        XCTAssertEqual(read.info("empty")?.shape, [5, 0])
        XCTAssertEqual(read.info("empty")?.elementCount, 0)
        XCTAssertEqual(try read.floats("empty"), [])
        XCTAssertEqual(try read.floats("before"), [])
        XCTAssertEqual(try read.int64s("alsoEmpty"), [])
        XCTAssertEqual(try read.int64s("after"), [4, 5])
    }

    func testLayoutIsDeterministicPaddedAndInInsertionOrder() throws {
        func build() -> SafeTensorsWriter {
            var writer = SafeTensorsWriter()
            for (i, key) in ["z", "a", "m", "b", "y"].enumerated() { writer.metadata[key] = "\(i)" }
            writer.add("zeta", shape: [3], floats: [1, 2, 3], storedAs: .f16)
            writer.add("alpha", shape: [1], int64s: [7])
            writer.add("mid", dtype: .u8, shape: [1], bytes: [9])
            return writer
        }
        let bytes = build().encoded()
        XCTAssertEqual(bytes, build().encoded())
        let headerLength = Int(bytes[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        XCTAssertEqual(headerLength % 8, 0, "header padded so the data section is 8-byte aligned")
        XCTAssertEqual(bytes[8], UInt8(ascii: "{"))
        let header = String(decoding: bytes[8..<(8 + headerLength)], as: UTF8.self)
        XCTAssertTrue(header.trimmingCharacters(in: .whitespaces).hasSuffix("}"))
        XCTAssertEqual(bytes.count - 8 - headerLength, 6 + 8 + 1, "data is packed with no gaps")
        let read = try SafeTensorsFile(bytes: bytes, source: "order")
        XCTAssertEqual(read.names, ["zeta", "alpha", "mid"])
        XCTAssertEqual(read.info("alpha")?.dataOffsets, 6..<14)
    }

    func testZstdCompressedRoundTrip() throws {
        var writer = SafeTensorsWriter()
        let weights = (0..<100_000).map { Float($0 % 97) * 0.25 }
        writer.add("weights", shape: [1000, 100], floats: weights)
        writer.add("step", shape: [], int64s: [1200])
        writer.metadata["epoch"] = "3"
        let plain = path("plain.safetensors"), packed = path("packed.safetensors.zst")
        try writer.write(to: plain)
        try writer.write(to: packed, compression: .zstd(level: 3))

        let packedBytes = try readRaw(packed)
        XCTAssertEqual(Array(packedBytes.prefix(4)), [0x28, 0xB5, 0x2F, 0xFD], "a zstd frame")
        XCTAssertLessThan(packedBytes.count, try readRaw(plain).count / 4)
        XCTAssertEqual(try Zstd.decompress(packedBytes), try readRaw(plain), "the frame holds exactly the plain file")
        let read = try SafeTensorsFile.read(path: packed)
        XCTAssertEqual(try read.floats("weights"), weights)
        XCTAssertEqual(try read.int64s("step"), [1200])
        XCTAssertEqual(read.metadata, ["epoch": "3"])
        XCTAssertEqual(read.source, packed)

        let invalid = path("invalid-level.safetensors")
        assertSerializationError(try writer.write(to: invalid, compression: .zstd(level: 1000)),
                                 kind: .unsupported, source: invalid, mentioning: ["level 1000"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: invalid))
    }

    func testCopyFloatsFillsDestinationAndChecksCount() throws {
        var writer = SafeTensorsWriter()
        writer.add("bias", shape: [2, 2], floats: [1, 2, 3, 4], storedAs: .bf16)
        let file = path("copy.safetensors")
        try writer.write(to: file)
        let read = try SafeTensorsFile.read(path: file)
        var destination = [Float](repeating: 0, count: 4)
        try destination.withUnsafeMutableBufferPointer { try read.copyFloats("bias", into: $0) }
        XCTAssertEqual(destination, [1, 2, 3, 4])
        var wrong = [Float](repeating: -1, count: 3)
        _ = try wrong.withUnsafeMutableBufferPointer { buffer in
            assertSerializationError(try read.copyFloats("bias", into: buffer), kind: .mismatch, source: file,
                                     mentioning: ["bias", "4 elements", "holds 3"])
        }
        XCTAssertEqual(wrong, [-1, -1, -1], "nothing written on a count mismatch")
    }

    func testMissingTensorNamesKeyAndFile() throws {
        var writer = SafeTensorsWriter()
        writer.add("present", shape: [1], floats: [1])
        let file = path("missing.safetensors")
        try writer.write(to: file)
        let read = try SafeTensorsFile.read(path: file)
        XCTAssertTrue(read.contains("present"))
        XCTAssertFalse(read.contains("absent"))
        XCTAssertNil(read.info("absent"))
        assertSerializationError(try read.floats("absent"), kind: .missingTensor, source: file, mentioning: ["\"absent\""])
        assertSerializationError(try read.int64s("absent"), kind: .missingTensor, source: file, mentioning: ["absent"])
        assertSerializationError(try read.bytes("absent"), kind: .missingTensor, source: file, mentioning: ["absent"])
    }

    func testWithBytesExposesTheTensorBytesOnly() throws {
        var writer = SafeTensorsWriter()
        writer.add("a", dtype: .u8, shape: [3], bytes: [1, 2, 3])
        writer.add("b", dtype: .u8, shape: [2], bytes: [4, 5])
        let read = try SafeTensorsFile(bytes: writer.encoded(), source: "view")
        XCTAssertEqual(try read.withBytes("b") { Array($0) }, [4, 5])
        XCTAssertEqual(try read.withBytes("a") { $0.count }, 3)
    }
}
