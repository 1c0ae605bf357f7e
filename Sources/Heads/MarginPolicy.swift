// The margin applied to the target logit: AdaFace (quality-adaptive angular and additive margin),
// ArcFace (additive angular) and CosFace (additive cosine), exactly as DESIGN.md §2.6 states them.
// Per-sample work in Double: it runs N times a step, and the fixtures are float64.
import Foundation

public enum MarginPolicy: Equatable, Sendable {
    /// m = 0.4, h = 0.333 in the official recipe; t_alpha is the norm-statistics EMA rate.
    case adaFace(margin: Double, h: Double, tAlpha: Double)
    case arcFace(margin: Double)
    case cosFace(margin: Double)

    public static let adaFaceDefault = MarginPolicy.adaFace(margin: 0.4, h: 0.333, tAlpha: 0.01)
    public static let arcFaceDefault = MarginPolicy.arcFace(margin: 0.5)
    public static let cosFaceDefault = MarginPolicy.cosFace(margin: 0.4)

    public var usesNormStatistics: Bool { if case .adaFace = self { return true } else { return false } }

    public var name: String {
        switch self {
        case .adaFace: return "adaface"
        case .arcFace: return "arcface"
        case .cosFace: return "cosface"
        }
    }
}

/// ε of the cosine clamp and of the angle clip.
public let marginEpsilon = 1e-3

/// The target logit and its derivative with respect to the (clamped) target cosine.
/// `zHat` is AdaFace's normalised norm ẑ (ignored by the other margins).
@inline(__always)
func marginTarget(cosine c: Double, zHat: Double, policy: MarginPolicy, scale s: Double) -> (logit: Double, slope: Double) {
    let eps = marginEpsilon
    switch policy {
    case let .adaFace(m, _, _):
        let theta = acos(c)
        let shifted = theta - m * zHat
        let clipped = min(max(shifted, eps), Double.pi - eps)
        let slope = clipped == shifted ? s * sin(clipped) / sin(theta) : 0
        return (s * (cos(clipped) - m * (1 + zHat)), slope)
    case let .arcFace(m):
        let theta = acos(c)
        let shifted = theta + m
        let clipped = min(max(shifted, eps), Double.pi - eps)
        let slope = clipped == shifted ? s * sin(clipped) / sin(theta) : 0
        return (s * cos(clipped), slope)
    case let .cosFace(m):
        return (s * (c - m), s)
    }
}
