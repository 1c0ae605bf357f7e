// Procedural face-like images of known identity and quality, for end-to-end training and
// verification runs without a real face data set, and for relating feature norms to image quality
// (AdaFace's premise). Every image is a pure function of (seed, identity, image index), so a set
// comes out byte-identical whatever the thread count.
//
// An identity fixes the face's geometry, colours and skin texture; an image adds nuisance (small
// in-plane pose change and yaw, expression, background, clothing, lighting, sensor noise) and a
// quality level q in [0, 1] that sets blur, loss of resolution, noise, contrast and JPEG quality.

import Dispatch
import Foundation
import Tensors

/// One generated image, JPEG-encoded.
public struct SyntheticFace: Sendable {
    public let identity: Int
    public let image: Int
    /// 1 is a clean image; near 0 the identity is barely recoverable.
    public let quality: Float
    public let jpeg: [UInt8]
}

/// Receives generated images in (identity, image) order, on the calling thread.
public protocol SyntheticFaceSink {
    mutating func accept(_ face: SyntheticFace) throws
}

public struct SyntheticFaces: Sendable {
    public static let imageSize = 112
    static let pixelCount = imageSize * imageSize * 3

    public let seed: UInt64

    public init(seed: UInt64) { self.seed = seed }

    /// The image's quality level: 60 % high U(0.75, 1), 25 % medium U(0.35, 0.75) and a 15 % low
    /// tail U(0, 0.35), roughly the mix of a curated web-crawled set with its share of faces that
    /// are hard or impossible to recognise.
    public func qualityLevel(identity: Int, image: Int) -> Float {
        var random = stream(.quality, identity, image)
        let band = random.nextUniform()
        if band < 0.60 { return random.uniform(0.75, 1) }
        if band < 0.85 { return random.uniform(0.35, 0.75) }
        return random.uniform(0, 0.35)
    }

    /// Compression goes with the other degradations: 95 for a clean image, 40 for the worst.
    public static func jpegQuality(forQualityLevel quality: Float) -> Int {
        40 + Int((55 * clamp01(quality)).rounded())
    }

    /// The 112×112 BGR pixels of one image; `quality` overrides the image's own level (the pose,
    /// lighting and noise stay the same, so renders at several levels can be compared).
    public func render(identity: Int, image: Int, quality: Float? = nil) -> [UInt8] {
        var pixels = [UInt8](repeating: 0, count: Self.pixelCount)
        let traits = FaceTraits(faces: self, identity: identity)
        let scratch = RenderScratch()
        pixels.withUnsafeMutableBufferPointer {
            render(traits, identity: identity, image: image,
                   quality: quality ?? qualityLevel(identity: identity, image: image),
                   into: $0.baseAddress!, scratch: scratch)
        }
        return pixels
    }

    /// Renders and JPEG-encodes `imagesPerIdentity` images of every identity in `identities` on
    /// `threads` threads, and hands them to `sink` in (identity, image) order. `progress` gets the
    /// number of images delivered so far.
    public func generate<Sink: SyntheticFaceSink>(
        identities: Range<Int>, imagesPerIdentity: Int, threads: Int, into sink: inout Sink,
        progress: (Int) -> Void = { _ in }
    ) throws {
        precondition(imagesPerIdentity >= 0, "images per identity must not be negative")
        let workers = max(1, threads)
        // Batches keep memory flat; several identities per worker keep both cores busy.
        let batchSize = workers * 8
        var delivered = 0
        var start = identities.lowerBound
        while start < identities.upperBound {
            let batch = start..<min(start + batchSize, identities.upperBound)
            let slots = BatchSlots(count: batch.count)
            DispatchQueue.concurrentPerform(iterations: min(workers, batch.count)) { worker in
                let scratch = RenderScratch()
                var pixels = [UInt8](repeating: 0, count: Self.pixelCount)
                var slot = worker
                while slot < batch.count {
                    let identity = batch.lowerBound + slot
                    let traits = FaceTraits(faces: self, identity: identity)
                    do {
                        var faces = [SyntheticFace]()
                        faces.reserveCapacity(imagesPerIdentity)
                        for image in 0..<imagesPerIdentity {
                            let quality = qualityLevel(identity: identity, image: image)
                            let jpeg = try pixels.withUnsafeMutableBufferPointer { buffer in
                                render(traits, identity: identity, image: image, quality: quality,
                                       into: buffer.baseAddress!, scratch: scratch)
                                return try ImageEncoder.jpeg(
                                    bgr: UnsafeBufferPointer(buffer), width: Self.imageSize, height: Self.imageSize,
                                    quality: Self.jpegQuality(forQualityLevel: quality))
                            }
                            faces.append(SyntheticFace(identity: identity, image: image, quality: quality, jpeg: jpeg))
                        }
                        slots.results[slot] = .success(faces)
                    } catch {
                        slots.results[slot] = .failure(error)
                    }
                    slot += workers
                }
            }
            for result in slots.results {
                for face in try result!.get() {
                    try sink.accept(face)
                }
                delivered += imagesPerIdentity
            }
            progress(delivered)
            start = batch.upperBound
        }
    }

    /// A sheet for looking at the generator's output: one row per identity, its first
    /// `imagesPerIdentity` images sorted from clean (left) to degraded (right), 4-pixel gaps.
    public func previewSheet(identities: [Int], imagesPerIdentity: Int) -> (width: Int, height: Int, bgr: [UInt8]) {
        let size = Self.imageSize, gap = 4
        let width = gap + imagesPerIdentity * (size + gap), height = gap + identities.count * (size + gap)
        var sheet = [UInt8](repeating: 255, count: width * height * 3)
        for (row, identity) in identities.enumerated() {
            let order = (0..<imagesPerIdentity).sorted {
                qualityLevel(identity: identity, image: $0) > qualityLevel(identity: identity, image: $1)
            }
            for (column, image) in order.enumerated() {
                let pixels = render(identity: identity, image: image)
                let left = gap + column * (size + gap), top = gap + row * (size + gap)
                for y in 0..<size {
                    let target = ((top + y) * width + left) * 3
                    sheet[target..<target + size * 3] = pixels[y * size * 3..<(y + 1) * size * 3]
                }
            }
        }
        return (width, height, sheet)
    }

    // MARK: - Random streams

    enum StreamKind: UInt64 {
        case traits = 1, nuisance, quality, noise
    }

    /// Independent streams per purpose, so that e.g. the quality level never shifts the pose.
    func stream(_ kind: StreamKind, _ identity: Int, _ image: Int) -> Draws {
        Draws(generator: SplitMix64(seed: seed, UInt64(identity), UInt64(image + 1) << 3 | kind.rawValue))
    }

    // MARK: - Rendering

    func render(_ traits: FaceTraits, identity: Int, image: Int, quality: Float,
                into output: UnsafeMutablePointer<UInt8>, scratch: RenderScratch) {
        var random = stream(.nuisance, identity, image)
        var noise = stream(.noise, identity, image)
        Self.draw(traits, FaceNuisance(&random), quality: quality, noiseSeed: noise.next(), into: output, scratch: scratch)
    }

    static func draw(_ traits: FaceTraits, _ nuisance: FaceNuisance, quality: Float, noiseSeed: UInt64,
                     into output: UnsafeMutablePointer<UInt8>, scratch: RenderScratch) {
        let pixels = scratch.canvas
        paintBackground(nuisance, pixels)
        paintFace(traits, nuisance, Canvas(pixels: pixels, pose: nuisance.pose))
        applyLighting(nuisance, pixels)
        degrade(pixels, quality: quality, sensorNoise: nuisance.sensorNoise, noiseSeed: noiseSeed, scratch: scratch)
        for i in 0..<pixelCount {
            output[i] = UInt8(clamp01(pixels[i]) * 255 + 0.5)
        }
    }

    private static func paintBackground(_ n: FaceNuisance, _ pixels: UnsafeMutablePointer<Float>) {
        let size = imageSize
        let dirX = cos(n.backgroundAngle), dirY = sin(n.backgroundAngle)
        for y in 0..<size {
            for x in 0..<size {
                let t = clamp01(0.5 + ((Float(x) - 56) * dirX + (Float(y) - 56) * dirY) / 112)
                let c = mix(n.background, n.background2, t)
                let p = pixels + (y * size + x) * 3
                p[0] = c.x; p[1] = c.y; p[2] = c.z
            }
        }
        // Out-of-focus objects behind the head: clutter that carries no identity.
        let flat = Canvas(pixels: pixels, pose: .identity)
        for blob in n.clutter { flat.paint(blob) }
    }

