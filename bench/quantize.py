"""The quantization ladder, built locally with llama.cpp's own quantizer, and the facts of a GGUF.

`quantize(source, "Q4_K_M")` runs `llama_model_quantize` once and keeps the result in a cache
keyed by what determines its bytes: the source file's sha256, the quantization type, the
importance matrix's sha256 and the llama-cpp-python version. A level is written under a temporary
name and renamed, so a crash or a concurrent run never leaves a half-written file behind a valid
name. `gguf_facts(path)` reads size, parameters and bits per weight as llama.cpp computes them.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import struct
import time
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from bench.backends.base import BackendError
from bench.backends.llama_cpp.backend import file_type_name, llama_lib, quiet_stderr
from bench.files import atomic_write_json, cache_dir, sha256_of

__all__ = [
    "QTYPES",
    "QuantizeError",
    "gguf_facts",
    "quant_cache_dir",
    "quantize",
    "read_imatrix",
    "supported_qtypes",
]

# Names as llama.cpp's llama-quantize spells them -> the suffix of LLAMA_FTYPE_* in llama_cpp.
# A name missing from the installed build is left out of QTYPES rather than failing late.
_FTYPE_SUFFIX = {
    "F32": "ALL_F32", "F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16",
    "Q8_0": "MOSTLY_Q8_0", "Q6_K": "MOSTLY_Q6_K",
    "Q5_K_M": "MOSTLY_Q5_K_M", "Q5_K_S": "MOSTLY_Q5_K_S", "Q5_1": "MOSTLY_Q5_1",
    "Q5_0": "MOSTLY_Q5_0",
    "Q4_K_M": "MOSTLY_Q4_K_M", "Q4_K_S": "MOSTLY_Q4_K_S", "Q4_1": "MOSTLY_Q4_1",
    "Q4_0": "MOSTLY_Q4_0",
    "Q3_K_L": "MOSTLY_Q3_K_L", "Q3_K_M": "MOSTLY_Q3_K_M", "Q3_K_S": "MOSTLY_Q3_K_S",
    "Q2_K": "MOSTLY_Q2_K", "Q2_K_S": "MOSTLY_Q2_K_S",
    "IQ4_NL": "MOSTLY_IQ4_NL", "IQ4_XS": "MOSTLY_IQ4_XS",
    "IQ3_M": "MOSTLY_IQ3_M", "IQ3_S": "MOSTLY_IQ3_S", "IQ3_XS": "MOSTLY_IQ3_XS",
    "IQ3_XXS": "MOSTLY_IQ3_XXS",
    "IQ2_M": "MOSTLY_IQ2_M", "IQ2_S": "MOSTLY_IQ2_S", "IQ2_XS": "MOSTLY_IQ2_XS",
    "IQ2_XXS": "MOSTLY_IQ2_XXS",
    "IQ1_M": "MOSTLY_IQ1_M", "IQ1_S": "MOSTLY_IQ1_S",
    "TQ2_0": "MOSTLY_TQ2_0", "TQ1_0": "MOSTLY_TQ1_0",
}
# llama-quantize's shorthands for the medium K-quant mixes.
_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}
# llama.cpp refuses these without an importance matrix (they are too lossy without one);
# saying so before the call beats a failure hidden in the silenced log.
_NEED_IMATRIX = frozenset({"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "Q2_K_S"})
# Source types the quantizer reads without allow_requantize.
_FLOAT_TYPES = frozenset({"F32", "F16", "BF16"})


class QuantizeError(ValueError):
    """A level cannot be built; the message says why and what to do."""


def _lib() -> Any:
    return llama_lib()


def _qtypes() -> dict[str, int]:
    try:
        lib = _lib()
    except BackendError:
        return {}
    out = {}
    for name, suffix in _FTYPE_SUFFIX.items():
        value = getattr(lib, f"LLAMA_FTYPE_{suffix}", None)
        if value is not None:
            out[name] = int(value)
    return out


QTYPES: dict[str, int] = _qtypes()


def supported_qtypes() -> list[str]:
    """The quantization names `quantize` accepts (aliases Q3_K, Q4_K, Q5_K not listed)."""
    return list(QTYPES)


def _canonical(qtype: str) -> str:
    name = qtype.strip().upper()
    name = _ALIASES.get(name, name)
    if name not in QTYPES:
        raise QuantizeError(
            f"unknown quantization type {qtype!r}; supported: {', '.join(QTYPES)} "
            f"(aliases: {', '.join(f'{a}={b}' for a, b in _ALIASES.items())})"
        )
    return name


def quant_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/bench/quants`, else `~/.cache/bench/quants`."""
    return cache_dir("quants")


def _engine_version() -> str:
    return str(getattr(_lib(), "__version__", "unknown"))


_QUANT_SUFFIX = re.compile(
    r"[.-](" + "|".join(sorted(map(re.escape, _FTYPE_SUFFIX), key=len, reverse=True)) + r")"
    r"(\.[0-9a-f]{16})?$",
    re.IGNORECASE,
)


