#!/usr/bin/env python3
"""Float64 NumPy reference of the margin heads (AdaFace, ArcFace, CosFace) and their test fixtures.

It writes the small, deterministic safetensors fixtures that the Swift head tests
(Tests/HeadsTests) compare against: forward logits and losses, the norm-statistics EMA, and the
analytic gradients with respect to the unit embeddings and the raw (un-normalised) head kernel.
Everything is computed here from the formulas of DESIGN.md section 2, steps 4-8, in float64; no
library's head code is used. Before anything is written, every analytic gradient is checked against
central finite differences, and nothing is written if a check fails.

Usage (from the repository root):

    python3 Scripts/reference/head_reference.py --out Tests/HeadsTests/Fixtures   # check, then write
    python3 Scripts/reference/head_reference.py --check                            # check only

Math (eps = 1e-3 everywhere), for unit embeddings e (N x D), norms n (N), labels y (N) and the raw
kernel W (C x D) with normalised rows W^_j = W_j / ||W_j||:

    cos_ij  = clamp(e_i . W^_j, -1 + eps, 1 - eps)          (no gradient outside the range)
    AdaFace: n~ = clip(n, 0.001, 100) (a constant), mu_b = mean(n~), sigma_b = std(n~, ddof=1),
             mu = a*mu_b + (1-a)*mu0, sigma = a*sigma_b + (1-a)*sigma0   (EMA updated before use)
             z^_i = clip(h*(n~_i - mu)/(sigma + eps), -1, 1)
             theta_i = acos(cos_iy), theta'_i = clip(theta_i - m*z^_i, eps, pi - eps)
             target_i = s*(cos(theta'_i) - m*(1 + z^_i))
    ArcFace: theta'_i = clip(theta_i + m, eps, pi - eps), target_i = s*cos(theta'_i)
    CosFace: target_i = s*(cos_iy - m)
    other logits z_ij = s*cos_ij;  loss_i = logsumexp_j(z_ij) - z_iy;  loss = mean_i loss_i
    d target / d cos = s*sin(theta')/sin(theta) where theta' is not clipped, 0 where it is (CosFace: s)
    dz = (softmax(z) - onehot)/N;  de_i = sum_j dcos_ij W^_j;  dW^_j = sum_i dcos_ij e_i
    dW_j = (dW^_j - W^_j (W^_j . dW^_j)) / ||W_j||

ArcFace and CosFace do not use the EMA: their files carry mu_after = mu_before and
sigma_after = sigma_before, and the metadata h = 0 and t_alpha = 0 (with which the AdaFace formulas
leave the state unchanged).

File format, one safetensors file per case (float64 except labels, int64):
    embeddings [N,D], norms [N], labels [N], kernel [C,D], loss [], per_sample_loss [N],
    logits [N,C] (after the margin, before the softmax), grad_embeddings [N,D], grad_kernel [C,D],
    mu_before [], sigma_before [], mu_after [], sigma_after [];
    metadata strings head, m, h, s, t_alpha, epsilon, description.
"""

import argparse
import math
import sys
from pathlib import Path

import numpy as np

EPS = 1e-3
NORM_MIN = 0.001
NORM_MAX = 100.0
# Every clamp or clip argument of a fixture must lie at least this far from its boundary, so that a
# float32 implementation takes the same branch as this float64 reference and finite differences stay
# on one smooth piece.
KINK_MARGIN = 1e-4
FD_STEP = 1e-6
FD_ATOL = 1e-6
FD_RTOL = 1e-6

HEADS = {
    "adaface": dict(m=0.4, h=0.333, s=64.0, t_alpha=0.01),
    "arcface": dict(m=0.5, h=0.0, s=64.0, t_alpha=0.0),
    "cosface": dict(m=0.4, h=0.0, s=64.0, t_alpha=0.0),
}


# ----------------------------------------------------------------------------------------------------
# Forward and analytic backward
# ----------------------------------------------------------------------------------------------------

def norm_stats(norms, mu0, sigma0, hp):
    """EMA update of the norm statistics; returns (mu, sigma, z_pre, z_hat, clipped norms)."""
    nt = np.clip(norms, NORM_MIN, NORM_MAX)
    mu_b = nt.mean()
    sigma_b = nt.std(ddof=1)
    a = hp["t_alpha"]
    mu = a * mu_b + (1.0 - a) * mu0
    sigma = a * sigma_b + (1.0 - a) * sigma0
    z_pre = hp["h"] * (nt - mu) / (sigma + EPS)
    return mu, sigma, z_pre, np.clip(z_pre, -1.0, 1.0), nt