    private static func paintFace(_ t: FaceTraits, _ n: FaceNuisance, _ canvas: Canvas) {
        let cx = t.centreX, px = n.yaw  // features slide with yaw, the nearer ones more
        let face = FaceOutline(centreX: cx - 1.0 * px, centreY: t.centreY, radiusX: t.faceRX, radiusY: t.faceRY,
                               squareness: t.squareness, taper: t.chinTaper)

        canvas.paint(Ellipse(centreX: cx, centreY: 150, radiusX: 78, radiusY: 48, colour: n.clothing))
        canvas.paint(NeckLayer(centreX: cx, top: t.centreY + t.faceRY * 0.3, halfWidth: t.faceRX * 0.62,
                               bottom: 124, colour: t.skin * 0.8))
        if !t.hasHair || t.hairBottom < t.earY + t.earRY {
            for side in [Float(-1), 1] {
                let earX = face.centreX + side * (t.faceRX * 0.93 - 1.5 * side * px)
                canvas.paint(Ellipse(centreX: earX, centreY: t.earY, radiusX: t.earRX, radiusY: t.earRY,
                                     colour: t.skin * 0.9))
                canvas.paint(Ellipse(centreX: earX + side * 0.8, centreY: t.earY, radiusX: t.earRX * 0.5,
                                     radiusY: t.earRY * 0.6, colour: Colour(repeating: 0.8)), multiply: true)
            }
        }
        if t.hasHair {
            let volume = t.hairVolume
            let outline = FaceOutline(centreX: face.centreX, centreY: t.centreY - volume * 0.3,
                                      radiusX: t.faceRX + volume, radiusY: t.faceRY + volume * 0.8,
                                      squareness: t.hairSquareness, taper: 0)
            canvas.paint(HairMassLayer(outline: outline, bottom: t.hairBottom, colour: t.hairColour,
                                       strandFrequency: t.strandFrequency))
        }
        canvas.paint(SkinLayer(outline: face, skin: t.skin, pattern: t.pattern, blush: t.blush,
                               cheekOffsetX: t.cheekOffsetX, cheekY: t.cheekY, cheekRadius: t.cheekRadius,
                               yawShift: 3 * px))
        for spot in t.spots {
            canvas.paint(Ellipse(centreX: spot.u + 2 * px, centreY: spot.v, radiusX: spot.radius, radiusY: spot.radius,
                                 colour: spot.multiplier), multiply: true)
        }
        if t.beard != .shaven {
            canvas.paint(BeardLayer(outline: face, style: t.beard, top: t.noseTipY + 4,
                                    mouthY: t.mouthY, centreX: cx + 3 * px, chinHalfWidth: t.mouthHalfWidth,
                                    density: t.beardDensity, colour: t.hairColour * 0.85, textureSeed: t.textureSeed))
        }

        // Nose: a shadow along one side of the bridge, under the tip, and the nostrils.
        let noseX = cx + 5 * px
        canvas.paint(NoseLayer(centreX: noseX, bridgeY: t.noseBridgeY, tipY: t.noseTipY, halfWidth: t.noseWidth,
                               shadowSide: t.noseShadowSide), multiply: true)
        for side in [Float(-1), 1] {
            canvas.paint(Ellipse(centreX: noseX + side * t.noseWidth * 0.5, centreY: t.noseTipY + 0.8,
                                 radiusX: t.nostrilSize * 1.2, radiusY: t.nostrilSize * 0.7,
                                 colour: Colour(repeating: 0.45)), multiply: true)
        }

        if t.moustache {
            canvas.paint(MoustacheLayer(centreX: cx + 3.5 * px, y: t.mouthY - t.upperLip - 2.2,
                                        halfWidth: t.mouthHalfWidth * 1.05 + 1, thickness: 2.5 + t.beardDensity * 2,
                                        colour: t.hairColour * 0.8))
        }
        canvas.paint(MouthLayer(centreX: cx + 3.5 * px, y: t.mouthY, halfWidth: t.mouthHalfWidth,
                                upperLip: t.upperLip, lowerLip: t.lowerLip,
                                smile: t.smile + n.smileDelta, open: n.mouthOpen, lipColour: t.lipColour))

        for side in [Float(-1), 1] {
            // The eye on the side turned away narrows.
            let eyeX = cx + 3.5 * px + side * t.eyeHalfSpacing * (1 + 0.06 * side * px)
            let eyeRX = t.eyeRX * (1 - 0.12 * side * px)
            let eyeRY = max(0.35, t.eyeRY * n.eyeOpen)
            let tilt = t.eyeTilt * side
            canvas.paint(EyeLidLayer(centreX: eyeX, centreY: t.eyeY, radiusX: eyeRX, radiusY: eyeRY, tilt: tilt,
                                     thickness: t.lidThickness, colour: t.lashColour))
            canvas.paint(EyeLayer(centreX: eyeX, centreY: t.eyeY, radiusX: eyeRX, radiusY: eyeRY, tilt: tilt,
                                  irisRadius: t.eyeRY * t.irisRatio * 1.6, irisColour: t.irisColour,
                                  gazeX: n.gazeX, gazeY: n.gazeY))
            canvas.paint(BrowLayer(centreX: cx + 3 * px + side * (t.eyeHalfSpacing + t.browShift),
                                   centreY: t.eyeY - t.browGap - n.browRaise, halfLength: t.browHalfLength,
                                   thickness: t.browThickness, arch: t.browArch, tilt: t.browTilt * side,
                                   side: side, colour: t.browColour))
        }
        if t.hasHair {
            canvas.paint(FringeLayer(outline: face, top: t.hairTop, curve: t.hairCurve,
                                     amplitude: t.fringeAmplitude, frequency: t.fringeFrequency,
                                     phase: t.fringePhase, partingX: t.partingX + px,
                                     partingDepth: t.partingDepth, colour: t.hairColour,
                                     strandFrequency: t.strandFrequency))
        }
        if let glasses = t.glasses {
            let layer = GlassesLayer(glasses, leftX: cx + 3.5 * px - t.eyeHalfSpacing,
                                     rightX: cx + 3.5 * px + t.eyeHalfSpacing, eyeY: t.eyeY,
                                     faceLeft: face.centreX - t.faceRX * 0.97, faceRight: face.centreX + t.faceRX * 0.97)
            for lensX in [layer.leftX, layer.rightX] {
                canvas.paint(Ellipse(centreX: lensX, centreY: layer.centreY, radiusX: glasses.radiusX,
                                     radiusY: glasses.radiusY, colour: glasses.tint), multiply: true)
            }
            canvas.paint(layer)
        }
    }

    private static func applyLighting(_ n: FaceNuisance, _ pixels: UnsafeMutablePointer<Float>) {
        let size = imageSize
        let dirX = cos(n.lightAngle) * n.lightStrength / 56, dirY = sin(n.lightAngle) * n.lightStrength / 56
        let gain = n.cast * n.gain
        for y in 0..<size {
            for x in 0..<size {
                let shade = 1 + (Float(x) - 56) * dirX + (Float(y) - 56) * dirY
                let p = pixels + (y * size + x) * 3
                let c = ((Colour(p[0], p[1], p[2]) - 0.5) * n.contrast + 0.5) * gain * shade
                p[0] = c.x; p[1] = c.y; p[2] = c.z
            }
        }
    }

