// The synthetic face generator and the files of `adaface-dist synth`: determinism whatever the
// thread count, identities that differ more than the images of one identity, quality levels that
// really destroy structure, the pickle writer, and a tiny data set read back record by record.

import DataPipeline
import Foundation
import XCTest

final class SyntheticFacesTests: XCTestCase {
    private let size = SyntheticFaces.imageSize

    // MARK: - Determinism

    func testSameSeedGivesTheSameBytesWhateverTheThreadCount() throws {
        let faces = SyntheticFaces(seed: 11)
        var one = FaceCollector(), three = FaceCollector()
        try faces.generate(identities: 3..<8, imagesPerIdentity: 3, threads: 1, into: &one)
        try faces.generate(identities: 3..<8, imagesPerIdentity: 3, threads: 3, into: &three)
        XCTAssertEqual(one.faces.map { [$0.identity, $0.image] }, (3..<8).flatMap { id in (0..<3).map { [id, $0] } })
        XCTAssertEqual(one.faces.map(\.jpeg), three.faces.map(\.jpeg))
        XCTAssertEqual(one.faces.map(\.quality), three.faces.map(\.quality))

        XCTAssertEqual(faces.render(identity: 5, image: 2), faces.render(identity: 5, image: 2))
        XCTAssertEqual(one.faces[7].quality, faces.qualityLevel(identity: 5, image: 1))
        XCTAssertNotEqual(faces.render(identity: 5, image: 2), SyntheticFaces(seed: 12).render(identity: 5, image: 2))
        // The generator's JPEG is the encoding of exactly the rendered pixels.
        let decoded = try one.faces[7].jpeg.withUnsafeBytes { try ImageDecoder().decode($0) }
        XCTAssertEqual(decoded.width, size)
        XCTAssertLessThan(meanAbsoluteDifference(decoded.bgr, faces.render(identity: 5, image: 1)), 6)
    }

    // MARK: - Identity against nuisance

    /// Clean images (quality 1) compared on the face region: two images of one identity differ by
    /// their pose, expression, lighting and noise only; two identities differ by much more.
    func testIdentitiesDifferFarMoreThanImagesOfOneIdentity() {
        let faces = SyntheticFaces(seed: 1)
        let identities = 10, images = 4
        let crops = (0..<identities * images).map { faceCrop(faces.render(identity: $0 / images, image: $0 % images, quality: 1)) }
        var distance = [[Double]](repeating: [Double](repeating: 0, count: crops.count), count: crops.count)
        for i in crops.indices {
            for j in i + 1..<crops.count {
                distance[i][j] = meanAbsoluteDifference(crops[i], crops[j])
                distance[j][i] = distance[i][j]
            }
        }
        var within = [Double](), between = [Double](), nearestIsSameIdentity = 0
        for i in crops.indices {
            for j in i + 1..<crops.count {
                if i / images == j / images { within.append(distance[i][j]) } else { between.append(distance[i][j]) }
            }
            let nearest = crops.indices.filter { $0 != i }.min { distance[i][$0] < distance[i][$1] }!
            if nearest / images == i / images { nearestIsSameIdentity += 1 }
        }
        let withinMean = mean(within), betweenMean = mean(between)
        print(String(format: "face-region mean |Δ|: within identity %.1f, between identities %.1f; "
                     + "nearest image of the same identity %d/%d", withinMean, betweenMean, nearestIsSameIdentity, crops.count))
        XCTAssertGreaterThan(betweenMean, 1.8 * withinMean)
        XCTAssertGreaterThan(betweenMean, 40, "identities should differ by tens of grey levels")
        // Even raw pixels mostly find the identity (chance would be 3 in 39).
        XCTAssertGreaterThanOrEqual(nearestIsSameIdentity, crops.count * 6 / 10)
    }

    // MARK: - Quality

