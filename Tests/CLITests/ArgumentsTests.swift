// Behaviour of the hand-written argument parser: golden help and error texts in
// swift-argument-parser's layout, exit codes, and how values reach the typed getters.

import CLI
import XCTest

final class ArgumentsTests: XCTestCase {
    // MARK: - A small fake command tree

    /// `adaface-dist` with `bench backbone`, `embed` and `train`; every leaf runs `body`.
    private func makeTool(_ body: @escaping (ParsedArguments) throws -> Int32) -> CommandSpec {
        let backbone = CommandSpec(
            name: "backbone", abstract: "Time forward and backward passes of the backbone.",
            options: [
                .option("arch", help: "Backbone architecture: ir18, ir34, ir50, ir100 (alias ir101).",
                        required: true),
                .option("batch", short: "b", help: "Images per step.", default: "64"),
                .option("threads", help: "Worker threads; 0 uses every core.", default: "0"),
                .option("steps", help: "Timed steps after one warm-up step.", default: "10"),
            ],
            run: body)
        let bench = CommandSpec(name: "bench", abstract: "Measure kernel and model throughput.",
                                subcommands: [backbone])
        let embed = CommandSpec(
            name: "embed", abstract: "Write one embedding per image.",
            arguments: [.argument("images", help: "Directory of aligned 112x112 face crops.")],
            options: [
                .option("out", short: "o", help: "Output .npy file.", required: true),
                .option("bin", help: "Verification set in .bin format; may be repeated.", repeatable: true),
                .flag("no-flip", short: "f", help: "Skip the horizontally flipped copy of each image."),
            ],
            run: body)
        let train = CommandSpec(
            name: "train", abstract: "Train a backbone with the AdaFace margin under MPI.",
            discussion: """
                Run one process per node, e.g.
                  mpirun -n 4 adaface-dist train --config configs/ir50.json
                Config values can be overridden with --set; later values win over earlier ones and over the file.
                """,
            options: [
                .option("config", help: "JSON training config.", required: true),
                .option("set", valueName: "key=value",
                        help: "Override one config entry, e.g. optimizer.lr=0.1; may be repeated.",
                        repeatable: true),
                .option("sample-rate",
                        help: "Fraction of class centres sampled per step by the partial FC head.",
                        default: "1.0"),
                .option("clip", help: "Gradient-norm clip; negative disables clipping.", default: "-1"),
                .flag("no-augment", help: "Disable random flips and crops."),
            ],
            run: body)
        return CommandSpec(
            name: "adaface-dist",
            abstract: "Distributed AdaFace face-recognition training on CPU clusters.",
            options: [.flag("verbose", short: "v", help: "Print progress for every step.")],
            subcommands: [bench, embed, train])
    }

    private struct Outcome: Equatable {
        var code: Int32
        var stdout: String
        var stderr: String
    }

    private func invoke(_ arguments: [String],
                        body: @escaping (ParsedArguments) throws -> Int32 = { _ in 0 }) -> Outcome {
        var stdout = ""
        var stderr = ""
        let code = CommandLineTool.run(makeTool(body), arguments: arguments,
                                       stdout: &stdout, stderr: &stderr)
        return Outcome(code: code, stdout: stdout, stderr: stderr)
    }

    /// The arguments a leaf command receives; fails the test if parsing did not reach it.
    private func parse(_ arguments: [String], file: StaticString = #filePath,
                       line: UInt = #line) throws -> ParsedArguments {
        var received: ParsedArguments?
        let outcome = invoke(arguments) { received = $0; return 0 }
        XCTAssertEqual(outcome.code, 0, outcome.stderr, file: file, line: line)
        return try XCTUnwrap(received, file: file, line: line)
    }

    private func assertUsageError(_ arguments: [String], _ expected: String,
                                  body: @escaping (ParsedArguments) throws -> Int32 = { _ in 0 },
                                  file: StaticString = #filePath, line: UInt = #line) {
        let outcome = invoke(arguments, body: body)
        XCTAssertEqual(outcome.code, 64, file: file, line: line)
        XCTAssertEqual(outcome.stdout, "", file: file, line: line)
        XCTAssertEqual(outcome.stderr, expected, file: file, line: line)
    }

    // MARK: - Help

