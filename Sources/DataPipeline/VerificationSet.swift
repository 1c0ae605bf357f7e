// InsightFace verification sets (lfw.bin, cfp_fp.bin, agedb_30.bin, calfw.bin, cplfw.bin): a pickle of
// (bins, issame_list), 2K encoded images in consecutive pairs and K booleans.
//
// Forms met in the wild and read here: images as Python 2 str or Python 3 bytes, or as numpy uint8
// arrays (InsightFace's cfp2pack.py stores what cv2.imencode returns); issame as a list of bools, of
// numpy bools or of 0/1, or as a numpy bool or integer array.

import Foundation

public struct VerificationSet: Sendable {
    /// The file name without its extension, e.g. "lfw".
    public let name: String
    /// Encoded images (JPEG or PNG); images 2i and 2i+1 form pair i.
    public let images: [[UInt8]]
    /// Whether pair i shows one person.
    public let issame: [Bool]

    public var pairCount: Int { issame.count }

    public init(name: String, images: [[UInt8]], issame: [Bool]) throws {
        guard images.count == 2 * issame.count else {
            throw DataError(.badFormat, "\(name): \(images.count) images for \(issame.count) pairs; " +
                            "a verification set holds two images per pair")
        }
        self.name = name
        self.images = images
        self.issame = issame
    }

    /// Reads a `.bin` file.
    public static func read(path: String) throws -> VerificationSet {
        let url = URL(fileURLWithPath: path)
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .mappedIfSafe)
        } catch {
            throw DataError(.unreadable, "cannot read verification set \(path): \(error.localizedDescription)")
        }
        return try data.withUnsafeBytes {
            try parse($0, name: url.deletingPathExtension().lastPathComponent, source: path)
        }
    }

    /// Reads a verification set from the bytes of a `.bin` file; `name` names it in errors.
    public init(pickle: [UInt8], name: String) throws {
        self = try pickle.withUnsafeBytes { try Self.parse($0, name: name, source: name) }
    }

    private static func parse(_ bytes: UnsafeRawBufferPointer, name: String, source: String) throws -> VerificationSet {
        let root = try PickleReader.load(bytes, source: source)
        guard let parts = root.sequence, parts.count == 2 else {
            throw DataError(.badFormat, "\(source): expected a pickled (bins, issame_list) pair, found a \(root.kind)" +
                            (root.sequence.map { " of \($0.count) items" } ?? ""))
        }
        guard let bins = parts[0].sequence else {
            throw DataError(.badFormat, "\(source): the images are a \(parts[0].kind), expected a list")
        }
        let images = try bins.enumerated().map { i, value -> [UInt8] in
            switch value {
            case .bytes(let encoded):
                return encoded
            case .array(let array) where array.dtype.map({ $0.itemSize == 1 && "iu".contains($0.kind) }) == true:
                return array.data
            default:
                throw DataError(.badFormat, "\(source): image \(i) is a \(value.kind), expected bytes")
            }
        }
        let issame = try labels(parts[1], source)
        guard images.count == 2 * issame.count else {
            throw DataError(.badFormat, "\(source): \(images.count) images for \(issame.count) pairs; " +
                            "a verification set holds two images per pair")
        }
        return try VerificationSet(name: name, images: images, issame: issame)
    }

    private static func labels(_ value: PickleValue, _ source: String) throws -> [Bool] {
        if case .array(let array) = value {
            guard let dtype = array.dtype, dtype.kind != "f" else {
                throw DataError(.badFormat, "\(source): issame is a \(value.kind), expected booleans")
            }
            return (0..<array.elementCount).map { dtype.integer(array.data, $0) != 0 }
        }
        guard let items = value.sequence else {
            throw DataError(.badFormat, "\(source): issame is a \(value.kind), expected a list of booleans")
        }
        return try items.enumerated().map { i, item in
            switch item {
            case .bool(let flag): return flag
            case .int(let n) where n == 0 || n == 1: return n == 1
            case .scalar(let dtype, let raw) where dtype.kind != "f": return dtype.integer(raw, 0) != 0
            default: throw DataError(.badFormat, "\(source): issame[\(i)] is a \(item.kind), expected a boolean")
            }
        }
    }

    /// Decodes image `index` into `output` as `width`×`height` BGR. An undecodable image or one of
    /// another size throws a `DataError` that names the set and the index.
    public func decode(_ index: Int, into output: UnsafeMutableBufferPointer<UInt8>, using decoder: ImageDecoder,
                       width: Int = 112, height: Int = 112) throws {
        precondition(images.indices.contains(index), "image \(index) is outside \(name)'s \(images.count) images")
        do {
            try images[index].withUnsafeBytes {
                try decoder.decode($0, into: output, expectedWidth: width, expectedHeight: height)
            }
        } catch let error as ImageDecodingError {
            throw DataError(error.reason == .wrongSize ? .wrongSize : .undecodable,
                            "\(name) image \(index): \(error.message)")
        }
    }
}
