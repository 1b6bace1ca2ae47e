"""Model quality from the model's own log-probabilities: bits per byte, perplexity, and the KL
divergence and top-1 agreement of a quantization against its highest-precision variant.

Everything is computed in process by llama.cpp (through llama-cpp-python's low-level API, like the
backend): a text is tokenized, evaluated window by window from an empty KV cache with logits
requested for every scored position, and NumPy turns those logits into log-probabilities in
float64. The exact rules (which tokens are scored, which bytes they cover, how long texts are
windowed) are in docs/quality.md and in the docstrings below.

For the runner: `reference_logits` evaluates the reference model once and keeps its logits on
disk; `quality_rows` takes a model path or an already loaded model (a `llama_cpp.Llama` or the
backend's session), so a cell can reuse the model it has loaded for timing.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

from bench.backends.base import BackendError
from bench.workload.text import count_bytes, count_chars

__all__ = [
    "DEFAULT_WINDOW",
    "DistributionComparison",
    "QualityError",
    "ReferenceLogits",
    "TokenLogprobs",
    "bits_per_byte",
    "bits_per_char",
    "compare_distributions",
    "log_softmax",
    "open_model",
    "perplexity",
    "quality_rows",
    "reference_logits",
    "text_logprobs",
    "text_tokens",
    "windows",
]

# Tokens per evaluation window when nothing else says. The built-in held-out texts are 300-2000
# tokens in every tokenizer, so they fit in one window and are scored with all their context.
DEFAULT_WINDOW = 2048
# float64 rows are processed in blocks of about this many elements (32 MiB), so a 262k-entry
# vocabulary times a thousand positions never becomes one 2 GB temporary.
_BLOCK_ELEMENTS = 1 << 22

_LN2 = math.log(2.0)


class QualityError(ValueError):
    """Quality cannot be computed as asked; the message says what does not match and why."""


# -- numerics ----------------------------------------------------------------------------------


def _row_blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    step = max(1, _BLOCK_ELEMENTS // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


def log_softmax(rows: np.ndarray) -> np.ndarray:
    """log_softmax over the last axis in float64 (max-subtracted, so large logits cannot overflow).

    Takes one block; callers split large arrays into blocks first.
    """
    x = np.asarray(rows, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _token_logprobs(rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """ln p(target_i) under row i, block by block."""
    out = np.empty(len(targets), dtype=np.float64)
    n_vocab = rows.shape[1]
    for b in _row_blocks(len(targets), n_vocab):
        x = np.asarray(rows[b], dtype=np.float64)
        m = x.max(axis=1)
        lse = m + np.log(np.exp(x - m[:, None]).sum(axis=1))
        out[b] = x[np.arange(len(x)), targets[b]] - lse
    return out


class DistributionComparison:
    """Accumulates KL(ref || cand) and top-1 agreement over blocks of positions, so two
    distributions can be compared as the candidate's rows arrive, without holding them all."""

    def __init__(self) -> None:
        self.n_positions = 0
        self._kl_sum = 0.0
        self._kl_max = 0.0
        self._agree = 0

    def add(self, ref_rows: np.ndarray, cand_rows: np.ndarray) -> None:
        if ref_rows.shape != cand_rows.shape:
            raise QualityError(
                f"reference rows {ref_rows.shape} and candidate rows {cand_rows.shape} differ in "
                "shape; KL needs the same positions over the same vocabulary"
            )
        n, n_vocab = ref_rows.shape
        for b in _row_blocks(n, n_vocab):
            r = np.asarray(ref_rows[b])
            c = np.asarray(cand_rows[b])
            lr = log_softmax(r)
            lc = log_softmax(c)
            kl = (np.exp(lr) * (lr - lc)).sum(axis=1)
            # KL is never negative; float64 rounding can leave -1e-17 on identical rows.
            np.maximum(kl, 0.0, out=kl)
            self._kl_sum += float(kl.sum())
            self._kl_max = max(self._kl_max, float(kl.max(initial=0.0)))
            self._agree += int((r.argmax(axis=1) == c.argmax(axis=1)).sum())
            self.n_positions += len(r)

    def result(self) -> dict[str, float | int]:
        if self.n_positions == 0:
            raise QualityError("no positions were compared")
        return {
            "kl_div": self._kl_sum / self.n_positions,
            "kl_div_max": self._kl_max,
            "top1_agree": self._agree / self.n_positions,
            "n_positions": self.n_positions,
        }