    private let rootHelp = """
        OVERVIEW: Distributed AdaFace face-recognition training on CPU clusters.

        USAGE: adaface-dist [--verbose] <subcommand>

        OPTIONS:
          -v, --verbose           Print progress for every step.
          -h, --help              Show help information.

        SUBCOMMANDS:
          bench                   Measure kernel and model throughput.
          embed                   Write one embedding per image.
          train                   Train a backbone with the AdaFace margin under MPI.

          See 'adaface-dist help <subcommand>' for detailed help.

        """

    private let backboneHelp = """
        OVERVIEW: Time forward and backward passes of the backbone.

        USAGE: adaface-dist bench backbone --arch <arch> [--batch <batch>] [--threads <threads>] [--steps <steps>]

        OPTIONS:
          --arch <arch>           Backbone architecture: ir18, ir34, ir50, ir100 (alias
                                  ir101).
          -b, --batch <batch>     Images per step. (default: 64)
          --threads <threads>     Worker threads; 0 uses every core. (default: 0)
          --steps <steps>         Timed steps after one warm-up step. (default: 10)
          -h, --help              Show help information.


        """

    func testRootHelp() {
        XCTAssertEqual(invoke(["--help"]), Outcome(code: 0, stdout: rootHelp, stderr: ""))
        XCTAssertEqual(invoke(["-h"]), Outcome(code: 0, stdout: rootHelp, stderr: ""))
        XCTAssertEqual(invoke(["help"]), Outcome(code: 0, stdout: rootHelp, stderr: ""))
    }

    func testNoArgumentsPrintsRootHelp() {
        XCTAssertEqual(invoke([]), Outcome(code: 0, stdout: rootHelp, stderr: ""))
    }

    func testNestedSubcommandHelp() {
        XCTAssertEqual(invoke(["bench", "backbone", "--help"]),
                       Outcome(code: 0, stdout: backboneHelp, stderr: ""))
    }

    func testHelpSubcommandEqualsHelpFlag() {
        XCTAssertEqual(invoke(["help", "bench", "backbone"]), invoke(["bench", "backbone", "--help"]))
        XCTAssertEqual(invoke(["help", "train"]), invoke(["train", "-h"]))
    }

    func testHelpFlagAnywhereWinsOverOtherArguments() {
        let expected = Outcome(code: 0, stdout: backboneHelp, stderr: "")
        XCTAssertEqual(invoke(["bench", "--help", "backbone"]), expected)
        XCTAssertEqual(invoke(["bench", "backbone", "--arch", "ir50", "-h"]), expected)
        // Errors before the flag (unknown option, missing required --arch) do not hide the help.
        XCTAssertEqual(invoke(["bench", "backbone", "--bacth", "8", "--help"]), expected)
        // After `--` it is just a word.
        XCTAssertEqual(invoke(["embed", "--out", "e.npy", "--", "--help"]).stdout, "")
    }

    func testCommandGroupWithoutRunPrintsItsHelp() {
        let expected = """
            OVERVIEW: Measure kernel and model throughput.

            USAGE: adaface-dist bench <subcommand>

            OPTIONS:
              -h, --help              Show help information.

            SUBCOMMANDS:
              backbone                Time forward and backward passes of the backbone.

              See 'adaface-dist help bench <subcommand>' for detailed help.

            """
        XCTAssertEqual(invoke(["bench"]), Outcome(code: 0, stdout: expected, stderr: ""))
        XCTAssertEqual(invoke(["help", "bench"]), Outcome(code: 0, stdout: expected, stderr: ""))
    }

    func testHelpWithArgumentsSection() {
        let expected = """
            OVERVIEW: Write one embedding per image.

            USAGE: adaface-dist embed --out <out> [--bin <bin> ...] [--no-flip] <images>

            ARGUMENTS:
              <images>                Directory of aligned 112x112 face crops.

            OPTIONS:
              -o, --out <out>         Output .npy file.
              --bin <bin>             Verification set in .bin format; may be repeated.
              -f, --no-flip           Skip the horizontally flipped copy of each image.
              -h, --help              Show help information.


            """
        XCTAssertEqual(invoke(["embed", "--help"]), Outcome(code: 0, stdout: expected, stderr: ""))
    }

