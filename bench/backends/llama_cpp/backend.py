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
import gc
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Self

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


class LlamaCppSession(Session):
    """A model and one llama.cpp context made with the same parameters llama-bench uses."""

    def __init__(
        self, lib: Any, model: Any, ctx: Any, model_path: Path, settings: LlamaCppCell,
        flash_attn_effective: bool | None,
    ):
        self.lib = lib
        self.model = model
        self.ctx = ctx
        self.model_path = model_path
        self.settings = settings
        self.flash_attn_effective = flash_attn_effective
        self.mem = lib.llama_get_memory(self.ctx)
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self.vocab))
        self.n_batch = settings.n_batch
        self.n_ctx = int(lib.llama_n_ctx(self.ctx))
        self._filler: list[int] | None = None
        self.threadpool = _Threadpool(lib, ctx)
        self.threadpool.use(settings.n_threads)

    # -- prompts (not timed) ----------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True, special: bool = False) -> list[int]:
        """Token ids of text; `special` parses control-token text such as <|im_start|>."""
        raw = text.encode("utf-8")
        n_max = len(raw) + 16
        buf = (self.lib.llama_token * n_max)()
        n = self.lib.llama_tokenize(self.vocab, raw, len(raw), buf, n_max, add_special, special)
        if n < 0:  # the buffer was too small: -n is the size needed
            n_max = -n
            buf = (self.lib.llama_token * n_max)()
            n = self.lib.llama_tokenize(self.vocab, raw, len(raw), buf, n_max, add_special,
                                        special)
        return list(buf[:n])

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
        if not token_ids:
            return ""
        arr = (self.lib.llama_token * len(token_ids))(*token_ids)
        size = 8 * len(token_ids) + 16
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = self.lib.llama_detokenize(self.vocab, arr, len(token_ids), buf, size, False,
                                          False)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = -n + 1
        raise BackendError("llama.cpp could not detokenize the generated tokens")

    def configure(self, settings: LlamaCppCell | Mapping[str, Any]) -> None:
        if isinstance(settings, Mapping):
            settings = LlamaCppCell.from_values({**self.settings.__dict__, **settings})
        n = settings.n_threads
        # Prompt processing uses n_threads_batch; both follow the swept thread count.
        self.lib.llama_set_n_threads(self.ctx, n, n)
        self.threadpool.use(n)
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

        # No garbage-collector pass inside the timed loop: it would land between two tokens.
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
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
        finally:
            if gc_was_on:
                gc.enable()

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
        meta = {k: _meta(lib, self.model, k)
                for k in ("general.architecture", "general.name", "general.file_type")}
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
            "flash_attn_effective": self.flash_attn_effective,
        }

    def row_columns(self) -> dict[str, Any]:
        """Columns every trial row of this session gets."""
        return {"flash_attn_effective": self.flash_attn_effective}

    def close(self) -> None:
        if self.ctx is not None:
            self.threadpool.close()
            self.lib.llama_free(self.ctx)
            self.ctx = None
        if self.model is not None:
            self.lib.llama_model_free(self.model)
            self.model = None


def _meta(lib: Any, model: Any, key: str) -> str | None:
    buf = ctypes.create_string_buffer(512)
    n = lib.llama_model_meta_val_str(model, key.encode(), buf, ctypes.sizeof(buf))
    return buf.value.decode("utf-8", "replace") if n >= 0 else None


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


# bench's flash_attn setting -> llama.cpp's enum llama_flash_attn_type (AUTO -1, DISABLED 0,
# ENABLED 1). Auto (None in the config, "auto" accepted here), llama.cpp's own default,
# enables it where the backend supports it.
_FLASH_ATTN: dict[bool | str | None, int] = {None: -1, "auto": -1, False: 0, True: 1}


def _flash_attn_effective(requested: bool | str | None, log: str) -> bool | None:
    """What llama.cpp chose, from its log at context creation: "auto" resolves to "Flash
    Attention enabled" or "... not supported, set to disabled"; an explicit setting stands
    unless llama.cpp forced it off. None when the log does not say."""
    if "Flash Attention not supported" in log or "flash_attn is not compatible" in log:
        return False
    if requested is None or requested == "auto":
        return True if "Flash Attention enabled" in log else None
    return bool(requested)


class _ThreadpoolParams(ctypes.Structure):
    # ggml.h's struct ggml_threadpool_params (GGML_MAX_N_THREADS = 512).
    _fields_ = [
        ("cpumask", ctypes.c_bool * 512),
        ("n_threads", ctypes.c_int),
        ("prio", ctypes.c_int),
        ("poll", ctypes.c_uint32),
        ("strict_cpu", ctypes.c_bool),
        ("paused", ctypes.c_bool),
    ]


