// InsightFace / MXNet RecordIO image sets: `train.rec` (the records), `train.idx` (`key\toffset`
// lines) and an optional `property` ("num_classes,height,width"). The reader feeds training and
// `data inspect`; the writer serves `pack` and the synthetic generator.
//
// Framing (dmlc-core recordio): uint32 magic 0xced7230a, uint32 lrec (upper 3 bits: continuation
// flag, lower 29: length), the bytes, zero padding to 4. A writer never lets the magic appear at a
// 4-byte-aligned position inside a stored part: where it occurs in the payload, the payload is cut
// there, the 4 magic bytes are dropped, and the parts are flagged 1 (first), 2 (middle), 3 (last).
// Reading joins the parts and puts the magic back between them. Every cut is 4-aligned, so only
// the last part is ever padded.

import Dispatch
import Glibc

// MARK: - Format

enum RecordIOFormat {
    static let magic: UInt32 = 0xCED7_230A
    static let lengthMask: UInt32 = (1 << 29) - 1
    /// MXNet's IRHeader: flag (uint32), label (float32), id (uint64), id2 (uint64).
    static let imageHeaderSize = 24
    static let wholeRecord: UInt32 = 0, firstPart: UInt32 = 1, middlePart: UInt32 = 2, lastPart: UInt32 = 3
    /// Largest float32 below which every integer is exact; header keys above it are rounded.
    static let exactFloatIntegers = 1 << 24

    @inline(__always) static func padded(_ length: Int) -> Int { (length + 3) & ~3 }
}

/// The fixed part of an image record's payload.
struct ImageRecordHeader {
    var flag: UInt32
    var label: Float
    var id: UInt64
    var id2: UInt64

    init(flag: UInt32, label: Float, id: UInt64, id2: UInt64) {
        self.flag = flag; self.label = label; self.id = id; self.id2 = id2
    }

    init(_ p: UnsafeRawPointer) {
        flag = RecordIOFormat.loadLE32(p, 0)
        label = Float(bitPattern: RecordIOFormat.loadLE32(p, 4))
        id = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        id2 = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
    }

    func append(to bytes: inout [UInt8]) {
        for word in [flag, label.bitPattern, UInt32(truncatingIfNeeded: id), UInt32(truncatingIfNeeded: id >> 32),
                     UInt32(truncatingIfNeeded: id2), UInt32(truncatingIfNeeded: id2 >> 32)] {
            RecordIOFormat.appendLE32(&bytes, word)
        }
    }
}

extension RecordIOFormat {
    @inline(__always)
    static func loadLE32(_ p: UnsafeRawPointer, _ offset: Int) -> UInt32 {
        UInt32(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    @inline(__always)
    static func appendLE32(_ bytes: inout [UInt8], _ value: UInt32) {
        bytes.append(UInt8(truncatingIfNeeded: value)); bytes.append(UInt8(truncatingIfNeeded: value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value >> 16)); bytes.append(UInt8(truncatingIfNeeded: value >> 24))
    }

    static func hex32(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
    }
}

// MARK: - Positional file reads

/// A file opened once for `pread`: there is no shared cursor, so any thread may read at any offset.
final class ReadOnlyFile: @unchecked Sendable {
    let path: String
    let size: Int
    private let descriptor: Int32

    /// `what` names the file's role in errors ("record file", "index file").
    init(_ path: String, what: String) throws {
        var fd: Int32
        // O_NONBLOCK: a FIFO in place of a file would otherwise block the open until a writer
        // appears; it changes nothing for regular files, and the fstat below refuses anything else.
        repeat { fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK) } while fd < 0 && errno == EINTR
        guard fd >= 0 else { throw DataError(.unreadable, "cannot open \(what) \(path): \(DataFiles.errorText())") }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let text = DataFiles.errorText()
            close(fd)
            throw DataError(.unreadable, "cannot stat \(what) \(path): \(text)")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw DataError(.unreadable, "\(what) \(path) is not a regular file")
        }
        self.path = path
        self.size = Int(info.st_size)
        descriptor = fd
    }

    deinit { close(descriptor) }

