// RecordIO: writer/reader round trips (with and without header record, split payloads), the
// Python-written fixtures, damaged sets (each fault reported for its record only), packing an image
// folder, and inspection of a RecordIO set.
import DataPipeline
import Foundation
import XCTest

/// Helpers shared with ImageFolderTests.
enum DataSetTesting {
    static let magic: [UInt8] = [0x0A, 0x23, 0xD7, 0xCE]  // 0xced7230a, little-endian

    static func makeDirectory(_ prefix: String) throws -> String {
        let path = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A 112×112 solid-colour image, as JPEG or PNG.
    static func image(_ seed: Int, png: Bool = false, size: Int = 112) throws -> [UInt8] {
        let bgr = (0..<(size * size)).flatMap { _ in
            [UInt8(truncatingIfNeeded: 30 * seed), UInt8(truncatingIfNeeded: 100 + 7 * seed), UInt8(truncatingIfNeeded: 200 - 11 * seed)]
        }
        return try bgr.withUnsafeBufferPointer {
            png ? ImageEncoder.png(bgr: $0, width: size, height: size)
                : try ImageEncoder.jpeg(bgr: $0, width: size, height: size, quality: 90)
        }
    }

    static func write(_ bytes: [UInt8], _ path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    static func read(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    static func bytes(_ source: SampleSource, _ index: Int) throws -> [UInt8] {
        try source.withEncodedImage(index) { Array($0) }
    }

    /// Compares byte arrays without printing them (images are thousands of bytes): the sizes and
    /// the first difference.
    static func assertSameBytes(_ actual: @autoclosure () throws -> [UInt8], _ expected: [UInt8], _ what: String = "",
                                file: StaticString = #filePath, line: UInt = #line) {
        do {
            let bytes = try actual()
            guard bytes != expected else { return }
            let first = zip(bytes, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset
                ?? min(bytes.count, expected.count)
            XCTFail("\(what): \(bytes.count) bytes, expected \(expected.count); first difference at \(first)",
                    file: file, line: line)
        } catch {
            XCTFail("\(what): \(error)", file: file, line: line)
        }
    }

    /// Asserts that `body` throws a `DataError` with `reason` (and a message containing `mentioning`).
    static func assertFails<T>(_ reason: DataError.Reason, mentioning: String? = nil, _ what: String,
                               file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> T) {
        do {
            _ = try body()
            XCTFail("\(what): succeeded, expected \(reason)", file: file, line: line)
        } catch let error as DataError {
            XCTAssertEqual(error.reason, reason, "\(what): \(error.message)", file: file, line: line)
            if let mentioning {
                XCTAssertTrue(error.message.contains(mentioning), "\(what): '\(error.message)' does not mention \(mentioning)",
                              file: file, line: line)
            }
        } catch {
            XCTFail("\(what): unexpected error \(error)", file: file, line: line)
        }
    }
}

/// Reads the raw framing of a .rec file, independently of the reader under test.
private struct RawRecord {
    let flags: [UInt32]
    let lengths: [Int]
    let joined: [UInt8]

    init(_ rec: [UInt8], at start: Int) {
        func word(_ i: Int) -> UInt32 { UInt32(rec[i]) | UInt32(rec[i + 1]) << 8 | UInt32(rec[i + 2]) << 16 | UInt32(rec[i + 3]) << 24 }
        var flags: [UInt32] = [], lengths: [Int] = [], joined: [UInt8] = []
        var offset = start
        while true {
            precondition(word(offset) == 0xCED7_230A, "no magic at \(offset)")
            let lrec = word(offset + 4)
            let length = Int(lrec & ((1 << 29) - 1))
            flags.append(lrec >> 29)
            lengths.append(length)
            joined += rec[offset + 8..<offset + 8 + length]
            offset += 8 + (length + 3) / 4 * 4
            if lrec >> 29 == 0 || lrec >> 29 == 3 { break }
            joined += DataSetTesting.magic
        }
        self.flags = flags; self.lengths = lengths; self.joined = joined
    }

    var floats: [Float] {
        stride(from: 24, to: joined.count, by: 4).map { i in
            Float(bitPattern: UInt32(joined[i]) | UInt32(joined[i + 1]) << 8 | UInt32(joined[i + 2]) << 16 | UInt32(joined[i + 3]) << 24)
        }
    }
}

private func parseIndex(_ path: String) throws -> [(key: Int, offset: Int)] {
    try String(decoding: DataSetTesting.read(path), as: UTF8.self).split(separator: "\n").map {
        let fields = $0.split(separator: "\t")
        return (Int(fields[0])!, Int(fields[1])!)
    }
}

final class RecordIOTests: XCTestCase {
    private var directory: String!
    private let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/recordio").path

    override func setUpWithError() throws { directory = try DataSetTesting.makeDirectory("recordio") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: directory) }

    /// Payloads holding the magic at 4-byte-aligned positions (the image starts at payload offset
    /// 24): at the image's start, twice in a row, and as its last 4 bytes.
    private func magicImage() -> [UInt8] {
        var bytes = (0..<200).map { UInt8(truncatingIfNeeded: $0 * 7 + 1) }
        bytes.replaceSubrange(0..<4, with: DataSetTesting.magic)
        bytes.replaceSubrange(100..<104, with: DataSetTesting.magic)
        bytes.replaceSubrange(104..<108, with: DataSetTesting.magic)
        bytes.replaceSubrange(196..<200, with: DataSetTesting.magic)
        // Unaligned occurrences are left alone by the writer.
        bytes.replaceSubrange(50..<54, with: DataSetTesting.magic)
        return bytes
    }

    // MARK: - Round trips

    func testRoundTripWithHeaderRecordAndSplitPayload() throws {
        let labels = [0, 0, 1, 1, 1, 2, 4]
        var images: [[UInt8]] = []
        for i in labels.indices { images.append(try (i == 3 ? magicImage() : DataSetTesting.image(i, png: i % 2 == 1))) }
        let writer = try RecordIOWriter(directory: directory)
        for (image, label) in zip(images, labels) {
            if label == 2 {
                try image.withUnsafeBytes { _ = try writer.append(image: $0, labels: [2, 0.5, -1]) }
            } else {
                try image.withUnsafeBytes { _ = try writer.append(image: $0, label: label) }
            }
        }
        XCTAssertEqual(writer.splitRecordCount, 1)
        try writer.finish(classCount: 5)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory).sorted(),
                       ["property", "train.idx", "train.rec"], "no temporary files are left")

        let set = try RecordIODataSet(path: directory)
        XCTAssertTrue(set.hasHeaderRecord)
        XCTAssertEqual(set.count, 7)
        XCTAssertEqual(set.classCount, 5)
        XCTAssertEqual(set.declaredClassCount, 5)
        XCTAssertEqual(set.declaredImageSize?.height, 112)
        for i in 0..<7 {
            XCTAssertEqual(set.key(of: i), i + 1)
            XCTAssertEqual(try set.label(of: i), labels[i])
            DataSetTesting.assertSameBytes(try DataSetTesting.bytes(set, i), images[i], "image \(i)")
        }
        XCTAssertEqual(try set.labels(of: 5), [2, 0.5, -1])
        XCTAssertEqual(try set.labels(of: 0), [0])

        // On disk: the header record (InsightFace layout), identity records, the split parts.
        let rec = try DataSetTesting.read(directory + "/train.rec")
        let index = try parseIndex(directory + "/train.idx")
        XCTAssertEqual(index.map(\.key), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
        XCTAssertEqual(index[0].offset, 0)
        XCTAssertEqual(RawRecord(rec, at: 0).floats, [8, 13])
        let ranges = (8...12).map { RawRecord(rec, at: index[$0].offset).floats }
        XCTAssertEqual(ranges, [[1, 3], [3, 6], [6, 7], [7, 7], [7, 8]])
        let split = RawRecord(rec, at: index[4].offset)
        XCTAssertEqual(split.flags, [1, 2, 2, 2, 3])
        XCTAssertEqual(split.lengths[2], 0, "adjacent magics leave an empty middle part")
        XCTAssertEqual(split.lengths.last, 0, "a payload ending with the magic leaves an empty last part")
        DataSetTesting.assertSameBytes(Array(split.joined.dropFirst(24)), images[3], "joined parts")
        for part in split.flags.indices.dropLast() { XCTAssertEqual(split.lengths[part] % 4, 0) }
    }

    func testRoundTripWithoutHeaderRecord() throws {
        let writer = try RecordIOWriter(directory: directory, headerRecord: false)
        let images = [magicImage(), try DataSetTesting.image(1), try DataSetTesting.image(2, png: true)]
        // Record 0 has a label array and an image: an image, not a header record.
        try images[0].withUnsafeBytes { XCTAssertEqual(try writer.append(image: $0, labels: [3, 1]), 0) }
        try images[1].withUnsafeBytes { XCTAssertEqual(try writer.append(image: $0, label: 1), 1) }
        try images[2].withUnsafeBytes { XCTAssertEqual(try writer.append(image: $0, label: 0), 2) }
        try writer.finish()
        try FileManager.default.removeItem(atPath: directory + "/property")

        let set = try RecordIODataSet(path: directory)
        XCTAssertFalse(set.hasHeaderRecord)
        XCTAssertNil(set.declaredClassCount)
        XCTAssertEqual(set.count, 3)
        XCTAssertEqual(set.classCount, 4, "largest label + 1 without a property file")
        XCTAssertEqual(try (0..<3).map { try set.label(of: $0) }, [3, 1, 0])
        for i in 0..<3 { DataSetTesting.assertSameBytes(try DataSetTesting.bytes(set, i), images[i], "image \(i)") }
        XCTAssertEqual(try set.labels(of: 0), [3, 1])
        XCTAssertEqual((0..<3).map { set.key(of: $0) }, [0, 1, 2])
    }

    func testCancelledWriterLeavesThePreviousSet() throws {
        let first = try RecordIOWriter(directory: directory)
        try DataSetTesting.image(1).withUnsafeBytes { _ = try first.append(image: $0, label: 0) }
        try first.finish()
        let second = try RecordIOWriter(directory: directory)
        try DataSetTesting.image(2).withUnsafeBytes { _ = try second.append(image: $0, label: 0) }
        try DataSetTesting.image(3).withUnsafeBytes { _ = try second.append(image: $0, label: 0) }
        second.cancel()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory).sorted(),
                       ["property", "train.idx", "train.rec"])
        XCTAssertEqual(try RecordIODataSet(path: directory).count, 1)
    }

