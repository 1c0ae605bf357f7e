import Foundation
import Serialization
import XCTest

/// Every damaged input must throw (never crash or return garbage) with the file named in the message.
final class SafeTensorsDamageTests: SerializationTestCase {
    private func sampleWriter() -> SafeTensorsWriter {
        var writer = SafeTensorsWriter()
        writer.metadata["step"] = "7"
        writer.add("weight", shape: [2, 3], floats: [1, 2, 3, 4, 5, 6])
        writer.add("empty", shape: [0], floats: [])
        writer.add("labels", shape: [2], int64s: [1, 2])
        writer.add("half", shape: [3], floats: [1, 2, 3], storedAs: .bf16)
        return writer
    }

    private var sample: [UInt8] { sampleWriter().encoded() }

    private var sampleHeaderLength: Int {
        Int(sample[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
    }

    func testEveryTruncationIsReported() throws {
        let bytes = sample
        for length in 0..<bytes.count {
            let source = "truncated-at-\(length).safetensors"
            let error = assertSerializationError(try SafeTensorsFile(bytes: Array(bytes.prefix(length)), source: source),
                                                 source: source)
            if length < 8 {
                XCTAssertEqual(error?.kind, .truncated)
                XCTAssertTrue(error?.message.contains("shorter than the 8-byte header length") ?? false)
            }
        }
        // Through real files too, at the characteristic points.
        for length in [0, 5, 8, 9, 8 + sampleHeaderLength / 2, 8 + sampleHeaderLength, bytes.count - 1] {
            let file = try writeRaw(Array(bytes.prefix(length)), to: "cut-\(length).safetensors")
            assertSerializationError(try SafeTensorsFile.read(path: file), source: file)
        }
        let dataCut = try writeRaw(Array(bytes.dropLast(3)), to: "data-cut.safetensors")
        assertSerializationError(try SafeTensorsFile.read(path: dataCut), kind: .truncated, source: dataCut,
                                 mentioning: ["half", "extend beyond", "truncated"])
    }

    func testEveryFlippedHeaderByteIsReported() throws {
        // Inverting an ASCII byte gives a byte >= 0x80: invalid JSON outside strings, invalid UTF-8 inside.
        let bytes = sample
        for offset in 8..<(8 + sampleHeaderLength) {
            var damaged = bytes
            damaged[offset] ^= 0xFF
            let file = "flip-\(offset).safetensors"
            assertSerializationError(try SafeTensorsFile(bytes: damaged, source: file), kind: .malformedHeader, source: file)
        }
        let file = try writeRaw({ var d = bytes; d[20] ^= 0xFF; return d }(), to: "flipped.safetensors")
        assertSerializationError(try SafeTensorsFile.read(path: file), kind: .malformedHeader, source: file,
                                 mentioning: ["not valid JSON"])
    }

    func testLyingHeaderLength() throws {
        var bytes = sample
        let size = bytes.count
        bytes.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(size).littleEndian, as: UInt64.self) }
        let tooLong = try writeRaw(bytes, to: "long-header.safetensors")
        assertSerializationError(try SafeTensorsFile.read(path: tooLong), kind: .truncated, source: tooLong,
                                 mentioning: ["header length \(size) exceeds"])

        bytes.withUnsafeMutableBytes { $0.storeBytes(of: UInt64.max, as: UInt64.self) }
        assertSerializationError(try SafeTensorsFile(bytes: bytes, source: "max"), kind: .truncated, source: "max")

        bytes.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(sampleHeaderLength - 16).littleEndian, as: UInt64.self) }
        assertSerializationError(try SafeTensorsFile(bytes: bytes, source: "short"), kind: .malformedHeader, source: "short")

        bytes.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(0), as: UInt64.self) }
        assertSerializationError(try SafeTensorsFile(bytes: bytes, source: "zero"), kind: .malformedHeader, source: "zero",
                                 mentioning: ["'{'"])
    }

    func testHeaderThatIsNotAJSONObject() throws {
        let cases: [(String, String)] = [
            ("[1, 2]", "does not start with '{'"),
            ("{\"a\": 1", "not valid JSON"),
            ("{\"a\": {}} trailing", "not valid JSON"),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{}}", "duplicate key"),
            ("{\"a\": 5}", "not an object"),
            ("{\"__metadata__\": [\"x\"]}", "__metadata__"),
            ("{\"__metadata__\": {\"k\": 1}}", "not a string"),
            ("{\"a\":" + String(repeating: "[", count: 10_000), "nesting deeper"),
        ]
        for (header, expected) in cases {
            let file = try writeRaw(safetensorsBytes(header: header, data: []), to: "bad.safetensors")
            assertSerializationError(try SafeTensorsFile.read(path: file), kind: .malformedHeader, source: file,
                                     mentioning: [expected])
        }
    }

    func testInvalidTensorEntries() throws {
        let four = [UInt8](repeating: 0, count: 4)
        let cases: [(String, [UInt8], SerializationError.Kind, [String])] = [
            ("{\"t\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", four, .unsupported, ["\"t\"", "F8_E4M3"]),
            ("{\"t\":{\"dtype\":\"X99\",\"shape\":[1],\"data_offsets\":[0,4]}}", four, .unsupported, ["X99"]),
            ("{\"t\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", four, .malformedHeader, ["dtype"]),
            ("{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", four, .malformedHeader, ["no \"dtype\""]),
            ("{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", four, .malformedHeader, ["no \"shape\""]),
            ("{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", four, .malformedHeader, ["no \"data_offsets\""]),
            ("{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", four, .malformedHeader, ["shape"]),
            ("{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", four, .malformedHeader, ["shape"]),
            ("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", four, .malformedHeader, ["begin <= end"]),
            ("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", four, .malformedHeader, ["data_offsets"]),
            ("{\"t\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,4]}}", four, .malformedHeader,
             ["shape [2, 3] of F32", "spanning 4 bytes"]),
            ("{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,4]}}", four,
             .malformedHeader, ["does not match"]),
            ("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999999]}}", four,
             .malformedHeader, ["data_offsets"]),
            // Layout: overlap, gap, beyond the data, trailing bytes.
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
             [UInt8](repeating: 0, count: 8), .malformedHeader, ["overlap", "\"a\""]),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
             [UInt8](repeating: 0, count: 8), .malformedHeader, ["gap"]),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", four, .truncated, ["beyond the 4-byte data section"]),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
             [UInt8](repeating: 0, count: 12), .malformedHeader, ["trailing data"]),
        ]
        for (header, data, kind, expected) in cases {
            let file = try writeRaw(safetensorsBytes(header: header, data: data), to: "entry.safetensors")
            assertSerializationError(try SafeTensorsFile.read(path: file), kind: kind, source: file, mentioning: expected)
        }
    }

    func testUnknownFieldsAndNullMetadataAreAccepted() throws {
        // Other writers may add fields; the Rust reference ignores them, and so does this reader.
        let header = "{\"__metadata__\":null,\"t\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":[true,null]}}"
        let read = try SafeTensorsFile(bytes: safetensorsBytes(header: header, data: [9, 0, 0, 0]), source: "extra")
        XCTAssertEqual(try read.int64s("t"), [9])
        XCTAssertEqual(read.metadata, [:])
    }

    func testCorruptZstdFrameIsReported() throws {
        let file = path("packed.safetensors")
        try sampleWriter().write(to: file, compression: .zstd(level: 3))
        let packed = try readRaw(file)
        XCTAssertNoThrow(try SafeTensorsFile.read(path: file))

        // The last four bytes are the content checksum.
        var badChecksum = packed
        badChecksum[packed.count - 2] ^= 0x01
        let checksumFile = try writeRaw(badChecksum, to: "bad-checksum.safetensors")
        assertSerializationError(try SafeTensorsFile.read(path: checksumFile), kind: .corruptCompression,
                                 source: checksumFile, mentioning: ["checksum"])

        // Any single flipped byte after the magic number must be caught by zstd or by its checksum.
        for offset in 4..<packed.count {
            var damaged = packed
            damaged[offset] ^= 0x5A
            let damagedFile = try writeRaw(damaged, to: "flip-\(offset).safetensors")
            assertSerializationError(try SafeTensorsFile.read(path: damagedFile), source: damagedFile)
        }

        for length in [4, 8, packed.count / 2, packed.count - 1] {
            let cut = try writeRaw(Array(packed.prefix(length)), to: "cut-\(length).safetensors.zst")
            assertSerializationError(try SafeTensorsFile.read(path: cut), source: cut)
        }
    }

    func testMissingFileAndDirectoryAreIOErrors() throws {
        let missing = path("does-not-exist.safetensors")
        assertSerializationError(try SafeTensorsFile.read(path: missing), kind: .io, source: missing,
                                 mentioning: ["No such file or directory"])
        assertSerializationError(try SafeTensorsFile.read(path: directory), kind: .io, source: directory,
                                 mentioning: ["directory"])
    }
}