def forward(head, hp, e, norms, labels, W, mu0, sigma0):
    """All forward quantities of one step, as a dict."""
    n_rows = e.shape[0]
    rows = np.arange(n_rows)
    m, s = hp["m"], hp["s"]

    w_len = np.sqrt((W * W).sum(axis=1))
    W_hat = W / w_len[:, None]
    cos_raw = e @ W_hat.T
    cos = np.clip(cos_raw, -1.0 + EPS, 1.0 - EPS)
    cos_pass = (cos_raw > -1.0 + EPS) & (cos_raw < 1.0 - EPS)

    if head == "adaface":
        mu, sigma, z_pre, z_hat, nt = norm_stats(norms, mu0, sigma0, hp)
    else:
        mu, sigma = mu0, sigma0
        z_pre = z_hat = nt = None

    cos_t = cos[rows, labels]
    if head == "cosface":
        theta = theta_pre = None
        theta_pass = np.ones(n_rows, dtype=bool)
        target = s * (cos_t - m)
        dtarget = np.full(n_rows, s)
    else:
        theta = np.arccos(cos_t)
        theta_pre = theta - m * z_hat if head == "adaface" else theta + m
        theta_p = np.clip(theta_pre, EPS, math.pi - EPS)
        theta_pass = (theta_pre > EPS) & (theta_pre < math.pi - EPS)
        if head == "adaface":
            target = s * (np.cos(theta_p) - m * (1.0 + z_hat))
        else:
            target = s * np.cos(theta_p)
        dtarget = np.where(theta_pass, s * np.sin(theta_p) / np.sin(theta), 0.0)

    logits = s * cos
    logits[rows, labels] = target
    row_max = logits.max(axis=1)
    lse = row_max + np.log(np.exp(logits - row_max[:, None]).sum(axis=1))
    per_sample = lse - target
    return dict(
        W_hat=W_hat, w_len=w_len, cos_raw=cos_raw, cos_pass=cos_pass, logits=logits, lse=lse,
        per_sample=per_sample, loss=per_sample.mean(), dtarget=dtarget, theta=theta,
        theta_pre=theta_pre, theta_pass=theta_pass, mu=mu, sigma=sigma, z_pre=z_pre, z_hat=z_hat,
        norms_clipped=nt,
    )


def backward(fw, e, labels, s):
    """Analytic gradients of the mean loss w.r.t. the unit embeddings and the raw kernel."""
    n_rows = e.shape[0]
    rows = np.arange(n_rows)
    dz = np.exp(fw["logits"] - fw["lse"][:, None])
    dz[rows, labels] -= 1.0
    dz /= n_rows
    dcos = s * dz
    dcos[rows, labels] = dz[rows, labels] * fw["dtarget"]
    dcos = np.where(fw["cos_pass"], dcos, 0.0)
    W_hat = fw["W_hat"]
    grad_e = dcos @ W_hat
    grad_W_hat = dcos.T @ e
    radial = (W_hat * grad_W_hat).sum(axis=1)
    grad_W = (grad_W_hat - W_hat * radial[:, None]) / fw["w_len"][:, None]
    return grad_e, grad_W


# ----------------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------------

def branch_signature(fw):
    """Which side of every clamp/clip the step is on (the norm clips do not depend on e or W)."""
    return (fw["cos_pass"].tobytes(), fw["theta_pass"].tobytes())


def kink_distances(head, fw, norms):
    """Smallest distance of every clamp/clip argument from its boundary, by clamp."""
    lim = 1.0 - EPS
    out = {
        "cos clamp": float(np.min(np.abs(np.abs(fw["cos_raw"]) - lim))),
    }
    if head != "cosface":
        tp = fw["theta_pre"]
        out["theta' clip"] = float(min(np.min(np.abs(tp - EPS)), np.min(np.abs(tp - (math.pi - EPS)))))
    if head == "adaface":
        out["z^ clip"] = float(np.min(np.abs(np.abs(fw["z_pre"]) - 1.0)))
        out["norm clip"] = float(min(np.min(np.abs(norms - NORM_MIN)), np.min(np.abs(norms - NORM_MAX))))
    return out


