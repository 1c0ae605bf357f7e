// Backbone weights through safetensors: round trips, PyTorch layouts, and errors that name the key.
import Foundation
import Layers
import Serialization
import Tensors
import XCTest

final class WeightsFileTests: XCTestCase {
    private var directory: String!

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "weights-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: directory) }

    private func smallNetwork(seed: UInt64) -> IResNet {
        let net = IResNet(configuration: IResNetConfiguration(unitsPerStage: [1, 1], stageWidths: [4, 8], inputSize: 8, embeddingSize: 6))
        var rng = SplitMix64(seed: seed)
        net.resetParameters(&rng)
        for bn in net.batchNorms { for c in 0..<bn.channels { bn.runningMean[c] = rng.nextNormal() } }
        net.store.batchCounters[0] = 42
        return net
    }

    func testRoundTripRestoresEveryEntry() throws {
        let path = directory + "/w.safetensors"
        let source = smallNetwork(seed: 1)
        try source.store.writeSafeTensors(to: path, metadata: ["arch": "tiny"])
        let target = smallNetwork(seed: 2)
        try target.store.readSafeTensors(from: path)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: target.store.values, count: target.store.parameterCount)),
                       Array(UnsafeBufferPointer(start: source.store.values, count: source.store.parameterCount)))
        XCTAssertEqual(Array(UnsafeBufferPointer(start: target.store.bufferValues, count: target.store.bufferCount)),
                       Array(UnsafeBufferPointer(start: source.store.bufferValues, count: source.store.bufferCount)))
        XCTAssertEqual(target.store.batchCounters, source.store.batchCounters)
        let file = try SafeTensorsFile.read(path: path)
        XCTAssertEqual(file.metadata["arch"], "tiny")
        XCTAssertEqual(file.info("input_layer.1.num_batches_tracked")?.dtype, .i64)
        XCTAssertEqual(file.names.count, source.store.stateNames.count)
    }

    func testCompressedRoundTrip() throws {
        let path = directory + "/w.safetensors.zst"
        let source = smallNetwork(seed: 3)
        try source.store.writeSafeTensors(to: path, compression: .zstd(level: 3))
        let target = smallNetwork(seed: 4)
        try target.store.readSafeTensors(from: path)
        XCTAssertEqual(target.store.exportState().map(\.name), source.store.exportState().map(\.name))
        XCTAssertEqual(Array(UnsafeBufferPointer(start: target.store.values, count: target.store.parameterCount)),
                       Array(UnsafeBufferPointer(start: source.store.values, count: source.store.parameterCount)))
    }

    func testExportUsesPyTorchLayouts() throws {
        let net = smallNetwork(seed: 5)
        let index = net.store.parameterIndex(named: "body.1.res_layer.1.weight")!
        guard case let .convHWIO(outC, inC, k) = net.store.parameters[index].layout else { return XCTFail("conv layout") }
        let exported = net.store.exportState().first { $0.name == "body.1.res_layer.1.weight" }!
        XCTAssertEqual(exported.shape, [outC, inC, k, k])
        guard case .float32(let oihw) = exported.values else { return XCTFail("float tensor") }
        // Engine HWIO element (ky=2, kx=0, ci=3, co=5) is PyTorch's weight[5][3][2][0].
        let hwio = net.store.value(index)[((2 * k + 0) * inC + 3) * outC + 5]
        XCTAssertEqual(oihw[((5 * inC + 3) * k + 2) * k + 0], hwio)

        let linear = net.store.parameterIndex(named: "output_layer.3.weight")!
        guard case let .linearOverHWC(outF, c, h, w) = net.store.parameters[linear].layout else { return XCTFail("linear layout") }
        let exportedLinear = net.store.exportState().first { $0.name == "output_layer.3.weight" }!
        guard case .float32(let flatCHW) = exportedLinear.values else { return XCTFail("float tensor") }
        // Row 4, feature (c=7, y=1, x=0): PyTorch index c·h·w + y·w + x, engine (y·w + x)·c + ch.
        XCTAssertEqual(flatCHW[4 * c * h * w + (7 * h + 1) * w + 0], net.store.value(linear)[4 * c * h * w + (1 * w + 0) * c + 7])
        XCTAssertEqual(exportedLinear.shape, [outF, c * h * w])
    }

    func testMissingKeyAndWrongShapeAreNamed() throws {
        let path = directory + "/partial.safetensors"
        var writer = SafeTensorsWriter()
        writer.add("input_layer.0.weight", shape: [4, 3, 3, 3], floats: [Float](repeating: 0, count: 108))
        try writer.write(to: path)
        let net = smallNetwork(seed: 6)
        XCTAssertThrowsError(try net.store.readSafeTensors(from: path)) { error in
            XCTAssertTrue("\(error)".contains("input_layer.1.weight"), "\(error)")
            XCTAssertTrue("\(error)".contains(path), "\(error)")
        }
        var wrong = SafeTensorsWriter()
        wrong.add("input_layer.0.weight", shape: [64, 3, 3, 3], floats: [Float](repeating: 0, count: 64 * 27))
        try wrong.write(to: path)
        XCTAssertThrowsError(try net.store.readSafeTensors(from: path)) { error in
            XCTAssertTrue("\(error)".contains("[64, 3, 3, 3]") && "\(error)".contains("input_layer.0.weight"), "\(error)")
        }
    }

    func testTruncatedWeightsFileIsAClearError() throws {
        let path = directory + "/w.safetensors"
        try smallNetwork(seed: 7).store.writeSafeTensors(to: path)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try smallNetwork(seed: 8).store.readSafeTensors(from: path)) { error in
            XCTAssertTrue("\(error)".contains(path), "\(error)")
        }
    }
}
