#!/usr/bin/env python3
"""Check the Swift IResNet backbone of adaface-dist against the PyTorch reference.

The Swift side writes a "parity dump" with

    adaface-dist parity-dump --arch ir18 --batch 4 --seed 1 --out DIR

containing weights.safetensors, input.npy, upstream.npy, eval_embeddings.npy, eval_norms.npy,
train_embeddings.npy, train_norms.npy, grads.safetensors and running_stats_after.safetensors
(see Scripts/parity/README.md). This script loads the same weights strictly into the PyTorch
reference (Scripts/reference/iresnet_torch.py), recomputes everything in float64 and compares:

- eval-mode embeddings (cosine per row) and norms (relative error per row);
- train-mode embeddings and norms (batch statistics, dropout p = 0);
- the gradient of loss = sum(train_embedding * upstream) for every trainable parameter,
  ||g_swift - g_torch|| / ||g_torch|| per tensor;
- the BatchNorm running statistics after that one train-mode forward (momentum 0.1, unbiased
  running variance), as the relative error of the update.

Some parameters have an analytically zero gradient in train mode: a per-channel constant added to a
tensor whose only consumers are batch-statistics BatchNorms (directly, or through max-pool and 1x1-conv
shortcuts) cancels exactly. In IResNet that holds for every res_layer.5 bias, every shortcut BN bias,
output_layer.0.bias and output_layer.3.bias. A relative error is meaningless there, so those
tensors are checked as ||g_swift|| <= tol * ||gradient of the weight of the same layer||.

PReLU kinks: a float32 forward pass can put a PReLU input that lies within ~1e-6 of the activation
scale from 0 on the other side of the kink, and that one element then moves every earlier gradient by
about 1e-3 relative (seen with PyTorch float32 itself at IR-50 batch 4 and IR-18 batch 8). Both are
valid derivatives. Before the gradients are compared, the reference takes the implementation's branch
at such inputs: the flips are identified from the gradient of the BatchNorm that feeds each PReLU,
layer by layer from the output, and their effect is added exactly (kink_correct below). The output
lists every matched flip and the error before the match; --no-kink-correction turns it off.

The batch must be at least 3: with 2 samples the final train-mode BatchNorm1d maps every feature to
+-1 and its gradient comes only from eps, which float32 cannot resolve.

Usage:

    python3 Scripts/parity/check_parity.py --binary PATH/adaface-dist --arch ir18 [--batch 4] [--seed 1] [--keep DIR]
    python3 Scripts/parity/check_parity.py --dump DIR --arch ir18      # an existing dump
    python3 Scripts/parity/check_parity.py --self-test                 # fake dumps made with PyTorch

The last line is "parity: PASS" (exit code 0) or "parity: FAIL (reasons)" (exit code 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
from iresnet_torch import build_model, canonical_arch  # noqa: E402

DUMP_FILES = [
    "weights.safetensors",
    "input.npy",
    "upstream.npy",
    "eval_embeddings.npy",
    "eval_norms.npy",
    "train_embeddings.npy",
    "train_norms.npy",
    "grads.safetensors",
    "running_stats_after.safetensors",
]
EMBEDDING_SIZE = 512
MIN_BATCH = 3
BATCH_NOTE = ("with 2 samples, train-mode BatchNorm1d maps every feature to +-1 and its gradient comes only "
              "from eps, which is ill-conditioned in float32")


@dataclass
class Tolerances:
    cosine_min: float = 0.9999
    norm_rtol: float = 1e-4
    grad_rtol: float = 1e-3
    zero_grad_tol: float = 1e-4
    stats_rtol: float = 1e-3
    # A reference gradient this small relative to its layer's weight gradient is analytically zero.
    zero_grad_classify: float = 1e-10
    # PReLU inputs within kink_tau * rms of 0 may fall on the other side of the kink in float32.
    kink_tau: float = 5e-5
    # Match the implementation's PReLU branch at those inputs before comparing gradients.
    kink_correction: bool = True
    # Residuals of a BN bias gradient below kink_noise * its norm are float32 noise, not kink flips.
    kink_noise: float = 1e-4


@dataclass
class Report:
    rows: List[Tuple[str, str, str, bool]] = field(default_factory=list)
    details: List[str] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)

    def add(self, name: str, value: str, threshold: str, ok: bool, failure: Optional[str] = None) -> None:
        self.rows.append((name, value, threshold, ok))
        if not ok:
            self.failures.append(failure or name)

    def fail(self, reason: str, detail_lines: List[str] = ()) -> None:
        self.failures.append(reason)
        self.details.extend(detail_lines)

    def print_table(self) -> None:
        if self.rows:
            w0 = max(len(r[0]) for r in self.rows)
            w1 = max(len(r[1]) for r in self.rows)
            w2 = max(len(r[2]) for r in self.rows)
            print(f"{'check':{w0}s}  {'value':{w1}s}  {'threshold':{w2}s}  result")
            print("-" * (w0 + w1 + w2 + 14))
            for name, value, threshold, ok in self.rows:
                print(f"{name:{w0}s}  {value:{w1}s}  {threshold:{w2}s}  {'ok' if ok else 'FAIL'}")
        for line in self.details:
            print(line)

    def verdict(self) -> bool:
        if self.failures:
            print(f"parity: FAIL ({'; '.join(self.failures)})")
            return False
        print("parity: PASS")
        return True


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------

def read_safetensors(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    tensors: Dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        for key in f.keys():
            tensors[key] = f.get_tensor(key)
    return tensors, metadata


def read_npy(path: Path, shapes: List[Tuple[int, ...]], report: Report) -> Optional[np.ndarray]:
    array = np.load(path, allow_pickle=False)
    if array.dtype != np.float32:
        report.fail(f"{path.name} has dtype {array.dtype}, expected float32")
        return None
    if tuple(array.shape) not in shapes:
        report.fail(f"{path.name} has shape {tuple(array.shape)}, expected {' or '.join(map(str, shapes))}")
        return None
    return array


def key_diff_lines(title: str, missing: List[str], unexpected: List[str], limit: int = 40) -> List[str]:
    lines = []
    if missing:
        lines.append(f"{title}: {len(missing)} missing key(s):")
        lines += [f"    missing     {k}" for k in missing[:limit]]
        if len(missing) > limit:
            lines.append(f"    ... and {len(missing) - limit} more")
    if unexpected:
        lines.append(f"{title}: {len(unexpected)} unexpected key(s):")
        lines += [f"    unexpected  {k}" for k in unexpected[:limit]]
        if len(unexpected) > limit:
            lines.append(f"    ... and {len(unexpected) - limit} more")
    return lines


def load_weights_strict(model: nn.Module, arch: str, path: Path, report: Report) -> bool:
    """Load weights.safetensors into the model; every key, shape and dtype must match exactly."""
    tensors, metadata = read_safetensors(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    problems: List[str] = []
    for k, ref in expected.items():
        if k not in tensors:
            continue
        t = tensors[k]
        if tuple(t.shape) != tuple(ref.shape):
            problems.append(f"    shape {k}: {tuple(t.shape)} expected {tuple(ref.shape)}")
        want = torch.int64 if k.endswith("num_batches_tracked") else torch.float32
        if t.dtype != want:
            problems.append(f"    dtype {k}: {t.dtype} expected {want}")
    if missing or unexpected or problems:
        lines = key_diff_lines("weights.safetensors", missing, unexpected)
        if problems:
            lines = lines + ["weights.safetensors: shape/dtype mismatches:"] + problems[:40]
        report.fail(f"weights.safetensors does not match the {arch} state_dict "
                    f"({len(missing)} missing, {len(unexpected)} unexpected, {len(problems)} shape/dtype)",
                    lines)
        return False
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        report.fail("strict load_state_dict failed", [str(err)])
        return False
    if metadata.get("arch") and canonical_arch(metadata["arch"]) != arch:
        report.fail(f"weights.safetensors metadata says arch {metadata['arch']}, checking {arch}")
        return False
    return True


# ----------------------------------------------------------------------------------------------------
# Reference computation (float64)
# ----------------------------------------------------------------------------------------------------

def batchnorm_modules(model: nn.Module) -> Dict[str, nn.modules.batchnorm._BatchNorm]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def compute_reference(model: nn.Module, x: np.ndarray, upstream: np.ndarray) -> dict:
    """Eval and train forward, train backward, running stats after, all in float64.

    The autograd graph of the train step is kept (with every PReLU input and the gradient arriving
    at its output) for the PReLU-kink correction.
    """
    model = model.double()
    xin = torch.from_numpy(x).double()
    up = torch.from_numpy(upstream).double()
    before = {f"{n}.{s}": getattr(m, s).detach().clone()
              for n, m in batchnorm_modules(model).items() for s in ("running_mean", "running_var",
                                                                      "num_batches_tracked")}
    model.eval()
    with torch.no_grad():
        eval_emb, eval_norm = model(xin)
    model.train()
    model.dropout.p = 0.0
    model.zero_grad(set_to_none=True)

    prelu_records: List[dict] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.PReLU):
            def hook(mod, inputs, output, name=name):
                record = {"name": name, "module": mod, "input": inputs[0]}

                def keep_grad(g: torch.Tensor, record=record) -> None:
                    # Keep the gradient of the loss only: later backward passes through the graph (the
                    # kink correction) fire this hook too. Returns None so the gradient is unchanged.
                    if "grad_out" not in record:
                        record["grad_out"] = g.detach()

                output.register_hook(keep_grad)
                prelu_records.append(record)
            handles.append(module.register_forward_hook(hook))
    try:
        train_emb, train_norm = model(xin)
    finally:
        for h in handles:
            h.remove()
    loss = (train_emb * up).sum()
    loss.backward(retain_graph=True)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    after = {f"{n}.{s}": getattr(m, s).detach().clone()
             for n, m in batchnorm_modules(model).items() for s in ("running_mean", "running_var",
                                                                     "num_batches_tracked")}
    return {
        "eval_emb": eval_emb.detach(), "eval_norm": eval_norm.detach()[:, 0],
        "train_emb": train_emb.detach(), "train_norm": train_norm.detach()[:, 0],
        "grads": grads, "before": before, "after": after, "loss": loss.item(),
        "model": model, "prelu_records": prelu_records,
    }


def preceding_bn_bias(prelu_name: str) -> str:
    """The BN whose output feeds a PReLU: input_layer.1 for input_layer.2, res_layer.2 for res_layer.3."""
    parent, index = prelu_name.rsplit(".", 1)
    return f"{parent}.{int(index) - 1}.bias"


def best_subset(target: float, deltas: List[float]) -> List[int]:
    """Indices of the subset of deltas whose sum is closest to target (empty when nothing helps)."""
    k = len(deltas)
    if k <= 12:
        values = np.array(deltas)
        masks = (np.arange(1 << k)[:, None] >> np.arange(k)[None, :]) & 1
        sums = masks @ values
        best = int(np.argmin(np.abs(target - sums) + 1e-300 * masks.sum(axis=1)))
        return [i for i in range(k) if masks[best, i]]
    chosen: List[int] = []
    remaining = target
    for i in sorted(range(k), key=lambda j: -abs(deltas[j])):
        if abs(remaining - deltas[i]) < abs(remaining):
            chosen.append(i)
            remaining -= deltas[i]
    return chosen


def kink_correct(reference: dict, swift: Dict[str, torch.Tensor], tol: Tolerances
                 ) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Reference gradients with the PReLU branch matched to the implementation under test.

    PReLU is not differentiable at 0 (derivative 1 for x > 0, the slope a below). A float32 forward
    pass differs from the float64 one by about 1e-6 of the activation scale, so an input that close to
    0 can land on the other side of the kink. Its backward then passes (1 - a) * g more or less at that
    single element, and the difference reaches every earlier parameter gradient: about 1e-3 relative
    per flipped element in a deep layer (one element of 10^5-10^6). Both results are valid derivatives
    of the network; they differ in the branch taken at the kink.

    The candidates are reference PReLU inputs with |x| < kink_tau * rms(x) of their layer. A flip of
    candidate i (channel c) changes the gradient at the PReLU input by a known delta_i = +-(1 - a_c) g_i,
    so the gradient of the BatchNorm that feeds the PReLU changes by exactly delta_i in bias[c]; flips in
    later layers are accounted for first. Walking the PReLU layers from the last to the first, the
    per-channel residual of that BN bias gradient picks the subset of candidates that flipped; their
    effect on every earlier parameter is then added exactly (one backward pass per layer with flips).
    """
    records = reference["prelu_records"]
    model = reference["model"]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    corrected = {k: v.clone() for k, v in reference["grads"].items()}
    info = {"candidates": 0, "elements": 0, "flips": [], "layers": 0}
    for record in reversed(records):
        xin = record["input"]
        info["elements"] += xin.numel()
        if "grad_out" not in record:
            continue
        xd = xin.detach()
        rms = xd.pow(2).mean().sqrt()
        mask = xd.abs() < tol.kink_tau * rms
        count = int(mask.sum())
        info["candidates"] += count
        bias_key = preceding_bn_bias(record["name"])
        if count == 0 or bias_key not in swift or bias_key not in corrected:
            continue
        slope = record["module"].weight.detach()
        per_channel = slope.numel() > 1
        residual = (swift[bias_key].double() - corrected[bias_key])
        positions = mask.nonzero(as_tuple=False)
        by_channel: Dict[int, List[Tuple[Tuple[int, ...], float]]] = {}
        for pos in positions.tolist():
            c = pos[1]
            a = float(slope[c] if per_channel else slope[0])
            g = float(record["grad_out"][tuple(pos)])
            # x <= 0 takes slope a; a flip to the positive side takes 1: the gradient grows by (1 - a) g.
            delta = (1.0 - a) * g if float(xd[tuple(pos)]) <= 0 else (a - 1.0) * g
            by_channel.setdefault(c, []).append((tuple(pos), delta))
        injection = torch.zeros_like(xd)
        flipped = 0
        # Float32 noise in the BN bias gradient (about 1e-6 relative) must not be "explained" by flips.
        noise = tol.kink_noise * float(corrected[bias_key].norm())
        for c, items in by_channel.items():
            target = float(residual[c])
            if abs(target) <= noise:
                continue
            chosen = best_subset(target, [d for _, d in items])
            explained = sum(items[i][1] for i in chosen)
            if not chosen or abs(target - explained) > 0.5 * abs(target):
                continue
            for i in chosen:
                injection[items[i][0]] = items[i][1]
                info["flips"].append((record["name"], items[i][0], float(xd[items[i][0]]), items[i][1]))
            flipped += len(chosen)
        if flipped:
            info["layers"] += 1
            effects = torch.autograd.grad([xin], params, grad_outputs=[injection], retain_graph=True,
                                          allow_unused=True)
            for n, e in zip(names, effects):
                if e is not None:
                    corrected[n] += e
    return corrected, info