    func testHelpWrapsDiscussionAndLongLabels() {
        let expected = """
            OVERVIEW: Train a backbone with the AdaFace margin under MPI.

            Run one process per node, e.g.
              mpirun -n 4 adaface-dist train --config configs/ir50.json
            Config values can be overridden with --set; later values win over earlier ones
            and over the file.

            USAGE: adaface-dist train --config <config> [--set <key=value> ...] [--sample-rate <sample-rate>] [--clip <clip>] [--no-augment]

            OPTIONS:
              --config <config>       JSON training config.
              --set <key=value>       Override one config entry, e.g. optimizer.lr=0.1; may
                                      be repeated.
              --sample-rate <sample-rate>
                                      Fraction of class centres sampled per step by the
                                      partial FC head. (default: 1.0)
              --clip <clip>           Gradient-norm clip; negative disables clipping.
                                      (default: -1)
              --no-augment            Disable random flips and crops.
              -h, --help              Show help information.


            """
        XCTAssertEqual(invoke(["train", "--help"]), Outcome(code: 0, stdout: expected, stderr: ""))
    }

    func testHelpLinesFitEightyColumnsExceptUsage() {
        for path in [["--help"], ["bench", "--help"], ["bench", "backbone", "--help"],
                     ["embed", "--help"], ["train", "--help"]] {
            for line in invoke(path).stdout.split(separator: "\n") where !line.hasPrefix("USAGE:") {
                XCTAssertLessThanOrEqual(line.count, 80, "\(path): \(line)")
            }
        }
    }

    func testUsageCollapsesMoreThanTwelveOptions() {
        let options = (1...13).map { OptionSpec.option("option\($0)", help: "", default: "0") }
            + [.option("out", help: "", required: true)]
        let root = CommandSpec(name: "tool", abstract: "", options: options, run: { _ in 0 })
        var stdout = ""
        var stderr = ""
        _ = CommandLineTool.run(root, arguments: ["--help"], stdout: &stdout, stderr: &stderr)
        XCTAssertTrue(stdout.hasPrefix("USAGE: tool [<options>] --out <out>\n\n"), stdout)
    }

    // MARK: - Usage errors

    func testUnknownOptionSuggestsClosestName() {
        assertUsageError(["bench", "backbone", "--arch", "ir50", "--bacth", "8"], """
            Error: Unknown option '--bacth'. Did you mean '--batch'?
            Usage: adaface-dist bench backbone --arch <arch> [--batch <batch>] [--threads <threads>] [--steps <steps>]
              See 'adaface-dist bench backbone --help' for more information.

            """)
        // The suggestion ignores a value attached with `=`.
        assertUsageError(["train", "--config", "c.json", "--sample-rat=0.5"], """
            Error: Unknown option '--sample-rat'. Did you mean '--sample-rate'?
            Usage: adaface-dist train --config <config> [--set <key=value> ...] [--sample-rate <sample-rate>] [--clip <clip>] [--no-augment]
              See 'adaface-dist train --help' for more information.

            """)
    }

    func testUnknownOptionWithoutSuggestion() {
        assertUsageError(["bench", "backbone", "--arch", "ir50", "--frobnicate"], """
            Error: Unknown option '--frobnicate'
            Usage: adaface-dist bench backbone --arch <arch> [--batch <batch>] [--threads <threads>] [--steps <steps>]
              See 'adaface-dist bench backbone --help' for more information.

            """)
        assertUsageError(["embed", "-x", "dir"], """
            Error: Unknown option '-x'
            Usage: adaface-dist embed --out <out> [--bin <bin> ...] [--no-flip] <images>
              See 'adaface-dist embed --help' for more information.

            """)
    }

    func testMissingValue() {
        let expected = """
            Error: Missing value for '--batch <batch>'
            Help:  --batch <batch>  Images per step.
            Usage: adaface-dist bench backbone --arch <arch> [--batch <batch>] [--threads <threads>] [--steps <steps>]
              See 'adaface-dist bench backbone --help' for more information.

            """
        assertUsageError(["bench", "backbone", "--arch", "ir50", "--batch"], expected)
        // The next word is an option, not a value.
        assertUsageError(["bench", "backbone", "--batch", "--arch", "ir50"], expected)
        // The error quotes the short name when that was typed.
        assertUsageError(["bench", "backbone", "--arch", "ir50", "-b"], """
            Error: Missing value for '-b <batch>'
            Help:  -b <batch>  Images per step.
            Usage: adaface-dist bench backbone --arch <arch> [--batch <batch>] [--threads <threads>] [--steps <steps>]
              See 'adaface-dist bench backbone --help' for more information.

            """)
    }

