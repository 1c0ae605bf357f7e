// Decoding of JPEG and PNG records to 8-bit BGR, the backbone's input order (as OpenCV's imread).

/// An 8-bit image, rows top to bottom, pixels interleaved as B, G, R.
public struct DecodedImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    /// `height * width * 3` bytes, row-major.
    public var bgr: [UInt8]

    public init(width: Int, height: Int, bgr: [UInt8]) {
        precondition(width > 0 && height > 0 && bgr.count == width * height * 3,
                     "BGR buffer of \(bgr.count) bytes does not hold a \(width)×\(height) image")
        self.width = width
        self.height = height
        self.bgr = bgr
    }
}

public enum ImageFormat: Sendable, Equatable {
    case jpeg
    case png

    /// Recognises the format from the leading magic bytes; nil for anything else.
    public static func detect(_ bytes: UnsafeRawBufferPointer) -> ImageFormat? {
        if bytes.count >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF { return .jpeg }
        if bytes.count >= 8 && bytes.prefix(8).elementsEqual(PNGHeader.signature) { return .png }
        return nil
    }
}

public struct ImageDecodingError: Error, CustomStringConvertible, Sendable {
    public enum Reason: Sendable, Equatable {
        /// Neither a JPEG nor a PNG signature (includes empty input).
        case unknownFormat
        /// TurboJPEG failed or warned (truncated, corrupt entropy data, unsupported colour space).
        case corruptJPEG
        /// Bad chunk CRC, truncation, damaged zlib stream, invalid header values.
        case corruptPNG
        /// Valid but outside what this decoder handles (unknown critical chunk, over the size limit).
        case unsupported
        /// The image is not the size the caller expected.
        case wrongSize
        /// The TurboJPEG handle could not be created.
        case decoderUnavailable
    }

    public let reason: Reason
    public let message: String

    public init(reason: Reason, message: String) {
        self.reason = reason
        self.message = message
    }

    public var description: String { message }

    static func corruptPNG(_ detail: String) -> ImageDecodingError {
        ImageDecodingError(reason: .corruptPNG, message: "corrupt PNG: \(detail)")
    }

    static func unsupported(_ detail: String) -> ImageDecodingError {
        ImageDecodingError(reason: .unsupported, message: detail)
    }
}

/// Decodes JPEG (through TurboJPEG) and PNG (own decoder) to BGR.
/// Holds a TurboJPEG handle and PNG scratch buffers that are reused across images, so it is not
/// thread-safe: use one decoder per thread.
public final class ImageDecoder {
    /// Largest accepted pixel count; bounds what a corrupt header can make the decoder allocate.
    public static let maxPixels = 1 << 26

    private let jpeg: JPEGDecoder
    private let png = PNGDecoder()

    public init() throws {
        jpeg = try JPEGDecoder()
    }

    /// Decodes an image into a new buffer.
    public func decode(_ bytes: UnsafeRawBufferPointer) throws -> DecodedImage {
        let header = try readHeader(bytes)
        let count = header.width * header.height * 3
        let pixels = try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            try decodePixels(bytes, header, into: buffer.baseAddress!)
            initialized = count
        }
        return DecodedImage(width: header.width, height: header.height, bgr: pixels)
    }

    /// Decodes an image of known size into `output` without allocating (after the first PNGs have
    /// sized the scratch buffers). An image of another size is an error; `output` must hold at least
    /// `expectedWidth * expectedHeight * 3` bytes. On error `output` may be partly written.
    public func decode(_ bytes: UnsafeRawBufferPointer, into output: UnsafeMutableBufferPointer<UInt8>,
                       expectedWidth: Int, expectedHeight: Int) throws {
        precondition(expectedWidth > 0 && expectedHeight > 0 && output.count >= expectedWidth * expectedHeight * 3,
                     "output of \(output.count) bytes cannot hold a \(expectedWidth)×\(expectedHeight) BGR image")
        let header = try readHeader(bytes)
        guard header.width == expectedWidth && header.height == expectedHeight else {
            throw ImageDecodingError(
                reason: .wrongSize,
                message: "image is \(header.width)×\(header.height), expected \(expectedWidth)×\(expectedHeight)")
        }
        try decodePixels(bytes, header, into: output.baseAddress!)
    }

    private struct Header {
        let width: Int
        let height: Int
        let png: PNGHeader?
    }

    private func readHeader(_ bytes: UnsafeRawBufferPointer) throws -> Header {
        let header: Header
        switch ImageFormat.detect(bytes) {
        case .jpeg:
            let (width, height) = try jpeg.size(of: bytes)
            header = Header(width: width, height: height, png: nil)
        case .png:
            let pngHeader = try PNGHeader(bytes)
            header = Header(width: pngHeader.width, height: pngHeader.height, png: pngHeader)
        case nil:
            let leading = bytes.prefix(8).map { String($0, radix: 16) }.joined(separator: " ")
            throw ImageDecodingError(
                reason: .unknownFormat,
                message: bytes.isEmpty ? "empty input is not an image"
                                       : "unknown image format (leading bytes: \(leading))")
        }
        guard header.width <= Self.maxPixels / header.height else {
            throw ImageDecodingError.unsupported(
                "image is \(header.width)×\(header.height), over the decoder's limit of \(Self.maxPixels) pixels")
        }
        return header
    }

    private func decodePixels(_ bytes: UnsafeRawBufferPointer, _ header: Header,
                              into output: UnsafeMutablePointer<UInt8>) throws {
        if let pngHeader = header.png {
            try png.decode(bytes, header: pngHeader, into: output)
        } else {
            try jpeg.decode(bytes, width: header.width, height: header.height, into: output)
        }
    }
}