    /// Reads `count` bytes at `offset`, fewer only at the end of the file; returns how many.
    func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int) throws -> Int {
        var done = 0
        while done < count {
            let n = pread(descriptor, buffer + done, count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw DataError(.unreadable, "read of \(path) at offset \(offset + done) failed: \(DataFiles.errorText())")
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    func readAll() throws -> [UInt8] {
        guard size > 0 else { return [] }
        var bytes = [UInt8](repeating: 0, count: size)
        let n = try bytes.withUnsafeMutableBytes { try read(into: $0.baseAddress!, count: size, at: 0) }
        bytes.removeLast(size - n)
        return bytes
    }
}

// MARK: - Records

/// Reads whole records (joining split payloads) and image record headers from a `.rec` file.
struct RecordReader {
    let file: ReadOnlyFile
    /// Where record errors say they come from.
    let name: String

    /// First read of a record when the idx gives no usable extent: a typical face JPEG fits.
    private static let defaultFirstRead = 64 << 10
    /// Extents beyond this come from gaps in the index, not from one record; read less first.
    private static let largestTrustedExtent = 16 << 20

    /// Calls `body` with the joined payload of the record at `offset`. `extent` is the distance to
    /// the next record in the file (0 if unknown): usually one pread fetches the whole record, and
    /// a record whose length runs past it is damaged (this also bounds what a corrupt length can
    /// make the reader allocate). Allocates one buffer of the record's size per call; split
    /// payloads are joined in place.
    func withPayload<Result>(key: Int, offset: Int, extent: Int,
                             _ body: (UnsafeRawBufferPointer) throws -> Result) throws -> Result {
        try checkOffset(key: key, offset: offset)
        let limit = self.limit(offset: offset, extent: extent)
        var buffer = GrowingReadBuffer(file: file, offset: offset, available: limit)
        defer { buffer.deallocate() }
        let firstRead = extent >= 8 && extent <= Self.largestTrustedExtent ? extent : Self.defaultFirstRead
        try buffer.fill(upTo: min(limit, firstRead), orFail: { _ in nil })
        let truncated = { (needed: Int) in self.truncated(key: key, offset: offset, needed: needed, limit: limit) }

        var position = 0
        var joined = 0
        var part = 0
        while true {
            try buffer.fill(upTo: position + 8, orFail: truncated)
            let base = buffer.base!
            let magic = RecordIOFormat.loadLE32(base, position)
            guard magic == RecordIOFormat.magic else {
                throw DataError(.badMagic, "\(name) key \(key): found \(RecordIOFormat.hex32(magic)) at offset \(offset + position) "
                                + "where the record magic \(RecordIOFormat.hex32(RecordIOFormat.magic)) belongs")
            }
            let lrec = RecordIOFormat.loadLE32(base, position + 4)
            let flag = lrec >> 29
            let length = Int(lrec & RecordIOFormat.lengthMask)
            try checkContinuation(flag, part: part, key: key, offset: offset + position)
            try buffer.fill(upTo: position + 8 + length, orFail: truncated)
            let data = buffer.base! + position + 8
            if flag == RecordIOFormat.wholeRecord {
                return try body(UnsafeRawBufferPointer(start: data, count: length))
            }
            // The joined bytes never overtake the ones still to be read: each part's 8-byte header
            // gives way to at most 4 magic bytes.
            memmove(buffer.base! + joined, data, length)
            joined += length
            if flag == RecordIOFormat.lastPart {
                return try body(UnsafeRawBufferPointer(start: buffer.base!, count: joined))
            }
            (buffer.base! + joined).storeBytes(of: RecordIOFormat.magic.littleEndian, as: UInt32.self)
            joined += 4
            position += 8 + RecordIOFormat.padded(length)
            part += 1
        }
    }

    /// The image record header and the class value (the scalar label, or the first of the label
    /// array), reading only the first bytes of the record when it is not split.
    func classValue(key: Int, offset: Int, extent: Int) throws -> Float {
        try checkOffset(key: key, offset: offset)
        let limit = self.limit(offset: offset, extent: extent)
        let want = min(limit, 128)
        // nil: take the full path.
        let quick: Float? = try withUnsafeTemporaryAllocation(byteCount: 128, alignment: 8) { scratch -> Float? in
            let base = scratch.baseAddress!
            let n = try file.read(into: base, count: want, at: offset)
            guard n >= 8, RecordIOFormat.loadLE32(base, 0) == RecordIOFormat.magic else { return nil }
            let lrec = RecordIOFormat.loadLE32(base, 4)
            guard lrec >> 29 == RecordIOFormat.wholeRecord else { return nil }
            let length = Int(lrec & RecordIOFormat.lengthMask)
            guard 8 + length <= limit else { return nil }
            guard length >= RecordIOFormat.imageHeaderSize, 8 + RecordIOFormat.imageHeaderSize <= n else { return nil }
            let header = ImageRecordHeader(base + 8)
            if header.flag == 0 { return header.label }
            let needed = 8 + RecordIOFormat.imageHeaderSize + 4
            guard Int(header.flag) * 4 + RecordIOFormat.imageHeaderSize <= length, needed <= n else { return nil }
            return Float(bitPattern: RecordIOFormat.loadLE32(base, 8 + RecordIOFormat.imageHeaderSize))
        }
        if let quick { return quick }
        // Split, damaged or unusual records take the full path, which names the problem exactly.
        return try withPayload(key: key, offset: offset, extent: extent) { payload in
            let parsed = try parse(payload, key: key)
            return parsed.header.flag == 0 ? parsed.header.label : parsed.labels.first!
        }
    }

    struct ParsedPayload {
        let header: ImageRecordHeader
        /// The label array (empty when flag is 0).
        let labels: [Float]
        let image: UnsafeRawBufferPointer
    }

    func parse(_ payload: UnsafeRawBufferPointer, key: Int) throws -> ParsedPayload {
        guard payload.count >= RecordIOFormat.imageHeaderSize else {
            throw DataError(.badFormat, "\(name) key \(key): payload of \(payload.count) bytes is shorter than "
                            + "the \(RecordIOFormat.imageHeaderSize)-byte image record header")
        }
        let header = ImageRecordHeader(payload.baseAddress!)
        let labelBytes = Int(header.flag) * 4
        guard labelBytes <= payload.count - RecordIOFormat.imageHeaderSize else {
            throw DataError(.badFormat, "\(name) key \(key): header announces \(header.flag) labels, more than "
                            + "the \(payload.count)-byte payload holds")
        }
        let labels = (0..<Int(header.flag)).map {
            Float(bitPattern: RecordIOFormat.loadLE32(payload.baseAddress!, RecordIOFormat.imageHeaderSize + 4 * $0))
        }
        let imageStart = RecordIOFormat.imageHeaderSize + labelBytes
        return ParsedPayload(header: header, labels: labels,
                             image: UnsafeRawBufferPointer(rebasing: payload[imageStart...]))
    }

    private func checkOffset(key: Int, offset: Int) throws {
        guard offset < file.size else {
            throw DataError(.indexOutOfRange, "\(name) key \(key): offset \(offset) from the index is past the end "
                            + "of the record file (\(file.size) bytes)")
        }
    }

    private func checkContinuation(_ flag: UInt32, part: Int, key: Int, offset: Int) throws {
        let expected = part == 0 ? [RecordIOFormat.wholeRecord, RecordIOFormat.firstPart]
                                 : [RecordIOFormat.middlePart, RecordIOFormat.lastPart]
        guard expected.contains(flag) else {
            throw DataError(.badFormat, "\(name) key \(key): continuation flag \(flag) at offset \(offset), expected "
                            + (part == 0 ? "0 or 1 (a record's first part)" : "2 or 3 (part \(part + 1) of a split record)"))
        }
    }

    /// How far the record at `offset` may reach: the next record or the end of the file.
    private func limit(offset: Int, extent: Int) -> Int {
        extent >= 8 ? min(extent, file.size - offset) : file.size - offset
    }

    private func truncated(key: Int, offset: Int, needed: Int, limit: Int) -> DataError {
        let end = limit < file.size - offset ? "the next record starts after \(limit)" : "the file ends after \(limit)"
        return DataError(.truncated, "\(name) key \(key): record at offset \(offset) is truncated: it needs \(needed) "
                         + "bytes, \(end)")
    }
}

/// A malloc'd buffer holding the first `filled` bytes of a record, grown by further preads.
private struct GrowingReadBuffer {
    let file: ReadOnlyFile
    let offset: Int
    let available: Int
    private(set) var base: UnsafeMutableRawPointer?
    private var capacity = 0
    private var filled = 0

    init(file: ReadOnlyFile, offset: Int, available: Int) {
        self.file = file; self.offset = offset; self.available = available
    }

    /// Makes the first `count` bytes available; `orFail` gives the error when the file is too short.
    mutating func fill(upTo count: Int, orFail: (Int) -> DataError?) throws {
        guard count > filled else { return }
        guard count <= available else {
            if let error = orFail(count) { throw error }
            return
        }
        if count > capacity {
            // The first read is exactly the expected extent; later ones grow generously, since a
            // split record's next part header usually follows.
            let newCapacity = capacity == 0 ? count : min(available, max(count + 4096, capacity * 2))
            guard let grown = realloc(base, newCapacity) else {
                throw DataError(.unreadable, "out of memory reading \(newCapacity) bytes of \(file.path)")
            }
            base = grown
            capacity = newCapacity
        }
        let n = try file.read(into: base! + filled, count: capacity - filled, at: offset + filled)
        filled += n
        if filled < count, let error = orFail(count) { throw error }
    }

    func deallocate() { free(base) }
}

// MARK: - The data set

/// A RecordIO set opened for training: sample `i` is the `i`-th image record in key order.
///
/// Open cost: the whole `train.idx` is parsed (4.2M lines in about a second) and the header
/// record is read. With a `property` file, labels are read on demand, one small pread per call;
/// without one (or with `preloadLabels`), every record's header is read at open (one pread of the
/// first 128 bytes per record: seconds from the page cache for 4.2M records, on cold storage about
/// one random read per record) to find the class count and keep the labels (4 bytes per image).
/// Memory otherwise: 12 bytes per image. Every method is safe to call from several threads.
public final class RecordIODataSet: SampleSource, @unchecked Sendable {
    public let recordPath: String
    public let indexPath: String
    /// The `property` file beside the records, if there is one.
    public let propertyPath: String?
    public let count: Int
    public let classCount: Int
    /// The class count `property` declares; labels outside it are `labelOutOfRange`.
    public let declaredClassCount: Int?
    /// The image size `property` declares ("num_classes,height,width").
    public let declaredImageSize: (height: Int, width: Int)?
    /// Whether key 0 is an InsightFace header record (images are then keys 1…).
    public let hasHeaderRecord: Bool
    public var name: String { recordPath }

    private let reader: RecordReader
    private let offsets: [Int]
    private let extents: [UInt32]
    /// Keys of the samples; empty when they are `firstKey, firstKey + 1, …`.
    private let explicitKeys: [Int]
    private let firstKey: Int
    /// Labels read at open; −1 marks a record whose label could not be used (re-read to report).
    private let preloadedLabels: [Int32]

    /// `path` is a directory holding `train.rec` and `train.idx`, or a `.rec` file with its `.idx`
    /// beside it. Throws `DataError` naming the path for problems of the whole set.
    public init(path: String, preloadLabels: Bool = false) throws {
        let (recordPath, indexPath, propertyPath) = try Self.locate(path)
        self.recordPath = recordPath
        self.indexPath = indexPath
        self.propertyPath = propertyPath
        let file = try ReadOnlyFile(recordPath, what: "record file")
        let reader = RecordReader(file: file, name: recordPath)
        self.reader = reader

        let property = try propertyPath.map { try Self.readProperty($0) }
        declaredClassCount = property?.classes
        declaredImageSize = property.flatMap { $0.size }

        let index = try IndexFile(path: indexPath)
        let layout = try Self.layout(index, reader: reader, indexPath: indexPath)
        hasHeaderRecord = layout.hasHeader
        count = layout.positions.count
        guard count > 0 else {
            throw DataError(.emptyDataSet, layout.hasHeader
                ? "\(recordPath): the header record says there are no images"
                : "\(indexPath) lists no records")
        }

        let sortedOffsets = index.offsets.sorted()
        var offsets = [Int](repeating: 0, count: count)
        var extents = [UInt32](repeating: 0, count: count)
        var keys = [Int](repeating: 0, count: count)
        var contiguous = true
        for (i, position) in layout.positions.enumerated() {
            let offset = index.offsets[position]
            offsets[i] = offset
            keys[i] = index.keys[position]
            contiguous = contiguous && keys[i] == keys[0] + i
            let next = Self.firstIndex(in: sortedOffsets, greaterThan: offset)
            let end = next < sortedOffsets.count ? sortedOffsets[next] : file.size
            extents[i] = UInt32(clamping: max(0, end - offset))
        }
        self.offsets = offsets
        self.extents = extents
        firstKey = keys[0]
        explicitKeys = contiguous ? [] : keys

        if property == nil || preloadLabels {
            var labels = [Int32](repeating: -1, count: count)
            var maxLabel = -1
            for i in 0..<count {
                let key = contiguous ? firstKey + i : keys[i]
                guard let value = try? reader.classValue(key: key, offset: offsets[i], extent: Int(extents[i])),
                      let label = try? Self.classId(value, key: key, declared: property?.classes, property: propertyPath,
                                                    name: recordPath) else { continue }
                labels[i] = Int32(label)
                maxLabel = max(maxLabel, label)
            }
            guard maxLabel >= 0 else {
                throw DataError(.badFormat, "\(recordPath): none of its \(count) image records has a usable label")
            }
            preloadedLabels = labels
            classCount = property?.classes ?? maxLabel + 1
        } else {
            preloadedLabels = []
            classCount = property!.classes
        }
    }

    /// The `train.idx` key of sample `index`.
    public func key(of index: Int) -> Int {
        explicitKeys.isEmpty ? firstKey + index : explicitKeys[index]
    }

    public func recordDescription(_ index: Int) -> String {
        index >= 0 && index < count ? "\(recordPath) key \(key(of: index))" : "\(recordPath) sample \(index)"
    }

    public func label(of index: Int) throws -> Int {
        try checkIndex(index)
        if !preloadedLabels.isEmpty, preloadedLabels[index] >= 0 { return Int(preloadedLabels[index]) }
        let key = key(of: index)
        let value = try reader.classValue(key: key, offset: offsets[index], extent: Int(extents[index]))
        return try Self.classId(value, key: key, declared: declaredClassCount, property: propertyPath, name: recordPath)
    }

    /// The record's label array as stored (`flag` floats), or its scalar label when flag is 0.
    public func labels(of index: Int) throws -> [Float] {
        try checkIndex(index)
        let key = key(of: index)
        return try reader.withPayload(key: key, offset: offsets[index], extent: Int(extents[index])) { payload in
            let parsed = try reader.parse(payload, key: key)
            return parsed.header.flag == 0 ? [parsed.header.label] : parsed.labels
        }
    }

    public func withEncodedImage<Result>(_ index: Int, _ body: (UnsafeRawBufferPointer) throws -> Result) throws -> Result {
        try checkIndex(index)
        let key = key(of: index)
        return try reader.withPayload(key: key, offset: offsets[index], extent: Int(extents[index])) { payload in
            try body(try reader.parse(payload, key: key).image)
        }
    }

    private func checkIndex(_ index: Int) throws {
        guard index >= 0 && index < count else {
            throw DataError(.indexOutOfRange, "\(recordPath): no sample \(index) (the set has \(count))")
        }
    }

    // MARK: Opening

    static func locate(_ path: String) throws -> (record: String, index: String, property: String?) {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw DataError(.unreadable, "cannot open \(path): \(DataFiles.errorText())")
        }
        let directory: String
        let record: String
        let index: String
        if (info.st_mode & S_IFMT) == S_IFDIR {
            directory = path
            record = DataFiles.join(path, "train.rec")
            index = DataFiles.join(path, "train.idx")
        } else if path.hasSuffix(".rec") {
            directory = DataFiles.parent(path)
            record = path
            index = String(path.dropLast(4)) + ".idx"
        } else {
            throw DataError(.badFormat, "\(path) is neither a RecordIO .rec file nor a directory holding train.rec")
        }
        guard access(record, F_OK) == 0 else {
            throw DataError(.unreadable, "missing record file \(record): a RecordIO set needs train.rec and train.idx")
        }
        guard access(index, F_OK) == 0 else {
            throw DataError(.unreadable, "missing index file \(index): a RecordIO set needs its .idx beside the .rec")
        }
        let property = DataFiles.join(directory, "property")
        return (record, index, access(property, F_OK) == 0 ? property : nil)
    }

    static func readProperty(_ path: String) throws -> (classes: Int, size: (height: Int, width: Int)?) {
        let text = String(decoding: try ReadOnlyFile(path, what: "property file").readAll(), as: UTF8.self)
        let fields = text.split(separator: ",").map { Int(DataFiles.trimmed($0)) }
        guard (fields.count == 1 || fields.count == 3), fields.allSatisfy({ ($0 ?? 0) > 0 }) else {
            throw DataError(.badFormat, "\(path): expected 'num_classes,height,width', found '\(text.prefix(60))'")
        }
        return (fields[0]!, fields.count == 3 ? (fields[1]!, fields[2]!) : nil)
    }

    /// Which idx entries are images, in key order.
    private static func layout(_ index: IndexFile, reader: RecordReader, indexPath: String) throws
        -> (hasHeader: Bool, positions: [Int]) {
        let order = index.keyOrder
        guard let first = order.first, index.keys[first] == 0 else { return (false, order) }
        let offset = index.offsets[first]
        let headerEnd: Int?
        do {
            headerEnd = try reader.withPayload(key: 0, offset: offset, extent: 0) { payload in
                let parsed = try reader.parse(payload, key: 0)
                // InsightFace's header record carries labels and no image; a record 0 with image
                // bytes is an image even when it has a label array.
                guard parsed.header.flag > 0, parsed.image.isEmpty else { return nil }
                return try headerEndKey(parsed, recordPath: reader.name)
            }
        } catch let error as DataError {
            throw DataError(error.reason, "\(reader.name): cannot tell whether key 0 is a header record: \(error.message)")
        }
        guard let end = headerEnd else { return (false, order) }
        // Keys are unique and sorted, so 1..<end are all present exactly when key end−1 sits at end−1.
        guard order.count >= end, index.keys[order[end - 1]] == end - 1 else {
            let missing = (1..<end).first { $0 >= order.count || index.keys[order[$0]] != $0 } ?? end - 1
            throw DataError(.badFormat, "\(reader.name): the header record says images are keys 1..<\(end), "
                            + "but \(indexPath) has no key \(missing)")
        }
        return (true, Array(order[1..<end]))
    }

    /// One past the last image key. float32 cannot hold every key of sets over 16.7M images, so the
    /// writer also stores the exact value in `id`; it is used when it rounds to the float.
    private static func headerEndKey(_ parsed: RecordReader.ParsedPayload, recordPath: String) throws -> Int {
        let value = parsed.labels[0]
        guard value.isFinite, value >= 1, value == value.rounded(), value < 9.0e15 else {
            throw DataError(.badFormat, "\(recordPath): header record label \(value) is not a key count")
        }
        let end = Int(value)
        if end >= RecordIOFormat.exactFloatIntegers, parsed.header.id > 0, parsed.header.id < UInt64(Int.max),
           Float(parsed.header.id) == value {
            return Int(parsed.header.id)
        }
        return end
    }

    static func classId(_ value: Float, key: Int, declared: Int?, property: String?, name: String) throws -> Int {
        guard value.isFinite, value >= 0, value == value.rounded(), value < Float(Int32.max) else {
            throw DataError(.labelOutOfRange, "\(name) key \(key): label \(value) is not a class id")
        }
        let label = Int(value)
        if let declared, label >= declared {
            throw DataError(.labelOutOfRange, "\(name) key \(key): label \(label) is outside the \(declared) classes "
                            + "declared by \(property ?? "property")")
        }
        return label
    }

    static func firstIndex(in sorted: [Int], greaterThan value: Int) -> Int {
        var low = 0, high = sorted.count
        while low < high {
            let mid = (low + high) / 2
            if sorted[mid] <= value { low = mid + 1 } else { high = mid }
        }
        return low
    }
}

/// The parsed `train.idx`: one `key<TAB>offset` per line.
struct IndexFile {
    let keys: [Int]
    let offsets: [Int]
    /// Entry positions sorted by key.
    let keyOrder: [Int]

    init(path: String) throws {
        let bytes = try ReadOnlyFile(path, what: "index file").readAll()
        var keys: [Int] = []
        var offsets: [Int] = []
        keys.reserveCapacity(bytes.count / 12)
        offsets.reserveCapacity(bytes.count / 12)
        var line = 1
        var i = 0
        let n = bytes.count
        func isBlank(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0D }
        func number(_ i: inout Int) -> Int? {
            var value = 0, digits = 0
            while i < n, bytes[i] >= 0x30, bytes[i] <= 0x39, digits < 18 {
                value = value * 10 + Int(bytes[i] - 0x30); i += 1; digits += 1
            }
            return digits > 0 && (i == n || !(bytes[i] >= 0x30 && bytes[i] <= 0x39)) ? value : nil
        }
        while i < n {
            let lineStart = i
            while i < n, isBlank(bytes[i]) { i += 1 }
            if i == n { break }
            if bytes[i] == 0x0A { i += 1; line += 1; continue }
            let key = number(&i)
            let separatorStart = i
            while i < n, bytes[i] == 0x09 || bytes[i] == 0x20 { i += 1 }
            let offset = i > separatorStart ? number(&i) : nil
            while i < n, isBlank(bytes[i]) { i += 1 }
            guard let key, let offset, i == n || bytes[i] == 0x0A else {
                var end = lineStart
                while end < n, bytes[end] != 0x0A, end - lineStart < 60 { end += 1 }
                let text = String(decoding: bytes[lineStart..<end], as: UTF8.self)
                throw DataError(.badFormat, "\(path) line \(line): expected 'key<TAB>offset', found '\(text)'")
            }
            keys.append(key)
            offsets.append(offset)
            i += 1
            line += 1
        }
        var sorted = true
        for j in keys.indices.dropFirst() where keys[j - 1] >= keys[j] { sorted = false; break }
        let order = sorted ? Array(keys.indices) : keys.indices.sorted { keys[$0] < keys[$1] }
        for j in order.indices.dropFirst() where keys[order[j - 1]] == keys[order[j]] {
            throw DataError(.badFormat, "\(path) lists key \(keys[order[j]]) twice")
        }
        self.keys = keys
        self.offsets = offsets
        keyOrder = order
    }
}

/// Path and POSIX helpers shared by the RecordIO and image folder code.
enum DataFiles {
    static func errorText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

    static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func trimmed(_ text: Substring) -> Substring {
        var s = text
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return s
    }

    /// `mkdir -p`.
    static func makeDirectories(_ path: String) throws {
        var info = stat()
        if stat(path, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFDIR else { throw RecordIOWriteError("\(path) exists and is not a directory") }
            return
        }
        let parent = parent(path)
        if parent != path && parent != "." && parent != "/" { try makeDirectories(parent) }
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else {
            throw RecordIOWriteError("cannot create directory \(path): \(errorText())")
        }
    }

    /// Makes renames durable; file systems that cannot fsync a directory are not an error.
    static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }
}

