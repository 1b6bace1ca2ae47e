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
import shutil
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


def _alive(pid: str) -> bool:
    """Whether the process that named a temporary folder still runs (then it is writing)."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _fix_zip_crcs(path: Path) -> None:
    """Write each record's CRC-32 into the archive. torch.save computed them over the empty
    space `skip_data` left, so the values filled in afterwards would fail any zip check
    (`unzip -t`, `zipfile.testzip`) though torch.load does not look. The records are stored
    uncompressed; each CRC is in its data descriptor (torch writes one), in the central
    directory and, where torch put one there, in the local header."""
    import struct
    import zipfile
    import zlib

    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        start_dir = z.start_dir
    with path.open("r+b") as f:
        crcs = []
        for info in infos:
            f.seek(info.header_offset)
            local = f.read(30)
            if local[:4] != b"PK\x03\x04" or info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"unexpected zip record {info.filename} in {path}")
            n_name, n_extra = struct.unpack("<HH", local[26:30])
            data = info.header_offset + 30 + n_name + n_extra
            f.seek(data)
            crc, left = 0, info.file_size
            while left:
                chunk = f.read(min(left, 1 << 24))
                crc = zlib.crc32(chunk, crc)
                left -= len(chunk)
            crcs.append(crc)
            if info.flag_bits & 0x08:  # the data descriptor after the data
                sig = f.read(4)
                f.seek(data + info.file_size + (4 if sig == b"PK\x07\x08" else 0))
                f.write(struct.pack("<I", crc))
            if struct.unpack("<I", local[14:18])[0] or not info.flag_bits & 0x08:
                f.seek(info.header_offset + 14)
                f.write(struct.pack("<I", crc))
        # The central directory: one entry per record, in the same order.
        pos = start_dir
        for crc in crcs:
            f.seek(pos)
            head = f.read(46)
            if head[:4] != b"PK\x01\x02":
                raise ValueError(f"unexpected central directory in {path}")
            f.seek(pos + 16)
            f.write(struct.pack("<I", crc))
            n_name, n_extra, n_comment = struct.unpack("<HHH", head[28:34])
            pos += 46 + n_name + n_extra + n_comment


def write_pth(shape: dict[str, Any], path: Path) -> Path:
    """Write the bf16 checkpoint of an `rwkv5` shape (temporary name, then rename)."""
    from bench.synthetic import SyntheticError

    try:
        import torch
        from torch._subclasses.fake_tensor import FakeTensorMode
    except ImportError as e:
        raise SyntheticError(
            "rwkv5 synthetic models are written with torch; install it with: pip install "
            "'bench[rwkv]'"
        ) from e
    if not hasattr(torch.serialization, "skip_data") or not hasattr(mmap, "MAP_SHARED"):
        raise SyntheticError(
            f"writing an rwkv5 synthetic model needs torch 2.5 or later on Linux or macOS "
            f"(this is torch {torch.__version__}); upgrade it with: pip install -U torch"
        )
    specs = tensor_specs(shape)
    # The temporary file keeps the final name, in a folder of its own: torch names the
    # archive's records after the file, and a PID in there would make every file differ.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # a write killed earlier
        if not _alive(stale.suffixes[-2].lstrip(".")):
            shutil.rmtree(stale, ignore_errors=True)
    tmp_dir = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / path.name
    try:
        with FakeTensorMode():
            skeleton = {name: torch.empty(dims, dtype=torch.bfloat16) for name, dims in specs}
        with torch.serialization.skip_data(materialize_fake_tensors=True):
            torch.save(skeleton, str(tmp))
        del skeleton
        # The saved file is sparse: claim its blocks now, so a full disk is an OSError here
        # (ENOSPC) rather than a SIGBUS when a write through the mapping finds no space.
        if hasattr(os, "posix_fallocate"):
            with tmp.open("r+b") as f:
                os.posix_fallocate(f.fileno(), 0, tmp.stat().st_size)
        # Mapped shared, so each tensor's values go to the file, not to private memory; the
        # context manager puts back whatever default was set before.
        with torch.serialization.set_default_mmap_options(mmap.MAP_SHARED):
            w = torch.load(str(tmp), mmap=True, weights_only=True)
        with torch.no_grad():
            for i, (name, _) in enumerate(specs):
                _fill(w[name], name, int(shape["seed"]), i)
        del w
        _fix_zip_crcs(tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path
