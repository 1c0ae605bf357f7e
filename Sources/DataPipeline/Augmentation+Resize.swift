// Resizing of 8-bit BGR images with OpenCV's five interpolations, for the low-resolution augmentation
// (the official AdaFace code resizes with cv2.resize and a random interpolation).
//
// Sampling positions, taps and weights follow cv2.resize (pixel centres aligned, replicated borders,
// Keys cubic with a = −0.75, Lanczos with 8 taps, area averaging when shrinking and OpenCV's
// area-weighted linear when enlarging). The arithmetic is float where OpenCV's 8-bit path is fixed
// point, so a pixel can differ from OpenCV's by one grey level.

import Foundation

public enum ResizeInterpolation: Int, CaseIterable, Sendable {
    case nearest, bilinear, area, bicubic, lanczos4

    /// The number of cases, without building `allCases` (an array) on the per-sample path.
    static let count = 5
}

/// A separable resizer that keeps its coefficient tables and the intermediate rows between calls, so
/// it allocates only when a call needs more room than any call before it. Not thread-safe.
public final class ImageResizer {
    private var columnTaps = ResizeTaps()
    private var rowTaps = ResizeTaps()
    /// Source rows already resampled along x: source height × destination width × 3.
    private var rows: UnsafeMutablePointer<Float>
    private var rowsCapacity: Int

    /// `maxSide` sizes the buffers for images up to that many pixels a side, so that resizes within
    /// it never allocate.
    public init(maxSide: Int = 112) {
        precondition(maxSide > 0, "maxSide must be positive")
        rowsCapacity = maxSide * maxSide * 3
        rows = .allocate(capacity: rowsCapacity)
        // Eight taps per output pixel covers Lanczos, and area shrinking needs at most
        // source + 2 · destination taps in all.
        columnTaps.reserve(length: maxSide, taps: 8)
        rowTaps.reserve(length: maxSide, taps: 8)
    }

    deinit {
        rows.deallocate()
        columnTaps.deallocate()
        rowTaps.deallocate()
    }

    /// Resizes `source` (`width`×`height` BGR) into `destination` (`outputWidth`×`outputHeight`).
    /// The two buffers must not overlap.
    public func resize(_ source: UnsafePointer<UInt8>, width: Int, height: Int,
                       into destination: UnsafeMutablePointer<UInt8>, outputWidth: Int, outputHeight: Int,
                       interpolation: ResizeInterpolation) {
        precondition(width > 0 && height > 0 && outputWidth > 0 && outputHeight > 0,
                     "cannot resize \(width)×\(height) to \(outputWidth)×\(outputHeight)")
        // cv2.resize shrinks with true area averaging only when neither axis grows.
        let areaAveraging = interpolation == .area && width >= outputWidth && height >= outputHeight
        columnTaps.build(source: width, destination: outputWidth, interpolation, areaAveraging: areaAveraging)
        rowTaps.build(source: height, destination: outputHeight, interpolation, areaAveraging: areaAveraging)

        let needed = height * outputWidth * 3
        if needed > rowsCapacity {
            rows.deallocate()
            rows = .allocate(capacity: needed)
            rowsCapacity = needed
        }
        resampleColumns(source, width: width, height: height, outputWidth: outputWidth)
        resampleRows(into: destination, outputWidth: outputWidth, outputHeight: outputHeight)
    }

    private func resampleColumns(_ source: UnsafePointer<UInt8>, width: Int, height: Int, outputWidth: Int) {
        let taps = columnTaps.count, index = columnTaps.index, weight = columnTaps.weight
        let rows = self.rows
        for y in 0..<height {
            let input = source + y * width * 3
            let output = rows + y * outputWidth * 3
            for x in 0..<outputWidth {
                var b: Float = 0, g: Float = 0, r: Float = 0
                let base = x * taps
                for k in 0..<taps {
                    let pixel = input + Int(index[base + k]) * 3
                    let w = weight[base + k]
                    b += w * Float(pixel[0])
                    g += w * Float(pixel[1])
                    r += w * Float(pixel[2])
                }
                output[x * 3] = b
                output[x * 3 + 1] = g
                output[x * 3 + 2] = r
            }
        }
    }

    private func resampleRows(into destination: UnsafeMutablePointer<UInt8>, outputWidth: Int, outputHeight: Int) {
        let taps = rowTaps.count, index = rowTaps.index, weight = rowTaps.weight
        let rows = self.rows
        let rowLength = outputWidth * 3
        for y in 0..<outputHeight {
            let base = y * taps
            let output = destination + y * rowLength
            for i in 0..<rowLength {
                var sum: Float = 0
                for k in 0..<taps {
                    sum += weight[base + k] * rows[Int(index[base + k]) * rowLength + i]
                }
                output[i] = roundToByte(sum)
            }
        }
    }
}

@inline(__always)
private func roundToByte(_ value: Float) -> UInt8 {
    let clamped = value < 0 ? 0 : (value > 255 ? 255 : value)
    return UInt8(clamped + 0.5)
}

/// The taps of one axis: for each output coordinate, `count` source indices (clamped to the image,
/// which is OpenCV's replicated border) and their weights; unused taps have weight 0.
struct ResizeTaps {
    private(set) var index: UnsafeMutablePointer<Int32> = .allocate(capacity: 1)
    private(set) var weight: UnsafeMutablePointer<Float> = .allocate(capacity: 1)
    private(set) var count = 0
    private var capacity = 1