    func testInvalidInteger() {
        let body: (ParsedArguments) throws -> Int32 = { args in
            _ = try args.requiredInt("batch", min: 1)
            return 0
        }
        assertUsageError(["bench", "backbone", "--arch", "ir50", "--batch", "abc"], """
            Error: The value 'abc' is invalid for '--batch <batch>': expected an integer.
            Help:  --batch <batch>  Images per step.
            Usage: adaface-dist bench backbone --arch <arch> [--batch <batch>] [--threads <threads>] [--steps <steps>]
              See 'adaface-dist bench backbone --help' for more information.

            """, body: body)
        assertUsageError(["bench", "backbone", "--arch", "ir50", "-b", "0"], """
            Error: The value '0' is invalid for '-b <batch>': must be at least 1.
            Help:  -b <batch>  Images per step.
            Usage: adaface-dist bench backbone --arch <arch> [--batch <batch>] [--threads <threads>] [--steps <steps>]
              See 'adaface-dist bench backbone --help' for more information.

            """, body: body)
    }

    func testMissingRequiredOptionAndArgument() {
        assertUsageError(["bench", "backbone", "--batch", "8"], """
            Error: Missing expected argument '--arch <arch>'
            Help:  --arch <arch>  Backbone architecture: ir18, ir34, ir50, ir100 (alias ir101).
            Usage: adaface-dist bench backbone --arch <arch> [--batch <batch>] [--threads <threads>] [--steps <steps>]
              See 'adaface-dist bench backbone --help' for more information.

            """)
        assertUsageError(["embed", "--out", "e.npy"], """
            Error: Missing expected argument '<images>'
            Help:  <images>  Directory of aligned 112x112 face crops.
            Usage: adaface-dist embed --out <out> [--bin <bin> ...] [--no-flip] <images>
              See 'adaface-dist embed --help' for more information.

            """)
    }

    func testUnknownSubcommand() {
        assertUsageError(["bnch", "backbone"], """
            Error: Unknown subcommand 'bnch'. Did you mean 'bench'?
            Usage: adaface-dist [--verbose] <subcommand>
              See 'adaface-dist --help' for more information.

            """)
        assertUsageError(["bench", "bakcbone"], """
            Error: Unknown subcommand 'bakcbone'. Did you mean 'backbone'?
            Usage: adaface-dist bench <subcommand>
              See 'adaface-dist bench --help' for more information.

            """)
        assertUsageError(["xyz"], """
            Error: Unknown subcommand 'xyz'
            Usage: adaface-dist [--verbose] <subcommand>
              See 'adaface-dist --help' for more information.

            """)
        assertUsageError(["help", "trian"], """
            Error: Unknown subcommand 'trian'. Did you mean 'train'?
            Usage: adaface-dist [--verbose] <subcommand>
              See 'adaface-dist --help' for more information.

            """)
    }

    func testUnexpectedArgumentsAndFlagValues() {
        assertUsageError(["embed", "--out", "e.npy", "faces", "extra"], """
            Error: Unexpected argument 'extra'
            Usage: adaface-dist embed --out <out> [--bin <bin> ...] [--no-flip] <images>
              See 'adaface-dist embed --help' for more information.

            """)
        assertUsageError(["embed", "faces", "a", "b", "--out", "e.npy"], """
            Error: 2 unexpected arguments: 'a', 'b'
            Usage: adaface-dist embed --out <out> [--bin <bin> ...] [--no-flip] <images>
              See 'adaface-dist embed --help' for more information.

            """)
        assertUsageError(["embed", "faces", "--out", "e.npy", "--no-flip=yes"], """
            Error: The option '--no-flip' does not take any value, but 'yes' was specified.
            Usage: adaface-dist embed --out <out> [--bin <bin> ...] [--no-flip] <images>
              See 'adaface-dist embed --help' for more information.

            """)
    }

