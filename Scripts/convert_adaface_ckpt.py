#!/usr/bin/env python3
"""Convert an official AdaFace PyTorch Lightning checkpoint into adaface-dist safetensors files.

The official AdaFace training code saves a Lightning `.ckpt`: a torch.save'd dict whose `state_dict`
holds the backbone under `model.<key>` (IResNet keys such as `model.input_layer.0.weight`) and the
AdaFace head under `head.kernel` with shape (512, C), plus the head's norm statistics
(`head.batch_mean`, `head.batch_std`, `head.t`).

Outputs:

- `backbone.safetensors`: every backbone entry without the `model.` prefix, in the PyTorch layout,
  float32 (`num_batches_tracked` int64), metadata {"arch": ir18|ir34|ir50|ir100,
  "source": "adaface-lightning"}. The architecture is inferred from the number of body units
  (8 -> ir18, 16 -> ir34, 24 -> ir50, 49 -> ir100) and the keys and shapes are checked against the
  reference model (Scripts/reference/iresnet_torch.py).
- `head.safetensors` (optional, --head): `kernel` stored as (C, 512), one row per class, float32,
  metadata class_start=0, class_count=C, total_classes=C, source=adaface-lightning, plus
  adaface_batch_mean / adaface_batch_std when the checkpoint has the head's norm statistics.

Loading: torch.load(weights_only=True) first. Lightning checkpoints also pickle other objects
(hyper-parameters, callbacks, loop state); when weights_only refuses them, the checkpoint is read with
a restricted unpickler that rebuilds tensors and replaces every other object by an inert stand-in,
so no code from the file runs. Only with --trust-checkpoint is a full torch.load(weights_only=False)
tried as a last resort (that can execute code stored in the file).

Usage:

    python3 Scripts/convert_adaface_ckpt.py adaface_ir50_webface4m.ckpt --out backbone.safetensors \\
        [--head head.safetensors] [--arch ir50]
    python3 Scripts/convert_adaface_ckpt.py --self-test
"""

from __future__ import annotations

import argparse
import builtins
import collections
import copyreg
import io
import os
import pickle
import re
import shutil
import sys
import tempfile
import types
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))
from iresnet_torch import ARCH_UNITS, build_model, canonical_arch  # noqa: E402

UNITS_TO_ARCH = {sum(units): arch for arch, units in ARCH_UNITS.items()}  # 8, 16, 24, 49
EMBEDDING_SIZE = 512


class ConversionError(Exception):
    pass


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------

class _Placeholder(dict):
    """Inert stand-in for an object of a class the restricted loader does not rebuild.

    It accepts whatever pickle hands it (constructor arguments, dict items, list items, state) and keeps
    it as data; none of the original class's code runs.
    """

    def __init__(self, *args, **kwargs):
        dict.__init__(self)
        self.__dict__["_args"] = args
        self.__dict__["_kwargs"] = kwargs

    def __setstate__(self, state):
        self.__dict__["_state"] = state

    def append(self, item):
        self.__dict__.setdefault("_items", []).append(item)

    def extend(self, items):
        self.__dict__.setdefault("_items", []).extend(items)


_PLACEHOLDERS: Dict[str, type] = {}


