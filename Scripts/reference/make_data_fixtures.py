#!/usr/bin/env python3
"""Writes the RecordIO fixtures read by Tests/DataPipelineTests/RecordIOTests.swift.

An independent writer of the InsightFace/MXNet RecordIO format (DESIGN.md section 4), in the Python
standard library only, so that the Swift reader is checked against bytes it did not produce.

Record layout (dmlc-core recordio): uint32 magic 0xced7230a, uint32 lrec (upper 3 bits: continuation
flag, lower 29: length), the part's bytes, zero padding to 4 bytes. The writer scans the payload at
4-byte-aligned positions; wherever the magic occurs there, the bytes before it become a part (flag 1
for the first, 2 after that), the 4 magic bytes themselves are dropped, and the rest continues; the
last part has flag 3 (or 0 when nothing was split). A reader joins the parts with the magic between
them. Payload = IRHeader <IfQQ (flag, label, id, id2), then `flag` float32 labels when flag > 0,
then the encoded image.

Sets written into Tests/DataPipelineTests/Fixtures/recordio/ (a few KB in total):
  insightface/  header record at key 0 (flag 2, labels [6, 9]): images are keys 1..5 with classes
                0 0 1 2 2, identity records at keys 6..8; the header record is written last, so
                train.idx is not in key order. property "3,112,112". Images: 112x112 solid PNGs.
  noheader/     keys 0..3 are all images, no property; key 1 has a label array of 3 floats and key 3
                one of 2 floats; classes 2 0 1 2. Images: 4x4 PNGs.
  split/        property "2,112,112", no header record; key 1's payload holds the magic in the IRHeader
                id field and twice in a row inside a PNG ancillary chunk (parts: 1, 2, 2, 3, one of
                them empty); key 2's payload ends with the magic (an empty last part). image1.png and
                image2.bin are those records' image bytes for comparison.

The output is deterministic. Usage: python3 Scripts/reference/make_data_fixtures.py
"""
import os
import struct
import zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                   "Tests", "DataPipelineTests", "Fixtures", "recordio")
MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)


# ---------------------------------------------------------------- PNG (zlib + struct)

def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def solid_png(width: int, height: int, rgb, extra_chunks=()) -> bytes:
    row = b"\x00" + bytes(rgb) * width  # filter type 0
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = b"".join(extra_chunks)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + body
            + png_chunk(b"IDAT", zlib.compress(row * height, 9)) + png_chunk(b"IEND", b""))


# ---------------------------------------------------------------- RecordIO

def ir_payload(label, image: bytes, record_id: int = 0, id2: int = 0) -> bytes:
    """MXNet's recordio.pack: a scalar label goes in the header, a list becomes flag floats."""
    if isinstance(label, (list, tuple)):
        return struct.pack("<IfQQ", len(label), 0.0, record_id, id2) + struct.pack("<%df" % len(label), *label) + image
    return struct.pack("<IfQQ", 0, float(label), record_id, id2) + image


def encode_record(payload: bytes):
    """Returns the record bytes and the continuation flags of its parts."""
    out = bytearray()
    flags = []
    start = 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i:i + 4] == MAGIC_BYTES:
            flag = 1 if start == 0 else 2
            out += MAGIC_BYTES + struct.pack("<I", (flag << 29) | (i - start)) + payload[start:i]
            flags.append(flag)
            start = i + 4
    flag = 3 if start else 0
    rest = payload[start:]
    out += MAGIC_BYTES + struct.pack("<I", (flag << 29) | len(rest)) + rest
    out += b"\x00" * (-len(rest) % 4)
    flags.append(flag)
    return bytes(out), flags


def decode_record(data: bytes, offset: int) -> bytes:
    """A second, reading implementation used only to check what was written."""
    joined = bytearray()
    while True:
        magic, lrec = struct.unpack_from("<II", data, offset)
        assert magic == MAGIC
        flag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        joined += data[offset + 8:offset + 8 + length]
        offset += 8 + length + (-length % 4)
        if flag in (0, 3):
            return bytes(joined)
        joined += MAGIC_BYTES


