import Foundation
import Serialization
import XCTest

/// Gives each test a fresh scratch directory, removed afterwards.
class SerializationTestCase: XCTestCase {
    private(set) var directory = ""

    override func setUpWithError() throws {
        let pattern = FileManager.default.temporaryDirectory.appendingPathComponent("serialization-tests-XXXXXX").path
        var template = Array(pattern.utf8CString)
        let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        directory = try XCTUnwrap(created.map { String(cString: $0) })
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func path(_ name: String) -> String { directory + "/" + name }

    /// Names in the scratch directory, including hidden temporary files.
    func directoryListing() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
    }

    func writeRaw(_ bytes: [UInt8], to name: String) throws -> String {
        let file = path(name)
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        return file
    }

    func readRaw(_ file: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
    }
}

/// The committed fixtures, found next to this source file so Package.swift needs no resources.
let fixturesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path

/// Asserts that `body` throws a `SerializationError` of `kind` whose description names `source`
/// and contains every string in `mentioning`; returns the error for further checks.
@discardableResult
func assertSerializationError<T>(_ body: @autoclosure () throws -> T, kind: SerializationError.Kind? = nil,
                                 source: String, mentioning: [String] = [],
                                 file: StaticString = #filePath, line: UInt = #line) -> SerializationError? {
    do {
        _ = try body()
        XCTFail("expected a SerializationError naming \(source), but nothing was thrown", file: file, line: line)
        return nil
    } catch let error as SerializationError {
        if let kind { XCTAssertEqual(error.kind, kind, "\(error)", file: file, line: line) }
        XCTAssertEqual(error.source, source, file: file, line: line)
        XCTAssertTrue(error.description.hasPrefix(source + ": "), "\(error)", file: file, line: line)
        for text in mentioning {
            XCTAssertTrue(error.description.contains(text), "\"\(error)\" does not mention \"\(text)\"", file: file, line: line)
        }
        return error
    } catch {
        XCTFail("expected a SerializationError, got \(error)", file: file, line: line)
        return nil
    }
}

/// A safetensors file with a hand-written header, for damage tests.
func safetensorsBytes(header: String, data: [UInt8]) -> [UInt8] {
    let json = Array(header.utf8)
    var bytes = withUnsafeBytes(of: UInt64(json.count).littleEndian) { Array($0) }
    bytes += json
    bytes += data
    return bytes
}

/// Deterministic pseudo-random bytes (SplitMix64) so failures reproduce.
func pseudoRandomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return UInt8(truncatingIfNeeded: z ^ (z >> 31))
    }
}
