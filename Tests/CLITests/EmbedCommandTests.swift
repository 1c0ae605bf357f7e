// `adaface-dist embed` on images the test makes: file order, output shapes, agreement with a direct
// forward pass, and clear refusals of wrong sizes, corrupt files and empty folders.
import CLI
import DataPipeline
import Foundation
import Layers
import Serialization
import Tensors
import XCTest

final class EmbedCommandTests: XCTestCase {
    private var directory: String!
    private var weights: String!

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "embed-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory + "/images", withIntermediateDirectories: true)
        weights = directory + "/ir18.safetensors"
        let net = IResNet(.ir18)
        var rng = SplitMix64(seed: 3)
        net.resetParameters(&rng)
        try net.store.writeSafeTensors(to: weights)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: directory) }

    private func pattern(seed: Int, size: Int = 112) -> [UInt8] {
        (0..<(size * size * 3)).map { i in
            let x = (i / 3) % size, y = i / (3 * size), c = i % 3
            return UInt8(truncatingIfNeeded: (x * (seed + 1) + y * (c + 2) * seed + 40 * c) & 0xFF)
        }
    }

    private func writeImage(_ name: String, seed: Int, png: Bool, size: Int = 112) throws {
        let pixels = pattern(seed: seed, size: size)
        let bytes = try pixels.withUnsafeBufferPointer {
            png ? ImageEncoder.png(bgr: $0, width: size, height: size)
                : try ImageEncoder.jpeg(bgr: $0, width: size, height: size, quality: 95)
        }
        try Data(bytes).write(to: URL(fileURLWithPath: directory + "/images/" + name))
    }

    private func embed(_ extra: [String] = []) -> (code: Int32, out: String, err: String) {
        var out = "", err = ""
        let code = CommandLineTool.run(AdaFaceDist.root, arguments: [
            "embed", "--arch", "ir18", "--weights", weights, "--images", directory + "/images",
            "--out", directory + "/emb.npy", "--norms", directory + "/norms.npy", "--batch", "2", "--threads", "2",
        ] + extra, stdout: &out, stderr: &err)
        return (code, out, err)
    }

    func testEmbedsInSortedOrderAndMatchesADirectForwardPass() throws {
        try writeImage("b.png", seed: 2, png: true)
        try writeImage("a.jpg", seed: 1, png: false)
        try writeImage("c.JPEG", seed: 3, png: false)
        try Data("not an image".utf8).write(to: URL(fileURLWithPath: directory + "/images/notes.txt"))
        let result = embed()
        XCTAssertEqual(result.code, 0, result.err)

        let (shape, embeddings) = try NumpyFile.read(path: directory + "/emb.npy")
        XCTAssertEqual(shape, [3, 512])
        let (normShape, norms) = try NumpyFile.read(path: directory + "/norms.npy")
        XCTAssertEqual(normShape, [3])
        for r in 0..<3 {
            let length = (0..<512).reduce(Float(0)) { $0 + embeddings[r * 512 + $1] * embeddings[r * 512 + $1] }
            XCTAssertEqual(length, 1, accuracy: 1e-4)
            XCTAssertGreaterThan(norms[r], 0)
        }

        // Row 1 is b.png (sorted: a.jpg, b.png, c.JPEG); PNG is lossless, so feed its pattern directly.
        let net = IResNet(.ir18)
        try net.store.readSafeTensors(from: weights)
        net.prepare(batchCapacity: 1)
        let pixels = pattern(seed: 2)
        InputNormalization.normalize(bgr: pixels, count: pixels.count, into: net.input.data)
        net.forward(batch: 1, training: false)
        for j in 0..<512 { XCTAssertEqual(embeddings[512 + j], net.embeddings.data[j], accuracy: 1e-4) }
        XCTAssertEqual(norms[1], net.norms.data[0], accuracy: 1e-3 * net.norms.data[0])
    }

    func testRefusesAWrongSizeImageNamingIt() throws {
        try writeImage("a.png", seed: 1, png: true)
        try writeImage("small.png", seed: 1, png: true, size: 96)
        let result = embed()
        XCTAssertNotEqual(result.code, 0)
        XCTAssertTrue(result.err.contains("small.png") && result.err.contains("expected 112×112"), result.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/emb.npy"), "nothing is written on failure")
    }

    func testRefusesACorruptImageNamingIt() throws {
        try writeImage("a.jpg", seed: 1, png: false)
        let good = try Data(contentsOf: URL(fileURLWithPath: directory + "/images/a.jpg"))
        try good.prefix(good.count / 3).write(to: URL(fileURLWithPath: directory + "/images/broken.jpg"))
        let result = embed()
        XCTAssertNotEqual(result.code, 0)
        XCTAssertTrue(result.err.contains("broken.jpg"), result.err)
    }

    func testAnEmptyFolderIsAUsageError() {
        let result = embed()
        XCTAssertEqual(result.code, 64)
        XCTAssertTrue(result.err.contains("holds no .jpg, .jpeg or .png files"), result.err)
    }

    func testAMissingWeightsFileIsNamed() throws {
        try writeImage("a.png", seed: 1, png: true)
        weights = directory + "/missing.safetensors"
        let result = embed()
        XCTAssertNotEqual(result.code, 0)
        XCTAssertTrue(result.err.contains("missing.safetensors"), result.err)
    }
}
