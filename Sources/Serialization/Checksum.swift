import Glibc

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI, ext4 and many
/// storage formats; the checkpoint manifest records it per file.
///
/// Streaming: pass the previous result as `seed`, so
/// `crc32c(b, seed: crc32c(a)) == crc32c(a + b)`. The seed of an empty prefix is 0.
/// Software slicing-by-8 (no SSE4.2 intrinsics are reachable from Swift without C).
public enum Checksum {
    public static func crc32c(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        crc32cTable.withUnsafeBufferPointer { table in
            var crc = ~seed
            var index = 0
            let count = bytes.count
            while count - index >= 8 {
                let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self))
                    ^ UInt64(crc)
                crc = table[7 * 256 + Int(word & 0xFF)]
                    ^ table[6 * 256 + Int((word >> 8) & 0xFF)]
                    ^ table[5 * 256 + Int((word >> 16) & 0xFF)]
                    ^ table[4 * 256 + Int((word >> 24) & 0xFF)]
                    ^ table[3 * 256 + Int((word >> 32) & 0xFF)]
                    ^ table[2 * 256 + Int((word >> 40) & 0xFF)]
                    ^ table[1 * 256 + Int((word >> 48) & 0xFF)]
                    ^ table[Int(word >> 56)]
                index += 8
            }
            while index < count {
                crc = table[Int((crc ^ UInt32(bytes[index])) & 0xFF)] ^ (crc >> 8)
                index += 1
            }
            return ~crc
        }
    }

    public static func crc32c(_ bytes: [UInt8], seed: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { crc32c($0, seed: seed) }
    }

    /// CRC-32C of a whole file, read in 4 MiB chunks so memory stays bounded.
    public static func crc32c(fileAt path: String) throws -> UInt32 {
        let fd = try FileIO.openFile(path, O_RDONLY)
        defer { close(fd) }
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 16)
        defer { chunk.deallocate() }
        var crc: UInt32 = 0
        while true {
            let n = read(fd, chunk.baseAddress!, chunk.count)
            if n < 0 {
                if errno == EINTR { continue }
                throw FileIO.ioError("read", path)
            }
            if n == 0 { return crc }
            crc = crc32c(UnsafeRawBufferPointer(rebasing: chunk[0..<n]), seed: crc)
        }
    }
}

/// Eight 256-entry tables: table k maps a byte to its CRC contribution k bytes further back.
private let crc32cTable: [UInt32] = {
    var table = [UInt32](repeating: 0, count: 8 * 256)
    for byte in 0..<256 {
        var crc = UInt32(byte)
        for _ in 0..<8 {
            crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1
        }
        table[byte] = crc
    }
    for byte in 0..<256 {
        for slice in 1..<8 {
            let previous = table[(slice - 1) * 256 + byte]
            table[slice * 256 + byte] = table[Int(previous & 0xFF)] ^ (previous >> 8)
        }
    }
    return table
}()
