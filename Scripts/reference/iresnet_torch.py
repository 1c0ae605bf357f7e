#!/usr/bin/env python3
"""Independent PyTorch reference of the IResNet backbone used by adaface-dist.

Written from the project design (DESIGN.md section 3), not copied from any other code base. It is the
ground truth the Swift backbone is compared against (Scripts/parity/check_parity.py) and the PyTorch
peer in the benchmarks (Scripts/bench/torch_backbone.py).

Architecture (input 112x112, BGR, normalised as (x/255 - 0.5)/0.5, NCHW):

    input_layer:  Conv3x3(3->64, s1, p1, no bias) -> BN2d(64) -> PReLU(64)
    body:         a flat sequence of BasicBlockIR units over the stages 64, 128, 256, 512;
                  the first unit of every stage has stride 2 (112 -> 56 -> 28 -> 14 -> 7)
    BasicBlockIR: res_layer = BN2d(in) -> Conv3x3(in->out, s1) -> BN2d(out) -> PReLU(out)
                              -> Conv3x3(out->out, stride s) -> BN2d(out)
                  shortcut  = MaxPool2d(1, s) when in == out, else Conv1x1(in->out, s, no bias) -> BN2d(out)
                  output    = res_layer(x) + shortcut(x)   (no activation after the add)
    output_layer: BN2d(512) -> Dropout(0.4) -> Flatten -> Linear(512*7*7 -> 512) -> BatchNorm1d(512, affine=False)

The forward pass returns (x / ||x||, ||x||) with the norm of shape (B, 1). The state_dict keys are the
official AdaFace ones, so checkpoints move between this model, the official code and adaface-dist
without any renaming.

Usage as a module:

    from iresnet_torch import build_model
    model = build_model("ir50")          # ir18, ir34, ir50, ir100 (alias ir101)
    embedding, norm = model(images)      # images: float (B, 3, 112, 112)

Self-test (parameter counts against DESIGN.md section 6, key layout, forward semantics):

    python3 Scripts/reference/iresnet_torch.py --selftest
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Dict, List, Tuple

import torch
from torch import nn

# Units per stage for every supported depth.
ARCH_UNITS: Dict[str, List[int]] = {
    "ir18": [2, 2, 2, 2],
    "ir34": [3, 4, 6, 3],
    "ir50": [3, 4, 14, 3],
    "ir100": [3, 13, 30, 3],
}
ARCH_ALIASES: Dict[str, str] = {"ir101": "ir100"}

STAGE_WIDTHS = [64, 128, 256, 512]
EMBEDDING_SIZE = 512
INPUT_SIZE = 112
BN_EPS = 1e-5
BN_MOMENTUM = 0.1
DROPOUT_P = 0.4
PRELU_INIT = 0.25

# Reference numbers from DESIGN.md section 6 (trainable parameters, GFLOP per image forward).
DESIGN_PARAMS_M = {"ir18": 24.0, "ir50": 43.6}
DESIGN_GFLOP = {"ir18": 5.2, "ir50": 12.6}


def canonical_arch(arch: str) -> str:
    """Normalise an architecture name ('IR-50', 'ir_50', 'ir50' ...) to a key of ARCH_UNITS."""
    name = arch.lower().replace("-", "").replace("_", "")
    name = ARCH_ALIASES.get(name, name)
    if name not in ARCH_UNITS:
        known = ", ".join(sorted(list(ARCH_UNITS) + list(ARCH_ALIASES)))
        raise ValueError(f"unknown architecture {arch!r}; known: {known}")
    return name


def _bn2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class BasicBlockIR(nn.Module):
    """One IResNet unit: pre-activation style residual branch plus a (possibly projecting) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.res_layer = nn.Sequential(
            _bn2d(in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False),
            _bn2d(out_channels),
            nn.PReLU(out_channels, init=PRELU_INIT),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            _bn2d(out_channels),
        )
        if in_channels == out_channels:
            # Pure subsampling (identity when stride == 1); has no parameters.
            self.shortcut_layer: nn.Module = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                _bn2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IResNet(nn.Module):
    """IResNet backbone returning (unit embedding, embedding norm)."""

    def __init__(self, units: List[int], embedding_size: int = EMBEDDING_SIZE):
        super().__init__()
        if len(units) != len(STAGE_WIDTHS):
            raise ValueError(f"expected {len(STAGE_WIDTHS)} stages, got {units}")
        self.units = list(units)
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False),
            _bn2d(64),
            nn.PReLU(64, init=PRELU_INIT),
        )
        blocks: List[nn.Module] = []
        in_channels = 64
        for width, count in zip(STAGE_WIDTHS, units):
            for i in range(count):
                blocks.append(BasicBlockIR(in_channels, width, stride=2 if i == 0 else 1))
                in_channels = width
        self.body = nn.Sequential(*blocks)
        spatial = INPUT_SIZE // 16  # four stride-2 stages: 112 -> 7
        self.output_layer = nn.Sequential(
            _bn2d(STAGE_WIDTHS[-1]),
            nn.Dropout(DROPOUT_P),
            nn.Flatten(),
            nn.Linear(STAGE_WIDTHS[-1] * spatial * spatial, embedding_size, bias=True),
            nn.BatchNorm1d(embedding_size, eps=BN_EPS, momentum=BN_MOMENTUM, affine=False),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_out, ReLU gain) conv/linear weights, zero biases, BN 1/0, PReLU 0.25."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.reset_running_stats()
                if m.affine:
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.PReLU):
                nn.init.constant_(m.weight, PRELU_INIT)

    @property
    def dropout(self) -> nn.Dropout:
        """The dropout of the output layer (set .p = 0 for deterministic train-mode checks)."""
        return self.output_layer[1]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.input_layer(x)
        x = self.body(x)
        x = self.output_layer(x)
        norm = torch.linalg.vector_norm(x, ord=2, dim=1, keepdim=True)
        return x / norm, norm


