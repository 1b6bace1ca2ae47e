"""The `openai` backend: any OpenAI-compatible server (llama-server, llama-cpp-python, vLLM,
LM Studio, ...) driven through streamed /completions or /chat/completions.

Also the part every HTTP backend shares (`HttpSession`): the model's tokenizer for exact prompts
and counts, prompt variants that defeat a server's prompt cache, the server bench may have
started, and its memory. Each trial is one streamed request; every chunk is stamped on arrival,
and the token counts come from the server (`usage`), from `finish_reason: length` with a fixed
max_tokens, or from the model's tokenizer, in that order; Trace.count_source says which.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.backends.base import (
    Backend,
    BackendError,
    Edge,
    Prompt,
    Session,
    Trace,
    as_cell_settings,
)
from bench.backends.http_settings import BUILTIN_PLACEHOLDERS, OpenAISettings, placeholders
from bench.backends.openai.config import HttpCell
from bench.backends.server import (
    Http,
    ManagedServer,
    fill,
    free_port,
    listening_pid,
    log_dir_for,
    redact,
    redact_url,
)
from bench.backends.sse import StreamError, StreamResult, iter_sse, read_openai_stream
from bench.redact import redact as redact_all
from bench.redact import register_secret

# How far a server's token count may stray from bench's own count of the same text (the model's
# tokenizer) before the trial is an error: retokenizing generated text can merge or split a few
# pieces at its edges, and a server may count a BOS token the text does not show.
COUNT_SLACK_TOKENS = 4
COUNT_SLACK_FRACTION = 0.2


class ServerCountError(BackendError):
    """A server's token counts contradict themselves, the request or bench's own count; `raw`
    holds what the server said, for diagnosis."""

    def __init__(self, message: str, raw: dict[str, Any]):
        super().__init__(message)
        self.raw = raw


def raw_json(raw: dict[str, Any], limit: int = 400) -> str:
    text = redact(json.dumps(raw, sort_keys=True, default=str))
    return text if len(text) <= limit else text[:limit] + "..."


def server_count(obj: dict[str, Any], key: str, where: str, raw: dict[str, Any]) -> int | None:
    """A token count the server reported: None when it gave none, else a whole number >= 0;
    anything else (a bool, a float, a string, a negative number) makes the trial an error."""
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ServerCountError(
            f"the server's {where}.{key} is {_clip_value(v)}, not a whole number of tokens, so "
            f"its counts cannot be trusted (raw: {raw_json(raw)})", raw)
    if v < 0:
        raise ServerCountError(
            f"the server's {where}.{key} is {v}, a negative number of tokens, so its counts "
            f"cannot be trusted (raw: {raw_json(raw)})", raw)
    return v


def _clip_value(v: Any) -> str:
    text = redact(json.dumps(v, default=str))
    return text if len(text) <= 60 else text[:60] + "..."


def counts_agree(server: int, local: int) -> bool:
    return abs(server - local) <= max(COUNT_SLACK_TOKENS, COUNT_SLACK_FRACTION * local)


class Tokenizer:
    """The model's own tokenizer (llama.cpp with the vocabulary only: no weights, no context)."""

    def __init__(self, path: Path):
        from bench.backends.llama_cpp.backend import llama_lib, quiet_stderr

        lib = llama_lib()
        self.path = path
        try:
            with quiet_stderr(not os.environ.get("BENCH_LLAMA_VERBOSE")):
                self.llm = lib.Llama(model_path=str(path), vocab_only=True, verbose=False)
        except (ValueError, RuntimeError, OSError) as e:
            raise BackendError(f"cannot read the tokenizer of {path}: {e}") from None
        meta = dict(getattr(self.llm, "metadata", {}) or {})
        self.architecture = meta.get("general.architecture")
        self.n_vocab = int(self.llm.n_vocab())

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False
                 ) -> list[int]:
        # The in-process backend's exact call, so both count the same tokens.
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_special,
                                 special=parse_special)

    def detokenize(self, tokens: list[int]) -> str:
        return self.llm.detokenize(tokens).decode("utf-8", "replace")


