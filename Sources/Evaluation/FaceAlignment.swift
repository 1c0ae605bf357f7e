// Face alignment as the InsightFace IJB evaluation does it: the least-squares similarity transform
// (Umeyama) from five detected landmarks onto the ArcFace 112×112 template, then an affine warp of
// the image with bilinear sampling and a constant border, as `cv2.warpAffine` does with that matrix.

import Foundation

/// A 2×3 affine matrix mapping source coordinates (x, y) to destination coordinates:
/// `x' = a·x + b·y + c`, `y' = d·x + e·y + f`, with pixel centres at integer coordinates.
public struct AffineMatrix: Sendable, Equatable {
    public var a: Double, b: Double, c: Double
    public var d: Double, e: Double, f: Double

    public init(a: Double, b: Double, c: Double, d: Double, e: Double, f: Double) {
        self.a = a; self.b = b; self.c = c; self.d = d; self.e = e; self.f = f
    }

    public static let identity = AffineMatrix(a: 1, b: 0, c: 0, d: 0, e: 1, f: 0)

    /// Scale `scale`, counter-clockwise rotation `angle` (radians, in image coordinates with y
    /// down this turns clockwise on screen), then translation.
    public static func similarity(scale: Double, angle: Double, tx: Double, ty: Double) -> AffineMatrix {
        let p = scale * cos(angle), q = scale * sin(angle)
        return AffineMatrix(a: p, b: -q, c: tx, d: q, e: p, f: ty)
    }

    public func apply(x: Double, y: Double) -> (x: Double, y: Double) {
        (a * x + b * y + c, d * x + e * y + f)
    }

    /// The inverse map; nil when the matrix is singular.
    public var inverse: AffineMatrix? {
        let det = a * e - b * d
        guard det != 0, det.isFinite else { return nil }
        let ia = e / det, ib = -b / det, id = -d / det, ie = a / det
        return AffineMatrix(a: ia, b: ib, c: -(ia * c + ib * f), d: id, e: ie, f: -(id * c + ie * f))
    }

    /// `self` after `other`: maps x to self(other(x)).
    public func composed(after other: AffineMatrix) -> AffineMatrix {
        AffineMatrix(a: a * other.a + b * other.d, b: a * other.b + b * other.e, c: a * other.c + b * other.f + c,
                        d: d * other.a + e * other.d, e: d * other.b + e * other.e, f: d * other.c + e * other.f + f)
    }
}

public enum FaceAlignment {
    /// Output side of an aligned face.
    public static let outputSize = 112

    /// The ArcFace template: left eye, right eye, nose tip, left and right mouth corners, in the
    /// 112×112 crop (x, y interleaved).
    public static let arcFaceTemplate: [Double] = [
        38.2946, 51.6963,
        73.5318, 51.5014,
        56.0252, 71.7366,
        41.5493, 92.3655,
        70.7299, 92.2041,
    ]

    /// The least-squares similarity transform (rotation, uniform scale, translation) taking the
    /// points `source` onto `destination` (both x, y interleaved, same count ≥ 2 points).
    ///
    /// This is Umeyama's solution with its reflection correction, as scikit-image's
    /// `SimilarityTransform.estimate` computes it. In two dimensions the SVD of the 2×2
    /// cross-covariance `A = Σ dst·srcᵀ / n` has a closed form: writing `E = (A₀₀ + A₁₁)/2`,
    /// `H = (A₁₀ − A₀₁)/2`, the signed singular values are `Q ± R` with `Q = √(E² + H²)`, and the
    /// corrected rotation `U·diag(1, sign det A)·Vᵀ` is the rotation by `atan2(H, E)` whatever the
    /// sign of `det A`, while the scale `tr(S·D) / σ²` is `2Q / σ²`. So the transform is
    /// `scale·cos θ = 2E / σ²`, `scale·sin θ = 2H / σ²`, and never a reflection.
    /// Returns nil when the source points coincide or the cross-covariance vanishes (where
    /// Umeyama's estimate is undefined).
    public static func similarityTransform(from source: [Double], to destination: [Double]) -> AffineMatrix? {
        precondition(source.count == destination.count && source.count % 2 == 0 && source.count >= 4,
                     "similarity transform needs matching point lists of at least two points")
        let n = source.count / 2
        var msx = 0.0, msy = 0.0, mdx = 0.0, mdy = 0.0
        for i in 0..<n {
            msx += source[2 * i]; msy += source[2 * i + 1]
            mdx += destination[2 * i]; mdy += destination[2 * i + 1]
        }
        msx /= Double(n); msy /= Double(n); mdx /= Double(n); mdy /= Double(n)
        var a00 = 0.0, a01 = 0.0, a10 = 0.0, a11 = 0.0, variance = 0.0
        for i in 0..<n {
            let sx = source[2 * i] - msx, sy = source[2 * i + 1] - msy
            let dx = destination[2 * i] - mdx, dy = destination[2 * i + 1] - mdy
            a00 += dx * sx; a01 += dx * sy; a10 += dy * sx; a11 += dy * sy
            variance += sx * sx + sy * sy
        }
        guard variance > 0 else { return nil }
        // Both sums carry the same 1/n, which cancels in the ratio.
        let p = (a00 + a11) / variance, q = (a10 - a01) / variance
        guard p != 0 || q != 0, p.isFinite, q.isFinite else { return nil }
        return AffineMatrix(a: p, b: -q, c: mdx - (p * msx - q * msy),
                               d: q, e: p, f: mdy - (q * msx + p * msy))
    }

