// Training-time augmentation of aligned faces, the official AdaFace recipe: three independent
// branches (crop, low resolution, photometric) each taken with probability 0.2, in that order, then a
// horizontal flip with probability 0.5. Every sample's randomness comes from (seed, epoch, index), so
// a run reproduces exactly whichever decode thread handles which sample.

import Foundation
import Tensors

/// How often each augmentation is applied.
public struct AugmentationPolicy: Sendable, Equatable {
    public var cropProbability: Float
    public var lowResolutionProbability: Float
    public var photometricProbability: Float
    public var flipProbability: Float

    public init(cropProbability: Float = 0.2, lowResolutionProbability: Float = 0.2,
                photometricProbability: Float = 0.2, flipProbability: Float = 0.5) {
        for p in [cropProbability, lowResolutionProbability, photometricProbability, flipProbability] {
            precondition(p >= 0 && p <= 1, "augmentation probability \(p) is outside [0, 1]")
        }
        self.cropProbability = cropProbability
        self.lowResolutionProbability = lowResolutionProbability
        self.photometricProbability = photometricProbability
        self.flipProbability = flipProbability
    }

    /// The official AdaFace training settings.
    public static let adaFace = AugmentationPolicy()
    /// No augmentation (evaluation, feature extraction).
    public static let none = AugmentationPolicy(cropProbability: 0, lowResolutionProbability: 0,
                                                photometricProbability: 0, flipProbability: 0)
}

/// Which branches fired for a sample.
public struct AppliedAugmentations: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let crop = AppliedAugmentations(rawValue: 1 << 0)
    public static let lowResolution = AppliedAugmentations(rawValue: 1 << 1)
    public static let photometric = AppliedAugmentations(rawValue: 1 << 2)
    public static let flip = AppliedAugmentations(rawValue: 1 << 3)
}

/// Applies an `AugmentationPolicy` to square BGR images in place.
///
/// - Crop: torchvision's RandomResizedCrop box (area fraction U(0.2, 1), log-uniform aspect ratio in
///   [3/4, 4/3], up to 10 attempts, then its centre-crop fallback); the box keeps its pixels and its
///   place, everything outside becomes 0.
/// - Low resolution: side ratio r ~ U(0.2, 1), down to ⌊size·r⌋ and back to `size`, each resize with an
///   interpolation drawn uniformly from nearest, bilinear, area, bicubic, Lanczos-4.
/// - Photometric: torchvision's ColorJitter(0.5, 0.5, 0.5) on PIL images: brightness, contrast and
///   saturation factors each U(0.5, 1.5), applied in a random order, with PIL's blend arithmetic.
/// - Flip: mirror left–right.
///
/// Holds scratch buffers, so it is not thread-safe: one augmenter per decode thread. After `init` it
/// never allocates.
public final class Augmenter {
    public let policy: AugmentationPolicy
    /// Width and height of the images, in pixels.
    public let size: Int

    private let resizer: ImageResizer
    /// The shrunken image of the low-resolution branch.
    private let small: UnsafeMutablePointer<UInt8>

    public init(policy: AugmentationPolicy = .adaFace, size: Int = 112) {
        precondition(size > 0, "image size must be positive")
        self.policy = policy
        self.size = size
        resizer = ImageResizer(maxSide: size)
        small = .allocate(capacity: size * size * 3)
    }

    deinit { small.deallocate() }

    /// Augments the `size`×`size` BGR image at `bgr` in place. The result depends only on the image and
    /// on (seed, epoch, index).
    @discardableResult
    public func apply(_ bgr: UnsafeMutablePointer<UInt8>, seed: UInt64, epoch: Int, index: Int) -> AppliedAugmentations {
        var random = SplitMix64(seed: seed, UInt64(truncatingIfNeeded: epoch), UInt64(truncatingIfNeeded: index))
        var applied: AppliedAugmentations = []
        if random.nextUniform() < policy.cropProbability {
            let box = Self.cropBox(size: size, &random)
            zeroOutside(box, bgr)
            applied.insert(.crop)
        }
        if random.nextUniform() < policy.lowResolutionProbability {
            lowerResolution(bgr, &random)
            applied.insert(.lowResolution)
        }
        if random.nextUniform() < policy.photometricProbability {
            jitterColours(bgr, &random)
            applied.insert(.photometric)
        }
        if random.nextUniform() < policy.flipProbability {
            mirror(bgr)
            applied.insert(.flip)
        }
        return applied
    }