class _SyntheticPrompts:
    """Synthetic prompts built by the in-process backend's own code (LlamaCppSession.prompt and
    its FILLER), so a server gets the same tokens; variant k starts the filler at its k-th
    distinct word, so consecutive trials share no prompt prefix a server could reuse."""

    def __init__(self, tok: Tokenizer):
        from bench.backends.llama_cpp.backend import FILLER, LlamaCppSession

        self.tok = tok
        self._build = LlamaCppSession.prompt
        self.tokenize = tok.tokenize  # what LlamaCppSession.prompt calls on its self
        self.filler = tok.tokenize(FILLER * 4, add_special=False)
        self._filler: list[int] | None = self.filler
        self.head = tok.tokenize("", add_special=True)
        self.offsets = [0]
        seen = {self.filler[0]}
        one_copy = len(tok.tokenize(FILLER, add_special=False))
        for i in range(1, min(one_copy, len(self.filler))):
            piece = tok.detokenize([self.filler[i]])
            if piece[:1].isspace() and self.filler[i] not in seen:
                seen.add(self.filler[i])
                self.offsets.append(i)

    def tokens(self, n: int, variant: int) -> list[int]:
        o = self.offsets[variant % len(self.offsets)]
        self._filler = self.filler[o:] + self.filler[:o]
        tokens = self._build(self, "synthetic", n, None).tokens  # type: ignore[arg-type]
        assert tokens is not None  # a synthetic prompt is always built from tokens
        return tokens

    def text(self, n: int, variant: int) -> tuple[str, list[int]]:
        """Text whose tokenization (with the model's BOS, as a server does it) is n tokens,
        and that tokenization."""
        start = len(self.head)
        body = self.tokens(n + 64, variant)[start:]  # room to grow if retokenizing merges
        m = max(0, n - start)
        text, got = "", self.head
        for _ in range(8):  # detokenize/retokenize can merge or split pieces at the edges
            text = self.tok.detokenize(body[:m])
            got = self.tok.tokenize(text, add_special=True)
            if len(got) != n and text.startswith(" "):
                # Some detokenizers keep the leading space a tokenizer adds back itself.
                alt = self.tok.tokenize(text[1:], add_special=True)
                if abs(len(alt) - n) < abs(len(got) - n):
                    text, got = text[1:], alt
            if len(got) == n:
                break
            m = max(0, min(len(body), m + n - len(got)))
        return text, got


@dataclass
class HttpPrompt(Prompt):
    n_tokens: int | None = None  # the synthetic length asked for; None for given text


@dataclass
class _Counts:
    n_prompt: int
    n_gen: int
    source: str