// MARK: - Writing

public struct RecordIOWriteError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Writes a RecordIO set into a directory: `train.rec`, `train.idx`, `property`.
///
/// Everything goes to hidden temporary files that are renamed into place by `finish()` (the old
/// `train.idx` is removed first and the new one renamed last), so an interrupted writer never
/// leaves a set that opens. With `headerRecord` the set is laid out as InsightFace's packs: key 0
/// is the header record (labels [first identity key, one past the last]), images are keys 1…N,
/// and when labels were appended in ascending order, keys N+1… are identity records holding each
/// class's image key range. Not thread-safe: one writer, one thread.
public final class RecordIOWriter {
    public let directory: String
    public let hasHeaderRecord: Bool
    public private(set) var imageCount = 0
    /// Payloads that held the magic and were split into parts.
    public private(set) var splitRecordCount = 0

    private var records: OutputFile?
    private var index: OutputFile?
    private var classCounts: [Int] = []
    private var labelsAscending = true
    private var lastClass = 0
    private var payload: [UInt8] = []
    private var headerRecordSize = 0
    /// Distinguishes this writer's temporary files from those of any other writer.
    private let temporarySuffix = ".tmp-\(getpid())-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
    private var propertyTemporary: String?

    public init(directory: String, headerRecord: Bool = true) throws {
        self.directory = directory
        hasHeaderRecord = headerRecord
        try DataFiles.makeDirectories(directory)
        let records = try OutputFile(DataFiles.join(directory, ".train.rec" + temporarySuffix))
        let index: OutputFile
        do {
            index = try OutputFile(DataFiles.join(directory, ".train.idx" + temporarySuffix))
        } catch {
            records.discard()
            throw error
        }
        self.records = records
        self.index = index
        if headerRecord {
            // Reserved now and rewritten in place by finish(), once the counts are known.
            headerRecordSize = try writeRecord(key: 0, headerRecordPayload(imageCount: 0, identityCount: 0))
        }
    }