def clamp_counts(head, fw, norms, labels):
    """How often each clamp/clip is active in a case."""
    rows = np.arange(len(labels))
    lim = 1.0 - EPS
    target_mask = np.zeros_like(fw["cos_raw"], dtype=bool)
    target_mask[rows, labels] = True
    cr = fw["cos_raw"]
    c = {
        "cos>1-eps target": int(np.sum((cr >= lim) & target_mask)),
        "cos<-1+eps target": int(np.sum((cr <= -lim) & target_mask)),
        "cos>1-eps other": int(np.sum((cr >= lim) & ~target_mask)),
        "cos<-1+eps other": int(np.sum((cr <= -lim) & ~target_mask)),
    }
    if head != "cosface":
        c["theta'<eps"] = int(np.sum(fw["theta_pre"] <= EPS))
        c["theta'>pi-eps"] = int(np.sum(fw["theta_pre"] >= math.pi - EPS))
    if head == "adaface":
        c["norm<0.001"] = int(np.sum(norms <= NORM_MIN))
        c["norm>100"] = int(np.sum(norms >= NORM_MAX))
        c["z^=+1"] = int(np.sum(fw["z_pre"] >= 1.0))
        c["z^=-1"] = int(np.sum(fw["z_pre"] <= -1.0))
    return c


def finite_difference_check(case):
    """Central differences of the loss on every coordinate of e and W against the analytic gradients.

    A coordinate is compared only when the perturbed steps at +h and -h are on the same side of every
    clamp as the base step (the loss is smooth there). Returns a dict of results.
    """
    head, hp = case["head"], HEADS[case["head"]]
    e, n, y, W = case["embeddings"], case["norms"], case["labels"], case["kernel"]
    mu0, sigma0 = case["mu_before"], case["sigma_before"]

    def run(e_, W_):
        return forward(head, hp, e_, n, y, W_, mu0, sigma0)

    base = run(e, W)
    base_sig = branch_signature(base)
    grad_e, grad_W = backward(base, e, y, hp["s"])

    results = {}
    for name, array, grad in (("embeddings", e, grad_e), ("kernel", W, grad_W)):
        max_abs = 0.0
        max_rel = 0.0
        checked = skipped = failed = 0
        scale = float(np.max(np.abs(grad)))
        for idx in np.ndindex(array.shape):
            plus = array.copy()
            minus = array.copy()
            plus[idx] += FD_STEP
            minus[idx] -= FD_STEP
            fp = run(plus, W) if name == "embeddings" else run(e, plus)
            fm = run(minus, W) if name == "embeddings" else run(e, minus)
            if branch_signature(fp) != base_sig or branch_signature(fm) != base_sig:
                skipped += 1
                continue
            fd = (fp["loss"] - fm["loss"]) / (2.0 * FD_STEP)
            err = abs(fd - grad[idx])
            checked += 1
            max_abs = max(max_abs, err)
            max_rel = max(max_rel, err / max(abs(grad[idx]), 1e-12))
            if err > FD_ATOL + FD_RTOL * max(abs(grad[idx]), scale):
                failed += 1
        results[name] = dict(checked=checked, skipped=skipped, failed=failed, max_abs_err=max_abs,
                             max_rel_err=max_rel, max_abs_grad=scale)
    return results


# ----------------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------------

def random_kernel(rng, n_classes, dim):
    """Raw kernel rows with random directions and lengths in [0.5, 2] (not normalised)."""
    W = rng.standard_normal((n_classes, dim))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    return W * rng.uniform(0.5, 2.0, size=(n_classes, 1))


def unit(v):
    return v / np.linalg.norm(v)


def embedding_with_cos(rng, w_hat, c):
    """A unit vector whose cosine with the unit vector w_hat is c (random orthogonal part)."""
    u = rng.standard_normal(w_hat.shape[0])
    u -= (u @ w_hat) * w_hat
    u = unit(u)
    return unit(c * w_hat + math.sqrt(max(0.0, 1.0 - c * c)) * u)


