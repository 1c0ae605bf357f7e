#!/usr/bin/env python3
"""PyTorch CPU benchmark of the IResNet backbone: the peer adaface-dist is measured against.

Measures, for one architecture, batch size and thread count:

- training throughput: forward (train mode), a loss on the embedding, backward and an SGD step
  (momentum 0.9, weight decay 5e-4 on conv/linear weights, the linear bias and PReLU slopes, none on
  BatchNorm parameters: the same split as adaface-dist), in images/s;
- inference throughput: eval mode under torch.no_grad(), in images/s;
- forward GFLOP per image, counted from the model (2 x multiply-accumulates of every conv and linear),
  and the training GFLOP/s = 3 x forward GFLOP x train images/s;
- peak resident memory (getrusage ru_maxrss).

The model and the input are in channels_last memory format (the fast oneDNN path on CPU). Random input
in [-1, 1]; the loss pulls every embedding towards a fixed random unit vector per sample.

Usage:

    python3 Scripts/bench/torch_backbone.py --arch ir50 --batch 64 --threads 2 --steps 10 [--warmup 2]

Human-readable lines go first; the last stdout line is one JSON object:

    {"bench":"backbone","impl":"pytorch","arch":..,"batch":..,"threads":..,"steps":..,
     "train_images_per_s":..,"inference_images_per_s":..,"train_gflops":..,"peak_rss_mb":..,
     "torch_version":..,"forward_gflop_per_image":..}
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import List

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
from iresnet_torch import build_model, canonical_arch, count_forward_flops  # noqa: E402


def parameter_groups(model: nn.Module, weight_decay: float) -> List[dict]:
    """Weight decay on conv/linear weights, linear biases and PReLU slopes; none on BatchNorm."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                no_decay.append(param)
            else:
                decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--arch", default="ir50", help="ir18, ir34, ir50, ir100/ir101 (default ir50)")
    parser.add_argument("--batch", type=int, default=64, help="images per step (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps for each of train and inference")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement (default 2)")
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for weights and data")
    args = parser.parse_args(argv)
    if args.batch < 2:
        parser.error("--batch must be at least 2 (train-mode BatchNorm1d needs two samples)")
    if args.steps < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--steps >= 1, --warmup >= 0 and --threads >= 1 are required")
    arch = canonical_arch(args.arch)

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already fixed once parallel work has started; harmless here
    torch.manual_seed(args.seed)

    with torch.device("meta"):
        forward_flop = count_forward_flops(build_model(arch))  # shapes only, no arithmetic
    model = build_model(arch)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(parameter_groups(model, 5e-4), lr=args.lr, momentum=0.9)

    images = (torch.rand(args.batch, 3, 112, 112) * 2 - 1).contiguous(memory_format=torch.channels_last)
    targets = nn.functional.normalize(torch.randn(args.batch, 512), dim=1)

    print(f"torch {torch.__version__}, {platform.machine()}, threads {torch.get_num_threads()}, "
          f"mkldnn {torch.backends.mkldnn.is_available()}, channels_last")
    print(f"{arch}: {sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.2f}M trainable "
          f"parameters, forward {forward_flop / 1e9:.3f} GFLOP/image (conv + linear, 2 x MACs)")

    def train_step() -> float:
        optimizer.zero_grad(set_to_none=True)
        embedding, _ = model(images)
        loss = (1.0 - (embedding * targets).sum(dim=1)).mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    model.train()
    for _ in range(args.warmup):
        train_step()
    started = time.perf_counter()
    loss = 0.0
    for _ in range(args.steps):
        loss = train_step()
    train_seconds = time.perf_counter() - started
    train_ips = args.batch * args.steps / train_seconds
    train_gflops = 3.0 * forward_flop * train_ips / 1e9
    print(f"train:     {args.steps} steps x {args.batch} images in {train_seconds:.2f} s -> "
          f"{train_ips:.2f} images/s, {train_gflops:.1f} GFLOP/s (3 x forward), last loss {loss:.4f}")

    model.eval()
    with torch.no_grad():
        for _ in range(args.warmup):
            model(images)
        started = time.perf_counter()
        for _ in range(args.steps):
            model(images)
        infer_seconds = time.perf_counter() - started
    infer_ips = args.batch * args.steps / infer_seconds
    print(f"inference: {args.steps} steps x {args.batch} images in {infer_seconds:.2f} s -> "
          f"{infer_ips:.2f} images/s, {forward_flop * infer_ips / 1e9:.1f} GFLOP/s")
    rss = peak_rss_mb()
    print(f"peak RSS:  {rss:.0f} MB")

    result = {
        "bench": "backbone",
        "impl": "pytorch",
        "arch": arch,
        "batch": args.batch,
        "threads": args.threads,
        "steps": args.steps,
        "train_images_per_s": round(train_ips, 4),
        "inference_images_per_s": round(infer_ips, 4),
        "train_gflops": round(train_gflops, 3),
        "peak_rss_mb": round(rss, 1),
        "torch_version": torch.__version__,
        "forward_gflop_per_image": round(forward_flop / 1e9, 4),
    }
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
