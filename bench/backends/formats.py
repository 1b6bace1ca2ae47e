"""Which model formats each backend runs: GGUF (llama.cpp and servers), RWKV `.pth` (rwkv)
and Hugging Face model folders or repositories (transformers).

The sweep pairs a model only with the backends that can run its format, so one config can hold
Eagle 7B's checkpoint beside GGUF files without excluding every impossible pair by hand.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Backends not listed here run GGUF files (and models a server knows by name).
BACKEND_FORMATS: dict[str, str] = {"rwkv": "rwkv", "transformers": "hf"}
FORMAT_BACKEND = {fmt: backend for backend, fmt in BACKEND_FORMATS.items()}


def model_format(spec: Any) -> str:
    """A model spec's format: as given, else `.pth` -> rwkv, a local folder with config.json ->
    hf, else gguf."""
    if getattr(spec, "format", None):
        return str(spec.format)
    if getattr(spec, "synthetic", None) is not None:
        from bench.synthetic import model_format as synthetic_format
        from bench.synthetic import resolve_shape

        return synthetic_format(resolve_shape(spec.synthetic))
    name = spec.path or spec.file or ""
    if name.endswith(".pth"):
        return "rwkv"
    if spec.path is not None and (Path(os.path.expanduser(spec.path)) / "config.json").is_file():
        return "hf"
    return "gguf"


def runs_on(backend: str, spec: Any) -> bool:
    """Whether `backend` can run the model `spec` names."""
    fmt = model_format(spec)
    if spec.served is not None:
        return backend not in BACKEND_FORMATS
    return BACKEND_FORMATS.get(backend, "gguf") == fmt


def check_hf_folder(p: Path) -> str | None:
    """Why a local folder is not a model transformers can load, or None."""
    if not p.exists():
        return f"model folder {p} does not exist; check the path or download the model"
    if not p.is_dir():
        return f"{p} is a file; a transformers model is a folder with config.json and weights"
    if not (p / "config.json").is_file():
        return f"model folder {p} has no config.json; point 'path' at the model's folder"
    return None


def folder_files(p: Path) -> list[Path]:
    """The files that make a transformers model what it is (config, tokenizer, weights)."""
    keep = (".json", ".safetensors", ".bin", ".model", ".txt", ".py", ".tiktoken")
    return sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in keep)
