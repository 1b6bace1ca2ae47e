"""RWKV `.pth` checkpoints run by the `rwkv` package (BlinkDL's reference implementation).

An RNN has no KV cache: each trial starts from a fresh (zero) state. Prefill is one forward
over the prompt tokens (the package's sequence mode), decode one token at a time with a greedy
argmax, and each timestamp is taken after the device has finished its work. The World
tokenizer ships inside the package, so counts and characters need no download.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from bench.backends.base import (
    Backend,
    BackendError,
    DecodeReads,
    Edge,
    Prompt,
    Session,
    Trace,
    as_cell_settings,
)
from bench.backends.rwkv.checkpoint import CheckpointFacts, inspect, looks_like_pth
from bench.backends.rwkv.config import RwkvCell
from bench.backends.torch_util import (
    import_torch,
    synchronizer,
    synthetic_tokens,
    timed_greedy,
    torch_software,
    version_of,
)

VOCAB_FILE = "rwkv_vocab_v20230424.txt"  # the World tokenizer's vocabulary, in the wheel
EOS = 0  # World models end a document with token 0


def _missing() -> BackendError:
    return BackendError("the rwkv package is not installed; install it with: pip install "
                        "'bench[rwkv]'")


@lru_cache(maxsize=1)
def world_tokenizer() -> Any:
    """The package's TRIE tokenizer over its World vocabulary (65536 tokens)."""
    try:
        import importlib.resources

        from rwkv.rwkv_tokenizer import TRIE_TOKENIZER
    except ImportError as e:
        raise _missing() from e
    vocab = importlib.resources.files("rwkv") / VOCAB_FILE
    return TRIE_TOKENIZER(str(vocab))


def encode(text: str) -> list[int]:
    return list(world_tokenizer().encode(text))


def decode(tokens: list[int]) -> str:
    # decodeBytes, not decode: the package's decode turns a whole text into U+FFFD when one
    # token ends mid-character, which would zero the characters counted for chars/s.
    return world_tokenizer().decodeBytes(tokens).decode("utf-8", errors="replace")


def _model_module(jit: bool, cuda_kernels: bool, v7: bool) -> Any:
    """rwkv.model imported under the environment switches it reads at import time
    (RWKV_JIT_ON, RWKV_CUDA_ON, RWKV_V7_ON); re-imported when another load needs others."""
    want = {
        "RWKV_JIT_ON": "1" if jit else "0",
        "RWKV_CUDA_ON": "1" if cuda_kernels else "0",
        "RWKV_V7_ON": "1" if v7 else "0",
    }
    mod = sys.modules.get("rwkv.model")
    if mod is not None and getattr(mod, "_bench_env", None) == want:
        return mod
    os.environ.update(want)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            if mod is None:
                mod = importlib.import_module("rwkv.model")
            else:
                mod = importlib.reload(mod)
    except ImportError as e:
        raise _missing() from e
    except Exception as e:  # noqa: BLE001 - RWKV_CUDA_ON compiles kernels; a failure is named
        raise BackendError(
            f"the rwkv package failed to import with {want} ({type(e).__name__}: {e}); with "
            "cuda_kernels: true it compiles CUDA code and needs nvcc, set it false otherwise"
        ) from None
    mod._bench_env = want  # type: ignore[attr-defined]  # the switches it was imported with
    return mod


