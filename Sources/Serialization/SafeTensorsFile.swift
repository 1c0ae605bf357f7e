/// A parsed, validated safetensors file held in memory.
///
///     let file = try SafeTensorsFile.read(path: "ckpt.safetensors")   // plain or zstd-compressed
///     let step = file.metadata["step"]
///     for name in file.names { print(name, file.info(name)!.shape) }
///     let w = try file.floats("fc.weight")                            // any dtype, as Float
///     try file.copyFloats("fc.bias", into: biasBuffer)                // count must match
///     let labels = try file.int64s("labels")                          // integer dtypes only
///
/// Construction checks the whole layout the way the reference implementation does: the header is
/// a JSON object, every dtype is known, every shape matches its byte span, and the tensors tile the
/// data section exactly (no overlap, no gap, nothing missing or trailing). Any violation throws a
/// `SerializationError` whose message starts with the file path.
public struct SafeTensorsFile: Sendable {
    public struct TensorInfo: Sendable, Equatable {
        public let name: String
        public let dtype: TensorDType
        /// Empty for a scalar.
        public let shape: [Int]
        public let elementCount: Int
        /// Byte range relative to the start of the data section (the header's `data_offsets`).
        public let dataOffsets: Range<Int>
    }

    /// The path given to `read`, or the label given to `init(bytes:source:)`.
    public let source: String
    public let metadata: [String: String]
    /// All tensors in data-offset order.
    public let tensors: [TensorInfo]

    private let storage: [UInt8]
    private let dataStart: Int
    private let index: [String: Int]

    /// Tensor names in data-offset order.
    public var names: [String] { tensors.map(\.name) }

    /// Reads `path`; a file that starts with the zstd magic number is decompressed first.
    public static func read(path: String) throws -> SafeTensorsFile {
        var bytes = try FileIO.readAll(path)
        if bytes.withUnsafeBytes(Zstd.isFrame) {
            bytes = try Zstd.decompress(bytes, source: path)
        }
        return try SafeTensorsFile(bytes: bytes, source: path)
    }

    /// Parses uncompressed safetensors bytes; `source` names them in error messages.
    public init(bytes: [UInt8], source: String) throws {
        self.source = source
        self.storage = bytes
        func fail(_ kind: SerializationError.Kind, _ message: String) -> SerializationError {
            SerializationError(kind, source: source, message)
        }

        guard bytes.count >= 8 else {
            throw fail(.truncated, "file is \(bytes.count) bytes, shorter than the 8-byte header length field")
        }
        let headerLength = bytes.withUnsafeBytes { loadLE($0, 0, UInt64.self) }
        guard headerLength <= UInt64(bytes.count - 8) else {
            throw fail(.truncated, "header length \(headerLength) exceeds the \(bytes.count - 8) bytes after the length field")
        }
        let dataStart = 8 + Int(headerLength)
        let dataSize = bytes.count - dataStart
        guard headerLength > 0, bytes[8] == UInt8(ascii: "{") else {
            throw fail(.malformedHeader, "header does not start with '{'")
        }

        let root: JSONValue
        do {
            root = try bytes.withUnsafeBytes { try JSONParser.parse(UnsafeRawBufferPointer(rebasing: $0[8..<dataStart])) }
        } catch let error as JSONSyntaxError {
            throw fail(.malformedHeader, "header is not valid JSON: \(error.message) at header byte \(error.offset)")
        }
        guard case .object(let members) = root else {
            throw fail(.malformedHeader, "header is \(root.typeName), not a JSON object")
        }

        var metadata: [String: String] = [:]
        var unsorted: [TensorInfo] = []
        for (key, value) in members {
            if key == "__metadata__" {
                switch value {
                case .null: break
                case .object(let pairs):
                    for (name, item) in pairs {
                        guard case .string(let text) = item else {
                            throw fail(.malformedHeader, "__metadata__ value for \"\(name)\" is \(item.typeName), not a string")
                        }
                        metadata[name] = text
                    }
                default:
                    throw fail(.malformedHeader, "__metadata__ is \(value.typeName), not an object")
                }
                continue
            }
            unsorted.append(try Self.parseEntry(key, value, fail))
        }

        // Tile check, ordered by offsets; ties (zero-size tensors) keep header order.
        let order = unsorted.indices.sorted {
            (unsorted[$0].dataOffsets.lowerBound, unsorted[$0].dataOffsets.upperBound, $0)
                < (unsorted[$1].dataOffsets.lowerBound, unsorted[$1].dataOffsets.upperBound, $1)
        }
        var tensors: [TensorInfo] = []
        tensors.reserveCapacity(order.count)
        var covered = 0
        for i in order {
            let tensor = unsorted[i]
            let range = tensor.dataOffsets
            if range.lowerBound < covered {
                throw fail(.malformedHeader, "tensor \"\(tensor.name)\" data_offsets [\(range.lowerBound), \(range.upperBound)] "
                    + "overlap the previous tensor \"\(tensors.last!.name)\" ending at \(covered)")
            }
            if range.lowerBound > covered {
                throw fail(.malformedHeader, "tensor \"\(tensor.name)\" data_offsets [\(range.lowerBound), \(range.upperBound)] "
                    + "leave a gap after byte \(covered) of the data section")
            }
            if range.upperBound > dataSize {
                throw fail(.truncated, "tensor \"\(tensor.name)\" data_offsets [\(range.lowerBound), \(range.upperBound)] "
                    + "extend beyond the \(dataSize)-byte data section (file truncated?)")
            }
            covered = range.upperBound
            tensors.append(tensor)
        }
        guard covered == dataSize else {
            throw fail(.malformedHeader, "data section is \(dataSize) bytes but the tensors cover \(covered) (trailing data)")
        }

        self.dataStart = dataStart
        self.metadata = metadata
        self.tensors = tensors
        self.index = Dictionary(uniqueKeysWithValues: tensors.enumerated().map { ($1.name, $0) })
    }