def compare_distributions(
    ref_logits_rows: np.ndarray, cand_logits_rows: np.ndarray
) -> dict[str, float | int]:
    """Mean KL(ref || cand) per position in nats, and the fraction of positions whose argmax
    agrees, from two (positions × vocabulary) arrays of logits (or log-probabilities: the
    softmax is taken again, which changes nothing for rows already normalised).

    Both must come from the same token sequence evaluated the same way (same tokenizer, same
    windows), which holds for quantizations of one model; rows are processed in blocks of about
    32 MiB, so memory-mapped arrays stay on disk. Also returns `kl_div_max` (the worst position)
    and `n_positions`.
    """
    acc = DistributionComparison()
    acc.add(ref_logits_rows, cand_logits_rows)
    return acc.result()


# -- the engine ---------------------------------------------------------------------------------


def _lib() -> Any:
    from bench.backends.llama_cpp.backend import llama_lib

    return llama_lib()


@dataclass
class _Engine:
    """The C handles behind a `llama_cpp.Llama` (directly or inside the backend's session)."""

    llm: Any
    ctx: Any
    model: Any
    vocab: Any
    n_vocab: int
    n_ctx: int
    n_batch: int

    @classmethod
    def of(cls, llm_or_session: Any) -> _Engine:
        lib = _lib()
        llm = getattr(llm_or_session, "llm", llm_or_session)  # the backend session wraps a Llama
        if llm is None or not hasattr(llm, "ctx") or not hasattr(llm, "model"):
            raise QualityError(
                f"expected a llama_cpp.Llama or a loaded llama.cpp session, got {llm_or_session!r}"
            )
        # The public pointers of llama-cpp-python's Llama, not its private wrappers.
        ctx = llm.ctx
        model = llm.model
        vocab = lib.llama_model_get_vocab(model)
        return cls(
            llm=llm,
            ctx=ctx,
            model=model,
            vocab=vocab,
            n_vocab=int(lib.llama_vocab_n_tokens(vocab)),
            n_ctx=int(lib.llama_n_ctx(ctx)),
            n_batch=int(lib.llama_n_batch(ctx)),
        )


def _piece(lib: Any, vocab: Any, token: int) -> bytes:
    buf = ctypes.create_string_buffer(256)
    n = lib.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
    if n < 0:  # the piece is longer than the buffer: -n is its length
        buf = ctypes.create_string_buffer(-n)
        n = lib.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
    return buf.raw[:n]


def _leading_bytes(pieces: bytes, text_bytes: bytes) -> int:
    """How many bytes at the start of the text the unscored tokens' pieces cover.

    SentencePiece tokenizers put a space before the first word that is not in the text; that
    space is not the text's, so it is not counted.
    """
    if text_bytes.startswith(pieces):
        return len(pieces)
    if pieces.startswith(b" ") and text_bytes.startswith(pieces[1:]):
        return len(pieces) - 1
    raise QualityError(
        f"the first token {pieces!r} does not match the start of the text "
        f"{text_bytes[:len(pieces) + 4]!r}; cannot tell which bytes are scored"
    )


def windows(
    n_text_tokens: int, capacity: int, stride: int, first_scored: int
) -> list[tuple[int, int, int]]:
    """The evaluation windows over a text of `n_text_tokens` tokens, as (start, end, score_from):
    the window holds text tokens [start, end) after the prefix, and scores [score_from, end).

    `capacity` is the number of text tokens one window holds (the window minus the prefix). The
    first window starts at the text's start and scores from `first_scored`; each later one moves
    the scored end on by `stride` tokens and starts `capacity` tokens before its end, so every
    token is scored exactly once with at least `capacity - stride` tokens of context (the last
    window ends at the text's end and may score fewer).
    """
    if capacity < 1:
        raise QualityError(f"a window must hold at least one text token (capacity {capacity})")
    if n_text_tokens <= first_scored:
        return []
    out: list[tuple[int, int, int]] = []
    end = min(n_text_tokens, capacity)
    out.append((0, end, first_scored))
    while end < n_text_tokens:
        new_end = min(n_text_tokens, end + stride)
        start = new_end - capacity
        out.append((start, new_end, end))
        end = new_end
    return out


