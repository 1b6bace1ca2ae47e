"""The `ollama` backend: Ollama's native /api/generate, streamed as NDJSON.

Ollama reports its own counters in the final object of every stream (prompt_eval_count,
prompt_eval_duration, eval_count, eval_duration, load_duration, total_duration; nanoseconds).
They are recorded beside the client's wall clock under the engine_* names metrics.py turns into
overhead columns, and raw as ollama_*. Prompts go in raw mode, so the tokens are the ones bench
built; options (num_ctx, num_thread, num_gpu, ...) are load-time settings because Ollama reloads
the model when they change.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
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
from bench.backends.http_settings import OllamaSettings
from bench.backends.openai.backend import (
    HttpPrompt,
    HttpSession,
    limits,
    load_tokenizer,
    raw_json,
    served_name,
    server_count,
    start_server,
)
from bench.backends.openai.config import HttpCell
from bench.backends.server import Http
from bench.backends.sse import StreamResult, iter_ndjson, read_ollama_stream
from bench.redact import redact

DEFAULT_URL = "http://127.0.0.1:11434"
_NS_PER_MS = 1e6


def _ms(ns: Any) -> float | None:
    ok = isinstance(ns, (int, float)) and not isinstance(ns, bool) and ns >= 0
    return float(ns) / _NS_PER_MS if ok else None


def ollama_engine_columns(final: dict[str, Any]) -> dict[str, Any]:
    """Ollama's final stream object -> engine_* (as llama.cpp in process) and ollama_* columns.

    prompt_eval_count counts the whole prompt, cached tokens included; newer versions say how
    many came from the cache (prompt_eval_cached_count), older ones leave prompt_eval_count out
    when all did. engine_n_p_eval is what was evaluated, so a reused cache shows. eval_count
    counts every generated token; the first comes from the prompt pass, so the decode steps
    (engine_n_eval, as llama.cpp counts them) are one fewer.
    """
    p_count = final.get("prompt_eval_count")
    cached = final.get("prompt_eval_cached_count")
    e_count = final.get("eval_count")
    out: dict[str, Any] = {
        "ollama_load_ms": _ms(final.get("load_duration")),
        "ollama_total_ms": _ms(final.get("total_duration")),
        "ollama_prompt_eval_count": p_count if isinstance(p_count, int) else None,
        "ollama_eval_count": e_count if isinstance(e_count, int) else None,
        "ollama_done_reason": final.get("done_reason"),
    }
    if isinstance(cached, int):
        out["ollama_prompt_eval_cached_count"] = cached
    if isinstance(p_count, int):
        out["engine_n_p_eval"] = p_count - (cached if isinstance(cached, int) else 0)
    else:
        out["engine_n_p_eval"] = 0  # left out: Ollama served the whole prompt from its cache
    t_p = _ms(final.get("prompt_eval_duration"))
    if t_p is not None:
        out["engine_t_p_eval_ms"] = t_p
    t_e = _ms(final.get("eval_duration"))
    if isinstance(e_count, int) and e_count > 0 and t_e is not None:
        out.update(engine_n_eval=e_count - 1, engine_t_eval_ms=t_e)
    return out


class OllamaSession(HttpSession):
    backend = "ollama"

    def __init__(self, *args: Any, facts: dict[str, Any] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.facts = dict(facts or {})

    @property
    def _spec(self) -> OllamaSettings:
        spec = self.settings.spec
        assert isinstance(spec, OllamaSettings)
        return spec

    def options(self, n_predict: int) -> dict[str, Any]:
        s = self.settings
        opts: dict[str, Any] = dict(s.options)
        opts.update(num_predict=n_predict, temperature=s.spec.temperature, seed=self.seed)
        return opts

    def _body(self, text: str, n_predict: int, stream: bool) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": text,
            "raw": self._spec.raw,
            "stream": stream,
            "keep_alive": self._spec.keep_alive,
            "options": self.options(n_predict),
        }

    def server_prompt_count(self, text: str) -> int | None:
        reply = self.http.json("POST", "/api/generate", self._body(text, 1, stream=False))
        if not isinstance(reply, dict):
            return None
        return server_count(reply, "prompt_eval_count", "reply", {"reply": reply})

    def generate(self, prompt: Prompt, n_gen: int, stop_at_eos: bool, on_edge: Edge) -> Trace:
        assert isinstance(prompt, HttpPrompt)
        text, tokens = self._variant(prompt)
        # Ollama has no ignore_eos: a model that emits EOS ends the trial early, and the
        # actual count is recorded (stopped_at_eos says so).
        body = self._body(text, n_gen, stream=True)

        def reader(resp: Any, first: Any) -> StreamResult:
            return read_ollama_stream(iter_ndjson(resp.readline), first)

        t_start, result = self.run_stream("/api/generate", body, on_edge, reader)
        final = result.timings or {}
        raw = {k: v for k, v in final.items() if k.endswith(("_count", "_duration"))}
        # Counts are evidence: checked before any column is made of them.
        p_count = server_count(final, "prompt_eval_count", "final", raw)
        e_count = server_count(final, "eval_count", "final", raw)
        server_count(final, "prompt_eval_cached_count", "final", raw)
        engine = ollama_engine_columns(final)
        if raw:
            engine["raw_usage"] = raw_json(raw, limit=2000)
        counts = self.counts(
            result,
            p_count,
            e_count,
            "usage",
            len(tokens) if tokens is not None and self._spec.raw else None,
            n_gen,
            False,
            raw,
        )
        return self._trace(t_start, result, engine, counts)

    def info(self) -> dict[str, Any]:
        out = super().info()
        for k, v in self.facts.items():
            out.setdefault(k, v)
        return redact(out)  # what the manifest records passes the redaction step

    def close(self) -> None:
        try:
            if self._spec.unload_on_close:
                _unload(self.http, self.model)
        except BackendError:
            pass  # the server may already be gone; closing must not fail the run
        finally:
            super().close()


def _unload(http: Http, model: str) -> None:
    http.json("POST", "/api/generate", {"model": model, "keep_alive": 0, "stream": False},
              timeout_s=min(http.timeout_s, 60.0))


def _explainer(url: str, model: str):
    def explain(status: int, msg: str) -> str | None:
        if status == 404 and "not found" in msg.lower():
            return (
                f"Ollama at {url} has no model {model!r} ({msg}); pull it with "
                f"`ollama pull {model}`, or create it from a GGUF file (see docs/servers.md)"
            )
        return None

    return explain


def _show(http: Http, model: str) -> dict[str, Any]:
    """What Ollama says about the model (quantization, size, architecture); best effort."""
    try:
        reply = http.json("POST", "/api/show", {"model": model}, timeout_s=30.0)
    except BackendError:
        return {}
    if not isinstance(reply, dict):
        return {}
    details = reply.get("details")
    info = reply.get("model_info")
    details = details if isinstance(details, dict) else {}
    info = info if isinstance(info, dict) else {}
    out = {
        "ollama_family": details.get("family"),
        "ollama_parameter_size": details.get("parameter_size"),
        "ollama_format": details.get("format"),
        "quant_type": details.get("quantization_level"),
        "architecture": info.get("general.architecture"),
        "n_params": info.get("general.parameter_count"),
    }
    # Only plain values reach the manifest, redacted (a server may echo anything).
    return {k: redact(v) for k, v in out.items()
            if isinstance(v, (str, int, float)) and not isinstance(v, bool)}


class OllamaBackend(Backend):
    name = "ollama"

    @classmethod
    def cell_settings(cls, values: Mapping[str, Any]) -> HttpCell:
        return HttpCell.from_values(OllamaSettings, cls.name, values)

    def load(
        self, model_path: Path | None, settings: HttpCell | Mapping[str, Any], seed: int,
        model_name: str | None = None,
    ) -> Session:
        cell: HttpCell = as_cell_settings(type(self), settings)
        spec = cell.spec
        assert isinstance(spec, OllamaSettings)
        name = served_name(cell, model_path, model_name)
        managed = spec.server is not None
        default = "http://{host}:{port}" if managed else DEFAULT_URL
        server, url = start_server(cell, model_path, name, None, default, "/api/version", {})
        try:
            http = Http(url, spec.timeout_s, managed_hint=managed, **limits(cell))
            http.explain = _explainer(http.shown, name)
            version = http.json("GET", "/api/version", timeout_s=min(http.timeout_s, 30.0))
            v = version.get("version") if isinstance(version, dict) else None
            facts: dict[str, Any] = {"ollama_version": redact(v[:100]) if isinstance(v, str)
                                     else None}
            if spec.unload_first:
                _unload(http, name)
            # An empty prompt loads the model with these options and generates nothing.
            t0 = time.perf_counter()
            reply = http.json("POST", "/api/generate", {
                "model": name, "stream": False,
                "keep_alive": spec.keep_alive,
                "options": dict(cell.options),
            })
            facts["ollama_load_request_s"] = time.perf_counter() - t0
            load_ms = _ms(reply.get("load_duration")) if isinstance(reply, dict) else None
            if load_ms is not None:
                facts["ollama_load_ms"] = load_ms
            facts.update(_show(http, name))
            tok, tok_from = load_tokenizer(cell, model_path)
            return OllamaSession(http, cell, name, seed, server, tok, tok_from, facts=facts)
        except BaseException:
            if server is not None:
                server.stop()
            raise