    /// Quality d = 1 − q sets optical blur, the resolution the image is reduced to (noise is added
    /// there, so it comes back as blobs, as from a small sensor), then lost contrast and colour.
    private static func degrade(_ pixels: UnsafeMutablePointer<Float>, quality: Float, sensorNoise: Float,
                         noiseSeed: UInt64, scratch: RenderScratch) {
        let size = imageSize
        let d = 1 - clamp01(quality)
        let blurSigma = 0.3 + 2.2 * d * d
        if blurSigma >= 0.45 { gaussianBlur(pixels, size: size, sigma: blurSigma, temp: scratch.temp) }
        let lowSize = max(8, Int((Float(size) * (1 - 0.9 * pow(d, 0.7))).rounded()))
        let noiseSigma = 0.11 * d * d
        if lowSize < size * 9 / 10 {  // the top of the high-quality band stays at full resolution
            boxDownsample(pixels, from: size, into: scratch.low, to: lowSize, temp: scratch.temp)
            addNoise(scratch.low, count: lowSize * lowSize * 3, sigma: noiseSigma, seed: noiseSeed)
            bilinearUpsample(scratch.low, from: lowSize, into: pixels, to: size, temp: scratch.temp)
        } else if noiseSigma > 0 {
            addNoise(pixels, count: size * size * 3, sigma: noiseSigma, seed: noiseSeed)
        }
        let contrast = 1 - 0.45 * d * d, desaturation = 0.6 * d * d
        if d > 0 {
            for i in stride(from: 0, to: size * size * 3, by: 3) {
                let c = Colour(pixels[i], pixels[i + 1], pixels[i + 2])
                let luma = 0.114 * c.x + 0.587 * c.y + 0.299 * c.z
                let out = (mix(c, Colour(repeating: luma), desaturation) - 0.5) * contrast + 0.5
                pixels[i] = out.x; pixels[i + 1] = out.y; pixels[i + 2] = out.z
            }
        }
        addNoise(pixels, count: size * size * 3, sigma: sensorNoise, seed: noiseSeed ^ 0x5E_4500)
    }
}

// Internals live in the type so that their plain names (Pose, Box, mix, gaussianBlur) never
// clash with other files of the module.
extension SyntheticFaces {
    /// Per-batch results, each slot written by exactly one worker (through a pointer: concurrent
    /// writes to one Array would trip the exclusivity checks).
    final class BatchSlots: @unchecked Sendable {
        let results: UnsafeMutableBufferPointer<Result<[SyntheticFace], Error>?>

        init(count: Int) {
            results = .allocate(capacity: count)
            results.initialize(repeating: nil)
        }

        deinit {
            results.deinitialize()
            results.deallocate()
        }
    }

    /// Float working buffers of one rendering thread.
    final class RenderScratch {
        let canvas: UnsafeMutablePointer<Float>
        let temp: UnsafeMutablePointer<Float>
        let low: UnsafeMutablePointer<Float>

        init() {
            canvas = .allocate(capacity: SyntheticFaces.pixelCount)
            temp = .allocate(capacity: SyntheticFaces.pixelCount)
            low = .allocate(capacity: SyntheticFaces.pixelCount)
        }

        deinit {
            canvas.deallocate()
            temp.deallocate()
            low.deallocate()
        }
    }

    // MARK: - Identity

    typealias Colour = SIMD3<Float>  // B, G, R in 0...1

    /// Freckles, moles, birthmarks: darkening spots fixed to the face.
    struct Spot {
        var u, v, radius: Float
        var multiplier: Colour
    }

    struct SkinPattern {
        var k1u, k1v, phase1, k2u, k2v, phase2, amplitude: Float
        var tint: Colour
    }

    enum BeardStyle {
        case shaven, shadow, full, goatee
    }

    struct Glasses {
        var radiusX, radiusY, squareness, thickness: Float
        var colour, tint: Colour
    }

    /// Everything fixed by (seed, identity), in the canonical 112×112 frame of InsightFace-aligned
    /// faces (eyes near y 52, mouth near y 90).
    struct FaceTraits {
        var centreX, centreY, faceRX, faceRY, squareness, chinTaper: Float
        var skin: Colour
        var hasHair: Bool
        var hairColour: Colour
        var hairTop, hairCurve, hairVolume, hairBottom, hairSquareness: Float
        var fringeAmplitude, fringeFrequency, fringePhase, partingX, partingDepth, strandFrequency: Float
        var earY, earRX, earRY: Float
        var eyeY, eyeHalfSpacing, eyeRX, eyeRY, eyeTilt, irisRatio, lidThickness: Float
        var irisColour, lashColour: Colour
        var browGap, browShift, browHalfLength, browThickness, browArch, browTilt: Float
        var browColour: Colour
        var noseBridgeY, noseTipY, noseWidth, nostrilSize, noseShadowSide: Float
        var mouthY, mouthHalfWidth, upperLip, lowerLip, smile: Float
        var lipColour: Colour
        var pattern: SkinPattern
        var blush, cheekOffsetX, cheekY, cheekRadius: Float
        var spots: [Spot]
        var beard: BeardStyle
        var beardDensity: Float
        var moustache: Bool
        var glasses: Glasses?
        var textureSeed: UInt64

        static let skinTones: [Colour] = [rgb(255, 226, 200), rgb(241, 196, 168), rgb(226, 174, 140),
                                          rgb(198, 138, 104), rgb(160, 108, 76), rgb(118, 80, 56), rgb(86, 58, 42)]
        static let hairColours: [Colour] = [rgb(28, 24, 22), rgb(58, 40, 28), rgb(100, 68, 44), rgb(140, 64, 36),
                                            rgb(212, 176, 118), rgb(234, 208, 160), rgb(150, 146, 142),
                                            rgb(218, 216, 210), rgb(178, 82, 42), rgb(64, 78, 150), rgb(170, 70, 130)]
        static let irisColours: [Colour] = [rgb(62, 36, 20), rgb(104, 66, 34), rgb(126, 106, 58), rgb(74, 124, 76),
                                            rgb(66, 116, 186), rgb(116, 128, 140), rgb(118, 168, 218)]

