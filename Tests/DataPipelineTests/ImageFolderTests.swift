// Image folder sets: class ids from sorted identity names, image order, ignored entries, empty
// folders, unreadable files, and inspection of a folder set.
import DataPipeline
import Foundation
import Glibc
import XCTest

final class ImageFolderTests: XCTestCase {
    private var root: String!

    override func setUpWithError() throws { root = try DataSetTesting.makeDirectory("imagefolder") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: root) }

    private func add(_ relative: String, _ bytes: [UInt8]) throws {
        let path = root + "/" + relative
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        try DataSetTesting.write(bytes, path)
    }

    func testClassesFollowSortedIdentityNamesAndImagesSortByName() throws {
        try add("m.0b/b.png", DataSetTesting.image(1, png: true))
        try add("m.0b/a.JPEG", DataSetTesting.image(2))
        try add("Zed/1.jpg", DataSetTesting.image(3))
        try add("m.0a/10.jpg", DataSetTesting.image(4))
        try add("m.0a/9.jpg", DataSetTesting.image(5))
        let set = try ImageFolderDataSet(root: root + "/", threads: 2)
        // Byte order: uppercase before lowercase, "10" before "9".
        XCTAssertEqual(set.identities, ["Zed", "m.0a", "m.0b"])
        XCTAssertEqual(set.count, 5)
        XCTAssertEqual(set.classCount, 3)
        XCTAssertEqual((0..<5).map { set.relativePath(of: $0) },
                       ["Zed/1.jpg", "m.0a/10.jpg", "m.0a/9.jpg", "m.0b/a.JPEG", "m.0b/b.png"])
        XCTAssertEqual(try (0..<5).map { try set.label(of: $0) }, [0, 1, 1, 2, 2])
        XCTAssertEqual(set.samples(ofClass: 1), 1..<3)
        DataSetTesting.assertSameBytes(try DataSetTesting.bytes(set, 4), try DataSetTesting.image(1, png: true))
        XCTAssertEqual(set.ignoredCount, 0)
        DataSetTesting.assertFails(.indexOutOfRange, "index past the end") { try set.label(of: 5) }
    }

    func testNonImageEntriesAreIgnoredAndCounted() throws {
        try add("alice/1.jpg", DataSetTesting.image(1))
        try add("alice/notes.txt", Array("hello".utf8))
        try add("alice/.hidden.jpg", DataSetTesting.image(2))
        try add("alice/nested/2.jpg", DataSetTesting.image(3))
        try add("bob/1.png", DataSetTesting.image(4, png: true))
        try add("README.md", Array("about".utf8))
        try FileManager.default.createDirectory(atPath: root + "/carol", withIntermediateDirectories: true)
        let set = try ImageFolderDataSet(root: root)
        XCTAssertEqual(set.identities, ["alice", "bob"])
        XCTAssertEqual(set.count, 2)
        XCTAssertEqual(set.ignoredCount, 4)
        XCTAssertEqual(Set(set.ignoredExamples), ["README.md", "alice/notes.txt", "alice/.hidden.jpg", "alice/nested"])
        XCTAssertEqual(set.emptyIdentities, ["carol"])
    }

    func testEmptyFoldersAreSetLevelErrors() throws {
        DataSetTesting.assertFails(.emptyDataSet, mentioning: root, "empty root") { try ImageFolderDataSet(root: root) }
        try add("stray.jpg", DataSetTesting.image(1))
        DataSetTesting.assertFails(.emptyDataSet, mentioning: root, "no identity folders") { try ImageFolderDataSet(root: root) }
        try add("alice/notes.txt", Array("hello".utf8))
        DataSetTesting.assertFails(.emptyDataSet, mentioning: root, "identities without images") {
            try ImageFolderDataSet(root: root)
        }
        DataSetTesting.assertFails(.unreadable, mentioning: root + "/missing", "missing root") {
            try ImageFolderDataSet(root: root + "/missing")
        }
    }

    func testFileRemovedAfterListingFailsThatSampleOnly() throws {
        try add("a/1.jpg", DataSetTesting.image(1))
        try add("a/2.jpg", DataSetTesting.image(2))
        let set = try ImageFolderDataSet(root: root)
        try FileManager.default.removeItem(atPath: root + "/a/1.jpg")
        DataSetTesting.assertFails(.unreadable, mentioning: "a/1.jpg", "removed file") { try DataSetTesting.bytes(set, 0) }
        DataSetTesting.assertSameBytes(try DataSetTesting.bytes(set, 1), try DataSetTesting.image(2))
    }

    func testAFifoOrADanglingLinkInPlaceOfAnImageIsUnreadableNotAHang() throws {
        try add("a/1.jpg", DataSetTesting.image(1))
        try add("a/3.jpg", DataSetTesting.image(3))
        // Opening a FIFO for reading would wait for a writer forever without O_NONBLOCK.
        XCTAssertEqual(mkfifo(root + "/a/2.jpg", 0o644), 0)
        try FileManager.default.createSymbolicLink(atPath: root + "/a/0.jpg", withDestinationPath: root + "/a/gone.jpg")
        let set = try ImageFolderDataSet(root: root)
        XCTAssertEqual(set.count, 4)
        DataSetTesting.assertFails(.unreadable, mentioning: "a/0.jpg", "dangling link") { try DataSetTesting.bytes(set, 0) }
        DataSetTesting.assertFails(.unreadable, mentioning: "a/2.jpg is not a regular file", "FIFO") { try DataSetTesting.bytes(set, 2) }
        DataSetTesting.assertSameBytes(try DataSetTesting.bytes(set, 3), try DataSetTesting.image(3))
        XCTAssertEqual(set.recordDescription(2), root + "/a/2.jpg")
    }

    func testInspectionOfAFolderSet() throws {
        // Images per identity: 1, 2, 4 → min 1, median 2, max 4; one truncated JPEG, one wrong size.
        try add("a/1.jpg", DataSetTesting.image(1))
        try add("b/1.jpg", DataSetTesting.image(2))
        try add("b/2.png", DataSetTesting.image(3, png: true, size: 16))
        for i in 1...4 {
            var image = try DataSetTesting.image(3 + i)
            if i == 3 { image.removeLast(image.count / 2) }
            try add("c/\(i).jpg", image)
        }
        try add("c/list.txt", Array("x".utf8))
        XCTAssertEqual(try DataSetInspection.detectFormat(root), .imageFolder)

        let quick = try DataSetInspection.inspect(root, threads: 2)
        XCTAssertEqual(quick.format, .imageFolder)
        XCTAssertEqual(quick.images, 7)
        XCTAssertEqual(quick.identities, 3)
        XCTAssertEqual(quick.imagesPerIdentity.min, 1)
        XCTAssertEqual(quick.imagesPerIdentity.median, 2)
        XCTAssertEqual(quick.imagesPerIdentity.max, 4)
        XCTAssertEqual(quick.ignoredFiles, 1)
        XCTAssertTrue(quick.badRecords.isEmpty)

        let full = try DataSetInspection.inspect(root, verify: true, threads: 2)
        XCTAssertEqual(full.badRecords.map(\.key), ["b/2.png", "c/3.jpg"])
        XCTAssertEqual(full.badRecords.map(\.reason), [.wrongSize, .undecodable])
        let json = try JSONSerialization.jsonObject(with: Data(full.json().utf8)) as! [String: Any]
        XCTAssertEqual(json["format"] as? String, "image-folder")
        XCTAssertEqual((json["bad_records"] as! [[String: Any]]).map { $0["key"] as? String }, ["b/2.png", "c/3.jpg"])
        XCTAssertEqual(json["bad_count"] as? Int, 2)
    }
}
