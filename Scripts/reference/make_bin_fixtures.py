#!/usr/bin/env python3
"""Writes the InsightFace-style verification-set fixtures of Tests/DataPipelineTests/Fixtures/bin.

A verification set (lfw.bin, cfp_fp.bin, ...) is a pickle of (bins, issame_list): 2K encoded images in
consecutive pairs and K booleans. The files met in the wild were written in several ways, and each
fixture here reproduces one of them opcode for opcode:

  py2_list.bin        Python 2, protocol 2 (pickle.HIGHEST_PROTOCOL there): images as str
                      (BINSTRING), issame a list of bools. The InsightFace lfw/agedb packs.
  py2_numpy.bin       Python 2, protocol 2, images as numpy uint8 arrays of shape (n, 1) (what
                      cv2.imencode returns; InsightFace's cfp2pack.py stores those) and issame a numpy
                      bool array, both through numpy.core.multiarray._reconstruct.
  py2_protocol0.bin   Python 2, protocol 0 (the default there): STRING reprs, INT 01/00 booleans.
  py3_protocol0.bin   Python 3, protocols 0, 1 and 2: bytes travel as _codecs.encode(text, 'latin1').
  py3_protocol1.bin
  py3_numpy_p2.bin    Python 3 + numpy 2, protocol 2: issame a numpy bool array (numpy._core names).
  py3_list_p5.bin     Python 3, protocol 5 (pickle.HIGHEST_PROTOCOL): bytes and bools.
  py3_numpy_p5.bin    Python 3 + numpy, protocol 5: issame through numpy._core.numeric._frombuffer
                      with a BYTEARRAY8 buffer, as numpy writes it in band.
  wrong_size.bin      Protocol 4, one pair whose second image is 8x8 instead of 112x112.

Images are 112x112 RGB PNGs written here with zlib; pixel (x, y) of image k is
R = (2x + 17k) % 256, G = (2y + 31k) % 256, B = (x + y + 50k) % 256.

Only the standard library is needed. When numpy is importable, the numpy-style fixtures are also
loaded with pickle to check that they come back as real numpy arrays.

Usage: python3 Scripts/reference/make_bin_fixtures.py
"""

import pickle
import struct
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "Tests" / "DataPipelineTests" / "Fixtures" / "bin"
SIDE = 112


# ---------------------------------------------------------------- images

def png(width: int, height: int, k: int) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    raw = bytearray()
    for y in range(height):
        row = bytearray()
        for x in range(width):
            row += bytes(((2 * x + 17 * k) % 256, (2 * y + 31 * k) % 256, (x + y + 50 * k) % 256))
        # Sub filter: the constant steps of the gradients compress to almost nothing.
        filtered = bytearray(row[:3]) + bytearray((row[i] - row[i - 3]) & 0xFF for i in range(3, len(row)))
        raw += b"\x01" + filtered
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
            + chunk(b"IEND", b""))


IMAGES = [png(SIDE, SIDE, k) for k in range(4)]
ISSAME = [True, False]


# ---------------------------------------------------------------- a minimal pickle writer

