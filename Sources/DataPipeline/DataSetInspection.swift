// What `data inspect` reports about a training set: its format, image and identity counts, images
// per identity, and every record that cannot be used (with `verify`, every image that does not
// decode to the expected size as well).

import Dispatch
import Glibc
import Serialization

public enum DataSetFormat: String, Sendable {
    case recordIO = "recordio"
    case imageFolder = "image-folder"
}

public struct BadRecord: Sendable, Equatable {
    /// The sample index.
    public let index: Int
    /// The idx key (RecordIO) or the path below the root (image folders).
    public let key: String
    public let reason: DataError.Reason
    public let message: String
}

public struct DataSetReport: Sendable {
    public let format: DataSetFormat
    public let path: String
    public let images: Int
    /// The class count: identity folders with images, or the RecordIO set's classes.
    public let identities: Int
    /// Over the `identities` classes; a RecordIO class without images counts as 0.
    public let imagesPerIdentity: (min: Int, median: Double, max: Int)
    /// RecordIO classes without images, or image folder identities without images (not classes).
    public let emptyIdentities: Int
    /// Image folders: entries that are not images. Always 0 for RecordIO.
    public let ignoredFiles: Int
    public let ignoredExamples: [String]
    /// Whether every image was decoded.
    public let verified: Bool
    /// Records whose label or bytes cannot be used, and with `verified`, those that do not decode
    /// to the expected size; sorted by sample index.
    public let badRecords: [BadRecord]

    public var badCount: Int { badRecords.count }

    /// One JSON object: format, path, images, identities, images_per_identity {min, median, max},
    /// empty_identities, ignored_files, verified, bad_records [{key, reason, message}], bad_count.
    public func json() -> String {
        let keyJSON: (String) -> String = { key in
            format == .recordIO && Int(key) != nil ? key : jsonQuoted(key)
        }
        let bad = badRecords.map {
            "{\"key\":\(keyJSON($0.key)),\"reason\":\(jsonQuoted($0.reason.rawValue)),"
                + "\"message\":\(jsonQuoted($0.message))}"
        }
        return "{\"format\":\(jsonQuoted(format.rawValue)),\"path\":\(jsonQuoted(path)),"
            + "\"images\":\(images),\"identities\":\(identities),"
            + "\"images_per_identity\":{\"min\":\(imagesPerIdentity.min),"
            + "\"median\":\(Self.number(imagesPerIdentity.median)),\"max\":\(imagesPerIdentity.max)},"
            + "\"empty_identities\":\(emptyIdentities),\"ignored_files\":\(ignoredFiles),"
            + "\"verified\":\(verified),\"bad_records\":[\(bad.joined(separator: ","))],\"bad_count\":\(badCount)}"
    }

    /// The report for people, one fact per line; bad records are listed up to `listLimit`.
    public func text(listLimit: Int = 100) -> String {
        var rows: [(String, String)] = [
            ("format", format == .recordIO ? "RecordIO" : "image folder"),
            ("path", path),
            ("images", Self.grouped(images)),
            ("identities", Self.grouped(identities)),
            ("images per identity", "min \(Self.grouped(imagesPerIdentity.min)), "
                + "median \(Self.number(imagesPerIdentity.median)), max \(Self.grouped(imagesPerIdentity.max))"),
        ]
        if emptyIdentities > 0 {
            rows.append(("identities without images", Self.grouped(emptyIdentities)))
        }
        if ignoredFiles > 0 {
            rows.append(("ignored (not images)", Self.grouped(ignoredFiles)
                + " (e.g. " + ignoredExamples.prefix(3).joined(separator: ", ") + ")"))
        }
        rows.append(("bad records", Self.grouped(badCount) + (verified
            ? " (every image was decoded)" : " (record framing and labels checked; images not decoded)")))
        var lines = rows.map { $0.0 + String(repeating: " ", count: max(1, 27 - $0.0.count)) + $0.1 }
        for record in badRecords.prefix(listLimit) {
            lines.append("  \(format == .recordIO ? "key " : "")\(record.key): \(record.reason.rawValue): \(record.message)")
        }
        if badCount > listLimit { lines.append("  … and \(badCount - listLimit) more") }
        return lines.joined(separator: "\n")
    }


    /// Integers without a fraction, halves (medians of an even count) with one digit.
    static func number(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }

    static func grouped(_ value: Int) -> String {
        let digits = String(value.magnitude)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return (value < 0 ? "-" : "") + out
    }
}