# ----------------------------------------------------------------------------------------------------
# Comparisons
# ----------------------------------------------------------------------------------------------------

def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    a = a.double()
    ref = ref.double()
    denom = float(ref.norm())
    diff = float((a - ref).norm())
    if denom == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / denom


def compare_outputs(label: str, emb: np.ndarray, norms: np.ndarray, ref_emb: torch.Tensor,
                    ref_norm: torch.Tensor, tol: Tolerances, report: Report) -> None:
    e = torch.from_numpy(emb).double()
    n = torch.from_numpy(norms).double().reshape(-1)
    if not (torch.isfinite(e).all() and torch.isfinite(n).all()):
        report.add(f"{label} outputs finite", "NaN/Inf", "finite", False, f"{label} outputs not finite")
        return
    cos = torch.nn.functional.cosine_similarity(e, ref_emb, dim=1)
    cmin = float(cos.min())
    report.add(f"{label} embedding cosine (min over {len(cos)} rows)", f"{cmin:.9f}",
               f"> {tol.cosine_min}", cmin > tol.cosine_min, f"{label} embedding cosine {cmin:.6f}")
    nerr = float(((n - ref_norm).abs() / ref_norm.abs()).max())
    report.add(f"{label} norm rel. error (max)", f"{nerr:.3e}", f"< {tol.norm_rtol:g}",
               nerr < tol.norm_rtol, f"{label} norm rel. error {nerr:.2e}")


