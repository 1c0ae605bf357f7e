#!/usr/bin/env python3
"""Cost model of an adaface-dist training step: predicts step time, scaling efficiency and the
WebFace4M epoch time for P = 8 ... 512 ranks, from the project's own measurements.

Inputs (all measured by the project's tools):
  --scaling CSV      Scripts/scaling.sh's table: per-rank compute (forward, backward, head, update,
                     data) at P <= 4, one thread per rank.
  --collectives NAME=FILE[,FILE...]
                     `adaface-dist bench allreduce --json` at several rank counts over one transport
                     (e.g. shared memory, or TCP between the cluster/local namespace hosts). For each
                     collective a ring model t = hops * alpha + bus_bytes * beta is fitted to all files
                     of the transport (hops: 2(P-1) for all-reduce, P-1 for all-gather and
                     reduce-scatter; bus bytes: 2(P-1)/P * n and (P-1)/P * n).

The step, per rank (local batch b, global N = P*b, C classes, D = 512, C_r = C/P):
  compute   data + forward + backward   = (d0 + d1*b) / s, fitted per architecture
  head      h0 + h1 * N * C_s * D / s + head collectives, C_s = C_r (full) or rate*C_r + N/P (Partial FC)
            head collectives: all-gather of N*D floats, norms and labels; all-reduces of N and 2N
            values; reduce-scatter of N*D floats; three small all-reduces.
  update    u_arch + u1 * (rows updated) * D / s
  gradients the backbone's gradient buckets (25 MB, the first 1 MB, reverse layer order) are
            all-reduced as backward produces them; bucket k can start once backward has passed its
            layers (time share from the layers' MACs) and after bucket k-1 is done. The exposed part
            is what runs past the end of backward. --overlap 0 serialises everything.
  s = cores per rank * thread efficiency: 1 for the measured one-thread ranks.

Validation: the model is fitted on the P <= cores rows and predicts every measured row (P up to 4),
printing predicted against measured step times.
"""
import argparse
import csv
import json
import math
import os
import sys

D = 512
PARTS = ["data_s", "forward_s", "head_s", "backward_s", "communication_s", "update_s"]
STAGES = {"ir18": [2, 2, 2, 2], "ir34": [3, 4, 6, 3], "ir50": [3, 4, 14, 3], "ir100": [3, 13, 30, 3]}
HOPS = {"allreduce": lambda p: 2 * (p - 1), "iallreduce": lambda p: 2 * (p - 1), "allgather": lambda p: p - 1,
        "reducescatter": lambda p: p - 1, "broadcast": lambda p: math.ceil(math.log2(p)) if p > 1 else 0}
BUS = {"allreduce": lambda p: 2 * (p - 1) / p, "iallreduce": lambda p: 2 * (p - 1) / p,
       "allgather": lambda p: (p - 1) / p, "reducescatter": lambda p: (p - 1) / p, "broadcast": lambda p: 1.0}


# ----------------------------------------------------------------------------------------------
# The backbone's layers: parameters and MACs per image, in registration (forward) order.

def iresnet_layers(arch):
    """[(name, trainable parameters, MACs per image)], one entry per residual unit plus the input and
    output layers; parameters as in the official state_dict (BN weight+bias, PReLU, conv, linear)."""
    layers = [("input", 9 * 3 * 64 + 2 * 64 + 64, 9 * 3 * 64 * 112 * 112)]
    c_in, size = 64, 112
    for depth, units in zip([64, 128, 256, 512], STAGES[arch]):
        for u in range(units):
            stride = 2 if u == 0 else 1
            out = size // stride
            params = 2 * c_in + 9 * c_in * depth + 2 * depth + depth + 9 * depth * depth + 2 * depth
            macs = 9 * c_in * depth * size * size + 9 * depth * depth * out * out
            if c_in != depth:
                params += c_in * depth + 2 * depth
                macs += c_in * depth * out * out
            layers.append((f"unit{len(layers)}", params, macs))
            c_in, size = depth, out
    flat = 512 * 7 * 7
    layers.append(("output", 2 * 512 + flat * D + D + 2 * D, flat * D))
    return layers