@dataclass
class TokenLogprobs:
    """Per-token log-probabilities of one text under one model.

    `tokens` are the text's tokens (no BOS); `prefix` is what each window starts with (the BOS
    when the model adds one, else nothing). `logprobs[k]` is ln p(tokens[first_scored + k] | the
    prefix and the tokens before it in its window), in nats, float64. `logits`, kept only when
    asked, holds the matching raw float32 rows (the distribution each scored token was drawn
    from), one per scored token, for KL against another model.
    """

    tokens: np.ndarray
    prefix: list[int]
    first_scored: int
    logprobs: np.ndarray
    window: int
    stride: int
    n_windows: int
    text_bytes: int
    text_sha256: str
    unscored_bytes: int  # bytes at the text's start covered only by unscored tokens
    unscored_chars: int
    logits: np.ndarray | None = None
    _storage: Any = field(default=None, repr=False)  # keeps a temporary folder alive

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def n_scored(self) -> int:
        return len(self.logprobs)

    @property
    def scored_tokens(self) -> np.ndarray:
        return self.tokens[self.first_scored :]

    @property
    def nll_nats(self) -> float:
        """−Σ ln p over the scored tokens."""
        return float(-self.logprobs.sum())

    def scored_bytes(self, text: str) -> int:
        self._check_text(text)
        return self.text_bytes - self.unscored_bytes

    def scored_chars(self, text: str) -> int:
        self._check_text(text)
        return count_chars(text) - self.unscored_chars

    def _check_text(self, text: str) -> None:
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != self.text_sha256:
            raise QualityError(
                "the text given is not the one these log-probabilities were computed from"
            )


RowSink = Callable[[int, np.ndarray], None]


def _tokenize(eng: _Engine, text: str) -> tuple[np.ndarray, list[int]]:
    # The text alone, with special-token syntax read as plain text; the BOS is added by hand so
    # that add_special cannot also append an EOS the text does not have.
    lib = _lib()
    # Through llama.cpp's own C API on the vocabulary, for a Llama and a backend session alike.
    raw = text.encode("utf-8")
    n_max = len(raw) + 16
    buf = (lib.llama_token * n_max)()
    n = lib.llama_tokenize(eng.vocab, raw, len(raw), buf, n_max, False, False)
    if n < 0:  # the buffer was too small: -n is the size needed
        n_max = -n
        buf = (lib.llama_token * n_max)()
        n = lib.llama_tokenize(eng.vocab, raw, len(raw), buf, n_max, False, False)
    ids = list(buf[:n])
    prefix = [int(lib.llama_vocab_bos(eng.vocab))] if lib.llama_vocab_get_add_bos(eng.vocab) else []
    return np.asarray(ids, dtype=np.int32), prefix


def text_tokens(llm_or_session: Any, text: str) -> tuple[np.ndarray, list[int]]:
    """(the text's tokens, the prefix each window starts with) as `text_logprobs` uses them."""
    return _tokenize(_Engine.of(llm_or_session), text)