public enum DataSetInspection {
    /// A directory with `train.rec` or `train.idx`, or a `.rec` file: RecordIO; any other
    /// directory: an image folder.
    public static func detectFormat(_ path: String) throws -> DataSetFormat {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw DataError(.unreadable, "cannot open \(path): \(DataFiles.errorText())")
        }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            let hasRecordFiles = access(DataFiles.join(path, "train.rec"), F_OK) == 0
                || access(DataFiles.join(path, "train.idx"), F_OK) == 0
            return hasRecordFiles ? .recordIO : .imageFolder
        }
        guard path.hasSuffix(".rec") else {
            throw DataError(.badFormat, "\(path) is neither a RecordIO .rec file nor a directory")
        }
        return .recordIO
    }

    /// Opens the set at `path` in the format `detectFormat` finds.
    public static func open(_ path: String, threads: Int = 1) throws -> (format: DataSetFormat, source: SampleSource) {
        switch try detectFormat(path) {
        case .recordIO: return (.recordIO, try RecordIODataSet(path: path))
        case .imageFolder: return (.imageFolder, try ImageFolderDataSet(root: path, threads: threads))
        }
    }

    /// Counts images per identity and collects the records that cannot be used, with `threads`
    /// threads. With `verify`, every image is decoded and must be the size the set's `property`
    /// declares (112×112 without one). `progress(done, total)` runs on the calling thread.
    public static func inspect(_ path: String, verify: Bool = false, threads: Int = 1,
                               progress: ((Int, Int) -> Void)? = nil) throws -> DataSetReport {
        let (format, source) = try open(path, threads: threads)
        let recordIO = source as? RecordIODataSet
        let folder = source as? ImageFolderDataSet
        let size = recordIO?.declaredImageSize ?? (height: 112, width: 112)
        let keyOf: (Int) -> String = { index in
            if let recordIO { return String(recordIO.key(of: index)) }
            return folder?.relativePath(of: index) ?? String(index)
        }

        let total = source.count
        let workers = max(1, threads)
        let batch = (verify ? 64 : 4096) * workers
        var labels = [Int32](repeating: -1, count: total)
        var bad: [BadRecord] = []
        // One decoder per worker slot: decoders are not thread-safe, and batches never overlap.
        let decoders = verify ? try (0..<workers).map { _ in try ImageDecoder() } : []
        var workerBad = [[BadRecord]](repeating: [], count: workers)

        labels.withUnsafeMutableBufferPointer { labelBuffer in
            let labelSlots = labelBuffer
            workerBad.withUnsafeMutableBufferPointer { badBuffer in
                let badSlots = badBuffer
                var start = 0
                while start < total {
                    let n = min(batch, total - start)
                    DispatchQueue.concurrentPerform(iterations: min(workers, n)) { worker in
                        let decoder = verify ? decoders[worker] : nil
                        var pixels = verify ? [UInt8](repeating: 0, count: size.height * size.width * 3) : []
                        for j in stride(from: start + worker, to: start + n, by: workers) {
                            if let failure = check(source, j, decoder: decoder, pixels: &pixels, size: size, labels: labelSlots) {
                                badSlots[worker].append(BadRecord(index: j, key: keyOf(j), reason: failure.reason,
                                                                  message: failure.message))
                            }
                        }
                    }
                    start += n
                    progress?(start, total)
                }
            }
        }
        for list in workerBad { bad.append(contentsOf: list) }
        bad.sort { $0.index < $1.index }

        var perClass = [Int](repeating: 0, count: source.classCount)
        for label in labels where label >= 0 && Int(label) < perClass.count { perClass[Int(label)] += 1 }
        let sorted = perClass.sorted()
        let median: Double
        if sorted.isEmpty {
            median = 0
        } else if sorted.count % 2 == 1 {
            median = Double(sorted[sorted.count / 2])
        } else {
            median = Double(sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
        let emptyIdentities = folder?.emptyIdentities.count ?? perClass.filter { $0 == 0 }.count
        return DataSetReport(
            format: format, path: path, images: total, identities: source.classCount,
            imagesPerIdentity: (sorted.first ?? 0, median, sorted.last ?? 0),
            emptyIdentities: emptyIdentities, ignoredFiles: folder?.ignoredCount ?? 0,
            ignoredExamples: folder?.ignoredExamples ?? [], verified: verify, badRecords: bad)
    }

    /// Reads sample `index`'s label (stored into `labels`) and, with a decoder, decodes its image.
    private static func check(_ source: SampleSource, _ index: Int, decoder: ImageDecoder?, pixels: inout [UInt8],
                              size: (height: Int, width: Int), labels: UnsafeMutableBufferPointer<Int32>) -> DataError? {
        do {
            labels[index] = Int32(try source.label(of: index))
            if let decoder {
                try source.withEncodedImage(index) { bytes in
                    try pixels.withUnsafeMutableBufferPointer {
                        try decoder.decode(bytes, into: $0, expectedWidth: size.width, expectedHeight: size.height)
                    }
                }
            }
            return nil
        } catch let error as DataError {
            return error
        } catch let error as ImageDecodingError {
            return DataError(error.reason == .wrongSize ? .wrongSize : .undecodable, error.message)
        } catch {
            return DataError(.unreadable, "\(error)")
        }
    }
}