class HttpSession(Session):
    """What the HTTP backends share; subclasses send the request and read the stream."""

    backend: str = "http"

    def __init__(
        self,
        http: Http,
        settings: HttpCell,
        model: str,
        seed: int,
        server: ManagedServer | None,
        tokenizer: Tokenizer | None,
        tokenizer_from: str | None,
    ):
        self.http = http
        self.settings = settings
        self.model = model
        self.seed = seed
        self.server = server
        self.tok = tokenizer
        self.tokenizer_from = tokenizer_from
        self.synth = _SyntheticPrompts(tokenizer) if tokenizer is not None else None
        self.label = settings.label
        self.vary = settings.spec.vary_prompt
        self.trial = 0
        self._pid = server.pid if server is not None else listening_pid(http.host, http.port)
        self._calibrated: dict[int, tuple[str, int]] = {}

    # -- prompts (not timed) ----------------------------------------------------------------
    def prompt(
        self, prompt_id: str, n_tokens: int | None, text: str | None, depth: int = 0
    ) -> HttpPrompt:
        if text is not None:
            tokens = self.tok.tokenize(text) if self.tok is not None else None
            return HttpPrompt(prompt_id, tokens, text, depth=depth)
        assert n_tokens is not None
        if self.synth is not None:
            t, toks = self.synth.text(n_tokens, 0)
            return HttpPrompt(prompt_id, toks, t, depth=depth, n_tokens=n_tokens)
        t, _ = self._calibrate(n_tokens)
        return HttpPrompt(prompt_id, None, t, depth=depth, n_tokens=n_tokens)

    def _variant(self, prompt: HttpPrompt) -> tuple[str, list[int] | None]:
        """This trial's prompt, after `depth` tokens of context. A server cannot be filled
        untimed, so the fill is a prefix of the prompt that starts with a fresh random tag
        every trial: no server can have it cached, and its prefill covers depth + prompt
        (n_prompt, the server's count, says so)."""
        text, tokens = self._variant_body(prompt)
        if not prompt.depth:
            return text, tokens
        k = self.trial
        if self.synth is not None:
            fill, _ = self.synth.text(prompt.depth, k)
        else:
            base, _ = self._calibrate(prompt.depth)
            words = base.split(" ")
            j = k % max(1, len(words))
            fill = " ".join(words[j:] + words[:j])
        full = f"[{secrets.token_hex(4)}] {fill}\n\n{text}"
        return full, (self.tok.tokenize(full) if self.tok is not None else None)

    def _variant_body(self, prompt: HttpPrompt) -> tuple[str, list[int] | None]:
        """This trial's prompt: synthetic ones start at another word each trial."""
        k = self.trial if self.vary else 0
        self.trial += 1
        if prompt.n_tokens is None or k == 0:
            assert prompt.text is not None
            return prompt.text, prompt.tokens
        if self.synth is not None:
            return self.synth.text(prompt.n_tokens, k)
        base, _ = self._calibrate(prompt.n_tokens)
        words = base.split(" ")
        k %= max(1, len(words))
        return " ".join(words[k:] + words[:k]), None

    def server_prompt_count(self, text: str) -> int | None:
        """The server's token count of a prompt (one short request), if it reports one."""
        return None

    def _calibrate(self, n: int) -> tuple[str, int]:
        """Without a tokenizer: the number of filler words whose prompt the server counts as n
        tokens, found with a few short requests (the server's own count decides)."""
        if n in self._calibrated:
            return self._calibrated[n]
        from bench.backends.llama_cpp.backend import FILLER

        words = FILLER.split()
        pool = words * (n // len(words) + 4)
        best: tuple[str, int] | None = None
        lo, hi = 0, len(pool)
        w = max(1, min(hi, int(n * 0.75)))
        for _ in range(12):
            text = " ".join(pool[:w])
            got = self.server_prompt_count(text)
            if got is None:
                raise BackendError(
                    f"a synthetic prompt of {n} tokens needs the model's tokenizer, and the "
                    f"server at {self.http.shown} reports no prompt token count; give "
                    "`tokenizer:` (the model's GGUF file) in the backend settings"
                )
            if best is None or abs(got - n) < abs(best[1] - n):
                best = (text, got)
            if got == n:
                break
            if got < n:
                lo = w
            else:
                hi = w
            nxt = max(lo + 1, min(hi - 1, round(w * n / max(got, 1))))
            if nxt == w or hi - lo <= 1:
                break
            w = nxt
        assert best is not None
        self._calibrated[n] = best
        return best

    # -- counting ---------------------------------------------------------------------------
    def counts(
        self,
        result: StreamResult,
        server_prompt: int | None,
        server_gen: int | None,
        server_source: str,
        local_prompt: int | None,
        n_gen_asked: int,
        fixed_length: bool,
        raw: dict[str, Any] | None = None,
    ) -> _Counts:
        """The trial's token counts, the server's taken as evidence: a count above what was
        asked for, or one that bench's tokenizer contradicts, makes the trial an error."""
        raw = raw or {}
        who = f"{self.label} at {self.http.shown}"
        if server_gen is not None and server_gen > n_gen_asked:
            raise ServerCountError(
                f"{who} reports {server_gen} generated tokens for a request of at most "
                f"{n_gen_asked}, so its counts cannot be trusted (raw: {raw_json(raw)})", raw)
        if server_prompt is not None and local_prompt is not None \
                and not counts_agree(server_prompt, local_prompt):
            raise ServerCountError(
                f"{who} counts {server_prompt} prompt tokens where the model's tokenizer counts "
                f"{local_prompt}, so its counts cannot be trusted (raw: {raw_json(raw)})", raw)
        # A fixed-length request that the server says it ended at max_tokens, with a count of
        # exactly max_tokens, is two signals that agree; the text alone can undercount it
        # (tokens such as <|im_end|> after an ignored EOS may stream as no text at all).
        at_length = fixed_length and result.finish_reason == "length" \
            and server_gen == n_gen_asked
        if server_gen is not None and self.tok is not None and not at_length:
            # Special tokens a server streams as text (<|im_end|>) count once each.
            mine = min(len(self.tok.tokenize(result.text, add_special=False, parse_special=p))
                       for p in (False, True))
            if not counts_agree(server_gen, mine):
                raise ServerCountError(
                    f"{who} reports {server_gen} generated tokens where the model's tokenizer "
                    f"counts {mine} in the text it sent, so its counts cannot be trusted "
                    f"(raw: {raw_json(raw)})", raw)
        if server_prompt is not None:
            n_prompt, p_src = server_prompt, server_source
        elif local_prompt is not None:
            n_prompt, p_src = local_prompt, "tokenizer"
        else:
            raise BackendError(
                f"the server at {self.http.shown} reports no prompt token count and bench has "
                "no tokenizer for this model; give `tokenizer:` (the model's GGUF file)"
            )
        if server_gen is not None:
            n_gen, g_src = server_gen, server_source
        elif fixed_length and result.finish_reason == "length":
            # The server stopped because it produced max_tokens tokens: that is its count.
            n_gen, g_src = n_gen_asked, "length"
        elif self.tok is not None:
            n_gen, g_src = len(self.tok.tokenize(result.text, add_special=False)), "tokenizer"
        else:
            n_gen, g_src = len(result.times), "chunks"
        return _Counts(n_prompt, n_gen, p_src if p_src == g_src else f"{p_src}/{g_src}")

    # -- facts ------------------------------------------------------------------------------
    def configure(self, settings: HttpCell | Mapping[str, Any]) -> None:
        self.settings = (
            self.settings.updated(settings) if isinstance(settings, Mapping) else settings
        )
        self.label = self.settings.label

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "server_backend": self.backend,
            "server_label": self.label,
            "server_url": redact_url(self.http.base_url),
            "server_model": self.model,
            "server_started_by_bench": self.server is not None,
            "tokenizer": self.tokenizer_from,
        }
        if self.tok is not None:
            out.update(architecture=self.tok.architecture, n_vocab=self.tok.n_vocab)
        if self.server is not None:
            out.update(
                server_command=self.server.shown_command(),
                server_log=str(self.server.log_path),
                server_startup_s=self.server.startup_s,
            )
        out["server_pid"] = self._pid
        return out

    def server_pid(self) -> int | None:
        """The server's process id, for a meter that follows a process (EstimateMeter)."""
        return self._pid

    def resource_usage(self) -> dict[str, Any]:
        """Peak memory of the server bench started (its whole process tree), sampled."""
        if self.server is None:
            return {"server_pid": self._pid, "server_peak_rss_bytes": None,
                    "server_rss_method": "not started by bench"}
        self.server.sample()
        return {
            "server_pid": self.server.pid,
            "server_peak_rss_bytes": self.server.peak_rss_bytes,
            "server_rss_samples": self.server.rss_samples,
            "server_rss_method": (
                f"psutil RSS of the process tree, sampled every "
                f"{self.server.SAMPLE_INTERVAL_S:g} s"
            ),
        }

    def _after_trial(self) -> None:
        if self.server is not None:
            self.server.sample()

    def _trace(self, t_start: float, result: Any, engine: dict[str, Any], counts: Any) -> Trace:
        """The trial's trace from a finished stream, after the per-trial bookkeeping."""
        self._after_trial()
        return Trace(
            n_prompt=counts.n_prompt,
            t_start=t_start,
            token_times=result.times,
            token_ids=[],
            engine=engine,
            stopped_at_eos=result.finish_reason == "stop",
            text=result.text,
            n_gen_counted=counts.n_gen,
            count_source=counts.source,
        )

    def _server_died(self, e: BackendError) -> BackendError:
        """A failed request to a server bench started: say so if the server has exited."""
        srv = self.server
        if srv is None or srv.alive() or srv.proc is None:
            return e
        return BackendError(
            f"the server bench started exited with code {srv.proc.returncode}; its output is in "
            f"{srv.log_path}"
        )

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()

    # -- one streamed request ---------------------------------------------------------------
    def run_stream(self, path: str, body: dict[str, Any], on_edge: Edge, reader: Any
                   ) -> tuple[float, StreamResult]:
        """POST body, stamp the request start, read the stream with `reader` to its end."""
        t_start = 0.0

        def start() -> None:
            nonlocal t_start
            on_edge("start")
            t_start = time.perf_counter()

        try:
            resp = self.http.stream(path, body, start)
        except BackendError as e:
            raise self._server_died(e) from None
        try:
            result = reader(resp, lambda: on_edge("first"))
        except StreamError as e:
            # What a server sends back may echo the request, key included.
            raise self._server_died(BackendError(
                redact(f"{self.label} at {self.http.shown}: {e}", self.http.secrets))) from None
        except (OSError, http.client.HTTPException) as e:
            raise self._server_died(self.http.unreachable(e)) from None
        finally:
            resp.close()
        on_edge("end")
        if not result.times:
            raise BackendError(
                f"{self.label} at {self.http.shown} streamed no text (finish reason "
                f"{result.finish_reason!r}); there is no token to time"
            )
        return t_start, result