    deinit { cancel() }

    /// Appends an image record with a scalar label (flag 0); returns its key.
    @discardableResult
    public func append(image: UnsafeRawBufferPointer, label: Int) throws -> Int {
        precondition(label >= 0 && label < RecordIOFormat.exactFloatIntegers,
                     "label \(label) must be a class id below 2^24 (stored as float32)")
        let key = nextKey
        payload.removeAll(keepingCapacity: true)
        ImageRecordHeader(flag: 0, label: Float(label), id: UInt64(key), id2: 0).append(to: &payload)
        payload.append(contentsOf: image)
        try appendImage(key: key, classId: label)
        return key
    }

    /// Appends an image record with a label array (flag = count); the class is `labels[0]`.
    @discardableResult
    public func append(image: UnsafeRawBufferPointer, labels: [Float]) throws -> Int {
        precondition(!labels.isEmpty, "a label array needs at least the class")
        let first = labels[0]
        precondition(first >= 0 && first == first.rounded() && first < Float(RecordIOFormat.exactFloatIntegers),
                     "labels[0] = \(first) must be a class id")
        let key = nextKey
        payload.removeAll(keepingCapacity: true)
        ImageRecordHeader(flag: UInt32(labels.count), label: 0, id: UInt64(key), id2: 0).append(to: &payload)
        for value in labels { RecordIOFormat.appendLE32(&payload, value.bitPattern) }
        payload.append(contentsOf: image)
        try appendImage(key: key, classId: Int(first))
        return key
    }

