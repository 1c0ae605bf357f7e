// Declarative command-line specs for adaface-dist. swift-argument-parser cannot be fetched here, so
// this small parser keeps its conventions instead: the same help layout, error texts and exit codes.
//
//   Arguments.swift           the specs (commands, options, positional arguments) and error types
//   Arguments+Parsing.swift   turning argv into a command path and raw values
//   Arguments+Values.swift    typed getters on the parsed values
//   Arguments+Help.swift      help, usage and error text
//   Arguments+Tool.swift      dispatch: help, errors, exit codes, output streams

/// One command of the tool: a leaf that runs, or a group of subcommands (or both).
///
/// Specs are plain values built once at start-up; mistakes in them (duplicate names, a required
/// positional after an optional one) are programming errors and stop the program with a message.
public struct CommandSpec {
    public let name: String
    /// One line, shown after `OVERVIEW:` and in the parent's `SUBCOMMANDS:` list.
    public let abstract: String
    /// Free text shown below the overview; line breaks are kept, long lines are wrapped.
    public let discussion: String?
    public let arguments: [ArgumentSpec]
    public let options: [OptionSpec]
    public let subcommands: [CommandSpec]
    /// Returns the exit code. A command without `run` prints its help, as swift-argument-parser's
    /// default `run()` does for command groups.
    public let run: ((ParsedArguments) throws -> Int32)?
    /// Exit code of a usage error in this command: 64 (EX_USAGE) unless the command documents
    /// another (`train` uses 2 for every mistake in how it was started, configuration or arguments).
    public let usageErrorExitCode: Int32

    public init(name: String, abstract: String, discussion: String? = nil,
                arguments: [ArgumentSpec] = [], options: [OptionSpec] = [],
                subcommands: [CommandSpec] = [], usageErrorExitCode: Int32 = CommandLineTool.usageErrorExitCode,
                run: ((ParsedArguments) throws -> Int32)? = nil) {
        self.name = name
        self.abstract = abstract
        self.discussion = discussion
        self.arguments = arguments
        self.options = options
        self.subcommands = subcommands
        self.usageErrorExitCode = usageErrorExitCode
        self.run = run
        validate()
    }

    private func validate() {
        precondition(!name.isEmpty && !name.hasPrefix("-") && !name.contains(" "),
                     "command name '\(name)' must be one word not starting with '-'")
        // The first word after a command group names the subcommand, so a group cannot also take
        // positional arguments without making that word ambiguous.
        precondition(subcommands.isEmpty || arguments.isEmpty,
                     "command '\(name)' has subcommands, so it cannot take positional arguments")

        var subcommandNames = Set<String>()
        for subcommand in subcommands {
            precondition(subcommand.name != "help", "'help' is reserved for the help subcommand")
            precondition(subcommandNames.insert(subcommand.name).inserted,
                         "command '\(name)' declares subcommand '\(subcommand.name)' twice")
        }

        // Options and positional arguments share one namespace: the getters look values up by name.
        var names = Set<String>()
        var shorts = Set<Character>()
        for option in options {
            precondition(option.name != "help" && option.short != "h",
                         "'-h, --help' is reserved (command '\(name)')")
            precondition(names.insert(option.name).inserted,
                         "command '\(name)' declares '\(option.name)' twice")
            if let short = option.short {
                precondition(shorts.insert(short).inserted,
                             "command '\(name)' declares '-\(short)' twice")
            }
        }
        var seenOptionalArgument = false
        for (index, argument) in arguments.enumerated() {
            precondition(names.insert(argument.name).inserted,
                         "command '\(name)' declares '\(argument.name)' twice")
            precondition(!argument.isRepeatable || index == arguments.count - 1,
                         "command '\(name)': only the last positional argument can repeat")
            // A required argument after an optional one could never be told apart from it.
            precondition(!(argument.isRequired && seenOptionalArgument),
                         "command '\(name)': required argument '<\(argument.name)>' follows an optional one")
            seenOptionalArgument = seenOptionalArgument || !argument.isRequired
        }
    }
}