    // MARK: - Python-written fixtures

    func testInsightFaceFixtureWithHeaderRecordWrittenLast() throws {
        let set = try RecordIODataSet(path: fixtures + "/insightface")
        XCTAssertTrue(set.hasHeaderRecord)
        XCTAssertEqual(set.count, 5)
        XCTAssertEqual(set.classCount, 3)
        XCTAssertEqual(set.declaredImageSize?.width, 112)
        XCTAssertEqual((0..<5).map { set.key(of: $0) }, [1, 2, 3, 4, 5])
        XCTAssertEqual(try (0..<5).map { try set.label(of: $0) }, [0, 0, 1, 2, 2])
        let preloaded = try RecordIODataSet(path: fixtures + "/insightface", preloadLabels: true)
        XCTAssertEqual(try (0..<5).map { try preloaded.label(of: $0) }, [0, 0, 1, 2, 2])

        let decoder = try ImageDecoder()
        let image = try set.withEncodedImage(0) { try decoder.decode($0) }
        XCTAssertEqual(image.width, 112)
        XCTAssertEqual(Array(image.bgr.prefix(3)), [40, 30, 200], "RGB (200, 30, 40) as BGR")
    }

    func testHeaderlessFixtureWithLabelArraysAndNoProperty() throws {
        for path in [fixtures + "/noheader", fixtures + "/noheader/train.rec"] {
            let set = try RecordIODataSet(path: path)
            XCTAssertFalse(set.hasHeaderRecord)
            XCTAssertNil(set.propertyPath)
            XCTAssertEqual(set.count, 4)
            XCTAssertEqual(set.classCount, 3)
            XCTAssertEqual(try (0..<4).map { try set.label(of: $0) }, [2, 0, 1, 2])
            XCTAssertEqual(try set.labels(of: 1), [0, 0.5, 0.25])
            XCTAssertEqual(try set.labels(of: 3), [2, 9])
            let image = try set.withEncodedImage(1) { try ImageDecoder().decode($0) }
            XCTAssertEqual(image.bgr, (0..<16).flatMap { _ in [60, 50, 40] as [UInt8] })
        }
    }