def companion_weight(name: str) -> str:
    return name.rsplit(".", 1)[0] + ".weight"


def compare_grads(path: Path, reference: dict, tol: Tolerances, report: Report) -> None:
    raw_ref: Dict[str, torch.Tensor] = reference["grads"]
    grads, _ = read_safetensors(path)
    missing = [k for k in raw_ref if k not in grads]
    unexpected = [k for k in grads if k not in raw_ref]
    if missing or unexpected:
        report.fail(f"grads.safetensors keys ({len(missing)} missing, {len(unexpected)} unexpected)",
                    key_diff_lines("grads.safetensors", missing, unexpected))
    bad: List[str] = []
    usable: Dict[str, torch.Tensor] = {}
    for k, g_ref in raw_ref.items():
        if k not in grads:
            continue
        g = grads[k]
        if tuple(g.shape) != tuple(g_ref.shape) or g.dtype != torch.float32:
            bad.append(f"    {k}: {g.dtype} {tuple(g.shape)} expected float32 {tuple(g_ref.shape)}")
        elif not torch.isfinite(g).all():
            bad.append(f"    {k}: contains NaN/Inf")
        else:
            usable[k] = g
    if bad:
        report.fail(f"grads.safetensors: {len(bad)} tensor(s) with wrong shape/dtype or non-finite",
                    ["grads.safetensors problems:"] + bad[:40])

    if tol.kink_correction:
        ref, info = kink_correct(reference, usable, tol)
    else:
        ref, info = raw_ref, None

    ordinary: List[Tuple[float, str, float, float]] = []
    zero: List[Tuple[float, str]] = []
    for k, g in usable.items():
        g_ref = ref[k]
        ref_norm = float(g_ref.norm())
        scale_key = companion_weight(k)
        scale = float(ref[scale_key].norm()) if scale_key in ref and scale_key != k else 0.0
        if scale > 0 and ref_norm <= tol.zero_grad_classify * scale:
            zero.append((float(g.double().norm()) / scale, k))
        else:
            ordinary.append((rel_err(g, g_ref), k, ref_norm, rel_err(g, raw_ref[k])))
    ordinary.sort(reverse=True)
    if ordinary:
        worst, worst_key, _, _ = ordinary[0]
        over = [k for e, k, _, _ in ordinary if not e < tol.grad_rtol]
        raw_worst = max(ordinary, key=lambda t: t[3])
        if info is not None:
            report.add("gradient rel. error before the PReLU-kink match (worst)",
                       f"{raw_worst[3]:.3e} ({raw_worst[1]})", "(info)", True)
        report.add(f"gradient rel. error (worst of {len(ordinary)} tensors)", f"{worst:.3e} ({worst_key})",
                   f"< {tol.grad_rtol:g}", not over,
                   f"{len(over)} gradient(s) over tolerance, worst {worst_key} {worst:.2e}")
        report.details.append("worst gradients  ||g_swift - g_torch|| / ||g_torch||"
                              + ("  [before the PReLU-kink match]" if info is not None else "") + ":")
        for e, k, n, raw in ordinary[:5]:
            extra = f"  [{raw:.3e}]" if info is not None else ""
            report.details.append(f"    {e:.3e}{extra}  {k}  (||g_torch|| = {n:.4e})")
    if zero:
        zero.sort(reverse=True)
        worst, worst_key = zero[0]
        over = [k for e, k in zero if not e <= tol.zero_grad_tol]
        report.add(f"zero-reference gradients ({len(zero)} tensors) ||g||/||g_weight||",
                   f"{worst:.3e} ({worst_key})", f"<= {tol.zero_grad_tol:g}", not over,
                   f"{len(over)} analytically-zero gradient(s) not ~0, worst {worst_key} {worst:.2e}")
    checked = len(ordinary) + len(zero)
    report.details.append(f"gradients checked: {checked} of {len(raw_ref)} trainable tensors "
                          f"({len(ordinary)} by relative error, {len(zero)} analytically zero in train mode)")
    if info is not None:
        report.details.append(
            f"PReLU kink: {info['candidates']} of {info['elements']} PReLU inputs lie within {tol.kink_tau:g}*rms "
            f"of 0; {len(info['flips'])} of them matched as taking the other branch "
            f"(reference corrected exactly, {info['layers']} layer(s))")
        for name, pos, xval, delta in info["flips"][:10]:
            report.details.append(f"    {name} {list(pos)}: x_ref = {xval:+.3e}, gradient change {delta:+.3e}")
        if len(info["flips"]) > 10:
            report.details.append(f"    ... and {len(info['flips']) - 10} more")