        init(faces: SyntheticFaces, identity: Int) {
            var r = faces.stream(.traits, identity, -1)
            centreX = 56 + r.gaussian(1.2, limit: 3)
            centreY = r.uniform(59, 65)
            faceRX = r.uniform(35, 44)
            faceRY = r.uniform(48, 58)
            squareness = r.uniform(0, 0.45)
            chinTaper = r.uniform(0, 0.4)

            let tone = r.uniform(0, Float(Self.skinTones.count - 1))
            let low = min(Int(tone), Self.skinTones.count - 2)
            skin = mix(Self.skinTones[low], Self.skinTones[low + 1], tone - Float(low))
                * Colour(r.uniform(0.93, 1.07), r.uniform(0.95, 1.05), r.uniform(0.96, 1.04))

            // Brows first: the hairline has to stay above them.
            eyeY = r.uniform(47, 54)
            browGap = r.uniform(7, 12)
            browThickness = r.uniform(1.4, 4.5)
            let browY = eyeY - browGap - browThickness

            hasHair = !r.chance(0.08)
            hairColour = r.pick(Self.hairColours) * Colour(repeating: r.uniform(0.85, 1.15))
            hairTop = r.uniform(6, browY - 7)
            hairCurve = r.uniform(-0.3, 1)
            hairVolume = r.uniform(2, 14)
            hairBottom = r.chance(0.4) ? r.uniform(70, 125) : r.uniform(30, 58)
            hairSquareness = r.uniform(0, 0.6)
            fringeAmplitude = r.uniform(0, max(0.5, min(6, browY - 4 - hairTop)))
            fringeFrequency = r.uniform(1.5, 7)
            fringePhase = r.uniform(0, 2 * .pi)
            partingX = centreX + r.uniform(-16, 16)
            partingDepth = r.chance(0.5) ? r.uniform(2, 10) : 0
            strandFrequency = r.uniform(0.6, 1.6)

            earY = r.uniform(50, 60)
            earRX = r.uniform(4.5, 7.5)
            earRY = r.uniform(8, 12)

            eyeHalfSpacing = r.uniform(15, 21)
            eyeRX = r.uniform(5.5, 8.5)
            eyeRY = r.uniform(2.6, 4.8)
            eyeTilt = r.uniform(-0.2, 0.2)
            irisRatio = r.uniform(0.55, 0.8)
            lidThickness = r.uniform(0.8, 2)
            irisColour = r.pick(Self.irisColours) * Colour(repeating: r.uniform(0.85, 1.15))
            lashColour = mix(Colour(repeating: 0.08), skin * 0.5, r.uniform(0, 0.6))

            browShift = r.uniform(-1.5, 3)
            browHalfLength = r.uniform(6, 11)
            browArch = r.uniform(-1, 3.5)
            browTilt = r.uniform(-0.25, 0.2)
            browColour = mix(hairColour, Colour(repeating: 0.1), r.uniform(0, 0.6))

            noseBridgeY = eyeY + r.uniform(-2, 5)
            noseTipY = r.uniform(68, 76)
            noseWidth = r.uniform(4.5, 9)
            nostrilSize = r.uniform(1.2, 2.6)
            noseShadowSide = r.chance(0.5) ? -1 : 1

            mouthY = max(noseTipY + 10, r.uniform(85, 94))
            mouthHalfWidth = r.uniform(9, 16)
            upperLip = r.uniform(1.2, 3.4)
            lowerLip = r.uniform(1.8, 4.8)
            smile = r.uniform(-0.08, 0.2)
            lipColour = mix(skin, rgb(196, 78, 86), r.uniform(0.3, 0.7)) * r.uniform(0.8, 1.05)

            pattern = SkinPattern(k1u: r.uniform(-0.35, 0.35), k1v: r.uniform(-0.35, 0.35), phase1: r.uniform(0, 2 * .pi),
                                  k2u: r.uniform(-0.35, 0.35), k2v: r.uniform(-0.35, 0.35), phase2: r.uniform(0, 2 * .pi),
                                  amplitude: r.uniform(0, 0.1),
                                  tint: Colour(r.uniform(0.5, 1.5), r.uniform(0.5, 1.5), r.uniform(0.5, 1.5)))
            blush = r.chance(0.6) ? r.uniform(0.05, 0.3) : 0
            cheekOffsetX = r.uniform(14, 22)
            cheekY = r.uniform(66, 76)
            cheekRadius = r.uniform(5, 9)

            spots = []
            if r.chance(0.35) {
                let freckleColour = mix(Colour(repeating: 0.7), skin * 0.6 + Colour(0, 0.05, 0.15), 0.5)
                let clusterX = centreX + r.uniform(-6, 6), clusterY = r.uniform(58, 70)
                for _ in 0..<Int(r.uniform(10, 45)) {
                    spots.append(Spot(u: clusterX + r.gaussian(12, limit: 26), v: clusterY + r.gaussian(7, limit: 16),
                                      radius: r.uniform(0.6, 1.4), multiplier: freckleColour))
                }
            }
            let moles = r.nextUniform()
            for _ in 0..<(moles < 0.5 ? 0 : moles < 0.8 ? 1 : 2) {
                spots.append(Spot(u: centreX + r.uniform(-26, 26), v: r.uniform(45, 100), radius: r.uniform(0.6, 1.3),
                                  multiplier: Colour(0.45, 0.5, 0.62)))
            }
            if r.chance(0.1) {  // birthmark
                spots.append(Spot(u: centreX + r.uniform(-26, 26), v: r.uniform(35, 95), radius: r.uniform(3, 6.5),
                                  multiplier: Colour(0.75, 0.72, 0.95)))
            }

            let beardDraw = r.nextUniform()
            beard = beardDraw < 0.1 ? .shadow : beardDraw < 0.2 ? .full : beardDraw < 0.27 ? .goatee : .shaven
            beardDensity = r.uniform(0.3, 0.9)
            moustache = r.chance(0.15)

            if r.chance(0.2) {
                glasses = Glasses(radiusX: eyeRX + r.uniform(3, 6), radiusY: eyeRY + r.uniform(3.5, 7),
                                  squareness: r.uniform(0, 0.8), thickness: r.uniform(0.8, 2.5),
                                  colour: r.pick([rgb(20, 20, 20), rgb(90, 50, 30), rgb(160, 160, 170), rgb(150, 30, 40)]),
                                  tint: r.chance(0.15) ? Colour(repeating: 0.45) : Colour(repeating: 0.94))
            } else {
                glasses = nil
            }
            textureSeed = r.next()
        }
    }

    // MARK: - Nuisance

    /// Everything fixed by (seed, identity, image) apart from the quality level.
    struct FaceNuisance {
        var pose: Pose
        /// Turn of the head: nearer features slide by a few pixels, the far eye narrows.
        var yaw: Float
        var smileDelta, eyeOpen, browRaise, gazeX, gazeY, mouthOpen: Float
        var background, background2, clothing: Colour
        var backgroundAngle: Float
        var clutter: [Ellipse]
        var gain, contrast, lightAngle, lightStrength, sensorNoise: Float
        var cast: Colour

        init(_ r: inout Draws) {
            // Small in-plane changes only: aligned training crops have their eyes and mouth pinned.
            pose = Pose(angle: r.gaussian(0.06, limit: 0.16), scale: 1 + r.gaussian(0.035, limit: 0.08),
                        shiftX: r.gaussian(1.6, limit: 4), shiftY: r.gaussian(1.6, limit: 4))
            yaw = r.gaussian(0.4, limit: 0.9)
            smileDelta = r.gaussian(0.05, limit: 0.12)
            eyeOpen = r.chance(0.05) ? 0.12 : r.uniform(0.75, 1.1)
            browRaise = r.gaussian(0.8, limit: 2)
            gazeX = r.gaussian(0.8, limit: 1.8)
            gazeY = r.gaussian(0.4, limit: 0.8)
            mouthOpen = r.chance(0.15) ? r.uniform(1, 4) : 0

            let grey = r.uniform(0.2, 0.85)
            background = mix(Colour(repeating: grey), Colour(r.nextUniform(), r.nextUniform(), r.nextUniform()), r.uniform(0, 0.6))
            background2 = background * Colour(repeating: r.uniform(0.6, 1.3))
            backgroundAngle = r.uniform(0, 2 * .pi)
            clutter = []
            for _ in 0..<Int(r.uniform(0, 4)) {
                clutter.append(Ellipse(centreX: r.uniform(-10, 122), centreY: r.uniform(-10, 122),
                                       radiusX: r.uniform(6, 30), radiusY: r.uniform(6, 30),
                                       colour: Colour(r.uniform(0.1, 0.9), r.uniform(0.1, 0.9), r.uniform(0.1, 0.9))))
            }
            clothing = Colour(r.uniform(0.05, 0.9), r.uniform(0.05, 0.9), r.uniform(0.05, 0.9))

            gain = r.uniform(0.82, 1.15)
            contrast = r.uniform(0.85, 1.1)
            lightAngle = r.uniform(0, 2 * .pi)
            lightStrength = r.uniform(0, 0.25)
            cast = Colour(1 + r.gaussian(0.04, limit: 0.1), 1 + r.gaussian(0.03, limit: 0.08), 1 + r.gaussian(0.04, limit: 0.1))
            sensorNoise = r.uniform(1, 3) / 255
        }
    }

    // MARK: - Rasterisation

    /// Maps canonical face coordinates to output pixels: rotation and scale about the face centre,
    /// then a shift. Layers are evaluated at each pixel's canonical position, so every shape moves
    /// with the pose without resampling.
    struct Pose {
        let cosA, sinA, scale, shiftX, shiftY: Float
        static let centreX: Float = 56, centreY: Float = 60
        static let identity = Pose(angle: 0, scale: 1, shiftX: 0, shiftY: 0)

        init(angle: Float, scale: Float, shiftX: Float, shiftY: Float) {
            cosA = cos(angle); sinA = sin(angle)
            self.scale = scale; self.shiftX = shiftX; self.shiftY = shiftY
        }

        /// Canonical units per output pixel, for antialiasing.
        var pixel: Float { 1 / scale }
        var duDx: Float { cosA / scale }
        var dvDx: Float { -sinA / scale }

        @inline(__always)
        func canonical(_ x: Float, _ y: Float) -> (Float, Float) {
            let X = x - Self.centreX - shiftX, Y = y - Self.centreY - shiftY
            return ((cosA * X + sinA * Y) / scale + Self.centreX, (cosA * Y - sinA * X) / scale + Self.centreY)
        }

        @inline(__always)
        func output(_ u: Float, _ v: Float) -> (Float, Float) {
            let U = u - Self.centreX, V = v - Self.centreY
            return (scale * (cosA * U - sinA * V) + Self.centreX + shiftX,
                    scale * (sinA * U + cosA * V) + Self.centreY + shiftY)
        }