class Writer:
    """Emits pickle opcodes by hand, with the memo bookkeeping of CPython's pickler."""

    def __init__(self, protocol: int):
        self.protocol = protocol
        self.out = bytearray()
        self.memo = {}

    def raw(self, data: bytes):
        self.out += data

    def put(self, key=None):
        index = len(self.memo)
        if key is not None:
            self.memo[key] = index
        else:
            self.memo[object()] = index
        if self.protocol >= 4:
            self.raw(b"\x94")
        elif self.protocol >= 1:
            self.raw(b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index))
        else:
            self.raw(b"p%d\n" % index)

    def get(self, key) -> bool:
        if key not in self.memo:
            return False
        index = self.memo[key]
        if self.protocol >= 1:
            self.raw(b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index))
        else:
            self.raw(b"g%d\n" % index)
        return True

    def proto(self):
        if self.protocol >= 2:
            self.raw(b"\x80" + bytes([self.protocol]))

    def global_(self, module: str, name: str):
        if self.get(("global", module, name)):
            return
        if self.protocol >= 4:
            self.unicode(module)
            self.unicode(name)
            self.raw(b"\x93")
        else:
            self.raw(b"c" + module.encode() + b"\n" + name.encode() + b"\n")
        self.put(("global", module, name))

    def py2_str(self, data: bytes, key=None):
        """A Python 2 str: SHORT_BINSTRING / BINSTRING, or a protocol-0 STRING repr."""
        if key is not None and self.get(key):
            return
        if self.protocol == 0:
            self.raw(b"S" + py2_repr(data) + b"\n")
        elif len(data) < 256:
            self.raw(b"U" + bytes([len(data)]) + data)
        else:
            self.raw(b"T" + struct.pack("<i", len(data)) + data)
        self.put(key)

    def unicode(self, text: str, key=None):
        if key is not None and self.get(key):
            return
        data = text.encode("utf-8", "surrogatepass")
        if self.protocol >= 4 and len(data) < 256:
            self.raw(b"\x8c" + bytes([len(data)]) + data)
        else:
            self.raw(b"X" + struct.pack("<I", len(data)) + data)
        self.put(key)

    def py3_bytes_p2(self, data: bytes):
        """How Python 3 pickles bytes under protocol 2: _codecs.encode(latin-1 text, 'latin1')."""
        self.global_("_codecs", "encode")
        self.unicode(data.decode("latin1"))
        self.unicode("latin1", key=("str", "latin1"))
        self.raw(b"\x86")  # TUPLE2
        self.put()
        self.raw(b"R")
        self.put()

    def small_int(self, n: int):
        self.raw(b"K" + bytes([n]) if 0 <= n < 256 else b"J" + struct.pack("<i", n))

    def bool_(self, flag: bool):
        self.raw(b"\x88" if flag else b"\x89")

    def dtype(self, module_descr: str, text, ints_as_bools: bool):
        """numpy.dtype(descr, 0, 1) with its BUILD state (3, '|', None, None, None, -1, -1, 0)."""
        if self.get(("dtype", module_descr)):
            return
        self.global_("numpy", "dtype")
        text(module_descr, ("str", module_descr))
        if ints_as_bools:
            self.raw(b"\x89\x88")  # Python 3 numpy passes False, True
        else:
            self.raw(b"K\x00K\x01")  # Python 2 numpy passes 0, 1
        self.raw(b"\x87")  # TUPLE3
        self.put()
        self.raw(b"R")
        self.put(("dtype", module_descr))
        self.raw(b"(")
        self.small_int(3)
        text("|", ("str", "|"))
        self.raw(b"NNN")
        self.raw(b"J" + struct.pack("<i", -1) + b"J" + struct.pack("<i", -1))
        self.small_int(0)
        self.raw(b"t")
        self.put()
        self.raw(b"b")

    def ndarray_reconstruct(self, multiarray: str, shape, descr: str, data: bytes, py2: bool):
        """numpy's ndarray.__reduce__: _reconstruct(ndarray, (0,), b'b') then BUILD with
        (1, shape, dtype, False, raw bytes)."""
        text = self.py2_str_text if py2 else self.unicode_text
        self.global_(multiarray, "_reconstruct")
        self.global_("numpy", "ndarray")
        if not self.get(("tuple", (0,))):
            self.small_int(0)
            self.raw(b"\x85")  # TUPLE1
            self.put(("tuple", (0,)))
        if py2:
            self.py2_str(b"b", key=("str", "b"))
        else:
            self.py3_bytes_p2(b"b")
        self.raw(b"\x87")
        self.put()
        self.raw(b"R")
        self.put()
        self.raw(b"(")
        self.small_int(1)
        for n in shape:
            self.small_int(n)
        self.raw({1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(shape)])
        self.put()
        self.dtype(descr, text, ints_as_bools=not py2)
        self.raw(b"\x89")  # not Fortran order
        if py2:
            self.py2_str(data)
        else:
            self.py3_bytes_p2(data)
        self.raw(b"t")
        self.put()
        self.raw(b"b")

    def py2_str_text(self, text: str, key):
        self.py2_str(text.encode(), key)

    def unicode_text(self, text: str, key):
        self.unicode(text, key)


def py2_repr(data: bytes) -> bytes:
    """Python 2's repr of a str, which protocol 0 writes for STRING."""
    quote = b'"' if b"'" in data and b'"' not in data else b"'"
    out = bytearray(quote)
    for byte in data:
        c = bytes([byte])
        if c == b"\\" or c == quote:
            out += b"\\" + c
        elif c == b"\t":
            out += b"\\t"
        elif c == b"\n":
            out += b"\\n"
        elif c == b"\r":
            out += b"\\r"
        elif byte < 0x20 or byte >= 0x7F:
            out += b"\\x%02x" % byte
        else:
            out += c
    return bytes(out + quote)


# ---------------------------------------------------------------- the fixtures

def py2_list() -> bytes:
    w = Writer(2)
    w.proto()
    w.raw(b"]")
    w.put()
    w.raw(b"(")
    for image in IMAGES:
        w.py2_str(image)
    w.raw(b"e")
    w.raw(b"]")
    w.put()
    w.raw(b"(")
    for flag in ISSAME:
        w.bool_(flag)
    w.raw(b"e")
    w.raw(b"\x86")
    w.put()
    w.raw(b".")
    return bytes(w.out)


def py2_numpy() -> bytes:
    w = Writer(2)
    w.proto()
    w.raw(b"]")
    w.put()
    w.raw(b"(")
    for image in IMAGES:
        w.ndarray_reconstruct("numpy.core.multiarray", (len(image), 1), "u1", image, py2=True)
    w.raw(b"e")
    w.ndarray_reconstruct("numpy.core.multiarray", (len(ISSAME),), "b1", bytes(ISSAME), py2=True)
    w.raw(b"\x86")
    w.put()
    w.raw(b".")
    return bytes(w.out)