    func testMultiPartFixtureIsJoinedWithTheMagicBetweenParts() throws {
        let set = try RecordIODataSet(path: fixtures + "/split")
        XCTAssertEqual(set.count, 3)
        XCTAssertEqual(set.classCount, 2)
        DataSetTesting.assertSameBytes(try DataSetTesting.bytes(set, 1), try DataSetTesting.read(fixtures + "/split/image1.png"), "key 1")
        DataSetTesting.assertSameBytes(try DataSetTesting.bytes(set, 2), try DataSetTesting.read(fixtures + "/split/image2.bin"), "key 2")
        // Key 1's label sits after a cut inside the IRHeader itself.
        XCTAssertEqual(try (0..<3).map { try set.label(of: $0) }, [0, 1, 1])
        let decoder = try ImageDecoder()
        for i in 1...2 {
            let image = try set.withEncodedImage(i) { try decoder.decode($0) }
            XCTAssertEqual(image.width * image.height, 112 * 112, "record \(i)")
        }
    }

    // MARK: - Damaged sets

    /// Four JPEG records, labels 0 1 2 0, no header record unless asked.
    private func writeSet(headerRecord: Bool = false, labels: [Int] = [0, 1, 2, 0]) throws -> [[UInt8]] {
        let writer = try RecordIOWriter(directory: directory, headerRecord: headerRecord)
        var images: [[UInt8]] = []
        for (i, label) in labels.enumerated() {
            let image = try DataSetTesting.image(i)
            try image.withUnsafeBytes { _ = try writer.append(image: $0, label: label) }
            images.append(image)
        }
        try writer.finish()
        return images
    }