    /// Writes the identity and header records and `property`, then renames the files into place.
    /// `classCount` defaults to the largest label + 1.
    public func finish(classCount: Int? = nil, imageHeight: Int = 112, imageWidth: Int = 112) throws {
        guard let records, let index else { preconditionFailure("finish() after finish() or cancel()") }
        do {
            guard imageCount > 0 else { throw RecordIOWriteError("\(directory): no images were written") }
            let classes = classCount ?? classCounts.count
            guard classes >= classCounts.count else {
                throw RecordIOWriteError("\(directory): labels go up to \(classCounts.count - 1), "
                                         + "but the class count is \(classes)")
            }
            if hasHeaderRecord {
                let identities = labelsAscending ? classes : 0
                var start = 1
                for c in 0..<identities {
                    let end = start + (c < classCounts.count ? classCounts[c] : 0)
                    try writeRecord(key: imageCount + 1 + c, headerRecordPayload(firstKey: start, endKey: end, id: 0))
                    start = end
                }
                let header = headerRecordPayload(imageCount: imageCount, identityCount: identities)
                let encoded = Self.encode(header)
                guard encoded.count == headerRecordSize else {
                    throw RecordIOWriteError("\(directory): the header record changed size; cannot rewrite it in place")
                }
                try records.flush()
                try records.write(encoded, at: 0)
            }
            let property = try OutputFile(DataFiles.join(directory, ".property" + temporarySuffix))
            propertyTemporary = property.path
            do {
                try property.append(Array("\(classes),\(imageHeight),\(imageWidth)".utf8))
                try property.close()
            } catch {
                property.discard()
                throw error
            }
            try records.close()
            try index.close()
            let finalIndex = DataFiles.join(directory, "train.idx")
            if unlink(finalIndex) != 0 && errno != ENOENT {
                throw RecordIOWriteError("cannot remove the old \(finalIndex): \(DataFiles.errorText())")
            }
            try rename(property.path, DataFiles.join(directory, "property"))
            try rename(records.path, DataFiles.join(directory, "train.rec"))
            try rename(index.path, finalIndex)
            self.records = nil
            self.index = nil
            propertyTemporary = nil
            DataFiles.syncDirectory(directory)
        } catch {
            cancel()
            throw error
        }
    }

