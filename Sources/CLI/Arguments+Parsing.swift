// Turns argv into a command path and the raw values given at each level of it.

/// The words given to one command of the path, before typed conversion.
struct ParsedLevel {
    let spec: CommandSpec
    /// Option and positional values by declared name, in the order given.
    var values: [String: [String]] = [:]
    /// The spelling last used for each option (`-b` or `--batch`), so errors quote what was typed.
    var spellings: [String: String] = [:]
    var flags: Set<String> = []
    /// Words not yet assigned to positional arguments.
    var words: [String] = []

    init(spec: CommandSpec) {
        self.spec = spec
    }
}

enum ParseOutcome {
    case help(stack: [CommandSpec])
    case failure(UsageError, stack: [CommandSpec])
    case run(ParsedArguments, command: CommandSpec)
}

struct CommandLineParser {
    static let helpSpellings: Set<String> = ["-h", "--help", "-help"]

    private let tokens: [String]
    private var next = 0
    private var levels: [ParsedLevel]
    private var helpRequested = false
    /// After the `help` pseudo-subcommand every word names a subcommand to describe.
    private var inHelpCommand = false
    /// Parsing goes on after the first error so that a later `--help` still wins over it.
    private var firstError: (error: UsageError, stack: [CommandSpec])?

    private var stack: [CommandSpec] { levels.map(\.spec) }
    private var current: CommandSpec { levels[levels.count - 1].spec }

    static func parse(_ root: CommandSpec, _ tokens: [String]) -> ParseOutcome {
        var parser = CommandLineParser(tokens: tokens, levels: [ParsedLevel(spec: root)])
        return parser.parse()
    }

    private init(tokens: [String], levels: [ParsedLevel]) {
        self.tokens = tokens
        self.levels = levels
    }

    private mutating func parse() -> ParseOutcome {
        var optionsEnded = false
        while next < tokens.count {
            let token = tokens[next]
            next += 1
            if optionsEnded {
                if !inHelpCommand { levels[levels.count - 1].words.append(token) }
            } else if token == "--" {
                optionsEnded = true
            } else if Self.helpSpellings.contains(token) {
                helpRequested = helpRequested || !inHelpCommand
            } else if Self.looksLikeOption(token) {
                if inHelpCommand { continue }
                if token.hasPrefix("--") {
                    parseLongOption(token)
                } else {
                    parseShortOptions(token)
                }
            } else {
                parseWord(token)
            }
        }

        if helpRequested { return .help(stack: stack) }
        if let failure = firstError { return .failure(failure.error, stack: failure.stack) }
        guard current.run != nil else { return .help(stack: stack) }
        for index in levels.indices {
            if let error = levels[index].assignWordsAndCheckRequired() {
                return .failure(error, stack: Array(stack.prefix(index + 1)))
            }
        }
        return .run(ParsedArguments(levels: levels), command: current)
    }

    /// `-5` and `-0.5` are values (a negative clip threshold, say), not short options.
    static func looksLikeOption(_ token: String) -> Bool {
        guard token.count > 1, token.first == "-" else { return false }
        let rest = token.dropFirst()
        if let first = rest.first, first.isASCII, first.isNumber { return false }
        if rest.first == ".", let second = rest.dropFirst().first, second.isASCII, second.isNumber {
            return false
        }
        return true
    }

    private mutating func fail(_ error: UsageError) {
        if firstError == nil { firstError = (error, stack) }
    }

    private mutating func parseWord(_ word: String) {
        let command = current
        if inHelpCommand || !command.subcommands.isEmpty {
            if !inHelpCommand && levels.count == 1 && word == "help" {
                inHelpCommand = true
                helpRequested = true
            } else if let subcommand = command.subcommands.first(where: { $0.name == word }) {
                levels.append(ParsedLevel(spec: subcommand))
            } else {
                fail(Self.unknownSubcommand(word, in: command))
                // `help <name>` asks about that name, so a wrong one is the answer, not the help.
                if inHelpCommand { helpRequested = false }
            }
            return
        }
        levels[levels.count - 1].words.append(word)
    }

    private mutating func parseLongOption(_ token: String) {
        let body = token.dropFirst(2)
        let name: Substring
        let attached: String?
        if let equals = body.firstIndex(of: "=") {
            name = body[..<equals]
            attached = String(body[body.index(after: equals)...])
        } else {
            name = body
            attached = nil
        }
        guard let option = current.options.first(where: { $0.name == name }) else {
            fail(Self.unknownOption("--" + name, in: current))
            return
        }
        take(option, spelledAs: "--" + name, attachedValue: attached)
    }