    private func editRecordFile(_ edit: (inout [UInt8]) -> Void) throws {
        var rec = try DataSetTesting.read(directory + "/train.rec")
        edit(&rec)
        try DataSetTesting.write(rec, directory + "/train.rec")
    }

    private func assertOthersRead(_ set: RecordIODataSet, except bad: Int, _ images: [[UInt8]], labels: [Int]) throws {
        for i in 0..<set.count where i != bad {
            XCTAssertEqual(try set.label(of: i), labels[i])
            DataSetTesting.assertSameBytes(try DataSetTesting.bytes(set, i), images[i])
        }
    }

    func testBadMagicFailsThatRecordOnly() throws {
        let images = try writeSet(headerRecord: true)
        let offset = try parseIndex(directory + "/train.idx").first { $0.key == 3 }!.offset
        try editRecordFile { $0[offset] ^= 0xFF }
        for preload in [false, true] {
            let set = try RecordIODataSet(path: directory, preloadLabels: preload)
            DataSetTesting.assertFails(.badMagic, mentioning: "key 3", "label") { try set.label(of: 2) }
            DataSetTesting.assertFails(.badMagic, mentioning: "key 3", "image") { try DataSetTesting.bytes(set, 2) }
            try assertOthersRead(set, except: 2, images, labels: [0, 1, 2, 0])
        }
    }

    func testTruncatedRecordFailsThatRecordOnly() throws {
        let images = try writeSet()
        let offset = try parseIndex(directory + "/train.idx").first { $0.key == 3 }!.offset
        try editRecordFile { $0.removeLast($0.count - offset - 100) }
        try FileManager.default.removeItem(atPath: directory + "/property")  // the label scan at open skips it
        let set = try RecordIODataSet(path: directory)
        XCTAssertEqual(set.classCount, 3)
        DataSetTesting.assertFails(.truncated, mentioning: "key 3", "label") { try set.label(of: 3) }
        DataSetTesting.assertFails(.truncated, mentioning: "key 3", "image") { try DataSetTesting.bytes(set, 3) }
        try assertOthersRead(set, except: 3, images, labels: [0, 1, 2, 0])
    }

    func testTruncatedSplitRecordIsTruncated() throws {
        let writer = try RecordIOWriter(directory: directory, headerRecord: false)
        let image = magicImage()
        try image.withUnsafeBytes { _ = try writer.append(image: $0, label: 0) }
        try image.withUnsafeBytes { _ = try writer.append(image: $0, label: 0) }
        try writer.finish()
        try editRecordFile { $0.removeLast(10) }
        let set = try RecordIODataSet(path: directory)
        DataSetTesting.assertSameBytes(try DataSetTesting.bytes(set, 0), image)
        DataSetTesting.assertFails(.truncated, "split record cut in its last part") { try DataSetTesting.bytes(set, 1) }
    }