        /// Output pixel range covering a canonical box, clipped to the image.
        func outputBounds(_ box: Box) -> (x: Range<Int>, y: Range<Int>) {
            var minX = Float.infinity, maxX = -Float.infinity, minY = Float.infinity, maxY = -Float.infinity
            for (u, v) in [(box.minU, box.minV), (box.maxU, box.minV), (box.minU, box.maxV), (box.maxU, box.maxV)] {
                let (x, y) = output(u, v)
                minX = min(minX, x); maxX = max(maxX, x); minY = min(minY, y); maxY = max(maxY, y)
            }
            let size = SyntheticFaces.imageSize
            let x0 = max(0, Int(minX.rounded(.down)) - 1), x1 = min(size, Int(maxX.rounded(.up)) + 1)
            let y0 = max(0, Int(minY.rounded(.down)) - 1), y1 = min(size, Int(maxY.rounded(.up)) + 1)
            return (x0..<max(x0, x1), y0..<max(y0, y1))
        }
    }

    struct Box {
        var minU, minV, maxU, maxV: Float
    }

    /// A shape with its colouring, evaluated at canonical coordinates; `pixel` is the size of one
    /// output pixel in canonical units.
    protocol PaintLayer {
        var bounds: Box { get }
        func shade(_ u: Float, _ v: Float, _ pixel: Float) -> (alpha: Float, colour: Colour)
    }

    struct Canvas {
        let pixels: UnsafeMutablePointer<Float>
        let pose: Pose

        /// Blends the layer over the canvas, or multiplies by its colour (shadows, tints).
        @inline(__always)
        func paint<Layer: PaintLayer>(_ layer: Layer, multiply: Bool = false) {
            let (xs, ys) = pose.outputBounds(layer.bounds)
            guard !xs.isEmpty else { return }
            let pixel = pose.pixel, duDx = pose.duDx, dvDx = pose.dvDx
            for y in ys {
                var (u, v) = pose.canonical(Float(xs.lowerBound) + 0.5, Float(y) + 0.5)
                var p = pixels + (y * SyntheticFaces.imageSize + xs.lowerBound) * 3
                for _ in xs {
                    let (alpha, colour) = layer.shade(u, v, pixel)
                    if alpha > 0 {
                        let old = Colour(p[0], p[1], p[2])
                        let new = multiply ? old * (1 + (colour - 1) * alpha) : old + (colour - old) * alpha
                        p[0] = new.x; p[1] = new.y; p[2] = new.z
                    }
                    u += duDx; v += dvDx; p += 3
                }
            }
        }
    }

    @inline(__always) static func rgb(_ r: Float, _ g: Float, _ b: Float) -> Colour { Colour(b, g, r) / 255 }
    @inline(__always) static func mix(_ a: Colour, _ b: Colour, _ t: Float) -> Colour { a + (b - a) * t }
    @inline(__always) static func clamp01(_ x: Float) -> Float { min(max(x, 0), 1) }

    /// Antialiased coverage at signed distance `distance` (negative inside).
    @inline(__always) static func cover(_ distance: Float, _ pixel: Float) -> Float { clamp01(0.5 - distance / pixel) }

    /// First-order distance to an axis-aligned ellipse: (n − 1)·n / |∇n| with n the normalised radius.
    @inline(__always)
    static func ellipseDistance(_ x: Float, _ y: Float, _ rx: Float, _ ry: Float) -> Float {
        let a = x / rx, b = y / ry
        let n = (a * a + b * b).squareRoot()
        let gx = a / rx, gy = b / ry
        let g = (gx * gx + gy * gy).squareRoot()
        return g > 1e-6 ? (n - 1) * n / g : -min(rx, ry)
    }

    struct Ellipse: PaintLayer {
        var centreX, centreY, radiusX, radiusY: Float
        var colour: Colour

        var bounds: Box { Box(minU: centreX - radiusX, minV: centreY - radiusY, maxU: centreX + radiusX, maxV: centreY + radiusY) }

        @inline(__always)
        func shade(_ u: Float, _ v: Float, _ pixel: Float) -> (alpha: Float, colour: Colour) {
            (cover(ellipseDistance(u - centreX, v - centreY, radiusX, radiusY), pixel), colour)
        }
    }

    /// An ellipse narrowing towards the chin (`taper`) and squared off towards a rectangle (`squareness`).
    struct FaceOutline {
        var centreX, centreY, radiusX, radiusY, squareness, taper: Float

        var bounds: Box { Box(minU: centreX - radiusX, minV: centreY - radiusY, maxU: centreX + radiusX, maxV: centreY + radiusY) }

        /// (signed distance, normalised radius).
        @inline(__always)
        func measure(_ u: Float, _ v: Float) -> (Float, Float) {
            let b = (v - centreY) / radiusY
            let below = max(0, b)
            let rx = radiusX * (1 - taper * below * below)
            let a = (u - centreX) / rx
            let round = (a * a + b * b).squareRoot()
            let n = round + (max(abs(a), abs(b)) - round) * squareness
            return ((n - 1) * min(rx, radiusY), n)
        }
    }


    struct SkinLayer: PaintLayer {
        var outline: FaceOutline
        var skin: Colour
        var pattern: SkinPattern
        var blush, cheekOffsetX, cheekY, cheekRadius, yawShift: Float

        var bounds: Box { outline.bounds }

        @inline(__always)
        func shade(_ u: Float, _ v: Float, _ pixel: Float) -> (alpha: Float, colour: Colour) {
            let (distance, n) = outline.measure(u, v)
            let alpha = cover(distance, pixel)
            guard alpha > 0 else { return (0, skin) }
            // Darker towards the rim for some roundness; a low-frequency pattern as skin texture.
            let n2 = n * n
            let p = pattern
            let wave = 0.5 * (sin(p.k1u * u + p.k1v * v + p.phase1) + sin(p.k2u * u + p.k2v * v + p.phase2))
            var colour = skin * (1 - 0.28 * n2 * n2) * (1 + p.amplitude * wave * p.tint)
            if blush > 0 {
                let dx = abs(u - outline.centreX - yawShift) - cheekOffsetX, dy = v - cheekY
                let weight = blush * exp(-(dx * dx + dy * dy) / (cheekRadius * cheekRadius))
                colour = mix(colour, colour * Colour(0.8, 0.75, 1.1), weight)
            }
            return (alpha, colour)
        }
    }

    /// Hair strands: fine stripes that wander a little down the head.
    @inline(__always)
    static func strands(_ u: Float, _ v: Float, _ frequency: Float) -> Float {
        1 + 0.07 * sin(frequency * u + 2.5 * sin(0.09 * v + 3 * frequency))
    }

    struct HairMassLayer: PaintLayer {
        var outline: FaceOutline
        var bottom: Float
        var colour: Colour
        var strandFrequency: Float

        var bounds: Box {
            var box = outline.bounds
            box.maxV = min(box.maxV, bottom + 1)
            return box
        }

        @inline(__always)
        func shade(_ u: Float, _ v: Float, _ pixel: Float) -> (alpha: Float, colour: Colour) {
            let (distance, _) = outline.measure(u, v)
            let alpha = cover(max(distance, v - bottom), pixel)
            guard alpha > 0 else { return (0, colour) }
            // Shadowed where it falls behind the head.
            return (alpha, colour * (strands(u, v, strandFrequency) * (1 - 0.3 * clamp01((v - 45) / 60))))
        }
    }

    struct NeckLayer: PaintLayer {
        var centreX, top, halfWidth, bottom: Float
        var colour: Colour

        var bounds: Box { Box(minU: centreX - halfWidth, minV: top, maxU: centreX + halfWidth, maxV: bottom) }

        @inline(__always)
        func shade(_ u: Float, _ v: Float, _ pixel: Float) -> (alpha: Float, colour: Colour) {
            (cover(max(abs(u - centreX) - halfWidth, top - v, v - bottom), pixel), colour)
        }
    }

    /// Multiplies: a shadow line down one side of the nose and a soft shadow under the tip.
    struct NoseLayer: PaintLayer {
        var centreX, bridgeY, tipY, halfWidth, shadowSide: Float

        var bounds: Box {
            Box(minU: centreX - halfWidth - 2, minV: bridgeY - 1, maxU: centreX + halfWidth + 2, maxV: tipY + halfWidth * 0.5 + 2)
        }

