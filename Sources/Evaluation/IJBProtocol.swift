// The IJB-B / IJB-C 1:1 template verification protocol of the InsightFace release:
//   ROOT/meta/<target>_face_tid_mid.txt        image name, template id, media id
//   ROOT/meta/<target>_template_pair_label.txt template 1, template 2, label (1 genuine, 0 impostor)
//   ROOT/meta/<target>_name_5pts_score.txt     image name, 5 landmarks (x y interleaved), detection score
//   ROOT/loose_crop/<image name>               the loose face crops
// where <target> is `ijbb` or `ijbc`. An image's feature is its flip-fused un-normalised embedding
// (image plus mirror, norm kept); a template is the sum over its media of each media's mean feature,
// L2-normalised; a pair's score is the cosine similarity of its two templates.

import DataPipeline
import Foundation
import Layers

public enum IJBTarget: String, Sendable, CaseIterable {
    case ijbb = "IJBB"
    case ijbc = "IJBC"

    /// The file-name prefix of the meta files.
    public var prefix: String { rawValue.lowercased() }
}

public struct IJBError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
    public init(_ message: String) { self.message = message }
}

/// One loose crop of the protocol.
public struct IJBImage: Sendable, Equatable {
    public let name: String
    public let template: Int
    public let media: Int
    /// Five landmarks in the loose crop, x and y interleaved.
    public let landmarks: [Double]
    /// The face detector's score.
    public let score: Double

    public init(name: String, template: Int, media: Int, landmarks: [Double], score: Double) {
        self.name = name; self.template = template; self.media = media
        self.landmarks = landmarks; self.score = score
    }
}

public struct IJBPair: Sendable, Equatable {
    public let template1: Int
    public let template2: Int
    public let genuine: Bool

    public init(template1: Int, template2: Int, genuine: Bool) {
        self.template1 = template1; self.template2 = template2; self.genuine = genuine
    }
}

/// The parsed meta files of one target.
public struct IJBMeta: Sendable {
    /// In the order of the face/template/media file.
    public var images: [IJBImage]
    public var pairs: [IJBPair]

    public init(images: [IJBImage], pairs: [IJBPair]) {
        self.images = images; self.pairs = pairs
    }

    public static func metaDirectory(root: String) -> String { root + "/meta" }
    public static func imageDirectory(root: String) -> String { root + "/loose_crop" }
    public static func faceTemplateMediaPath(root: String, target: IJBTarget) -> String {
        metaDirectory(root: root) + "/\(target.prefix)_face_tid_mid.txt"
    }
    public static func pairLabelPath(root: String, target: IJBTarget) -> String {
        metaDirectory(root: root) + "/\(target.prefix)_template_pair_label.txt"
    }
    public static func landmarksPath(root: String, target: IJBTarget) -> String {
        metaDirectory(root: root) + "/\(target.prefix)_name_5pts_score.txt"
    }