    /// Removes the temporary files; the directory keeps whatever set it held before.
    public func cancel() {
        records?.discard()
        index?.discard()
        records = nil
        index = nil
        if let propertyTemporary { unlink(propertyTemporary) }
        propertyTemporary = nil
    }

    private var nextKey: Int { imageCount + (hasHeaderRecord ? 1 : 0) }

    private func appendImage(key: Int, classId: Int) throws {
        precondition(records != nil, "append after finish() or cancel()")
        if classId < lastClass { labelsAscending = false }
        lastClass = classId
        if classId >= classCounts.count { classCounts += [Int](repeating: 0, count: classId + 1 - classCounts.count) }
        classCounts[classId] += 1
        let parts = try writeRecord(key: key, payload)
        if parts > RecordIOFormat.padded(payload.count) + 8 { splitRecordCount += 1 }
        imageCount += 1
    }

    private func headerRecordPayload(imageCount: Int, identityCount: Int) -> [UInt8] {
        headerRecordPayload(firstKey: imageCount + 1, endKey: imageCount + 1 + identityCount, id: UInt64(imageCount + 1))
    }

    private func headerRecordPayload(firstKey: Int, endKey: Int, id: UInt64) -> [UInt8] {
        var bytes: [UInt8] = []
        ImageRecordHeader(flag: 2, label: 0, id: id, id2: 0).append(to: &bytes)
        RecordIOFormat.appendLE32(&bytes, Float(firstKey).bitPattern)
        RecordIOFormat.appendLE32(&bytes, Float(endKey).bitPattern)
        return bytes
    }

