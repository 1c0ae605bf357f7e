#!/usr/bin/env python3
"""ROC curves of verification sets, from the JSON of `adaface-dist eval --json`.

    python3 Scripts/plot_roc.py eval.json [more.json ...] --out roc.png

Needs matplotlib. The false-accept rate is drawn on a log axis, as face verification results are read.
"""
import argparse
import json

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", nargs="+", help="eval JSON files")
    parser.add_argument("--out", default="roc.png", help="output PNG")
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for path in args.json:
        with open(path) as f:
            report = json.load(f)
        for s in report["sets"]:
            fpr, tpr = s["roc"]["fpr"], s["roc"]["tpr"]
            points = [(x, y) for x, y in zip(fpr, tpr) if x > 0]
            label = f"{s['name']} ({100 * s['accuracy_mean']:.2f}%) — {report['model']}"
            ax.plot([x for x, _ in points], [y for _, y in points], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title("Verification ROC")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