    func testChoice() throws {
        let architectures = ["ir18", "ir34", "ir50", "ir100", "ir101"]
        XCTAssertEqual(try parse(["bench", "backbone", "--arch", "ir101"])
            .requiredChoice("arch", architectures), "ir101")
        assertUsageError(["bench", "backbone", "--arch", "ir200"], """
            Error: The value 'ir200' is invalid for '--arch <arch>'. Please provide one of 'ir18', 'ir34', 'ir50', 'ir100' or 'ir101'.
            Help:  --arch <arch>  Backbone architecture: ir18, ir34, ir50, ir100 (alias ir101).
            Usage: adaface-dist bench backbone --arch <arch> [--batch <batch>] [--threads <threads>] [--steps <steps>]
              See 'adaface-dist bench backbone --help' for more information.

            """, body: { args in _ = try args.requiredChoice("arch", architectures); return 0 })
    }

    func testDoubleValidation() throws {
        let args = try parse(["train", "--config", "c.json", "--sample-rate", "nan"])
        XCTAssertThrowsError(try args.double("sample-rate")) { error in
            XCTAssertEqual(String(describing: error),
                           "The value 'nan' is invalid for '--sample-rate <sample-rate>': expected a number.")
        }
        let inRange = try parse(["train", "--config", "c.json", "--sample-rate=0.25"])
        XCTAssertEqual(try inRange.requiredDouble("sample-rate", min: 0, max: 1), 0.25)
        let outOfRange = try parse(["train", "--config", "c.json", "--sample-rate", "1.5"])
        XCTAssertThrowsError(try outOfRange.double("sample-rate", min: 0, max: 1)) { error in
            XCTAssertEqual(String(describing: error),
                           "The value '1.5' is invalid for '--sample-rate <sample-rate>': must be between 0.0 and 1.0.")
        }
    }

    // MARK: - Errors from commands

    func testErrorsThrownByCommands() {
        assertUsageError(["embed", "--out", "e.npy", "missing-dir"], """
            Error: Directory 'missing-dir' does not exist.
            Usage: adaface-dist embed --out <out> [--bin <bin> ...] [--no-flip] <images>
              See 'adaface-dist embed --help' for more information.

            """, body: { args in
                throw UsageError("Directory '\(try args.requiredString("images"))' does not exist.")
            })

        struct ConfigError: Error, CustomStringConvertible {
            var description: String { "c.json: unknown key 'optimiser'" }
        }
        XCTAssertEqual(invoke(["train", "--config", "c.json"]) { _ in
            throw CommandExit(code: 2, message: "c.json: unknown key 'optimiser'")
        }, Outcome(code: 2, stdout: "", stderr: "Error: c.json: unknown key 'optimiser'\n"))
        XCTAssertEqual(invoke(["train", "--config", "c.json"]) { _ in throw CommandExit(code: 3) },
                       Outcome(code: 3, stdout: "", stderr: ""))
        XCTAssertEqual(invoke(["train", "--config", "c.json"]) { _ in throw ConfigError() },
                       Outcome(code: 1, stdout: "", stderr: "Error: c.json: unknown key 'optimiser'\n"))
        XCTAssertEqual(invoke(["train", "--config", "c.json"]) { _ in 7 },
                       Outcome(code: 7, stdout: "", stderr: ""))
    }

    // MARK: - Values

    func testDefaultsApplyWhenAbsent() throws {
        let args = try parse(["bench", "backbone", "--arch", "ir50"])
        XCTAssertEqual(args.commandPath, ["adaface-dist", "bench", "backbone"])
        XCTAssertEqual(try args.requiredInt("batch"), 64)
        XCTAssertEqual(try args.int("steps", min: 1), 10)
        XCTAssertEqual(args.string("threads"), "0")
        XCTAssertFalse(args.isGiven("batch"))
        XCTAssertTrue(args.isGiven("arch"))

        let train = try parse(["train", "--config", "c.json"])
        XCTAssertEqual(try train.double("sample-rate"), 1.0)
        XCTAssertEqual(try train.int("clip"), -1)
        XCTAssertEqual(train.strings("set"), [])
        XCTAssertTrue(try train.keyValuePairs("set").isEmpty)
    }

