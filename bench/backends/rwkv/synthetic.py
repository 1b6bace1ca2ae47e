"""Random-weight RWKV-5.2 ("Eagle") checkpoints for `synthetic:` models of arch `rwkv5`.

The tensors have the names, shapes and dtype (bf16) of RWKV-LM's v5 trainer, which the `rwkv`
package detects as 5.2 (a two-dimensional `att.time_decay`). A 7B checkpoint is 15 GB, more than
a small machine should hold in memory twice, so the file is written without the weights ever
being in memory together: torch.save writes the archive with the tensors' space left empty
(`torch.serialization.skip_data`, tensors made under FakeTensorMode), then the file is mapped
shared and each tensor filled in place from its own generator. The values are drawn with NumPy
from (seed, tensor index), so a shape and seed give the same tensors on any machine.
"""
from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any

# Scales as tests/ and RWKV-LM's initialisation keep activations finite at any depth.
_SCALE = {"emb.weight": 0.1, "head.weight": 0.5}


def tensor_specs(shape: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor of an RWKV-5.2 checkpoint, in the trainer's order."""
    c, v, n = shape["embedding"], shape["vocab"], shape["layers"]
    h = shape["heads"]
    hs, ffn = c // h, shape["ff"]
    out: list[tuple[str, tuple[int, ...]]] = [
        ("emb.weight", (v, c)), ("blocks.0.ln0.weight", (c,)), ("blocks.0.ln0.bias", (c,)),
    ]
    for i in range(n):
        b = f"blocks.{i}."
        out += [
            (b + "ln1.weight", (c,)), (b + "ln1.bias", (c,)),
            (b + "ln2.weight", (c,)), (b + "ln2.bias", (c,)),
            (b + "att.time_mix_k", (1, 1, c)), (b + "att.time_mix_v", (1, 1, c)),
            (b + "att.time_mix_r", (1, 1, c)), (b + "att.time_mix_g", (1, 1, c)),
            (b + "att.time_decay", (h, hs)), (b + "att.time_faaaa", (h, hs)),
            (b + "att.receptance.weight", (c, c)), (b + "att.key.weight", (c, c)),
            (b + "att.value.weight", (c, c)), (b + "att.gate.weight", (c, c)),
            (b + "att.output.weight", (c, c)),
            (b + "att.ln_x.weight", (c,)), (b + "att.ln_x.bias", (c,)),
            (b + "ffn.time_mix_k", (1, 1, c)), (b + "ffn.time_mix_r", (1, 1, c)),
            (b + "ffn.key.weight", (ffn, c)), (b + "ffn.receptance.weight", (c, c)),
            (b + "ffn.value.weight", (c, ffn)),
        ]
    out += [("ln_out.weight", (c,)), ("ln_out.bias", (c,)), ("head.weight", (v, c))]
    return out


def _fill(t: Any, name: str, seed: int, index: int) -> None:
    """Write tensor `index`'s values into `t` (a bf16 view of the mapped file), in chunks."""
    import numpy as np
    import torch

    rng = np.random.default_rng([seed, index])
    if name.endswith(".weight") and name.split(".")[-2].startswith("ln"):
        t.fill_(1.0)  # layer-norm gains
        return
    if name.endswith(".bias"):
        t.fill_(0.0)
        return
    if "time_mix" in name:  # interpolation weights in (0, 1)
        t.copy_(torch.from_numpy(rng.random(t.shape, dtype=np.float32)))
        return
    if name.endswith("time_decay"):  # log-log decays around -2: slow, stable forgetting
        t.copy_(torch.from_numpy(rng.random(t.shape, dtype=np.float32) * 2 - 3))
        return
    scale = _SCALE.get(name, 0.1 if name.endswith("time_faaaa") else 0.02)
    flat = t.view(-1)
    step = 1 << 24
    for a in range(0, flat.numel(), step):
        k = min(step, flat.numel() - a)
        chunk = rng.standard_normal(k, dtype=np.float32) * np.float32(scale)
        flat[a:a + k].copy_(torch.from_numpy(chunk))


def write_pth(shape: dict[str, Any], path: Path) -> Path:
    """Write the bf16 checkpoint of an `rwkv5` shape (temporary name, then rename)."""
    try:
        import torch
        from torch._subclasses.fake_tensor import FakeTensorMode
    except ImportError as e:
        from bench.synthetic import SyntheticError

        raise SyntheticError(
            "rwkv5 synthetic models are written with torch; install it with: pip install "
            "'bench[rwkv]'"
        ) from e
    specs = tensor_specs(shape)
    # The temporary file keeps the final name, in a folder of its own: torch names the
    # archive's records after the file, and a PID in there would make every file differ.
    tmp_dir = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / path.name
    try:
        with FakeTensorMode():
            skeleton = {name: torch.empty(dims, dtype=torch.bfloat16) for name, dims in specs}
        with torch.serialization.skip_data(materialize_fake_tensors=True):
            torch.save(skeleton, str(tmp))
        del skeleton
        # Mapped shared, so each tensor's values go to the file, not to private memory.
        torch.serialization.set_default_mmap_options(mmap.MAP_SHARED)
        try:
            w = torch.load(str(tmp), mmap=True, weights_only=True)
        finally:
            torch.serialization.set_default_mmap_options(mmap.MAP_PRIVATE)
        with torch.no_grad():
            for i, (name, _) in enumerate(specs):
                _fill(w[name], name, int(shape["seed"]), i)
        del w
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_dir.rmdir()
    return path
