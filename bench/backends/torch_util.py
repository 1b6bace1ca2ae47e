"""What the two in-process torch backends (rwkv, transformers) share: the lazy torch import,
device synchronization before a timestamp, the timed greedy loop, synthetic prompts and
context fills, versions."""
from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable
from typing import Any

from bench.backends.base import BackendError, Edge, Trace


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


def timed_greedy(
    prefill: Callable[[], int],
    step: Callable[[int], int],
    n_gen: int,
    is_stop: Callable[[int], bool] | None,
    sync: Callable[[], None],
    on_edge: Edge,
    n_prompt: int,
) -> Trace:
    """One trial's timed part for an engine driven from Python: `prefill()` runs the prompt and
    returns the first generated token (greedy), `step(tok)` feeds one token and returns the
    next. Each timestamp is taken after `sync()`, so on a GPU it is when the token exists. The
    engine's state (a fresh RNN state, an empty KV cache, any untimed depth fill) is the
    caller's, set up before this is called; `is_stop` ends generation at EOS when asked."""
    perf = time.perf_counter
    times = [0.0] * n_gen
    ids = [0] * n_gen
    on_edge("start")
    t_start = perf()
    tok = prefill()
    sync()
    times[0] = perf()
    ids[0] = tok
    on_edge("first")
    produced, eos = 1, False
    for k in range(1, n_gen):
        if is_stop is not None and is_stop(tok):
            eos = True
            break
        tok = step(tok)
        sync()
        times[k] = perf()
        ids[k] = tok
        produced = k + 1
    on_edge("end")
    return Trace(
        n_prompt=n_prompt,
        t_start=t_start,
        token_times=times[:produced],
        token_ids=ids[:produced],
        stopped_at_eos=eos,
    )


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
