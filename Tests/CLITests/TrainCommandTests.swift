// `adaface-dist train` refuses bad configurations before anything starts: the error names the field
// and the exit code is 2.
import CLI
import Foundation
import XCTest

final class TrainCommandTests: XCTestCase {
    private var directory: String!

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "train-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory + "/data", withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: directory) }

    private func train(_ json: String, _ extra: [String] = []) throws -> (code: Int32, err: String) {
        let path = directory + "/config.json"
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        var out = "", err = ""
        let code = CommandLineTool.run(AdaFaceDist.root, arguments: ["train", "--config", path] + extra,
                                       stdout: &out, stderr: &err)
        return (code, err)
    }

    func testBadConfigurationsNameTheFieldAndExitWith2() throws {
        let data = directory + "/data"
        let cases: [(String, [String], String)] = [
            ("{\"data\": {\"train\": \"\(data)\"}, \"trainig\": {}}", [], "trainig"),
            ("{\"data\": {\"train\": \"\(data)\"}, \"training\": {\"global_batch\": \"512\"}}", [], "training.global_batch"),
            ("{\"data\": {\"train\": \"\(data)\"}, \"training\": {\"global_batch\": -4}}", [], "training.global_batch"),
            ("{\"data\": {\"train\": \"\(data)\"}, \"head\": {\"sample_rate\": 1.5}}", [], "head.sample_rate"),
            ("{\"data\": {\"train\": \"\(directory!)/missing\"}}", [], "data.train"),
            ("{\"data\": {\"train\": \"\(data)\"}}", ["--set", "optimizer.lrr=0.1"], "optimizer.lrr"),
        ]
        for (json, extra, field) in cases {
            let result = try train(json, extra)
            XCTAssertEqual(result.code, 2, "\(field): \(result.err)")
            XCTAssertTrue(result.err.contains(field), "the error names \(field): \(result.err)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: "runs/adaface"), "nothing is written")
    }

    func testBadArgumentsExitWith2AndNameTheOption() throws {
        let json = "{\"data\": {\"train\": \"\(directory!)/data\"}}"
        var result = try train(json, ["--resme", "auto"])
        XCTAssertEqual(result.code, 2, result.err)
        XCTAssertTrue(result.err.contains("Unknown option '--resme'"), result.err)
        result = try train(json, ["--resume", directory + "/no-such-checkpoint"])
        XCTAssertEqual(result.code, 2, result.err)
        XCTAssertTrue(result.err.contains("--resume: no checkpoint directory at \(directory!)/no-such-checkpoint"), result.err)
        var out = "", err = ""
        XCTAssertEqual(CommandLineTool.run(AdaFaceDist.root, arguments: ["train"], stdout: &out, stderr: &err), 2, err)
        XCTAssertTrue(err.contains("--config"), err)
        // Other commands keep swift-argument-parser's exit code for usage errors.
        XCTAssertEqual(CommandLineTool.run(AdaFaceDist.root, arguments: ["inspect", "--bogus"], stdout: &out, stderr: &err), 64)
    }

    func testAMalformedTestHookIsABadArgument() throws {
        setenv("ADAFACE_DIST_INJECT_NONFINITE", "loss@zero", 1)
        defer { unsetenv("ADAFACE_DIST_INJECT_NONFINITE") }
        let result = try train("{\"data\": {\"train\": \"\(directory!)/data\"}}")
        XCTAssertEqual(result.code, 2, result.err)
        XCTAssertTrue(result.err.contains("ADAFACE_DIST_INJECT_NONFINITE: 'loss@zero'"), result.err)
    }

    func testAMissingConfigurationFileIsNamed() throws {
        var out = "", err = ""
        let code = CommandLineTool.run(AdaFaceDist.root, arguments: ["train", "--config", directory + "/nope.json"],
                                       stdout: &out, stderr: &err)
        XCTAssertEqual(code, 2)
        XCTAssertTrue(err.contains("nope.json"), err)
    }
}
