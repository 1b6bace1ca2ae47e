"""How close each cell is to the machine's physical limit: the decode roofline and energy floor.

Decode at batch 1 reads every weight once per token plus the KV cache written so far, so
`tokens/s <= memory bandwidth / bytes read per token`. This module measures the bandwidth
itself (never a datasheet figure), reads the bytes per token from the GGUF file's tensor table
and shape metadata, and turns a trial row into `roofline_*` columns; beside it the energy floor
`idle W / decode t/s`, a lower bound on gross J/token (the machine draws idle power whatever it
does). The runner calls `measure_bandwidth` once per run and `trial_columns` per trial row.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import struct
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "ROOFLINE_COLUMNS",
    "Bandwidth",
    "ModelBytes",
    "cpu_copy_bandwidth",
    "decode_bytes_per_token",
    "energy_floor",
    "gpu_bandwidth",
    "measure_bandwidth",
    "model_bytes",
    "reads_columns",
    "trial_columns",
    "uses_gpu",
]

ROOFLINE_COLUMNS = (
    "roofline_tps",  # the decode bound, tokens/s
    "roofline_pct",  # decode_tps as a percentage of the bound
    "roofline_bytes_per_token",  # weights + mean KV cache read per generated token
    "roofline_memory",  # which memory's bandwidth bounds the cell: "cpu" or "gpu"
    "roofline_note",  # why the bound is missing, or why it may not hold
    "j_floor",  # idle W / decode t/s: the least gross J/token the machine can give
    "j_floor_ratio",  # j_per_token / j_floor (1.0 would be a machine that spends only idle power)
    "model_source",  # where the model came from: path, repo, package, served, synthetic, ...
    "roofline_method",  # how the bytes per token were obtained (GGUF table, weights as loaded)
)


# -- bandwidth ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bandwidth:
    """A memory's bandwidth as bench measured (or derived) it, and how."""

    memory: str  # "cpu" or "gpu"
    bytes_per_s: float
    method: str  # how it was obtained, in words a reader can check
    measured: bool  # False when derived from reported clocks rather than timed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _llc_bytes() -> int | None:
    """The largest cache the kernel reports for CPU 0 (the last-level cache)."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    best = None
    try:
        for idx in base.glob("index*"):
            text = (idx / "size").read_text().strip().upper()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            n = int(text.rstrip("KMG")) * mult
            best = n if best is None else max(best, n)
    except (OSError, ValueError):
        return best
    return best


def _copy_size(llc: int | None) -> int:
    # Twice the last-level cache, so the copy streams from DRAM; at least 256 MiB, and at most
    # 512 MiB per buffer (two live at once; about 2 s of copying on a slow VM) or an eighth of
    # free memory. A virtual machine may report its host's whole LLC, so the cap is kept.
    want = max(256 << 20, 2 * (llc or 0))
    try:
        import psutil

        free = int(psutil.virtual_memory().available) // 8
    except Exception:  # noqa: BLE001 - psutil is a core dependency; be safe on odd systems
        free = 1 << 30
    return int(max(64 << 20, min(want, 512 << 20, free)))


def cpu_copy_bandwidth(
    size_bytes: int | None = None, repeats: int = 3, threads: int | None = None
) -> Bandwidth:
    """Host memory bandwidth from timed NumPy copies of buffers far larger than the LLC.

    Each pass copies `size_bytes` (split evenly over `threads` threads: NumPy releases the GIL
    for plain copies) and counts read + write bytes, as STREAM's Copy does; the best pass of
    `repeats` is kept, after one untimed pass that faults the pages in. A single core often
    cannot saturate DRAM, so one thread and all physical cores are both timed and the faster
    is the bandwidth, the other kept in the method text.
    """
    llc = _llc_bytes()
    size = int(size_bytes or _copy_size(llc))
    if threads is None:
        try:
            import psutil

            threads = psutil.cpu_count(logical=False) or os.cpu_count() or 1
        except Exception:  # noqa: BLE001
            threads = os.cpu_count() or 1
    src = np.ones(size, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # first touch: page faults are not bandwidth

    def best_pass(n: int) -> float:
        bounds = np.linspace(0, size, n + 1).astype(np.int64)
        pieces = [(dst[a:b], src[a:b]) for a, b in itertools.pairwise(bounds)]
        best = float("inf")
        for _ in range(repeats):
            if n == 1:
                t0 = time.perf_counter()
                np.copyto(dst, src)
                best = min(best, time.perf_counter() - t0)
                continue
            go = threading.Barrier(n + 1)
            def copy(d: Any, s: Any, go: threading.Barrier = go) -> None:
                go.wait()
                np.copyto(d, s)

            workers = [threading.Thread(target=copy, args=(d, s)) for d, s in pieces]
            for w in workers:
                w.start()
            go.wait()
            t0 = time.perf_counter()
            for w in workers:
                w.join()
            best = min(best, time.perf_counter() - t0)
        return 2.0 * size / best

    one = best_pass(1)
    many = best_pass(threads) if threads > 1 else one
    rate = max(one, many)
    return Bandwidth(
        memory="cpu",
        bytes_per_s=rate,
        method=(
            f"NumPy copy of {size / 2**20:.0f} MiB (last-level cache "
            f"{(llc or 0) / 2**20:.0f} MiB), read+write bytes, best of {repeats}: "
            f"{one / 1e9:.2f} GB/s on 1 thread, {many / 1e9:.2f} GB/s on {threads}"
        ),
        measured=True,
    )


def _gpu_bandwidth_in_child(device: int = 0) -> Bandwidth | None:
    """`gpu_bandwidth` in a spawned child process: the CUDA context and torch's cached 2 GiB
    of copy buffers go with it, instead of staying in the runner's process beside the
    workers that load models onto the same GPU."""
    import concurrent.futures
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(gpu_bandwidth, device).result(timeout=300)


def gpu_bandwidth(device: int = 0) -> Bandwidth | None:
    """NVIDIA device memory bandwidth: a timed device-to-device copy through torch or CuPy when
    either is installed, else NVML's memory clock x bus width (labelled as derived, not
    measured). None when there is no NVIDIA GPU to ask."""
    timed = _gpu_copy_torch(device) or _gpu_copy_cupy(device)
    return timed or _gpu_nvml_derived(device)


def _gpu_copy_torch(device: int) -> Bandwidth | None:
    try:
        import torch  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        dev = torch.device("cuda", device)
        size = 1 << 30
        a = torch.empty(size, dtype=torch.uint8, device=dev)
        b = torch.empty_like(a)
        b.copy_(a)
        torch.cuda.synchronize(dev)
        best = float("inf")
        for _ in range(10):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            b.copy_(a)
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        name = torch.cuda.get_device_name(dev)
        del a, b
        torch.cuda.empty_cache()
        return Bandwidth(
            "gpu", 2.0 * size / best,
            f"torch device-to-device copy of 1 GiB on {name}, read+write bytes, best of 10",
            True,
        )
    except Exception:  # noqa: BLE001 - any CUDA failure: fall back to the next method
        return None


def _gpu_copy_cupy(device: int) -> Bandwidth | None:
    try:
        import cupy  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        with cupy.cuda.Device(device):
            size = 1 << 30
            a = cupy.empty(size, dtype=cupy.uint8)
            b = cupy.empty_like(a)
            b[...] = a
            cupy.cuda.Device(device).synchronize()
            best = float("inf")
            for _ in range(10):
                start, end = cupy.cuda.Event(), cupy.cuda.Event()
                start.record()
                b[...] = a
                end.record()
                end.synchronize()
                best = min(best, cupy.cuda.get_elapsed_time(start, end) / 1e3)
        return Bandwidth(
            "gpu", 2.0 * size / best,
            "CuPy device-to-device copy of 1 GiB, read+write bytes, best of 10", True,
        )
    except Exception:  # noqa: BLE001
        return None


def _gpu_nvml_derived(device: int) -> Bandwidth | None:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no GPU
        return None
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(device)
        mhz = pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM)
        bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(h)
        name = pynvml.nvmlDeviceGetName(h)
        name = name.decode() if isinstance(name, bytes) else str(name)
        # Double data rate: two transfers per reported memory clock cycle.
        rate = float(mhz) * 1e6 * 2 * float(bus_bits) / 8
        return Bandwidth(
            "gpu", rate,
            f"derived from NVML clocks on {name}: max memory clock {mhz} MHz x 2 (DDR) x "
            f"{bus_bits}-bit bus; not a timed measurement",
            False,
        )
    except Exception:  # noqa: BLE001 - an NVML call this board does not support
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


_CACHE: dict[str, Any] = {}


def uses_gpu(params: dict[str, Any]) -> bool:
    """Whether a cell's settings put weights on a GPU: llama.cpp layers offloaded, an RWKV
    strategy with a cuda stage, a transformers device cuda."""
    return bool(params.get("n_gpu_layers")) or "cuda" in str(params.get("strategy") or "") \
        or str(params.get("device") or "").startswith("cuda")


def measure_bandwidth(gpu: bool = False) -> dict[str, Any]:
    """The manifest's `roofline` entry: CPU bandwidth, and GPU bandwidth when a cell offloads.

    Measured once per bench process (a second run in the same process, as in the tests, reuses
    the figures, with `reused` set); about a second of copying on a desktop.
    """
    key = f"gpu={gpu}"
    if key in _CACHE:
        return {**_CACHE[key], "reused": True}
    out: dict[str, Any] = {"cpu": None, "gpu": None, "errors": []}
    t0 = time.perf_counter()
    try:
        out["cpu"] = cpu_copy_bandwidth().as_dict()
    except (MemoryError, OSError) as e:
        out["errors"].append(f"cpu bandwidth not measured: {e}")
    if gpu:
        try:
            g = _gpu_bandwidth_in_child()
        except Exception as e:  # noqa: BLE001 - a figure, not the run: say why it is missing
            out["errors"].append(f"gpu bandwidth not measured: {type(e).__name__}: {e}")
        else:
            if g is None:
                out["errors"].append("gpu bandwidth not measured: no torch or CuPy with CUDA, "
                                     "and NVML not readable")
            else:
                out["gpu"] = g.as_dict()
    out["seconds"] = round(time.perf_counter() - t0, 3)
    _CACHE[key] = out
    return {**out, "reused": False}


# -- bytes per token ------------------------------------------------------------------------

# ggml_type -> (elements per block, bytes per block), from ggml's type traits.
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
    14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98),
    19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1),
    25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54),
    35: (256, 66), 39: (32, 17),
}

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}


def _read_gguf_header(f: BinaryIO) -> tuple[dict[str, Any], list[tuple[str, list[int], int]]]:
    """(metadata, [(tensor name, dims, ggml type)]) without reading any weights."""

    def unpack(fmt: str) -> Any:
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

    def string() -> str:
        return f.read(unpack("<Q")).decode("utf-8", "replace")

    def value(vtype: int) -> Any:
        if vtype == 8:
            return string()
        if vtype == 9:
            item, n = unpack("<I"), unpack("<Q")
            if item in _SCALARS and item != 8:
                fmt = _SCALARS[item]
                size = struct.calcsize(fmt)
                raw = f.read(size * n)
                # Token lists are long and never needed here: skip them cheaply.
                return list(struct.unpack(f"<{n}{fmt[1]}", raw)) if n <= 4096 else None
            vals = [value(item) for _ in range(n)]
            return vals if n <= 4096 else None
        return unpack(_SCALARS[vtype])

    if f.read(4) != b"GGUF":
        raise ValueError("not a GGUF file")
    version = unpack("<I")
    if version < 2:
        raise ValueError(f"GGUF version {version} is too old")
    n_tensors, n_kv = unpack("<Q"), unpack("<Q")
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(unpack("<I"))
    tensors = []
    for _ in range(n_tensors):
        name = string()
        dims = [unpack("<Q") for _ in range(unpack("<I"))]
        ttype = unpack("<I")
        unpack("<Q")  # offset
        tensors.append((name, dims, ttype))
    return meta, tensors


def _tensor_bytes(dims: list[int], ttype: int) -> int:
    if ttype not in GGML_TYPE_SIZES:
        raise ValueError(f"unknown ggml tensor type {ttype}")
    block, size = GGML_TYPE_SIZES[ttype]
    n = int(np.prod(dims)) if dims else 1
    return n // block * size


@dataclass(frozen=True)
class ModelBytes:
    """What one decoded token must read from memory, from a GGUF file's header."""

    tensor_bytes: int  # every tensor (llama.cpp's llama_model_size)
    weight_bytes_per_token: int  # what a token reads: one embedding row, all else once
    n_layer: int | None
    kv_bytes_per_cell: int | None  # K + V bytes per context position, all layers (f16 cache)
    method: str