    mutating func reserve(length: Int, taps: Int) {
        let needed = length * taps
        guard needed > capacity else { return }
        index.deallocate()
        weight.deallocate()
        index = .allocate(capacity: needed)
        weight = .allocate(capacity: needed)
        capacity = needed
    }

    func deallocate() {
        index.deallocate()
        weight.deallocate()
    }

    mutating func build(source: Int, destination: Int, _ interpolation: ResizeInterpolation, areaAveraging: Bool) {
        // cv2.resize's scale factors, computed in double as it does, so that floors land alike.
        let inverseScale = Double(destination) / Double(source)
        let scale = 1 / inverseScale
        let last = source - 1
        if areaAveraging {
            buildAreaAveraging(source: source, destination: destination, scale: scale)
            return
        }
        switch interpolation {
        case .nearest:
            setShape(destination, taps: 1)
            for d in 0..<destination {
                set(d, 0, min(Int((Double(d) * scale).rounded(.down)), last), 1)
            }
        case .bilinear, .area:
            setShape(destination, taps: 2)
            for d in 0..<destination {
                var position: Int
                var fraction: Float
                if interpolation == .area {
                    // Enlarging with INTER_AREA: each output pixel takes the source pixel it starts
                    // in, plus the share of the next one that its span covers.
                    position = Int((Double(d) * scale).rounded(.down))
                    fraction = Float(Double(d + 1) - Double(position + 1) * inverseScale)
                    fraction = fraction <= 0 ? 0 : fraction - fraction.rounded(.down)
                } else {
                    let centre = Float((Double(d) + 0.5) * scale - 0.5)
                    position = Int(centre.rounded(.down))
                    fraction = centre - Float(position)
                }
                if position < 0 { position = 0; fraction = 0 }
                if position >= last { position = last; fraction = 0 }
                set(d, 0, position, 1 - fraction)
                set(d, 1, min(position + 1, last), fraction)
            }
        case .bicubic, .lanczos4:
            let taps = interpolation == .bicubic ? 4 : 8
            setShape(destination, taps: taps)
            var coefficients = (Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0))
            for d in 0..<destination {
                let centre = Float((Double(d) + 0.5) * scale - 0.5)
                let position = Int(centre.rounded(.down))
                let fraction = centre - Float(position)
                withUnsafeMutableBytes(of: &coefficients) { raw in
                    let c = raw.baseAddress!.assumingMemoryBound(to: Float.self)
                    if taps == 4 { cubicCoefficients(fraction, c) } else { lanczos4Coefficients(fraction, c) }
                    for k in 0..<taps {
                        let sourceIndex = min(max(position + k - taps / 2 + 1, 0), last)
                        set(d, k, sourceIndex, c[k])
                    }
                }
            }
        }
    }

    /// INTER_AREA when shrinking: each output pixel averages the source pixels its span covers,
    /// partly covered ones by their covered fraction.
    private mutating func buildAreaAveraging(source: Int, destination: Int, scale: Double) {
        let taps = Int(scale.rounded(.up)) + 1
        setShape(destination, taps: taps)
        for d in 0..<destination {
            let start = Double(d) * scale
            let end = start + scale
            let cellWidth = min(scale, Double(source) - start)
            var first = Int(start.rounded(.up))
            var past = Int(end.rounded(.down))
            past = min(past, source - 1)
            first = min(first, past)
            var k = 0
            if Double(first) - start > 1e-3 {
                set(d, k, first - 1, Float((Double(first) - start) / cellWidth)); k += 1
            }
            for s in first..<max(first, past) {
                set(d, k, s, Float(1 / cellWidth)); k += 1
            }
            if end - Double(past) > 1e-3 {
                set(d, k, past, Float(min(min(end - Double(past), 1), cellWidth) / cellWidth)); k += 1
            }
            assert(k <= taps, "area taps overflow")
            while k < taps { set(d, k, past, 0); k += 1 }
        }
    }

    private mutating func setShape(_ length: Int, taps: Int) {
        reserve(length: length, taps: taps)
        count = taps
    }

    @inline(__always)
    private func set(_ d: Int, _ k: Int, _ sourceIndex: Int, _ w: Float) {
        index[d * count + k] = Int32(sourceIndex)
        weight[d * count + k] = w
    }
}

/// OpenCV's cubic convolution weights (Keys, a = −0.75) for taps at −1, 0, 1, 2 from the sample.
private func cubicCoefficients(_ x: Float, _ c: UnsafeMutablePointer<Float>) {
    let a: Float = -0.75
    c[0] = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a
    c[1] = ((a + 2) * x - (a + 3)) * x * x + 1
    c[2] = ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1
    c[3] = 1 - c[0] - c[1] - c[2]
}

/// Lanczos (a = 4) weights for taps at −3 … 4 from the sample, normalised to sum 1 as OpenCV does.
private func lanczos4Coefficients(_ x: Float, _ c: UnsafeMutablePointer<Float>) {
    guard x >= Float.ulpOfOne else {
        for k in 0..<8 { c[k] = k == 3 ? 1 : 0 }
        return
    }
    var sum: Double = 0
    var weights = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    withUnsafeMutableBytes(of: &weights) { raw in
        let w = raw.baseAddress!.assumingMemoryBound(to: Double.self)
        for k in 0..<8 {
            let t = Double(x) + 3 - Double(k)  // distance from the sample to tap k
            let angle = Double.pi * t
            w[k] = sin(angle) * sin(angle / 4) / (angle * angle / 4)
            sum += w[k]
        }
        for k in 0..<8 { c[k] = Float(w[k] / sum) }
    }
}