def compare_running_stats(path: Path, before: Dict[str, torch.Tensor], after: Dict[str, torch.Tensor],
                          tol: Tolerances, report: Report) -> None:
    stats, _ = read_safetensors(path)
    required = [k for k in after if not k.endswith("num_batches_tracked")]
    optional = [k for k in after if k.endswith("num_batches_tracked")]
    missing = [k for k in required if k not in stats]
    unexpected = [k for k in stats if k not in required and k not in optional]
    if missing or unexpected:
        report.fail(f"running_stats_after.safetensors keys ({len(missing)} missing, {len(unexpected)} unexpected)",
                    key_diff_lines("running_stats_after.safetensors", missing, unexpected))
    errors: List[Tuple[float, str, float]] = []
    bad: List[str] = []
    for k in required:
        if k not in stats:
            continue
        s = stats[k]
        if tuple(s.shape) != tuple(after[k].shape) or s.dtype != torch.float32 or not torch.isfinite(s).all():
            bad.append(f"    {k}: {s.dtype} {tuple(s.shape)} (expected finite float32 {tuple(after[k].shape)})")
            continue
        t = after[k]
        update = float((t - before[k]).norm())
        # Error relative to the size of the update (floored at 1e-3 of the value, for near-zero updates).
        denom = max(update, 1e-3 * float(t.norm()))
        err = float((s.double() - t).norm()) / denom if denom > 0 else float((s.double() - t).norm())
        errors.append((err, k, rel_err(s, t)))
    for k in optional:
        if k in stats:
            if stats[k].dtype != torch.int64 or int(stats[k]) != int(after[k]):
                bad.append(f"    {k}: {stats[k].dtype} {stats[k].tolist()} expected int64 {int(after[k])}")
    if bad:
        report.fail(f"running_stats_after.safetensors: {len(bad)} bad tensor(s)",
                    ["running_stats_after.safetensors problems:"] + bad[:40])
    if errors:
        errors.sort(reverse=True)
        worst, worst_key, _ = errors[0]
        over = [k for e, k, _ in errors if not e < tol.stats_rtol]
        report.add(f"running stats update rel. error (worst of {len(errors)})", f"{worst:.3e} ({worst_key})",
                   f"< {tol.stats_rtol:g}", not over,
                   f"{len(over)} running stat(s) over tolerance, worst {worst_key} {worst:.2e}")
        vmax = max(v for _, _, v in errors)
        report.details.append(f"running stats: worst value rel. error {vmax:.3e}; worst update rel. errors:")
        for e, k, v in errors[:5]:
            report.details.append(f"    {e:.3e}  {k}  (value rel. error {v:.2e})")


