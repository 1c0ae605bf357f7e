#!/usr/bin/env python3
"""Damage for the fault-injection suite (Scripts/faults.sh); standard library only.

    fault_data.py corrupt-rec SRC DST       a copy of the RecordIO set SRC with one bad record of each
                                            kind (prints `key<TAB>kind` for every record it damaged)
    fault_data.py to-folder SRC DST         the RecordIO set SRC as an image folder DST/<class>/<key>.jpg
    fault_data.py corrupt-folder DST        bad files of each kind in the image folder DST (prints
                                            `path<TAB>kind`)
    fault_data.py flip FILE [OFFSET]        inverts one byte (default: the middle of the file)
    fault_data.py scan-finite DIR...        every F32/F64 tensor of every .safetensors file and the
                                            numbers of trainer_state.json in the checkpoint
                                            directories DIR: exit 1 naming any NaN or infinity
"""
import json
import math
import os
import shutil
import struct
import sys
import zlib

MAGIC = 0xCED7230A
LENGTH_MASK = (1 << 29) - 1


def read_index(path):
    entries = []
    with open(path) as f:
        for line in f:
            if line.strip():
                key, offset = line.split("\t")
                entries.append((int(key), int(offset)))
    return entries


def write_index(path, entries):
    with open(path, "w") as f:
        for key, offset in entries:
            f.write(f"{key}\t{offset}\n")


def image_keys(rec, entries):
    """Keys of the image records: 1..<end when record 0 is an InsightFace header record."""
    offsets = dict(entries)
    magic, lrec = struct.unpack_from("<II", rec, offsets[0])
    flag, = struct.unpack_from("<I", rec, offsets[0] + 8)
    length = lrec & LENGTH_MASK
    if magic == MAGIC and flag > 0 and length == 24 + 4 * flag:
        end = int(struct.unpack_from("<f", rec, offsets[0] + 8 + 24)[0])
        return list(range(1, end))
    return sorted(offsets)