    private static func parseEntry(_ name: String, _ value: JSONValue,
                                   _ fail: (SerializationError.Kind, String) -> SerializationError) throws -> TensorInfo {
        guard case .object(let fields) = value else {
            throw fail(.malformedHeader, "tensor \"\(name)\" entry is \(value.typeName), not an object")
        }
        func field(_ key: String) throws -> JSONValue {
            guard let found = fields.first(where: { $0.key == key }) else {
                throw fail(.malformedHeader, "tensor \"\(name)\" has no \"\(key)\"")
            }
            return found.value
        }
        func integers(_ key: String) throws -> [Int] {
            guard case .array(let items) = try field(key) else {
                throw fail(.malformedHeader, "tensor \"\(name)\" \(key) is not an array")
            }
            return try items.map { item in
                guard case .number(let text) = item, let number = Int(text), number >= 0 else {
                    throw fail(.malformedHeader, "tensor \"\(name)\" \(key) must hold non-negative integers")
                }
                return number
            }
        }

        guard case .string(let dtypeName) = try field("dtype") else {
            throw fail(.malformedHeader, "tensor \"\(name)\" dtype is not a string")
        }
        guard let dtype = TensorDType(rawValue: dtypeName) else {
            throw fail(.unsupported, "tensor \"\(name)\" has unknown or unsupported dtype \"\(dtypeName)\"")
        }
        let shape = try integers("shape")
        let offsets = try integers("data_offsets")
        guard offsets.count == 2, offsets[0] <= offsets[1] else {
            throw fail(.malformedHeader, "tensor \"\(name)\" data_offsets \(offsets) must be [begin, end] with begin <= end")
        }
        let elements = elementCount(of: shape)
        let needed = elements?.multipliedReportingOverflow(by: dtype.byteSize)
        guard let elements, let needed, !needed.overflow, needed.partialValue == offsets[1] - offsets[0] else {
            throw fail(.malformedHeader, "tensor \"\(name)\" shape \(shape) of \(dtypeName) does not match "
                + "data_offsets [\(offsets[0]), \(offsets[1])] spanning \(offsets[1] - offsets[0]) bytes")
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, elementCount: elements,
                          dataOffsets: offsets[0]..<offsets[1])
    }

    // MARK: - Access

    public func contains(_ name: String) -> Bool { index[name] != nil }

    public func info(_ name: String) -> TensorInfo? { index[name].map { tensors[$0] } }

    /// The tensor converted to Float from any dtype (integers convert exactly up to 2^24).
    public func floats(_ name: String) throws -> [Float] {
        let tensor = try lookUp(name)
        return try [Float](unsafeUninitializedCapacity: tensor.elementCount) { buffer, initialized in
            try copyFloats(tensor, into: buffer)
            initialized = tensor.elementCount
        }
    }

    /// Converts the tensor into `destination`, whose count must equal the tensor's element count.
    public func copyFloats(_ name: String, into destination: UnsafeMutableBufferPointer<Float>) throws {
        try copyFloats(try lookUp(name), into: destination)
    }

    /// The tensor's elements as Int64; throws for floating-point dtypes and U64 values above Int64.max.
    public func int64s(_ name: String) throws -> [Int64] {
        let tensor = try lookUp(name)
        let values = storage.withUnsafeBytes { tensor.dtype.decodeInt64s(rawBytes($0, tensor), count: tensor.elementCount) }
        guard let values else {
            throw SerializationError(.mismatch, source: source,
                                     "tensor \"\(name)\" is \(tensor.dtype.rawValue), which cannot be read as Int64 without loss")
        }
        return values
    }

    /// A copy of the tensor's raw little-endian bytes.
    public func bytes(_ name: String) throws -> [UInt8] {
        try withBytes(name) { Array($0) }
    }

    /// Calls `body` with the tensor's raw little-endian bytes, without copying; the pointer is
    /// valid only during the call.
    public func withBytes<Result>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> Result) throws -> Result {
        let tensor = try lookUp(name)
        return try storage.withUnsafeBytes { try body(rawBytes($0, tensor)) }
    }

    private func lookUp(_ name: String) throws -> TensorInfo {
        guard let i = index[name] else {
            throw SerializationError(.missingTensor, source: source, "no tensor named \"\(name)\"")
        }
        return tensors[i]
    }

    private func rawBytes(_ all: UnsafeRawBufferPointer, _ tensor: TensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: all[(dataStart + tensor.dataOffsets.lowerBound)..<(dataStart + tensor.dataOffsets.upperBound)])
    }

    private func copyFloats(_ tensor: TensorInfo, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard destination.count == tensor.elementCount else {
            throw SerializationError(.mismatch, source: source,
                                     "tensor \"\(tensor.name)\" has \(tensor.elementCount) elements (shape \(tensor.shape)) "
                                        + "but the destination holds \(destination.count)")
        }
        storage.withUnsafeBytes { tensor.dtype.decodeFloats(rawBytes($0, tensor), into: destination) }
    }
}
