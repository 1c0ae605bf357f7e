// The SGD update rule over flat parameter ranges, shared by the backbone optimizer and the head
// shards. PyTorch's SGD semantics: d = g + λ·w; v = μ·v + d; w = w − lr·v (no dampening, not Nesterov;
// a zero-initialised v makes the first step v = d, as PyTorch's clone on first use does).

public enum OptimizerKernels {
    public static func sgdMomentum(weights w: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>,
                                   velocity v: UnsafeMutablePointer<Float>, count: Int,
                                   learningRate lr: Float, momentum mu: Float, weightDecay wd: Float) {
        Parallel.forRanges(count, grain: 1 << 15) { range in
            var i = range.lowerBound
            let lrV = Vec16(repeating: lr), muV = Vec16(repeating: mu), wdV = Vec16(repeating: wd)
            while i + 16 <= range.upperBound {
                let wi = load16(w + i)
                let d = load16(g + i) + wdV * wi
                let vi = muV * load16(v + i) + d
                store16(vi, v + i)
                store16(wi - lrV * vi, w + i)
                i += 16
            }
            while i < range.upperBound {
                let d = g[i] + wd * w[i]
                v[i] = mu * v[i] + d
                w[i] -= lr * v[i]
                i += 1
            }
        }
    }
}
