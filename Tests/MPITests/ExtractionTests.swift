// Verification embeddings extracted by several ranks equal those of one process.
import Collectives
import DataPipeline
import Evaluation
import Layers
import Tensors

let extractionTests: [MPITest] = [
    MPITest("distributed extraction equals single-rank extraction") { world, expect in
        // Six pairs of small synthetic faces, JPEG-encoded, in a verification set.
        let faces = SyntheticFaces(seed: 3)
        var images: [[UInt8]] = []
        for i in 0..<12 {
            let bgr = faces.render(identity: i / 4, image: i % 4, quality: 1)
            images.append(try bgr.withUnsafeBufferPointer {
                try ImageEncoder.jpeg(bgr: $0, width: 112, height: 112, quality: 90)
            })
        }
        let set = try VerificationSet(name: "tiny", images: images, issame: [true, false, true, false, true, false])
        let config = IResNetConfiguration(unitsPerStage: [1, 1, 1, 1], stageWidths: [8, 8, 16, 16], embeddingSize: 16)
        let net = IResNet(configuration: config)
        var rng = SplitMix64(seed: 4)
        net.resetParameters(&rng)
        let single = try EmbeddingExtractor.flipFused(set, indices: 0..<12, network: net, batch: 5)
        let shared = try DistributedExtraction.flipFused(set, network: net, group: world, batch: 5)
        var worst: Float = 0
        for i in 0..<single.count { worst = max(worst, abs(single[i] - shared[i])) }
        expect.check(worst <= 1e-5, "distributed embeddings differ by \(worst)")
    },
]