def build_model(arch: str) -> IResNet:
    """Build an IResNet by name: ir18, ir34, ir50, ir100 (ir101 is an alias of ir100)."""
    return IResNet(ARCH_UNITS[canonical_arch(arch)])


def count_trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_forward_flops(model: nn.Module, batch: int = 1, input_size: int = INPUT_SIZE) -> int:
    """FLOPs of one forward pass per image: 2 x multiply-accumulates of every Conv2d and Linear.

    Counted from the model itself with forward hooks on a meta-device copy of the input shapes, so it
    costs no arithmetic. BN, PReLU, pooling and the final normalisation are not counted.
    """
    macs = 0

    def conv_hook(module: nn.Conv2d, inputs, output):
        nonlocal macs
        kh, kw = module.kernel_size
        per_output = (module.in_channels // module.groups) * kh * kw
        macs += output.numel() * per_output

    def linear_hook(module: nn.Linear, inputs, output):
        nonlocal macs
        macs += output.numel() * module.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        with torch.no_grad():
            model(torch.zeros(batch, 3, input_size, input_size, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return 2 * macs // batch


def expected_state_dict_keys(arch: str) -> List[str]:
    """The official AdaFace state_dict keys for an architecture, derived from the key specification."""
    units = ARCH_UNITS[canonical_arch(arch)]
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["input_layer.0.weight"] + [f"input_layer.1.{s}" for s in bn] + ["input_layer.2.weight"]
    index = 0
    in_channels = 64
    for width, count in zip(STAGE_WIDTHS, units):
        for _ in range(count):
            p = f"body.{index}"
            keys += [f"{p}.res_layer.0.{s}" for s in bn]
            keys += [f"{p}.res_layer.1.weight"]
            keys += [f"{p}.res_layer.2.{s}" for s in bn]
            keys += [f"{p}.res_layer.3.weight"]
            keys += [f"{p}.res_layer.4.weight"]
            keys += [f"{p}.res_layer.5.{s}" for s in bn]
            if in_channels != width:
                keys += [f"{p}.shortcut_layer.0.weight"]
                keys += [f"{p}.shortcut_layer.1.{s}" for s in bn]
            in_channels = width
            index += 1
    keys += [f"output_layer.0.{s}" for s in bn]
    keys += ["output_layer.3.weight", "output_layer.3.bias"]
    keys += ["output_layer.4.running_mean", "output_layer.4.running_var", "output_layer.4.num_batches_tracked"]
    return keys


# ----------------------------------------------------------------------------------------------------
# Self-test
# ----------------------------------------------------------------------------------------------------

def _selftest() -> int:
    torch.manual_seed(0)
    failures: List[str] = []

    def check(condition: bool, message: str) -> None:
        print(("  ok    " if condition else "  FAIL  ") + message)
        if not condition:
            failures.append(message)

    print("parameter counts (trainable) and forward GFLOP per 112x112 image:")
    for arch in ["ir18", "ir34", "ir50", "ir100"]:
        with torch.device("meta"):
            meta_model = build_model(arch)
        n = count_trainable_parameters(meta_model)
        buffers = sum(b.numel() for b in meta_model.buffers())
        gflop = count_forward_flops(meta_model) / 1e9
        line = f"{arch:6s} {n:>12,d} params ({n / 1e6:.2f}M), buffers {buffers:,d}, {gflop:.2f} GFLOP/image"
        if arch in DESIGN_PARAMS_M:
            line += f"  [DESIGN: {DESIGN_PARAMS_M[arch]}M, {DESIGN_GFLOP[arch]} GFLOP]"
        print("  " + line)
        if arch in DESIGN_PARAMS_M:
            check(round(n / 1e6, 1) == DESIGN_PARAMS_M[arch],
                  f"{arch} parameter count {n / 1e6:.2f}M rounds to DESIGN {DESIGN_PARAMS_M[arch]}M")
            check(round(gflop, 1) == DESIGN_GFLOP[arch],
                  f"{arch} forward {gflop:.2f} GFLOP rounds to DESIGN {DESIGN_GFLOP[arch]} GFLOP")
        check(list(meta_model.state_dict().keys()) == expected_state_dict_keys(arch),
              f"{arch} state_dict keys and order follow the official layout "
              f"({len(meta_model.state_dict())} entries)")
    check(canonical_arch("IR-101") == "ir100" and canonical_arch("ir_50") == "ir50", "arch aliases")

    print("structure and forward semantics (ir18, batch 3):")
    model = build_model("ir18")
    sd = model.state_dict()
    shapes_ok = (
        tuple(sd["input_layer.0.weight"].shape) == (64, 3, 3, 3)
        and tuple(sd["body.0.res_layer.4.weight"].shape) == (64, 64, 3, 3)
        and tuple(sd["body.2.shortcut_layer.0.weight"].shape) == (128, 64, 1, 1)
        and tuple(sd["output_layer.3.weight"].shape) == (512, 512 * 7 * 7)
        and tuple(sd["output_layer.4.running_var"].shape) == (512,)
        and "body.0.shortcut_layer.0.weight" not in sd
        and sd["input_layer.1.num_batches_tracked"].dtype == torch.int64
    )
    check(shapes_ok, "selected tensor shapes/dtypes (conv OIHW, linear (out,in), int64 counters)")
    strides = [(blk.res_layer[1].stride, blk.res_layer[4].stride) for blk in model.body]
    check(strides == [((1, 1), (2, 2)), ((1, 1), (1, 1))] * 4,
          "first unit of every stage downsamples in the second conv")
    check(all(float(m.weight.detach().min()) == PRELU_INIT == float(m.weight.detach().max())
              for m in model.modules() if isinstance(m, nn.PReLU)), "PReLU slopes start at 0.25")
    conv = model.body[0].res_layer[1].weight.detach()
    expected_std = math.sqrt(2.0 / (conv.shape[0] * 9))
    check(abs(float(conv.std()) / expected_std - 1) < 0.05,
          f"Kaiming fan_out std {float(conv.std()):.4f} vs {expected_std:.4f}")
    check(float(model.output_layer[3].bias.detach().abs().max()) == 0.0, "linear bias starts at zero")

    x = torch.randn(3, 3, INPUT_SIZE, INPUT_SIZE)
    model.train()
    emb, norm = model(x)
    check(tuple(emb.shape) == (3, 512) and tuple(norm.shape) == (3, 1), "output shapes (B,512), (B,1)")
    check(torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5), "embeddings have unit norm")
    check(int(model.input_layer[1].num_batches_tracked) == 1, "train forward counts BN batches")
    model.eval()
    with torch.no_grad():
        e1, n1 = model(x)
        e2, n2 = model(x[:1])
    check(torch.allclose(e1[:1], e2, atol=1e-5) and torch.allclose(n1[:1], n2, rtol=1e-5),
          "eval mode is per-sample (running statistics, no dropout)")
    with torch.no_grad():
        raw = model.output_layer(model.body(model.input_layer(x)))
    check(torch.allclose(e1 * n1, raw, rtol=1e-5, atol=1e-5) and
          torch.allclose(n1[:, 0], raw.norm(dim=1), rtol=1e-5),
          "embedding * norm reconstructs the raw output; norm is its L2 norm")

    clone = build_model("ir18")
    missing, unexpected = clone.load_state_dict(model.state_dict(), strict=True)
    check(not missing and not unexpected, "state_dict round-trips strictly")
    if failures:
        print(f"selftest: FAIL ({len(failures)} checks)")
        return 1
    print("selftest: PASS")
    return 0


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--selftest", action="store_true",
                        help="check parameter counts, FLOPs, state_dict keys and forward semantics")
    parser.add_argument("--arch", default=None,
                        help="print the parameter count, GFLOP and state_dict of this architecture")
    args = parser.parse_args(argv)
    if args.selftest:
        return _selftest()
    if args.arch:
        with torch.device("meta"):
            model = build_model(args.arch)
        print(f"{canonical_arch(args.arch)}: {count_trainable_parameters(model):,d} trainable parameters, "
              f"{count_forward_flops(model) / 1e9:.3f} GFLOP/image forward")
        for k, v in model.state_dict().items():
            print(f"  {k:45s} {str(v.dtype).replace('torch.', ''):8s} {tuple(v.shape)}")
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