    /// Reads the three meta files under `root`.
    public static func load(root: String, target: IJBTarget) throws -> IJBMeta {
        func read(_ path: String) throws -> String {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw IJBError("cannot read \(path)")
            }
            return String(decoding: data, as: UTF8.self)
        }
        return try parse(faceTemplateMedia: read(faceTemplateMediaPath(root: root, target: target)),
                         pairLabels: read(pairLabelPath(root: root, target: target)),
                         landmarks: read(landmarksPath(root: root, target: target)))
    }

    /// Parses the contents of the three meta files (whitespace-separated fields, one record a line;
    /// blank lines are skipped). Every image of the face/template/media list needs landmarks, and
    /// every template of a pair needs at least one image.
    public static func parse(faceTemplateMedia: String, pairLabels: String, landmarks: String) throws -> IJBMeta {
        func records(_ text: String, _ what: String, fields: Int) throws -> [(line: Int, fields: [Substring])] {
            var out: [(Int, [Substring])] = []
            for (number, line) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
                let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "," })
                if parts.isEmpty { continue }
                guard parts.count == fields else {
                    throw IJBError("\(what) line \(number + 1): \(parts.count) fields, expected \(fields)")
                }
                out.append((number + 1, parts))
            }
            return out
        }
        func int(_ s: Substring, _ what: String, _ line: Int) throws -> Int {
            guard let v = Int(s) else { throw IJBError("\(what) line \(line): '\(s)' is not an integer") }
            return v
        }
        func real(_ s: Substring, _ what: String, _ line: Int) throws -> Double {
            guard let v = Double(s), v.isFinite else { throw IJBError("\(what) line \(line): '\(s)' is not a number") }
            return v
        }

        var marks: [String: (landmarks: [Double], score: Double)] = [:]
        for (line, f) in try records(landmarks, "landmarks", fields: 12) {
            let points = try f[1...10].map { try real($0, "landmarks", line) }
            marks[String(f[0])] = (points, try real(f[11], "landmarks", line))
        }
        var images: [IJBImage] = []
        for (line, f) in try records(faceTemplateMedia, "face/template/media", fields: 3) {
            let name = String(f[0])
            guard let m = marks[name] else { throw IJBError("image \(name) has no landmarks") }
            images.append(IJBImage(name: name, template: try int(f[1], "face/template/media", line),
                                   media: try int(f[2], "face/template/media", line),
                                   landmarks: m.landmarks, score: m.score))
        }
        let templates = Set(images.map(\.template))
        var pairs: [IJBPair] = []
        for (line, f) in try records(pairLabels, "pairs", fields: 3) {
            let t1 = try int(f[0], "pairs", line), t2 = try int(f[1], "pairs", line)
            let label = try int(f[2], "pairs", line)
            guard label == 0 || label == 1 else { throw IJBError("pairs line \(line): label \(label) is not 0 or 1") }
            for t in [t1, t2] where !templates.contains(t) {
                throw IJBError("pairs line \(line): template \(t) has no images")
            }
            pairs.append(IJBPair(template1: t1, template2: t2, genuine: label == 1))
        }
        return IJBMeta(images: images, pairs: pairs)
    }
}

public enum IJBProtocol {
    /// Template features from per-image features: `features` holds one un-normalised
    /// `dimension`-vector per entry of `images`, in order. Within a template, the images of each
    /// media are averaged; the media means are summed and the sum L2-normalised (a zero sum stays
    /// zero). Returns the template ids in ascending order and their unit features, row by row.
    public static func templateFeatures(images: [IJBImage], features: [Float], dimension d: Int)
        -> (templates: [Int], features: [Float]) {
        precondition(features.count == images.count * d, "one feature per image expected")
        // template -> media -> image rows
        var groups: [Int: [Int: [Int]]] = [:]
        for (row, image) in images.enumerated() {
            groups[image.template, default: [:]][image.media, default: []].append(row)
        }
        let templates = groups.keys.sorted()
        var out = [Float](repeating: 0, count: templates.count * d)
        for (t, template) in templates.enumerated() {
            var sum = [Double](repeating: 0, count: d)
            for media in groups[template]!.keys.sorted() {
                let rows = groups[template]![media]!
                let inv = 1 / Double(rows.count)
                for row in rows {
                    for c in 0..<d { sum[c] += Double(features[row * d + c]) * inv }
                }
            }
            let norm = sum.reduce(0) { $0 + $1 * $1 }.squareRoot()
            let scale = norm > 0 ? 1 / norm : 0
            for c in 0..<d { out[t * d + c] = Float(sum[c] * scale) }
        }
        return (templates, out)
    }

    /// Cosine similarities of the pairs' unit template features.
    public static func pairScores(pairs: [IJBPair], templates: [Int], features: [Float], dimension d: Int) -> [Float] {
        var index: [Int: Int] = [:]
        for (i, t) in templates.enumerated() { index[t] = i }
        return pairs.map { pair in
            guard let i = index[pair.template1], let j = index[pair.template2] else {
                preconditionFailure("pair template without a feature")
            }
            var dot = 0.0
            for c in 0..<d { dot += Double(features[i * d + c]) * Double(features[j * d + c]) }
            return Float(dot)
        }
    }

