#!/usr/bin/env python3
"""Side-by-side backbone benchmark: adaface-dist (Swift) against PyTorch on the same machine.

For every architecture it runs, R rounds, alternately (the order flips every round to cancel drift):

    adaface-dist bench backbone --arch A --batch B --threads T --steps N
    python3 Scripts/bench/torch_backbone.py --arch A --batch B --threads T --steps N --warmup W

Both print one JSON object as their last stdout line. The Swift one has train_images_per_s,
inference_images_per_s, train_gflops, sgemm_peak_gflops, train_fraction_of_peak and peak_rss_mb; the
PyTorch one is described in torch_backbone.py. This script prints the machine (CPU model, cores), the
exact commands, a table of medians over the rounds and the Swift/PyTorch ratios (train, inference,
memory), and with --json OUT writes every run and the summary.

The environment is passed through unchanged to the Swift runs (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE,
OPENBLAS_NUM_THREADS and the like are left as they are). With --jemalloc the PyTorch runs get
LD_PRELOAD of libjemalloc when it can be found (or the library given).

Usage:

    python3 Scripts/bench/compare_backbone.py --binary .build/release/adaface-dist \\
        [--archs ir18,ir50] [--batch 64] [--threads 2] [--steps 10] [--rounds 3] [--json OUT] [--jemalloc]

Exit code 0 when every run succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

TORCH_SCRIPT = Path(__file__).resolve().parent / "torch_backbone.py"
SWIFT_KEYS = ["train_images_per_s", "inference_images_per_s", "train_gflops", "sgemm_peak_gflops",
              "train_fraction_of_peak", "peak_rss_mb"]
TORCH_KEYS = ["train_images_per_s", "inference_images_per_s", "train_gflops", "peak_rss_mb"]
PASSED_ENV = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
              "MKL_NUM_THREADS", "LD_PRELOAD"]


def machine_info() -> dict:
    model = ""
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = value
    except OSError:
        pass
    model = model or platform.processor() or "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    features = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags.split()]
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_features": features,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "environment": {k: os.environ[k] for k in PASSED_ENV if k in os.environ},
    }


def find_jemalloc(explicit: str) -> Optional[str]:
    """A library name or path for LD_PRELOAD, checked to load; None when not available."""
    candidates = [explicit] if explicit != "auto" else []
    if explicit == "auto":
        found = ctypes.util.find_library("jemalloc")
        if found:
            candidates.append(found)
        candidates.append("libjemalloc.so.2")
    for name in candidates:
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    return None


def last_json_line(text: str) -> Optional[dict]:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None
    return None


def run_one(label: str, cmd: List[str], env: Dict[str, str], env_prefix: str, timeout: Optional[float]) -> dict:
    print(f"  {label:7s} $ {env_prefix}{shlex.join(cmd)}", flush=True)
    started = time.perf_counter()
    record = {"impl": label, "command": env_prefix + shlex.join(cmd)}
    try:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout)
    except FileNotFoundError:
        record["error"] = f"cannot run {cmd[0]}: not found"
        print(f"          {record['error']}")
        return record
    except subprocess.TimeoutExpired:
        record["error"] = f"timed out after {timeout} s"
        print(f"          {record['error']}")
        return record
    record["wall_s"] = round(time.perf_counter() - started, 2)
    record["returncode"] = proc.returncode
    result = last_json_line(proc.stdout)
    if proc.returncode != 0 or result is None:
        record["error"] = (f"exit code {proc.returncode}" if proc.returncode != 0
                           else "the last stdout line is not a JSON object")
        tail = (proc.stderr.strip().splitlines() + proc.stdout.strip().splitlines())[-15:]
        print(f"          FAILED: {record['error']}")
        for line in tail:
            print(f"          | {line}")
        return record
    record["result"] = result
    keys = SWIFT_KEYS if label == "swift" else TORCH_KEYS
    missing = [k for k in keys if k not in result]
    if missing:
        record["error"] = f"JSON lacks {', '.join(missing)}"
        print(f"          FAILED: {record['error']}")
        return record
    print(f"          train {result['train_images_per_s']:.2f} img/s, inference "
          f"{result['inference_images_per_s']:.2f} img/s, peak RSS {result['peak_rss_mb']:.0f} MB "
          f"({record['wall_s']:.0f} s)", flush=True)
    return record


def median_of(records: List[dict], key: str) -> Optional[float]:
    values = [r["result"][key] for r in records if "result" in r and r["result"].get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b not in (None, 0) else None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--binary", required=True, help="path of the adaface-dist executable")
    parser.add_argument("--archs", default="ir18,ir50", help="comma-separated architectures (default ir18,ir50)")
    parser.add_argument("--batch", type=int, default=64, help="batch size for both (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both (default 2)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps of the PyTorch runs (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each implementation per arch (default 3)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per run (default: none)")
    parser.add_argument("--json", type=Path, help="write every run and the summary to this file")
    parser.add_argument("--jemalloc", nargs="?", const="auto", default=None, metavar="LIB",
                        help="LD_PRELOAD libjemalloc for the PyTorch runs (found automatically, or LIB)")
    args = parser.parse_args(argv)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    if not archs or args.rounds < 1:
        parser.error("need at least one arch and one round")

    machine = machine_info()
    print(f"machine: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs "
          f"({machine['usable_cpus']} usable), features {' '.join(machine['cpu_features']) or '-'}, "
          f"kernel {machine['kernel']}")
    if machine["environment"]:
        print("environment: " + " ".join(f"{k}={v}" for k, v in machine["environment"].items()))

    swift_env = dict(os.environ)
    torch_env = dict(os.environ)
    torch_prefix = ""
    jemalloc = None
    if args.jemalloc is not None:
        jemalloc = find_jemalloc(args.jemalloc)
        if jemalloc is None:
            print(f"jemalloc: not found ({args.jemalloc}); the PyTorch runs use the default allocator")
        else:
            preload = f"{jemalloc}:{torch_env['LD_PRELOAD']}" if torch_env.get("LD_PRELOAD") else jemalloc
            torch_env["LD_PRELOAD"] = preload
            torch_prefix = f"LD_PRELOAD={shlex.quote(preload)} "
            print(f"jemalloc: PyTorch runs with LD_PRELOAD={preload}")

    runs: List[dict] = []
    commands: Dict[str, Dict[str, str]] = {}
    for arch in archs:
        common = ["--arch", arch, "--batch", str(args.batch), "--threads", str(args.threads),
                  "--steps", str(args.steps)]
        swift_cmd = [args.binary, "bench", "backbone"] + common
        torch_cmd = [sys.executable, str(TORCH_SCRIPT)] + common + ["--warmup", str(args.warmup)]
        commands[arch] = {"swift": shlex.join(swift_cmd), "pytorch": torch_prefix + shlex.join(torch_cmd)}
        print(f"\n{arch}: {args.rounds} round(s), batch {args.batch}, threads {args.threads}, steps {args.steps}")
        for r in range(args.rounds):
            order = [("swift", swift_cmd, swift_env, ""), ("pytorch", torch_cmd, torch_env, torch_prefix)]
            if r % 2 == 1:
                order.reverse()
            print(f" round {r + 1}")
            for label, cmd, env, prefix in order:
                record = run_one(label, cmd, env, prefix, args.timeout)
                record.update({"arch": arch, "round": r + 1})
                runs.append(record)

    summary = {}
    for arch in archs:
        swift = [r for r in runs if r["arch"] == arch and r["impl"] == "swift"]
        torch_runs = [r for r in runs if r["arch"] == arch and r["impl"] == "pytorch"]
        s = {k: median_of(swift, k) for k in SWIFT_KEYS}
        t = {k: median_of(torch_runs, k) for k in TORCH_KEYS}
        peak = s.get("sgemm_peak_gflops")
        summary[arch] = {
            "swift": s,
            "pytorch": t,
            "pytorch_train_fraction_of_swift_sgemm_peak": ratio(t["train_gflops"], peak),
            "ratio_swift_over_pytorch": {
                "train": ratio(s["train_images_per_s"], t["train_images_per_s"]),
                "inference": ratio(s["inference_images_per_s"], t["inference_images_per_s"]),
                "memory": ratio(s["peak_rss_mb"], t["peak_rss_mb"]),
            },
            "successful_runs": {"swift": sum("result" in r for r in swift),
                                "pytorch": sum("result" in r for r in torch_runs)},
        }

    print(f"\nmedians over {args.rounds} round(s); batch {args.batch}, threads {args.threads}, steps {args.steps}")
    header = (f"{'arch':6s} {'impl':8s} {'train img/s':>11s} {'infer img/s':>11s} {'train GFLOP/s':>13s} "
              f"{'% sgemm peak':>12s} {'peak RSS MB':>11s}")
    print(header)
    print("-" * len(header))
    for arch in archs:
        s = summary[arch]["swift"]
        t = summary[arch]["pytorch"]
        frac_s = s.get("train_fraction_of_peak")
        frac_t = summary[arch]["pytorch_train_fraction_of_swift_sgemm_peak"]
        print(f"{arch:6s} {'swift':8s} {fmt(s['train_images_per_s']):>11s} {fmt(s['inference_images_per_s']):>11s} "
              f"{fmt(s['train_gflops'], 1):>13s} {fmt(None if frac_s is None else 100 * frac_s, 0):>12s} "
              f"{fmt(s['peak_rss_mb'], 0):>11s}")
        print(f"{'':6s} {'pytorch':8s} {fmt(t['train_images_per_s']):>11s} {fmt(t['inference_images_per_s']):>11s} "
              f"{fmt(t['train_gflops'], 1):>13s} {fmt(None if frac_t is None else 100 * frac_t, 0):>12s} "
              f"{fmt(t['peak_rss_mb'], 0):>11s}")
        rt = summary[arch]["ratio_swift_over_pytorch"]
        print(f"{'':6s} {'swift/pt':8s} {fmt(rt['train']):>11s} {fmt(rt['inference']):>11s} {'':>13s} {'':>12s} "
              f"{fmt(rt['memory']):>11s}")
    print("(% sgemm peak: train GFLOP/s over the sgemm peak that adaface-dist measures at this thread count)")
    print("\ncommands:")
    for arch in archs:
        print(f"  {commands[arch]['swift']}")
        print(f"  {commands[arch]['pytorch']}")

    failed = [r for r in runs if "error" in r]
    if args.json:
        torch_version = next((r["result"].get("torch_version") for r in runs
                              if r["impl"] == "pytorch" and "result" in r), None)
        document = {
            "bench": "compare_backbone",
            "machine": machine,
            "settings": {"archs": archs, "batch": args.batch, "threads": args.threads, "steps": args.steps,
                         "warmup_pytorch": args.warmup, "rounds": args.rounds, "jemalloc": jemalloc},
            "torch_version": torch_version,
            "commands": commands,
            "summary": summary,
            "runs": runs,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    if failed:
        print(f"\n{len(failed)} run(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