def basic_inputs(seed, n_rows=8, dim=16, n_classes=11):
    """Random inputs in the ordinary regime: no clamp or clip is active."""
    rng = np.random.default_rng(seed)
    W = random_kernel(rng, n_classes, dim)
    W_hat = W / np.linalg.norm(W, axis=1, keepdims=True)
    labels = rng.integers(0, n_classes, size=n_rows).astype(np.int64)
    target_cos = rng.uniform(-0.2, 0.8, size=n_rows)
    e = np.stack([embedding_with_cos(rng, W_hat[labels[i]], target_cos[i]) for i in range(n_rows)])
    norms = rng.uniform(14.0, 24.0, size=n_rows)
    return dict(embeddings=e, norms=norms, labels=labels, kernel=W, mu_before=19.0, sigma_before=4.0)


def adaface_edges_inputs(seed=1004, dim=16, n_classes=11):
    """AdaFace inputs that drive every clamp and clip (N = 10)."""
    rng = np.random.default_rng(seed)
    W = random_kernel(rng, n_classes, dim)
    W_hat = W / np.linalg.norm(W, axis=1, keepdims=True)
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], dtype=np.int64)
    rows = [
        # 0: target cos 0.998 (theta ~ 0.063), norm above 100 -> n~ = 100, z^ = +1, theta - m < eps.
        (embedding_with_cos(rng, W_hat[0], 0.998), 150.0),
        # 1: target cos -0.998 (theta ~ pi - 0.063), norm below 0.001 -> z^ = -1, theta + m > pi - eps.
        (embedding_with_cos(rng, W_hat[1], -0.998), 0.0004),
        # 2: e parallel to W^_y: cos = 1 is clamped to 1 - eps (no gradient); z^ < 0, theta' not clipped.
        (W_hat[2].copy(), 17.0),
        # 3: e antiparallel to a non-target class (W^_10): that cosine is clamped to -1 + eps.
        (-W_hat[10].copy(), 22.0),
        # 4: z^ saturates at +1 from a norm inside (0.001, 100); theta' not clipped.
        (embedding_with_cos(rng, W_hat[4], 0.5), 45.0),
        # 5: z^ saturates at -1 from a norm inside (0.001, 100); theta' not clipped.
        (embedding_with_cos(rng, W_hat[5], 0.3), 2.0),
    ]
    for i, c, n in ((6, 0.6, 18.5), (7, 0.1, 23.0), (8, -0.3, 20.5), (9, 0.75, 16.0)):
        rows.append((embedding_with_cos(rng, W_hat[labels[i]], c), n))
    e = np.stack([r[0] for r in rows])
    norms = np.array([r[1] for r in rows])
    return dict(embeddings=e, norms=norms, labels=labels, kernel=W, mu_before=20.0, sigma_before=4.0)


def arcface_edges_inputs(seed=1005, dim=16, n_classes=11):
    """ArcFace inputs with theta + m beyond pi - eps and both cos clamps (N = 8)."""
    rng = np.random.default_rng(seed)
    W = random_kernel(rng, n_classes, dim)
    W_hat = W / np.linalg.norm(W, axis=1, keepdims=True)
    labels = np.array([3, 7, 0, 5, 1, 9, 2, 10], dtype=np.int64)
    target_cos = [-0.95, None, None, -0.9, 0.4, 0.0, 0.7, -0.5]
    rows = []
    for i, c in enumerate(target_cos):
        if i == 1:
            rows.append(-W_hat[labels[i]])          # cos = -1: clamped, and theta + m > pi - eps
        elif i == 2:
            rows.append(W_hat[labels[i]].copy())    # cos = +1: clamped, theta + m not clipped
        else:
            rows.append(embedding_with_cos(rng, W_hat[labels[i]], c))
    e = np.stack(rows)
    norms = rng.uniform(14.0, 24.0, size=len(rows))
    return dict(embeddings=e, norms=norms, labels=labels, kernel=W, mu_before=20.0, sigma_before=100.0)


