import Glibc

/// Thin POSIX helpers that turn failures into `SerializationError`s naming the path.
enum FileIO {
    static func ioError(_ action: String, _ path: String, _ code: Int32 = errno) -> SerializationError {
        SerializationError(.io, source: path, "\(action) failed: \(systemErrorText(code)) (errno \(code))")
    }

    /// Opens `path`, retrying on EINTR.
    static func openFile(_ path: String, _ flags: Int32, mode: mode_t = 0) throws -> Int32 {
        while true {
            let fd = open(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return fd }
            if errno != EINTR { throw ioError("open", path) }
        }
    }

    /// Reads the whole file.
    static func readAll(_ path: String) throws -> [UInt8] {
        let fd = try openFile(path, O_RDONLY)
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ioError("stat", path) }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw SerializationError(.io, source: path, "is a directory, not a file")
        }
        // The size from fstat is a hint only: the loop reads to end of file whatever it is. One spare
        // byte lets the read that reports end of file run without growing the buffer.
        var bytes = [UInt8](repeating: 0, count: max(Int(st.st_size), 0) + 1)
        var filled = 0
        while true {
            if filled == bytes.count {
                bytes += [UInt8](repeating: 0, count: max(bytes.count, 1 << 16))
            }
            let n = bytes.withUnsafeMutableBytes { buffer in
                read(fd, buffer.baseAddress! + filled, min(buffer.count - filled, 1 << 30))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw ioError("read", path)
            }
            if n == 0 { break }
            filled += n
        }
        bytes.removeLast(bytes.count - filled)
        return bytes
    }

    /// Writes all of `bytes` to `fd`, handling short writes and EINTR.
    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        guard var next = bytes.baseAddress else { return }
        var remaining = bytes.count
        while remaining > 0 {
            // Linux transfers at most about 2 GiB per call.
            let n = write(fd, next, min(remaining, 1 << 30))
            if n < 0 {
                if errno == EINTR { continue }
                throw ioError("write", path)
            }
            next += n
            remaining -= n
        }
    }
}