    /// `-v`, or a group of short flags `-vq` whose last member may take the next word as its value.
    private mutating func parseShortOptions(_ token: String) {
        let letters = Array(token.dropFirst())
        for (position, letter) in letters.enumerated() {
            guard let option = current.options.first(where: { $0.short == letter }) else {
                fail(UsageError("Unknown option '-\(letter)'"))
                return
            }
            if option.kind == .option && position != letters.count - 1 {
                fail(Self.missingValue(option, spelledAs: "-\(letter)"))
                return
            }
            take(option, spelledAs: "-\(letter)", attachedValue: nil)
        }
    }

    private mutating func take(_ option: OptionSpec, spelledAs spelling: String, attachedValue: String?) {
        let level = levels.count - 1
        switch option.kind {
        case .flag:
            if let value = attachedValue {
                fail(UsageError("The option '\(spelling)' does not take any value, but '\(value)' was specified."))
            } else {
                levels[level].flags.insert(option.name)
            }
        case .option:
            let value: String
            if let attachedValue = attachedValue {
                value = attachedValue
            } else if next < tokens.count, !Self.looksLikeOption(tokens[next]) {
                value = tokens[next]
                next += 1
            } else {
                fail(Self.missingValue(option, spelledAs: spelling))
                return
            }
            levels[level].values[option.name, default: []].append(value)
            levels[level].spellings[option.name] = spelling
        }
    }

    // MARK: - Errors

    /// swift-argument-parser only suggests names within this edit distance.
    static let suggestionDistanceLimit = 4

    static func unknownOption(_ spelling: String, in command: CommandSpec) -> UsageError {
        let candidates = command.options.map { "--" + $0.name }
        if let suggestion = closest(to: spelling, among: candidates, below: suggestionDistanceLimit) {
            return UsageError("Unknown option '\(spelling)'. Did you mean '\(suggestion)'?")
        }
        return UsageError("Unknown option '\(spelling)'")
    }

    static func unknownSubcommand(_ word: String, in command: CommandSpec) -> UsageError {
        // Subcommand names are short words with no shared `--` prefix, so the limit also scales
        // with the length of the name: `xyz` should not suggest `embed`.
        let candidates = command.subcommands.map(\.name)
        let limit = min(suggestionDistanceLimit, max(2, word.count / 2 + 1))
        if let suggestion = closest(to: word, among: candidates, below: limit) {
            return UsageError("Unknown subcommand '\(word)'. Did you mean '\(suggestion)'?")
        }
        return UsageError("Unknown subcommand '\(word)'")
    }

    static func missingValue(_ option: OptionSpec, spelledAs spelling: String) -> UsageError {
        UsageError.missingValue("\(spelling) <\(option.valueName)>", help: option.help)
    }

    /// The first candidate at the smallest edit distance, if that distance is below `limit`.
    static func closest(to word: String, among candidates: [String], below limit: Int) -> String? {
        var best: (candidate: String, distance: Int)?
        for candidate in candidates {
            let distance = editDistance(word, candidate)
            if distance < limit && distance < (best?.distance ?? Int.max) {
                best = (candidate, distance)
            }
        }
        return best?.candidate
    }

    /// Levenshtein distance (insertions, deletions, substitutions), one row at a time.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count)
        var row = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            row[0] = i
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                row[j] = min(substitution, previous[j] + 1, row[j - 1] + 1)
            }
            swap(&previous, &row)
        }
        return previous[b.count]
    }
}

extension ParsedLevel {
    /// Fills positional arguments from the collected words, then reports the first missing
    /// required option or argument, or the words nothing asked for.
    mutating func assignWordsAndCheckRequired() -> UsageError? {
        var remaining = words[...]
        for argument in spec.arguments where !remaining.isEmpty {
            if argument.isRepeatable {
                values[argument.name] = Array(remaining)
                remaining = []
            } else {
                values[argument.name] = [remaining.removeFirst()]
            }
        }
        if remaining.count == 1 {
            return UsageError("Unexpected argument '\(remaining[remaining.startIndex])'")
        }
        if remaining.count > 1 {
            return UsageError("\(remaining.count) unexpected arguments: '\(remaining.joined(separator: "', '"))'")
        }
        for option in spec.options where option.isRequired && values[option.name] == nil {
            return UsageError.missingExpected("--\(option.name) <\(option.valueName)>",
                                              repeatable: option.isRepeatable, help: option.help)
        }
        for argument in spec.arguments where argument.isRequired && values[argument.name] == nil {
            return UsageError.missingExpected("<\(argument.name)>", repeatable: argument.isRepeatable,
                                              help: argument.help)
        }
        return nil
    }
}