    // MARK: - Crop

    static let cropAreaRange = (0.2, 1.0)
    static let cropAspectRange = (3.0 / 4.0, 4.0 / 3.0)
    static let smallestSideRatio = 0.2

    /// A crop box (top, left, height, width) drawn as torchvision's RandomResizedCrop.get_params.
    static func cropBox(size: Int, _ random: inout SplitMix64) -> (top: Int, left: Int, height: Int, width: Int) {
        let area = Double(size * size)
        let logRatio = (log(cropAspectRange.0), log(cropAspectRange.1))
        for _ in 0..<10 {
            let targetArea = area * uniform(cropAreaRange.0, cropAreaRange.1, &random)
            let aspect = exp(uniform(logRatio.0, logRatio.1, &random))
            // Python's round() rounds halves to even.
            let w = Int((targetArea * aspect).squareRoot().rounded(.toNearestOrEven))
            let h = Int((targetArea / aspect).squareRoot().rounded(.toNearestOrEven))
            if w > 0 && w <= size && h > 0 && h <= size {
                let top = Int(random.next() % UInt64(size - h + 1))
                let left = Int(random.next() % UInt64(size - w + 1))
                return (top, left, h, w)
            }
        }
        // A square image lies within the aspect range, so the fallback is the whole image.
        return (0, 0, size, size)
    }

    private func zeroOutside(_ box: (top: Int, left: Int, height: Int, width: Int), _ bgr: UnsafeMutablePointer<UInt8>) {
        let rowLength = size * 3
        for y in 0..<size {
            let row = bgr + y * rowLength
            if y < box.top || y >= box.top + box.height {
                row.update(repeating: 0, count: rowLength)
            } else {
                row.update(repeating: 0, count: box.left * 3)
                let right = (box.left + box.width) * 3
                (row + right).update(repeating: 0, count: rowLength - right)
            }
        }
    }

    // MARK: - Low resolution

    private func lowerResolution(_ bgr: UnsafeMutablePointer<UInt8>, _ random: inout SplitMix64) {
        let ratio = uniform(Self.smallestSideRatio, 1, &random)
        let side = max(1, Int(ratio * Double(size)))
        let down = Self.randomInterpolation(&random)
        let up = Self.randomInterpolation(&random)
        resizer.resize(bgr, width: size, height: size, into: small, outputWidth: side, outputHeight: side,
                       interpolation: down)
        resizer.resize(small, width: side, height: side, into: bgr, outputWidth: size, outputHeight: size,
                       interpolation: up)
    }

    private static func randomInterpolation(_ random: inout SplitMix64) -> ResizeInterpolation {
        ResizeInterpolation(rawValue: Int(random.next() % UInt64(ResizeInterpolation.count)))!
    }

    // MARK: - Photometric

    private func jitterColours(_ bgr: UnsafeMutablePointer<UInt8>, _ random: inout SplitMix64) {
        // ColorJitter draws a random order first, then the three factors.
        var order = (0, 1, 2)
        withUnsafeMutableBytes(of: &order) { raw in
            let slots = raw.baseAddress!.assumingMemoryBound(to: Int.self)
            for i in stride(from: 2, to: 0, by: -1) {
                let j = Int(random.next() % UInt64(i + 1))
                (slots[i], slots[j]) = (slots[j], slots[i])
            }
        }
        let brightness = Float(uniform(0.5, 1.5, &random))
        let contrast = Float(uniform(0.5, 1.5, &random))
        let saturation = Float(uniform(0.5, 1.5, &random))
        let pixels = size * size
        func adjust(_ step: Int) {
            switch step {
            case 0: ColorAdjustment.brightness(bgr, pixelCount: pixels, factor: brightness)
            case 1: ColorAdjustment.contrast(bgr, pixelCount: pixels, factor: contrast)
            default: ColorAdjustment.saturation(bgr, pixelCount: pixels, factor: saturation)
            }
        }
        adjust(order.0)
        adjust(order.1)
        adjust(order.2)
    }