def text_logprobs(
    llm_or_session: Any,
    text: str,
    n_ctx_window: int | None = None,
    *,
    stride: int | None = None,
    keep_logits: bool = False,
    logits_path: Path | None = None,
    on_rows: RowSink | None = None,
) -> TokenLogprobs:
    """Log-probability of every scored token of `text` given what precedes it.

    Tokenization: the text alone, special-token syntax read as plain text; then, when the model's
    vocabulary says to add a BOS, the BOS is put first and *every* text token is scored. A model
    without a BOS (SmolLM2's GGUF, for one) has nothing to condition its first token on, so that
    token is context only and the bytes it covers are left out of `bits_per_byte`.

    Windowing: a window is `n_ctx_window` tokens (default: the context size, at most
    DEFAULT_WINDOW) counting the BOS. A text that fits is evaluated once. A longer one is scored
    by a sliding window (see `windows`): every window starts again from an empty KV cache with
    the BOS first, scores only tokens not yet scored, and moves on by `stride` tokens (default
    half a window), so each token is scored once with at least half a window of context.

    Each window is decoded in n_batch chunks with a logits flag on exactly the positions whose
    next token is scored. With `keep_logits` the raw rows are kept (in memory, or in a .npy file
    at `logits_path`, memory-mapped); `on_rows(k, rows)` receives them block by block instead
    (k = index of the first row among the scored tokens), so a caller can compare distributions
    without storing them. The KV cache is cleared before every window and left empty after.
    """
    lib = _lib()
    eng = _Engine.of(llm_or_session)
    window = int(n_ctx_window) if n_ctx_window is not None else min(eng.n_ctx, DEFAULT_WINDOW)
    if window > eng.n_ctx:
        raise QualityError(
            f"window of {window} tokens exceeds the context's n_ctx {eng.n_ctx}; load the model "
            "with a larger n_ctx or ask for a smaller window"
        )
    text_b = text.encode("utf-8")
    tokens, prefix = _tokenize(eng, text)
    first_scored = 0 if prefix else 1
    capacity = window - len(prefix)
    # Without a prefix the first token of a window is never predicted, so a stride of a whole
    # window would leave one token per window unscored.
    max_stride = capacity if prefix else capacity - 1
    step = int(stride) if stride is not None else max(1, capacity // 2)
    if not 1 <= step <= max_stride:
        raise QualityError(f"stride must be between 1 and {max_stride} tokens, not {step}")
    plan = windows(len(tokens), capacity, step, first_scored)
    if not plan:
        raise QualityError(
            f"the text has {len(tokens)} token(s); at least {first_scored + 1} are needed to score "
            "one"
        )
    unscored = b"".join(_piece(lib, eng.vocab, int(t)) for t in tokens[:first_scored])
    n_unscored_bytes = _leading_bytes(unscored, text_b) if first_scored else 0
    # A character split between the unscored and the scored bytes counts as scored.
    n_unscored_chars = count_chars(text_b[:n_unscored_bytes].decode("utf-8", errors="ignore"))

    n_scored = len(tokens) - first_scored
    logits: np.ndarray | None = None
    if keep_logits:
        shape = (n_scored, eng.n_vocab)
        if logits_path is not None:
            logits = np.lib.format.open_memmap(logits_path, mode="w+", dtype=np.float32,
                                               shape=shape)
        else:
            logits = np.empty(shape, dtype=np.float32)
    logprobs = np.empty(n_scored, dtype=np.float64)

    mem = lib.llama_get_memory(eng.ctx)
    batch = lib.llama_batch_init(eng.n_batch, 0, 1)
    as_array = np.ctypeslib.as_array
    try:
        b_token = as_array(batch.token, shape=(eng.n_batch,))
        b_pos = as_array(batch.pos, shape=(eng.n_batch,))
        b_nseq = as_array(batch.n_seq_id, shape=(eng.n_batch,))
        b_logits = as_array(batch.logits, shape=(eng.n_batch,))
        b_nseq[:] = 1
        for i in range(eng.n_batch):
            batch.seq_id[i][0] = 0
        for start, end, score_from in plan:
            seq = np.concatenate([np.asarray(prefix, dtype=np.int32), tokens[start:end]])
            # Position j predicts seq[j + 1]; the scored tokens sit at positions from
            # len(prefix) + score_from - start, so their predictions are one to the left.
            first_out = len(prefix) + score_from - start - 1
            n_eval = len(seq) - 1  # the last token predicts nothing that is scored
            lib.llama_memory_clear(mem, True)
            for c0 in range(0, n_eval, eng.n_batch):
                c1 = min(n_eval, c0 + eng.n_batch)
                k = c1 - c0
                b_token[:k] = seq[c0:c1]
                b_pos[:k] = np.arange(c0, c1, dtype=np.int32)
                b_logits[:k] = np.arange(c0, c1) >= first_out
                batch.n_tokens = k
                rc = lib.llama_decode(eng.ctx, batch)
                if rc != 0:
                    raise BackendError(
                        f"llama_decode failed on window [{start}, {end}) (code {rc})"
                    )
                lo = max(c0, first_out)
                if lo >= c1:
                    continue
                n_out = c1 - lo
                rows = as_array(lib.llama_get_logits(eng.ctx), shape=(n_out, eng.n_vocab))
                # Row r predicts seq[lo + r + 1] = tokens[start - len(prefix) + lo + r + 1].
                t0 = start - len(prefix) + lo + 1
                k0 = t0 - first_scored  # index among the scored tokens
                logprobs[k0 : k0 + n_out] = _token_logprobs(rows, tokens[t0 : t0 + n_out])
                if logits is not None:
                    logits[k0 : k0 + n_out] = rows
                if on_rows is not None:
                    on_rows(k0, rows)
    finally:
        lib.llama_batch_free(batch)
        lib.llama_memory_clear(mem, True)
        # Tell llama-cpp-python its cached prefix is gone, so its own API never reuses it.
        reset = getattr(eng.llm, "reset", None)
        if reset is not None:
            reset()
    if isinstance(logits, np.memmap):
        logits.flush()
    return TokenLogprobs(
        tokens=tokens,
        prefix=prefix,
        first_scored=first_scored,
        logprobs=logprobs,
        window=window,
        stride=step,
        n_windows=len(plan),
        text_bytes=count_bytes(text),
        text_sha256=hashlib.sha256(text_b).hexdigest(),
        unscored_bytes=n_unscored_bytes,
        unscored_chars=n_unscored_chars,
        logits=logits,
    )


# -- the metrics --------------------------------------------------------------------------------


def bits_per_byte(logprobs: TokenLogprobs, text: str) -> float:
    """−Σ log2 p(token) over the scored tokens / UTF-8 bytes of the text they cover.

    With a BOS every token is scored and the bytes are all the text's (`count_bytes(text)`);
    without one the first token's bytes are left out of both sums. A space a SentencePiece
    tokenizer puts before the first word is not the text's and is never counted.
    """
    n = logprobs.scored_bytes(text)
    if n <= 0:
        raise QualityError("no bytes of the text were scored")
    return logprobs.nll_nats / _LN2 / n


def bits_per_char(logprobs: TokenLogprobs, text: str) -> float:
    """As `bits_per_byte`, per Unicode character (`count_chars`, NFC code points) scored."""
    n = logprobs.scored_chars(text)
    if n <= 0:
        raise QualityError("no characters of the text were scored")
    return logprobs.nll_nats / _LN2 / n


def perplexity(logprobs: TokenLogprobs) -> float:
    """exp of the mean negative log-likelihood per scored token (depends on the tokenizer)."""
    if logprobs.n_scored == 0:
        raise QualityError("no tokens were scored")
    return math.exp(logprobs.nll_nats / logprobs.n_scored)


# -- loading, the reference, and the rows the runner writes --------------------------------------

_LOAD_DEFAULTS: dict[str, Any] = {
    "n_ctx": DEFAULT_WINDOW,
    "n_batch": 512,
    "n_ubatch": 512,
    "n_gpu_layers": 0,
    "flash_attn": False,
}


@contextlib.contextmanager
def open_model(model_path: Path | str, settings: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """A `llama_cpp.Llama` for quality work, closed on exit; llama.cpp's load log is silenced
    (set BENCH_LLAMA_VERBOSE=1 to see it). Settings: n_ctx (default 2048, at least the window),
    n_batch, n_ubatch, n_threads (default: all cores), n_gpu_layers, flash_attn."""
    from bench.backends.llama_cpp.backend import quiet_stderr

    lib = _lib()
    s = {**_LOAD_DEFAULTS, **dict(settings or {})}
    n_ctx = max(int(s["n_ctx"]), int(s.get("window") or 0))
    n_threads = int(s.get("n_threads") or os.cpu_count() or 1)
    verbose = bool(os.environ.get("BENCH_LLAMA_VERBOSE"))
    try:
        with quiet_stderr(not verbose):
            llm = lib.Llama(
                model_path=str(model_path),
                n_ctx=n_ctx,
                n_batch=int(s["n_batch"]),
                n_ubatch=int(s["n_ubatch"]),
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_gpu_layers=int(s["n_gpu_layers"]),
                flash_attn=bool(s["flash_attn"]),
                logits_all=False,  # we ask for exactly the rows we need, batch by batch
                verbose=verbose,
            )
    except (ValueError, RuntimeError, OSError) as e:
        raise BackendError(f"llama.cpp could not load {model_path}: {e}") from None
    try:
        yield llm
    finally:
        llm.close()


@dataclass
class ReferenceLogits:
    """The reference model's log-probabilities and raw logits rows for a set of texts, kept in
    memory-mapped .npy files under a folder (a temporary one unless given), so that every
    quantization of the model is compared against it without evaluating the reference again.

    Disk use is n_scored × n_vocab × 4 bytes per text (about 0.2 MB a token for a 49k vocabulary,
    1 MB a token for 262k). `close()` (or leaving a `with` block) deletes a temporary folder.
    """

    model_path: str | None
    texts: dict[str, TokenLogprobs]
    window: int
    stride: int | None
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    def __getitem__(self, text_id: str) -> TokenLogprobs:
        try:
            return self.texts[text_id]
        except KeyError:
            raise QualityError(
                f"the reference has no text {text_id!r}; it has: {', '.join(self.texts)}"
            ) from None

    def close(self) -> None:
        for lp in self.texts.values():
            lp.logits = None  # drop the memory maps before their files go
        self.texts = {}
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _window_setting(settings: Mapping[str, Any]) -> int | None:
    w = settings.get("window")
    return int(w) if w else None


def _stride_setting(settings: Mapping[str, Any]) -> int | None:
    s = settings.get("stride")
    return int(s) if s else None


def reference_logits(
    model: Path | str | Any,
    texts: Mapping[str, str],
    settings: Mapping[str, Any] | None = None,
    store_dir: Path | None = None,
) -> ReferenceLogits:
    """Evaluate the reference (highest-precision) model once on every text and keep its logits.

    `model` is a path (loaded here and closed after) or an already loaded Llama/session.
    `settings` may set `window` and `stride` (tokens) besides the load settings of `open_model`;
    the candidates are then evaluated with the same windows, which KL requires.
    """
    s = dict(settings or {})
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if store_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-reference-")
        folder = Path(tmp.name)
    else:
        folder = Path(store_dir)
        folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, TokenLogprobs] = {}

    def run(llm: Any) -> None:
        for i, (text_id, text) in enumerate(texts.items()):
            out[text_id] = text_logprobs(
                llm, text, _window_setting(s), stride=_stride_setting(s), keep_logits=True,
                logits_path=folder / f"logits-{i}.npy",
            )

    try:
        if isinstance(model, (str, Path)):
            with open_model(model, s) as llm:
                run(llm)
            path: str | None = str(model)
        else:
            run(model)
            path = None
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    window = next(iter(out.values())).window if out else (_window_setting(s) or DEFAULT_WINDOW)
    return ReferenceLogits(path, out, window, _stride_setting(s), tmp)


def _same_sequence(ref: TokenLogprobs, cand: TokenLogprobs, text_id: str) -> None:
    if ref.text_sha256 != cand.text_sha256:
        raise QualityError(f"text {text_id!r} differs between the reference and the candidate")
    if not np.array_equal(ref.tokens, cand.tokens) or ref.prefix != cand.prefix:
        raise QualityError(
            f"text {text_id!r} tokenizes differently under the reference and the candidate; "
            "KL divergence needs one tokenizer (quantizations of the same model share it)"
        )
    if (ref.window, ref.stride) != (cand.window, cand.stride):
        raise QualityError(
            f"text {text_id!r}: reference windows ({ref.window}, stride {ref.stride}) differ "
            f"from the candidate's ({cand.window}, stride {cand.stride})"
        )


def _row(text_id: str, text: str, lp: TokenLogprobs, cmp: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "text_id": text_id,
        "n_tokens": lp.n_tokens,
        "n_scored": lp.n_scored,
        "n_bytes": lp.scored_bytes(text),
        "n_chars": lp.scored_chars(text),
        "bits_per_byte": bits_per_byte(lp, text),
        "bits_per_char": bits_per_char(lp, text),
        "perplexity": perplexity(lp),
        "kl_div": None if cmp is None else float(cmp["kl_div"]),
        "kl_div_max": None if cmp is None else float(cmp["kl_div_max"]),
        "top1_agree": None if cmp is None else float(cmp["top1_agree"]),
        "window_tokens": lp.window,
        "n_windows": lp.n_windows,
    }


def _against(ref_rows: np.ndarray, acc: DistributionComparison) -> RowSink:
    def add(k: int, rows: np.ndarray) -> None:
        acc.add(ref_rows[k : k + len(rows)], rows)

    return add


def _rows_for(
    llm: Any, texts: Mapping[str, str], ref: ReferenceLogits | None, settings: Mapping[str, Any]
) -> list[dict[str, Any]]:
    rows = []
    for text_id, text in texts.items():
        if ref is None:
            lp = text_logprobs(llm, text, _window_setting(settings),
                               stride=_stride_setting(settings))
            rows.append(_row(text_id, text, lp, None))
            continue
        r = ref[text_id]
        if r.logits is None:
            raise QualityError(f"the reference for {text_id!r} kept no logits")
        ref_rows = r.logits
        # Check before evaluating: a different tokenizer would only fail after the whole text.
        tokens, prefix = text_tokens(llm, text)
        if not np.array_equal(tokens, r.tokens) or prefix != r.prefix:
            raise QualityError(
                f"text {text_id!r} tokenizes differently under the reference and the candidate; "
                "KL divergence needs one tokenizer (quantizations of the same model share it)"
            )
        acc = DistributionComparison()
        # Compare block by block as the candidate's rows arrive: they are never stored.
        lp = text_logprobs(llm, text, r.window, stride=r.stride, on_rows=_against(ref_rows, acc))
        _same_sequence(r, lp, text_id)
        rows.append(_row(text_id, text, lp, acc.result()))
    return rows


def quality_rows(
    model: Path | str | Any,
    texts: Mapping[str, str],
    reference: Path | str | ReferenceLogits | None = None,
    settings: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One tidy row per text: text_id, n_tokens, n_scored, n_bytes, n_chars, bits_per_byte,
    bits_per_char, perplexity, kl_div, kl_div_max, top1_agree, window_tokens, n_windows.

    `model` is a GGUF path (loaded with `settings`, closed after) or an already loaded
    `llama_cpp.Llama` or llama.cpp backend session, which is reused as it is (its KV cache is
    left empty). `reference` is None (kl_div and top1_agree are None), a `ReferenceLogits` from
    `reference_logits` (the efficient choice for a sweep: the reference is evaluated once), or a
    path to the reference GGUF, evaluated here for these texts (the same file as `model` gives
    KL 0 without a second evaluation). n_bytes and n_chars count the scored span of the text.
    """
    s = dict(settings or {})
    owned: ReferenceLogits | None = None
    ref: ReferenceLogits | None
    if isinstance(reference, (str, Path)):
        same = isinstance(model, (str, Path)) and Path(model).resolve() == Path(reference).resolve()
        if same:
            return _self_reference_rows(model, texts, s)
        owned = ref = reference_logits(reference, texts, s)
    else:
        ref = reference
    try:
        if isinstance(model, (str, Path)):
            window = ref.window if ref is not None else s.get("window")
            with open_model(model, {**s, "window": window}) as llm:
                return _rows_for(llm, texts, ref, s)
        return _rows_for(model, texts, ref, s)
    finally:
        if owned is not None:
            owned.close()


def _self_reference_rows(
    model: Path | str, texts: Mapping[str, str], settings: Mapping[str, Any]
) -> list[dict[str, Any]]:
    with open_model(model, settings) as llm:
        rows = _rows_for(llm, texts, None, settings)
    for row in rows:
        # The reference against itself: identical distributions by definition.
        row.update(kl_div=0.0, kl_div_max=0.0, top1_agree=1.0)
    return rows
