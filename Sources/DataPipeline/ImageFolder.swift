// Image folder sets, `root/<identity>/<image>` (the WebFace260M / WebFace4M layout): identity
// folders sorted by name give the class ids, images are sorted by name within an identity.

import Dispatch
import Glibc

/// An image folder set. Only `.jpg`, `.jpeg` and `.png` files (any case) are samples; everything
/// else (other files, hidden entries, nested folders, files directly under the root) is ignored
/// and counted. Identity folders without images get no class id and are listed in
/// `emptyIdentities`. Names sort by their UTF-8 bytes, as Python's `sorted` and `ls` in the C
/// locale do, so class ids agree across tools. Every method is safe to call from several threads;
/// `withEncodedImage` reads the file into a buffer allocated per call.
public final class ImageFolderDataSet: SampleSource, @unchecked Sendable {
    public static let imageExtensions: Set<String> = ["jpg", "jpeg", "png"]

    public let root: String
    /// Folder name of each class id.
    public let identities: [String]
    public let count: Int
    public var classCount: Int { identities.count }
    public var name: String { root }
    /// Entries that are not samples.
    public let ignoredCount: Int
    /// The first few ignored entries, relative to the root.
    public let ignoredExamples: [String]
    /// Identity folders holding no images (they are not classes).
    public let emptyIdentities: [String]

    /// Image file names, identity after identity.
    private let files: [String]
    /// `files` index of each class's first image; `classCount + 1` entries.
    private let classStarts: [Int]

    private static let exampleLimit = 10

    /// Lists the folder, with `threads` threads listing identity folders in parallel (listing is
    /// what takes time on network file systems with 200K identities).
    public init(root: String, threads: Int = 1) throws {
        let root = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
        self.root = root
        let top = try Self.list(root)
        var identityNames: [String] = []
        var ignored: [String] = []
        var ignoredCount = 0
        for entry in top {
            if entry.isDirectory && !entry.name.hasPrefix(".") {
                identityNames.append(entry.name)
            } else {
                ignoredCount += 1
                if ignored.count < Self.exampleLimit { ignored.append(entry.name) }
            }
        }
        guard !identityNames.isEmpty else {
            throw DataError(.emptyDataSet, top.isEmpty ? "\(root) is empty: expected one folder per identity"
                                                       : "\(root) holds no identity folders (root/<identity>/<image>)")
        }
        identityNames.sort(by: Self.byteOrder)

        // Each identity's listing goes to its own slot, so workers never share mutable state.
        struct Listing {
            var images: [String] = []
            var ignored: [String] = []
            var ignoredCount = 0
            var error: DataError?
        }
        var listings = [Listing](repeating: Listing(), count: identityNames.count)
        let workers = max(1, min(threads, identityNames.count))
        listings.withUnsafeMutableBufferPointer { buffer in
            let slots = buffer
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                for i in stride(from: worker, to: identityNames.count, by: workers) {
                    let folder = DataFiles.join(root, identityNames[i])
                    do {
                        var listing = Listing()
                        for entry in try Self.list(folder) {
                            if !entry.isDirectory && Self.isImageName(entry.name) {
                                listing.images.append(entry.name)
                            } else {
                                listing.ignoredCount += 1
                                if listing.ignored.count < Self.exampleLimit {
                                    listing.ignored.append(identityNames[i] + "/" + entry.name)
                                }
                            }
                        }
                        listing.images.sort(by: Self.byteOrder)
                        slots[i] = listing
                    } catch let error as DataError {
                        slots[i].error = error
                    } catch {
                        slots[i].error = DataError(.unreadable, "\(folder): \(error)")
                    }
                }
            }
        }

