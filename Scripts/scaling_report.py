#!/usr/bin/env python3
"""Summarise the runs of Scripts/scaling.sh into a CSV and a PNG.

Each run folder holds run.txt ("mode arch head sample_rate ranks global_batch hosts classes"), the ranks'
metrics (metrics/rank-NNNNN.jsonl, one line per step with the time split) and rss-rankN (peak
resident bytes of each rank). The first step is a warm-up and is left out.

Per step, the step time is the slowest rank's (the ranks meet in the collectives); images/s is the
global batch over the mean step time. Efficiency compares with the same configuration at P = 1 on
one core: E(P) = X(P) / (c(P) * X(1)), where c(P) = min(P, cores) is the number of cores the P
single-threaded ranks can use. With more ranks than cores, c(P) stays at the core count, so E then
says what distributing costs on fixed hardware, not what more machines would give.
"""
import argparse
import csv
import glob
import json
import os
import sys

PARTS = ["data_s", "forward_s", "head_s", "backward_s", "communication_s", "update_s"]


def load_run(folder):
    with open(os.path.join(folder, "run.txt")) as f:
        mode, arch, head, rate, ranks, batch, hosts, classes = f.read().split()
    ranks, batch = int(ranks), int(batch)
    steps = {}
    for path in sorted(glob.glob(os.path.join(folder, "metrics", "rank-*.jsonl"))):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if "forward_s" not in row:
                    continue
                steps.setdefault(row["step"], []).append(row)
    measured = [rows for step, rows in sorted(steps.items()) if step > 1]
    if not measured or any(len(rows) != ranks for rows in measured):
        raise SystemExit(f"{folder}: expected {ranks} rank(s) of metrics for every step after the first")
    step_times = [max(sum(r[p] for p in PARTS) for r in rows) for rows in measured]
    step_s = sum(step_times) / len(step_times)
    split = {p: sum(r[p] for rows in measured for r in rows) / (len(measured) * ranks) for p in PARTS}
    rss = []
    for path in glob.glob(os.path.join(folder, "rss-rank*")):
        with open(path) as f:
            rss.append(int(f.read().strip()))
    return {
        "mode": mode, "arch": arch, "head": head, "sample_rate": float(rate), "classes": int(classes), "hosts": hosts,
        "ranks": ranks, "local_batch": batch // ranks, "global_batch": batch, "steps": len(measured),
        "step_s": step_s, "images_per_s": batch / step_s, "images_per_s_per_rank": batch / step_s / ranks,
        **split, "peak_rss_mb_max": max(rss) / 2**20 if rss else float("nan"),
    }


def add_efficiency(rows, cores):
    base = {(r["mode"], r["arch"], r["head"], r["hosts"]): r for r in rows if r["ranks"] == 1}
    for r in rows:
        b = base.get((r["mode"], r["arch"], r["head"], r["hosts"]))
        r["cores_used"] = min(r["ranks"], cores)
        r["efficiency"] = r["images_per_s"] / (r["cores_used"] * b["images_per_s"]) if b else float("nan")


def write_csv(rows, path):
    columns = ["mode", "arch", "head", "sample_rate", "classes", "hosts", "ranks", "cores_used", "local_batch", "global_batch",
               "steps", "step_s", "images_per_s", "images_per_s_per_rank", "efficiency", *PARTS, "peak_rss_mb_max"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([f"{r[c]:.4g}" if isinstance(r[c], float) else r[c] for c in columns])


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    series = sorted({(r["arch"], r["head"], r["hosts"]) for r in rows})
    tag = lambda arch, head, hosts: f"{arch}, {head}" + (", TCP hosts" if hosts == "netns" else "")
    for col, mode in enumerate(["strong", "weak"]):
        ax = axes[0][col]
        for arch, head, hosts in series:
            pts = sorted((r["ranks"], r["images_per_s"], r["efficiency"]) for r in rows
                         if r["mode"] == mode and r["arch"] == arch and r["head"] == head and r["hosts"] == hosts)
            if not pts:
                continue
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if hosts == "local" else "^:",
                            label=tag(arch, head, hosts))
            for p, x, e in pts:
                ax.annotate(f"{100 * e:.0f}%", (p, x), textcoords="offset points", xytext=(4, 4), fontsize=8,
                            color=line.get_color())
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ranks P (1 thread each)")
        ax.set_ylabel("images/s (global)")
        ax.set_title(f"{mode} scaling (labels: efficiency against the cores used)")
        if ax.lines:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)

    ax = axes[1][0]
    for arch, head, hosts in series:
        for mode, style in [("strong", "o-"), ("weak", "s--")]:
            pts = sorted((r["ranks"], r["efficiency"]) for r in rows
                         if r["mode"] == mode and r["arch"] == arch and r["head"] == head and r["hosts"] == hosts)
            if pts:
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], style if hosts == "local" else "^:",
                        label=f"{tag(arch, head, hosts)}, {mode}")
    ax.axhline(100, color="gray", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("ranks P")
    ax.set_ylabel("efficiency (%)")
    ax.set_title("efficiency: X(P) / (min(P, cores) · X(1))")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)

    ax = axes[1][1]
    labels, bottoms = [], None
    ordered = sorted(rows, key=lambda r: (r["mode"], r["arch"], r["head"], r["ranks"]))
    names = {"data_s": "data", "forward_s": "forward", "head_s": "head", "backward_s": "backward",
             "communication_s": "exposed comm.", "update_s": "update"}
    x = range(len(ordered))
    bottoms = [0.0] * len(ordered)
    for part in PARTS:
        values = [r[part] for r in ordered]
        ax.bar(x, values, bottom=bottoms, label=names[part])
        bottoms = [b + v for b, v in zip(bottoms, values)]
    ax.set_xticks(list(x))
    ax.set_xticklabels([f"{r['mode'][0]} {r['arch']} {r['head']} P{r['ranks']}{' tcp' if r['hosts'] == 'netns' else ''}"
                        for r in ordered],
                       rotation=90, fontsize=7)
    ax.set_ylabel("seconds per step (mean over ranks)")
    ax.set_title("where a step goes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="folder of run folders")
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--csv", required=True)
    parser.add_argument("--plot")
    args = parser.parse_args()
    folders = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(args.runs, "*", "run.txt")))
    if not folders:
        sys.exit(f"no finished runs under {args.runs}")
    rows = [load_run(f) for f in folders]
    add_efficiency(rows, args.cores)
    rows.sort(key=lambda r: (r["mode"], r["arch"], r["head"], r["hosts"], r["ranks"]))
    write_csv(rows, args.csv)
    print(f"{'mode':6} {'arch':5} {'head':4} {'hosts':5} {'P':>2} {'batch':>9} {'img/s':>7} {'eff':>5} {'step s':>7} "
          f"{'fwd':>6} {'head':>6} {'bwd':>6} {'comm':>6} {'upd':>6} {'MB/rank':>8}")
    for r in rows:
        print(f"{r['mode']:6} {r['arch']:5} {r['head']:4} {r['hosts']:5} {r['ranks']:>2} {r['local_batch']:>4}/{r['global_batch']:<4} "
              f"{r['images_per_s']:7.2f} {100 * r['efficiency']:4.0f}% {r['step_s']:7.2f} {r['forward_s']:6.2f} "
              f"{r['head_s']:6.2f} {r['backward_s']:6.2f} {r['communication_s']:6.2f} {r['update_s']:6.2f} "
              f"{r['peak_rss_mb_max']:8.0f}")
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