class OpenAISession(HttpSession):
    backend = "openai"

    def __init__(self, *args: Any, models: list[str] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self._template_extra: dict[str, int | None] = {}
        self._models = models

    def _path(self) -> str:
        return "/chat/completions" if self.settings.endpoint == "chat" else "/completions"

    def _body(self, text: str, tokens: list[int] | None, n_gen: int, stop_at_eos: bool,
              stream: bool = True) -> dict[str, Any]:
        s = self.settings.spec
        assert isinstance(s, OpenAISettings)
        body: dict[str, Any] = {"model": self.model}
        if self.settings.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": text}]
        elif s.prompt_as_tokens and tokens is not None:
            body["prompt"] = tokens
        else:
            body["prompt"] = text
        body.update(max_tokens=n_gen, temperature=s.temperature,
                    seed=self.seed, stream=stream)
        if stream:
            body["stream_options"] = {"include_usage": True}
        if not stop_at_eos:
            if s.ignore_eos:
                body["ignore_eos"] = True
            if s.min_tokens:
                body["min_tokens"] = n_gen
        if not s.prompt_cache:
            # Each trial must evaluate its whole prompt: llama-server reuses a cached prefix
            # unless cache_prompt is false; vLLM shares prefix blocks only between requests with
            # the same cache_salt. Servers that know neither ignore them.
            body["cache_prompt"] = False
            body["cache_salt"] = f"bench-{uuid.uuid4().hex}"
        body.update(s.extra_body)
        return body

    def server_prompt_count(self, text: str) -> int | None:
        body = self._body(text, None, 1, True, stream=False)
        reply = self.http.json("POST", self._path(), body)
        usage = reply.get("usage") if isinstance(reply, dict) else None
        if not isinstance(usage, dict):
            return None
        return server_count(usage, "prompt_tokens", "usage", {"usage": usage})

    def _chat_template_tokens(self, content_tokens: int, text: str) -> int | None:
        """Tokens the chat template adds around the content, learnt once from the server."""
        if "n" not in self._template_extra:
            n = self.server_prompt_count(text)
            self._template_extra["n"] = None if n is None else n - content_tokens
        return self._template_extra["n"]

    def generate(self, prompt: Prompt, n_gen: int, stop_at_eos: bool, on_edge: Edge) -> Trace:
        assert isinstance(prompt, HttpPrompt)
        text, tokens = self._variant(prompt)
        chat = self.settings.endpoint == "chat"
        body = self._body(text, tokens, n_gen, stop_at_eos)

        def reader(resp: Any, first: Any) -> StreamResult:
            return read_openai_stream(iter_sse(resp.readline), first)

        t_start, result = self.run_stream(self._path(), body, on_edge, reader)
        engine: dict[str, Any] = {}
        usage = result.usage or {}
        timings = result.timings or {}
        raw: dict[str, Any] = {}
        if usage:
            raw["usage"] = usage
        if timings:
            raw["timings"] = {k: v for k, v in timings.items()
                              if k in ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms",
                                       "cache_n")}
        s_prompt = server_count(usage, "prompt_tokens", "usage", raw)
        s_gen = server_count(usage, "completion_tokens", "usage", raw)
        if timings:
            # llama-server's own counters: prompt_n excludes tokens served from its cache.
            p_n = server_count(timings, "prompt_n", "timings", raw)
            g_n = server_count(timings, "predicted_n", "timings", raw)
            cache_n = server_count(timings, "cache_n", "timings", raw)
            p_ms, g_ms = timings.get("prompt_ms"), timings.get("predicted_ms")
            if p_n is not None and p_ms is not None and _is_ms(p_ms):
                engine.update(engine_n_p_eval=p_n, engine_t_p_eval_ms=float(p_ms))
            if g_n is not None and g_ms is not None and _is_ms(g_ms) and g_n > 0:
                # Its first token comes from the prompt pass; the rest are decode steps.
                engine.update(engine_n_eval=g_n - 1, engine_t_eval_ms=float(g_ms))
            if cache_n is not None:
                engine["server_cache_n"] = cache_n
            if s_prompt is None and p_n is not None:
                s_prompt = p_n + (cache_n or 0)
            if s_gen is None and g_n is not None:
                s_gen = g_n
        if raw:
            engine["raw_usage"] = raw_json(raw, limit=2000)
        local = len(tokens) if tokens is not None and not chat else None
        if chat and s_prompt is None:
            # The server counts the chat template too: learn its size once, from the server
            # (after the timed request, and before the next trial's different prompt).
            local = None
            if self.tok is not None:
                content = len(self.tok.tokenize(text, add_special=False))
                extra = self._chat_template_tokens(content, text)
                local = None if extra is None else content + extra
        counts = self.counts(result, s_prompt, s_gen, "usage" if usage else "server", local,
                             n_gen, not stop_at_eos, raw)
        if self.tok is not None and counts.source.split("/")[-1] != "tokenizer":
            engine["n_gen_retokenized"] = len(self.tok.tokenize(result.text, add_special=False))
        return self._trace(t_start, result, engine, counts)

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["server_endpoint"] = self.settings.endpoint
        out["server_models"] = self._models
        return redact_all(out)  # what the manifest records passes the redaction step


