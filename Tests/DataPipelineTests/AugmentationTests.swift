// The AdaFace augmentation: branch frequencies, reproducibility from (seed, epoch, index), and what
// each branch does to the pixels; the resizer and the PIL colour operations it is built on.

import DataPipeline
import XCTest

final class AugmentationTests: XCTestCase {
    private let side = 112

    /// Every byte ≥ 1, so that a zeroed pixel can only come from the crop.
    private func textured(seed: UInt64) -> [UInt8] {
        var random = TestRandom(seed: seed)
        return smoothImage(width: side, height: side, seed: seed).map { max(1, $0 / 2 + UInt8(random.below(100))) }
    }

    private func augmented(_ image: [UInt8], _ augmenter: Augmenter, seed: UInt64 = 7, epoch: Int = 0,
                           index: Int) -> ([UInt8], AppliedAugmentations) {
        var copy = image
        let applied = copy.withUnsafeMutableBufferPointer {
            augmenter.apply($0.baseAddress!, seed: seed, epoch: epoch, index: index)
        }
        return (copy, applied)
    }

    private func mirrored(_ image: [UInt8]) -> [UInt8] {
        var out = image
        for y in 0..<side {
            for x in 0..<side {
                for c in 0..<3 { out[(y * side + x) * 3 + c] = image[(y * side + side - 1 - x) * 3 + c] }
            }
        }
        return out
    }

    /// Sum of squared differences between neighbouring pixels: the image's high-frequency energy.
    private func gradientEnergy(_ image: [UInt8]) -> Double {
        var total = 0.0
        for y in 0..<side - 1 {
            for x in 0..<side - 1 {
                for c in 0..<3 {
                    let v = Double(image[(y * side + x) * 3 + c])
                    let right = Double(image[(y * side + x + 1) * 3 + c])
                    let below = Double(image[((y + 1) * side + x) * 3 + c])
                    total += (v - right) * (v - right) + (v - below) * (v - below)
                }
            }
        }
        return total
    }

    // MARK: - The policy as a whole

    func testBranchesFireAtTheirProbabilities() {
        let augmenter = Augmenter(policy: .adaFace, size: side)
        let image = textured(seed: 1)
        let draws = 4000
        var counts = [AppliedAugmentations.crop: 0, .lowResolution: 0, .photometric: 0, .flip: 0]
        var all = 0
        for index in 0..<draws {
            let applied = augmented(image, augmenter, seed: 11, epoch: 3, index: index).1
            for branch in counts.keys where applied.contains(branch) { counts[branch]! += 1 }
            if applied.isSuperset(of: [.crop, .lowResolution, .photometric]) { all += 1 }
        }
        for (branch, expected) in [(AppliedAugmentations.crop, 0.2), (.lowResolution, 0.2), (.photometric, 0.2), (.flip, 0.5)] {
            let rate = Double(counts[branch]!) / Double(draws)
            XCTAssertEqual(rate, expected, accuracy: 0.03, "branch \(branch.rawValue) fired at \(rate)")
        }
        // Independent branches: all three together about 0.2³ = 0.008 of the time.
        XCTAssertEqual(Double(all) / Double(draws), 0.008, accuracy: 0.006)
    }

    func testSameSampleGivesSameResultAndOthersDiffer() {
        let augmenter = Augmenter(policy: AugmentationPolicy(cropProbability: 0.5, lowResolutionProbability: 0.5,
                                                             photometricProbability: 0.5, flipProbability: 0.5),
                                  size: side)
        let other = Augmenter(policy: augmenter.policy, size: side)
        let image = textured(seed: 2)
        var distinct = Set<[UInt8]>()
        for index in 0..<40 {
            let first = augmented(image, augmenter, seed: 5, epoch: 1, index: index)
            // Another augmenter (another decode thread) and interleaved calls do not change the result.
            _ = augmented(image, other, seed: 5, epoch: 1, index: index + 1)
            let again = augmented(image, other, seed: 5, epoch: 1, index: index)
            XCTAssertEqual(first.0, again.0, "index \(index)")
            XCTAssertEqual(first.1, again.1, "index \(index)")
            distinct.insert(first.0)
        }
        XCTAssertGreaterThan(distinct.count, 30, "different indices should draw different augmentations")
        var epochsDiffer = 0, seedsDiffer = 0
        for index in 0..<40 {
            let base = augmented(image, augmenter, seed: 5, epoch: 1, index: index).0
            if augmented(image, augmenter, seed: 5, epoch: 2, index: index).0 != base { epochsDiffer += 1 }
            if augmented(image, augmenter, seed: 6, epoch: 1, index: index).0 != base { seedsDiffer += 1 }
        }
        XCTAssertGreaterThan(epochsDiffer, 30)
        XCTAssertGreaterThan(seedsDiffer, 30)
    }

