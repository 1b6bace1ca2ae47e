"""llama-cpp-python in process, driven through its low-level token loop.

The streaming text API detokenizes, checks stop strings and copies the whole logits row into
NumPy on every token; none of that is the engine's work, so it would be charged to the model.
Here each trial is: clear the KV cache, decode the prompt in n_batch chunks, then decode one
token at a time with a greedy argmax read straight from llama.cpp's logits buffer. llama.cpp's own
counters (`llama_perf_context`) are read after every trial so the harness overhead is visible.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bench.backends.base import (
    Backend,
    BackendError,
    Edge,
    Prompt,
    Session,
    Trace,
    as_cell_settings,
)
from bench.backends.llama_cpp.config import LlamaCppCell

# A neutral English passage; synthetic prompts repeat its tokens to the requested length, like
# llama-bench's ppN but with real text, so the tokens are ones the model meets in practice.
FILLER = (
    "The river rises in the hills and runs for many miles through farmland and small towns "
    "before it reaches the sea. In spring the water is high and fast; in late summer it is "
    "slow and clear, and children swim where the banks are low. Mills once stood along its "
    "course, and some of their stone walls remain. Today the valley is known for its orchards, "
    "its old bridges and the birds that gather on the marshes near the estuary each autumn. "
)


@contextlib.contextmanager
def quiet_stderr(enabled: bool) -> Iterator[None]:
    """Silence llama.cpp's C-level logging on fd 2 (model load prints hundreds of lines)."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def llama_lib() -> Any:
    """The llama_cpp module, or a BackendError saying how to install it."""
    try:
        import llama_cpp
    except ImportError as e:
        raise BackendError(
            "llama-cpp-python is not installed; install it with: pip install 'bench[llama]' "
            "(it compiles llama.cpp once, about five minutes)"
        ) from e
    return llama_cpp


# Old private names, kept while other branches that still import them are merged.
_lib = llama_lib
_quiet_stderr = quiet_stderr


class LlamaCppSession(Session):
    def __init__(self, llm: Any, model_path: Path, settings: LlamaCppCell):
        lib = llama_lib()
        self.lib = lib
        self.llm = llm
        self.model_path = model_path
        self.settings = settings
        # The public pointers llama-cpp-python hands out, not its private _ctx/_model objects.
        self.ctx = llm.ctx
        self.model = llm.model
        self.mem = lib.llama_get_memory(self.ctx)
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self.vocab))
        self.n_batch = settings.n_batch
        self.n_ctx = int(lib.llama_n_ctx(self.ctx))
        self._filler: list[int] | None = None

    # -- prompts (not timed) ----------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=False)

    def prompt(
        self, prompt_id: str, n_tokens: int | None, text: str | None, depth: int = 0
    ) -> Prompt:
        if text is not None:
            tokens = self.tokenize(text)
        else:
            assert n_tokens is not None
            if self._filler is None:
                self._filler = self.tokenize(FILLER * 4, add_special=False)
            head = self.tokenize("", add_special=True)  # BOS where the model wants one
            body: list[int] = []
            while len(head) + len(body) < n_tokens:
                body.extend(self._filler)
            tokens = (head + body)[:n_tokens]
        if len(tokens) < 1:
            raise BackendError(f"prompt {prompt_id!r} has no tokens")
        if depth:
            # The context fill is a synthetic prompt of `depth` tokens (BOS first).
            fill = self.prompt(prompt_id, depth, None).tokens
            return Prompt(prompt_id, tokens, text, depth=depth, fill=fill)
        return Prompt(prompt_id, tokens, text)

    def detokenize(self, token_ids: list[int]) -> str:
        return self.llm.detokenize(token_ids).decode("utf-8", errors="replace")

    def configure(self, settings: LlamaCppCell | Mapping[str, Any]) -> None:
        if isinstance(settings, Mapping):
            settings = LlamaCppCell.from_values({**self.settings.__dict__, **settings})
        n = settings.n_threads
        # Prompt processing uses n_threads_batch; both follow the swept thread count.
        self.lib.llama_set_n_threads(self.ctx, n, n)
        self.settings = settings

    # -- the measured loop ------------------------------------------------------------------
    def _chunks(self, tokens: list[int]) -> list[tuple[Any, int]]:
        """n_batch-sized chunks; never a last chunk of one token, which llama.cpp would count
        as a generation step instead of prompt processing."""
        n, b = len(tokens), self.n_batch
        sizes = [b] * (n // b) + ([n % b] if n % b else [])
        if len(sizes) > 1 and sizes[-1] == 1:
            sizes[-2] -= 1
            sizes[-1] = 2
        out, i = [], 0
        for s in sizes:
            arr = (self.lib.llama_token * s)(*tokens[i : i + s])
            out.append((arr, s))
            i += s
        return out

    def generate(self, prompt: Prompt, n_gen: int, stop_at_eos: bool, on_edge: Edge) -> Trace:
        lib = self.lib
        assert prompt.tokens is not None
        n_prompt = len(prompt.tokens)
        if n_prompt + n_gen + prompt.depth > self.n_ctx:
            raise BackendError(
                f"prompt ({n_prompt} tokens) plus {n_gen} generated tokens"
                + (f" at depth {prompt.depth}" if prompt.depth else "")
                + f" exceed n_ctx {self.n_ctx}; raise n_ctx"
            )
        chunks = [(lib.llama_batch_get_one(arr, s), arr) for arr, s in self._chunks(prompt.tokens)]
        one = (lib.llama_token * 1)()
        batch_one = lib.llama_batch_get_one(one, 1)
        times = [0.0] * n_gen
        ids = [0] * n_gen
        decode = lib.llama_decode
        logits_ith = lib.llama_get_logits_ith
        ctx, n_vocab = self.ctx, self.n_vocab
        as_array = np.ctypeslib.as_array
        perf = time.perf_counter
        is_eog = lib.llama_vocab_is_eog
        vocab = self.vocab

        # Every trial starts from an empty KV cache and fresh engine counters.
        lib.llama_memory_clear(self.mem, True)
        if prompt.fill:
            # Context depth: fill the KV cache untimed, then count only the timed prompt.
            for arr, s in self._chunks(prompt.fill):
                if decode(ctx, lib.llama_batch_get_one(arr, s)) != 0:
                    raise BackendError("llama_decode failed on the context-depth fill")
            # Decoding is asynchronous and the counters count at the next sync: sync now, so
            # the reset below leaves the fill out of engine_n_p_eval.
            lib.llama_synchronize(ctx)
        lib.llama_perf_context_reset(ctx)

        on_edge("start")
        t_start = perf()
        for batch, _arr in chunks:
            rc = decode(ctx, batch)
            if rc != 0:
                raise BackendError(f"llama_decode failed on the prompt (code {rc})")
        tok = int(as_array(logits_ith(ctx, -1), shape=(n_vocab,)).argmax())
        times[0] = perf()
        ids[0] = tok
        on_edge("first")
        produced = 1
        eos = False
        for k in range(1, n_gen):
            if stop_at_eos and is_eog(vocab, tok):
                eos = True
                break
            one[0] = tok
            rc = decode(ctx, batch_one)
            if rc != 0:
                raise BackendError(f"llama_decode failed at generated token {k} (code {rc})")
            tok = int(as_array(logits_ith(ctx, -1), shape=(n_vocab,)).argmax())
            times[k] = perf()
            ids[k] = tok
            produced = k + 1
        on_edge("end")

        pc = lib.llama_perf_context(ctx)
        engine = {
            "engine_n_p_eval": int(pc.n_p_eval),
            "engine_t_p_eval_ms": float(pc.t_p_eval_ms),
            "engine_n_eval": int(pc.n_eval),
            "engine_t_eval_ms": float(pc.t_eval_ms),
        }
        return Trace(
            n_prompt=n_prompt,
            t_start=t_start,
            token_times=times[:produced],
            token_ids=ids[:produced],
            engine=engine,
            stopped_at_eos=eos,
        )

    def info(self) -> dict[str, Any]:
        lib = self.lib
        buf = ctypes.create_string_buffer(256)
        lib.llama_model_desc(self.model, buf, ctypes.sizeof(buf))
        n_params = int(lib.llama_model_n_params(self.model))
        size = int(lib.llama_model_size(self.model))
        meta = dict(getattr(self.llm, "metadata", {}) or {})
        return {
            "description": buf.value.decode("utf-8", "replace"),
            "architecture": meta.get("general.architecture"),
            "name": meta.get("general.name"),
            "n_params": n_params,
            "tensor_bytes": size,
            "bits_per_weight": round(size * 8 / n_params, 3) if n_params else None,
            "quant_type": file_type_name(meta.get("general.file_type")),
            "n_vocab": self.n_vocab,
            "n_ctx_train": int(lib.llama_model_n_ctx_train(self.model)),
            "n_ctx": self.n_ctx,
        }

    def close(self) -> None:
        close = getattr(self.llm, "close", None)
        if close is not None:
            close()
        self.llm = None


# llama.cpp's enum llama_ftype, for naming the quantization a GGUF file declares.
_FTYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}