    /// The same pose, lighting and noise rendered at several quality levels, against the clean render.
    func testLowQualityImagesLoseTheStructureOfTheCleanImage() {
        let faces = SyntheticFaces(seed: 3)
        let levels: [Float] = [0.95, 0.85, 0.5, 0.1]
        var similarity = [[Double]](repeating: [], count: levels.count), detail = similarity
        for identity in 0..<6 {
            let clean = luminance(faces.render(identity: identity, image: 0, quality: 1))
            let cleanDetail = bandPassEnergy(clean)
            for (k, level) in levels.enumerated() {
                let image = luminance(faces.render(identity: identity, image: 0, quality: level))
                similarity[k].append(meanSSIM(image, clean))
                detail[k].append(bandPassEnergy(image) / cleanDetail)
            }
        }
        let ssim = similarity.map(mean), kept = detail.map(mean)
        print("quality \(levels): SSIM to the clean render \(ssim.map { String(format: "%.2f", $0) }), "
              + "fine detail kept \(kept.map { String(format: "%.2f", $0) })")
        XCTAssertGreaterThan(ssim[0], 0.95)
        XCTAssertGreaterThan(ssim[1], 0.88)
        XCTAssertGreaterThan(ssim[1], ssim[2])
        XCTAssertGreaterThan(ssim[2], ssim[3])
        XCTAssertLessThan(ssim[3], 0.65)
        XCTAssertGreaterThan(ssim[1] - ssim[3], 0.25)
        XCTAssertGreaterThan(kept[0], 0.85)
        XCTAssertGreaterThan(kept[1], 0.6)
        XCTAssertLessThan(kept[2], 0.45)
        XCTAssertLessThan(kept[3], 0.12, "quality 0.1 keeps almost none of the clean image's edges and features")
    }

    func testQualityLevelsFollowTheDocumentedMix() {
        let faces = SyntheticFaces(seed: 5)
        let levels = (0..<200).flatMap { id in (0..<20).map { faces.qualityLevel(identity: id, image: $0) } }
        XCTAssertTrue(levels.allSatisfy { (0...1).contains($0) })
        let high = Double(levels.filter { $0 >= 0.75 }.count) / Double(levels.count)
        let low = Double(levels.filter { $0 < 0.35 }.count) / Double(levels.count)
        XCTAssertEqual(high, 0.60, accuracy: 0.04)
        XCTAssertEqual(low, 0.15, accuracy: 0.03)
        XCTAssertEqual(SyntheticFaces.jpegQuality(forQualityLevel: 1), 95)
        XCTAssertEqual(SyntheticFaces.jpegQuality(forQualityLevel: 0), 40)
    }

    // MARK: - Pickle

    /// Bytes from `pickletools.optimize(pickle.dumps(value, protocol=3))` (Python 3).
    func testPickleWriterMatchesPythonByteForByte() {
        // ([b'ab'], [False])
        XCTAssertEqual(PickleWriter.verificationSet(images: [[0x61, 0x62]], isSame: [false]),
                       [128, 3, 93, 67, 2, 97, 98, 97, 93, 137, 97, 134, 46])
        // ([b'\xff\xd8\x01', bytes(range(256)) + b'\x00' * 4], [True, False, True]): SHORT_BINBYTES
        // below 256 bytes, BINBYTES from 256.
        let long = (0...255).map { UInt8($0) } + [0, 0, 0, 0]
        let expected: [UInt8] = [0x80, 3, 0x5D, 0x28, 0x43, 3, 0xFF, 0xD8, 1, 0x42, 4, 1, 0, 0] + long
            + [0x65, 0x5D, 0x28, 0x88, 0x89, 0x88, 0x65, 0x86, 0x2E]
        XCTAssertEqual(PickleWriter.verificationSet(images: [[0xFF, 0xD8, 1], long], isSame: [true, false, true]), expected)
        // ([], []) and CPython's batches of 1000: 1001 items take two MARK … APPENDS groups.
        XCTAssertEqual(PickleWriter.verificationSet(images: [], isSame: []), [128, 3, 93, 93, 134, 46])
        let batched = PickleWriter.verificationSet(images: [], isSame: Array(repeating: true, count: 1001))
        XCTAssertEqual(Array(batched.prefix(6)), [128, 3, 93, 93, 0x28, 0x88])
        XCTAssertEqual(Array(batched[1004...]), [0x88, 0x65, 0x28, 0x88, 0x65, 0x86, 0x2E])
    }

