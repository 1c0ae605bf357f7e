// Typed access to parsed values. Conversion happens here rather than in the specs so that a
// command states the type where it uses the value; a bad value becomes a `UsageError` that names
// the option the way swift-argument-parser does.

/// The values given to a command and to each command above it.
///
/// Getters look a name up in the innermost command first, so a subcommand sees its parents'
/// options too. Asking for a name no command on the path declares is a programming error.
/// Absent options fall back to their declared default.
public struct ParsedArguments {
    /// Command names from the root: `["adaface-dist", "bench", "backbone"]`.
    public let commandPath: [String]
    let levels: [ParsedLevel]

    init(levels: [ParsedLevel]) {
        self.levels = levels
        self.commandPath = levels.map(\.spec.name)
    }

    // MARK: - Flags and strings

    public func flag(_ name: String) -> Bool {
        let (level, declared) = lookup(name)
        guard case .option(let option) = declared, option.kind == .flag else {
            preconditionFailure("'\(name)' is not a flag")
        }
        return level.flags.contains(option.name)
    }

    /// Whether the option or argument appeared on the command line (defaults do not count).
    public func isGiven(_ name: String) -> Bool {
        let (level, declared) = lookup(name)
        if case .option(let option) = declared, option.kind == .flag {
            return level.flags.contains(name)
        }
        return level.values[name] != nil
    }

    /// The last value given, else the default, else nil.
    public func string(_ name: String) -> String? {
        resolve(name).values.last
    }

    /// Every value given, in order; else the default alone; else empty.
    public func strings(_ name: String) -> [String] {
        resolve(name).values
    }

    public func requiredString(_ name: String) throws -> String {
        let entry = resolve(name)
        guard let value = entry.values.last else { throw entry.missing() }
        return value
    }

    // MARK: - Numbers

    public func int(_ name: String, min: Int? = nil, max: Int? = nil) throws -> Int? {
        let entry = resolve(name)
        guard let text = entry.values.last else { return nil }
        guard let value = Int(text) else { throw entry.invalid(text, "expected an integer.") }
        try checkRange(value, min: min, max: max, text: text, entry: entry)
        return value
    }

    public func requiredInt(_ name: String, min: Int? = nil, max: Int? = nil) throws -> Int {
        guard let value = try int(name, min: min, max: max) else { throw resolve(name).missing() }
        return value
    }

    /// Finite values only: `nan` and `inf` parse as doubles but are never a sensible setting.
    public func double(_ name: String, min: Double? = nil, max: Double? = nil) throws -> Double? {
        let entry = resolve(name)
        guard let text = entry.values.last else { return nil }
        guard let value = Double(text), value.isFinite else {
            throw entry.invalid(text, "expected a number.")
        }
        try checkRange(value, min: min, max: max, text: text, entry: entry)
        return value
    }

    public func requiredDouble(_ name: String, min: Double? = nil, max: Double? = nil) throws -> Double {
        guard let value = try double(name, min: min, max: max) else { throw resolve(name).missing() }
        return value
    }

    private func checkRange<Value: Comparable>(_ value: Value, min: Value?, max: Value?,
                                               text: String, entry: ResolvedEntry) throws {
        switch (min, max) {
        case let (low?, high?) where value < low || value > high:
            throw entry.invalid(text, "must be between \(low) and \(high).")
        case let (low?, nil) where value < low:
            throw entry.invalid(text, "must be at least \(low).")
        case let (nil, high?) where value > high:
            throw entry.invalid(text, "must be at most \(high).")
        default:
            return
        }
    }

    // MARK: - Choices and key=value pairs

    /// The value, which must be one of `allowed`.
    public func choice(_ name: String, _ allowed: [String]) throws -> String? {
        precondition(!allowed.isEmpty, "choice '\(name)' needs at least one allowed value")
        let entry = resolve(name)
        guard let value = entry.values.last else { return nil }
        guard allowed.contains(value) else { throw entry.notOneOf(value, allowed) }
        return value
    }

    public func requiredChoice(_ name: String, _ allowed: [String]) throws -> String {
        guard let value = try choice(name, allowed) else { throw resolve(name).missing() }
        return value
    }

    /// Every `key=value` given (e.g. repeated `--set lr=0.1`), in order; split at the first `=`.
    public func keyValuePairs(_ name: String) throws -> [(key: String, value: String)] {
        let entry = resolve(name)
        return try entry.values.map { text -> (key: String, value: String) in
            guard let equals = text.firstIndex(of: "="), equals != text.startIndex else {
                throw entry.invalid(text, "expected key=value.")
            }
            return (String(text[..<equals]), String(text[text.index(after: equals)...]))
        }
    }

    // MARK: - Lookup

    enum Declared {
        case option(OptionSpec)
        case argument(ArgumentSpec)
    }

    private func lookup(_ name: String) -> (ParsedLevel, Declared) {
        for level in levels.reversed() {
            if let option = level.spec.options.first(where: { $0.name == name }) {
                return (level, .option(option))
            }
            if let argument = level.spec.arguments.first(where: { $0.name == name }) {
                return (level, .argument(argument))
            }
        }
        preconditionFailure("'\(name)' is not declared by '\(commandPath.joined(separator: " "))' "
                            + "or the commands above it")
    }

    private func resolve(_ name: String) -> ResolvedEntry {
        let (level, declared) = lookup(name)
        switch declared {
        case .option(let option):
            precondition(option.kind == .option, "'--\(name)' is a flag; read it with flag(_:)")
            let spelling = level.spellings[name] ?? "--\(name)"
            return ResolvedEntry(values: level.values[name] ?? option.defaultValue.map { [$0] } ?? [],
                                 label: "\(spelling) <\(option.valueName)>",
                                 missingLabel: "--\(name) <\(option.valueName)>",
                                 isRepeatable: option.isRepeatable, help: option.help)
        case .argument(let argument):
            return ResolvedEntry(values: level.values[name] ?? argument.defaultValue.map { [$0] } ?? [],
                                 label: "<\(name)>", missingLabel: "<\(name)>",
                                 isRepeatable: argument.isRepeatable, help: argument.help)
        }
    }
}

/// One option's or argument's values together with what its error messages need.
struct ResolvedEntry {
    var values: [String]
    /// `--batch <batch>` as typed (`-b <batch>` after `-b`), for invalid values.
    var label: String
    /// Always the long name, as nothing was typed.
    var missingLabel: String
    var isRepeatable: Bool
    var help: String

    func invalid(_ value: String, _ reason: String) -> UsageError {
        UsageError.invalidValue(value, label: label, detail: ": " + reason, help: help)
    }

    /// swift-argument-parser's wording for enumerations: an inline list up to five values,
    /// a bulleted one beyond.
    func notOneOf(_ value: String, _ allowed: [String]) -> UsageError {
        let quoted = allowed.map { "'\($0)'" }
        let detail: String
        if quoted.count <= 2 {
            detail = ". Please provide one of \(quoted.joined(separator: " and "))."
        } else if quoted.count < 6 {
            detail = ". Please provide one of \(quoted.dropLast().joined(separator: ", ")) or \(quoted[quoted.count - 1])."
        } else {
            detail = ". Please provide one of the following:\n"
                + allowed.map { "  - \($0)" }.joined(separator: "\n")
        }
        return UsageError.invalidValue(value, label: label, detail: detail, help: help)
    }

    func missing() -> UsageError {
        UsageError.missingExpected(missingLabel, repeatable: isRepeatable, help: help)
    }
}
