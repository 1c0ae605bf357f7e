#!/usr/bin/env python3
"""Reference for the verification protocol (10-fold accuracy, ROC, TAR@FAR), written from the
protocol of InsightFace's verification.py (calculate_roc / calculate_accuracy) with NumPy and
scikit-learn, and the fixtures the Swift tests compare against.

- Distances are squared L2 distances; a pair is predicted "same" when dist < threshold.
- Thresholds are 0:0.01:4 (401 values, i * 0.01).
- Folds: KFold(n_splits=10, shuffle=False). For each fold the accuracy of every threshold is
  measured on the 9 training folds, the best threshold is the first argmax, and the accuracy is
  measured on the held-out fold. Mean and std (ddof 0) over folds.
- ROC: sklearn.metrics.roc_curve(issame, -dist, drop_intermediate=True).
- TAR@FAR: the ROC point nearest the FAR, min_index = argmin |fpr - far|, TAR = tpr[min_index].

Usage: python3 Scripts/reference/verification_reference.py [output directory]
(default: Tests/EvaluationTests/Fixtures next to this script's repository root).
"""
import json
import os
import sys

import numpy as np
from sklearn.metrics import roc_curve
from sklearn.model_selection import KFold

THRESHOLDS = np.arange(401) * 0.01
FARS = [1e-3, 1e-4]


def calculate_accuracy(threshold, dist, actual_issame):
    predict_issame = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict_issame, actual_issame))
    tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(actual_issame)))
    return float(tp + tn) / dist.size


def ten_fold(dist, issame, folds=10):
    kfold = KFold(n_splits=folds, shuffle=False)
    accuracies, best_thresholds = [], []
    for train, test in kfold.split(np.arange(len(dist))):
        acc_train = np.array([calculate_accuracy(t, dist[train], issame[train]) for t in THRESHOLDS])
        best = int(np.argmax(acc_train))
        accuracies.append(calculate_accuracy(THRESHOLDS[best], dist[test], issame[test]))
        best_thresholds.append(float(THRESHOLDS[best]))
    accuracies = np.array(accuracies)
    return accuracies, best_thresholds


def case(name, dist, issame):
    dist = np.asarray(dist, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    accuracies, best_thresholds = ten_fold(dist, issame)
    fpr, tpr, thresholds = roc_curve(issame, -dist, drop_intermediate=True)
    assert np.isinf(thresholds[0])
    tar = []
    for far in FARS:
        min_index = int(np.argmin(np.abs(fpr - far)))
        tar.append({"far": far, "tar": float(tpr[min_index])})
    return {
        "name": name,
        "distances": dist.tolist(),
        "issame": issame.tolist(),
        "fold_accuracies": accuracies.tolist(),
        "accuracy_mean": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "best_thresholds": best_thresholds,
        "best_threshold_mean": float(np.mean(best_thresholds)),
        "roc_fpr": fpr.tolist(),
        "roc_tpr": tpr.tolist(),
        # thresholds[0] is +inf, which JSON cannot hold.
        "roc_thresholds_after_first": thresholds[1:].tolist(),
        "tar_at_far": tar,
    }


def continuous(same, different, issame):
    """Distances drawn per label, clipped to [0, 4]; six decimals keep the fixtures small."""
    return np.round(np.clip(np.where(issame, same, different), 0.0, 4.0), 6)


def overlapping(rng, n):
    issame = rng.random(n) < 0.5
    return continuous(rng.normal(1.0, 0.3, n), rng.normal(1.6, 0.3, n), issame), issame


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "Tests", "EvaluationTests", "Fixtures")
    os.makedirs(out, exist_ok=True)
    cases = []

    # 600 pairs, LFW-like: overlapping distributions, blocks of positives and negatives.
    rng = np.random.default_rng(1)
    issame = np.array(([True] * 30 + [False] * 30) * 10)
    dist = continuous(rng.normal(1.0, 0.3, 600), rng.normal(1.6, 0.3, 600), issame)
    cases.append(case("overlap600", dist, issame))

    # Ties, and distances exactly on threshold grid points (i * 0.01, as the grid is built, not
    # rounded), where dist < threshold decides the side.
    rng = np.random.default_rng(2)
    issame = rng.random(300) < 0.5
    steps = np.where(issame, rng.integers(60, 150, 300), rng.integers(110, 200, 300))
    cases.append(case("ties_grid300", steps * 0.01, issame))

    # Unbalanced: 10% positives, 2000 pairs.
    rng = np.random.default_rng(3)
    issame = rng.random(2000) < 0.1
    dist = continuous(rng.normal(0.8, 0.35, 2000), rng.normal(1.5, 0.25, 2000), issame)
    cases.append(case("unbalanced2000", dist, issame))

    # A count not divisible by 10 (the first folds hold one extra pair).
    dist, issame = overlapping(np.random.default_rng(4), 257)
    cases.append(case("odd257", dist, issame))

    # Many negatives, so that FAR = 1e-3 falls between ROC points: 3000 pairs, 2500 negatives.
    rng = np.random.default_rng(5)
    issame = np.array([True] * 500 + [False] * 2500)
    rng.shuffle(issame)
    dist = continuous(rng.normal(0.7, 0.3, 3000), rng.normal(1.7, 0.25, 3000), issame)
    cases.append(case("negatives3000", dist, issame))

    for c in cases:
        with open(os.path.join(out, "verification_%s.json" % c["name"]), "w") as f:
            json.dump(c, f)
        print(c["name"], "acc %.6f +- %.6f" % (c["accuracy_mean"], c["accuracy_std"]),
              "thr %.4f" % c["best_threshold_mean"], "roc points", len(c["roc_fpr"]), c["tar_at_far"])


if __name__ == "__main__":
    main()
