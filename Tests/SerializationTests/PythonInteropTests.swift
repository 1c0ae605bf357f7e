import Foundation
import Serialization
import XCTest

/// Reads the files written by Scripts/fixtures/make_safetensors_fixtures.py (Python `safetensors`,
/// numpy and the `zstd` command) and compares them with the values that script recorded.
final class PythonInteropTests: XCTestCase {
    private struct Expected: Decodable {
        struct Array: Decodable {
            let dtype: String?
            let descr: String?
            let shape: [Int]
            let values: [Double]
            /// The same values decoded as integers when they all are, exact beyond 2^53.
            let integers: [Int64]?

            enum CodingKeys: String, CodingKey { case dtype, descr, shape, values }

            init(from decoder: Decoder) throws {
                let container = try decoder.container(keyedBy: CodingKeys.self)
                dtype = try container.decodeIfPresent(String.self, forKey: .dtype)
                descr = try container.decodeIfPresent(String.self, forKey: .descr)
                shape = try container.decode([Int].self, forKey: .shape)
                values = try container.decode([Double].self, forKey: .values)
                integers = try? container.decode([Int64].self, forKey: .values)
            }
        }

        let metadata: [String: String]
        let tensors: [String: Array]
        let npy: [String: Array]
    }

    private func expected() throws -> Expected {
        let url = URL(fileURLWithPath: fixturesDirectory + "/python_written.json")
        return try JSONDecoder().decode(Expected.self, from: Data(contentsOf: url))
    }

    private func checkTensors(_ file: SafeTensorsFile, _ expected: Expected) throws {
        XCTAssertEqual(file.metadata, expected.metadata)
        XCTAssertEqual(Set(file.names), Set(expected.tensors.keys))
        XCTAssertEqual(expected.tensors.count, 12, "fixture lists every tensor")
        for (name, tensor) in expected.tensors {
            let info = try XCTUnwrap(file.info(name), name)
            XCTAssertEqual(info.dtype.rawValue, tensor.dtype, name)
            XCTAssertEqual(info.shape, tensor.shape, name)
            XCTAssertEqual(try file.floats(name), tensor.values.map { Float($0) }, name)
            if !info.dtype.isFloatingPoint {
                XCTAssertEqual(try file.int64s(name), try XCTUnwrap(tensor.integers), name)
            }
        }
        XCTAssertEqual(try file.int64s("i64_matrix")[3], (1 << 53) + 1, "exact beyond Double precision")
    }

    func testReadsSafetensorsWrittenByPython() throws {
        let path = fixturesDirectory + "/python_written.safetensors"
        try checkTensors(try SafeTensorsFile.read(path: path), try expected())
    }

    func testReadsZstdFrameWrittenByTheZstdCommand() throws {
        // The command read a pipe, so this frame has a checksum but no content size.
        let path = fixturesDirectory + "/python_written.safetensors.zst"
        let raw = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(raw[4] & 0xE4, 0x04, "checksum flag set, no content size, not single-segment")
        try checkTensors(try SafeTensorsFile.read(path: path), try expected())
    }

    func testRewrittenBySwiftReadsBackTheSame() throws {
        // Copy every tensor through the writer (raw bytes) and parse the result.
        let original = try SafeTensorsFile.read(path: fixturesDirectory + "/python_written.safetensors")
        var writer = SafeTensorsWriter()
        writer.metadata = original.metadata
        for tensor in original.tensors {
            writer.add(tensor.name, dtype: tensor.dtype, shape: tensor.shape, bytes: try original.bytes(tensor.name))
        }
        try checkTensors(try SafeTensorsFile(bytes: writer.encoded(), source: "rewritten"), try expected())
    }

    func testReadsNpyWrittenByNumpy() throws {
        let expected = try expected()
        XCTAssertEqual(expected.npy.count, 8, "fixture lists every array")
        for (kind, array) in expected.npy {
            let path = fixturesDirectory + "/python_written_\(kind).npy"
            let read = try NumpyFile.read(path: path)
            XCTAssertEqual(read.shape, array.shape, kind)
            XCTAssertEqual(read.floats, array.values.map { Float($0) }, kind)
            if let integers = array.integers, !(array.descr ?? "").contains("f") {
                let exact = try NumpyFile.readInt64s(path: path)
                XCTAssertEqual(exact.shape, array.shape, kind)
                XCTAssertEqual(exact.values, integers, kind)
            }
        }
    }
}