    func testNonePolicyLeavesTheImageUntouched() {
        let augmenter = Augmenter(policy: .none, size: side)
        let image = textured(seed: 3)
        for index in 0..<200 {
            let (out, applied) = augmented(image, augmenter, index: index)
            XCTAssertEqual(applied, [])
            XCTAssertEqual(out, image)
        }
    }

    // MARK: - Each branch

    func testCropKeepsABoxInPlaceAndZeroesTheRest() {
        let augmenter = Augmenter(policy: AugmentationPolicy(cropProbability: 1, lowResolutionProbability: 0,
                                                             photometricProbability: 0, flipProbability: 0),
                                  size: side)
        let image = textured(seed: 4)
        var smallestArea = 1.0, largestArea = 0.0
        for index in 0..<300 {
            let (out, applied) = augmented(image, augmenter, index: index)
            XCTAssertEqual(applied, .crop)
            // The kept pixels form a box; find it from the non-zero pixels.
            var top = side, bottom = -1, left = side, right = -1
            for y in 0..<side {
                for x in 0..<side where out[(y * side + x) * 3] != 0 {
                    top = min(top, y); bottom = max(bottom, y); left = min(left, x); right = max(right, x)
                }
            }
            XCTAssertGreaterThanOrEqual(bottom, top, "index \(index): nothing kept")
            for y in 0..<side {
                for x in 0..<side {
                    let inside = (top...bottom).contains(y) && (left...right).contains(x)
                    for c in 0..<3 {
                        let i = (y * side + x) * 3 + c
                        XCTAssertEqual(out[i], inside ? image[i] : 0, "index \(index) pixel (\(x), \(y))")
                    }
                }
            }
            let width = Double(right - left + 1), height = Double(bottom - top + 1)
            let area = width * height / Double(side * side)
            smallestArea = min(smallestArea, area)
            largestArea = max(largestArea, area)
            // Area fraction in [0.2, 1] and aspect in [3/4, 4/3], up to the rounding of the sides.
            XCTAssertGreaterThan(area, 0.19, "index \(index)")
            XCTAssertGreaterThan(width / height, 0.75 - 0.04, "index \(index)")
            XCTAssertLessThan(width / height, 4.0 / 3.0 + 0.05, "index \(index)")
        }
        XCTAssertLessThan(smallestArea, 0.3)
        XCTAssertGreaterThan(largestArea, 0.8)
    }

    func testLowResolutionRemovesHighFrequencies() {
        let augmenter = Augmenter(policy: AugmentationPolicy(cropProbability: 0, lowResolutionProbability: 1,
                                                             photometricProbability: 0, flipProbability: 0),
                                  size: side)
        var random = TestRandom(seed: 9)
        let noise = random.bytes(side * side * 3)
        let original = gradientEnergy(noise)
        var ratios: [Double] = []
        for index in 0..<200 {
            let (out, applied) = augmented(noise, augmenter, index: index)
            XCTAssertEqual(applied, .lowResolution)
            let ratio = gradientEnergy(out) / original
            XCTAssertLessThan(ratio, 1.05, "index \(index)")
            ratios.append(ratio)
        }
        XCTAssertLessThan(ratios.reduce(0, +) / Double(ratios.count), 0.6)
        // A smooth image survives: low resolution blurs, it does not shift or darken.
        let smooth = smoothImage(width: side, height: side, seed: 10)
        for index in 0..<50 {
            XCTAssertLessThan(meanAbsoluteError(augmented(smooth, augmenter, index: index).0, smooth), 10, "index \(index)")
        }
    }