        @inline(__always)
        func shade(_ u: Float, _ v: Float, _ pixel: Float) -> (alpha: Float, colour: Colour) {
            let t = (v - bridgeY) / max(1, tipY - bridgeY)
            var alpha: Float = 0
            if t >= 0 && t <= 1 {
                let lineX = centreX + shadowSide * (1 + (halfWidth - 1) * t * t)
                alpha = 0.35 * cover(abs(u - lineX) - 1, pixel) * clamp01(3 * t)
            }
            if v > tipY {
                let ry = halfWidth * 0.5
                alpha = max(alpha, 0.35 * cover(ellipseDistance(u - centreX, v - tipY, halfWidth, ry), pixel)
                            * clamp01((v - tipY) / ry + 0.3))
            }
            return (alpha, Colour(repeating: 0.62))
        }
    }

    struct MouthLayer: PaintLayer {
        var centreX, y, halfWidth, upperLip, lowerLip, smile, open: Float
        var lipColour: Colour

        var bounds: Box {
            let bend = abs(smile) * halfWidth
            return Box(minU: centreX - halfWidth - 2, minV: y - bend - upperLip - open - 2,
                       maxU: centreX + halfWidth + 2, maxV: y + bend + lowerLip + open + 2)
        }

        @inline(__always)
        func shade(_ u: Float, _ v: Float, _ pixel: Float) -> (alpha: Float, colour: Colour) {
            let t = (u - centreX) / halfWidth
            guard abs(t) < 1.2 else { return (0, lipColour) }
            let body = max(0, 1 - t * t)
            let d = v - (y + smile * halfWidth * body)  // smile > 0 lowers the middle: corners up
            let gap = 0.5 * open * body
            let upper = upperLip * (1 - t * t * t * t), lower = lowerLip * body.squareRoot()
            let distance = max(d - gap - lower, -gap - upper - d, (abs(t) - 1) * halfWidth)
            let alpha = cover(distance, pixel)
            guard alpha > 0 else { return (0, lipColour) }
            var colour = d < 0 ? lipColour * 0.88 : lipColour * (1 + 0.12 * clamp01(1 - abs(d - gap - lower * 0.4)))
            if gap > 0.3 && abs(d) < gap {
                // Open mouth: teeth under the upper lip, darkness below.
                colour = d < 0 ? Colour(0.86, 0.9, 0.92) : Colour(0.12, 0.1, 0.25)
            } else {
                colour = mix(colour, lipColour * 0.4, cover(abs(d) - 0.45, pixel))
            }
            return (alpha, colour)
        }
    }

    struct MoustacheLayer: PaintLayer {
        var centreX, y, halfWidth, thickness: Float
        var colour: Colour

        var bounds: Box { Box(minU: centreX - halfWidth - 1, minV: y - thickness - 1, maxU: centreX + halfWidth + 1, maxV: y + thickness + 1) }

        @inline(__always)
        func shade(_ u: Float, _ v: Float, _ pixel: Float) -> (alpha: Float, colour: Colour) {
            let t = (u - centreX) / halfWidth
            let distance = max(abs(v - y - 0.8 * t * t) - 0.5 * thickness * (1 - 0.5 * t * t), (abs(t) - 1) * halfWidth)
            return (cover(distance, pixel), colour)
        }
    }

    /// Rotates canonical offsets into an eye's or brow's own frame.
    @inline(__always)
    static func rotate(_ x: Float, _ y: Float, _ angle: Float) -> (Float, Float) {
        let c = cos(angle), s = sin(angle)
        return (c * x + s * y, c * y - s * x)
    }

    /// The dark upper lid and lashes, showing as a band above the eye painted next.
    struct EyeLidLayer: PaintLayer {
        var centreX, centreY, radiusX, radiusY, tilt, thickness: Float
        var colour: Colour

        var bounds: Box {
            let r = radiusX + thickness + 1
            return Box(minU: centreX - r, minV: centreY - r, maxU: centreX + r, maxV: centreY + r)
        }

        @inline(__always)
        func shade(_ u: Float, _ v: Float, _ pixel: Float) -> (alpha: Float, colour: Colour) {
            let (x, y) = rotate(u - centreX, v - centreY, tilt)
            let distance = ellipseDistance(x, y, radiusX + thickness * 0.6, radiusY + thickness)
            return (cover(distance, pixel) * cover(y - 0.25 * radiusY, pixel), colour)
        }
    }

    struct EyeLayer: PaintLayer {
        var centreX, centreY, radiusX, radiusY, tilt, irisRadius: Float
        var irisColour: Colour
        var gazeX, gazeY: Float

        var bounds: Box {
            let r = radiusX + 1
            return Box(minU: centreX - r, minV: centreY - r, maxU: centreX + r, maxV: centreY + r)
        }

        @inline(__always)
        func shade(_ u: Float, _ v: Float, _ pixel: Float) -> (alpha: Float, colour: Colour) {
            let (x, y) = rotate(u - centreX, v - centreY, tilt)
            let alpha = cover(ellipseDistance(x, y, radiusX, radiusY), pixel)
            guard alpha > 0 else { return (0, irisColour) }
            var colour = rgb(240, 236, 230)
            let ix = x - gazeX, iy = y - gazeY
            let r = (ix * ix + iy * iy).squareRoot()
            colour = mix(colour, irisColour * (1.15 - 0.4 * r / irisRadius), cover(r - irisRadius, pixel))
            colour = mix(colour, Colour(repeating: 0.05), cover(r - irisRadius * 0.42, pixel))
            let hx = ix + irisRadius * 0.35, hy = iy + irisRadius * 0.35
            colour = mix(colour, Colour(repeating: 0.97), 0.9 * cover((hx * hx + hy * hy).squareRoot() - max(0.7, irisRadius * 0.2), pixel))
            // The lid shades the top of the eyeball.
            colour *= 1 - 0.25 * clamp01(-y / radiusY - 0.1)
            return (alpha, colour)
        }
    }

    struct BrowLayer: PaintLayer {
        var centreX, centreY, halfLength, thickness, arch, tilt, side: Float
        var colour: Colour

        var bounds: Box {
            let r = halfLength + thickness + abs(arch) + 2
            return Box(minU: centreX - r, minV: centreY - r, maxU: centreX + r, maxV: centreY + r)
        }

        @inline(__always)
        func shade(_ u: Float, _ v: Float, _ pixel: Float) -> (alpha: Float, colour: Colour) {
            let (x, y) = rotate(u - centreX, v - centreY, tilt)
            let t = x / halfLength
            guard abs(t) < 1.3 else { return (0, colour) }
            let curve = -arch * (1 - t * t)
            // Thick at the inner end, thin at the outer one.
            let width = thickness * (1 - 0.3 * (side * t + 1))
            let distance = max(abs(y - curve) - 0.5 * width, (abs(t) - 1) * halfLength)
            return (cover(distance, pixel), colour)
        }
    }

    /// The hairline over the forehead: a curve with a wavy fringe and an optional parting.
    struct FringeLayer: PaintLayer {
        var outline: FaceOutline
        var top, curve, amplitude, frequency, phase, partingX, partingDepth: Float
        var colour: Colour
        var strandFrequency: Float

        var bounds: Box {
            var box = outline.bounds
            box.maxV = min(box.maxV, top + max(0, curve) * 22 + amplitude + 2)
            return box
        }

        @inline(__always)
        func shade(_ u: Float, _ v: Float, _ pixel: Float) -> (alpha: Float, colour: Colour) {
            let x = (u - outline.centreX) / outline.radiusX
            let dp = (u - partingX) * 0.25
            let hairline = top + curve * 22 * x * x + amplitude * sin(frequency * .pi * x + phase)
                - partingDepth * exp(-dp * dp)
            let alpha = cover(outline.measure(u, v).0 - 1.5, pixel) * clamp01(0.5 + (hairline - v) / pixel)
            return (alpha, colour * strands(u, v, strandFrequency))
        }
    }

    struct BeardLayer: PaintLayer {
        var outline: FaceOutline
        var style: BeardStyle
        var top, mouthY, centreX, chinHalfWidth, density: Float
        var colour: Colour
        var textureSeed: UInt64

        var bounds: Box {
            var box = outline.bounds
            box.minV = top - 16
            return box
        }

