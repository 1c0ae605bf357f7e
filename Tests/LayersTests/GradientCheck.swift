// Central finite differences against the analytic backward passes. The engine is float32, so the
// step is large (1e-2) and the comparison is a relative error over a sample of coordinates.
import Tensors
import XCTest

struct GradientCheck {
    /// Compares `analytic` with (L(θ+h) − L(θ−h)) / 2h for up to `samples` coordinates of `values`.
    static func check(_ label: String, values: UnsafeMutablePointer<Float>, count: Int, analytic: [Float],
                      samples: Int = 24, step: Float = 1e-2, tolerance: Double = 1e-2, floor: Double = 1e-6,
                      file: StaticString = #filePath, line: UInt = #line, loss: () -> Double) {
        XCTAssertEqual(analytic.count, count, "\(label): analytic gradient size", file: file, line: line)
        var rng = SplitMix64(seed: UInt64(count) &* 31 &+ UInt64(label.utf8.count))
        let picks = count <= samples ? Array(0..<count) : (0..<samples).map { _ in Int(rng.next() % UInt64(count)) }
        var diff = 0.0, norm = 0.0
        for i in picks {
            let saved = values[i]
            values[i] = saved + step
            let up = loss()
            values[i] = saved - step
            let down = loss()
            values[i] = saved
            let numeric = (up - down) / (2 * Double(step))
            diff += (numeric - Double(analytic[i])) * (numeric - Double(analytic[i]))
            norm += numeric * numeric
        }
        // `floor` covers gradients that are exactly zero in theory (a bias followed by a training-mode
        // BatchNorm): there both sides are noise and only their absolute difference means something.
        let relative = diff.squareRoot() / max(norm.squareRoot(), floor)
        XCTAssertLessThan(relative, tolerance, "\(label): relative error \(relative) over \(picks.count) coordinates",
                          file: file, line: line)
    }

    /// L = Σ y·w in Double: a loss whose gradient w.r.t. y is w.
    static func weightedSum(_ y: UnsafePointer<Float>, _ w: [Float]) -> Double {
        var s = 0.0
        for i in 0..<w.count { s += Double(y[i]) * Double(w[i]) }
        return s
    }

    static func random(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in rng.nextNormal() * scale }
    }
}

extension Tensor {
    func set(_ values: [Float]) {
        precondition(values.count <= capacity)
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: values.count) }
    }
}