def check_dump(dump: Path, arch: str, tol: Tolerances) -> bool:
    """Compare a dump directory against the float64 PyTorch reference; prints the report."""
    report = Report()
    arch = canonical_arch(arch)
    absent = [f for f in DUMP_FILES if not (dump / f).is_file()]
    if absent:
        report.fail(f"dump is missing {', '.join(absent)}")
        report.print_table()
        return report.verdict()

    torch.manual_seed(0)
    model = build_model(arch)
    if not load_weights_strict(model, arch, dump / "weights.safetensors", report):
        report.print_table()
        return report.verdict()

    bns = batchnorm_modules(model)
    trivial = [name for name, m in bns.items()
               if bool((m.running_mean == 0).all()) and bool((m.running_var == 1).all())]
    report.add("BN layers with non-trivial running stats in weights", f"{len(bns) - len(trivial)} of {len(bns)}",
               "all", not trivial,
               f"{len(trivial)} BN layer(s) in weights.safetensors keep the default running stats (mean 0, var 1)"
               f"{', e.g. ' + trivial[0] if trivial else ''}; the eval check needs non-trivial ones")

    x = np.load(dump / "input.npy", allow_pickle=False)
    if x.dtype != np.float32 or x.ndim != 4 or tuple(x.shape[1:]) != (3, 112, 112):
        report.fail(f"input.npy is {x.dtype} {tuple(x.shape)}, expected float32 (B,3,112,112)")
        report.print_table()
        return report.verdict()
    b = x.shape[0]
    if b < MIN_BATCH:
        report.fail(f"batch must be at least {MIN_BATCH}: {BATCH_NOTE}")
        report.print_table()
        return report.verdict()
    arrays = {}
    for name, shapes in [("upstream", [(b, EMBEDDING_SIZE)]),
                         ("eval_embeddings", [(b, EMBEDDING_SIZE)]), ("eval_norms", [(b,), (b, 1)]),
                         ("train_embeddings", [(b, EMBEDDING_SIZE)]), ("train_norms", [(b,), (b, 1)])]:
        arrays[name] = read_npy(dump / f"{name}.npy", shapes, report)
    if any(a is None for a in arrays.values()):
        report.print_table()
        return report.verdict()

    print(f"reference: PyTorch {torch.__version__}, computed in float64 (model and input cast to double); "
          f"arch {arch}, batch {b}, input range [{float(x.min()):.3f}, {float(x.max()):.3f}]")
    started = time.perf_counter()
    ref = compute_reference(model, x, arrays["upstream"])
    print(f"reference computed in {time.perf_counter() - started:.1f} s (loss = {ref['loss']:.6f})\n")

    compare_outputs("eval", arrays["eval_embeddings"], arrays["eval_norms"], ref["eval_emb"], ref["eval_norm"],
                    tol, report)
    compare_outputs("train", arrays["train_embeddings"], arrays["train_norms"], ref["train_emb"],
                    ref["train_norm"], tol, report)
    compare_grads(dump / "grads.safetensors", ref, tol, report)
    compare_running_stats(dump / "running_stats_after.safetensors", ref["before"], ref["after"], tol, report)
    report.print_table()
    return report.verdict()