def corrupt_rec(src, dst):
    os.makedirs(dst, exist_ok=True)
    for name in ("train.rec", "train.idx", "property"):
        if os.path.exists(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
    rec = bytearray(open(os.path.join(dst, "train.rec"), "rb").read())
    entries = read_index(os.path.join(dst, "train.idx"))
    offsets = dict(entries)
    keys = image_keys(rec, entries)
    # Spread over the set; fixed keys so that the suite is reproducible.
    plan = {keys[5]: "truncated-jpeg", keys[17]: "bad-magic", keys[29]: "index-past-end",
            keys[41]: "label-out-of-range", keys[53]: "truncated-record"}
    for key, kind in plan.items():
        at = offsets[key]
        magic, lrec = struct.unpack_from("<II", rec, at)
        length = lrec & LENGTH_MASK
        if kind == "truncated-jpeg":
            # The record stays well formed; its JPEG loses its second half (and its end marker).
            image = length - 24
            struct.pack_into("<I", rec, at + 4, 24 + image // 2)
        elif kind == "bad-magic":
            struct.pack_into("<I", rec, at, 0xDEADBEEF)
        elif kind == "label-out-of-range":
            # flag 0: the scalar label; the set's property declares fewer classes than 9999.
            struct.pack_into("<f", rec, at + 8 + 4, 9999.0)
        elif kind == "truncated-record":
            # The length runs past the next record: the record is cut short.
            struct.pack_into("<I", rec, at + 4, length + 4096)
        elif kind == "index-past-end":
            offsets[key] = len(rec) + 4096
    open(os.path.join(dst, "train.rec"), "wb").write(rec)
    write_index(os.path.join(dst, "train.idx"), [(k, offsets[k]) for k, _ in entries])
    for key, kind in sorted(plan.items()):
        print(f"{key}\t{kind}")


def records(src):
    rec = open(os.path.join(src, "train.rec"), "rb").read()
    entries = read_index(os.path.join(src, "train.idx"))
    offsets = dict(entries)
    for key in image_keys(rec, entries):
        at = offsets[key]
        magic, lrec = struct.unpack_from("<II", rec, at)
        if magic != MAGIC or lrec >> 29 != 0:
            raise SystemExit(f"{src}: key {key} is not a whole record (split records are not handled here)")
        payload = rec[at + 8:at + 8 + (lrec & LENGTH_MASK)]
        flag, label = struct.unpack_from("<If", payload, 0)
        if flag > 0:
            label = struct.unpack_from("<f", payload, 24)[0]
        yield key, int(label), payload[24 + 4 * flag:]


def to_folder(src, dst):
    for key, label, image in records(src):
        folder = os.path.join(dst, f"id{label:05d}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{key:06d}.jpg"), "wb") as f:
            f.write(image)


def png(width, height):
    """A grey RGB PNG of the given size."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + b"\x80" * (3 * width) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def corrupt_folder(dst):
    folders = sorted(d for d in os.listdir(dst) if os.path.isdir(os.path.join(dst, d)))
    done = []

    def image(i):
        folder = os.path.join(dst, folders[i % len(folders)])
        names = sorted(os.listdir(folder))
        return os.path.join(folder, names[0])

    path = image(1)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    done.append((path, "truncated-jpeg"))

    path = image(3)
    os.remove(path)
    os.symlink(os.path.join(os.path.dirname(path), "no-such-file.jpg"), path)
    done.append((path, "dangling-symlink"))

    path = image(5)
    os.remove(path)
    os.mkfifo(path)
    done.append((path, "fifo"))

    path = image(7)
    open(path, "wb").write(bytes((i * 37 + 11) & 0xFF for i in range(3000)))
    done.append((path, "garbage"))

    path = image(9)
    open(path, "wb").close()
    done.append((path, "empty-file"))

    path = image(11)
    os.remove(path)
    path = path[:-len(".jpg")] + ".png"
    open(path, "wb").write(png(50, 50))
    done.append((path, "wrong-size-png"))
    for path, kind in done:
        print(f"{os.path.relpath(path, dst)}\t{kind}")


def flip(path, offset=None):
    size = os.path.getsize(path)
    offset = size // 2 if offset is None else offset
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    print(f"{path}: byte {offset} of {size} inverted")


def non_finite_in_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    n, = struct.unpack_from("<Q", blob, 0)
    header = json.loads(blob[8:8 + n])
    data = memoryview(blob)[8 + n:]
    problems = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        fmt = {"F32": "f", "F64": "d"}.get(entry["dtype"])
        if fmt is None or end == start:
            continue
        values = data[start:end].cast(fmt)
        # A sum is finite when every term is (these tensors are far from overflowing); only a
        # non-finite sum needs the value-by-value count.
        if math.isfinite(sum(values)):
            continue
        bad = sum(1 for v in values if not math.isfinite(v))
        if bad:
            problems.append(f"{path}: {name}: {bad} non-finite values")
    return problems


def scan_finite(directories):
    problems = []
    files = 0
    for directory in directories:
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if name.endswith(".safetensors"):
                files += 1
                problems += non_finite_in_safetensors(path)
            elif name == "trainer_state.json":
                files += 1
                text = open(path).read()
                for word in ("NaN", "Infinity", "nan", "inf"):
                    if f": {word}" in text or f":{word}" in text:
                        problems.append(f"{path}: holds {word}")
    for p in problems:
        print(p)
    print(f"{files} files in {len(directories)} checkpoint(s): "
          + ("all values finite" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


def main(argv):
    if len(argv) >= 4 and argv[1] == "corrupt-rec":
        corrupt_rec(argv[2], argv[3])
    elif len(argv) >= 4 and argv[1] == "to-folder":
        to_folder(argv[2], argv[3])
    elif len(argv) >= 3 and argv[1] == "corrupt-folder":
        corrupt_folder(argv[2])
    elif len(argv) >= 3 and argv[1] == "flip":
        flip(argv[2], int(argv[3]) if len(argv) > 3 else None)
    elif len(argv) >= 3 and argv[1] == "scan-finite":
        return scan_finite(argv[2:])
    else:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