def gradient_schedule(arch, bucket_bytes=25 << 20, first_bucket_bytes=1 << 20):
    """Buckets in the order backward completes them: [(bytes, share of backward done when ready)]."""
    layers = iresnet_layers(arch)
    total_macs = sum(m for _, _, m in layers)
    buckets, pending, limit, done = [], 0, first_bucket_bytes, 0.0
    for _, params, macs in reversed(layers):
        done += macs / total_macs
        pending += 4 * params
        if pending >= limit:
            buckets.append((pending, done))
            pending, limit = 0, bucket_bytes
    if pending:
        buckets.append((pending, 1.0))
    return buckets


# ----------------------------------------------------------------------------------------------
# Collectives: the ring model fitted to bench allreduce files.

class Transport:
    def __init__(self, name, fits):
        self.name, self.fits = name, fits  # op -> (alpha per hop, beta per bus byte)

    @staticmethod
    def fit(name, paths):
        samples = {}
        for path in paths:
            with open(path) as f:
                data = json.load(f)
            p = data["ranks"]
            if p < 2:
                continue
            for row in data["rows"]:
                samples.setdefault(row["op"], []).append((HOPS[row["op"]](p), BUS[row["op"]](p) * row["bytes"],
                                                          row["seconds"]))
        if not samples:
            sys.exit(f"{name}: the collective files need runs with at least 2 ranks")
        fits = {}
        for op, rows in samples.items():
            # Least squares on relative error: minimise sum(((a*h + b*x) - t) / t)^2.
            s = [[0.0, 0.0], [0.0, 0.0]]
            r = [0.0, 0.0]
            for h, x, t in rows:
                w = 1 / (t * t)
                s[0][0] += w * h * h; s[0][1] += w * h * x; s[1][1] += w * x * x
                r[0] += w * h * t; r[1] += w * x * t
            det = s[0][0] * s[1][1] - s[0][1] ** 2
            if det <= 0:
                a, b = rows[0][2] / max(rows[0][0], 1), 0.0
            else:
                a = (r[0] * s[1][1] - r[1] * s[0][1]) / det
                b = (s[0][0] * r[1] - s[0][1] * r[0]) / det
            fits[op] = (max(a, 0.0), max(b, 0.0))
        return Transport(name, fits)

    def with_link(self, bandwidth_gbit=None, measured_gbit=10.0, latency_us=None):
        """The same collectives on a faster or slower link: beta scales by measured/new link rate, so
        each collective keeps the fraction of the link it reached when measured."""
        fits = {}
        for op, (a, b) in self.fits.items():
            fits[op] = (latency_us * 1e-6 if latency_us is not None else a,
                        b * measured_gbit / bandwidth_gbit if bandwidth_gbit else b)
        label = self.name + "".join([f" scaled to {bandwidth_gbit:g} Gbit/s" if bandwidth_gbit else "",
                                     f", {latency_us:g} us per hop" if latency_us is not None else ""])
        return Transport(label, fits)

    def time(self, op, nbytes, p):
        if p <= 1:
            return 0.0
        a, b = self.fits.get(op, self.fits.get("allreduce"))
        return HOPS[op](p) * a + BUS[op](p) * nbytes * b


# ----------------------------------------------------------------------------------------------
# Compute: fitted to the measured rows.

def least_squares(rows):
    """Solve min ||A x - y|| for small dense A given as [(features, y)] (normal equations)."""
    n = len(rows[0][0])
    ata = [[sum(f[i] * f[j] for f, _ in rows) for j in range(n)] for i in range(n)]
    aty = [sum(f[i] * y for f, y in rows) for i in range(n)]
    for i in range(n):  # Gauss-Jordan with a tiny ridge so that a missing feature gives 0.
        ata[i][i] += 1e-12 * (ata[i][i] + 1)
    m = [ata[i] + [aty[i]] for i in range(n)]
    for c in range(n):
        pivot = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[pivot] = m[pivot], m[c]
        for r in range(n):
            if r != c and m[c][c] != 0:
                factor = m[r][c] / m[c][c]
                m[r] = [x - factor * y for x, y in zip(m[r], m[c])]
    return [m[i][n] / m[i][i] if m[i][i] else 0.0 for i in range(n)]