def adaface_uneven_inputs(seed=1006, n_rows=12, dim=16, n_classes=13):
    """AdaFace inputs whose labels use only classes 1, 2 and 8 of 13."""
    rng = np.random.default_rng(seed)
    W = random_kernel(rng, n_classes, dim)
    W_hat = W / np.linalg.norm(W, axis=1, keepdims=True)
    labels = np.array([1, 8, 2, 1, 1, 8, 2, 8, 1, 2, 8, 1], dtype=np.int64)
    assert labels.shape[0] == n_rows
    target_cos = rng.uniform(-0.2, 0.8, size=n_rows)
    e = np.stack([embedding_with_cos(rng, W_hat[labels[i]], target_cos[i]) for i in range(n_rows)])
    norms = rng.uniform(12.0, 26.0, size=n_rows)
    return dict(embeddings=e, norms=norms, labels=labels, kernel=W, mu_before=19.0, sigma_before=4.0)


UNEVEN_NOTE = (
    "Labels only in classes {1, 2, 8} of 13: with the contiguous partition of DESIGN.md step 5, "
    "P=3 leaves rank 2 ([9,13)) and P=4 leaves ranks 1 ([4,7)) and 3 ([10,13)) without any label."
)


def build_cases():
    """(name, head, inputs, description) for every fixture."""
    basic = basic_inputs(seed=1001)
    same = "Random ordinary inputs (seed 1001, same inputs in adaface/arcface/cosface_basic), no clamp active."
    return [
        ("adaface_basic", "adaface", basic, same),
        ("arcface_basic", "arcface", basic, same),
        ("cosface_basic", "cosface", basic, same),
        ("adaface_edges", "adaface", adaface_edges_inputs(),
         "Edge cases: row 0 target cos 0.998 with norm 150 (norm clip, z^=+1, theta' clipped at eps); "
         "row 1 target cos -0.998 with norm 0.0004 (norm clip, z^=-1, theta' clipped at pi-eps); "
         "row 2 e parallel to its class (target cos clamped at 1-eps); row 3 e antiparallel to class 10 "
         "(non-target cos clamped at -1+eps); rows 4 and 5 z^ saturated at +1 and -1 from norms 45 and 2."),
        ("arcface_edges", "arcface", arcface_edges_inputs(),
         "Edge cases: rows 0 and 3 target cos -0.95 and -0.9 (theta+m clipped at pi-eps); row 1 e "
         "antiparallel to its class (cos clamped at -1+eps and theta' clipped); row 2 e parallel to "
         "its class (cos clamped at 1-eps)."),
        ("adaface_uneven", "adaface", adaface_uneven_inputs(), UNEVEN_NOTE),
    ]


# ----------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------

def make_case(name, head, inputs, description):
    hp = HEADS[head]
    e, n, y, W = inputs["embeddings"], inputs["norms"], inputs["labels"], inputs["kernel"]
    fw = forward(head, hp, e, n, y, W, inputs["mu_before"], inputs["sigma_before"])
    grad_e, grad_W = backward(fw, e, y, hp["s"])
    counts = clamp_counts(head, fw, n, y)
    active = ", ".join(f"{k}: {v}" for k, v in counts.items() if v)
    tensors = {
        "embeddings": e,
        "norms": n,
        "labels": y.astype(np.int64),
        "kernel": W,
        "loss": np.array(fw["loss"]),
        "per_sample_loss": fw["per_sample"],
        "logits": fw["logits"],
        "grad_embeddings": grad_e,
        "grad_kernel": grad_W,
        "mu_before": np.array(float(inputs["mu_before"])),
        "sigma_before": np.array(float(inputs["sigma_before"])),
        "mu_after": np.array(float(fw["mu"])),
        "sigma_after": np.array(float(fw["sigma"])),
    }
    # np.array (not np.ascontiguousarray, which turns 0-d arrays into 1-d ones) keeps scalars at shape ().
    tensors = {k: np.array(v, dtype=np.int64 if k == "labels" else np.float64, order="C")
               for k, v in tensors.items()}
    metadata = {
        "head": head,
        "m": repr(hp["m"]),
        "h": repr(hp["h"]),
        "s": repr(hp["s"]),
        "t_alpha": repr(hp["t_alpha"]),
        "epsilon": repr(EPS),
        "description": f"{description} Active clamps: {active if active else 'none'}.",
    }
    case = dict(name=name, head=head, tensors=tensors, metadata=metadata, counts=counts,
                kinks=kink_distances(head, fw, n), **inputs)
    return case


