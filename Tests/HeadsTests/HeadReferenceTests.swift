// The margin heads against fixtures computed in float64 from the formulas by
// Scripts/reference/head_reference.py: loss, embedding and kernel gradients, and the norm EMA.
import Collectives
import Foundation
import Heads
import Serialization
import XCTest

final class HeadReferenceTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    struct Fixture {
        let file: SafeTensorsFile
        let n: Int, d: Int, c: Int
        func floats(_ name: String) throws -> [Float] { try file.floats(name) }
        func scalar(_ name: String) throws -> Double { Double(try file.floats(name)[0]) }
    }

    private func load(_ name: String) throws -> Fixture {
        let file = try SafeTensorsFile.read(path: Self.fixtures.appendingPathComponent(name + ".safetensors").path)
        let shape = file.info("kernel")!.shape
        return Fixture(file: file, n: file.info("labels")!.shape[0], d: shape[1], c: shape[0])
    }

    private func policy(_ f: Fixture) throws -> MarginPolicy {
        let meta = f.file.metadata
        let m = Double(meta["m"]!)!
        switch meta["head"]! {
        case "adaface": return .adaFace(margin: m, h: Double(meta["h"]!)!, tAlpha: Double(meta["t_alpha"]!)!)
        case "arcface": return .arcFace(margin: m)
        case "cosface": return .cosFace(margin: m)
        default: throw HeadError.invalidConfiguration("unknown head in fixture")
        }
    }

    /// Runs one step of a single-process head on the fixture and compares every output.
    private func check(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let f = try load(name)
        let config = HeadConfiguration(totalClasses: f.c, embeddingSize: f.d, margin: try policy(f),
                                       scale: Double(f.file.metadata["s"]!)!)
        let head = try PartitionedSoftmaxHead(configuration: config, group: SingleProcessGroup())
        let kernel = try f.floats("kernel")
        head.kernel.data.update(from: kernel, count: kernel.count)
        head.normStatistics.mean = try f.scalar("mu_before")
        head.normStatistics.std = try f.scalar("sigma_before")
        let embeddings = try f.floats("embeddings"), norms = try f.floats("norms")
        let labels = try f.file.int64s("labels").map { Int32($0) }
        var grad = [Float](repeating: 0, count: f.n * f.d)
        let result = try grad.withUnsafeMutableBufferPointer {
            try head.step(embeddings: embeddings, norms: norms, labels: labels, batch: f.n, step: 0,
                          gradEmbeddings: $0.baseAddress!)
        }
        let loss = try f.scalar("loss")
        XCTAssertEqual(result.loss, loss, accuracy: 1e-4 * max(1, abs(loss)), "\(name) loss", file: file, line: line)
        assertClose(grad, try f.floats("grad_embeddings"), "\(name) d(embeddings)", file: file, line: line)
        assertClose(head.shardGradient(), try f.floats("grad_kernel"), "\(name) d(kernel)", file: file, line: line)
        // The inputs reach the head as float32, so the EMA matches to float32 precision.
        let mu = try f.scalar("mu_after"), sigma = try f.scalar("sigma_after")
        XCTAssertEqual(head.normStatistics.mean, mu, accuracy: 1e-6 * abs(mu), "\(name) μ", file: file, line: line)
        XCTAssertEqual(head.normStatistics.std, sigma, accuracy: 1e-6 * abs(sigma), "\(name) σ", file: file, line: line)
    }

    /// ‖a − b‖ ≤ 1e-4·‖b‖, and every element within 1e-4 of the largest magnitude.
    private func assertClose(_ a: [Float], _ b: [Float], _ what: String, file: StaticString, line: UInt) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        var diff = 0.0, norm = 0.0, largest: Float = 0
        for i in 0..<min(a.count, b.count) {
            diff += Double(a[i] - b[i]) * Double(a[i] - b[i]); norm += Double(b[i]) * Double(b[i]); largest = max(largest, abs(b[i]))
        }
        XCTAssertLessThan(diff.squareRoot(), 1e-4 * max(norm.squareRoot(), 1e-12), "\(what): relative error", file: file, line: line)
        for i in 0..<min(a.count, b.count) where abs(a[i] - b[i]) > 1e-4 * largest + 1e-9 {
            XCTFail("\(what)[\(i)]: \(a[i]) vs \(b[i])", file: file, line: line)
            break
        }
    }

    func testAdaFaceMatchesReference() throws { try check("adaface_basic") }
    func testAdaFaceAtTheClampsMatchesReference() throws { try check("adaface_edges") }
    func testAdaFaceWithConcentratedLabelsMatchesReference() throws { try check("adaface_uneven") }
    func testArcFaceMatchesReference() throws { try check("arcface_basic") }
    func testArcFaceAtTheClipMatchesReference() throws { try check("arcface_edges") }
    func testCosFaceMatchesReference() throws { try check("cosface_basic") }
}