    func testPickleWriterRoundTripsThroughAReader() throws {
        let images = [[UInt8](repeating: 7, count: 70_000), [1, 2, 3], []]
        let (bins, same) = try readVerificationPickle(PickleWriter.verificationSet(images: images, isSame: [true, false]))
        XCTAssertEqual(bins, images)
        XCTAssertEqual(same, [true, false])
    }

    // MARK: - Data set files

    func testTinySetWritesEveryFileWithTheRightContents() throws {
        let directory = NSTemporaryDirectory() + "synth-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let configuration = SyntheticDataSet.Configuration(identities: 6, imagesPerIdentity: 3, pairs: 10, seed: 4,
                                                           holdoutIdentities: 4, threads: 2)
        var messages = [String]()
        let summary = try SyntheticDataSet.write(configuration, to: directory) { messages.append($0) }
        XCTAssertEqual(messages.last, "validation: 12/12 images")
        XCTAssertEqual(summary.trainImages, 18)
        XCTAssertEqual(summary.files.map(\.name), ["train.rec", "train.idx", "property", "val.bin", "quality.csv"])
        let file = { (name: String) in try Data(contentsOf: URL(fileURLWithPath: directory + "/" + name)) }
        for written in summary.files { XCTAssertEqual(written.bytes, try file(written.name).count, written.name) }
        XCTAssertEqual(String(decoding: try file("property"), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines),
                       "6,112,112")

        // train.rec, InsightFace's layout: the header record (labels [one past the last image key,
        // one past the last identity record]), images 1…18 labelled with their identity, then one
        // record per identity with its image key range.
        let decoder = try ImageDecoder()
        let records = try parseRecords([UInt8](try file("train.rec")))
        XCTAssertEqual(records.count, 1 + 18 + 6)
        XCTAssertEqual(records[0].flag, 2)
        XCTAssertEqual(records[0].labels, [19, 25])
        XCTAssertTrue(records[0].image.isEmpty)
        let faces = SyntheticFaces(seed: 4)
        for key in 1...18 {
            let record = records[key]
            XCTAssertEqual(record.flag, 0)
            XCTAssertEqual(record.label, Float((key - 1) / 3), "key \(key)")
            XCTAssertEqual(record.id, UInt64(key))
            let image = try record.image.withUnsafeBytes { try decoder.decode($0) }
            XCTAssertEqual([image.width, image.height], [size, size])
            XCTAssertLessThan(meanAbsoluteDifference(image.bgr, faces.render(identity: (key - 1) / 3, image: (key - 1) % 3)), 8)
        }
        for identity in 0..<6 {
            XCTAssertEqual(records[19 + identity].flag, 2)
            XCTAssertEqual(records[19 + identity].labels, [Float(1 + 3 * identity), Float(4 + 3 * identity)])
        }
        let idx = String(decoding: try file("train.idx"), as: UTF8.self)
        XCTAssertEqual(idx, records.enumerated().map { "\($0.offset)\t\($0.element.offset)\n" }.joined())

        // quality.csv: 18 training rows, then one row per val.bin image.
        let rows = String(decoding: try file("quality.csv"), as: UTF8.self).split(separator: "\n").map { $0.split(separator: ",").map(String.init) }
        XCTAssertEqual(rows.first, ["split", "key", "identity", "image", "quality"])
        XCTAssertEqual(rows.count, 1 + 18 + 20)
        for (key, row) in zip(1...18, rows[1...18]) {
            XCTAssertEqual(Array(row.prefix(4)), ["train", "\(key)", "\((key - 1) / 3)", "\((key - 1) % 3)"])
            XCTAssertEqual(Float(row[4])!, faces.qualityLevel(identity: (key - 1) / 3, image: (key - 1) % 3), accuracy: 1e-4)
        }