    // MARK: - Flip

    private func mirror(_ bgr: UnsafeMutablePointer<UInt8>) {
        for y in 0..<size {
            let row = bgr + y * size * 3
            var left = 0, right = size - 1
            while left < right {
                for c in 0..<3 { (row[left * 3 + c], row[right * 3 + c]) = (row[right * 3 + c], row[left * 3 + c]) }
                left += 1
                right -= 1
            }
        }
    }
}

/// Uniform in [lower, upper) with 53 bits of precision.
@inline(__always)
private func uniform(_ lower: Double, _ upper: Double, _ random: inout SplitMix64) -> Double {
    lower + (upper - lower) * (Double(random.next() >> 11) * 0x1p-53)
}

/// PIL's ImageEnhance operations (what torchvision's adjust_brightness, adjust_contrast and
/// adjust_saturation call on PIL images), in place on 8-bit pixels: each blends the image with a
/// degenerate one as `Image.blend` does — float arithmetic, truncated, clipped to [0, 255].
///
/// The grey used by contrast and saturation is PIL's "L" conversion (0.299, 0.587, 0.114 in 16-bit
/// fixed point) applied to the bytes in memory order. The official AdaFace pipeline gives PIL its BGR
/// arrays as if they were RGB, so the 0.299 weight falls on blue; this keeps that for parity.
public enum ColorAdjustment {
    /// Blend with black.
    public static func brightness(_ pixels: UnsafeMutablePointer<UInt8>, pixelCount: Int, factor: Float) {
        for i in 0..<pixelCount * 3 {
            pixels[i] = blend(0, pixels[i], factor)
        }
    }

    /// Blend with a uniform image at the mean grey, rounded to an integer.
    public static func contrast(_ pixels: UnsafeMutablePointer<UInt8>, pixelCount: Int, factor: Float) {
        precondition(pixelCount > 0, "no pixels")
        var total = 0
        for p in 0..<pixelCount { total += Int(grey(pixels + p * 3)) }
        let mean = Int(Double(total) / Double(pixelCount) + 0.5)
        for i in 0..<pixelCount * 3 {
            pixels[i] = blend(mean, pixels[i], factor)
        }
    }

    /// Blend each pixel with its own grey.
    public static func saturation(_ pixels: UnsafeMutablePointer<UInt8>, pixelCount: Int, factor: Float) {
        for p in 0..<pixelCount {
            let pixel = pixels + p * 3
            let g = Int(grey(pixel))
            pixel[0] = blend(g, pixel[0], factor)
            pixel[1] = blend(g, pixel[1], factor)
            pixel[2] = blend(g, pixel[2], factor)
        }
    }

    /// PIL's RGB→L: (19595·c0 + 38470·c1 + 7471·c2 + 2¹⁵) >> 16.
    @inline(__always)
    static func grey(_ pixel: UnsafePointer<UInt8>) -> UInt8 {
        UInt8(truncatingIfNeeded: (Int(pixel[0]) * 19595 + Int(pixel[1]) * 38470 + Int(pixel[2]) * 7471 + 0x8000) >> 16)
    }

    /// PIL's `Image.blend(degenerate, image, factor)` for one sample.
    @inline(__always)
    static func blend(_ degenerate: Int, _ value: UInt8, _ factor: Float) -> UInt8 {
        let t = Float(degenerate) + factor * Float(Int(value) - degenerate)
        if t <= 0 { return 0 }
        if t >= 255 { return 255 }
        return UInt8(t)
    }
}
