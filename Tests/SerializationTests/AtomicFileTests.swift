import Foundation
import Serialization
import XCTest

final class AtomicFileTests: SerializationTestCase {
    func testCreatesAndReplacesWithoutLeavingTemporaryFiles() throws {
        let target = path("checkpoint.bin")
        try AtomicFile.write([1, 2, 3], to: target)
        XCTAssertEqual(try readRaw(target), [1, 2, 3])
        try AtomicFile.write(pseudoRandomBytes(100_000, seed: 1), to: target)
        XCTAssertEqual(try readRaw(target), pseudoRandomBytes(100_000, seed: 1))
        try AtomicFile.write([], to: target)
        XCTAssertEqual(try readRaw(target), [])
        XCTAssertEqual(try directoryListing(), ["checkpoint.bin"])
    }

    func testRelativePathInTheCurrentDirectory() throws {
        let previous = FileManager.default.currentDirectoryPath
        XCTAssertTrue(FileManager.default.changeCurrentDirectoryPath(directory))
        defer { _ = FileManager.default.changeCurrentDirectoryPath(previous) }
        try AtomicFile.write([7], to: "relative.bin")
        XCTAssertEqual(try readRaw(path("relative.bin")), [7])
        XCTAssertEqual(try directoryListing(), ["relative.bin"])
    }

    func testMissingDirectoryFailsWithPath() throws {
        let target = path("no-such-dir/checkpoint.bin")
        assertSerializationError(try AtomicFile.write([1], to: target), kind: .io, source: target,
                                 mentioning: ["No such file or directory"])
        XCTAssertEqual(try directoryListing(), [])
    }

    func testFailedWriteKeepsThePreviousFileAndRemovesTheTemporary() throws {
        let target = path("checkpoint.bin")
        let original = pseudoRandomBytes(4096, seed: 2)
        try AtomicFile.write(original, to: target)

        // A file-size limit makes write(2) fail part-way with EFBIG, standing in for a full disk.
        let previousHandler = signal(SIGXFSZ, SIG_IGN)
        var limit = rlimit()
        XCTAssertEqual(getrlimit(Int32(RLIMIT_FSIZE.rawValue), &limit), 0)
        let saved = limit
        limit.rlim_cur = 64 * 1024
        XCTAssertEqual(setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limit), 0)
        var restore = saved
        defer {
            setrlimit(Int32(RLIMIT_FSIZE.rawValue), &restore)
            signal(SIGXFSZ, previousHandler)
        }

        assertSerializationError(try AtomicFile.write(pseudoRandomBytes(1 << 20, seed: 3), to: target), kind: .io,
                                 source: target, mentioning: ["write", "File too large"])
        XCTAssertEqual(try readRaw(target), original, "the old checkpoint survives")
        XCTAssertEqual(try directoryListing(), ["checkpoint.bin"], "the temporary file is removed")
    }

    func testRenameOntoADirectoryFailsCleanly() throws {
        let target = path("occupied")
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: false)
        assertSerializationError(try AtomicFile.write([1, 2], to: target), kind: .io, source: target,
                                 mentioning: ["rename"])
        XCTAssertEqual(try directoryListing(), ["occupied"])
        var isDirectory: ObjCBool = false
        XCTAssertTrue(FileManager.default.fileExists(atPath: target, isDirectory: &isDirectory) && isDirectory.boolValue)
    }

    func testKeepsThePermissionsOfTheReplacedFile() throws {
        let target = path("private.bin")
        try AtomicFile.write([1], to: target)
        XCTAssertEqual(chmod(target, 0o600), 0)
        try AtomicFile.write([2], to: target)
        let attributes = try FileManager.default.attributesOfItem(atPath: target)
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600)
        XCTAssertEqual(try readRaw(target), [2])
    }

    func testRejectsPathsWithoutAFileName() throws {
        let target = directory + "/"
        assertSerializationError(try AtomicFile.write([1], to: target), kind: .io, source: target,
                                 mentioning: ["not a file path"])
    }
}
