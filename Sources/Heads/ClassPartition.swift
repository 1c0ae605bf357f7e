// Contiguous, even class ranges over the ranks (DESIGN.md §2.5): rank r owns
// [c_r, c_r + C_r) with C_r = ⌊C/P⌋ + (r < C mod P ? 1 : 0), c_r = ⌊C/P⌋·r + min(r, C mod P).

public struct ClassPartition: Equatable, Sendable {
    public let totalClasses: Int
    public let parts: Int

    public init(totalClasses: Int, parts: Int) throws {
        guard parts >= 1 else { throw HeadError.invalidConfiguration("the world must have at least one rank") }
        guard totalClasses >= parts else {
            throw HeadError.invalidConfiguration(
                "\(totalClasses) classes cannot be partitioned over \(parts) ranks: every rank needs at least one class")
        }
        self.totalClasses = totalClasses
        self.parts = parts
    }

    public func range(of rank: Int) -> Range<Int> {
        let base = totalClasses / parts, extra = totalClasses % parts
        let start = base * rank + min(rank, extra)
        return start..<(start + base + (rank < extra ? 1 : 0))
    }

    /// The rank that owns `classIndex`.
    public func owner(of classIndex: Int) -> Int {
        let base = totalClasses / parts, extra = totalClasses % parts
        let bigSpan = extra * (base + 1)
        return classIndex < bigSpan ? classIndex / (base + 1) : extra + (classIndex - bigSpan) / base
    }
}

public enum HeadError: Error, CustomStringConvertible, Equatable {
    case invalidConfiguration(String)
    case invalidBatch(String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let m): return "head configuration: \(m)"
        case .invalidBatch(let m): return "head batch: \(m)"
        }
    }
}
