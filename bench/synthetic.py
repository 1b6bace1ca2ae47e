"""`synthetic:` models: a named architecture and shape with random weights from a fixed seed.

Speed and energy of a dense model do not depend on its weight values, so a 7B-shaped model of
random numbers answers "how fast would a 7B Q4_K_M run here?" without a 4 GB download. The
model is written once to the cache as GGUF F16 with the `gguf` package (tensor by tensor, so a
7B model never sits in memory whole), then quantized to any level of the ladder with bench's
quantizer (llama.cpp's own). Its tokenizer is a synthetic SentencePiece-style vocabulary of the
declared size: control tokens, the 256 byte tokens, then made-up word pieces, so any text
tokenizes (mostly to bytes). Quality metrics mean nothing for random weights and are refused.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from bench.schema import StrictModel

__all__ = [
    "PRESETS",
    "QUALITY_REFUSAL",
    "SyntheticError",
    "SyntheticShape",
    "build",
    "cached_path",
    "f16_path",
    "resolve_shape",
]

# Bump when the bytes written for a shape and seed change: it is part of the cache key.
GENERATOR_VERSION = 1
RWKV_WRITER_VERSION = 2

QUALITY_REFUSAL = (
    "quality: {model} skipped: it is a synthetic model with random weights, so bits per byte, "
    "perplexity and KL divergence would say nothing about any real model"
)


class SyntheticError(ValueError):
    """A synthetic model that cannot be made; the message says why."""


class SyntheticShape(StrictModel):
    """A transformer's shape. `base` names a preset; any other key given overrides it."""

    base: str | None = None
    arch: Literal["llama", "qwen2", "rwkv5"] | None = None
    layers: Annotated[int, Field(ge=1, le=1000)] | None = None
    embedding: Annotated[int, Field(ge=8, le=65536)] | None = None
    heads: Annotated[int, Field(ge=1, le=1024)] | None = None
    kv_heads: Annotated[int, Field(ge=1, le=1024)] | None = None
    ff: Annotated[int, Field(ge=8, le=1_000_000)] | None = None
    vocab: Annotated[int, Field(ge=300, le=1_000_000)] | None = None
    context: Annotated[int, Field(ge=16, le=10_000_000)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0

    @model_validator(mode="after")
    def _known_base(self) -> SyntheticShape:
        if self.base is not None and self.base not in PRESETS:
            raise ValueError(
                f"unknown synthetic model {self.base!r}; known: {', '.join(PRESETS)} (or give "
                "arch, layers, embedding, heads, kv_heads, ff and vocab)"
            )
        if self.base is None:
            # An RWKV's heads are its only heads, and its vocabulary is the World tokenizer's.
            optional = ("kv_heads", "vocab") if self.arch == "rwkv5" else ()
            missing = [k for k in _SHAPE_KEYS if getattr(self, k) is None and k not in optional]
            if missing:
                raise ValueError(
                    f"a synthetic model without 'base' needs {', '.join(missing)}; or name a "
                    f"preset with base: ({', '.join(PRESETS)})"
                )
        return self


_SHAPE_KEYS = ("arch", "layers", "embedding", "heads", "kv_heads", "ff", "vocab")

# Shapes of published models (their config.json), so a row reads as the real model would run:
# arch, layers, embedding, heads, kv_heads, ff, vocab, context.
_PRESET_ROWS: dict[str, tuple[str, int, int, int, int, int, int, int]] = {
    "tiny": ("llama", 2, 64, 4, 2, 128, 512, 2048),  # a few hundred KB: tests, smoke runs
    "llama-1b": ("llama", 16, 2048, 32, 8, 8192, 128256, 8192),  # Llama 3.2 1B
    "llama-7b": ("llama", 32, 4096, 32, 32, 11008, 32000, 4096),  # Llama 2 7B
    "llama-13b": ("llama", 40, 5120, 40, 40, 13824, 32000, 4096),  # Llama 2 13B
    "mistral-7b": ("llama", 32, 4096, 32, 8, 14336, 32000, 32768),  # Mistral 7B v0.2
    "qwen2.5-7b": ("qwen2", 28, 3584, 28, 4, 18944, 152064, 32768),  # q/k/v biases
    # RWKV-5.2 "Eagle" World models (head size 64, the World tokenizer's 65536 tokens), run by
    # the rwkv backend as bf16 .pth checkpoints; heads = embedding / 64, kv_heads = heads.
    "rwkv5-tiny": ("rwkv5", 2, 64, 2, 2, 224, 65536, 4096),  # 8 MB of embeddings: tests
    "rwkv5-0.4b": ("rwkv5", 24, 1024, 16, 16, 3584, 65536, 4096),
    "rwkv5-1.5b": ("rwkv5", 24, 2048, 32, 32, 7168, 65536, 4096),
    "rwkv5-3b": ("rwkv5", 32, 2560, 40, 40, 8960, 65536, 4096),
    "rwkv5-7b": ("rwkv5", 32, 4096, 64, 64, 14336, 65536, 4096),  # Eagle 7B
}
# The World tokenizer the rwkv backend uses has exactly this many tokens.
RWKV_WORLD_VOCAB = 65536
PRESETS: dict[str, dict[str, Any]] = {
    name: dict(zip((*_SHAPE_KEYS, "context"), row, strict=True))
    for name, row in _PRESET_ROWS.items()
}


def resolve_shape(spec: str | SyntheticShape) -> dict[str, Any]:
    """The full shape (every key set) of a `synthetic:` value, with its seed and a name."""
    shape = SyntheticShape(base=spec) if isinstance(spec, str) else spec
    out: dict[str, Any] = dict(PRESETS[shape.base]) if shape.base else {"context": 4096}
    for k in (*_SHAPE_KEYS, "context"):
        v = getattr(shape, k)
        if v is not None:
            out[k] = v
    if out.get("arch") == "rwkv5":
        if shape.kv_heads is None:
            out["kv_heads"] = out["heads"]
        out.setdefault("vocab", RWKV_WORLD_VOCAB)
    if out["embedding"] % out["heads"]:
        raise SyntheticError(
            f"embedding {out['embedding']} is not a multiple of heads {out['heads']}"
        )
    if out["heads"] % out["kv_heads"]:
        raise SyntheticError(f"heads {out['heads']} is not a multiple of kv_heads "
                             f"{out['kv_heads']}")
    if out["arch"] == "rwkv5":
        if out["kv_heads"] != out["heads"]:
            raise SyntheticError("an rwkv5 model has no grouped KV heads: give kv_heads equal "
                                 "to heads (or leave it out)")
        if out["vocab"] != RWKV_WORLD_VOCAB:
            raise SyntheticError(
                f"an rwkv5 model is run with the World tokenizer, so its vocab must be "
                f"{RWKV_WORLD_VOCAB}, not {out['vocab']}"
            )
    elif (out["embedding"] // out["heads"]) % 2:
        raise SyntheticError("the head size (embedding / heads) must be even for RoPE")
    out["seed"] = shape.seed
    overridden = shape.base is not None and any(
        getattr(shape, k) is not None for k in (*_SHAPE_KEYS, "context")
    )
    out["name"] = (shape.base or "custom") + ("-custom" if overridden else "")
    return out


def model_format(shape: dict[str, Any], fmt: str | None = None) -> str:
    """The format a synthetic shape is written in: an RWKV .pth for rwkv5; for a transformer
    a GGUF file, or the Hugging Face folder the transformers backend loads (`format: hf`)."""
    if shape["arch"] == "rwkv5":
        return "rwkv"
    return fmt or "gguf"


def stored_quant(shape: dict[str, Any]) -> str:
    """The precision a synthetic model is first written at: F16 GGUF (quantized from there),
    or bf16 for an RWKV checkpoint, as Eagle's own checkpoints are published."""
    return "BF16" if shape["arch"] == "rwkv5" else "F16"


def n_params(shape: dict[str, Any]) -> int:
    e, f, v, n = shape["embedding"], shape["ff"], shape["vocab"], shape["layers"]
    if shape["arch"] == "rwkv5":
        # 5 attention matrices (r k v g o), the FFN's receptance, key and value; 14 vectors
        # a layer; the embedding, the head and three norms.
        return n * (6 * e * e + 2 * e * f + 14 * e) + 2 * v * e + 4 * e
    kv = shape["kv_heads"] * (e // shape["heads"])
    per_layer = e * e * 2 + e * kv * 2 + 3 * e * f + 2 * e
    if shape["arch"] == "qwen2":
        per_layer += e + 2 * kv
    return n * per_layer + 2 * v * e + e


def _key(shape: dict[str, Any]) -> str:
    body = {k: shape[k] for k in (*_SHAPE_KEYS, "context", "seed")}
    body["generator"] = GENERATOR_VERSION
    if shape["arch"] == "rwkv5":
        # The .pth writer's own version (2: record names without a PID, CRCs written in), so
        # a change there does not rebuild every cached GGUF.
        body["rwkv_writer"] = RWKV_WRITER_VERSION
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:12]


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/bench/synthetic`, else `~/.cache/bench/synthetic`."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "bench" / "synthetic"


def f16_path(shape: dict[str, Any], folder: Path | None = None, fmt: str | None = None) -> Path:
    """The file a shape is first written to: the F16 GGUF, the bf16 .pth of an rwkv5, or the
    F16 Hugging Face folder (`fmt` "hf")."""
    fmt = model_format(shape, fmt)
    ext = {"rwkv": ".pth", "hf": "-hf"}.get(fmt, ".gguf")
    return (folder or cache_dir()) / f"synthetic-{shape['name']}.s{shape['seed']}." \
        f"{stored_quant(shape)}.{_key(shape)}{ext}"


def _vocab(n: int) -> tuple[list[bytes], list[float], list[int]]:
    """A SentencePiece-style vocabulary of exactly n tokens: <unk> <s> </s>, the 256 byte
    tokens (so every text tokenizes), then distinct made-up pieces."""
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    types = [2, 3, 3] + [6] * 256  # unknown, control, control, byte
    letters = "abcdefghijklmnopqrstuvwxyz"
    i = 0
    while len(tokens) < n:
        s, k = "", i
        while True:
            s = letters[k % 26] + s
            k = k // 26 - 1
            if k < 0:
                break
        tokens.append(("\u2581" + s).encode())
        types.append(1)
        i += 1
    scores = [0.0] * 259 + [-float(j) for j in range(n - 259)]
    return tokens[:n], scores[:n], types[:n]


def _tensors(shape: dict[str, Any]) -> list[tuple[str, tuple[int, ...], Any]]:
    import numpy as np  # lazily: the config schema imports this module, numpy is not core
    """(name, NumPy shape (rows, cols), dtype) in llama.cpp's naming; norms are F32."""
    e, f, v = shape["embedding"], shape["ff"], shape["vocab"]
    hd = e // shape["heads"]
    kv = shape["kv_heads"] * hd
    f16, f32 = np.float16, np.float32
    out: list[tuple[str, tuple[int, ...], Any]] = [("token_embd.weight", (v, e), f16)]
    for i in range(shape["layers"]):
        b = f"blk.{i}."
        out += [
            (b + "attn_norm.weight", (e,), f32),
            (b + "attn_q.weight", (e, e), f16),
            (b + "attn_k.weight", (kv, e), f16),
            (b + "attn_v.weight", (kv, e), f16),
        ]
        if shape["arch"] == "qwen2":
            out += [(b + "attn_q.bias", (e,), f32), (b + "attn_k.bias", (kv,), f32),
                    (b + "attn_v.bias", (kv,), f32)]
        out += [
            (b + "attn_output.weight", (e, e), f16),
            (b + "ffn_norm.weight", (e,), f32),
            (b + "ffn_gate.weight", (f, e), f16),
            (b + "ffn_up.weight", (f, e), f16),
            (b + "ffn_down.weight", (e, f), f16),
        ]
    out += [("output_norm.weight", (e,), f32), ("output.weight", (v, e), f16)]
    return out


def _values(name: str, shape: tuple[int, ...], dtype: Any, seed: int, index: int) -> Any:
    import numpy as np
    # One generator per tensor, seeded by (seed, index): tensors can be written one at a time
    # and the file is the same whatever order or chunking produced it.
    rng = np.random.default_rng([seed, index])
    if name.endswith("norm.weight"):
        return np.ones(shape, dtype=dtype)  # RMS-norm gains of 1, as at initialisation
    # N(0, 0.02), the usual initialisation: activations stay finite through any depth.
    rows = shape[0]
    out = np.empty(shape, dtype=dtype)
    step = max(1, (1 << 24) // max(1, int(np.prod(shape[1:])) if len(shape) > 1 else 1))
    for a in range(0, rows, step):
        chunk = rng.standard_normal((min(step, rows - a), *shape[1:]), dtype=np.float32)
        out[a:a + step] = chunk * 0.02
    return out


def write_f16(shape: dict[str, Any], path: Path) -> Path:
    import numpy as np
    """Write the F16 GGUF of a shape (temporary name, then rename): the same bytes for the same
    shape and seed on any machine."""
    try:
        import gguf
    except ImportError as e:
        raise SyntheticError(
            "synthetic models are written with the gguf package; install it with: "
            "pip install 'bench[synthetic]'"
        ) from e
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    arch = shape["arch"]
    emb, h = shape["embedding"], shape["heads"]
    try:
        w = gguf.GGUFWriter(str(tmp), arch)
        w.add_name(f"synthetic {shape['name']} (random weights, seed {shape['seed']})")
        w.add_context_length(shape["context"])
        w.add_embedding_length(emb)
        w.add_block_count(shape["layers"])
        w.add_feed_forward_length(shape["ff"])
        w.add_head_count(h)
        w.add_head_count_kv(shape["kv_heads"])
        w.add_rope_dimension_count(emb // h)
        w.add_rope_freq_base(10000.0 if arch == "llama" else 1000000.0)
        w.add_layer_norm_rms_eps(1e-5 if arch == "llama" else 1e-6)
        w.add_vocab_size(shape["vocab"])
        w.add_file_type(1)  # LLAMA_FTYPE_MOSTLY_F16
        w.add_string("general.source.synthetic", json.dumps(
            {k: shape[k] for k in (*_SHAPE_KEYS, "context", "seed")}, sort_keys=True))
        tokens, scores, types = _vocab(shape["vocab"])
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_unk_token_id(0)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        specs = _tensors(shape)
        for name, dims, dtype in specs:
            w.add_tensor_info(name, dims, np.dtype(dtype),
                              int(np.prod(dims)) * np.dtype(dtype).itemsize)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for i, (name, dims, dtype) in enumerate(specs):
            w.write_tensor_data(_values(name, dims, dtype, shape["seed"], i))
        w.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def cached_path(spec: str | SyntheticShape, quant: str, fmt: str | None = None) -> Path | None:
    """The built file (or folder) of a synthetic model at a quantization, if it is cached."""
    shape = resolve_shape(spec)
    src = f16_path(shape, fmt=fmt)
    if model_format(shape, fmt) == "hf":
        return src if (src / "model.safetensors").is_file() else None
    if quant.upper() == stored_quant(shape):
        return src if src.is_file() else None
    if not src.is_file():
        return None
    marker = _quant_marker(src, quant)
    if marker.is_file():
        p = Path(marker.read_text().strip())
        if p.is_file():
            return p
    return None


def _quant_marker(src: Path, quant: str) -> Path:
    return src.with_name(f"{src.stem}.{quant.upper()}.path")


def build(spec: str | SyntheticShape, quant: str = "F16", folder: Path | None = None,
          fmt: str | None = None) -> Path:
    """The path of a synthetic model at `quant`, writing the F16 file and quantizing it on
    first use (both cached); `fmt` "hf" writes a Hugging Face folder instead of GGUF."""
    shape = resolve_shape(spec)
    src = f16_path(shape, folder, fmt)
    if model_format(shape, fmt) == "hf":
        if quant.upper() != "F16":
            raise SyntheticError(
                f"a format: hf synthetic model is one float16 folder, not {quant}; the "
                "transformers backend's dtype sets the precision"
            )
        if not (src / "model.safetensors").is_file():
            from bench.backends.transformers.synthetic import write_folder

            write_folder(shape, src)
        return src
    if model_format(shape, fmt) == "rwkv":
        if quant.upper() != stored_quant(shape):
            raise SyntheticError(
                f"an rwkv5 synthetic model is one bf16 checkpoint, not {quant}; the rwkv "
                "backend's strategy ('cpu fp32', 'cuda fp16i8', ...) sets the precision"
            )
        if not src.is_file():
            from bench.backends.rwkv.synthetic import write_pth

            write_pth(shape, src)
        return src
    if not src.is_file():
        write_f16(shape, src)
    if quant.upper() == "F16":
        return src
    from bench.quantize import QuantizeError, quantize

    try:
        out = quantize(src, quant, cache_dir=folder)
    except QuantizeError as e:
        raise SyntheticError(str(e)) from None
    if folder is None:
        # A pointer beside the F16 file, so `cached_path` finds the level without hashing the
        # F16 file (seconds for a 7B model) on every dry run.
        _quant_marker(src, quant).write_text(str(out) + "\n")
    return out


def describe(spec: str | SyntheticShape) -> str:
    shape = resolve_shape(spec)
    return (
        f"synthetic {shape['name']}: {shape['arch']}, {shape['layers']} layers, embedding "
        f"{shape['embedding']}, {shape['heads']} heads"
        + ("" if shape["arch"] == "rwkv5" else f" ({shape['kv_heads']} KV)") + ", ff "
        f"{shape['ff']}, vocab {shape['vocab']}, {n_params(shape) / 1e9:.2f} B parameters, "
        f"seed {shape['seed']}"
    )