        @inline(__always)
        func shade(_ u: Float, _ v: Float, _ pixel: Float) -> (alpha: Float, colour: Colour) {
            let (distance, n) = outline.measure(u, v)
            let inside = cover(distance, pixel)
            guard inside > 0 else { return (0, colour) }
            let region: Float
            switch style {
            case .goatee:
                // A rounded patch from just above the mouth down over the chin.
                let chin = ellipseDistance(u - centreX, v - mouthY - 6, chinHalfWidth * 0.75, 13)
                region = clamp01(0.5 - chin / 2)
            case .full, .shadow:
                let jaw = clamp01(0.5 + (n - 0.8) / 0.06) * clamp01(0.5 + (v - top + 14) / 3)
                region = max(clamp01(0.5 + (v - mouthY + 6) / 3), jaw)
            case .shaven:
                region = 0
            }
            guard region > 0 else { return (0, colour) }
            // A stipple fixed to the face, so the same identity keeps the same beard texture.
            let cell = UInt64(bitPattern: Int64(Int(u * 0.8 + 200))) << 20 ^ UInt64(bitPattern: Int64(Int(v * 0.8 + 200)))
            let hairy: Float = hashUniform(textureSeed, cell) < density ? 1 : 0.6
            return (inside * region * hairy * (style == .shadow ? 0.45 : 0.92), colour)
        }
    }

    struct GlassesLayer: PaintLayer {
        var glasses: Glasses
        var leftX, rightX, centreY, faceLeft, faceRight: Float

        init(_ glasses: Glasses, leftX: Float, rightX: Float, eyeY: Float, faceLeft: Float, faceRight: Float) {
            self.glasses = glasses
            self.leftX = leftX; self.rightX = rightX; centreY = eyeY - 0.5
            self.faceLeft = faceLeft; self.faceRight = faceRight
        }

        var bounds: Box {
            Box(minU: faceLeft - 1, minV: centreY - glasses.radiusY - 2, maxU: faceRight + 1, maxV: centreY + glasses.radiusY + 2)
        }

        @inline(__always)
        func lensDistance(_ x: Float, _ y: Float) -> Float {
            let a = x / glasses.radiusX, b = y / glasses.radiusY
            let round = (a * a + b * b).squareRoot()
            let n = round + (max(abs(a), abs(b)) - round) * glasses.squareness
            return (n - 1) * min(glasses.radiusX, glasses.radiusY)
        }

        @inline(__always)
        func shade(_ u: Float, _ v: Float, _ pixel: Float) -> (alpha: Float, colour: Colour) {
            let half = 0.5 * glasses.thickness
            let dy = v - centreY
            let rims = min(abs(lensDistance(u - leftX, dy)), abs(lensDistance(u - rightX, dy))) - half
            let barY = abs(dy + glasses.radiusY * 0.35) - half
            let innerGap = 0.5 * (rightX - leftX) - glasses.radiusX * 0.9
            let bridge = max(barY, abs(u - 0.5 * (leftX + rightX)) - innerGap)
            let outerLeft = leftX - glasses.radiusX * 0.95, outerRight = rightX + glasses.radiusX * 0.95
            let arms = max(barY, min(max(faceLeft - u, u - outerLeft), max(outerRight - u, u - faceRight)))
            return (cover(min(rims, bridge, arms), pixel), glasses.colour)
        }
    }

    // MARK: - Image filters (3 interleaved channels)

    /// A stateless hash of (seed, counter) to [0, 1), for noise and textures that must not depend on
    /// the order pixels are visited.
    @inline(__always)
    static func hashBits(_ seed: UInt64, _ counter: UInt64) -> UInt64 {
        var z = seed &+ counter &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    @inline(__always)
    static func hashUniform(_ seed: UInt64, _ counter: UInt64) -> Float { Float(hashBits(seed, counter) >> 40) * (1 / 16_777_216) }

    /// Near-Gaussian noise: a sum of four 16-bit uniforms per value is far cheaper than Box–Muller
    /// and indistinguishable at 8-bit output.
    static func addNoise(_ values: UnsafeMutablePointer<Float>, count: Int, sigma: Float, seed: UInt64) {
        guard sigma > 0 else { return }
        let scale = sigma * Float(3).squareRoot() / 65536
        for i in 0..<count {
            let h = hashBits(seed, UInt64(i))
            let sum = Float(h & 0xFFFF) + Float((h >> 16) & 0xFFFF) + Float((h >> 32) & 0xFFFF) + Float(h >> 48)
            values[i] += (sum - 2 * 65536) * scale
        }
    }

    @inline(__always)
    static func load(_ p: UnsafeMutablePointer<Float>, _ index: Int) -> Colour {
        Colour(p[3 * index], p[3 * index + 1], p[3 * index + 2])
    }

    @inline(__always)
    static func store(_ p: UnsafeMutablePointer<Float>, _ index: Int, _ c: Colour) {
        p[3 * index] = c.x; p[3 * index + 1] = c.y; p[3 * index + 2] = c.z
    }

    /// Separable Gaussian blur in place, edges clamped.
    static func gaussianBlur(_ image: UnsafeMutablePointer<Float>, size: Int, sigma: Float, temp: UnsafeMutablePointer<Float>) {
        let radius = min(size / 2 - 1, max(1, Int((3 * sigma).rounded(.up))))
        var weights = [Float](repeating: 0, count: 2 * radius + 1)
        for i in -radius...radius { weights[i + radius] = exp(-Float(i * i) / (2 * sigma * sigma)) }
        let total = weights.reduce(0, +)
        weights.withUnsafeMutableBufferPointer { w in
            for i in w.indices { w[i] /= total }
            // Pass 1 along rows (stride 1 pixel), pass 2 along columns (stride one row).
            for (source, target, step, lineStep) in [(image, temp, 1, size), (temp, image, size, 1)] {
                for line in 0..<size {
                    let base = line * lineStep
                    for position in 0..<size {
                        var sum = Colour(repeating: 0)
                        if position >= radius && position < size - radius {
                            // Interior: no clamping.
                            var index = base + (position - radius) * step
                            for k in 0...2 * radius {
                                sum += w[k] * load(source, index)
                                index += step
                            }
                        } else {
                            for k in -radius...radius {
                                sum += w[k + radius] * load(source, base + min(max(position + k, 0), size - 1) * step)
                            }
                        }
                        store(target, base + position * step, sum)
                    }
                }
            }
        }
    }

    /// Area-average reduction of an n×n image to m×m (m < n).
    static func boxDownsample(_ source: UnsafeMutablePointer<Float>, from n: Int, into target: UnsafeMutablePointer<Float>,
                       to m: Int, temp: UnsafeMutablePointer<Float>) {
        @inline(__always) func span(_ o: Int) -> Range<Int> {
            let start = o * n / m
            return start..<max(start + 1, (o + 1) * n / m)
        }
        for y in 0..<n {
            for o in 0..<m {
                let s = span(o)
                var sum = Colour(repeating: 0)
                for x in s { sum += load(source, y * n + x) }
                store(temp, y * m + o, sum / Float(s.count))
            }
        }
        for o in 0..<m {
            let s = span(o)
            for x in 0..<m {
                var sum = Colour(repeating: 0)
                for y in s { sum += load(temp, y * m + x) }
                store(target, o * m + x, sum / Float(s.count))
            }
        }
    }

    /// Bilinear enlargement of an m×m image to n×n, pixel centres aligned.
    static func bilinearUpsample(_ source: UnsafeMutablePointer<Float>, from m: Int, into target: UnsafeMutablePointer<Float>,
                          to n: Int, temp: UnsafeMutablePointer<Float>) {
        @inline(__always) func taps(_ o: Int) -> (Int, Int, Float) {
            let s = min(max((Float(o) + 0.5) * Float(m) / Float(n) - 0.5, 0), Float(m - 1))
            let i = Int(s)
            return (i, min(i + 1, m - 1), s - Float(i))
        }
        for y in 0..<m {
            for x in 0..<n {
                let (i0, i1, w) = taps(x)
                store(temp, y * n + x, load(source, y * m + i0) * (1 - w) + load(source, y * m + i1) * w)
            }
        }
        for y in 0..<n {
            let (i0, i1, w) = taps(y)
            for x in 0..<n {
                store(target, y * n + x, load(temp, i0 * n + x) * (1 - w) + load(temp, i1 * n + x) * w)
            }
        }
    }

    // MARK: - Random draws

    /// Ranged draws over SplitMix64, in a type of its own so that no other extension of SplitMix64
    /// in the module can clash with these names.
    struct Draws {
        var generator: SplitMix64

        mutating func next() -> UInt64 { generator.next() }

        mutating func nextUniform() -> Float { generator.nextUniform() }

        mutating func uniform(_ low: Float, _ high: Float) -> Float { low + (high - low) * generator.nextUniform() }

        mutating func chance(_ probability: Float) -> Bool { generator.nextUniform() < probability }

        mutating func gaussian(_ sigma: Float, limit: Float) -> Float {
            min(max(generator.nextNormal() * sigma, -limit), limit)
        }

        mutating func pick<Element>(_ choices: [Element]) -> Element {
            choices[Int(generator.next() % UInt64(choices.count))]
        }

        mutating func below(_ bound: Int) -> Int { Int(generator.next() % UInt64(bound)) }
    }
}

// MARK: - Data set files

public struct SyntheticDataError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// What `adaface-dist synth` writes into its output directory: an InsightFace RecordIO training
/// set (`train.rec`, `train.idx`, `property`), a verification set `val.bin` of pairs drawn from
/// held-out identities, and a CSV of every image's quality level.
public enum SyntheticDataSet {
    public struct Configuration: Sendable {
        public var identities: Int
        public var imagesPerIdentity: Int
        public var pairs: Int
        public var seed: UInt64
        /// Identities generated beyond the training ones, for the verification pairs only.
        public var holdoutIdentities: Int
        public var qualityFileName: String
        public var threads: Int

