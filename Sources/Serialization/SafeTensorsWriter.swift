/// Builds a safetensors file in memory and writes it atomically.
///
/// Format: 8-byte little-endian header length N, N bytes of JSON header (padded with spaces to a
/// multiple of 8, like the Python library), then the raw little-endian tensor data. Tensors are
/// laid out contiguously in the order they were added, so the output is deterministic.
///
///     var writer = SafeTensorsWriter()
///     writer.metadata["step"] = "1200"
///     writer.add("fc.weight", shape: [512, 25088], floats: weights)        // copies
///     writer.add("labels", shape: [4], int64s: [3, 1, 4, 1])
///     try writer.write(to: "ckpt.safetensors", compression: .zstd(level: 3))
///
/// Adding a duplicate name, a negative dimension, or bytes whose count disagrees with the shape is
/// a programming error and stops the process (precondition).
public struct SafeTensorsWriter: Sendable {
    private struct Entry: Sendable {
        let name: String
        let dtype: TensorDType
        let shape: [Int]
        let begin: Int
        let end: Int
    }

    private var entries: [Entry] = []
    private var names: Set<String> = []
    private var data: [UInt8] = []

    /// String key/value pairs stored as the header's `__metadata__` (omitted when empty).
    public var metadata: [String: String] = [:]

    public init() {}

    /// Number of tensors added so far.
    public var count: Int { entries.count }

    /// Adds raw little-endian element bytes; `bytes.count` must equal the shape's element count
    /// times `dtype.byteSize`. An empty shape is a scalar (one element).
    public mutating func add(_ name: String, dtype: TensorDType, shape: [Int], bytes: UnsafeRawBufferPointer) {
        precondition(!name.isEmpty && name != "__metadata__", "invalid tensor name \"\(name)\"")
        precondition(!names.contains(name), "tensor \"\(name)\" added twice")
        guard let elements = elementCount(of: shape) else {
            preconditionFailure("tensor \"\(name)\" has an invalid shape \(shape)")
        }
        precondition(bytes.count == elements * dtype.byteSize,
                     "tensor \"\(name)\": \(bytes.count) bytes given, shape \(shape) of \(dtype.rawValue) needs \(elements * dtype.byteSize)")
        let begin = data.count
        data.append(contentsOf: bytes)
        entries.append(Entry(name: name, dtype: dtype, shape: shape, begin: begin, end: data.count))
        names.insert(name)
    }

    public mutating func add(_ name: String, dtype: TensorDType, shape: [Int], bytes: [UInt8]) {
        bytes.withUnsafeBytes { add(name, dtype: dtype, shape: shape, bytes: $0) }
    }

    /// Adds floats, stored as `dtype` (F32 by default; F16 and BF16 round to nearest even).
    public mutating func add(_ name: String, shape: [Int], floats: UnsafeBufferPointer<Float>,
                             storedAs dtype: TensorDType = .f32) {
        let encoded = dtype.encodeFloats(floats)
        add(name, dtype: dtype, shape: shape, bytes: encoded)
    }

    public mutating func add(_ name: String, shape: [Int], floats: [Float], storedAs dtype: TensorDType = .f32) {
        floats.withUnsafeBufferPointer { add(name, shape: shape, floats: $0, storedAs: dtype) }
    }

    public mutating func add(_ name: String, shape: [Int], int64s: [Int64]) {
        var bytes = [UInt8](repeating: 0, count: int64s.count * 8)
        bytes.withUnsafeMutableBytes { out in
            for (i, value) in int64s.enumerated() { storeLE(out, i, value) }
        }
        add(name, dtype: .i64, shape: shape, bytes: bytes)
    }

    /// The complete file contents.
    public func encoded() -> [UInt8] {
        var bytes = headerWithPrefix()
        bytes.append(contentsOf: data)
        return bytes
    }

    /// Writes the file atomically (see `AtomicFile`); with `.zstd` the whole file is one zstd frame,
    /// which `SafeTensorsFile.read` recognises by its magic number.
    public func write(to path: String, compression: Compression = .none) throws {
        let header = headerWithPrefix()
        try header.withUnsafeBytes { head in
            try data.withUnsafeBytes { body in
                switch compression {
                case .none:
                    try AtomicFile.write(parts: [head, body], to: path)
                case .zstd(let level):
                    let frame: [UInt8]
                    do {
                        frame = try Zstd.compress(parts: [head, body], level: level)
                    } catch let error as SerializationError {
                        throw SerializationError(error.kind, source: path, error.message)
                    }
                    try AtomicFile.write(frame, to: path)
                }
            }
        }
    }

    /// Length prefix plus space-padded JSON header.
    private func headerWithPrefix() -> [UInt8] {
        var members: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { "\(jsonQuoted($0)):\(jsonQuoted(metadata[$0]!))" }
            members.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        for entry in entries {
            let shape = entry.shape.map(String.init).joined(separator: ",")
            members.append("\(jsonQuoted(entry.name)):{\"dtype\":\"\(entry.dtype.rawValue)\",\"shape\":[\(shape)],"
                + "\"data_offsets\":[\(entry.begin),\(entry.end)]}")
        }
        var json = Array("{\(members.joined(separator: ","))}".utf8)
        // Padding keeps the data section 8-byte aligned, as the Python library does.
        json.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (8 - json.count % 8) % 8))
        var bytes = [UInt8](repeating: 0, count: 8)
        bytes.withUnsafeMutableBytes { storeLE($0, 0, UInt64(json.count)) }
        bytes.append(contentsOf: json)
        return bytes
    }
}

/// How `SafeTensorsWriter.write` stores the file.
public enum Compression: Sendable, Equatable {
    case none
    /// One zstd frame with content size and checksum; see `Zstd.levels` for valid levels.
    case zstd(level: Int)
}