def _stand_in_class(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _PLACEHOLDERS:
        _PLACEHOLDERS[key] = type(f"Placeholder[{key}]", (_Placeholder,), {})
    return _PLACEHOLDERS[key]


_SAFE_BUILTINS = {"set", "frozenset", "tuple", "list", "dict", "complex", "slice", "bytearray", "bytes",
                  "int", "float", "str", "bool", "object"}


def _allowed_global(module: str, name: str):
    """The globals the restricted loader may use: tensor rebuilding and plain containers."""
    if module == "torch._utils" and name.startswith("_rebuild_"):
        return getattr(sys.modules["torch._utils"], name)
    if module == "torch":
        obj = getattr(torch, name, None)
        if isinstance(obj, (torch.dtype, torch.layout, torch.memory_format)) or obj in (torch.Size, torch.device):
            return obj
    if module == "torch._tensor" and name == "_rebuild_from_type_v2":
        return getattr(sys.modules["torch._tensor"], name)
    if module == "torch.nn.parameter" and name == "Parameter":
        return torch.nn.Parameter
    if module == "collections" and name == "OrderedDict":
        return collections.OrderedDict
    if module == "builtins" and name in _SAFE_BUILTINS:
        return getattr(builtins, name)
    if module == "copyreg" and name == "_reconstructor":
        return copyreg._reconstructor
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        obj = _allowed_global(module, name)
        return obj if obj is not None else _stand_in_class(module, name)


def _restricted_load(fileobj, **kwargs):
    return _RestrictedUnpickler(fileobj, **kwargs).load()


_restricted_pickle = types.ModuleType("adaface_restricted_pickle")
_restricted_pickle.Unpickler = _RestrictedUnpickler
_restricted_pickle.load = _restricted_load
_restricted_pickle.Pickler = pickle.Pickler
_restricted_pickle.dump = pickle.dump
_restricted_pickle.__version__ = getattr(pickle, "format_version", "4.0")


def load_checkpoint(path: Path, trust: bool) -> Tuple[object, str]:
    """torch.load with weights_only=True, else the restricted unpickler, else (trust) full unpickling."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True), "torch.load(weights_only=True)"
    except Exception as err:  # weights_only raises UnpicklingError (or others) for unknown globals
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        first = (f"unsupported global {found.group(1)}" if found
                 else (text.strip().splitlines() or [type(err).__name__])[0][:200])
        print(f"note: torch.load(weights_only=True) refused the checkpoint ({first}); it holds objects "
              f"besides tensors (usual for Lightning). Reading it with a restricted unpickler that rebuilds "
              f"tensors and replaces every other object by an inert stand-in.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
        return obj, "restricted unpickler (non-tensor objects replaced by inert stand-ins)"
    except Exception as err:
        if not trust:
            raise ConversionError(
                f"the restricted unpickler could not read {path} either ({type(err).__name__}: {err}). "
                f"If you trust the file, rerun with --trust-checkpoint to allow full unpickling "
                f"(it can execute code stored in the checkpoint).") from err
        print(f"warning: restricted unpickler failed ({type(err).__name__}: {err}); --trust-checkpoint given, "
              f"loading with torch.load(weights_only=False), which can execute code stored in the file.")
    return torch.load(path, map_location="cpu", weights_only=False), "torch.load(weights_only=False)"


# ----------------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------------

def infer_arch(keys: List[str]) -> str:
    units = sorted({int(k.split(".")[1]) for k in keys if k.startswith("body.") and k.split(".")[1].isdigit()})
    if not units:
        raise ConversionError("no body.N keys: this is not an IResNet backbone state_dict")
    if units != list(range(len(units))):
        raise ConversionError(f"body units are not numbered 0..N-1 (found {len(units)} distinct, max {units[-1]})")
    if len(units) not in UNITS_TO_ARCH:
        known = ", ".join(f"{n} -> {a}" for n, a in sorted(UNITS_TO_ARCH.items()))
        raise ConversionError(f"{len(units)} body units match no known IResNet ({known})")
    return UNITS_TO_ARCH[len(units)]


def extract_state_dict(obj: object) -> Dict[str, object]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return obj["state_dict"]
    if isinstance(obj, dict) and any(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise ConversionError("the checkpoint has no 'state_dict' and is not a state_dict itself")


def split_state_dict(sd: Dict[str, object]) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    backbone = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    if not backbone and any(k.startswith("input_layer.") for k in sd):
        print("note: no 'model.' prefix in the state_dict; treating its backbone keys as unprefixed")
        backbone = {k: v for k, v in sd.items()
                    if k.split(".")[0] in ("input_layer", "body", "output_layer")}
    head = {k[len("head."):]: v for k, v in sd.items() if k.startswith("head.")}
    if not backbone:
        raise ConversionError("no backbone entries ('model.*') in the state_dict")
    bad = [k for k, v in list(backbone.items()) + list(head.items()) if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"non-tensor state_dict entries: {', '.join(bad[:10])}")
    return backbone, head


def convert_backbone(backbone: Dict[str, torch.Tensor], arch_hint: Optional[str]) -> Tuple[Dict[str, torch.Tensor], str]:
    arch = infer_arch(list(backbone))
    if arch_hint is not None and canonical_arch(arch_hint) != arch:
        raise ConversionError(f"--arch {arch_hint} given, but the checkpoint has the body of {arch}")
    with torch.device("meta"):
        expected = build_model(arch).state_dict()
    missing = [k for k in expected if k not in backbone]
    unexpected = [k for k in backbone if k not in expected]
    shapes = [f"{k}: {tuple(backbone[k].shape)} expected {tuple(v.shape)}" for k, v in expected.items()
              if k in backbone and tuple(backbone[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        lines = [f"  missing     {k}" for k in missing[:20]] + [f"  unexpected  {k}" for k in unexpected[:20]]
        lines += [f"  shape       {s}" for s in shapes[:20]]
        raise ConversionError(f"the backbone does not match {arch} ({len(missing)} missing, {len(unexpected)} "
                              f"unexpected, {len(shapes)} wrong shapes):\n" + "\n".join(lines))
    out: Dict[str, torch.Tensor] = {}
    for k in expected:  # the official order
        t = backbone[k].detach().cpu()
        if k.endswith("num_batches_tracked"):
            out[k] = t.to(torch.int64).contiguous()
        else:
            if not t.is_floating_point():
                raise ConversionError(f"{k} has dtype {t.dtype}, expected a floating-point tensor")
            out[k] = t.to(torch.float32).contiguous()
    return out, arch


def convert_head(head: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    if "kernel" not in head:
        raise ConversionError("--head given, but the checkpoint has no head.kernel")
    kernel = head["kernel"].detach().cpu()
    if kernel.dim() != 2 or kernel.shape[0] != EMBEDDING_SIZE:
        raise ConversionError(f"head.kernel has shape {tuple(kernel.shape)}, expected ({EMBEDDING_SIZE}, C)")
    classes = int(kernel.shape[1])
    metadata = {"class_start": "0", "class_count": str(classes), "total_classes": str(classes),
                "source": "adaface-lightning"}
    for name in ("batch_mean", "batch_std"):
        if name in head and head[name].numel() == 1:
            metadata[f"adaface_{name}"] = repr(float(head[name].reshape(())))
    return {"kernel": kernel.t().to(torch.float32).contiguous()}, metadata


def save_atomic(tensors: Dict[str, torch.Tensor], path: Path, metadata: Dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    # safetensors creates the file owner-only; give it the usual permissions of a new file.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(partial, 0o666 & ~umask)
    os.replace(partial, path)


def convert(ckpt: Path, out: Path, head_out: Optional[Path], arch_hint: Optional[str], trust: bool) -> dict:
    obj, how = load_checkpoint(ckpt, trust)
    sd = extract_state_dict(obj)
    backbone, head = split_state_dict(sd)
    tensors, arch = convert_backbone(backbone, arch_hint)
    save_atomic(tensors, out, {"arch": arch, "source": "adaface-lightning"})
    params = sum(t.numel() for k, t in tensors.items()
                 if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    summary = {"loaded_with": how, "arch": arch, "backbone_tensors": len(tensors), "backbone_parameters": params,
               "backbone_file": str(out), "ignored_keys": sorted(k for k in sd if not k.startswith(("model.", "head.")))}
    print(f"loaded {ckpt} with {how}")
    print(f"backbone: {arch}, {len(tensors)} tensors, {params:,d} parameters -> {out}")
    if head_out is not None:
        head_tensors, metadata = convert_head(head)
        save_atomic(head_tensors, head_out, metadata)
        summary.update({"head_file": str(head_out), "classes": int(metadata["class_count"]),
                        "head_metadata": metadata})
        print(f"head: kernel {tuple(head_tensors['kernel'].shape)} (classes x 512) -> {head_out}; metadata {metadata}")
    elif "kernel" in head:
        print(f"head: head.kernel {tuple(head['kernel'].shape)} present, not written (use --head)")
    if summary["ignored_keys"]:
        print(f"ignored state_dict entries: {', '.join(summary['ignored_keys'][:10])}")
    return summary


# ----------------------------------------------------------------------------------------------------
# Self-test
# ----------------------------------------------------------------------------------------------------

class _FakeAttributeDict(dict):
    """Stands in for Lightning's AttributeDict hyper-parameter container in the self-test."""

    def __getattr__(self, key):
        return self[key]


def _fake_ckpt(arch: str, classes: int, extras: str) -> Tuple[dict, torch.nn.Module, torch.Tensor]:
    torch.manual_seed(3)
    model = build_model(arch)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(1234)
                if m.affine:
                    m.weight.normal_(1, 0.1)
                    m.bias.normal_(0, 0.1)
    kernel = torch.nn.functional.normalize(torch.randn(EMBEDDING_SIZE, classes), dim=0)
    sd = collections.OrderedDict(("model." + k, v.clone()) for k, v in model.state_dict().items())
    sd["head.kernel"] = kernel.clone()
    sd["head.t"] = torch.zeros(1)
    sd["head.batch_mean"] = torch.tensor([21.5])
    sd["head.batch_std"] = torch.tensor([3.25])
    ckpt = {"epoch": 25, "global_step": 123456, "pytorch-lightning_version": "1.8.6", "state_dict": sd}
    if extras in ("namespace", "custom"):
        ckpt["hyper_parameters"] = argparse.Namespace(arch=arch, head="adaface", m=0.4, h=0.333, s=64.0)
    if extras == "custom":
        ckpt["hparams"] = _FakeAttributeDict(lr=0.1, milestones=[12, 20, 24])
        ckpt["callbacks"] = {"ModelCheckpoint": _FakeAttributeDict(best_model_score=torch.tensor(0.97))}
        ckpt["optimizer_states"] = [{"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9}]}]
    return ckpt, model, kernel


def self_test() -> int:
    failures: List[str] = []

    def check(ok: bool, message: str) -> None:
        print(("  ok    " if ok else "  FAIL  ") + message)
        if not ok:
            failures.append(message)

    print("arch inference from body units:")
    for arch in ["ir18", "ir34", "ir50", "ir100"]:
        with torch.device("meta"):
            keys = list(build_model(arch).state_dict())
        check(infer_arch(keys) == arch, f"{sum(ARCH_UNITS[arch])} units -> {arch}")

    root = Path(tempfile.mkdtemp(prefix="adaface-convert-selftest-"))
    try:
        classes = 37
        for extras, expect_how in [("plain", "torch.load(weights_only=True)"), ("namespace", "restricted unpickler"),
                                   ("custom", "restricted unpickler")]:
            print(f"checkpoint with {extras} extras (ir18, {classes} classes):")
            ckpt, model, kernel = _fake_ckpt("ir18", classes, extras)
            path = root / f"{extras}.ckpt"
            torch.save(ckpt, path)
            out, head_out = root / f"{extras}_backbone.safetensors", root / f"{extras}_head.safetensors"
            summary = convert(path, out, head_out, None, trust=False)
            check(summary["loaded_with"].startswith(expect_how), f"loaded with {summary['loaded_with']}")
            check(summary["arch"] == "ir18", "arch inferred as ir18")
            with safe_open(str(out), framework="pt") as f:
                meta = f.metadata()
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            reference = model.state_dict()
            check(meta == {"arch": "ir18", "source": "adaface-lightning"}, f"backbone metadata {meta}")
            check(set(tensors) == set(reference), f"backbone keys = official keys ({len(tensors)})")
            check(all(torch.equal(tensors[k], reference[k]) for k in reference), "backbone tensors bit-identical")
            check(all((t.dtype == torch.int64) == k.endswith("num_batches_tracked") and
                      (t.dtype in (torch.int64, torch.float32)) for k, t in tensors.items()),
                  "dtypes: float32, num_batches_tracked int64")
            fresh = build_model("ir18")
            fresh.load_state_dict(tensors, strict=True)
            fresh.eval()
            model.eval()
            x = torch.randn(2, 3, 112, 112)
            with torch.no_grad():
                check(torch.equal(fresh(x)[0], model(x)[0]), "strict load + identical eval embeddings")
            with safe_open(str(head_out), framework="pt") as f:
                hmeta = f.metadata()
                hk = f.get_tensor("kernel")
            check(tuple(hk.shape) == (classes, EMBEDDING_SIZE) and torch.equal(hk, kernel.t()),
                  f"head kernel stored as (C, 512) = kernel.T {tuple(hk.shape)}")
            check(hmeta.get("class_start") == "0" and hmeta.get("class_count") == str(classes)
                  and hmeta.get("total_classes") == str(classes), f"head metadata {hmeta}")

        print("wrong checkpoints are refused with a clear message:")
        ckpt, _, _ = _fake_ckpt("ir18", classes, "plain")
        del ckpt["state_dict"]["model.body.3.res_layer.4.weight"]
        torch.save(ckpt, root / "broken.ckpt")
        try:
            convert(root / "broken.ckpt", root / "broken.safetensors", None, None, trust=False)
            check(False, "missing backbone key detected")
        except ConversionError as err:
            check("1 missing" in str(err) and "body.3.res_layer.4.weight" in str(err),
                  f"missing backbone key detected: {str(err).splitlines()[0]}")
        ckpt, _, _ = _fake_ckpt("ir18", classes, "plain")
        torch.save(ckpt, root / "arch.ckpt")
        try:
            convert(root / "arch.ckpt", root / "arch.safetensors", None, "ir50", trust=False)
            check(False, "--arch mismatch detected")
        except ConversionError as err:
            check("ir18" in str(err), f"--arch mismatch detected: {err}")
        check(not (root / "broken.safetensors").exists(), "nothing written for a refused checkpoint")

        # A pickle that would run code when fully unpickled must not run it in the restricted loader.
        marker = root / "executed"
        payload = {"state_dict": ckpt["state_dict"], "evil": _Exploit(str(marker))}
        torch.save(payload, root / "exploit.ckpt")
        convert(root / "exploit.ckpt", root / "exploit.safetensors", None, None, trust=False)
        check(not marker.exists(), "a reduce-to-callable object in the checkpoint is not executed")
        torch.load(root / "exploit.ckpt", map_location="cpu", weights_only=False)
        check(marker.exists(), "(control: full unpickling of the same file does execute it)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if failures:
        print(f"self-test: FAIL ({len(failures)} checks)")
        return 1
    print("self-test: PASS")
    return 0


class _Exploit:
    """Pickles as a call of os.system-like code (here: creating a marker file) for the self-test."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (io.open, (self.path, "w"))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("ckpt", nargs="?", type=Path, help="the AdaFace Lightning .ckpt file")
    parser.add_argument("--out", type=Path, default=Path("backbone.safetensors"),
                        help="backbone output file (default backbone.safetensors)")
    parser.add_argument("--head", type=Path, default=None, help="also write the head kernel to this file")
    parser.add_argument("--arch", default=None, help="expected architecture; an error if the checkpoint differs")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow full unpickling as a last resort (can execute code stored in the file)")
    parser.add_argument("--self-test", action="store_true", help="convert fake checkpoints and verify the results")
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test()
    if args.ckpt is None:
        parser.error("give a checkpoint file (or --self-test)")
    if not args.ckpt.is_file():
        parser.error(f"{args.ckpt} is not a file")
    try:
        convert(args.ckpt, args.out, args.head, args.arch, args.trust_checkpoint)
    except ConversionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