        // val.bin: 10 pairs of held-out identities (6…9), half of them the same identity.
        let (bins, same) = try readVerificationPickle([UInt8](try file("val.bin")))
        XCTAssertEqual(bins.count, 20)
        XCTAssertEqual(same.filter { $0 }.count, 5)
        let valRows = Array(rows[19...])
        for (index, row) in valRows.enumerated() {
            XCTAssertEqual(Array(row.prefix(2)), ["val", "\(index)"])
            XCTAssertTrue((6..<10).contains(Int(row[2])!), "held-out identity, got \(row[2])")
            let image = try bins[index].withUnsafeBytes { try decoder.decode($0) }
            XCTAssertEqual([image.width, image.height], [size, size])
        }
        for (pair, isSame) in same.enumerated() {
            let first = valRows[2 * pair], second = valRows[2 * pair + 1]
            XCTAssertEqual(first[2] == second[2], isSame, "pair \(pair)")
            if isSame { XCTAssertNotEqual(first[3], second[3], "a same-identity pair uses two different images") }
        }
    }

    func testConfigurationProblemsAreNamed() {
        XCTAssertNil(SyntheticDataSet.Configuration().problem)
        XCTAssertEqual(SyntheticDataSet.Configuration().holdoutIdentities, 100)
        XCTAssertEqual(SyntheticDataSet.Configuration(identities: 6).holdoutIdentities, 50)
        XCTAssertNotNil(SyntheticDataSet.Configuration(holdoutIdentities: 1).problem)
        XCTAssertNil(SyntheticDataSet.Configuration(pairs: 0, holdoutIdentities: 0).problem)
        XCTAssertNotNil(SyntheticDataSet.Configuration(imagesPerIdentity: 1).problem)
        XCTAssertNotNil(SyntheticDataSet.Configuration(qualityFileName: "a/b.csv").problem)
    }
}

// MARK: - Helpers (private: the test target shares one namespace)

private struct FaceCollector: SyntheticFaceSink {
    var faces = [SyntheticFace]()
    mutating func accept(_ face: SyntheticFace) throws { faces.append(face) }
}

private func mean(_ values: [Double]) -> Double { values.reduce(0, +) / Double(values.count) }

private func meanAbsoluteDifference(_ a: [UInt8], _ b: [UInt8]) -> Double {
    precondition(a.count == b.count)
    return a.withUnsafeBufferPointer { a in
        b.withUnsafeBufferPointer { b in
            var total = 0
            for i in 0..<a.count { total += abs(Int(a[i]) - Int(b[i])) }
            return Double(total) / Double(a.count)
        }
    }
}

/// Rows 24..<104, columns 20..<92: eyes, brows, nose, mouth and cheeks, little background.
private func faceCrop(_ bgr: [UInt8]) -> [UInt8] {
    (24..<104).flatMap { y in bgr[(y * 112 + 20) * 3..<(y * 112 + 92) * 3] }
}

private func luminance(_ bgr: [UInt8]) -> [Double] {
    stride(from: 0, to: bgr.count, by: 3).map { (i: Int) -> Double in
        let b = Double(bgr[i]), g = Double(bgr[i + 1]), r = Double(bgr[i + 2])
        return 0.114 * b + 0.587 * g + 0.299 * r
    }
}

/// SSIM over non-overlapping 8×8 windows of a 112×112 luminance image, averaged.
private func meanSSIM(_ x: [Double], _ y: [Double]) -> Double {
    let c1: Double = 2.55 * 2.55, c2: Double = 7.65 * 7.65  // (0.01·255)², (0.03·255)²
    var total = 0.0, windows = 0
    for wy in stride(from: 0, to: 112, by: 8) {
        for wx in stride(from: 0, to: 112, by: 8) {
            var sx = 0.0, sy = 0.0, sxx = 0.0, syy = 0.0, sxy = 0.0
            for dy in 0..<8 {
                for dx in 0..<8 {
                    let a = x[(wy + dy) * 112 + wx + dx], b = y[(wy + dy) * 112 + wx + dx]
                    sx += a; sy += b; sxx += a * a; syy += b * b; sxy += a * b
                }
            }
            let mx = sx / 64, my = sy / 64
            let vx = sxx / 64 - mx * mx, vy = syy / 64 - my * my, cov = sxy / 64 - mx * my
            total += (2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
            windows += 1
        }
    }
    return total / Double(windows)
}

/// Energy of the difference between 3×3 and 7×7 box means: edges and features at the scale of
/// eyes and lips, above pixel noise.
private func bandPassEnergy(_ image: [Double]) -> Double {
    func boxMean(_ radius: Int) -> [Double] {
        (0..<112 * 112).map { i in
            let x = i % 112, y = i / 112
            var sum = 0.0, count = 0.0
            for yy in max(0, y - radius)...min(111, y + radius) {
                for xx in max(0, x - radius)...min(111, x + radius) { sum += image[yy * 112 + xx]; count += 1 }
            }
            return sum / count
        }
    }
    let fine = boxMean(1), coarse = boxMean(3)
    return zip(fine, coarse).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } / Double(image.count)
}

