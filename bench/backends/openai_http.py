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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.backends.base import Backend, BackendError, Edge, Prompt, Session, Trace
from bench.backends.http_settings import BUILTIN_PLACEHOLDERS, placeholders
from bench.backends.server import (
    Http,
    ManagedServer,
    fill,
    free_port,
    listening_pid,
    log_dir_for,
    redact_url,
)
from bench.backends.sse import StreamError, StreamResult, iter_sse, read_openai_stream


class Tokenizer:
    """The model's own tokenizer (llama.cpp with the vocabulary only: no weights, no context)."""

    def __init__(self, path: Path):
        from bench.backends.llama_cpp import _lib, _quiet_stderr

        lib = _lib()
        self.path = path
        try:
            with _quiet_stderr(not os.environ.get("BENCH_LLAMA_VERBOSE")):
                self.llm = lib.Llama(model_path=str(path), vocab_only=True, verbose=False)
        except (ValueError, RuntimeError, OSError) as e:
            raise BackendError(f"cannot read the tokenizer of {path}: {e}") from None
        meta = dict(getattr(self.llm, "metadata", {}) or {})
        self.architecture = meta.get("general.architecture")
        self.n_vocab = int(self.llm.n_vocab())

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        # The in-process backend's exact call, so both count the same tokens.
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=False)

    def detokenize(self, tokens: list[int]) -> str:
        return self.llm.detokenize(tokens).decode("utf-8", "replace")


class _SyntheticPrompts:
    """Synthetic prompts built by the in-process backend's own code (LlamaCppSession.prompt and
    its FILLER), so a server gets the same tokens; variant k starts the filler at its k-th
    distinct word, so consecutive trials share no prompt prefix a server could reuse."""

    def __init__(self, tok: Tokenizer):
        from bench.backends.llama_cpp import FILLER, LlamaCppSession

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
        return self._build(self, "synthetic", n, None).tokens  # type: ignore[arg-type]

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
        settings: dict[str, Any],
        model: str,
        seed: int,
        server: ManagedServer | None,
        tokenizer: Tokenizer | None,
        tokenizer_from: str | None,
    ):
        self.http = http
        self.settings = dict(settings)
        self.model = model
        self.seed = seed
        self.server = server
        self.tok = tokenizer
        self.tokenizer_from = tokenizer_from
        self.synth = _SyntheticPrompts(tokenizer) if tokenizer is not None else None
        self.label = str(settings.get("label") or self.backend)
        self.vary = bool(settings.get("vary_prompt", True))
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
        from bench.backends.llama_cpp import FILLER

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
    ) -> _Counts:
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
    def configure(self, run_settings: dict[str, Any]) -> None:
        self.settings.update(run_settings)

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
            conn, resp = self.http.stream(path, body, start)
        except BackendError as e:
            raise self._server_died(e) from None
        try:
            result = reader(resp, lambda: on_edge("first"))
        except StreamError as e:
            raise self._server_died(
                BackendError(f"{self.label} at {self.http.shown}: {e}")) from None
        except (OSError, http.client.HTTPException) as e:
            raise self._server_died(self.http.unreachable(e)) from None
        finally:
            conn.close()
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
        return "/chat/completions" if self.settings.get("endpoint") == "chat" else "/completions"

    def _body(self, text: str, tokens: list[int] | None, n_gen: int, stop_at_eos: bool,
              stream: bool = True) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {"model": self.model}
        if s.get("endpoint") == "chat":
            body["messages"] = [{"role": "user", "content": text}]
        elif s.get("prompt_as_tokens") and tokens is not None:
            body["prompt"] = tokens
        else:
            body["prompt"] = text
        body.update(max_tokens=n_gen, temperature=float(s.get("temperature", 0.0)),
                    seed=self.seed, stream=stream)
        if stream:
            body["stream_options"] = {"include_usage": True}
        if not stop_at_eos:
            if s.get("ignore_eos", True):
                body["ignore_eos"] = True
            if s.get("min_tokens", True):
                body["min_tokens"] = n_gen
        body.update(s.get("extra_body") or {})
        return body

    def server_prompt_count(self, text: str) -> int | None:
        body = self._body(text, None, 1, True, stream=False)
        reply = self.http.json("POST", self._path(), body)
        usage = reply.get("usage") if isinstance(reply, dict) else None
        n = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return int(n) if isinstance(n, int) else None

    def _chat_template_tokens(self, content_tokens: int, text: str) -> int | None:
        """Tokens the chat template adds around the content, learnt once from the server."""
        if "n" not in self._template_extra:
            n = self.server_prompt_count(text)
            self._template_extra["n"] = None if n is None else n - content_tokens
        return self._template_extra["n"]

    def generate(self, prompt: Prompt, n_gen: int, stop_at_eos: bool, on_edge: Edge) -> Trace:
        assert isinstance(prompt, HttpPrompt)
        text, tokens = self._variant(prompt)
        chat = self.settings.get("endpoint") == "chat"
        body = self._body(text, tokens, n_gen, stop_at_eos)

        def reader(resp: Any, first: Any) -> StreamResult:
            return read_openai_stream(iter_sse(resp.readline), first)

        t_start, result = self.run_stream(self._path(), body, on_edge, reader)
        engine: dict[str, Any] = {}
        usage = result.usage or {}
        timings = result.timings or {}
        s_prompt = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) \
            else None
        s_gen = usage.get("completion_tokens") \
            if isinstance(usage.get("completion_tokens"), int) else None
        if timings:
            # llama-server's own counters: prompt_n excludes tokens served from its cache.
            p_n, p_ms = timings.get("prompt_n"), timings.get("prompt_ms")
            g_n, g_ms = timings.get("predicted_n"), timings.get("predicted_ms")
            if isinstance(p_n, int) and isinstance(p_ms, (int, float)):
                engine.update(engine_n_p_eval=p_n, engine_t_p_eval_ms=float(p_ms))
            if isinstance(g_n, int) and isinstance(g_ms, (int, float)) and g_n > 0:
                # Its first token comes from the prompt pass; the rest are decode steps.
                engine.update(engine_n_eval=g_n - 1, engine_t_eval_ms=float(g_ms))
            if isinstance(timings.get("cache_n"), int):
                engine["server_cache_n"] = timings["cache_n"]
            if s_prompt is None and isinstance(p_n, int):
                s_prompt = p_n + int(timings.get("cache_n") or 0)
            if s_gen is None and isinstance(g_n, int):
                s_gen = g_n
        local = len(tokens) if tokens is not None else None
        if chat and s_prompt is None:
            # The server counts the chat template too: learn its size once, from the server
            # (after the timed request, and before the next trial's different prompt).
            local = None
            if self.tok is not None:
                content = len(self.tok.tokenize(text, add_special=False))
                extra = self._chat_template_tokens(content, text)
                local = None if extra is None else content + extra
        counts = self.counts(result, s_prompt, s_gen, "usage" if usage else "server", local,
                             n_gen, not stop_at_eos)
        if self.tok is not None and counts.source.split("/")[-1] != "tokenizer":
            engine["n_gen_retokenized"] = len(self.tok.tokenize(result.text, add_special=False))
        return self._trace(t_start, result, engine, counts)

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["server_endpoint"] = self.settings.get("endpoint")
        out["server_models"] = self._models
        return out


