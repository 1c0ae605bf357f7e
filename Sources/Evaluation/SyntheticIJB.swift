// A small IJB-style tree for tests: loose crops made from procedural faces and the three meta files
// of the InsightFace release layout (see IJBProtocol.swift).
//
// SyntheticFaces renders faces already aligned to 112×112, so the five landmarks of a render are
// taken to be the ArcFace template points. Each loose crop places a render into a larger canvas
// with a random similarity (scale, rotation, offset), and its landmarks are the template points
// under that same similarity.

import DataPipeline
import Foundation
import Tensors

public enum SyntheticIJB {
    public struct Configuration: Sendable {
        public var identities: Int
        public var templatesPerIdentity: Int
        public var mediaPerTemplate: Int
        public var imagesPerMedia: Int
        /// Side of the square loose crops.
        public var canvasSize: Int
        /// Range of the render-to-canvas scale.
        public var scaleRange: ClosedRange<Double>
        /// Largest rotation, radians either way.
        public var maxRotation: Double
        /// Largest shift of the face centre from the canvas centre, pixels either way.
        public var maxOffset: Double
        public var jpegQuality: Int
        public var seed: UInt64

        public init(identities: Int = 3, templatesPerIdentity: Int = 2, mediaPerTemplate: Int = 2,
                    imagesPerMedia: Int = 2, canvasSize: Int = 240, scaleRange: ClosedRange<Double> = 1.2...1.5,
                    maxRotation: Double = 0.35, maxOffset: Double = 10, jpegQuality: Int = 95, seed: UInt64 = 1) {
            self.identities = identities; self.templatesPerIdentity = templatesPerIdentity
            self.mediaPerTemplate = mediaPerTemplate; self.imagesPerMedia = imagesPerMedia
            self.canvasSize = canvasSize; self.scaleRange = scaleRange; self.maxRotation = maxRotation
            self.maxOffset = maxOffset; self.jpegQuality = jpegQuality; self.seed = seed
        }
    }

    /// Ground truth of one written loose crop.
    public struct Crop: Sendable {
        public let name: String
        public let identity: Int
        /// The SyntheticFaces image index of the render.
        public let image: Int
        public let template: Int
        public let media: Int
        /// Maps render coordinates to loose-crop coordinates.
        public let placement: AffineMatrix
        public let landmarks: [Double]
    }

    /// Background grey of the loose crops outside the placed render.
    public static let background: UInt8 = 96

    /// The faces used for the renders, at full quality.
    public static func faces(_ configuration: Configuration) -> SyntheticFaces {
        SyntheticFaces(seed: configuration.seed)
    }

    /// Writes `root/loose_crop/*.jpg` and `root/meta/<target>_*.txt`. Templates are numbered from
    /// 1 in identity order, media from 1 over the whole set; every two templates of one identity
    /// make a genuine pair, and every two templates of different identities an impostor pair.
    /// Returns the crops in the order of the face/template/media file.
    @discardableResult
    public static func write(root: String, target: IJBTarget, configuration c: Configuration) throws -> [Crop] {
        precondition(c.identities > 0 && c.templatesPerIdentity > 0 && c.mediaPerTemplate > 0 && c.imagesPerMedia > 0,
                     "synthetic IJB needs at least one identity, template, media and image")
        let fm = FileManager.default
        try fm.createDirectory(atPath: IJBMeta.imageDirectory(root: root), withIntermediateDirectories: true)
        try fm.createDirectory(atPath: IJBMeta.metaDirectory(root: root), withIntermediateDirectories: true)
        let faces = faces(c)
        var random = SplitMix64(seed: c.seed, 0x1_7B)
        func uniform(_ range: ClosedRange<Double>) -> Double {
            range.lowerBound + Double(random.nextUniform()) * (range.upperBound - range.lowerBound)
        }
        var crops: [Crop] = []
        var tidMid = "", marks = ""
        var templatesOf: [[Int]] = []
        var template = 0, media = 0
        let size = Double(SyntheticFaces.imageSize), centre = Double(c.canvasSize) / 2
        for identity in 0..<c.identities {
            var image = 0, templates: [Int] = []
            for _ in 0..<c.templatesPerIdentity {
                template += 1
                templates.append(template)
                for _ in 0..<c.mediaPerTemplate {
                    media += 1
                    for _ in 0..<c.imagesPerMedia {
                        let render = faces.render(identity: identity, image: image, quality: 1)
                        let scale = uniform(c.scaleRange), angle = uniform(-c.maxRotation...c.maxRotation)
                        let ox = uniform(-c.maxOffset...c.maxOffset), oy = uniform(-c.maxOffset...c.maxOffset)
                        // Rotate and scale about the render's centre, then put that centre at the
                        // shifted canvas centre.
                        let rs = AffineMatrix.similarity(scale: scale, angle: angle, tx: 0, ty: 0)
                        let mid = (size - 1) / 2
                        let (rx, ry) = rs.apply(x: mid, y: mid)
                        let placement = AffineMatrix.similarity(scale: scale, angle: angle,
                                                                   tx: centre + ox - rx, ty: centre + oy - ry)
                        guard let canvas = FaceAlignment.warp(
                            bgr: render, width: SyntheticFaces.imageSize, height: SyntheticFaces.imageSize,
                            transform: placement, outputWidth: c.canvasSize, outputHeight: c.canvasSize,
                            border: background) else { throw IJBError("singular placement") }
                        var landmarks: [Double] = []
                        for k in 0..<5 {
                            let p = placement.apply(x: FaceAlignment.arcFaceTemplate[2 * k],
                                                    y: FaceAlignment.arcFaceTemplate[2 * k + 1])
                            landmarks += [p.x, p.y]
                        }
                        let name = "\(crops.count + 1).jpg"
                        let jpeg = try canvas.withUnsafeBufferPointer {
                            try ImageEncoder.jpeg(bgr: $0, width: c.canvasSize, height: c.canvasSize, quality: c.jpegQuality)
                        }
                        let path = IJBMeta.imageDirectory(root: root) + "/" + name
                        guard fm.createFile(atPath: path, contents: Data(jpeg)) else { throw IJBError("cannot write \(path)") }
                        tidMid += "\(name) \(template) \(media)\n"
                        let score = 0.9 + 0.1 * uniform(0...1)
                        marks += name + landmarks.map { " " + String(format: "%.4f", $0) }.joined()
                            + " " + String(format: "%.6f", score) + "\n"
                        crops.append(Crop(name: name, identity: identity, image: image, template: template,
                                          media: media, placement: placement, landmarks: landmarks))
                        image += 1
                    }
                }
            }
            templatesOf.append(templates)
        }
        var pairs = ""
        for i in 0..<templatesOf.count {
            let own = templatesOf[i]
            for a in 0..<own.count { for b in (a + 1)..<own.count { pairs += "\(own[a]) \(own[b]) 1\n" } }
            for j in (i + 1)..<templatesOf.count {
                for a in own { for b in templatesOf[j] { pairs += "\(a) \(b) 0\n" } }
            }
        }
        for (path, text) in [(IJBMeta.faceTemplateMediaPath(root: root, target: target), tidMid),
                             (IJBMeta.landmarksPath(root: root, target: target), marks),
                             (IJBMeta.pairLabelPath(root: root, target: target), pairs)] {
            guard fm.createFile(atPath: path, contents: Data(text.utf8)) else { throw IJBError("cannot write \(path)") }
        }
        return crops
    }
}