# ----------------------------------------------------------------------------------------------------
# Running the Swift dump
# ----------------------------------------------------------------------------------------------------

def run_swift_dump(binary: str, arch: str, batch: int, seed: int, out: Path, timeout: Optional[float]) -> bool:
    cmd = [binary, "parity-dump", "--arch", arch, "--batch", str(batch), "--seed", str(seed), "--out", str(out)]
    print(f"$ {shlex.join(cmd)}", flush=True)
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except FileNotFoundError:
        print(f"cannot run {binary}: not found")
        return False
    except subprocess.TimeoutExpired:
        print(f"parity-dump did not finish within {timeout} s")
        return False
    output = proc.stdout.strip()
    if output:
        print("\n".join("  | " + line for line in output.splitlines()[-30:]))
    print(f"parity-dump exited with {proc.returncode} after {time.perf_counter() - started:.1f} s\n")
    return proc.returncode == 0


# ----------------------------------------------------------------------------------------------------
# Self-test with fake dumps made by PyTorch in float32
# ----------------------------------------------------------------------------------------------------

def make_fake_dump(out: Path, arch: str, batch: int, seed: int) -> None:
    """Write a dump exactly as the Swift side should, but computed by PyTorch in float32."""
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_model(arch)
    with torch.no_grad():
        # Non-trivial affine parameters and PReLU slopes, and running statistics from a few
        # train-mode passes over random data (so eval mode differs from train mode).
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.mul_(1 + 0.1 * torch.randn(m.weight.shape, generator=gen))
                m.bias.add_(0.1 * torch.randn(m.bias.shape, generator=gen))
            elif isinstance(m, nn.PReLU):
                m.weight.add_(0.05 * torch.randn(m.weight.shape, generator=gen))
        model.train()
        for _ in range(3):
            model(torch.rand(max(batch, 2), 3, 112, 112, generator=gen) * 2 - 1)
    weights = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(out / "weights.safetensors"), metadata={"arch": arch, "source": "pytorch-self-test"})

    x = torch.rand(batch, 3, 112, 112, generator=gen) * 2 - 1
    upstream = torch.randn(batch, EMBEDDING_SIZE, generator=gen)
    np.save(out / "input.npy", x.numpy().astype(np.float32))
    np.save(out / "upstream.npy", upstream.numpy().astype(np.float32))

    model.eval()
    with torch.no_grad():
        e, n = model(x)
    np.save(out / "eval_embeddings.npy", e.numpy().astype(np.float32))
    np.save(out / "eval_norms.npy", n[:, 0].numpy().astype(np.float32))

    model.train()
    model.dropout.p = 0.0
    e, n = model(x)
    (e * upstream).sum().backward()
    np.save(out / "train_embeddings.npy", e.detach().numpy().astype(np.float32))
    np.save(out / "train_norms.npy", n.detach()[:, 0].numpy().astype(np.float32))
    grads = {k: p.grad.detach().clone().contiguous() for k, p in model.named_parameters() if p.requires_grad}
    save_file(grads, str(out / "grads.safetensors"))
    stats = {}
    for name, m in batchnorm_modules(model).items():
        stats[f"{name}.running_mean"] = m.running_mean.detach().clone()
        stats[f"{name}.running_var"] = m.running_var.detach().clone()
    save_file(stats, str(out / "running_stats_after.safetensors"))


