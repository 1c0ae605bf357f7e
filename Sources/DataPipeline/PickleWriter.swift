// Python pickles of the one shape this project hands to Python tools: an InsightFace verification
// set, the tuple `(bins, issame_list)` of encoded images and booleans.

/// Emits the opcodes CPython's pickler uses for protocol 3, without memo entries: the output is
/// byte-identical to `pickletools.optimize(pickle.dumps(value, protocol=3))`. Protocol 3 because
/// BINBYTES/SHORT_BINBYTES (Python `bytes`) are protocol-3 opcodes; any Python 3 reads it.
public enum PickleWriter {
    public static func verificationSet(images: [[UInt8]], isSame: [Bool]) -> [UInt8] {
        var out: [UInt8] = [Opcode.proto, 3]
        out.reserveCapacity(images.reduce(64 + 6 * images.count + isSame.count) { $0 + $1.count })
        appendList(&out, images) { out, image in
            if image.count < 256 {
                out += [Opcode.shortBinBytes, UInt8(image.count)]
            } else {
                precondition(image.count <= Int(UInt32.max), "a pickled bytes object is limited to 4 GiB")
                out.append(Opcode.binBytes)
                withUnsafeBytes(of: UInt32(image.count).littleEndian) { out += $0 }
            }
            out += image
        }
        appendList(&out, isSame) { out, value in out.append(value ? Opcode.newTrue : Opcode.newFalse) }
        out += [Opcode.tuple2, Opcode.stop]
        return out
    }

    /// CPython's C pickler batching: APPEND for a one-item list, otherwise MARK … APPENDS per
    /// batch of up to 1000 items (a final batch of one included).
    private static func appendList<Element>(_ out: inout [UInt8], _ items: [Element],
                                            _ appendItem: (inout [UInt8], Element) -> Void) {
        out.append(Opcode.emptyList)
        if items.count == 1 {
            appendItem(&out, items[0])
            out.append(Opcode.append)
            return
        }
        var start = 0
        while start < items.count {
            let end = min(start + 1000, items.count)
            out.append(Opcode.mark)
            for item in items[start..<end] { appendItem(&out, item) }
            out.append(Opcode.appends)
            start = end
        }
    }

    enum Opcode {
        static let proto: UInt8 = 0x80
        static let emptyList: UInt8 = 0x5D  // ]
        static let mark: UInt8 = 0x28  // (
        static let append: UInt8 = 0x61  // a
        static let appends: UInt8 = 0x65  // e
        static let binBytes: UInt8 = 0x42  // B
        static let shortBinBytes: UInt8 = 0x43  // C
        static let newTrue: UInt8 = 0x88
        static let newFalse: UInt8 = 0x89
        static let tuple2: UInt8 = 0x86
        static let stop: UInt8 = 0x2E  // .
    }
}