def write_set(name: str, records, prop=None):
    """records: (key, payload) in file order. Returns {key: flags}."""
    directory = os.path.join(OUT, name)
    os.makedirs(directory, exist_ok=True)
    rec = bytearray()
    idx = []
    flags = {}
    for key, payload in records:
        idx.append("%d\t%d\n" % (key, len(rec)))
        encoded, flags[key] = encode_record(payload)
        assert decode_record(encoded, 0) == payload
        rec += encoded
    with open(os.path.join(directory, "train.rec"), "wb") as f:
        f.write(rec)
    with open(os.path.join(directory, "train.idx"), "w") as f:
        f.write("".join(idx))
    if prop is not None:
        with open(os.path.join(directory, "property"), "w") as f:
            f.write(prop)
    return flags


# ---------------------------------------------------------------- sets

COLOURS = [(200, 30, 40), (20, 180, 60), (90, 90, 220), (250, 250, 10), (0, 128, 255)]


def insightface_set():
    classes = [0, 0, 1, 2, 2]
    records = []
    for i, label in enumerate(classes):
        key = i + 1
        records.append((key, ir_payload(label, solid_png(112, 112, COLOURS[i]))))
    # Identity records: the image key range [a, b) of each class.
    ranges = [(1, 3), (3, 4), (4, 6)]
    for c, (a, b) in enumerate(ranges):
        records.append((6 + c, ir_payload([float(a), float(b)], b"")))
    records.append((0, ir_payload([6.0, 9.0], b"")))
    flags = write_set("insightface", records, prop="3,112,112")
    assert all(f == [0] for f in flags.values())


def noheader_set():
    records = [
        (0, ir_payload(2, solid_png(4, 4, (10, 20, 30)), record_id=0)),
        (1, ir_payload([0.0, 0.5, 0.25], solid_png(4, 4, (40, 50, 60)), record_id=1)),
        (2, ir_payload(1, solid_png(4, 4, (70, 80, 90)), record_id=2)),
        (3, ir_payload([2.0, 9.0], solid_png(4, 4, (100, 110, 120)), record_id=3)),
    ]
    write_set("noheader", records)


def split_set():
    # Key 1: the magic in the IRHeader id field (payload offset 8) and twice in a row in a private
    # ancillary PNG chunk, placed at 4-byte-aligned payload offsets.
    chunk_data_offset = 24 + 8 + 25 + 8  # IRHeader, PNG signature, IHDR chunk, chunk length+type
    pad = -chunk_data_offset % 4
    chunk = png_chunk(b"rcIo", b"\x00" * pad + MAGIC_BYTES * 2 + b"tail")
    image1 = solid_png(112, 112, (30, 60, 90), extra_chunks=[chunk])
    payload1 = ir_payload(1, image1, record_id=MAGIC)
    assert payload1[8:12] == MAGIC_BYTES and payload1[chunk_data_offset + pad:][:8] == MAGIC_BYTES * 2

    # Key 2: a PNG followed by filler so that the payload ends with the magic at an aligned offset;
    # decoders stop at IEND.
    image2 = solid_png(112, 112, (5, 15, 25))
    filler = b"\x00" * (-(24 + len(image2)) % 4)
    image2 += filler + MAGIC_BYTES
    payload2 = ir_payload(1, image2, record_id=2)
    assert len(payload2) % 4 == 0 and payload2[-4:] == MAGIC_BYTES

    records = [
        (0, ir_payload(0, solid_png(112, 112, (1, 2, 3)), record_id=0)),
        (1, payload1),
        (2, payload2),
    ]
    flags = write_set("split", records, prop="2,112,112")
    assert flags[0] == [0], flags
    assert flags[1] == [1, 2, 2, 3], flags
    assert flags[2] == [1, 3], flags
    directory = os.path.join(OUT, "split")
    with open(os.path.join(directory, "image1.png"), "wb") as f:
        f.write(image1)
    with open(os.path.join(directory, "image2.bin"), "wb") as f:
        f.write(image2)

    # The empty parts: key 1's middle part between the two adjacent magics, key 2's last part.
    rec = open(os.path.join(directory, "train.rec"), "rb").read()
    lengths = []
    offset = int(open(os.path.join(directory, "train.idx")).read().splitlines()[1].split("\t")[1])
    while True:
        _, lrec = struct.unpack_from("<II", rec, offset)
        lengths.append(lrec & ((1 << 29) - 1))
        offset += 8 + lengths[-1] + (-lengths[-1] % 4)
        if lrec >> 29 == 3:
            break
    assert lengths[2] == 0, lengths


def main():
    insightface_set()
    noheader_set()
    split_set()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print("wrote %s (%d bytes)" % (os.path.normpath(OUT), total))


if __name__ == "__main__":
    main()
