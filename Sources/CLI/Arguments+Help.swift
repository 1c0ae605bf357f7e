// Help, usage and error text in swift-argument-parser's layout, so that the tool reads like every
// other Swift command-line tool. The width is fixed at 80 columns so output is the same in a
// terminal, in a batch job's log and in tests.

enum HelpFormatter {
    static let screenWidth = 80
    static let indent = 2
    /// Help texts start in this column; longer labels put their text on the next line.
    static let labelColumnWidth = 26

    static func commandName(_ stack: [CommandSpec]) -> String {
        stack.map(\.name).joined(separator: " ")
    }

    // MARK: - Usage

    /// `adaface-dist bench backbone --arch <arch> [--batch <batch>]`, plus ` <subcommand>` for groups.
    static func usage(_ stack: [CommandSpec]) -> String {
        let command = stack[stack.count - 1]
        let elements = command.options.map { (synopsis: $0.usageSynopsis, isRequired: $0.isRequired) }
            + command.arguments.map { (synopsis: $0.usageSynopsis, isRequired: true) }
        var line = commandName(stack)
        // Like swift-argument-parser: past twelve elements only the required ones are spelled out.
        if elements.count > 12 {
            let required = elements.filter(\.isRequired).map(\.synopsis)
            line += required.isEmpty || required.count > 12
                ? " <options>"
                : " [<options>] " + required.joined(separator: " ")
        } else if !elements.isEmpty {
            line += " " + elements.map(\.synopsis).joined(separator: " ")
        }
        if !command.subcommands.isEmpty { line += " <subcommand>" }
        return line
    }

    // MARK: - Help

    static func help(_ stack: [CommandSpec]) -> String {
        let command = stack[stack.count - 1]
        var text = ""

        var overview = command.abstract
        if let discussion = command.discussion, !discussion.isEmpty {
            if !overview.isEmpty { overview += "\n" }
            overview += "\n" + discussion
        }
        if !overview.isEmpty {
            text += ("OVERVIEW: " + overview).wrapped(to: screenWidth) + "\n\n"
        }
        text += "USAGE: " + usage(stack) + "\n\n"

        let arguments = command.arguments.map {
            element(label: "<\($0.name)>", abstract: withDefault($0.help, $0.defaultValue))
        }
        let options = command.options.map {
            element(label: $0.helpLabel, abstract: withDefault($0.help, $0.defaultValue))
        } + [element(label: "-h, --help", abstract: "Show help information.")]
        let subcommands = command.subcommands.map { element(label: $0.name, abstract: $0.abstract) }

        text += [("ARGUMENTS", arguments), ("OPTIONS", options), ("SUBCOMMANDS", subcommands)]
            .filter { !$0.1.isEmpty }
            .map { "\($0.0):\n" + $0.1.joined() }
            .joined(separator: "\n")

        if !command.subcommands.isEmpty {
            var names = stack.map(\.name)
            names.insert("help", at: 1)
            text += "\n  See '\(names.joined(separator: " ")) <subcommand>' for detailed help."
        }
        return text
    }

    private static func withDefault(_ help: String, _ defaultValue: String?) -> String {
        guard let defaultValue = defaultValue, !defaultValue.isEmpty else { return help }
        return help.isEmpty ? "(default: \(defaultValue))" : "\(help) (default: \(defaultValue))"
    }

    /// One line of a section: the label indented by two, the text from column 26 wrapped at 80.
    private static func element(label: String, abstract: String) -> String {
        let paddedLabel = String(repeating: " ", count: indent) + label
        guard !abstract.isEmpty else { return paddedLabel + "\n" }
        let wrapped = abstract.wrapped(to: screenWidth, indent: labelColumnWidth)
        if paddedLabel.count < labelColumnWidth {
            return paddedLabel + String(wrapped.dropFirst(paddedLabel.count)) + "\n"
        }
        return paddedLabel + "\n" + wrapped + "\n"
    }

    // MARK: - Errors

    /// `Error: …`, an optional `Help:  …` line, `Usage: …` and where to find the full help.
    static func error(_ error: UsageError, stack: [CommandSpec]) -> String {
        var text = "Error: \(error.message)\n"
        if let helpLine = error.helpLine { text += "Help:  \(helpLine)\n" }
        text += "Usage: \(usage(stack))\n"
        text += "  See '\(commandName(stack)) --help' for more information."
        return text
    }
}

extension UsageError {
    static func missingExpected(_ label: String, repeatable: Bool, help: String) -> UsageError {
        UsageError("Missing expected argument '\(label)\(repeatable ? " ..." : "")'",
                   helpLine: help.isEmpty ? nil : "\(label)  \(help)")
    }

    static func missingValue(_ label: String, help: String) -> UsageError {
        UsageError("Missing value for '\(label)'", helpLine: help.isEmpty ? nil : "\(label)  \(help)")
    }

    /// `detail` follows the quoted label directly: `: expected an integer.` or `. Please provide …`.
    static func invalidValue(_ value: String, label: String, detail: String, help: String) -> UsageError {
        UsageError("The value '\(value)' is invalid for '\(label)'\(detail)",
                   helpLine: help.isEmpty ? nil : "\(label)  \(help)")
    }
}

extension OptionSpec {
    /// `-b, --batch <batch>` or `--no-augment`.
    var helpLabel: String {
        let names = (short.map { "-\($0), " } ?? "") + "--" + name
        return kind == .flag ? names : "\(names) <\(valueName)>"
    }

    /// `--arch <arch>`, `[--batch <batch>]`, `[--set <key=value> ...]`, `[--verbose]`.
    var usageSynopsis: String {
        var synopsis = kind == .flag ? "--\(name)" : "--\(name) <\(valueName)>"
        if isRepeatable { synopsis += " ..." }
        return isRequired ? synopsis : "[\(synopsis)]"
    }
}

extension ArgumentSpec {
    /// `<images>`, `[<out>]`, `<files> ...`.
    var usageSynopsis: String {
        var synopsis = "<\(name)>"
        if isRepeatable { synopsis += " ..." }
        return isRequired ? synopsis : "[\(synopsis)]"
    }
}

extension StringProtocol {
    /// Greedy word wrap at `columns`, every non-empty line indented by `indent`; explicit line
    /// breaks are kept. Breaks fall where swift-argument-parser's would, so help text matches it:
    /// a line is cut at the last space within `columns - indent` characters (a line that ends a
    /// paragraph must leave room for its line break), or at the first space after when a word is
    /// longer than that.
    func wrapped(to columns: Int, indent: Int = 0) -> String {
        let width = columns - indent
        precondition(width > 0, "no room to wrap text at \(columns) columns with indent \(indent)")
        let paragraphs = self.split(separator: "\n", omittingEmptySubsequences: false)
        var lines: [Substring] = []
        for (number, paragraph) in paragraphs.enumerated() {
            let fits = number == paragraphs.count - 1 ? width : width - 1
            var rest = Substring(paragraph)
            while rest.count > fits {
                let window = rest.prefix(width)
                guard let space = window.lastIndex(of: " ") ?? rest.firstIndex(of: " ") else { break }
                lines.append(rest[..<space])
                rest = rest[rest.index(after: space)...]
            }
            lines.append(rest)
        }
        let padding = String(repeating: " ", count: indent)
        return lines.map { $0.isEmpty ? "" : padding + $0 }.joined(separator: "\n")
    }
}