    /// Pair scores from per-image un-normalised features (`meta.images.count × dimension`). With
    /// `detectorScoreWeighting` each feature is first multiplied by its detection score
    /// (InsightFace's optional "D1" mode; off in the standard protocol used here).
    public static func scores(meta: IJBMeta, features: [Float], dimension: Int,
                              detectorScoreWeighting: Bool = false) -> [Float] {
        var weighted = features
        if detectorScoreWeighting {
            for (i, image) in meta.images.enumerated() {
                for c in 0..<dimension { weighted[i * dimension + c] *= Float(image.score) }
            }
        }
        let t = templateFeatures(images: meta.images, features: weighted, dimension: dimension)
        return pairScores(pairs: meta.pairs, templates: t.templates, features: t.features, dimension: dimension)
    }

    /// The whole protocol with features from `feature`, which returns an image's flip-fused
    /// un-normalised feature of `dimension` values (`index` is the image's position in
    /// `meta.images`). Returns the pair scores in pair order.
    public static func scores(meta: IJBMeta, dimension: Int, detectorScoreWeighting: Bool = false,
                              feature: (_ index: Int, _ image: IJBImage) throws -> [Float]) throws -> [Float] {
        var features = [Float](repeating: 0, count: meta.images.count * dimension)
        for (i, image) in meta.images.enumerated() {
            let f = try feature(i, image)
            guard f.count == dimension else {
                throw IJBError("feature of \(image.name) has \(f.count) values, expected \(dimension)")
            }
            for c in 0..<dimension { features[i * dimension + c] = f[c] }
        }
        return scores(meta: meta, features: features, dimension: dimension,
                      detectorScoreWeighting: detectorScoreWeighting)
    }

    /// The FARs reported for IJB-B/C.
    public static let farLevels: [Double] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]

    /// TAR at each of `farLevels` (the ROC point nearest each FAR).
    public static func tarAtFAR(scores: [Float], pairs: [IJBPair], levels: [Double] = farLevels) -> [(far: Double, tar: Double)] {
        let roc = ROC(scores: scores.map(Double.init), labels: pairs.map(\.genuine))
        return levels.map { ($0, roc.tar(atFAR: $0)) }
    }

    /// Flip-fused un-normalised features of every image of `meta` through `net` (evaluation
    /// mode): each loose crop is aligned, and the embedding of the face and of its mirror image,
    /// each scaled back by its norm, are summed. `progress` gets the number of images done.
    public static func networkFeatures(root: String, meta: IJBMeta, network net: IResNet, batch: Int = 32,
                                       progress: ((Int) -> Void)? = nil) throws -> [Float] {
        let size = net.configuration.inputSize
        guard size == FaceAlignment.outputSize else {
            throw IJBError("the network takes \(size)×\(size) inputs; IJB faces are aligned to \(FaceAlignment.outputSize)")
        }
        let decoder = try ImageDecoder()
        return try EmbeddingExtractor.flipFusedFeatures(count: meta.images.count, network: net, batch: batch, fill: { i, pixels in
            let face = try alignedFace(root: root, image: meta.images[i], decoder: decoder)
            _ = pixels.update(from: face)
        }, progress: progress)
    }

    /// Reads and aligns one loose crop of `root` to a 112×112 BGR face.
    public static func alignedFace(root: String, image: IJBImage, decoder: ImageDecoder) throws -> [UInt8] {
        let path = IJBMeta.imageDirectory(root: root) + "/" + image.name
        guard let data = FileManager.default.contents(atPath: path) else { throw IJBError("cannot read \(path)") }
        let decoded = try data.withUnsafeBytes { try decoder.decode($0) }
        guard let face = FaceAlignment.align(bgr: decoded.bgr, width: decoded.width, height: decoded.height,
                                             landmarks: image.landmarks) else {
            throw IJBError("degenerate landmarks for \(image.name)")
        }
        return face
    }
}
