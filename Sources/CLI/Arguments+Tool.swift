// Dispatch: parses, prints help or errors, runs the chosen command and picks the exit code.
// All text goes through output streams so tests can capture it; `main` writes to the process's
// standard streams.

import Glibc

public enum CommandLineTool {
    /// EX_USAGE from sysexits.h, which swift-argument-parser also uses for validation failures.
    public static let usageErrorExitCode: Int32 = 64
    /// Errors thrown by a command that are neither `UsageError` nor `CommandExit`.
    public static let failureExitCode: Int32 = 1

    /// Runs the tool on the process's arguments and standard streams; returns the exit code.
    public static func main(_ root: CommandSpec,
                            arguments: [String] = Array(CommandLine.arguments.dropFirst())) -> Int32 {
        var output = StandardStream.output
        var errors = StandardStream.error
        let code = run(root, arguments: arguments, stdout: &output, stderr: &errors)
        // The caller may end the process without unwinding (MPI_Abort, _exit), so flush here.
        fflush(stdout)
        return code
    }

    /// Parses `arguments` (without the program name) against `root`, then prints help to `stdout`
    /// (exit 0), prints a usage error to `stderr` (exit 64, or the command's own usage exit code),
    /// or runs the innermost command.
    public static func run<Output: TextOutputStream, ErrorOutput: TextOutputStream>(
        _ root: CommandSpec, arguments: [String],
        stdout: inout Output, stderr: inout ErrorOutput
    ) -> Int32 {
        switch CommandLineParser.parse(root, arguments) {
        case .help(let stack):
            stdout.write(HelpFormatter.help(stack) + "\n")
            return 0
        case .failure(let error, let stack):
            stderr.write(HelpFormatter.error(error, stack: stack) + "\n")
            return stack.last?.usageErrorExitCode ?? usageErrorExitCode
        case .run(let parsed, let command):
            guard let body = command.run else {
                preconditionFailure("the parser only selects commands that can run")
            }
            do {
                return try body(parsed)
            } catch let error as UsageError {
                let stack = commandStack(root, path: parsed.commandPath)
                stderr.write(HelpFormatter.error(error, stack: stack) + "\n")
                return stack.last?.usageErrorExitCode ?? usageErrorExitCode
            } catch let exit as CommandExit {
                if let message = exit.message { stderr.write("Error: \(message)\n") }
                return exit.code
            } catch {
                stderr.write("Error: \(error)\n")
                return failureExitCode
            }
        }
    }

    /// The specs along `path`, which starts with the root's name.
    private static func commandStack(_ root: CommandSpec, path: [String]) -> [CommandSpec] {
        var stack = [root]
        for name in path.dropFirst() {
            guard let next = stack[stack.count - 1].subcommands.first(where: { $0.name == name }) else {
                preconditionFailure("command path \(path) does not match the command tree")
            }
            stack.append(next)
        }
        return stack
    }
}

/// The process's standard output or error as a `TextOutputStream`. Writes through C stdio, the
/// same buffer `print` uses, so the tool's text and a command's own prints keep their order.
struct StandardStream: TextOutputStream {
    private let file: UnsafeMutablePointer<FILE>

    static var output: StandardStream { StandardStream(file: stdout) }
    static var error: StandardStream { StandardStream(file: stderr) }

    mutating func write(_ string: String) {
        fputs(string, file)
    }
}