def file_type_name(value: Any) -> str | None:
    """The quantization a GGUF's general.file_type declares ("Q4_K_M"), or None."""
    try:
        return _FTYPES.get(int(value), f"ftype-{int(value)}")
    except (TypeError, ValueError):
        return None


_file_type_name = file_type_name


class LlamaCppBackend(Backend):
    name = "llama-cpp"

    @classmethod
    def cell_settings(cls, values: Mapping[str, Any]) -> LlamaCppCell:
        return LlamaCppCell.from_values(values)

    def load(
        self, model_path: Path | None, settings: LlamaCppCell | Mapping[str, Any], seed: int,
        model_name: str | None = None,
    ) -> Session:
        if model_path is None:
            raise BackendError(
                f"llama-cpp runs a local GGUF file; model {model_name!r} is only a server's "
                "name ('served'), give 'path', 'repo' or 'package' instead"
            )
        s: LlamaCppCell = as_cell_settings(type(self), settings)
        lib = llama_lib()
        verbose = bool(os.environ.get("BENCH_LLAMA_VERBOSE"))
        n_threads = s.n_threads
        try:
            with quiet_stderr(not verbose):
                llm = lib.Llama(
                    model_path=str(model_path),
                    n_ctx=s.n_ctx,
                    n_batch=s.n_batch,
                    n_ubatch=s.n_ubatch,
                    n_threads=n_threads,
                    n_threads_batch=n_threads,
                    n_gpu_layers=s.n_gpu_layers,
                    flash_attn=s.flash_attn,
                    use_mmap=s.use_mmap,
                    seed=seed,
                    logits_all=False,
                    verbose=verbose,
                )
        except (ValueError, RuntimeError, OSError) as e:
            raise BackendError(f"llama.cpp could not load {model_path}: {e}") from None
        return LlamaCppSession(llm, model_path, s)

    @classmethod
    def software(cls) -> dict[str, Any]:
        try:
            lib = llama_lib()
        except BackendError as e:
            return {"llama_cpp_python": None, "error": str(e)}
        info = lib.llama_print_system_info()
        return {
            "llama_cpp_python": getattr(lib, "__version__", None),
            "llama_cpp_system_info": info.decode("utf-8", "replace").strip() if info else None,
            "llama_cpp_gpu_offload": bool(lib.llama_supports_gpu_offload()),
        }
