"""What the two in-process torch backends (rwkv, transformers) share: the lazy torch import,
device synchronization before a timestamp, synthetic prompts and context fills, versions."""
from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

from bench.backends.base import BackendError


def import_torch(extra: str) -> Any:
    """torch, or a one-sentence error naming the extra that installs it."""
    try:
        import torch
    except ImportError as e:
        raise BackendError(
            f"PyTorch is not installed; install it with: pip install 'bench[{extra}]' (see "
            "docs/engines.md for the CUDA or Apple build)"
        ) from e
    return torch


def synchronizer(torch: Any, device: str) -> Callable[[], None]:
    """A call that waits for queued GPU work, so a timestamp taken after it is the moment the
    token really exists; a no-op on CPU, where every op has finished when it returns."""
    kind = device.split(":")[0]
    if kind == "cuda":
        return torch.cuda.synchronize
    if kind == "mps":
        return torch.mps.synchronize
    return lambda: None


def synthetic_tokens(encode: Callable[[str], list[int]], head: list[int], n: int) -> list[int]:
    """Exactly n tokens: the model's start tokens (BOS where it wants one), then llama.cpp's
    FILLER passage in this model's own tokens, repeated, as LlamaCppSession.prompt builds it."""
    from bench.backends.llama_cpp import FILLER

    filler = encode(FILLER * 4)
    if not filler:
        raise BackendError("the tokenizer turned the filler passage into no tokens")
    body: list[int] = []
    while len(head) + len(body) < n:
        body.extend(filler)
    return (list(head) + body)[:n]


def version_of(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_software() -> dict[str, Any]:
    """torch's version and build: a CPU wheel, CUDA (which toolkit) or Apple's MPS."""
    try:
        import torch
    except ImportError:
        return {"torch": None}
    mps = getattr(torch.backends, "mps", None)
    return {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_cuda_available": bool(torch.cuda.is_available()),
        "torch_mps_available": bool(mps is not None and mps.is_available()),
        "torch_threads": torch.get_num_threads(),
    }
