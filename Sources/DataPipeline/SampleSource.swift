// What the loader reads: a training set of N samples, each an encoded image and a class label.
// RecordIO files, image folders and in-memory test sets implement it.

public protocol SampleSource: AnyObject {
    /// Samples in the set (the sampler permutes 0..<count).
    var count: Int { get }
    /// Number of identities (class ids are 0..<classCount).
    var classCount: Int { get }
    /// A short description for logs and errors, e.g. the path.
    var name: String { get }
    /// The class of sample `index`, without decoding its image. Throws `DataError` for a record
    /// that cannot be read or whose label is not a valid class.
    func label(of index: Int) throws -> Int
    /// Calls `body` with the encoded image bytes of sample `index`. Safe to call from several decode
    /// threads at once. Throws `DataError` for a record that cannot be read.
    func withEncodedImage<Result>(_ index: Int, _ body: (UnsafeRawBufferPointer) throws -> Result) throws -> Result
    /// Where sample `index` lives, for messages about a bad record (a file path, a record key).
    func recordDescription(_ index: Int) -> String
}

extension SampleSource {
    public func recordDescription(_ index: Int) -> String { "\(name) sample \(index)" }
}

/// Why a record or a data set could not be used. Per-record errors are skipped and counted by the
/// loader; errors of the whole set (a missing file, an empty folder) stop before training starts.
public struct DataError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Reason: String, Sendable, CaseIterable {
        case unreadable, badMagic, truncated, indexOutOfRange, labelOutOfRange, undecodable, wrongSize
        case emptyDataSet, badFormat
    }
    public let reason: Reason
    public let message: String

    public init(_ reason: Reason, _ message: String) { self.reason = reason; self.message = message }
    public var description: String { message }
}