/// A named option (`--batch 64`, `--batch=64`, `-b 64`) or flag (`--no-augment`, `-v`).
public struct OptionSpec {
    public enum Kind {
        case option
        case flag
    }

    public let kind: Kind
    /// The long name without dashes: `batch` for `--batch`.
    public let name: String
    public let short: Character?
    /// Shown in angle brackets: `--batch <batch>`.
    public let valueName: String
    public let help: String
    /// Used when the option is absent and shown in help as `(default: …)`.
    public let defaultValue: String?
    /// Every occurrence is kept, in order (`--set a=1 --set b=2`).
    public let isRepeatable: Bool
    /// Parsing fails with `Missing expected argument` when the option is absent.
    public let isRequired: Bool

    public static func option(_ name: String, short: Character? = nil, valueName: String? = nil,
                              help: String, default defaultValue: String? = nil,
                              repeatable: Bool = false, required: Bool = false) -> OptionSpec {
        precondition(!(required && defaultValue != nil),
                     "option '--\(name)' cannot be both required and defaulted")
        return OptionSpec(kind: .option, name: name, short: short, valueName: valueName ?? name,
                          help: help, defaultValue: defaultValue, isRepeatable: repeatable,
                          isRequired: required)
    }

    public static func flag(_ name: String, short: Character? = nil, help: String) -> OptionSpec {
        OptionSpec(kind: .flag, name: name, short: short, valueName: name, help: help,
                   defaultValue: nil, isRepeatable: false, isRequired: false)
    }

    private init(kind: Kind, name: String, short: Character?, valueName: String, help: String,
                 defaultValue: String?, isRepeatable: Bool, isRequired: Bool) {
        precondition(!name.isEmpty && !name.hasPrefix("-") && !name.contains("=")
                     && !name.contains(" "),
                     "option name '\(name)' must be given without dashes, '=' or spaces")
        if let short = short {
            precondition(short.isLetter || short.isNumber, "short name '-\(short)' must be alphanumeric")
        }
        self.kind = kind
        self.name = name
        self.short = short
        self.valueName = valueName
        self.help = help
        self.defaultValue = defaultValue
        self.isRepeatable = isRepeatable
        self.isRequired = isRequired
    }
}

/// A positional argument, filled in declaration order from the words that are not options.
public struct ArgumentSpec {
    /// Shown in angle brackets: `<images>`.
    public let name: String
    public let help: String
    public let defaultValue: String?
    /// Takes every remaining word; only the last argument may repeat.
    public let isRepeatable: Bool
    public let isRequired: Bool

    /// Required unless `optional` or given a default, like a non-optional `@Argument`.
    public static func argument(_ name: String, help: String, default defaultValue: String? = nil,
                                repeatable: Bool = false, optional: Bool = false) -> ArgumentSpec {
        precondition(!name.isEmpty && !name.contains(" "), "argument name '\(name)' must be one word")
        return ArgumentSpec(name: name, help: help, defaultValue: defaultValue,
                            isRepeatable: repeatable, isRequired: !optional && defaultValue == nil)
    }
}

/// A mistake in how the tool was invoked. Printed with the command's usage; exit code 64.
///
/// Commands throw it for their own checks (e.g. a missing `--images` directory) so the user sees
/// the same `Error:` / `Usage:` / `See '… --help'` block as for parsing errors.
public struct UsageError: Error, CustomStringConvertible {
    public let message: String
    /// swift-argument-parser's `Help:  --batch <batch>  Images per step.` line, for errors about
    /// one declared option or argument.
    let helpLine: String?

    public init(_ message: String) {
        self.init(message, helpLine: nil)
    }

    init(_ message: String, helpLine: String?) {
        self.message = message
        self.helpLine = helpLine
    }

    public var description: String { message }
}

/// Ends a command with a chosen exit code, e.g. 2 for an invalid config file; the message, if
/// any, is printed as `Error: <message>` without usage.
public struct CommandExit: Error, CustomStringConvertible {
    public let code: Int32
    public let message: String?

    public init(code: Int32, message: String? = nil) {
        self.code = code
        self.message = message
    }

    public var description: String { message ?? "exit code \(code)" }
}
