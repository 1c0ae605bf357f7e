// JPEG decoding through TurboJPEG, straight into BGR.

import CTurboJPEG

/// A TurboJPEG decompressor handle reused across images. TurboJPEG handles are not thread-safe,
/// so each `ImageDecoder` (one per thread) owns one.
final class JPEGDecoder {
    private var handle: tjhandle

    init() throws {
        guard let handle = tjInitDecompress() else {
            throw ImageDecodingError(reason: .decoderUnavailable,
                                     message: "cannot create a TurboJPEG decompressor: \(String(cString: tjGetErrorStr2(nil)))")
        }
        self.handle = handle
    }

    deinit { tjDestroy(handle) }

    func size(of bytes: UnsafeRawBufferPointer) throws -> (width: Int, height: Int) {
        var width: Int32 = 0
        var height: Int32 = 0
        var subsampling: Int32 = 0
        var colorspace: Int32 = 0
        let source = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
        guard tjDecompressHeader3(handle, source, UInt(bytes.count), &width, &height, &subsampling, &colorspace) == 0,
              width > 0, height > 0 else {
            throw failure()
        }
        return (Int(width), Int(height))
    }

    func decode(_ bytes: UnsafeRawBufferPointer, width: Int, height: Int, into output: UnsafeMutablePointer<UInt8>) throws {
        // Warnings are fatal: libjpeg reports a truncated file ("Premature end of JPEG file") or
        // corrupt entropy data only as a warning and would hand back a grey-filled image.
        // LIMITSCANS rejects progressive files with absurd scan counts, a known denial-of-service.
        let flags = TJFLAG_ACCURATEDCT | TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS
        let source = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let status = tjDecompress2(handle, source, UInt(bytes.count), output, Int32(width), Int32(width * 3),
                                   Int32(height), Int32(TJPF_BGR.rawValue), flags)
        guard status == 0 else { throw failure() }
    }

    private func failure() -> ImageDecodingError {
        let detail = String(cString: tjGetErrorStr2(handle))
        let kind = tjGetErrorCode(handle) == Int32(TJERR_WARNING.rawValue) ? "corrupt or truncated JPEG" : "undecodable JPEG"
        // TurboJPEG 2.1 can leave a handle mid-header after a failure, and the next (valid) image
        // then fails to parse; corrupt records are rare, so a fresh handle is cheap insurance.
        if let fresh = tjInitDecompress() {
            tjDestroy(handle)
            handle = fresh
        }
        return ImageDecodingError(reason: .corruptJPEG, message: "\(kind) (TurboJPEG: \(detail))")
    }
}