class _Threadpool:
    """A persistent ggml CPU threadpool attached to the context, as llama-bench attaches one.

    Without it ggml makes a throwaway threadpool for every graph, so a build without OpenMP
    starts and joins its worker threads on every generated token. llama-cpp-python does not
    bind these functions; they are called from its own shared libraries. Absent symbols (an
    older or differently packaged build) leave the engine's default in place.
    """

    def __init__(self, lib: Any, ctx: Any):
        self.lib = lib
        self.ctx = ctx
        self.pool: int | None = None
        self.n_threads = 0
        self.status = "engine default (threadpool functions not found)"
        try:
            lib_dir = Path(lib.__file__).parent / "lib"
            cpu = ctypes.CDLL(str(_first(lib_dir, "libggml-cpu")))
            base = ctypes.CDLL(str(_first(lib_dir, "libggml-base")))
            llama = lib.llama_cpp._lib
            self._default = base.ggml_threadpool_params_default
            self._new: Any = cpu.ggml_threadpool_new
            self._free = cpu.ggml_threadpool_free
            self._attach = llama.llama_attach_threadpool
            self._detach = llama.llama_detach_threadpool
        except (OSError, AttributeError, FileNotFoundError):
            self._new = None
            return
        self._default.argtypes, self._default.restype = [ctypes.c_int], _ThreadpoolParams
        self._new.argtypes = [ctypes.POINTER(_ThreadpoolParams)]
        self._new.restype = ctypes.c_void_p
        self._free.argtypes, self._free.restype = [ctypes.c_void_p], None
        self._attach.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self._attach.restype = None
        self._detach.argtypes, self._detach.restype = [ctypes.c_void_p], None

    def use(self, n_threads: int) -> None:
        """Attach a pool of n_threads (ggml's defaults: poll 50, normal priority, no pinning,
        the same as llama-bench's), replacing a pool of another size."""
        if self._new is None or n_threads == self.n_threads:
            return
        if os.environ.get("BENCH_LLAMA_THREADPOOL") == "0":  # A/B switch for docs/speed.md
            self.status = "engine default (BENCH_LLAMA_THREADPOOL=0)"
            return
        params = self._default(n_threads)
        pool = self._new(ctypes.byref(params))
        if not pool:
            self.status = f"engine default (ggml_threadpool_new({n_threads}) failed)"
            return
        ctx = ctypes.cast(self.ctx, ctypes.c_void_p)
        self._attach(ctx, pool, None)  # None: the batch pool is the same pool
        self.close_pool()
        self.pool, self.n_threads = pool, n_threads
        self.status = f"attached: {n_threads} threads, poll {params.poll}"

    def close_pool(self) -> None:
        if self.pool is not None and self._new is not None:
            self._free(self.pool)
        self.pool = None

    def close(self) -> None:
        if self.pool is not None:
            self._detach(ctypes.cast(self.ctx, ctypes.c_void_p))
            self.close_pool()


def _first(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.so", f"{stem}.dylib", f"{stem}.dll", f"{stem.removeprefix('lib')}.dll"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(stem)


class _LogCapture:
    """llama.cpp's log lines while loading, for what the API does not expose (the resolved
    flash-attention setting, the reason a load failed); llama-cpp-python's logger is put back
    afterwards."""

    def __init__(self, lib: Any, echo: bool):
        self.lib = lib
        self.echo = echo
        self.lines: list[str] = []

        def on_log(level: int, text: bytes, user_data: Any) -> None:
            line = text.decode("utf-8", "replace") if text else ""
            self.lines.append(line)
            if self.echo:
                sys.stderr.write(line)

        self._callback = lib.llama_log_callback(on_log)

    def __enter__(self) -> Self:
        self.lib.llama_log_set(self._callback, ctypes.c_void_p(0))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            from llama_cpp import _logger

            self.lib.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        except (ImportError, AttributeError):
            self.lib.llama_log_set(self.lib.llama_log_callback(0), ctypes.c_void_p(0))

    def text(self) -> str:
        return "".join(self.lines)

    def last_error(self) -> str | None:
        errs = [x.strip() for x in self.lines if "error" in x.lower() or "failed" in x.lower()]
        return errs[-1] if errs else None


class LlamaCppBackend(Backend):
    name = "llama-cpp"
    cell_type = LlamaCppCell

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
        with contextlib.suppress(ImportError, AttributeError):
            from llama_cpp import _logger

            # llama-cpp-python's log callback prints everything until told otherwise (its
            # Llama class does this); llama.cpp logs again when a context is freed.
            _logger.set_verbose(verbose)
        n_threads = s.n_threads
        # Through the submodule, where llama-cpp-python's own Llama class looks it up.
        mp = lib.llama_cpp.llama_model_default_params()
        mp.n_gpu_layers = s.n_gpu_layers
        mp.use_mmap = s.use_mmap
        if not s.repack:
            mp.use_extra_bufts = False
        # The context is made as llama-bench makes it (its to_llama_cparams): llama.cpp's
        # defaults plus the swept settings, so bench measures the engine as its own tool does.
        cp = lib.llama_context_default_params()
        cp.n_ctx = s.n_ctx
        cp.n_batch = s.n_batch
        cp.n_ubatch = min(s.n_ubatch, cp.n_batch)
        cp.n_threads = n_threads
        cp.n_threads_batch = n_threads
        cp.flash_attn_type = _FLASH_ATTN[s.flash_attn]
        cp.no_perf = False  # the engine's own timers are read after every trial
        log = _LogCapture(lib, echo=verbose)
        with quiet_stderr(not verbose), log:
            model = lib.llama_model_load_from_file(str(model_path).encode(), mp)
            ctx = lib.llama_init_from_model(model, cp) if model else None
        if not model:
            raise BackendError(
                f"llama.cpp could not load {model_path} ({log.last_error() or 'no detail'}); "
                "run with BENCH_LLAMA_VERBOSE=1 to see its log"
            )
        if not ctx:
            lib.llama_model_free(model)
            raise BackendError(
                f"llama.cpp could not make a context for {model_path} "
                f"({log.last_error() or 'out of memory?'}); lower n_ctx or n_batch"
            )
        effective = _flash_attn_effective(s.flash_attn, log.text())
        return LlamaCppSession(lib, model, ctx, model_path, s, effective)

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