        public init(identities: Int = 1000, imagesPerIdentity: Int = 20, pairs: Int = 3000, seed: UInt64 = 1,
                    holdoutIdentities: Int? = nil, qualityFileName: String = "quality.csv", threads: Int = 1) {
            self.identities = identities
            self.imagesPerIdentity = imagesPerIdentity
            self.pairs = pairs
            self.seed = seed
            self.holdoutIdentities = holdoutIdentities ?? Self.defaultHoldout(identities: identities)
            self.qualityFileName = qualityFileName
            self.threads = threads
        }

        public static func defaultHoldout(identities: Int) -> Int { max(50, identities / 10) }

        /// Why this configuration cannot be generated, or nil.
        public var problem: String? {
            if identities < 1 { return "the training set needs at least 1 identity" }
            if imagesPerIdentity < 1 { return "every identity needs at least 1 image" }
            if pairs < 0 { return "the number of pairs cannot be negative" }
            if pairs > 0 && holdoutIdentities < 2 { return "different-identity pairs need at least 2 held-out identities" }
            if pairs > 0 && imagesPerIdentity < 2 { return "same-identity pairs need at least 2 images per identity" }
            if qualityFileName.isEmpty || qualityFileName.contains("/") { return "the quality file name must be a plain file name" }
            return nil
        }
    }

    public struct WrittenFile: Sendable {
        public let name: String
        public let bytes: Int
    }

    public struct Summary: Sendable {
        public let trainImages: Int
        public let classes: Int
        public let holdoutIdentities: Int
        public let pairs: Int
        public let files: [WrittenFile]
    }

    /// One verification pair, in held-out identity numbers (training identities come first).
    public struct Pair: Sendable {
        public let first: (identity: Int, image: Int)
        public let second: (identity: Int, image: Int)
        public var isSame: Bool { first.identity == second.identity }
    }

    /// The verification pairs: exactly ⌈pairs/2⌉ same-identity pairs (two different images) in a
    /// seeded random order, the rest pairs of two different held-out identities.
    public static func pairs(_ configuration: Configuration) -> [Pair] {
        let c = configuration
        var random = SyntheticFaces.Draws(generator: SplitMix64(seed: c.seed, UInt64.max, 0x9A1))  // no identity uses this stream
        var same = (0..<c.pairs).map { $0 < (c.pairs + 1) / 2 }
        if same.count > 1 {
            for i in stride(from: same.count - 1, to: 0, by: -1) {
                same.swapAt(i, random.below(i + 1))
            }
        }
        return same.map { isSame in
            let a = random.below(c.holdoutIdentities)
            var b = a
            if !isSame {
                b = random.below(c.holdoutIdentities - 1)
                if b >= a { b += 1 }
            }
            let i = random.below(c.imagesPerIdentity)
            var j = random.below(c.imagesPerIdentity - (isSame ? 1 : 0))
            if isSame && j >= i { j += 1 }
            return Pair(first: (c.identities + a, i), second: (c.identities + b, j))
        }
    }

    public static func write(_ configuration: Configuration, to directory: String,
                             progress: (String) -> Void = { _ in }) throws -> Summary {
        let c = configuration
        if let problem = c.problem { throw SyntheticDataError(message: problem) }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw SyntheticDataError(message: "cannot create \(directory): \(error.localizedDescription)")
        }
        let faces = SyntheticFaces(seed: c.seed)
        let path = { (name: String) in (directory as NSString).appendingPathComponent(name) }
        var csv = "split,key,identity,image,quality\n"

        let trainImages = c.identities * c.imagesPerIdentity
        var train = TrainingSink(writer: try RecordIOWriter(directory: directory))
        try faces.generate(identities: 0..<c.identities, imagesPerIdentity: c.imagesPerIdentity,
                           threads: c.threads, into: &train) { done in
            progress("train: \(done)/\(trainImages) images")
        }
        try train.writer.finish(classCount: c.identities, imageHeight: SyntheticFaces.imageSize,
                                imageWidth: SyntheticFaces.imageSize)
        csv += train.csv

        var names = ["train.rec", "train.idx", "property"]
        if c.pairs > 0 {
            var holdout = CollectingSink()
            let holdoutImages = c.holdoutIdentities * c.imagesPerIdentity
            try faces.generate(identities: c.identities..<c.identities + c.holdoutIdentities,
                               imagesPerIdentity: c.imagesPerIdentity, threads: c.threads, into: &holdout) { done in
                progress("validation: \(done)/\(holdoutImages) images")
            }
            var bins = [[UInt8]](), issame = [Bool]()
            for pair in pairs(c) {
                for (identity, image) in [pair.first, pair.second] {
                    let face = holdout.faces[(identity - c.identities) * c.imagesPerIdentity + image]
                    csv += "val,\(bins.count),\(identity),\(image),\(format(face.quality))\n"
                    bins.append(face.jpeg)
                }
                issame.append(pair.isSame)
            }
            try Data(PickleWriter.verificationSet(images: bins, isSame: issame)).write(to: URL(fileURLWithPath: path("val.bin")))
            names.append("val.bin")
        }
        try Data(csv.utf8).write(to: URL(fileURLWithPath: path(c.qualityFileName)))
        names.append(c.qualityFileName)

        let files = try names.map { name -> WrittenFile in
            let attributes = try FileManager.default.attributesOfItem(atPath: path(name))
            return WrittenFile(name: name, bytes: (attributes[.size] as? NSNumber)?.intValue ?? 0)
        }
        return Summary(trainImages: trainImages, classes: c.identities, holdoutIdentities: c.pairs > 0 ? c.holdoutIdentities : 0,
                       pairs: c.pairs, files: files)
    }

    static func format(_ quality: Float) -> String { String(format: "%.4f", quality) }
}

extension SyntheticDataSet {
    /// Streams the training images into RecordIO in (identity, image) order: keys 1…N labelled
    /// with their identity, InsightFace's header and identity records around them.
    struct TrainingSink: SyntheticFaceSink {
        let writer: RecordIOWriter
        var csv = ""

        mutating func accept(_ face: SyntheticFace) throws {
            let key = try face.jpeg.withUnsafeBytes { try writer.append(image: $0, label: face.identity) }
            csv += "train,\(key),\(face.identity),\(face.image),\(SyntheticDataSet.format(face.quality))\n"
        }
    }

    struct CollectingSink: SyntheticFaceSink {
        var faces = [SyntheticFace]()
        mutating func accept(_ face: SyntheticFace) throws { faces.append(face) }
    }
}
