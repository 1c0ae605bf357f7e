import Foundation

/// The single error type thrown by this module.
///
/// `source` is the file path (or a caller-chosen label for in-memory data), so that every message
/// says which file is damaged; `description` is "`source`: `message`".
public struct SerializationError: Error, CustomStringConvertible, LocalizedError, Equatable, Sendable {
    /// What went wrong, for callers that react differently (e.g. a missing tensor versus a damaged file).
    public enum Kind: Sendable, Equatable {
        /// An operating-system call failed (open, read, write, fsync, rename...).
        case io
        /// The data ends before its format says it should.
        case truncated
        /// The header (safetensors JSON or .npy dictionary) is malformed or inconsistent.
        case malformedHeader
        /// Well-formed but not supported here (unknown dtype, big-endian, Fortran order...).
        case unsupported
        /// A zstd frame is corrupt or fails its checksum.
        case corruptCompression
        /// The requested tensor does not exist.
        case missingTensor
        /// A tensor's size or type does not match what the caller asked for.
        case mismatch
    }

    public let kind: Kind
    public let source: String
    public let message: String

    public init(_ kind: Kind, source: String, _ message: String) {
        self.kind = kind
        self.source = source
        self.message = message
    }

    public var description: String { "\(source): \(message)" }
    public var errorDescription: String? { description }
}

/// The text of `strerror(code)`.
func systemErrorText(_ code: Int32) -> String {
    String(cString: strerror(code))
}