    func testEqualsSyntaxAndSeparateValue() throws {
        let args = try parse(["bench", "backbone", "--arch=ir100", "--batch", "32", "--steps=5"])
        XCTAssertEqual(try args.requiredChoice("arch", ["ir50", "ir100"]), "ir100")
        XCTAssertEqual(try args.int("batch"), 32)
        XCTAssertEqual(try args.int("steps"), 5)
        // `=` keeps everything after it, including further `=` and leading dashes.
        let train = try parse(["train", "--config=c.json", "--set=name=a=b", "--set=--odd"])
        XCTAssertEqual(train.strings("set"), ["name=a=b", "--odd"])
    }

    func testLastValueWinsForSingleOptions() throws {
        let args = try parse(["bench", "backbone", "--arch", "ir50", "--batch", "8", "-b", "16"])
        XCTAssertEqual(try args.int("batch"), 16)
    }

    func testRepeatableOptionsKeepOrder() throws {
        let args = try parse(["train", "--set", "optimizer.lr=0.1", "--config", "c.json",
                              "--set=batch=128", "--set", "optimizer.lr=0.05"])
        XCTAssertEqual(args.strings("set"), ["optimizer.lr=0.1", "batch=128", "optimizer.lr=0.05"])
        let pairs = try args.keyValuePairs("set")
        XCTAssertEqual(pairs.map(\.key), ["optimizer.lr", "batch", "optimizer.lr"])
        XCTAssertEqual(pairs.map(\.value), ["0.1", "128", "0.05"])

        let embed = try parse(["embed", "--bin", "lfw.bin", "faces", "--bin", "cfp_fp.bin", "-o", "e.npy"])
        XCTAssertEqual(embed.strings("bin"), ["lfw.bin", "cfp_fp.bin"])
        XCTAssertEqual(embed.string("images"), "faces")
    }

    func testKeyValuePairsRejectMissingEquals() throws {
        let args = try parse(["train", "--config", "c.json", "--set", "lr"])
        XCTAssertThrowsError(try args.keyValuePairs("set")) { error in
            XCTAssertEqual(String(describing: error),
                           "The value 'lr' is invalid for '--set <key=value>': expected key=value.")
        }
    }

    func testTerminatorEndsOptionParsing() throws {
        let args = try parse(["embed", "--out", "e.npy", "--", "--no-flip"])
        XCTAssertEqual(args.string("images"), "--no-flip")
        XCTAssertFalse(args.flag("no-flip"))
    }

    func testFlags() throws {
        let plain = try parse(["train", "--config", "c.json"])
        XCTAssertFalse(plain.flag("no-augment"))
        XCTAssertFalse(plain.flag("verbose"))
        let set = try parse(["-v", "train", "--no-augment", "--config", "c.json"])
        XCTAssertTrue(set.flag("no-augment"))
        // A subcommand sees the options given to the commands above it.
        XCTAssertTrue(set.flag("verbose"))
        XCTAssertTrue(set.isGiven("verbose"))
    }

    func testShortNames() throws {
        let args = try parse(["embed", "-o", "e.npy", "faces"])
        XCTAssertEqual(try args.requiredString("out"), "e.npy")
        XCTAssertFalse(args.flag("no-flip"))
        // Short flags group; the last member of a group may take the next word as its value.
        let grouped = try parse(["embed", "-fo", "e.npy", "faces"])
        XCTAssertTrue(grouped.flag("no-flip"))
        XCTAssertEqual(grouped.string("out"), "e.npy")
        assertUsageError(["embed", "-of", "e.npy", "faces"], """
            Error: Missing value for '-o <out>'
            Help:  -o <out>  Output .npy file.
            Usage: adaface-dist embed --out <out> [--bin <bin> ...] [--no-flip] <images>
              See 'adaface-dist embed --help' for more information.

            """)
    }

    func testNegativeNumbersAreValues() throws {
        let args = try parse(["train", "--config", "c.json", "--clip", "-0.5"])
        XCTAssertEqual(try args.double("clip"), -0.5)
        let integer = try parse(["train", "--config", "c.json", "--clip", "-2"])
        XCTAssertEqual(try integer.int("clip"), -2)
        XCTAssertThrowsError(try integer.int("clip", min: -1)) { error in
            XCTAssertEqual(String(describing: error),
                           "The value '-2' is invalid for '--clip <clip>': must be at least -1.")
        }
    }
}