    func testPhotometricFactorsStayInRange() {
        let augmenter = Augmenter(policy: AugmentationPolicy(cropProbability: 0, lowResolutionProbability: 0,
                                                             photometricProbability: 1, flipProbability: 0),
                                  size: side)
        // On a uniform grey image contrast and saturation change nothing, so the output is
        // brightness · 100 (truncated).
        let grey = [UInt8](repeating: 100, count: side * side * 3)
        var factors: [Double] = []
        for index in 0..<1000 {
            let (out, applied) = augmented(grey, augmenter, index: index)
            XCTAssertEqual(applied, .photometric)
            XCTAssertTrue(out.allSatisfy { $0 == out[0] }, "index \(index): a uniform image stays uniform")
            let factor = Double(out[0]) / 100
            XCTAssertGreaterThanOrEqual(factor, 0.5)
            XCTAssertLessThanOrEqual(factor, 1.5)
            factors.append(factor)
        }
        XCTAssertLessThan(factors.min()!, 0.53)
        XCTAssertGreaterThan(factors.max()!, 1.47)
        XCTAssertEqual(factors.reduce(0, +) / Double(factors.count), 1.0, accuracy: 0.04)
    }

    func testFlipIsAnExactMirror() {
        let augmenter = Augmenter(policy: AugmentationPolicy(cropProbability: 0, lowResolutionProbability: 0,
                                                             photometricProbability: 0, flipProbability: 1),
                                  size: side)
        let image = textured(seed: 12)
        let (out, applied) = augmented(image, augmenter, index: 0)
        XCTAssertEqual(applied, .flip)
        XCTAssertEqual(out, mirrored(image))
        let odd = Augmenter(policy: augmenter.policy, size: 5)
        var small: [UInt8] = Array(0..<75)
        small.withUnsafeMutableBufferPointer { _ = odd.apply($0.baseAddress!, seed: 0, epoch: 0, index: 0) }
        XCTAssertEqual(Array(small[0..<15]), [12, 13, 14, 9, 10, 11, 6, 7, 8, 3, 4, 5, 0, 1, 2])
    }

    func testCropThenFlipMirrorsTheCroppedImage() {
        let cropOnly = Augmenter(policy: AugmentationPolicy(cropProbability: 1, lowResolutionProbability: 0,
                                                            photometricProbability: 0, flipProbability: 0), size: side)
        let cropAndFlip = Augmenter(policy: AugmentationPolicy(cropProbability: 1, lowResolutionProbability: 0,
                                                               photometricProbability: 0, flipProbability: 1), size: side)
        let image = textured(seed: 13)
        for index in 0..<20 {
            let cropped = augmented(image, cropOnly, index: index).0
            let both = augmented(image, cropAndFlip, index: index)
            XCTAssertEqual(both.1, [.crop, .flip])
            XCTAssertEqual(both.0, mirrored(cropped), "index \(index)")
        }
    }

    // MARK: - Building blocks

    func testColourOperationsFollowPIL() {
        // Two pixels, BGR in memory: (10, 200, 40) and (250, 30, 128).
        let pixels: [UInt8] = [10, 200, 40, 250, 30, 128]
        func run(_ body: (UnsafeMutablePointer<UInt8>) -> Void) -> [UInt8] {
            var copy = pixels
            copy.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
            return copy
        }
        XCTAssertEqual(run { ColorAdjustment.brightness($0, pixelCount: 2, factor: 0.5) }, [5, 100, 20, 125, 15, 64])
        XCTAssertEqual(run { ColorAdjustment.brightness($0, pixelCount: 2, factor: 1.5) }, [15, 255, 60, 255, 45, 192])
        // PIL's L of the bytes in memory order: (19595·c0 + 38470·c1 + 7471·c2 + 32768) >> 16.
        let grey0 = (19595 * 10 + 38470 * 200 + 7471 * 40 + 32768) >> 16
        let grey1 = (19595 * 250 + 38470 * 30 + 7471 * 128 + 32768) >> 16
        XCTAssertEqual(run { ColorAdjustment.saturation($0, pixelCount: 2, factor: 0) },
                       [grey0, grey0, grey0, grey1, grey1, grey1].map { UInt8($0) })
        let mean = UInt8((Double(grey0 + grey1) / 2 + 0.5).rounded(.down))
        XCTAssertEqual(run { ColorAdjustment.contrast($0, pixelCount: 2, factor: 0) }, [UInt8](repeating: mean, count: 6))
        // Factor 2 extrapolates away from the grey and clips.
        let contrast2 = run { ColorAdjustment.contrast($0, pixelCount: 2, factor: 2) }
        XCTAssertEqual(contrast2, pixels.map { UInt8(clamping: Int(mean) + 2 * (Int($0) - Int(mean))) })
        for factor: Float in [1] {
            XCTAssertEqual(run { ColorAdjustment.brightness($0, pixelCount: 2, factor: factor) }, pixels)
            XCTAssertEqual(run { ColorAdjustment.contrast($0, pixelCount: 2, factor: factor) }, pixels)
            XCTAssertEqual(run { ColorAdjustment.saturation($0, pixelCount: 2, factor: factor) }, pixels)
        }
    }

