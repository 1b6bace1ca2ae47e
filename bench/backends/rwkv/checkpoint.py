"""An RWKV `.pth` checkpoint's identity, read from its tensor names and shapes.

The version rules are the `rwkv` package's own (RWKV.__init__ in rwkv/model.py), so bench
reports the version the loader will run: `ln_x` -> 5, `gate.weight` -> 5.1, a two-dimensional
`att.time_decay` -> 5.2, `time_maa` -> 6; the v7 loader is keyed by `att.r_k`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.backends.base import BackendError

# Zip archives (torch.save since 1.6) start with PK; the legacy format is a pickle (0x80).
_PTH_MAGICS = (b"PK\x03\x04", b"\x80")

_DTYPE_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "uint8": "U8"}


@dataclass(frozen=True)
class CheckpointFacts:
    version: float
    n_layer: int
    n_embd: int
    n_vocab: int
    n_head: int | None
    n_ffn: int | None
    n_params: int
    tensor_bytes: int
    dtype: str  # the dtype most of the parameters are stored in

    @property
    def bits_per_weight(self) -> float:
        return round(self.tensor_bytes * 8 / self.n_params, 3) if self.n_params else 0.0

    @property
    def version_name(self) -> str:
        v = self.version
        return f"{v:.1f}" if v != int(v) else str(int(v))

    def as_info(self) -> dict[str, Any]:
        return {
            "description": (
                f"RWKV-{self.version_name} {self.n_layer}L {self.n_embd}d "
                f"{_dtype_label(self.dtype)}"
            ),
            "architecture": f"rwkv{self.version_name}",
            "rwkv_version": self.version_name,
            "n_layer": self.n_layer,
            "n_embd": self.n_embd,
            "n_head": self.n_head,
            "n_ffn": self.n_ffn,
            "n_vocab": self.n_vocab,
            "n_params": self.n_params,
            "tensor_bytes": self.tensor_bytes,
            "bits_per_weight": self.bits_per_weight,
            "dtype": self.dtype,
            "quant_type": _dtype_label(self.dtype),
        }


def _dtype_label(dtype: str) -> str:
    return _DTYPE_NAMES.get(dtype, dtype.upper())


def looks_like_pth(path: Path) -> str | None:
    """Why `path` is not an RWKV checkpoint bench can load, or None."""
    if path.is_dir():
        return f"{path} is a folder; point 'path' at the RWKV .pth file inside"
    if not path.exists():
        return f"{path} does not exist; check the path or download the checkpoint"
    if path.suffix != ".pth":
        return f"{path} does not end in .pth; the rwkv package loads .pth checkpoints only"
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        return f"{path} cannot be read ({e.strerror}); check its permissions"
    if not head.startswith(_PTH_MAGICS):
        return f"{path} is not a PyTorch checkpoint (it starts with {head!r})"
    return None


def detect_version(shapes: dict[str, tuple[int, ...]]) -> float:
    """The package's rules, in its key order (the 5.2 test applies once 5 is established)."""
    if any(k.endswith("att.r_k") for k in shapes):
        return 7.0
    version = 4.0
    for k, shape in shapes.items():
        if "ln_x" in k:
            version = max(5.0, version)
        if "gate.weight" in k:
            version = max(5.1, version)
        if int(version) == 5 and "att.time_decay" in k and len(shape) > 1 and shape[1] > 1:
            version = max(5.2, version)
        if "time_maa" in k:
            version = max(6.0, version)
    return version


def inspect(path: Path) -> CheckpointFacts:
    """Read names, shapes and dtypes without loading the weights (mmap)."""
    import torch

    try:
        w = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file; name it
        raise BackendError(f"cannot read RWKV checkpoint {path}: {e}") from None
    if not isinstance(w, dict) or "emb.weight" not in w:
        raise BackendError(
            f"{path} is not an RWKV checkpoint (no 'emb.weight' tensor among its keys)"
        )
    if "_strategy" in w:
        raise BackendError(
            f"{path} was converted for one strategy by the package's convert_model.py; give "
            "bench the original checkpoint so strategies can be compared"
        )
    shapes = {k: tuple(v.shape) for k, v in w.items()}
    version = detect_version(shapes)
    n_layer = 1 + max((int(k.split(".")[1]) for k in shapes if k.startswith("blocks.")),
                      default=-1)
    n_vocab, n_embd = shapes["emb.weight"]
    n_head: int | None = None
    if version >= 7:
        n_head = shapes["blocks.0.att.r_k"][0]
    elif "blocks.0.att.time_decay" in shapes and version >= 5:
        n_head = shapes["blocks.0.att.time_decay"][0]
    ffn = shapes.get("blocks.0.ffn.key.weight")
    n_params = sum(v.numel() for v in w.values())
    tensor_bytes = sum(v.numel() * v.element_size() for v in w.values())
    by_dtype: Counter[str] = Counter()
    for v in w.values():
        by_dtype[str(v.dtype).removeprefix("torch.")] += v.numel()
    del w
    return CheckpointFacts(
        version=version,
        n_layer=n_layer,
        n_embd=int(n_embd),
        n_vocab=int(n_vocab),
        n_head=int(n_head) if n_head is not None else None,
        n_ffn=int(ffn[0]) if ffn else None,
        n_params=int(n_params),
        tensor_bytes=int(tensor_bytes),
        dtype=by_dtype.most_common(1)[0][0],
    )