def check_case(case):
    """Validity checks plus the finite-difference check; returns (ok, report lines)."""
    lines = []
    ok = True
    e = case["embeddings"]
    unit_err = float(np.max(np.abs(np.linalg.norm(e, axis=1) - 1.0)))
    if unit_err > 1e-12:
        ok = False
        lines.append(f"  embeddings are not unit rows (max |norm - 1| = {unit_err:.2e})")
    for k, v in case["tensors"].items():
        if not np.all(np.isfinite(v)):
            ok = False
            lines.append(f"  tensor {k} has non-finite values")
    for k, d in case["kinks"].items():
        if d < KINK_MARGIN:
            ok = False
            lines.append(f"  {k}: an argument is {d:.2e} from its boundary (< {KINK_MARGIN})")
    fd = finite_difference_check(case)
    for name, r in fd.items():
        status = "ok" if r["failed"] == 0 and r["checked"] > 0 else "FAIL"
        if status != "ok":
            ok = False
        lines.append(
            f"  FD d/d{name}: {status}, {r['checked']} coords checked, {r['skipped']} skipped, "
            f"{r['failed']} failed, max abs err {r['max_abs_err']:.2e} (max |grad| {r['max_abs_grad']:.2e})")
    kinks = ", ".join(f"{k} {v:.2e}" for k, v in case["kinks"].items())
    lines.append(f"  nearest clamp boundaries: {kinks}")
    active = ", ".join(f"{k}={v}" for k, v in case["counts"].items() if v) or "none"
    lines.append(f"  active clamps: {active}")
    return ok, lines


def write_safetensors(path, tensors, metadata):
    """safetensors.numpy.save_file, made byte-for-byte reproducible.

    The package keeps the metadata in a hash map, so the order of the metadata keys in the JSON header
    changes from run to run. The header is re-serialised with the metadata keys sorted (tensor entries
    and data untouched, padded to 8 bytes with spaces as the format does), so regenerating the fixtures
    leaves unchanged files unchanged; the result is read back and compared before it is kept.
    """
    import json
    import struct

    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    save_file(tensors, str(path), metadata=metadata)
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    ordered = {"__metadata__": dict(sorted(header.pop("__metadata__").items()))}
    ordered.update(header)
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + header_len:])
    path.chmod(0o644)

    loaded = load_file(str(path))
    with safe_open(str(path), framework="numpy") as f:
        loaded_meta = f.metadata()
    same = loaded.keys() == tensors.keys() and all(
        loaded[k].dtype == v.dtype and loaded[k].shape == v.shape and np.array_equal(loaded[k], v)
        for k, v in tensors.items())
    if not same or loaded_meta != metadata:
        raise RuntimeError(f"{path.name}: read-back differs from what was written")


def write_readme(out_dir):
    text = (
        "# Head fixtures\n\n"
        "Float64 reference values of the AdaFace, ArcFace and CosFace margin heads (logits, losses, norm EMA,\n"
        "gradients w.r.t. the unit embeddings and the raw kernel), one safetensors file per case, generated\n"
        "by `Scripts/reference/head_reference.py` with fixed seeds; tensor names and metadata are described\n"
        "in its docstring. Regenerate (this also re-runs the finite-difference check) from the repository root:\n"
        "`python3 Scripts/reference/head_reference.py --out Tests/HeadsTests/Fixtures`\n"
    )
    (out_dir / "README.md").write_text(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[2] / "Tests" / "HeadsTests" / "Fixtures",
                        help="fixture directory (default: Tests/HeadsTests/Fixtures of this repository)")
    parser.add_argument("--check", action="store_true",
                        help="only run the self-checks (finite differences), write nothing")
    args = parser.parse_args(argv)

    cases = [make_case(*c) for c in build_cases()]
    all_ok = True
    for case in cases:
        ok, lines = check_case(case)
        all_ok &= ok
        print(f"{case['name']} ({case['head']}): {'ok' if ok else 'FAILED'}, loss {float(case['tensors']['loss']):.6f}")
        for line in lines:
            print(line)
    if not all_ok:
        print("self-check failed; no fixtures written", file=sys.stderr)
        return 1
    if args.check:
        print("all checks passed")
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    for case in cases:
        path = args.out / f"{case['name']}.safetensors"
        write_safetensors(path, case["tensors"], case["metadata"])
        print(f"wrote {path.name} ({path.stat().st_size} bytes)")
    write_readme(args.out)
    print("wrote README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