def model_bytes(path: Path, kv_type_bytes: int = 2) -> ModelBytes:
    """Bytes a decoded token reads, from the GGUF tensor table (sizes by ggml type).

    The token embedding is a row lookup (one row per token) unless the output projection is
    tied to it (no `output.weight`), when it is read whole. Mixture-of-experts tensors
    (`*_exps`) count only the active experts' share. The KV cache is `n_layer x (n_embd_k +
    n_embd_v) x kv_type_bytes` per context position; llama.cpp's default cache type is F16.
    """
    with Path(path).open("rb") as f:
        meta, tensors = _read_gguf_header(f)
    arch = meta.get("general.architecture") or ""

    def m(key: str) -> Any:
        return meta.get(f"{arch}.{key}")

    total = 0
    per_token = 0
    names = {t[0] for t in tensors}
    n_expert = m("expert_count")
    n_used = m("expert_used_count")
    notes = []
    for name, dims, ttype in tensors:
        b = _tensor_bytes(dims, ttype)
        total += b
        if name == "token_embd.weight" and "output.weight" in names:
            rows = dims[1] if len(dims) > 1 else 1
            per_token += b // max(1, rows)
        elif "_exps" in name and n_expert and n_used:
            per_token += b * int(n_used) // int(n_expert)
        else:
            per_token += b
    if "output.weight" not in names:
        notes.append("output tied to the token embedding (read whole)")
    if n_expert and n_used:
        notes.append(f"experts: {n_used} of {n_expert} read per token")

    n_layer = m("block_count")
    n_head = m("attention.head_count")
    n_head_kv = m("attention.head_count_kv")
    n_embd = m("embedding_length")
    kv_cell = None
    if n_layer and n_head_kv is not None and n_head:
        heads = n_head if not isinstance(n_head, list) else max(n_head)
        head_dim_k = m("attention.key_length") or (n_embd // heads if n_embd else None)
        head_dim_v = m("attention.value_length") or head_dim_k
        if head_dim_k:
            kv_heads = (
                sum(n_head_kv) if isinstance(n_head_kv, list)
                else int(n_head_kv or 0) * int(n_layer or 0)
            )
            kv_cell = kv_heads * (int(head_dim_k) + int(head_dim_v or 0)) * kv_type_bytes
    if kv_cell is None:
        notes.append("no attention KV cache in the metadata (recurrent or unknown architecture)")
    if m("attention.sliding_window"):
        notes.append("sliding-window layers counted at full context (an upper bound on KV)")
    method = "GGUF tensor table" + (f"; {'; '.join(notes)}" if notes else "")
    return ModelBytes(
        tensor_bytes=total,
        weight_bytes_per_token=per_token,
        n_layer=int(n_layer) if n_layer else None,
        kv_bytes_per_cell=kv_cell,
        method=method,
    )


def decode_bytes_per_token(mb: ModelBytes, n_prompt: int, n_gen: int, depth: int = 0) -> float:
    """Mean bytes read per generated token: the weights, plus the KV cache over the mean
    context length of the decode phase (token k of n_gen attends depth + n_prompt + k
    positions; decode spans k = 1 .. n_gen - 1, a mean of depth + n_prompt + n_gen / 2)."""
    kv = 0.0
    if mb.kv_bytes_per_cell:
        kv = mb.kv_bytes_per_cell * (depth + n_prompt + n_gen / 2.0)
    return float(mb.weight_bytes_per_token) + kv


_MODEL_CACHE: dict[tuple[str, int, int], ModelBytes] = {}


def _model_bytes_cached(path: Path) -> ModelBytes:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = model_bytes(path)
    return _MODEL_CACHE[key]


# -- per-trial columns ----------------------------------------------------------------------


def energy_floor(idle_w: float | None, decode_tps: float | None) -> float | None:
    """idle W / decode t/s: J/token if the machine spent nothing beyond idle power."""
    if not idle_w or not decode_tps or idle_w <= 0 or decode_tps <= 0:
        return None
    return idle_w / decode_tps


def _idle_w_of_headline(manifest: dict[str, Any]) -> tuple[float | None, str | None]:
    """Idle watts over the domains the headline J/token sums (bench.energy.trial_energy's
    choice: component domains, estimates left out where a measurement exists)."""
    idle = (manifest.get("idle") or {}).get("watts") or {}
    domains = [d for d in manifest.get("domains") or [] if d.get("component")]
    measured = [d for d in domains if d.get("method") != "estimate"]
    chosen = measured or domains
    if not chosen:
        return None, "no energy meter"
    if not measured:
        return None, "energy is an estimate: its idle power is not a floor"
    if any(d["name"] not in idle for d in chosen):
        return None, "no idle baseline (energy.idle_s is 0)"
    return float(sum(idle[d["name"]] for d in chosen)), None


def _model_entry(row: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any] | None:
    for entry in (manifest.get("models") or {}).values():
        if entry.get("id") == row.get("model") and entry.get("quant") == row.get("quant"):
            return entry
    return None


def reads_columns(reads: Any, n_prompt: int, n_gen: int, depth: int = 0) -> dict[str, Any]:
    """The roofline columns a session's `DecodeReads` fix for one trial (the worker adds them
    to the row; `trial_columns` then divides the run's bandwidth by them): the weights, a
    recurrent state read and written per token, and the KV cache at the decode phase's mean
    context (as `decode_bytes_per_token`)."""
    per_token = float(reads.weight_bytes_per_token + reads.state_bytes_per_token)
    if reads.kv_bytes_per_cell:
        per_token += reads.kv_bytes_per_cell * (depth + n_prompt + n_gen / 2.0)
    return {"roofline_bytes_per_token": per_token, "roofline_memory": reads.memory,
            "roofline_method": reads.method}


def trial_columns(row: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """The roofline and energy-floor columns of one trial row (None with a note when a figure
    cannot be made). Needs the manifest's `roofline`, `models`, `domains` and `idle`.

    Bytes per token come from the session where it said them (`reads_columns`: the weights as
    the engine holds them), else from the model's GGUF tensor table."""
    out: dict[str, Any] = dict.fromkeys(ROOFLINE_COLUMNS)
    entry = _model_entry(row, manifest)
    # "synthetic" on every row of a random-weights model, so no table passes it off as real.
    source = (entry or {}).get("source") or {}
    out["model_source"] = next(iter(source), None)
    if row.get("status") != "ok":
        return out
    # Why the session could not give its bytes (the worker says), kept with the others.
    notes: list[str] = [row["roofline_note"]] if (
        row.get("roofline_note") and not row.get("roofline_method")) else []
    decode_tps = row.get("decode_tps")
    per_token: float | None = None
    weight_bytes: float | None = None
    memory = "cpu"
    if row.get("roofline_method") and row.get("roofline_bytes_per_token") is not None:
        memory = str(row.get("roofline_memory") or "cpu")
        out["roofline_method"] = row["roofline_method"]
        if memory == "split":
            notes.append("weights split between CPU and GPU memory (or streamed): no single "
                         "bound")
        else:
            per_token = weight_bytes = float(row["roofline_bytes_per_token"])
    else:
        # Offload only counts where the engine can offload (a CPU-only llama.cpp ignores it).
        can_offload = (manifest.get("software") or {}).get("llama_cpp_gpu_offload", True)
        memory = "gpu" if bool(row.get("n_gpu_layers")) and can_offload is not False else "cpu"
        path = Path(entry["path"]) if entry and entry.get("path") else None
        if path is None or not path.is_file():
            notes.append("no local GGUF file to read the bytes per token from")
        else:
            try:
                mb = _model_bytes_cached(path)
            except (OSError, ValueError, struct.error) as e:
                mb = None
                notes.append(f"cannot read the GGUF tensor table ({e})")
            if mb is not None:
                out["roofline_method"] = mb.method
                if memory == "gpu" and mb.n_layer and 0 < int(row["n_gpu_layers"]) <= mb.n_layer:
                    notes.append("partial offload: weights split between CPU and GPU memory")
                else:
                    depth = int(row.get("depth") or row.get("n_depth") or 0)
                    per_token = decode_bytes_per_token(
                        mb, int(row.get("n_prompt") or 0), int(row.get("n_gen") or 0), depth
                    )
                    weight_bytes = float(mb.weight_bytes_per_token)
    bw = (manifest.get("roofline") or {}).get(memory) if memory != "split" else None
    if per_token is not None and bw is None:
        notes.append(f"{memory} bandwidth was not measured")
    elif per_token is not None and bw is not None:
        bound = float(bw["bytes_per_s"]) / per_token
        out["roofline_tps"] = bound
        out["roofline_bytes_per_token"] = per_token
        out["roofline_memory"] = memory
        if decode_tps:
            out["roofline_pct"] = 100.0 * float(decode_tps) / bound
        llc = _llc_bytes()
        if memory == "cpu" and llc and weight_bytes is not None and weight_bytes < llc:
            notes.append(
                f"the weights ({weight_bytes / 2**20:.0f} MiB) fit in the last-level cache "
                f"({llc / 2**20:.0f} MiB): the DRAM bound may not hold"
            )
        if not bw.get("measured", True):
            notes.append("bandwidth derived from reported clocks, not timed")
    idle_w, why = _idle_w_of_headline(manifest)
    floor = energy_floor(idle_w, decode_tps)
    out["j_floor"] = floor
    jpt = row.get("j_per_token")
    if floor and jpt:
        out["j_floor_ratio"] = float(jpt) / floor
    elif why and decode_tps:
        notes.append(f"no energy floor: {why}")
    out["roofline_note"] = "; ".join(notes) or None
    return out