def write_kink_flipped_grads(dump: Path, arch: str, tol: Tolerances) -> str:
    """Replace grads.safetensors by float64 gradients in which one PReLU input near 0 takes the other branch.

    Picks, among reference PReLU inputs within kink_tau/5 * rms of 0 (outside the input layer), the one
    whose flip moves the gradient of the BatchNorm feeding it the most, and writes exact gradients for
    that branch choice: what a float32 implementation produces when its forward pass lands on the
    other side of the kink there.
    """
    torch.manual_seed(0)
    model = build_model(arch)
    weights, _ = read_safetensors(dump / "weights.safetensors")
    model.load_state_dict(weights, strict=True)
    ref = compute_reference(model, np.load(dump / "input.npy"), np.load(dump / "upstream.npy"))
    best = None
    for record in ref["prelu_records"]:
        if record["name"].startswith("input_layer") or "grad_out" not in record:
            continue
        xd = record["input"].detach()
        rms = float(xd.pow(2).mean().sqrt())
        mask = xd.abs() < 0.2 * tol.kink_tau * rms
        if not bool(mask.any()):
            continue
        slope = record["module"].weight.detach()
        jump = (1.0 - slope.reshape(1, -1, 1, 1)).expand_as(xd) * record["grad_out"]
        jump = torch.where(xd > 0, -jump, jump)
        bias_norm = float(ref["grads"][preceding_bn_bias(record["name"])].norm())
        score = torch.where(mask, jump.abs(), torch.zeros_like(jump)) / bias_norm
        index = int(score.flatten().argmax())
        if best is None or float(score.flatten()[index]) > best[0]:
            best = (float(score.flatten()[index]), record, index, float(jump.flatten()[index]))
    if best is None:
        raise RuntimeError("no PReLU input near the kink in this dump; use another --seed")
    score, record, index, delta = best
    injection = torch.zeros_like(record["input"]).flatten()
    injection[index] = delta
    params = [(n, p) for n, p in ref["model"].named_parameters() if p.requires_grad]
    effects = torch.autograd.grad([record["input"]], [p for _, p in params],
                                  grad_outputs=[injection.reshape(record["input"].shape)], allow_unused=True)
    grads = {}
    for (n, _), e in zip(params, effects):
        g = ref["grads"][n] + (e if e is not None else 0.0)
        grads[n] = g.float().contiguous()
    save_file(grads, str(dump / "grads.safetensors"))
    pos = np.unravel_index(index, tuple(record["input"].shape))
    return (f"{record['name']} {[int(v) for v in pos]}, x_ref = {float(record['input'].flatten()[index]):+.2e}, "
            f"moves its BN bias gradient by {score:.1e} relative")


def rewrite_safetensors(path: Path, edit) -> None:
    tensors, metadata = read_safetensors(path)
    edit(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata or None)


