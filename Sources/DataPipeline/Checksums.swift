// CRC-32 (PNG chunks) and Adler-32 (zlib streams), shared by the PNG decoder and encoder.

enum CRC32 {
    /// Slicing-by-8 tables (8 × 256): PNG chunk checks run over every compressed byte,
    /// so the byte-at-a-time loop would be a visible share of decode time.
    static let tables: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            t[i] = c
        }
        for k in 1..<8 {
            for i in 0..<256 {
                let previous = t[(k - 1) * 256 + i]
                t[k * 256 + i] = (previous >> 8) ^ t[Int(previous & 0xFF)]
            }
        }
        return t
    }()

    /// Continues `crc` (0 for a fresh checksum) over `count` bytes.
    static func update(_ crc: UInt32, _ bytes: UnsafePointer<UInt8>?, _ count: Int) -> UInt32 {
        guard let p = bytes, count > 0 else { return crc }
        return tables.withUnsafeBufferPointer { tb -> UInt32 in
            let t = tb.baseAddress!
            var c = ~crc
            var i = 0
            while i + 8 <= count {
                let lo = c ^ (UInt32(p[i]) | UInt32(p[i + 1]) << 8 | UInt32(p[i + 2]) << 16 | UInt32(p[i + 3]) << 24)
                let x7 = t[7 * 256 + Int(lo & 0xFF)]
                let x6 = t[6 * 256 + Int((lo >> 8) & 0xFF)]
                let x5 = t[5 * 256 + Int((lo >> 16) & 0xFF)]
                let x4 = t[4 * 256 + Int(lo >> 24)]
                let x3 = t[3 * 256 + Int(p[i + 4])]
                let x2 = t[2 * 256 + Int(p[i + 5])]
                let x1 = t[1 * 256 + Int(p[i + 6])]
                let x0 = t[Int(p[i + 7])]
                c = (x7 ^ x6) ^ (x5 ^ x4) ^ (x3 ^ x2) ^ (x1 ^ x0)
                i += 8
            }
            while i < count {
                c = t[Int((c ^ UInt32(p[i])) & 0xFF)] ^ (c >> 8)
                i += 1
            }
            return ~c
        }
    }
}

enum Adler32 {
    /// Adler-32 of `count` bytes (RFC 1950).
    static func checksum(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> UInt32 {
        guard let p = bytes, count > 0 else { return 1 }
        var a: UInt32 = 1
        var b: UInt32 = 0
        var i = 0
        while i < count {
            // 5552 is the longest run for which `b` cannot overflow 32 bits before the modulo.
            let end = min(i + 5552, count)
            while i < end {
                a &+= UInt32(p[i])
                b &+= a
                i += 1
            }
            a %= 65521
            b %= 65521
        }
        return b << 16 | a
    }
}