private struct ParsedRecord {
    var offset: Int
    var flag: UInt32
    var label: Float
    var id: UInt64
    var labels: [Float]
    var image: [UInt8]
}

/// Reads whole (unsplit) MXNet records: magic, lrec, IRHeader, labels, image, padding to 4.
private func parseRecords(_ bytes: [UInt8]) throws -> [ParsedRecord] {
    func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * $1) } }
    func u64(_ at: Int) -> UInt64 { UInt64(u32(at)) | UInt64(u32(at + 4)) << 32 }
    var records = [ParsedRecord](), position = 0
    while position < bytes.count {
        XCTAssertEqual(u32(position), 0xCED7_230A, "magic at \(position)")
        let lrec = u32(position + 4)
        XCTAssertEqual(lrec >> 29, 0, "continuation flag")
        let length = Int(lrec & (1 << 29 - 1)), payload = position + 8
        let flag = u32(payload)
        let labels = (0..<Int(flag)).map { Float(bitPattern: u32(payload + 24 + 4 * $0)) }
        records.append(ParsedRecord(offset: position, flag: flag, label: Float(bitPattern: u32(payload + 4)), id: u64(payload + 8),
                                    labels: labels, image: Array(bytes[payload + 24 + 4 * Int(flag)..<payload + length])))
        position = payload + (length + 3) / 4 * 4
    }
    return records
}

private struct PickleFormatError: Error {}

/// Just the opcodes of an InsightFace verification pickle.
private func readVerificationPickle(_ bytes: [UInt8]) throws -> ([[UInt8]], [Bool]) {
    indirect enum Value { case mark, list([Value]), bytes([UInt8]), bool(Bool), pair(Value, Value) }
    var stack = [Value](), position = 0
    func length(_ count: Int) -> Int { (0..<count).reduce(0) { $0 | Int(bytes[position + $1]) << (8 * $1) } }
    func appendItems(_ items: [Value]) throws {
        guard case .list(let list) = stack.popLast() else { throw PickleFormatError() }
        stack.append(.list(list + items))
    }
    loop: while position < bytes.count {
        let opcode = bytes[position]
        position += 1
        switch opcode {
        case 0x80: position += 1
        case 0x5D: stack.append(.list([]))
        case 0x28: stack.append(.mark)
        case 0x43, 0x42:
            let width = opcode == 0x43 ? 1 : 4, count = length(width)
            stack.append(.bytes(Array(bytes[position + width..<position + width + count])))
            position += width + count
        case 0x88, 0x89: stack.append(.bool(opcode == 0x88))
        case 0x61: try appendItems([stack.removeLast()])
        case 0x65:
            guard let mark = stack.lastIndex(where: { if case .mark = $0 { return true } else { return false } }) else { throw PickleFormatError() }
            let items = Array(stack[(mark + 1)...])
            stack.removeSubrange(mark...)
            try appendItems(items)
        case 0x86:
            let second = stack.removeLast(), first = stack.removeLast()
            stack.append(.pair(first, second))
        case 0x2E: break loop
        default: throw PickleFormatError()
        }
    }
    guard stack.count == 1, case .pair(.list(let binValues), .list(let sameValues)) = stack[0] else { throw PickleFormatError() }
    let bins = try binValues.map { value -> [UInt8] in
        guard case .bytes(let b) = value else { throw PickleFormatError() }
        return b
    }
    let same = try sameValues.map { value -> Bool in
        guard case .bool(let b) = value else { throw PickleFormatError() }
        return b
    }
    return (bins, same)
}
