#!/usr/bin/env python3
"""Bit-exact comparison of two adaface-dist checkpoints (standard library only).

    python3 Scripts/checkpoint_compare.py CHECKPOINT_A CHECKPOINT_B [--skip-buffers]

Compares, tensor by tensor and byte for byte (never the manifests or timestamps):
  - backbone.safetensors (weights and BatchNorm buffers) and backbone_optimizer.safetensors (momentum);
  - the head: the shards' `kernel` and `momentum` concatenated in rank order, so checkpoints written
    by different rank counts compare (at the same rank count every shard is also compared alone);
  - trainer_state.json: step, epoch, position in the epoch, samples seen, seed, classes, counters and
    the exact bits of the norm EMA (mean, std) and of the learning rate.
Prints one line per difference and exits 1 if there is any, 0 if the checkpoints are identical.
"""
import json
import os
import struct
import sys

HEAD_PREFIX = "head-rank"


def read_safetensors(path):
    """{name: (dtype, shape, bytes)} and the metadata of an uncompressed safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: shorter than a safetensors header")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise ValueError(f"{path}: header length {n} exceeds the file (compressed checkpoint?)")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = memoryview(blob)[8 + n:]
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        if not (0 <= start <= end <= len(data)):
            raise ValueError(f"{path}: tensor {name} has offsets {start}..{end} outside the data")
        tensors[name] = (entry["dtype"], tuple(entry["shape"]), bytes(data[start:end]))
    return tensors, metadata


def differing_elements(a, b, width):
    if len(a) != len(b):
        return None
    return sum(1 for i in range(0, len(a), width) if a[i:i + width] != b[i:i + width])


def compare_tensors(label, ta, tb, problems):
    for name in sorted(set(ta) | set(tb)):
        if name not in ta or name not in tb:
            problems.append(f"{label}: tensor {name} only in {'A' if name in ta else 'B'}")
            continue
        (da, sa, ba), (db, sb, bb) = ta[name], tb[name]
        if (da, sa) != (db, sb):
            problems.append(f"{label}: {name}: {da}{list(sa)} vs {db}{list(sb)}")
        elif ba != bb:
            width = 8 if da in ("I64", "F64") else 4
            n = differing_elements(ba, bb, width)
            problems.append(f"{label}: {name}: {n} of {len(ba) // width} elements differ")


def head_shards(directory):
    names = sorted(n for n in os.listdir(directory) if n.startswith(HEAD_PREFIX) and n.endswith(".safetensors"))
    if not names:
        raise ValueError(f"{directory}: no head shards")
    return names


def concatenated_head(directory):
    """{tensor: (dtype, rows, cols, bytes)} over the shards in rank order."""
    out = {}
    for name in head_shards(directory):
        tensors, _ = read_safetensors(os.path.join(directory, name))
        for key in ("kernel", "momentum"):
            if key not in tensors:
                raise ValueError(f"{directory}/{name}: no '{key}' tensor")
            dtype, shape, raw = tensors[key]
            rows, cols = shape if len(shape) == 2 else (shape[0] if shape else 0, 0)
            if key in out:
                d0, r0, c0, b0 = out[key]
                if (d0, c0) != (dtype, cols):
                    raise ValueError(f"{directory}/{name}: {key} is {dtype}×{cols}, earlier shards {d0}×{c0}")
                out[key] = (dtype, r0 + rows, cols, b0 + raw)
            else:
                out[key] = (dtype, rows, cols, raw)
    return out


STATE_FIELDS = ["global_step", "epoch", "epoch_samples_consumed", "samples_seen", "seed", "total_classes",
                "embedding_size", "global_batch", "counters"]
BIT_FIELDS = ["norm_ema_mean", "norm_ema_std", "learning_rate"]


def compare(a, b, skip_buffers=False):
    problems = []
    for file in ("backbone.safetensors", "backbone_optimizer.safetensors"):
        ta, _ = read_safetensors(os.path.join(a, file))
        tb, _ = read_safetensors(os.path.join(b, file))
        if skip_buffers:
            for t in (ta, tb):
                for name in [n for n in t if n.endswith(("running_mean", "running_var", "num_batches_tracked"))]:
                    del t[name]
        compare_tensors(file, ta, tb, problems)

    sa = json.load(open(os.path.join(a, "trainer_state.json")))
    sb = json.load(open(os.path.join(b, "trainer_state.json")))
    for field in STATE_FIELDS:
        if sa.get(field) != sb.get(field):
            problems.append(f"trainer_state: {field}: {sa.get(field)!r} vs {sb.get(field)!r}")
    for field in BIT_FIELDS:
        ba, bb = (sa.get(field) or {}).get("bits"), (sb.get(field) or {}).get("bits")
        if ba is None or ba != bb:
            problems.append(f"trainer_state: {field} bits: {ba} vs {bb}")

    ha, hb = concatenated_head(a), concatenated_head(b)
    for key in ("kernel", "momentum"):
        da, ra, ca, ba = ha[key]
        db, rb, cb, bb = hb[key]
        if (da, ra, ca) != (db, rb, cb):
            problems.append(f"head {key}: {da}[{ra},{ca}] vs {db}[{rb},{cb}]")
        elif ba != bb:
            n = differing_elements(ba, bb, 4)
            problems.append(f"head {key} (shards concatenated): {n} of {ra * ca} elements differ")
    if sa.get("world_size") == sb.get("world_size"):
        for name in head_shards(a):
            ta, _ = read_safetensors(os.path.join(a, name))
            pb = os.path.join(b, name)
            if not os.path.exists(pb):
                problems.append(f"{name}: missing in B")
                continue
            tb, _ = read_safetensors(pb)
            compare_tensors(name, ta, tb, problems)
    return problems, sa.get("world_size"), sb.get("world_size")


def main(argv):
    args = [x for x in argv[1:] if not x.startswith("--")]
    flags = [x for x in argv[1:] if x.startswith("--")]
    if len(args) != 2 or any(f not in ("--skip-buffers",) for f in flags):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        problems, pa, pb = compare(args[0], args[1], skip_buffers="--skip-buffers" in flags)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
        print(f"error: {error}")
        return 2
    for p in problems:
        print(p)
    if problems:
        print(f"DIFFERENT ({len(problems)} difference(s); world sizes {pa} and {pb})")
        return 1
    print(f"IDENTICAL (world sizes {pa} and {pb})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