    /// The transform that aligns a face with these five landmarks (x, y interleaved) to the
    /// ArcFace template.
    public static func alignmentTransform(landmarks: [Double]) -> AffineMatrix? {
        precondition(landmarks.count == 10, "five landmarks (10 coordinates) expected, got \(landmarks.count)")
        return similarityTransform(from: landmarks, to: arcFaceTemplate)
    }

    /// Warps the BGR image (`height × width × 3` bytes) by the forward map `transform` into an
    /// `outputWidth × outputHeight` image: each output pixel samples the source at the inverse map
    /// bilinearly, neighbours outside the source counting as `border` (as `cv2.warpAffine` with
    /// `INTER_LINEAR` and `BORDER_CONSTANT`). Nil when the transform is singular.
    public static func warp(bgr: [UInt8], width: Int, height: Int, transform: AffineMatrix,
                            outputWidth: Int, outputHeight: Int, border: UInt8 = 0) -> [UInt8]? {
        precondition(width > 0 && height > 0 && bgr.count == width * height * 3, "BGR buffer does not match its size")
        guard let inv = transform.inverse else { return nil }
        var output = [UInt8](repeating: border, count: outputWidth * outputHeight * 3)
        let borderValue = Double(border)
        bgr.withUnsafeBufferPointer { src in
            output.withUnsafeMutableBufferPointer { dst in
                for y in 0..<outputHeight {
                    for x in 0..<outputWidth {
                        let (sx, sy) = inv.apply(x: Double(x), y: Double(y))
                        guard sx > -1, sy > -1, sx < Double(width), sy < Double(height) else { continue }
                        let x0 = Int(sx.rounded(.down)), y0 = Int(sy.rounded(.down))
                        let fx = sx - Double(x0), fy = sy - Double(y0)
                        let w00 = (1 - fx) * (1 - fy), w01 = fx * (1 - fy), w10 = (1 - fx) * fy, w11 = fx * fy
                        let in0 = y0 >= 0, in1 = y0 + 1 < height, inL = x0 >= 0, inR = x0 + 1 < width
                        for ch in 0..<3 {
                            func at(_ px: Int, _ py: Int, _ inside: Bool) -> Double {
                                inside ? Double(src[(py * width + px) * 3 + ch]) : borderValue
                            }
                            let value = w00 * at(x0, y0, in0 && inL) + w01 * at(x0 + 1, y0, in0 && inR)
                                + w10 * at(x0, y0 + 1, in1 && inL) + w11 * at(x0 + 1, y0 + 1, in1 && inR)
                            dst[(y * outputWidth + x) * 3 + ch] = UInt8(max(0, min(255, value.rounded())))
                        }
                    }
                }
            }
        }
        return output
    }

    /// The 112×112 aligned face of a BGR image with five landmarks; nil when the landmarks are
    /// degenerate.
    public static func align(bgr: [UInt8], width: Int, height: Int, landmarks: [Double]) -> [UInt8]? {
        guard let m = alignmentTransform(landmarks: landmarks) else { return nil }
        return warp(bgr: bgr, width: width, height: height, transform: m,
                    outputWidth: outputSize, outputHeight: outputSize)
    }
}