# -- loading ---------------------------------------------------------------------------------


def api_key(settings: dict[str, Any]) -> str | None:
    env = settings.get("api_key_env")
    if not env:
        return None
    key = os.environ.get(env)
    if not key:
        raise BackendError(
            f"api_key_env names the environment variable {env}, but it is not set; export it "
            "with the server's key"
        )
    return key


def served_name(settings: dict[str, Any], model_path: Path | None, name: str | None) -> str:
    if settings.get("model"):
        return str(settings["model"])
    if name:
        return name
    if model_path is not None:
        return model_path.stem
    raise BackendError("the backend needs `model:`, the name the server knows the model by")


def load_tokenizer(settings: dict[str, Any], model_path: Path | None
                   ) -> tuple[Tokenizer | None, str | None]:
    given = settings.get("tokenizer")
    path = Path(os.path.expanduser(str(given))) if given else model_path
    if path is None:
        return None, None
    if not path.is_file():
        raise BackendError(f"tokenizer {path} is not a file; give the model's GGUF file")
    return Tokenizer(path), ("model file" if not given else str(path))


def start_server(
    settings: dict[str, Any],
    model_path: Path | None,
    model: str,
    key: str | None,
    default_url: str,
    default_ready_path: str,
    ready_headers: dict[str, str],
) -> tuple[ManagedServer | None, str]:
    """Launch the configured server (if any) and return it with the base URL to use."""
    spec = settings.get("server")
    if not spec:
        url = settings.get("url") or default_url
        return None, url
    host = spec.get("host") or "127.0.0.1"
    port = spec.get("port") or free_port(host)
    templates = [*spec["command"], *spec.get("env", {}).values()]
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
        if name not in settings:
            raise BackendError(f"server.command uses {{{name}}}, which has no value")
        values[name] = settings[name]
    url = fill(settings.get("url") or default_url, values)
    ready = fill(spec.get("ready_url") or (url + default_ready_path), values)
    label = re.sub(r"[^\w.-]+", "_", str(settings.get("label") or "server"))
    log_path = log_dir_for(settings) / f"server-{label}-{port}.log"
    server = ManagedServer(
        command=spec["command"],
        env=spec.get("env") or {},
        values=values,
        secrets={"api_key": key} if key else {},
        ready_url=ready,
        startup_timeout_s=float(spec.get("startup_timeout_s", 120.0)),
        stop_timeout_s=float(spec.get("stop_timeout_s", 10.0)),
        log_path=log_path,
        ready_headers=ready_headers,
    )
    server.start()
    return server, url


class OpenAIBackend(Backend):
    name = "openai"

    def load(
        self, model_path: Path | None, settings: dict[str, Any], seed: int,
        model_name: str | None = None,
    ) -> Session:
        name = served_name(settings, model_path, model_name)
        key = api_key(settings)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        server, url = start_server(
            settings, model_path, name, key, "http://{host}:{port}/v1", "/models", headers
        )
        try:
            http = Http(url, float(settings.get("timeout_s", 300.0)), headers,
                        secrets=[key] if key else [], managed_hint=server is not None,
                        key_env=settings.get("api_key_env"))
            models = _probe_models(http)
            tok, tok_from = load_tokenizer(settings, model_path)
            return OpenAISession(http, settings, name, seed, server, tok, tok_from, models=models)
        except BaseException:
            if server is not None:
                server.stop()
            raise

    @classmethod
    def software(cls) -> dict[str, Any]:
        return {}


def _probe_models(http: Http) -> list[str] | None:
    """GET /models: proves the server is there and the key works; lists what it serves."""
    status, data = http.request("GET", "/models", timeout_s=min(http.timeout_s, 30.0))
    if status in (401, 403):
        raise http.status_error(status, data, "GET", http.prefix + "/models")
    if status >= 400:
        return None  # some servers have no /models; the first request will tell
    try:
        obj = json.loads(data)
        return [str(m.get("id")) for m in obj.get("data", [])][:20]
    except (ValueError, AttributeError, TypeError):
        return None