# -- loading ---------------------------------------------------------------------------------


def _is_ms(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0


def api_key(settings: HttpCell) -> str | None:
    env = api_key_env(settings)  # only the openai backend has one
    if not env:
        return None
    key = os.environ.get(env)
    if not key:
        raise BackendError(
            f"api_key_env names the environment variable {env}, but it is not set; export it "
            "with the server's key"
        )
    register_secret(key)  # from here on, masked in everything bench stores or prints
    return key


def api_key_env(settings: HttpCell) -> str | None:
    return getattr(settings.spec, "api_key_env", None)


def served_name(settings: HttpCell, model_path: Path | None, name: str | None) -> str:
    if settings.spec.model:
        return settings.spec.model
    if name:
        return name
    if model_path is not None:
        return model_path.stem
    raise BackendError("the backend needs `model:`, the name the server knows the model by")


def load_tokenizer(settings: HttpCell, model_path: Path | None
                   ) -> tuple[Tokenizer | None, str | None]:
    given = settings.spec.tokenizer
    path = Path(os.path.expanduser(str(given))) if given else model_path
    if path is None:
        return None, None
    if not path.is_file():
        raise BackendError(f"tokenizer {path} is not a file; give the model's GGUF file")
    return Tokenizer(path), ("model file" if not given else str(path))


def start_server(
    settings: HttpCell,
    model_path: Path | None,
    model: str,
    key: str | None,
    default_url: str,
    default_ready_path: str,
    ready_headers: dict[str, str],
) -> tuple[ManagedServer | None, str]:
    """Launch the configured server (if any) and return it with the base URL to use."""
    spec = settings.spec.server
    if spec is None:
        url = settings.spec.url or default_url
        return None, url
    host = spec.host
    port = spec.port or free_port(host)
    templates = [*spec.command, *spec.env.values()]
    needed = {f for t in templates for f in placeholders(t)}
    if "model_path" in needed and model_path is None:
        raise BackendError(
            "server.command uses {model_path}, but the model is only a server's name "
            "('served'); give the model as path, package or repo"
        )
    if "api_key" in needed and key is None:
        raise BackendError("server.command or server.env uses {api_key}; set api_key_env")
    values: dict[str, Any] = {"host": host, "port": port, "model": model,
                              "model_path": str(model_path) if model_path else "",
                              "python": sys.executable}
    for name in needed - set(BUILTIN_PLACEHOLDERS) - {"api_key"}:
        if name not in settings.server_args:
            raise BackendError(f"server.command uses {{{name}}}, which has no value")
        values[name] = settings.server_args[name]
    url = fill(settings.spec.url or default_url, values)
    ready = fill(spec.ready_url or (url + default_ready_path), values)
    label = re.sub(r"[^\w.-]+", "_", settings.label or "server")
    log_path = log_dir_for({"log_dir": settings.log_dir}) / f"server-{label}-{port}.log"
    server = ManagedServer(
        command=list(spec.command),
        env=dict(spec.env),
        values=values,
        secrets={"api_key": key} if key else {},
        ready_url=ready,
        startup_timeout_s=spec.startup_timeout_s,
        stop_timeout_s=spec.stop_timeout_s,
        log_path=log_path,
        ready_headers=ready_headers,
    )
    server.start()
    return server, url


class OpenAIBackend(Backend):
    name = "openai"

    @classmethod
    def cell_settings(cls, values: Mapping[str, Any]) -> HttpCell:
        return HttpCell.from_values(OpenAISettings, cls.name, values)

    def load(
        self, model_path: Path | None, settings: HttpCell | Mapping[str, Any], seed: int,
        model_name: str | None = None,
    ) -> Session:
        cell: HttpCell = as_cell_settings(type(self), settings)
        name = served_name(cell, model_path, model_name)
        key = api_key(cell)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        server, url = start_server(
            cell, model_path, name, key, "http://{host}:{port}/v1", "/models", headers
        )
        try:
            http = Http(url, cell.spec.timeout_s, headers,
                        secrets=[key] if key else [], managed_hint=server is not None,
                        key_env=api_key_env(cell), **limits(cell))
            models = _probe_models(http)
            tok, tok_from = load_tokenizer(cell, model_path)
            return OpenAISession(http, cell, name, seed, server, tok, tok_from, models=models)
        except BaseException:
            if server is not None:
                server.stop()
            raise

    @classmethod
    def software(cls) -> dict[str, Any]:
        return {}


def limits(settings: HttpCell) -> dict[str, Any]:
    """The request deadline and size caps of the settings, as Http takes them."""
    spec = settings.spec
    return {
        "deadline_s": spec.deadline_s,
        "max_line_bytes": spec.max_line_bytes,
        "max_response_bytes": spec.max_response_bytes,
    }


def _probe_models(http: Http) -> list[str] | None:
    """GET /models: proves the server is there and the key works; lists what it serves (as the
    manifest records it: model names only, each redacted and clipped)."""
    status, data = http.request("GET", "/models", timeout_s=min(http.timeout_s, 30.0))
    if status in (401, 403):
        raise http.status_error(status, data, "GET", http.prefix + "/models")
    if status >= 400:
        return None  # some servers have no /models; the first request will tell
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return None
    items = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(items, list):
        return None
    names = [m.get("id") for m in items if isinstance(m, dict)]
    return [redact(n[:200], http.secrets) for n in names if isinstance(n, str)][:20]