def nonnegative_least_squares(rows):
    """least_squares with every coefficient >= 0: features whose coefficient comes out negative are
    dropped (fixed at 0) one at a time, the most negative first, and the rest refitted."""
    active = list(range(len(rows[0][0])))
    while True:
        sub = [(tuple(f[i] for i in active), y) for f, y in rows]
        x = least_squares(sub)
        worst = min(range(len(active)), key=lambda k: x[k])
        if x[worst] >= 0 or len(active) == 1:
            full = [0.0] * len(rows[0][0])
            for k, i in enumerate(active):
                full[i] = max(x[k], 0.0)
            return full
        del active[worst]


def sampled_rows(head, rate, classes, n, p):
    c_r = classes / p
    return c_r if head == "full" else min(c_r, math.ceil(rate * c_r) + n / p)


def read_backbone_bench(paths):
    """[(arch, batch, seconds per training step)] from `bench backbone` outputs (their JSON line)."""
    points = []
    for path in paths:
        with open(path) as f:
            r = json.loads([line for line in f if line.startswith("{")][-1])
        points.append((r["arch"], int(r["batch"]), int(r["batch"]) / float(r["train_images_per_s"])))
    return points


class ComputeModel:
    def __init__(self, rows, cores, bench_points=()):
        fit_rows = [r for r in rows if int(r["ranks"]) <= cores and r["hosts"] == "local"]
        if not fit_rows:
            sys.exit("no measured rows with P <= cores to fit the compute model")
        self.backbone, self.update = {}, {}
        for arch in sorted({r["arch"] for r in fit_rows}):
            mine = [r for r in fit_rows if r["arch"] == arch]
            batches = {int(r["local_batch"]) for r in mine}
            samples = [((1.0, float(r["local_batch"])), float(r["forward_s"]) + float(r["backward_s"])
                        + float(r["data_s"])) for r in mine]
            # bench backbone steps include the SGD update; this arch's mean update time comes off.
            update_mean = sum(float(r["update_s"]) for r in mine) / len(mine)
            for bench_arch, b, seconds in bench_points:
                if bench_arch == arch:
                    samples.append(((1.0, float(b)), max(seconds - update_mean, 0.0)))
                    batches.add(b)
            if len(batches) == 1:
                b = batches.pop()
                self.backbone[arch] = (0.0, sum(y for _, y in samples) / len(samples) / b)
            else:
                self.backbone[arch] = tuple(nonnegative_least_squares(samples))
        # Head compute: h0 + h1 * N * C_s * D; update: per-arch constant + u1 * rows * D.
        head_samples, update_samples = [], []
        archs = sorted(self.backbone)
        for r in fit_rows:
            n, p = int(r["global_batch"]), int(r["ranks"])
            rows_s = sampled_rows(r["head"], float(r["sample_rate"]), self.classes_of(r), n, p)
            head_samples.append(((1.0, n * rows_s * D), float(r["head_s"])))
            onehot = [1.0 if r["arch"] == a else 0.0 for a in archs]
            update_samples.append((tuple(onehot + [rows_s * D]), float(r["update_s"])))
        self.head = tuple(nonnegative_least_squares(head_samples))
        solution = nonnegative_least_squares(update_samples)
        self.update = {a: solution[i] for i, a in enumerate(archs)}
        self.update_row = solution[-1]

    @staticmethod
    def classes_of(row):
        return float(row.get("classes") or 205990)

    def step(self, arch, head, rate, classes, b, p, transport, speed=1.0, overlap=True):
        n = b * p
        d0, d1 = self.backbone[arch]
        compute = (d0 + d1 * b) / speed
        backward_share = 2 / 3  # backward costs two forward passes (dX and dW GEMMs)
        rows_s = sampled_rows(head, rate, classes, n, p)
        head_compute = (self.head[0] + self.head[1] * n * rows_s * D) / speed
        head_comm = (transport.time("allgather", 4 * n * D, p) + 2 * transport.time("allgather", 4 * n, p)
                     + transport.time("allreduce", 8 * n, p) + transport.time("allreduce", 16 * n, p)
                     + transport.time("reducescatter", 4 * n * D, p) + 3 * transport.time("allreduce", 8, p))
        update = (self.update[arch] + self.update_row * rows_s * D) / speed
        backward = compute * backward_share
        clock = 0.0
        for nbytes, ready in gradient_schedule(arch):
            start = max(clock, ready * backward if overlap else backward)
            clock = start + transport.time("iallreduce", nbytes, p)
        exposed = max(0.0, clock - backward)
        total = compute + head_compute + head_comm + update + exposed
        return {"step_s": total, "compute_s": compute, "head_s": head_compute, "head_comm_s": head_comm,
                "update_s": update, "exposed_allreduce_s": exposed, "allreduce_s": clock - min(clock, 0),
                "images_per_s": n / total}