def _stem(source: Path) -> str:
    # "SmolLM2-135M-Instruct.Q4_1.gguf" and a cached "SmolLM2-135M-Instruct.F16.<key>.gguf" both
    # give "SmolLM2-135M-Instruct", so a level is never named after the level it came from.
    return _QUANT_SUFFIX.sub("", source.stem) or source.stem


def quantize(
    source: Path,
    qtype: str,
    cache_dir: Path | None = None,
    imatrix: Path | None = None,
    allow_requantize: bool = False,
    n_threads: int | None = None,
) -> Path:
    """Path of `source` quantized to `qtype` (e.g. Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, Q3_K_M,
    Q2_K, F16, BF16; see `supported_qtypes()`), built once and then reused.

    The cache (`cache_dir`, default `quant_cache_dir()`) holds
    `<stem>.<QTYPE>.<key>.gguf`, where key hashes the source's sha256, the type, the importance
    matrix's sha256 (or none) and the llama-cpp-python version; a JSON file beside it records
    them. `imatrix` is an importance matrix from llama-imatrix (GGUF or legacy .dat).
    `allow_requantize` lets an already quantized source be converted (lossy again; an upcast
    such as Q4_1 -> F16 is exact). `n_threads` defaults to all cores.
    """
    source = Path(source)
    if not source.is_file():
        raise QuantizeError(f"source model {source} does not exist")
    name = _canonical(qtype)
    if name in _NEED_IMATRIX and imatrix is None:
        raise QuantizeError(
            f"llama.cpp builds {name} only with an importance matrix; pass imatrix= "
            "(made with llama-imatrix) or choose another type"
        )
    source_sha = sha256_of(source)
    imatrix_sha = sha256_of(Path(imatrix)) if imatrix is not None else "none"
    version = _engine_version()
    key = hashlib.sha256(f"{source_sha}|{name}|{imatrix_sha}|{version}".encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else quant_cache_dir()
    target = folder / f"{_stem(source)}.{name}.{key}.gguf"
    if target.is_file():
        return target

    src_type = gguf_facts(source)["file_type"]
    if src_type not in _FLOAT_TYPES and not allow_requantize:
        raise QuantizeError(
            f"{source.name} is already quantized ({src_type}); quantizing it again compounds "
            "the loss. Start from an F16/BF16/F32 file, or pass allow_requantize=True"
        )

    lib = _lib()
    params = lib.llama_model_quantize_default_params()
    params.ftype = QTYPES[name]
    params.allow_requantize = bool(allow_requantize)
    params.nthread = int(n_threads or 0)  # 0: llama.cpp uses every hardware thread
    keep_alive: list[Any] = []
    if imatrix is not None:
        entries = read_imatrix(Path(imatrix))
        params.imatrix = _imatrix_array(lib, entries, keep_alive)

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{target.name}.{os.getpid()}.tmp"
    t0 = time.perf_counter()
    try:
        with quiet_stderr(not os.environ.get("BENCH_LLAMA_VERBOSE")):
            rc = lib.llama_model_quantize(str(source).encode(), str(tmp).encode(), params)
        if rc != 0:
            raise QuantizeError(
                f"llama.cpp could not quantize {source.name} to {name} (code {rc}); run with "
                "BENCH_LLAMA_VERBOSE=1 to see its log"
            )
        seconds = time.perf_counter() - t0
        record = {
            "source": str(source),
            "source_sha256": source_sha,
            "qtype": name,
            "ftype": QTYPES[name],
            "imatrix": str(imatrix) if imatrix is not None else None,
            "imatrix_sha256": None if imatrix is None else imatrix_sha,
            "allow_requantize": bool(allow_requantize),
            "llama_cpp_python": version,
            "build_s": round(seconds, 3),
        }
        atomic_write_json(target.with_suffix(".json"), record)
        # The .gguf appears last: its presence is what marks the level as built.
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# -- importance matrices ----------------------------------------------------------------------


def _imatrix_array(lib: Any, entries: dict[str, np.ndarray], keep_alive: list[Any]) -> Any:
    """A null-terminated C array of llama_model_imatrix_data; `keep_alive` holds the buffers
    the pointers refer to until the quantizer returns."""
    arr = (lib.llama_model_imatrix_data * (len(entries) + 1))()
    for i, (tensor, values) in enumerate(entries.items()):
        data = np.ascontiguousarray(values, dtype=np.float32)
        name = ctypes.create_string_buffer(tensor.encode())
        keep_alive += [data, name]
        arr[i].name = ctypes.cast(name, ctypes.c_char_p)
        arr[i].data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        arr[i].size = data.size
    arr[len(entries)].name = None
    keep_alive.append(arr)
    return ctypes.cast(arr, ctypes.POINTER(lib.llama_model_imatrix_data))


def read_imatrix(path: Path) -> dict[str, np.ndarray]:
    """Per-tensor importance values from a llama-imatrix file, normalised as llama-quantize
    does: GGUF files (`<tensor>.in_sum2` / `<tensor>.counts`) give sums / count per expert (1
    where a matrix saw no input); legacy .dat files give sums / number of calls."""
    with Path(path).open("rb") as f:
        magic = f.read(4)
        f.seek(0)
        try:
            if magic == b"GGUF":
                return _read_imatrix_gguf(f)
            return _read_imatrix_legacy(f)
        except (struct.error, ValueError, UnicodeDecodeError) as e:
            raise QuantizeError(f"{path} is not a readable importance matrix ({e})") from None


def _read_imatrix_legacy(f: BinaryIO) -> dict[str, np.ndarray]:
    def i32() -> int:
        return int(struct.unpack("<i", f.read(4))[0])

    out: dict[str, np.ndarray] = {}
    for _ in range(i32()):
        name = f.read(i32()).decode("utf-8")
        ncall, nval = i32(), i32()
        values = np.frombuffer(f.read(4 * nval), dtype="<f4").astype(np.float32)
        if len(values) != nval:
            raise ValueError(f"entry {name!r} is truncated")
        out[name] = values / ncall if ncall > 0 else values
    if not out:
        raise ValueError("no entries")
    return out


# GGUF metadata value types -> struct format of a scalar (8 = string, 9 = array).
_GGUF_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                10: "<Q", 11: "<q", 12: "<d"}