    func testIndexOffsetPastTheEndFailsThatRecordOnly() throws {
        let images = try writeSet()
        var lines = try String(decoding: DataSetTesting.read(directory + "/train.idx"), as: UTF8.self)
            .split(separator: "\n").map(String.init)
        lines[1] = "1\t99999999"
        try DataSetTesting.write(Array((lines.joined(separator: "\n") + "\n").utf8), directory + "/train.idx")
        let set = try RecordIODataSet(path: directory)
        DataSetTesting.assertFails(.indexOutOfRange, mentioning: "99999999", "label") { try set.label(of: 1) }
        DataSetTesting.assertFails(.indexOutOfRange, mentioning: "key 1", "image") { try DataSetTesting.bytes(set, 1) }
        try assertOthersRead(set, except: 1, images, labels: [0, 1, 2, 0])
    }

    func testLabelOutsideThePropertyClassesFailsThatRecordOnly() throws {
        let images = try writeSet(labels: [0, 1, 7, 2])
        try DataSetTesting.write(Array("3,112,112".utf8), directory + "/property")
        let set = try RecordIODataSet(path: directory)
        XCTAssertEqual(set.classCount, 3)
        DataSetTesting.assertFails(.labelOutOfRange, mentioning: "label 7", "label") { try set.label(of: 2) }
        DataSetTesting.assertSameBytes(try DataSetTesting.bytes(set, 2), images[2], "the image itself still reads")
        try assertOthersRead(set, except: 2, images, labels: [0, 1, 7, 2])
    }

    func testSetLevelErrorsNameThePath() throws {
        _ = try writeSet()
        try FileManager.default.removeItem(atPath: directory + "/train.idx")
        DataSetTesting.assertFails(.unreadable, mentioning: directory + "/train.idx", "missing idx") {
            try RecordIODataSet(path: directory)
        }
        try DataSetTesting.write([], directory + "/train.idx")
        DataSetTesting.assertFails(.emptyDataSet, mentioning: directory + "/train.idx", "empty idx") {
            try RecordIODataSet(path: directory)
        }
        try DataSetTesting.write(Array("0\t0\n1 x\n".utf8), directory + "/train.idx")
        DataSetTesting.assertFails(.badFormat, mentioning: "line 2", "bad idx line") { try RecordIODataSet(path: directory) }
        try DataSetTesting.write(Array("0\t0\n".utf8), directory + "/train.idx")
        try DataSetTesting.write(Array("three,112,112".utf8), directory + "/property")
        DataSetTesting.assertFails(.badFormat, mentioning: directory + "/property", "bad property") {
            try RecordIODataSet(path: directory)
        }
        DataSetTesting.assertFails(.unreadable, mentioning: directory + "/nothing", "no such path") {
            try RecordIODataSet(path: directory + "/nothing")
        }
    }

    // MARK: - Packing

