// Verification sets pickled by Python (issame as a list of bools and as a numpy bool array, protocols
// 2 and 5) go through extraction and the protocol.
import DataPipeline
import Evaluation
import Layers
import Tensors
import XCTest

final class PythonBinEvaluationTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("DataPipelineTests/Fixtures/bin")

    func testPythonWrittenSetsEvaluate() throws {
        let config = IResNetConfiguration(unitsPerStage: [1, 1, 1, 1], stageWidths: [8, 8, 16, 16], embeddingSize: 16)
        let net = IResNet(configuration: config)
        var rng = SplitMix64(seed: 12)
        net.resetParameters(&rng)
        var distancesBySet: [[Double]] = []
        for name in ["py2_list.bin", "py3_numpy_p2.bin", "py3_list_p5.bin"] {
            let set = try VerificationSet.read(path: Self.fixtures.appendingPathComponent(name).path)
            XCTAssertEqual(set.pairCount, 2, name)
            let embeddings = try EmbeddingExtractor.flipFused(set, indices: 0..<4, network: net, batch: 2)
            let distances = embeddings.withUnsafeBufferPointer {
                VerificationProtocol.pairDistances($0.baseAddress!, pairs: 2, dimension: 16)
            }
            XCTAssertTrue(distances.allSatisfy { $0.isFinite && $0 >= 0 && $0 <= 4 }, "\(name): \(distances)")
            // Two pairs allow two folds: each fold's threshold comes from the other pair.
            let result = VerificationProtocol.evaluate(distances: distances, issame: set.issame, folds: 2)
            XCTAssertEqual(result.foldAccuracies.count, 2, name)
            distancesBySet.append(distances)
        }
        // The same images in every encoding of the pickle: the same distances.
        XCTAssertEqual(distancesBySet[0], distancesBySet[1])
        XCTAssertEqual(distancesBySet[0], distancesBySet[2])
    }
}