def py2_protocol0() -> bytes:
    w = Writer(0)
    w.raw(b"(")  # the outer tuple
    w.raw(b"(l")
    w.put()
    for image in IMAGES:
        w.py2_str(image)
        w.raw(b"a")
    w.raw(b"(l")
    w.put()
    for flag in ISSAME:
        w.raw(b"I01\n" if flag else b"I00\n")
        w.raw(b"a")
    w.raw(b"t")
    w.put()
    w.raw(b".")
    return bytes(w.out)


def py3_numpy_p2() -> bytes:
    w = Writer(2)
    w.proto()
    w.raw(b"]")
    w.put()
    w.raw(b"(")
    for image in IMAGES:
        w.py3_bytes_p2(image)
    w.raw(b"e")
    w.ndarray_reconstruct("numpy._core.multiarray", (len(ISSAME),), "b1", bytes(ISSAME), py2=False)
    w.raw(b"\x86")
    w.put()
    w.raw(b".")
    return bytes(w.out)


def py3_numpy_p5() -> bytes:
    body = Writer(5)
    body.raw(b"]")
    body.put()
    body.raw(b"(")
    for image in IMAGES:
        body.raw(b"B" + struct.pack("<I", len(image)) + image)
        body.put()
    body.raw(b"e")
    # numpy's __reduce_ex__(5): _frombuffer(PickleBuffer(array), dtype, shape, order)
    body.global_("numpy._core.numeric", "_frombuffer")
    body.raw(b"(")
    data = bytes(ISSAME)
    body.raw(b"\x96" + struct.pack("<Q", len(data)) + data)  # BYTEARRAY8: a writable buffer in band
    body.put()
    body.dtype("b1", body.unicode_text, ints_as_bools=True)
    body.small_int(len(ISSAME))
    body.raw(b"\x85")
    body.put()
    body.unicode("C")
    body.raw(b"t")
    body.put()
    body.raw(b"R")
    body.put()
    body.raw(b"\x86")
    body.put()
    body.raw(b".")
    # One frame, as the pickler writes small payloads.
    return b"\x80\x05" + b"\x95" + struct.pack("<Q", len(body.out)) + bytes(body.out)


def write(name: str, data: bytes):
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / name).write_bytes(data)
    print(f"{name}: {len(data)} bytes")


def check(name: str, encoding: str, numpy_images: bool, numpy_issame: bool, pairs=ISSAME, images=IMAGES):
    with open(OUT / name, "rb") as f:
        bins, issame = pickle.load(f, encoding=encoding)
    try:
        import numpy as np
    except ImportError:
        np = None
    if numpy_images or numpy_issame:
        if np is None:
            print(f"  {name}: numpy not importable, numpy-type check skipped")
        else:
            if numpy_images:
                assert all(isinstance(b, np.ndarray) and b.dtype == np.uint8 for b in bins), name
            if numpy_issame:
                assert isinstance(issame, np.ndarray) and issame.dtype == np.bool_, (name, type(issame))
    as_bytes = [b.tobytes() if hasattr(b, "tobytes") else bytes(b) for b in bins]
    assert as_bytes == images, name
    assert [bool(x) for x in issame] == pairs, name


def main():
    write("py2_list.bin", py2_list())
    write("py2_numpy.bin", py2_numpy())
    write("py2_protocol0.bin", py2_protocol0())
    write("py3_protocol0.bin", pickle.dumps((IMAGES, ISSAME), protocol=0))
    write("py3_protocol1.bin", pickle.dumps((IMAGES, ISSAME), protocol=1))
    write("py3_numpy_p2.bin", py3_numpy_p2())
    write("py3_list_p5.bin", pickle.dumps((IMAGES, ISSAME), protocol=5))
    write("py3_numpy_p5.bin", py3_numpy_p5())
    small = png(8, 8, 1)
    write("wrong_size.bin", pickle.dumps(([IMAGES[0], small], [True]), protocol=4))

    # InsightFace's loader reads Python 2 files with encoding='bytes'.
    check("py2_list.bin", "bytes", False, False)
    check("py2_numpy.bin", "bytes", True, True)
    check("py2_protocol0.bin", "bytes", False, False)
    check("py3_protocol0.bin", "ASCII", False, False)
    check("py3_protocol1.bin", "ASCII", False, False)
    check("py3_numpy_p2.bin", "ASCII", False, True)
    check("py3_list_p5.bin", "ASCII", False, False)
    check("py3_numpy_p5.bin", "ASCII", False, True)
    check("wrong_size.bin", "ASCII", False, False, pairs=[True], images=[IMAGES[0], small])
    print("all fixtures load back with pickle")


if __name__ == "__main__":
    main()