def self_test(arch: str, batch: int, seed: int, tol: Tolerances, keep: Optional[Path]) -> bool:
    root = Path(tempfile.mkdtemp(prefix="adaface-parity-selftest-")) if keep is None else keep
    root.mkdir(parents=True, exist_ok=True)
    outcomes: List[Tuple[str, bool, bool]] = []
    try:
        clean = root / "clean"
        print(f"== self-test: fake dump made by PyTorch in float32 ({arch}, batch {batch}, seed {seed})")
        make_fake_dump(clean, arch, batch, seed)
        print(f"== case 1: unmodified float32 dump, expect PASS")
        outcomes.append(("unmodified float32 dump", True, check_dump(clean, arch, tol)))

        perturbed = root / "perturbed_grad"
        shutil.copytree(clean, perturbed, dirs_exist_ok=True)
        target = "body.1.res_layer.1.weight"

        def scale_grad(t: Dict[str, torch.Tensor]) -> None:
            t[target] = t[target] * 1.01

        rewrite_safetensors(perturbed / "grads.safetensors", scale_grad)
        print(f"\n== case 2: gradient {target} scaled by 1.01, expect FAIL")
        outcomes.append((f"gradient {target} x 1.01", False, check_dump(perturbed, arch, tol)))

        renamed = root / "renamed_weight"
        shutil.copytree(clean, renamed, dirs_exist_ok=True)

        def rename_key(t: Dict[str, torch.Tensor]) -> None:
            t["body.0.res_layer.3.alpha"] = t.pop("body.0.res_layer.3.weight")

        rewrite_safetensors(renamed / "weights.safetensors", rename_key)
        print("\n== case 3: weight key renamed (one missing, one unexpected), expect FAIL")
        outcomes.append(("renamed weight key", False, check_dump(renamed, arch, tol)))

        stats_bad = root / "biased_running_var"
        shutil.copytree(clean, stats_bad, dirs_exist_ok=True)

        def biased_var(t: Dict[str, torch.Tensor]) -> None:
            # The BatchNorm1d running_var updated with the biased batch variance instead of the unbiased
            # one: after = 0.9*old + 0.1*v_u  becomes  0.9*old + 0.1*v_u*(n-1)/n, with n = batch.
            weights, _ = read_safetensors(clean / "weights.safetensors")
            key = "output_layer.4.running_var"
            unbiased = (t[key] - 0.9 * weights[key]) / 0.1
            t[key] = 0.9 * weights[key] + 0.1 * unbiased * (batch - 1) / batch

        rewrite_safetensors(stats_bad / "running_stats_after.safetensors", biased_var)
        print("\n== case 4: output_layer.4.running_var updated with the biased variance, expect FAIL")
        outcomes.append(("biased running_var in output_layer.4", False, check_dump(stats_bad, arch, tol)))

        zero_bad = root / "uncancelled_bias_grad"
        shutil.copytree(clean, zero_bad, dirs_exist_ok=True)

        def uncancelled(t: Dict[str, torch.Tensor]) -> None:
            # A bias gradient that should cancel through the following batch-statistics BatchNorm1d.
            scale = float(t["output_layer.3.weight"].norm())
            noise = torch.randn(t["output_layer.3.bias"].shape, generator=torch.Generator().manual_seed(7))
            t["output_layer.3.bias"] = noise / noise.norm() * (1e-3 * scale)

        rewrite_safetensors(zero_bad / "grads.safetensors", uncancelled)
        print("\n== case 5: output_layer.3.bias gradient not cancelled (1e-3 of the weight's), expect FAIL")
        outcomes.append(("uncancelled output_layer.3.bias gradient", False, check_dump(zero_bad, arch, tol)))

        flipped = root / "kink_flip"
        shutil.copytree(clean, flipped, dirs_exist_ok=True)
        flip_note = write_kink_flipped_grads(flipped, arch, tol)
        print(f"\n== case 6: gradients in float64 with one PReLU input on the other side of the kink "
              f"({flip_note}), expect PASS")
        outcomes.append(("one PReLU kink flip, with the kink match", True, check_dump(flipped, arch, tol)))
        print("\n== case 7: the same dump with --no-kink-correction, expect FAIL")
        strict = dataclasses.replace(tol, kink_correction=False)
        outcomes.append(("one PReLU kink flip, plain reference", False, check_dump(flipped, arch, strict)))
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print("\n== self-test summary")
    ok = True
    for name, expected, got in outcomes:
        good = expected == got
        ok &= good
        print(f"  {'ok  ' if good else 'FAIL'}  {name}: expected {'PASS' if expected else 'FAIL'}, "
              f"got {'PASS' if got else 'FAIL'}")
    print(f"self-test: {'PASS' if ok else 'FAIL'}")
    return ok


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--binary", help="path of the adaface-dist executable (runs parity-dump)")
    parser.add_argument("--dump", type=Path, help="check an existing dump directory instead of running the binary")
    parser.add_argument("--arch", default="ir18", help="ir18, ir34, ir50, ir100/ir101 (default ir18)")
    parser.add_argument("--batch", type=int, default=4, help="batch size for parity-dump (default 4, min 3)")
    parser.add_argument("--seed", type=int, default=1, help="seed for parity-dump (default 1)")
    parser.add_argument("--keep", type=Path, help="write the dump into this directory and keep it")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed for parity-dump")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--self-test", action="store_true",
                        help="make fake dumps with PyTorch (float32) and check PASS/FAIL detection")
    parser.add_argument("--cos-min", type=float, default=Tolerances.cosine_min, help="min embedding cosine")
    parser.add_argument("--norm-rtol", type=float, default=Tolerances.norm_rtol, help="max norm rel. error")
    parser.add_argument("--grad-rtol", type=float, default=Tolerances.grad_rtol, help="max gradient rel. error")
    parser.add_argument("--zero-grad-tol", type=float, default=Tolerances.zero_grad_tol,
                        help="max ||g||/||g_weight|| for analytically-zero gradients")
    parser.add_argument("--stats-rtol", type=float, default=Tolerances.stats_rtol,
                        help="max running-stat update rel. error")
    parser.add_argument("--kink-tau", type=float, default=Tolerances.kink_tau,
                        help="PReLU inputs within this fraction of their layer's rms of 0 are kink candidates")
    parser.add_argument("--no-kink-correction", action="store_true",
                        help="compare gradients against the plain float64 reference (no PReLU branch matching)")
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    tol = Tolerances(cosine_min=args.cos_min, norm_rtol=args.norm_rtol, grad_rtol=args.grad_rtol,
                     zero_grad_tol=args.zero_grad_tol, stats_rtol=args.stats_rtol,
                     kink_tau=args.kink_tau, kink_correction=not args.no_kink_correction)
    try:
        arch = canonical_arch(args.arch)
    except ValueError as err:
        parser.error(str(err))
    if args.batch < MIN_BATCH:
        parser.error(f"--batch must be at least {MIN_BATCH}: {BATCH_NOTE}")

    if args.self_test:
        return 0 if self_test(arch, args.batch, args.seed, tol, args.keep) else 1
    if args.dump is not None:
        if not args.dump.is_dir():
            parser.error(f"--dump {args.dump} is not a directory")
        return 0 if check_dump(args.dump, arch, tol) else 1
    if not args.binary:
        parser.error("give --binary (or --dump DIR, or --self-test)")

    out = args.keep if args.keep is not None else Path(tempfile.mkdtemp(prefix="adaface-parity-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        if not run_swift_dump(args.binary, args.arch, args.batch, args.seed, out, args.timeout):
            print("parity: FAIL (parity-dump did not succeed)")
            return 1
        ok = check_dump(out, arch, tol)
        if args.keep is not None:
            print(f"dump kept in {out}")
        return 0 if ok else 1
    finally:
        if args.keep is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