def _read_imatrix_gguf(f: BinaryIO) -> dict[str, np.ndarray]:
    def unpack(fmt: str) -> Any:
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

    def string() -> str:
        return f.read(unpack("<Q")).decode("utf-8")

    def value(vtype: int) -> Any:
        if vtype == 8:
            return string()
        if vtype == 9:
            item, n = unpack("<I"), unpack("<Q")
            return [value(item) for _ in range(n)]
        return unpack(_GGUF_SCALAR[vtype])

    f.read(4)
    version = unpack("<I")
    if version < 2:
        raise ValueError(f"GGUF version {version} is too old")
    n_tensors, n_kv = unpack("<Q"), unpack("<Q")
    alignment = 32
    for _ in range(n_kv):
        key = string()
        v = value(unpack("<I"))
        if key == "general.alignment":
            alignment = int(v)
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = [unpack("<Q") for _ in range(unpack("<I"))]
        ttype, offset = unpack("<I"), unpack("<Q")
        infos.append((name, dims, ttype, offset))
    start = -(-f.tell() // alignment) * alignment
    tensors: dict[str, np.ndarray] = {}
    for name, dims, ttype, offset in infos:
        if ttype != 0:  # GGML_TYPE_F32 is the only type an imatrix holds
            raise ValueError(f"tensor {name!r} is not F32")
        n = int(np.prod(dims)) if dims else 1
        f.seek(start + offset)
        data = np.frombuffer(f.read(4 * n), dtype="<f4")
        # ggml's dims are innermost first: ne0 values per row, ne1 rows (one per expert).
        tensors[name] = data.reshape(list(reversed(dims)) or [1]).astype(np.float32)
    out: dict[str, np.ndarray] = {}
    for name, sums in tensors.items():
        if not name.endswith(".in_sum2"):
            continue
        base = name.removesuffix(".in_sum2")
        counts = tensors.get(base + ".counts")
        if counts is None:
            raise ValueError(f"{base!r} has sums but no counts")
        rows = sums.reshape(counts.size, -1)
        c = counts.reshape(-1, 1)
        values = np.where(c > 0, rows / np.where(c > 0, c, 1), 1.0)
        out[base] = values.reshape(-1).astype(np.float32)
    if not out:
        raise ValueError("no <tensor>.in_sum2 entries")
    return out


# -- facts ------------------------------------------------------------------------------------


def gguf_facts(path: Path) -> dict[str, Any]:
    """size_bytes (the file), tensor_bytes and n_params (llama.cpp's llama_model_size and
    llama_model_n_params), bits_per_weight (tensor_bytes × 8 / n_params, as llama.cpp prints it)
    and file_type (the GGUF's general.file_type by name, such as Q4_K_M).

    The model is opened vocabulary-only: llama.cpp reads the tensor table, never the weights.
    """
    path = Path(path)
    if not path.is_file():
        raise QuantizeError(f"model file {path} does not exist")
    lib = _lib()
    mp = lib.llama_model_default_params()
    mp.vocab_only = True
    mp.n_gpu_layers = 0
    with quiet_stderr(not os.environ.get("BENCH_LLAMA_VERBOSE")):
        model = lib.llama_model_load_from_file(str(path).encode(), mp)
    if not model:
        raise BackendError(f"llama.cpp could not read {path} as a GGUF model")
    try:
        tensor_bytes = int(lib.llama_model_size(model))
        n_params = int(lib.llama_model_n_params(model))
        buf = ctypes.create_string_buffer(64)
        n = lib.llama_model_meta_val_str(model, b"general.file_type", buf, len(buf))
        file_type = file_type_name(buf.value.decode()) if n >= 0 else None
    finally:
        lib.llama_model_free(model)
    return {
        "size_bytes": path.stat().st_size,
        "tensor_bytes": tensor_bytes,
        "n_params": n_params,
        "bits_per_weight": tensor_bytes * 8 / n_params if n_params else None,
        "file_type": file_type,
    }