        var identities: [String] = []
        var files: [String] = []
        var classStarts: [Int] = [0]
        var empty: [String] = []
        for (i, listing) in listings.enumerated() {
            if let error = listing.error { throw error }
            ignoredCount += listing.ignoredCount
            for example in listing.ignored where ignored.count < Self.exampleLimit { ignored.append(example) }
            if listing.images.isEmpty {
                empty.append(identityNames[i])
                continue
            }
            identities.append(identityNames[i])
            files.append(contentsOf: listing.images)
            classStarts.append(files.count)
        }
        guard !files.isEmpty else {
            throw DataError(.emptyDataSet, "\(root) has \(identityNames.count) identity folders but no "
                            + ".jpg, .jpeg or .png images in them")
        }
        self.identities = identities
        self.files = files
        self.classStarts = classStarts
        self.count = files.count
        self.ignoredCount = ignoredCount
        self.ignoredExamples = ignored
        self.emptyIdentities = empty
    }

    /// `identity/image.jpg` of sample `index`.
    public func relativePath(of index: Int) -> String {
        identities[classOf(index)] + "/" + files[index]
    }

    public func path(of index: Int) -> String { DataFiles.join(root, relativePath(of: index)) }

    public func recordDescription(_ index: Int) -> String {
        index >= 0 && index < count ? path(of: index) : "\(root) sample \(index)"
    }

    /// The sample indices of class `classId`.
    public func samples(ofClass classId: Int) -> Range<Int> { classStarts[classId]..<classStarts[classId + 1] }

    public func label(of index: Int) throws -> Int {
        try checkIndex(index)
        return classOf(index)
    }

    public func withEncodedImage<Result>(_ index: Int, _ body: (UnsafeRawBufferPointer) throws -> Result) throws -> Result {
        try checkIndex(index)
        let path = path(of: index)
        let file = try ReadOnlyFile(path, what: "image")
        guard file.size > 0 else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: file.size, alignment: 16)
        defer { buffer.deallocate() }
        let n = try file.read(into: buffer, count: file.size, at: 0)
        return try body(UnsafeRawBufferPointer(start: buffer, count: n))
    }

    private func checkIndex(_ index: Int) throws {
        guard index >= 0 && index < count else {
            throw DataError(.indexOutOfRange, "\(root): no sample \(index) (the set has \(count))")
        }
    }

    /// The class whose range holds `index` (binary search over the class starts).
    private func classOf(_ index: Int) -> Int {
        var low = 0, high = classStarts.count - 1
        while high - low > 1 {
            let mid = (low + high) / 2
            if classStarts[mid] <= index { low = mid } else { high = mid }
        }
        return low
    }

    static func isImageName(_ name: String) -> Bool {
        guard !name.hasPrefix("."), let dot = name.lastIndex(of: ".") else { return false }
        return imageExtensions.contains(name[name.index(after: dot)...].lowercased())
    }

    static func byteOrder(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }

    struct Entry {
        let name: String
        let isDirectory: Bool
    }

    /// The entries of a directory except `.` and `..`; symbolic links count as what they point to.
    static func list(_ path: String) throws -> [Entry] {
        guard let directory = opendir(path) else {
            throw DataError(.unreadable, "cannot list \(path): \(DataFiles.errorText())")
        }
        defer { closedir(directory) }
        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        var entries: [Entry] = []
        while true {
            errno = 0
            guard let entry = readdir(directory) else {
                if errno != 0 { throw DataError(.unreadable, "cannot list \(path): \(DataFiles.errorText())") }
                break
            }
            let name = String(cString: (UnsafeRawPointer(entry) + nameOffset).assumingMemoryBound(to: CChar.self))
            if name == "." || name == ".." { continue }
            var isDirectory = Int32(entry.pointee.d_type) == Int32(DT_DIR)
            let type = Int32(entry.pointee.d_type)
            if type == Int32(DT_UNKNOWN) || type == Int32(DT_LNK) {
                var info = stat()
                isDirectory = stat(DataFiles.join(path, name), &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
            }
            entries.append(Entry(name: name, isDirectory: isDirectory))
        }
        return entries
    }
}
