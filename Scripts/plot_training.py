#!/usr/bin/env python3
"""Loss and verification accuracy over training, from a run folder's metrics (rank 0's JSONL).

    python3 Scripts/plot_training.py runs/synth_small [runs/other ...] --out training.png

Needs matplotlib. Training rows carry "loss"; validation rows carry "validation" and "accuracy".
"""
import argparse
import json
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(run):
    path = os.path.join(run, "metrics", "rank-00000.jsonl")
    steps, losses, validation = [], [], {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            if "validation" in row:
                validation.setdefault(row["validation"], []).append((row["step"], row["accuracy"]))
            elif row.get("loss") is not None:
                steps.append(row["step"])
                losses.append(row["loss"])
    return steps, losses, validation


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders (with metrics/rank-00000.jsonl)")
    parser.add_argument("--out", default="training.png", help="output PNG")
    args = parser.parse_args()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for run in args.runs:
        steps, losses, validation = read(run)
        name = os.path.basename(os.path.normpath(run))
        loss_ax.plot(steps, losses, label=name)
        for set_name, points in validation.items():
            acc_ax.plot([s for s, _ in points], [100 * a for _, a in points], marker="o", label=f"{name}: {set_name}")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("Training loss")
    loss_ax.legend()
    acc_ax.set_xlabel("step")
    acc_ax.set_ylabel("verification accuracy (%)")
    acc_ax.set_title("Verification during training")
    acc_ax.legend()
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