    /// Writes one record and its idx line; returns the record's size in the file.
    @discardableResult
    private func writeRecord(key: Int, _ payload: [UInt8]) throws -> Int {
        guard let records, let index else { preconditionFailure("write after finish() or cancel()") }
        guard payload.count <= Int(RecordIOFormat.lengthMask) else {
            throw RecordIOWriteError("key \(key): a payload of \(payload.count) bytes is over the 2^29-byte record limit")
        }
        let encoded = Self.encode(payload)
        try index.append(Array("\(key)\t\(records.position)\n".utf8))
        try records.append(encoded)
        return encoded.count
    }

    /// Frames a payload, splitting it wherever the magic sits at a 4-byte-aligned offset.
    static func encode(_ payload: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(payload.count + 16)
        payload.withUnsafeBytes { bytes in
            var start = 0
            var i = 0
            while i + 4 <= bytes.count {
                if RecordIOFormat.loadLE32(bytes.baseAddress!, i) == RecordIOFormat.magic {
                    let flag = start == 0 ? RecordIOFormat.firstPart : RecordIOFormat.middlePart
                    RecordIOFormat.appendLE32(&out, RecordIOFormat.magic)
                    RecordIOFormat.appendLE32(&out, flag << 29 | UInt32(i - start))
                    out.append(contentsOf: bytes[start..<i])
                    start = i + 4
                }
                i += 4
            }
            RecordIOFormat.appendLE32(&out, RecordIOFormat.magic)
            RecordIOFormat.appendLE32(&out, (start == 0 ? RecordIOFormat.wholeRecord : RecordIOFormat.lastPart) << 29
                             | UInt32(bytes.count - start))
            out.append(contentsOf: bytes[start...])
            out.append(contentsOf: repeatElement(0, count: RecordIOFormat.padded(bytes.count - start) - (bytes.count - start)))
        }
        return out
    }

    private func rename(_ from: String, _ to: String) throws {
        guard Glibc.rename(from, to) == 0 else {
            throw RecordIOWriteError("cannot rename \(from) to \(to): \(DataFiles.errorText())")
        }
    }
}

/// A file written through a 1 MB buffer, fsynced on close.
private final class OutputFile {
    let path: String
    private var descriptor: Int32
    private var buffer: [UInt8] = []
    /// Bytes written so far, buffered ones included.
    private(set) var position = 0

