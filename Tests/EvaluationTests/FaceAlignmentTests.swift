import DataPipeline
import Evaluation
import Foundation
import Tensors
import XCTest

final class FaceAlignmentTests: XCTestCase {
    private func meanAbsoluteError(_ a: [UInt8], _ b: [UInt8]) -> Double {
        precondition(a.count == b.count)
        var sum = 0
        for i in 0..<a.count { sum += abs(Int(a[i]) - Int(b[i])) }
        return Double(sum) / Double(a.count)
    }

    /// Random similarities applied to the template points are undone to well within 0.5 px.
    func testLandmarksMapOntoTemplate() throws {
        var random = SplitMix64(seed: 7)
        let template = FaceAlignment.arcFaceTemplate
        for _ in 0..<50 {
            let scale = 0.5 + 2.5 * Double(random.nextUniform())
            let angle = (Double(random.nextUniform()) - 0.5) * 2 * Double.pi
            let tx = 300 * Double(random.nextUniform()), ty = 300 * Double(random.nextUniform())
            let forward = AffineMatrix.similarity(scale: scale, angle: angle, tx: tx, ty: ty)
            var landmarks: [Double] = []
            for k in 0..<5 {
                let p = forward.apply(x: template[2 * k], y: template[2 * k + 1])
                // A little detector noise (0.1 px in template units): the fit is then least
                // squares, not exact.
                let noise = 0.1 * scale
                landmarks += [p.x + noise * Double(random.nextNormal()), p.y + noise * Double(random.nextNormal())]
            }
            let m = try XCTUnwrap(FaceAlignment.alignmentTransform(landmarks: landmarks))
            // A similarity, never a reflection.
            XCTAssertEqual(m.a, m.e, accuracy: 1e-12)
            XCTAssertEqual(m.b, -m.d, accuracy: 1e-12)
            for k in 0..<5 {
                let p = m.apply(x: landmarks[2 * k], y: landmarks[2 * k + 1])
                XCTAssertLessThan(hypot(p.x - template[2 * k], p.y - template[2 * k + 1]), 0.5)
            }
        }
    }

    func testExactSimilarityIsRecovered() throws {
        let forward = AffineMatrix.similarity(scale: 1.7, angle: 0.4, tx: 12, ty: -5)
        let source: [Double] = [0, 0, 10, 3, -4, 8, 7, 7]
        var destination: [Double] = []
        for k in 0..<4 { let p = forward.apply(x: source[2 * k], y: source[2 * k + 1]); destination += [p.x, p.y] }
        let m = try XCTUnwrap(FaceAlignment.similarityTransform(from: source, to: destination))
        for (x, y) in [(m.a, forward.a), (m.b, forward.b), (m.c, forward.c), (m.d, forward.d), (m.e, forward.e), (m.f, forward.f)] {
            XCTAssertEqual(x, y, accuracy: 1e-9)
        }
    }

    /// Mirrored points (det of the cross-covariance < 0) still give a proper rotation, and the fit
    /// is the best rotation-and-scale one (Umeyama's reflection correction).
    func testReflectedPointsGiveRotationNotReflection() throws {
        let source: [Double] = [0, 0, 4, 0, 0, 2]
        let destination: [Double] = [0, 0, -4, 0, 0, 2]
        let m = try XCTUnwrap(FaceAlignment.similarityTransform(from: source, to: destination))
        XCTAssertGreaterThan(m.a * m.e - m.b * m.d, 0)
        // Residual of the returned fit is no worse than any nearby similarity.
        func residual(_ t: AffineMatrix) -> Double {
            (0..<3).reduce(0) { acc, k in
                let p = t.apply(x: source[2 * k], y: source[2 * k + 1])
                return acc + pow(p.x - destination[2 * k], 2) + pow(p.y - destination[2 * k + 1], 2)
            }
        }
        let best = residual(m)
        for da in [-0.01, 0.01] {
            var t = m; t.a += da; t.e += da
            XCTAssertGreaterThanOrEqual(residual(t) + 1e-12, best)
            var u = m; u.b -= da; u.d += da
            XCTAssertGreaterThanOrEqual(residual(u) + 1e-12, best)
        }
    }

    func testDegenerateLandmarksGiveNil() {
        XCTAssertNil(FaceAlignment.alignmentTransform(landmarks: [Double](repeating: 3, count: 10)))
    }

    /// Warping is bilinear with a zero border, as cv2.warpAffine: a half-pixel shift averages
    /// neighbours, and pixels mapped from outside the source are 0.
    func testWarpBilinearAndBorder() throws {
        // 2×1 image, values 10 and 30 in every channel.
        let image: [UInt8] = [10, 10, 10, 30, 30, 30]
        let shift = AffineMatrix(a: 1, b: 0, c: -0.5, d: 0, e: 1, f: 0)
        let out = try XCTUnwrap(FaceAlignment.warp(bgr: image, width: 2, height: 1, transform: shift,
                                                   outputWidth: 3, outputHeight: 1))
        XCTAssertEqual(Array(out[0..<3]), [20, 20, 20])   // samples x = 0.5
        XCTAssertEqual(Array(out[3..<6]), [15, 15, 15])   // x = 1.5: half the pixel, half the zero border
        XCTAssertEqual(Array(out[6..<9]), [0, 0, 0])      // x = 2.5: outside
        let identity = try XCTUnwrap(FaceAlignment.warp(bgr: image, width: 2, height: 1, transform: .identity,
                                                        outputWidth: 2, outputHeight: 1))
        XCTAssertEqual(identity, image)
    }

    /// A rendered aligned face placed by a random similarity into a larger image comes back close
    /// to the original render when aligned from the transformed template landmarks.
    func testWarpingBackRecoversRender() throws {
        let faces = SyntheticFaces(seed: 3)
        var random = SplitMix64(seed: 11)
        for trial in 0..<3 {
            let render = faces.render(identity: trial, image: 0, quality: 1)
            let scale = 1.2 + 0.3 * Double(random.nextUniform())
            let angle = (Double(random.nextUniform()) - 0.5) * 0.8
            let placement = AffineMatrix.similarity(scale: scale, angle: angle, tx: 60, ty: 40)
            let canvas = try XCTUnwrap(FaceAlignment.warp(bgr: render, width: 112, height: 112, transform: placement,
                                                          outputWidth: 260, outputHeight: 260))
            var landmarks: [Double] = []
            for k in 0..<5 {
                let p = placement.apply(x: FaceAlignment.arcFaceTemplate[2 * k], y: FaceAlignment.arcFaceTemplate[2 * k + 1])
                landmarks += [p.x, p.y]
            }
            let aligned = try XCTUnwrap(FaceAlignment.align(bgr: canvas, width: 260, height: 260, landmarks: landmarks))
            XCTAssertEqual(aligned.count, 112 * 112 * 3)
            let error = meanAbsoluteError(aligned, render)
            XCTAssertLessThan(error, 6, "trial \(trial)")
        }
    }
}