class RwkvSession(Session):
    def __init__(self, model: Any, facts: CheckpointFacts, settings: RwkvCell,
                 torch: Any, env: dict[str, str]):
        self.model = model
        self.facts = facts
        self.settings = settings
        self.torch = torch
        self.env = env
        strategy = settings.strategy
        # The head (last stage) produces the logits; a GPU anywhere in the plan means waiting.
        self.device = "cuda" if "cuda" in strategy else ("mps" if "mps" in strategy else "cpu")
        self.sync = synchronizer(torch, self.device)

    # -- prompts (not timed) ----------------------------------------------------------------
    def _synthetic(self, n: int) -> list[int]:
        return synthetic_tokens(encode, [], n)  # World models use no BOS

    def prompt(
        self, prompt_id: str, n_tokens: int | None, text: str | None, depth: int = 0
    ) -> Prompt:
        if text is not None:
            tokens = encode(text)
        else:
            assert n_tokens is not None
            tokens = self._synthetic(n_tokens)
        if not tokens:
            raise BackendError(f"prompt {prompt_id!r} has no tokens")
        fill = self._synthetic(depth) if depth else None
        return Prompt(prompt_id, tokens, text, depth=depth, fill=fill)

    def detokenize(self, token_ids: list[int]) -> str:
        return decode(token_ids)

    def configure(self, settings: RwkvCell | Mapping[str, Any]) -> None:
        cell: RwkvCell = as_cell_settings(RwkvBackend, settings)
        self.torch.set_num_threads(cell.n_threads)
        self.settings = cell

    # -- the measured loop ------------------------------------------------------------------
    def generate(self, prompt: Prompt, n_gen: int, stop_at_eos: bool, on_edge: Edge) -> Trace:
        assert prompt.tokens is not None
        torch, fwd, sync = self.torch, self.model.forward, self.sync
        tokens = list(prompt.tokens)
        # A fresh state every trial (None: the package builds zeros); the depth fill runs
        # through the same state before the clock starts.
        state: Any = None

        def prefill() -> int:
            nonlocal state
            logits, state = fwd(tokens, state)
            return int(torch.argmax(logits))

        def step(tok: int) -> int:
            nonlocal state
            logits, state = fwd([tok], state)
            return int(torch.argmax(logits))

        with torch.no_grad():
            if prompt.fill:
                _, state = fwd(list(prompt.fill), None)
                sync()
            return timed_greedy(prefill, step, n_gen, (lambda t: t == EOS) if stop_at_eos
                                else None, sync, on_edge, len(tokens))

    def logits(self, tokens: list[int], one_at_a_time: bool) -> Any:
        """Logits after each token, from one sequence forward or token by token (tests)."""
        torch = self.torch
        with torch.no_grad():
            if not one_at_a_time:
                out, _ = self.model.forward(tokens, None, full_output=True)
                return out.float().cpu()
            state, rows = None, []
            for t in tokens:
                out, state = self.model.forward([t], state)
                rows.append(out.float().cpu())
            return torch.stack(rows)

    def decode_reads(self) -> DecodeReads | None:
        """What one decoded token reads, from the weights as the package converted them for
        the strategy (fp32, bf16, int8 with its scale vectors): every tensor once except the
        embedding (one row: the package keeps it on the CPU and indexes it), plus the
        recurrent state, read and written once per token. None when the package's model
        does not expose its weights."""
        w = getattr(self.model, "w", None)
        if not isinstance(w, dict) or not w:
            w = getattr(self.model, "z", None)  # the v7 loader's name for its weights
        if not isinstance(w, dict) or not w:
            return None
        tensors = {k: v for k, v in w.items() if hasattr(v, "element_size")}
        per_token, devices = 0, set()
        for name, t in tensors.items():
            size = t.numel() * t.element_size()
            if name == "emb.weight" and t.dim() == 2:
                per_token += size // max(1, int(t.shape[0]))
                continue
            per_token += size
            devices.add(t.device.type)
        streamed = any(getattr(s, "stream", False) for s in getattr(self.model, "strategy", []))
        memory = ("split" if streamed or len(devices) > 1
                  else "gpu" if devices == {"cuda"} else "cpu")
        # The state a token reads and writes: the one a forward from nothing returns.
        with self.torch.no_grad():
            _, state = self.model.forward([0], None)
        self.sync()  # on a GPU: finished before the next trial's clock starts
        state_bytes = sum(t.numel() * t.element_size() for t in state if hasattr(t, "numel"))
        return DecodeReads(
            weight_bytes_per_token=int(per_token),
            kv_bytes_per_cell=None,
            state_bytes_per_token=2 * int(state_bytes),
            memory=memory,
            method=(
                f"weights as the rwkv package holds them for {self.settings.strategy!r} "
                f"({len(tensors)} tensors, the embedding one row per token), plus the "
                f"recurrent state ({state_bytes / 2**20:.1f} MiB) read and written per token"
            ),
        )

    def info(self) -> dict[str, Any]:
        return {
            **self.facts.as_info(),
            "strategy": self.settings.strategy,
            "rwkv_env": dict(self.env),
            "tokenizer": f"rwkv World ({VOCAB_FILE})",
        }

    def close(self) -> None:
        self.model = None


class RwkvBackend(Backend):
    name = "rwkv"
    cell_type = RwkvCell

    def load(
        self, model_path: Path | None, settings: RwkvCell | Mapping[str, Any], seed: int,
        model_name: str | None = None,
    ) -> Session:
        cell: RwkvCell = as_cell_settings(type(self), settings)
        strategy, jit, cuda_kernels = cell.strategy, cell.jit, cell.cuda_kernels
        if model_path is None:
            raise BackendError(
                f"the rwkv backend runs a local .pth checkpoint; model {model_name!r} has none: "
                "give 'path' (or 'repo' and 'file' for a checkpoint on the Hub)"
            )
        problem = looks_like_pth(model_path)
        if problem:
            raise BackendError(problem)
        torch = import_torch("rwkv")
        if "cuda" in strategy and not torch.cuda.is_available():
            raise BackendError(
                f"strategy {strategy!r} needs an NVIDIA GPU and a CUDA build of torch, and this "
                f"torch ({torch.__version__}) sees none; use 'cpu fp32' or install the CUDA "
                "build (docs/engines.md)"
            )
        torch.manual_seed(seed)
        facts = inspect(model_path)
        mod = _model_module(jit, cuda_kernels, facts.version >= 7)
        # The package appends ".pth" to the name it is given.
        name = str(model_path)[: -len(".pth")]
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                if facts.version >= 7:
                    model = mod.RWKV(model=name, strategy=strategy)
                else:
                    model = mod.RWKV(model=name, strategy=strategy, verbose=False)
        except (ValueError, RuntimeError, KeyError, AssertionError, OSError) as e:
            raise BackendError(
                f"the rwkv package could not load {model_path} with strategy {strategy!r}: "
                f"{type(e).__name__}: {e}"
            ) from None
        world_tokenizer()  # built now, not inside the first trial
        session = RwkvSession(model, facts, cell, torch, dict(mod._bench_env))
        session.configure(cell)
        return session

    @classmethod
    def software(cls) -> dict[str, Any]:
        return {"rwkv": version_of("rwkv"), **torch_software()}