    init(_ path: String) throws {
        self.path = path
        descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw RecordIOWriteError("cannot create \(path): \(DataFiles.errorText())") }
        buffer.reserveCapacity(1 << 20)
    }

    func append(_ bytes: [UInt8]) throws {
        buffer.append(contentsOf: bytes)
        position += bytes.count
        if buffer.count >= 1 << 20 { try flush() }
    }

    func flush() throws {
        try buffer.withUnsafeBytes { try writeFully($0, at: nil) }
        buffer.removeAll(keepingCapacity: true)
    }

    /// Overwrites already flushed bytes.
    func write(_ bytes: [UInt8], at offset: Int) throws {
        try bytes.withUnsafeBytes { try writeFully($0, at: offset) }
    }

    func close() throws {
        try flush()
        guard fsync(descriptor) == 0 else { throw RecordIOWriteError("fsync of \(path) failed: \(DataFiles.errorText())") }
        let result = Glibc.close(descriptor)
        descriptor = -1
        guard result == 0 else { throw RecordIOWriteError("close of \(path) failed: \(DataFiles.errorText())") }
    }

    func discard() {
        if descriptor >= 0 { Glibc.close(descriptor); descriptor = -1 }
        unlink(path)
    }

    private func writeFully(_ bytes: UnsafeRawBufferPointer, at offset: Int?) throws {
        var done = 0
        while done < bytes.count {
            let rest = bytes.count - done
            let n = offset.map { pwrite(descriptor, bytes.baseAddress! + done, rest, off_t($0 + done)) }
                ?? Glibc.write(descriptor, bytes.baseAddress! + done, rest)
            if n < 0 {
                if errno == EINTR { continue }
                throw RecordIOWriteError("write to \(path) failed: \(DataFiles.errorText())")
            }
            done += n
        }
    }
}

// MARK: - Packing a sample source

public struct PackProgress: Sendable {
    public let done: Int
    public let total: Int
    /// Bytes of image data written so far.
    public let bytes: Int
}

public struct SkippedSample: Sendable, Equatable {
    public let index: Int
    public let error: DataError
}

public struct PackSummary: Sendable {
    public let images: Int
    public let classCount: Int
    /// Size of train.rec.
    public let recordBytes: Int
    public let splitRecords: Int
    /// Samples that could not be read or are not JPEG/PNG; they are left out of the set.
    public let skipped: [SkippedSample]
}

extension RecordIOWriter {
    /// Writes every sample of `source` (its encoded bytes, as they are) into a RecordIO set with a
    /// header record, reading with `threads` threads, then opens the result with the reader to check
    /// it. `progress` is called from the calling thread after every batch.
    public static func pack(_ source: SampleSource, into directory: String, threads: Int = 1,
                            imageHeight: Int = 112, imageWidth: Int = 112,
                            progress: ((PackProgress) -> Void)? = nil) throws -> PackSummary {
        enum Slot {
            case image([UInt8], Int)
            case failed(DataError)
        }
        let describe: (Int) -> String = { index in
            (source as? ImageFolderDataSet)?.relativePath(of: index) ?? "\(source.name) sample \(index)"
        }
        let writer = try RecordIOWriter(directory: directory, headerRecord: true)
        let workers = max(1, threads)
        let batch = 64 * workers
        let slots = UnsafeMutableBufferPointer<Slot?>.allocate(capacity: batch)
        slots.initialize(repeating: nil)
        defer { slots.deinitialize(); slots.deallocate() }
        var skipped: [SkippedSample] = []
        var bytes = 0
        do {
            var start = 0
            while start < source.count {
                let n = min(batch, source.count - start)
                DispatchQueue.concurrentPerform(iterations: min(workers, n)) { worker in
                    for j in stride(from: worker, to: n, by: workers) {
                        let index = start + j
                        do {
                            let label = try source.label(of: index)
                            let image = try source.withEncodedImage(index) { Array($0) }
                            slots[j] = image.withUnsafeBytes({ ImageFormat.detect($0) }) == nil
                                ? .failed(DataError(.undecodable, "\(describe(index)): not a JPEG or PNG file"))
                                : .image(image, label)
                        } catch let error as DataError {
                            slots[j] = .failed(error)
                        } catch {
                            slots[j] = .failed(DataError(.unreadable, "\(describe(index)): \(error)"))
                        }
                    }
                }
                for j in 0..<n {
                    switch slots[j]! {
                    case .image(let image, let label):
                        try image.withUnsafeBytes { _ = try writer.append(image: $0, label: label) }
                        bytes += image.count
                    case .failed(let error):
                        skipped.append(SkippedSample(index: start + j, error: error))
                    }
                    slots[j] = nil
                }
                start += n
                progress?(PackProgress(done: start, total: source.count, bytes: bytes))
            }
            try writer.finish(classCount: source.classCount, imageHeight: imageHeight, imageWidth: imageWidth)
        } catch {
            writer.cancel()
            throw error
        }
        let check = try RecordIODataSet(path: directory)
        guard check.count == writer.imageCount, check.classCount == source.classCount else {
            throw RecordIOWriteError("\(directory): read back \(check.count) images of \(check.classCount) classes, "
                                     + "wrote \(writer.imageCount) of \(source.classCount)")
        }
        let recordBytes = (try? ReadOnlyFile(check.recordPath, what: "record file").size) ?? 0
        return PackSummary(images: writer.imageCount, classCount: source.classCount, recordBytes: recordBytes,
                           splitRecords: writer.splitRecordCount, skipped: skipped)
    }
}
