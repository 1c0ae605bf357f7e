import Glibc

/// Crash-safe whole-file replacement, used for checkpoints.
///
/// The bytes go to a temporary file in the target's directory (`.<name>.tmp-<pid>-<random>`),
/// which is fsynced, renamed over the target, and then the directory is fsynced so that the rename
/// itself is durable. A reader therefore sees either the old file or the complete new one.
/// On failure the temporary file is removed, the previous target is left untouched, and the thrown
/// `SerializationError` names the path and the `strerror` text (e.g. "No space left on device").
/// A symbolic link at the target path is replaced by the new file, not followed.
public enum AtomicFile {
    public static func write(_ bytes: [UInt8], to path: String) throws {
        try bytes.withUnsafeBytes { try write($0, to: path) }
    }

    public static func write(_ bytes: UnsafeRawBufferPointer, to path: String) throws {
        try write(parts: [bytes], to: path)
    }

    /// Writes the concatenation of `parts`; lets callers avoid assembling one large buffer.
    static func write(parts: [UnsafeRawBufferPointer], to path: String) throws {
        let (directory, name) = split(path)
        guard !name.isEmpty, name != ".", name != ".." else {
            throw SerializationError(.io, source: path, "not a file path")
        }

        var fd: Int32 = -1
        var temporary = ""
        // O_EXCL with a random suffix: concurrent writers of the same target never share a temp file.
        while fd < 0 {
            temporary = directory + "/." + name + ".tmp-\(getpid())-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
            fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
            if fd < 0 && errno != EEXIST && errno != EINTR {
                throw FileIO.ioError("creating temporary file \(temporary)", path)
            }
        }

        do {
            // Keep the permissions of the file being replaced.
            var old = stat()
            if stat(path, &old) == 0, (old.st_mode & S_IFMT) == S_IFREG {
                _ = fchmod(fd, old.st_mode & 0o7777)
            }
            for part in parts {
                try FileIO.writeAll(fd, part, path: temporary)
            }
            guard fsync(fd) == 0 else { throw FileIO.ioError("fsync of temporary file \(temporary)", path) }
            let closeResult = close(fd)
            fd = -1
            // close can report deferred write errors (e.g. on network file systems).
            guard closeResult == 0 else { throw FileIO.ioError("close of temporary file \(temporary)", path) }
            guard rename(temporary, path) == 0 else { throw FileIO.ioError("rename of temporary file \(temporary) onto the target", path) }
        } catch {
            if fd >= 0 { close(fd) }
            unlink(temporary)
            // Errors from writeAll name the temporary file; report the target the caller asked for.
            if let failure = error as? SerializationError, failure.source == temporary {
                throw SerializationError(failure.kind, source: path, "\(failure.message) (writing temporary file \(temporary))")
            }
            throw error
        }

        try syncDirectory(directory, for: path)
    }

    /// Makes the rename durable. File systems that cannot fsync a directory report EINVAL; that is
    /// not a failure of the write.
    private static func syncDirectory(_ directory: String, for path: String) throws {
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw FileIO.ioError("opening directory \(directory) to fsync the rename", path) }
        defer { close(dfd) }
        if fsync(dfd) != 0 && errno != EINVAL && errno != ENOTSUP {
            throw FileIO.ioError("fsync of directory \(directory) after the rename", path)
        }
    }

    /// Directory and last component; the directory of a bare name is ".".
    static func split(_ path: String) -> (directory: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }
}