# ----------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scaling", required=True, help="scaling.csv from Scripts/scaling.sh")
    parser.add_argument("--collectives", action="append", required=True, metavar="NAME=FILE[,FILE...]")
    parser.add_argument("--network", help="transport for the predictions (default: the last --collectives)")
    parser.add_argument("--bandwidth-gbit", type=float, help="predict for this link rate (Gbit/s) instead of the measured one")
    parser.add_argument("--measured-gbit", type=float, default=10.0, help="link rate the --network files were measured at")
    parser.add_argument("--latency-us", type=float, help="replace the fitted latency per hop (microseconds)")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="cores of the measuring machine")
    parser.add_argument("--cores-per-rank", type=int, default=1)
    parser.add_argument("--thread-efficiency", type=float, default=1.0,
                        help="speed of a rank with k cores = k * this * one measured core")
    parser.add_argument("--arch", default="ir50")
    parser.add_argument("--classes", type=int, default=205990)
    parser.add_argument("--images", type=int, default=4_200_000, help="images per epoch (WebFace4M: ~4.2M)")
    parser.add_argument("--global-batch", type=int, default=512, help="strong scaling: the recipe's global batch")
    parser.add_argument("--weak-batch", type=int, default=64, help="weak scaling: the local batch")
    parser.add_argument("--ranks", default="8,16,32,64,128,256,512")
    parser.add_argument("--no-overlap", action="store_true", help="all-reduce after backward, not during it")
    parser.add_argument("--backbone-bench", nargs="*", default=[], metavar="FILE",
                        help="outputs of `adaface-dist bench backbone --threads 1` at small local batches, added to "
                             "the compute fit (the training runs only reach 16 to 64 per rank)")
    parser.add_argument("--markdown", help="also write the tables as Markdown")
    parser.add_argument("--plot", help="PNG of predicted efficiency against P")
    args = parser.parse_args()

    with open(args.scaling) as f:
        measured = list(csv.DictReader(f))
    transports = {}
    for spec in args.collectives:
        name, _, files = spec.partition("=")
        transports[name] = Transport.fit(name, files.split(","))
    network = transports[args.network or args.collectives[-1].partition("=")[0]]
    bench_points = read_backbone_bench(args.backbone_bench)
    model = ComputeModel(measured, args.cores, bench_points)
    out = []

    def say(line=""):
        print(line)
        out.append(line)

    say("## Fitted inputs")
    say()
    say("| transport | collective | alpha per hop (us) | bus bandwidth (GB/s) |")
    say("|---|---|---|---|")
    for t in transports.values():
        for op, (a, b) in sorted(t.fits.items()):
            say(f"| {t.name} | {op} | {a * 1e6:.1f} | {1 / b / 1e9 if b else float('inf'):.2f} |")
    say()
    say("| architecture | compute per step (s), b = local batch | update constant (s) |")
    say("|---|---|---|")
    for arch, (d0, d1) in sorted(model.backbone.items()):
        say(f"| {arch} | {d0:.3f} + {d1:.4f} b | {model.update[arch]:.3f} |")
    say(f"\nHead: {model.head[0]:.4f} s + {model.head[1] * 1e12:.3f} ps per logit x D; "
        f"head update {model.update_row * 1e9:.3f} ns per row element.")

    # Validation against every measured row, each with the transport it ran on.
    say("\n## Validation against the measured runs (P <= 4)\n")
    say("| run | P | measured step (s) | predicted (s) | error |")
    say("|---|---|---|---|---|")
    errors = []
    for r in measured:
        t = transports.get(r["hosts"]) or transports.get("local") or network
        p, b = int(r["ranks"]), int(r["local_batch"])
        slowdown = max(1.0, p / args.cores)  # more ranks than cores share them
        pred = model.step(r["arch"], r["head"], float(r["sample_rate"]), model.classes_of(r), b, p, t,
                          speed=1 / slowdown)
        meas = float(r["step_s"])
        err = pred["step_s"] / meas - 1
        errors.append(abs(err))
        fit = p <= args.cores and r["hosts"] == "local"
        say(f"| {r['mode']} {r['arch']} {r['head']} ({r['hosts']}{', fit' if fit else ''}) | {p} | {meas:.2f} | "
            f"{pred['step_s']:.2f} | {100 * err:+.0f}% |")
    say(f"\nMean absolute error {100 * sum(errors) / len(errors):.1f}%, worst {100 * max(errors):.1f}%. "
        "Rows marked fit were used to fit the compute terms; the others (more ranks than cores, or TCP) were not.")

    if bench_points:
        say("\n### Small local batches (bench backbone, one thread; also in the compute fit)\n")
        say("| architecture | batch | measured step (s) | predicted compute + update (s) | error |")
        say("|---|---|---|---|---|")
        for arch, b, seconds in bench_points:
            if arch in model.backbone:
                d0, d1 = model.backbone[arch]
                predicted = d0 + d1 * b + model.update[arch]
                say(f"| {arch} | {b} | {seconds:.3f} | {predicted:.3f} | {100 * (predicted / seconds - 1):+.0f}% |")

    if args.bandwidth_gbit or args.latency_us is not None:
        network = network.with_link(args.bandwidth_gbit, args.measured_gbit, args.latency_us)
    speed = args.cores_per_rank * args.thread_efficiency
    base = model.step(args.arch, "full", 1.0, args.classes, args.global_batch, 1, network, speed)
    say(f"\n## Predictions: {args.arch}, {args.classes:,} classes, {args.images:,} images per epoch\n")
    say(f"Ranks of {args.cores_per_rank} core(s) at thread efficiency {args.thread_efficiency:g} "
        f"(speed {speed:g}x one measured core); network: {network.name}; "
        f"gradient all-reduce {'after' if args.no_overlap else 'overlapped with'} backward.\n")
    curves = {}
    for mode in ["strong", "weak"]:
        for head, rate in [("full", 1.0), ("pfc", 0.1)]:
            say(f"### {mode} scaling, {'full softmax' if head == 'full' else 'Partial FC 0.1'}"
                + (f", global batch {args.global_batch}" if mode == "strong" else f", local batch {args.weak_batch}"))
            say()
            say("| P | local batch | step (s) | compute | head | head comm. | update | exposed all-reduce | "
                "img/s | efficiency | epoch |")
            say("|---|---|---|---|---|---|---|---|---|---|---|")
            one_b = args.global_batch if mode == "strong" else args.weak_batch
            one = model.step(args.arch, head, rate, args.classes, one_b, 1, network, speed)
            for p in [int(x) for x in args.ranks.split(",")]:
                b = args.global_batch // p if mode == "strong" else args.weak_batch
                if b < 2:
                    say(f"| {p} | {args.global_batch / p:g} | — | BatchNorm needs 2 samples per rank | | | | | | | |")
                    continue
                s = model.step(args.arch, head, rate, args.classes, b, p, network, speed, overlap=not args.no_overlap)
                eff = s["images_per_s"] / (p * one["images_per_s"])
                curves.setdefault((mode, head), []).append((p, eff))
                epoch_s = args.images / s["images_per_s"]
                epoch = f"{epoch_s / 3600:.1f} h" if epoch_s >= 7200 else f"{epoch_s / 60:.0f} min"
                say(f"| {p} | {b} | {s['step_s']:.3f} | {s['compute_s']:.3f} | {s['head_s']:.3f} | "
                    f"{s['head_comm_s']:.3f} | {s['update_s']:.3f} | {s['exposed_allreduce_s']:.3f} | "
                    f"{s['images_per_s']:.0f} | {100 * eff:.0f}% | {epoch} |")
            say()
    say(f"One rank alone: {base['images_per_s']:.1f} img/s, an epoch in {args.images / base['images_per_s'] / 3600:.0f} h.")

    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(out) + "\n")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (mode, head), pts in sorted(curves.items()):
            ax.plot([p for p, _ in pts], [100 * e for _, e in pts], "o-" if mode == "strong" else "s--",
                    label=f"{mode}, {head}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ranks P")
        ax.set_ylabel("predicted efficiency (%)")
        ax.set_title(f"{args.arch}, {network.name}, {args.cores_per_rank} core(s)/rank")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    main()