    func testPackImageFolderReadsBack() throws {
        let root = directory + "/images"
        let layout: [(String, [String])] = [("id_b", ["2.png", "1.jpg"]), ("id_a", ["x.jpeg", "y.JPG", "z.jpg"]),
                                            ("id_c", ["only.png"])]
        var expected: [(label: Int, bytes: [UInt8])] = []
        var seed = 0
        for (identity, files) in layout {
            try FileManager.default.createDirectory(atPath: root + "/" + identity, withIntermediateDirectories: true)
            for file in files {
                seed += 1
                try DataSetTesting.write(try DataSetTesting.image(seed, png: file.hasSuffix(".png")), root + "/\(identity)/\(file)")
            }
        }
        try DataSetTesting.write(Array("notes".utf8), root + "/id_a/notes.txt")
        try DataSetTesting.write(Array("not an image".utf8), root + "/id_b/broken.jpg")
        // Expected order: identities a, b, c; names sorted by bytes; broken.jpg skipped.
        for (label, identity, files) in [(0, "id_a", ["x.jpeg", "y.JPG", "z.jpg"]), (1, "id_b", ["1.jpg", "2.png"]),
                                         (2, "id_c", ["only.png"])] {
            for file in files { expected.append((label, try DataSetTesting.read(root + "/\(identity)/\(file)"))) }
        }

        let folder = try ImageFolderDataSet(root: root)
        var reported: [Int] = []
        let out = directory + "/packed"
        let summary = try RecordIOWriter.pack(folder, into: out, threads: 2) { reported.append($0.done) }
        XCTAssertEqual(summary.images, 6)
        XCTAssertEqual(summary.classCount, 3)
        XCTAssertEqual(summary.skipped.map(\.index), [5], "id_b/broken.jpg")
        XCTAssertEqual(summary.skipped.first?.error.reason, .undecodable)
        XCTAssertEqual(reported.last, 7)

        let set = try RecordIODataSet(path: out)
        XCTAssertTrue(set.hasHeaderRecord)
        XCTAssertEqual(set.count, 6)
        XCTAssertEqual(set.classCount, 3)
        XCTAssertEqual(try DataSetTesting.read(out + "/property"), Array("3,112,112".utf8))
        for (i, sample) in expected.enumerated() {
            XCTAssertEqual(try set.label(of: i), sample.label, "sample \(i)")
            DataSetTesting.assertSameBytes(try DataSetTesting.bytes(set, i), sample.bytes, "sample \(i)")
        }
    }

    // MARK: - Inspection

    func testInspectionCountsAndVerifyListsBadRecords() throws {
        let writer = try RecordIOWriter(directory: directory)
        let labels = [0, 0, 0, 1, 2, 2, 2, 2, 2]
        for (i, label) in labels.enumerated() {
            var image = try DataSetTesting.image(i)
            if i == 2 { image = Array(image.prefix(image.count / 2)) }          // truncated JPEG
            if i == 7 { image = try DataSetTesting.image(i, png: true, size: 8) }  // wrong size
            try image.withUnsafeBytes { _ = try writer.append(image: $0, label: label) }
        }
        try writer.finish(classCount: 4)
        let offset = try parseIndex(directory + "/train.idx").first { $0.key == 5 }!.offset
        try editRecordFile { $0[offset + 1] ^= 0x40 }

        let quick = try DataSetInspection.inspect(directory, threads: 2)
        XCTAssertEqual(quick.format, .recordIO)
        XCTAssertEqual(quick.images, 9)
        XCTAssertEqual(quick.identities, 4)
        // Per class, the bad-magic record (class 2) uncounted: 3, 1, 4, 0.
        XCTAssertEqual(quick.imagesPerIdentity.min, 0)
        XCTAssertEqual(quick.imagesPerIdentity.median, 2)
        XCTAssertEqual(quick.imagesPerIdentity.max, 4)
        XCTAssertEqual(quick.emptyIdentities, 1)
        XCTAssertEqual(quick.badRecords.map(\.key), ["5"])
        XCTAssertEqual(quick.badRecords.map(\.reason), [.badMagic])

        let full = try DataSetInspection.inspect(directory, verify: true, threads: 2)
        XCTAssertEqual(full.badRecords.map(\.key), ["3", "5", "8"])
        XCTAssertEqual(full.badRecords.map(\.reason), [.undecodable, .badMagic, .wrongSize])
        XCTAssertEqual(full.badCount, 3)

        let json = try JSONSerialization.jsonObject(with: Data(full.json().utf8)) as! [String: Any]
        XCTAssertEqual(json["format"] as? String, "recordio")
        XCTAssertEqual(json["images"] as? Int, 9)
        XCTAssertEqual(json["identities"] as? Int, 4)
        XCTAssertEqual((json["images_per_identity"] as? [String: Int])?["max"], 4)
        XCTAssertEqual(json["bad_count"] as? Int, 3)
        let bad = json["bad_records"] as! [[String: Any]]
        XCTAssertEqual(bad.map { $0["key"] as? Int }, [3, 5, 8])
        XCTAssertEqual(bad.map { $0["reason"] as? String }, ["undecodable", "badMagic", "wrongSize"])
        XCTAssertTrue(full.text().contains("key 5: badMagic"), full.text())
    }
}