    private func resize(_ source: [UInt8], _ width: Int, _ height: Int, to outputWidth: Int, _ outputHeight: Int,
                        _ interpolation: ResizeInterpolation, resizer: ImageResizer = ImageResizer()) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: outputWidth * outputHeight * 3)
        source.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer {
                resizer.resize(input.baseAddress!, width: width, height: height, into: $0.baseAddress!,
                               outputWidth: outputWidth, outputHeight: outputHeight, interpolation: interpolation)
            }
        }
        return output
    }

    func testResizeKeepsUniformImagesAndSameSizeIsIdentity() {
        let resizer = ImageResizer(maxSide: 112)
        let uniform = solidImage(width: 112, height: 112, b: 30, g: 140, r: 250)
        let image = smoothImage(width: 40, height: 40, seed: 14)
        for interpolation in ResizeInterpolation.allCases {
            for side in [22, 57, 111] {
                let down = resize(uniform, 112, 112, to: side, side, interpolation, resizer: resizer)
                XCTAssertEqual(down, solidImage(width: side, height: side, b: 30, g: 140, r: 250), "\(interpolation) to \(side)")
                let up = resize(down, side, side, to: 112, 112, interpolation, resizer: resizer)
                XCTAssertEqual(up, uniform, "\(interpolation) from \(side)")
            }
            XCTAssertEqual(resize(image, 40, 40, to: 40, 40, interpolation, resizer: resizer), image, "\(interpolation)")
        }
    }

    func testResizeGeometryMatchesOpenCV() {
        // A 4×1 ramp, one channel shown (all three equal).
        let ramp: [UInt8] = [0, 0, 0, 40, 40, 40, 80, 80, 80, 120, 120, 120]
        func channel(_ image: [UInt8]) -> [UInt8] { stride(from: 0, to: image.count, by: 3).map { image[$0] } }
        // Shrinking by 2: nearest takes pixels 0 and 2, area and bilinear average pairs.
        XCTAssertEqual(channel(resize(ramp, 4, 1, to: 2, 1, .nearest)), [0, 80])
        XCTAssertEqual(channel(resize(ramp, 4, 1, to: 2, 1, .area)), [20, 100])
        XCTAssertEqual(channel(resize(ramp, 4, 1, to: 2, 1, .bilinear)), [20, 100])
        // Enlarging by 2: nearest repeats, bilinear samples at centres (−0.25, 0.25, 0.75, …) and
        // replicates the border, area splits each source pixel in two.
        XCTAssertEqual(channel(resize(ramp, 4, 1, to: 8, 1, .nearest)), [0, 0, 40, 40, 80, 80, 120, 120])
        XCTAssertEqual(channel(resize(ramp, 4, 1, to: 8, 1, .bilinear)), [0, 10, 30, 50, 70, 90, 110, 120])
        XCTAssertEqual(channel(resize(ramp, 4, 1, to: 8, 1, .area)), [0, 0, 40, 40, 80, 80, 120, 120])
        // Shrinking 3 → 2 by area: 1.5 source pixels per output pixel.
        let three: [UInt8] = [0, 0, 0, 90, 90, 90, 30, 30, 30]
        XCTAssertEqual(channel(resize(three, 3, 1, to: 2, 1, .area)), [30, 50])
        // Cubic and Lanczos interpolate a linear ramp exactly away from the borders.
        let line: [UInt8] = (0..<48).map { i -> UInt8 in UInt8(i / 3 * 10) }
        for interpolation in [ResizeInterpolation.bicubic, .lanczos4] {
            let up = channel(resize(line, 16, 1, to: 32, 1, interpolation))
            for x in 8..<24 {
                XCTAssertEqual(Double(up[x]), (Double(x) + 0.5) / 2 * 10 - 5, accuracy: 1.01, "\(interpolation) at \(x)")
            }
        }
    }
}
