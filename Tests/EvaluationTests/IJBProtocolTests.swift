import DataPipeline
import Evaluation
import Foundation
import Layers
import Tensors
import XCTest

final class IJBProtocolTests: XCTestCase {
    private var root = ""

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "ijb-tests-\(UUID().uuidString)"
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: root)
    }

    private func image(_ template: Int, _ media: Int) -> IJBImage {
        IJBImage(name: "x.jpg", template: template, media: media, landmarks: [Double](repeating: 0, count: 10), score: 1)
    }

    /// Template 5: media 1 has two images, media 2 one. Template 2: one media of two images.
    func testTemplateAggregationMatchesHandComputation() {
        let images = [image(5, 1), image(5, 1), image(5, 2), image(2, 7), image(2, 7)]
        let features: [Float] = [
            1, 2, 0,
            3, 0, 4,
            0, 1, 1,
            2, 0, 0,
            0, 0, 6,
        ]
        let t = IJBProtocol.templateFeatures(images: images, features: features, dimension: 3)
        XCTAssertEqual(t.templates, [2, 5])
        // Template 2: mean (1, 0, 3), norm √10.
        let n2 = Float(10).squareRoot()
        // Template 5: mean of media 1 = (2, 1, 2), plus media 2 (0, 1, 1) = (2, 2, 3), norm √17.
        let n5 = Float(17).squareRoot()
        let expected: [Float] = [1 / n2, 0, 3 / n2, 2 / n5, 2 / n5, 3 / n5]
        for i in 0..<6 { XCTAssertEqual(t.features[i], expected[i], accuracy: 1e-6) }

        let pairs = [IJBPair(template1: 5, template2: 2, genuine: false), IJBPair(template1: 2, template2: 2, genuine: true)]
        let scores = IJBProtocol.pairScores(pairs: pairs, templates: t.templates, features: t.features, dimension: 3)
        XCTAssertEqual(scores[0], (2 + 9) / (n2 * n5), accuracy: 1e-6)
        XCTAssertEqual(scores[1], 1, accuracy: 1e-6)
    }

    /// The whole protocol through the feature closure, with and without detector-score weighting.
    func testScoresThroughFeatureClosure() throws {
        let meta = IJBMeta(
            images: [
                IJBImage(name: "1.jpg", template: 1, media: 1, landmarks: [Double](repeating: 0, count: 10), score: 0.5),
                IJBImage(name: "2.jpg", template: 1, media: 2, landmarks: [Double](repeating: 0, count: 10), score: 1),
                IJBImage(name: "3.jpg", template: 2, media: 3, landmarks: [Double](repeating: 0, count: 10), score: 1),
            ],
            pairs: [IJBPair(template1: 1, template2: 2, genuine: true)])
        let vectors: [[Float]] = [[2, 0], [0, 2], [1, 0]]
        let plain = try IJBProtocol.scores(meta: meta, dimension: 2) { i, _ in vectors[i] }
        // Template 1 = (2, 2) / √8; template 2 = (1, 0).
        XCTAssertEqual(plain[0], 2 / Float(8).squareRoot(), accuracy: 1e-6)
        let weighted = try IJBProtocol.scores(meta: meta, dimension: 2, detectorScoreWeighting: true) { i, _ in vectors[i] }
        // Template 1 = (1, 2) / √5.
        XCTAssertEqual(weighted[0], 1 / Float(5).squareRoot(), accuracy: 1e-6)
        XCTAssertThrowsError(try IJBProtocol.scores(meta: meta, dimension: 3) { i, _ in vectors[i] })
    }

    func testParseRejectsMalformedMeta() {
        let marks = "1.jpg 1 2 3 4 5 6 7 8 9 10 0.9\n"
        XCTAssertNoThrow(try IJBMeta.parse(faceTemplateMedia: "1.jpg 4 9\n", pairLabels: "4 4 1\n", landmarks: marks))
        XCTAssertThrowsError(try IJBMeta.parse(faceTemplateMedia: "2.jpg 4 9\n", pairLabels: "", landmarks: marks))
        XCTAssertThrowsError(try IJBMeta.parse(faceTemplateMedia: "1.jpg 4\n", pairLabels: "", landmarks: marks))
        XCTAssertThrowsError(try IJBMeta.parse(faceTemplateMedia: "1.jpg 4 9\n", pairLabels: "4 5 1\n", landmarks: marks))
        XCTAssertThrowsError(try IJBMeta.parse(faceTemplateMedia: "1.jpg 4 9\n", pairLabels: "4 4 2\n", landmarks: marks))
        XCTAssertThrowsError(try IJBMeta.parse(faceTemplateMedia: "1.jpg 4 9\n", pairLabels: "", landmarks: "1.jpg 1 2\n"))
    }

    /// The generated tree parses back to its ground truth: templates, media, landmarks, pairs.
    func testSyntheticTreeParses() throws {
        let config = SyntheticIJB.Configuration(identities: 3, templatesPerIdentity: 2, mediaPerTemplate: 2,
                                                imagesPerMedia: 2, seed: 5)
        let crops = try SyntheticIJB.write(root: root, target: .ijbb, configuration: config)
        XCTAssertThrowsError(try IJBMeta.load(root: root, target: .ijbc))
        let meta = try IJBMeta.load(root: root, target: .ijbb)
        XCTAssertEqual(meta.images.count, 24)
        XCTAssertEqual(Set(meta.images.map(\.template)).count, 6)
        XCTAssertEqual(Set(meta.images.map(\.media)).count, 12)
        for (image, crop) in zip(meta.images, crops) {
            XCTAssertEqual(image.name, crop.name)
            XCTAssertEqual(image.template, crop.template)
            XCTAssertEqual(image.media, crop.media)
            for k in 0..<10 { XCTAssertEqual(image.landmarks[k], crop.landmarks[k], accuracy: 1e-3) }
            XCTAssertTrue(FileManager.default.fileExists(atPath: IJBMeta.imageDirectory(root: root) + "/" + image.name))
        }
        // 3 genuine pairs (one per identity) and 3·4 impostor pairs.
        XCTAssertEqual(meta.pairs.count, 15)
        XCTAssertEqual(meta.pairs.filter(\.genuine).count, 3)
        let identityOf = Dictionary(crops.map { ($0.template, $0.identity) }, uniquingKeysWith: { a, _ in a })
        for pair in meta.pairs {
            XCTAssertEqual(pair.genuine, identityOf[pair.template1] == identityOf[pair.template2])
        }
    }

    /// End to end on the synthetic tree: read, align each loose crop, recover the original render;
    /// then pair scores from a feature closure that sees the aligned pixels separate genuine pairs
    /// from impostors.
    func testEndToEndAlignmentRecoversRenders() throws {
        let config = SyntheticIJB.Configuration(identities: 2, templatesPerIdentity: 2, mediaPerTemplate: 2,
                                                imagesPerMedia: 1, seed: 9)
        let crops = try SyntheticIJB.write(root: root, target: .ijbc, configuration: config)
        let meta = try IJBMeta.load(root: root, target: .ijbc)
        let faces = SyntheticIJB.faces(config)
        let decoder = try ImageDecoder()
        var alignedFaces: [[UInt8]] = []
        for (image, crop) in zip(meta.images, crops) {
            let aligned = try IJBProtocol.alignedFace(root: root, image: image, decoder: decoder)
            let render = faces.render(identity: crop.identity, image: crop.image, quality: 1)
            var sum = 0
            for i in 0..<render.count { sum += abs(Int(aligned[i]) - Int(render[i])) }
            let error = Double(sum) / Double(render.count)
            XCTAssertLessThan(error, 5, "\(image.name)")
            alignedFaces.append(aligned)
        }
        // A stand-in feature: one-hot of the identity of the nearest render in the tree (nearest
        // neighbour on pixels), so the scores follow the alignment through the protocol.
        let renders = crops.map { (identity: $0.identity, pixels: faces.render(identity: $0.identity, image: $0.image, quality: 1)) }
        let scores = try IJBProtocol.scores(meta: meta, dimension: config.identities) { i, _ in
            let nearest = renders.min { lhs, rhs in
                func distance(_ pixels: [UInt8]) -> Int {
                    var sum = 0
                    for p in 0..<pixels.count { sum += abs(Int(alignedFaces[i][p]) - Int(pixels[p])) }
                    return sum
                }
                return distance(lhs.pixels) < distance(rhs.pixels)
            }!
            var feature = [Float](repeating: 0, count: config.identities)
            feature[nearest.identity] = 3
            return feature
        }
        XCTAssertEqual(scores.count, meta.pairs.count)
        let genuine = zip(scores, meta.pairs).filter { $0.1.genuine }.map(\.0)
        let impostor = zip(scores, meta.pairs).filter { !$0.1.genuine }.map(\.0)
        XCTAssertFalse(genuine.isEmpty)
        XCTAssertFalse(impostor.isEmpty)
        for score in genuine { XCTAssertEqual(score, 1, accuracy: 1e-6) }
        for score in impostor { XCTAssertEqual(score, 0, accuracy: 1e-6) }
    }

    /// TAR at the ROC point nearest each FAR: genuine 0.9, 0.8, 0.4; impostor 0.7, 0.3, 0.2, 0.1.
    func testTARAtFAR() {
        let scores: [Float] = [0.9, 0.7, 0.8, 0.3, 0.4, 0.2, 0.1]
        let genuine = [true, false, true, false, true, false, false]
        let pairs = genuine.map { IJBPair(template1: 1, template2: 2, genuine: $0) }
        let table = IJBProtocol.tarAtFAR(scores: scores, pairs: pairs, levels: [0.1, 0.25, 1])
        XCTAssertEqual(table.map(\.far), [0.1, 0.25, 1])
        // FAR 0.1 is nearest the origin (0, 0); 0.25 first reached with 2 of 3 genuine accepted.
        XCTAssertEqual(table[0].tar, 0, accuracy: 1e-12)
        XCTAssertEqual(table[1].tar, 2.0 / 3.0, accuracy: 1e-12)
        XCTAssertEqual(table[2].tar, 1, accuracy: 1e-12)
        XCTAssertEqual(IJBProtocol.farLevels, [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
    }

    /// Network features: the sum of the image's and its mirror's un-normalised embeddings, the same
    /// whatever the batch size.
    func testNetworkFeaturesAreFlipFusedAndBatchIndependent() throws {
        let config = SyntheticIJB.Configuration(identities: 2, templatesPerIdentity: 1, mediaPerTemplate: 2,
                                                imagesPerMedia: 2, seed: 4)
        try SyntheticIJB.write(root: root, target: .ijbc, configuration: config)
        let meta = try IJBMeta.load(root: root, target: .ijbc)
        let net = IResNet(configuration: IResNetConfiguration(unitsPerStage: [1, 1, 1, 1], stageWidths: [4, 4, 8, 8],
                                                              inputSize: 112, embeddingSize: 8))
        var rng = SplitMix64(seed: 2)
        net.resetParameters(&rng)
        let d = 8
        let byThree = try IJBProtocol.networkFeatures(root: root, meta: meta, network: net, batch: 3)
        let byOne = try IJBProtocol.networkFeatures(root: root, meta: meta, network: net, batch: 1)
        XCTAssertEqual(byThree.count, meta.images.count * d)
        for i in 0..<byThree.count { XCTAssertEqual(byThree[i], byOne[i], accuracy: 1e-4) }

        // By hand for the first image: the face and its mirror as a batch of two.
        let face = try IJBProtocol.alignedFace(root: root, image: meta.images[0], decoder: try ImageDecoder())
        var mirror = face
        for y in 0..<112 {
            for x in 0..<112 {
                for c in 0..<3 { mirror[(y * 112 + 111 - x) * 3 + c] = face[(y * 112 + x) * 3 + c] }
            }
        }
        InputNormalization.normalize(bgr: face, count: 112 * 112 * 3, into: net.input.data)
        InputNormalization.normalize(bgr: mirror, count: 112 * 112 * 3, into: net.input.data + 112 * 112 * 3)
        net.forward(batch: 2, training: false)
        for c in 0..<d {
            let expected = net.embeddings.data[c] * net.norms.data[0] + net.embeddings.data[d + c] * net.norms.data[1]
            XCTAssertEqual(byOne[c], expected, accuracy: 1e-4)
        }
        let scores = IJBProtocol.scores(meta: meta, features: byOne, dimension: d)
        XCTAssertEqual(scores.count, meta.pairs.count)
        for score in scores { XCTAssertTrue(score >= -1.0001 && score <= 1.0001) }
    }
}
