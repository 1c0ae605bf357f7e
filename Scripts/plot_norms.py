#!/usr/bin/env python3
"""Feature norm against image quality, from the CSV of `adaface-dist analyze-norms --csv`.

    python3 Scripts/plot_norms.py norms.csv [more.csv ...] --out norms.png [--label AdaFace --label ArcFace]

Needs matplotlib. One scatter per CSV (columns index, identity, quality, norm) with a binned mean.
"""
import argparse
import csv

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", nargs="+", help="analyze-norms CSV files")
    parser.add_argument("--label", action="append", default=[], help="a legend label per CSV")
    parser.add_argument("--out", default="norms.png", help="output PNG")
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for i, path in enumerate(args.csv):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        q = [float(r["quality"]) for r in rows]
        n = [float(r["norm"]) for r in rows]
        label = args.label[i] if i < len(args.label) else path
        points = ax.scatter(q, n, s=8, alpha=0.35, label=label)
        edges = [k / 10 for k in range(11)]
        centers, means = [], []
        for lo, hi in zip(edges, edges[1:]):
            members = [nv for qv, nv in zip(q, n) if lo <= qv < hi or (hi == 1.0 and qv == 1.0)]
            if members:
                centers.append((lo + hi) / 2)
                means.append(sum(members) / len(members))
        ax.plot(centers, means, color=tuple(points.get_facecolor()[0][:3]), linewidth=2, label=f"{label}: mean per 0.1 of quality")
    ax.set_xlabel("image quality level (synthetic, 1 = clean)")
    ax.set_ylabel("feature norm")
    ax.set_title("Feature norm against image quality")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
