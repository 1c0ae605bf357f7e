// Decoded BGR bytes to the backbone's input: (x/255 − 0.5)/0.5, channel order kept (BGR), NHWC.

public enum InputNormalization {
    public static func normalize(bgr: UnsafePointer<UInt8>, count: Int, into output: UnsafeMutablePointer<Float>) {
        for i in 0..<count { output[i] = Float(bgr[i]) * (1 / 127.5) - 1 }
    }
}
