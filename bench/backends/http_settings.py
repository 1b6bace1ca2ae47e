"""Config schema of the HTTP backends (`openai`, `ollama`) and of a server bench starts itself.

Imported by bench.config at start-up, so it stays light: pydantic and the standard library only.
The classes mirror bench.config.BackendSettings (name, LOAD_TIME, axes(), fixed()) instead of
subclassing it, because bench.config imports this module before it defines that class.
Secrets never enter these models: an API key is named by its environment variable, and a URL
carrying credentials is refused, so what the manifest records is safe to share.
"""
from __future__ import annotations

import os
import re
import string
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, field_validator, model_validator

from bench.schema import StrictModel

Scalar = bool | int | float | str
Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=60)]
Label = Annotated[str, Field(pattern=r"^[\w.:@/+-]+$", min_length=1, max_length=80)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)]

# Keys that every cell already has; a swept server argument or option may not reuse them.
_CELL_KEYS = {"model", "quant", "backend", "label", "endpoint", "prompt_id", "prompt_tokens",
              "gen_tokens"}
# Placeholders bench fills in a server command, its environment and URLs.
BUILTIN_PLACEHOLDERS = ("host", "port", "model_path", "model", "python")
SECRET_PLACEHOLDERS = ("api_key",)
_SECRET_QUERY = re.compile(
    r"(key|token|secret|password|passwd|pwd|sig|signature|auth)", re.IGNORECASE
)


def _as_list(v: Any) -> Any:
    return v if isinstance(v, list) else [v]


def placeholders(text: str) -> list[str]:
    """The `{name}` fields of a template ('{{' is a literal brace)."""
    try:
        return [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:
        raise ValueError(
            f"{text!r} is not a valid template ({e}); write a literal brace as {{{{"
        ) from None


def check_url(url: str, what: str = "url") -> str:
    """An http(s) URL with no credentials in it (those belong in an environment variable)."""
    probe = re.sub(r"\{\w+\}", "0", url)  # placeholders such as {port} are filled in later
    parts = urlsplit(probe)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host; got {url!r}")
    try:  # urlsplit checks a port's range only when asked; {port} is filled in later
        port = urlsplit(re.sub(r"\{\w+\}", "1", url)).port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"{what} has a port that is not a number from 1 to 65535; got {url!r}")
    if parts.username or parts.password:
        raise ValueError(
            f"{what} must not carry a user name or password; put the key in an environment "
            "variable and name it in api_key_env"
        )
    if any(_SECRET_QUERY.search(k) for k, _ in parse_qsl(parts.query)):
        raise ValueError(
            f"{what} must not carry a key or token in its query; put it in an environment "
            "variable and name it in api_key_env"
        )
    return url.rstrip("/")


class ServerSpec(StrictModel):
    """A server bench starts for the session and stops when the session closes."""

    # The argument list (no shell). Placeholders: {host} {port} {model_path} {model} {api_key},
    # {python} (the interpreter running bench) and the names in `args`.
    command: Annotated[list[Annotated[str, Field(max_length=4000)]], Field(min_length=1)]
    # Polled until it answers 200; placeholders allowed. Default: the backend's health URL.
    ready_url: str | None = None
    host: str = "127.0.0.1"
    # None: a free port is picked for {port}.
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    startup_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 120.0
    stop_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    # Added to bench's environment for the server; values may use placeholders ({api_key}).
    env: dict[EnvName, Annotated[str, Field(max_length=4000)]] = {}
    # Values for placeholders of the command; a list sweeps, each value a fresh server.
    args: dict[Name, list[Scalar]] = {}

    @field_validator("args", mode="before")
    @classmethod
    def _arg_lists(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: _as_list(x) for k, x in v.items()}
        return v

    @field_validator("args")
    @classmethod
    def _arg_names(cls, v: dict[str, list[Scalar]]) -> dict[str, list[Scalar]]:
        for k, values in v.items():
            if k in _CELL_KEYS or k in BUILTIN_PLACEHOLDERS + SECRET_PLACEHOLDERS:
                raise ValueError(f"server argument {k!r} clashes with a name bench uses")
            if not values:
                raise ValueError(f"server argument {k!r} needs at least one value")
        return v

    @field_validator("ready_url")
    @classmethod
    def _ready(cls, v: str | None) -> str | None:
        return None if v is None else check_url(v, "server.ready_url")

    @model_validator(mode="after")
    def _known_placeholders(self) -> ServerSpec:
        known = set(BUILTIN_PLACEHOLDERS) | set(SECRET_PLACEHOLDERS) | set(self.args)
        texts = [("server.command", a) for a in self.command]
        texts += [(f"server.env.{k}", v) for k, v in self.env.items()]
        texts += [("server.ready_url", self.ready_url or "")]
        for where, text in texts:
            for f in placeholders(text):
                if f not in known:
                    raise ValueError(
                        f"{where} uses {{{f}}}, which bench does not know; known: "
                        f"{', '.join('{' + k + '}' for k in sorted(known))}"
                    )
        if any("{api_key}" in t for w, t in texts if w == "server.ready_url"):
            raise ValueError("server.ready_url must not contain {api_key}")
        return self

    def default_label(self) -> str:
        cmd = self.command
        if len(cmd) >= 3 and cmd[1] == "-m":
            return cmd[2]
        return os.path.basename(cmd[0]) or "server"


class HttpBackendSettings(StrictModel):
    """The shared part of the HTTP backends; mirrors bench.config.BackendSettings."""

    name: str
    # Names this server in result tables and cell keys, so two entries of one backend (say
    # llama-server and LM Studio, both `openai`) stay apart. Default: the program or host:port.
    label: Label | None = None
    server: ServerSpec | None = None
    # The name sent in requests; default: the config model's id (or its `served` name).
    model: Annotated[str, Field(min_length=1, max_length=300)] | None = None
    # A GGUF file whose tokenizer builds exact synthetic prompts and counts tokens when the
    # model is only a server's name; a local model file is used for this without asking.
    tokenizer: str | None = None
    # The longest wait for the server's next bytes (the socket timeout)...
    timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    # ...and the longest one request may take in all, from connecting to its last byte, so a
    # server that trickles keep-alives cannot hold a trial forever.
    deadline_s: Annotated[float, Field(gt=0, le=86_400)] = 1800.0
    # Caps on what one server may send: one line (SSE or NDJSON) and one whole response.
    max_line_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = 1 << 20
    max_response_bytes: Annotated[int, Field(ge=1024, le=1 << 36)] = 64 << 20
    # Synthetic prompts start at a different word in each trial, so that a server that keeps
    # its KV cache between requests cannot reuse a cached prompt prefix.
    vary_prompt: bool = True

    # Swept settings that need a new session: the label (another server) and the server's
    # arguments. Dynamic, so a property rather than a class constant.
    @property
    def LOAD_TIME(self) -> tuple[str, ...]:
        return ("label", *(self.server.args if self.server else {}))

    def resolved_label(self) -> str:
        raise NotImplementedError

    def axes(self) -> dict[str, list[Any]]:
        return {"label": [self.resolved_label()], **(self.server.args if self.server else {})}

    def fixed(self) -> dict[str, Any]:
        """Everything the backend needs that is not swept (the swept values come per cell)."""
        out = self.model_dump(mode="json", exclude={"name", "label", "endpoint", "options"})
        if out.get("server") is not None:
            out["server"].pop("args", None)
        return out


class OpenAISettings(HttpBackendSettings):
    """Any OpenAI-compatible server: llama-server, llama-cpp-python, vLLM, LM Studio, ..."""

    name: Literal["openai"]
    # The base URL including /v1. With `server:` it defaults to http://{host}:{port}/v1.
    url: str | None = None
    endpoint: list[Literal["completions", "chat"]] = ["completions"]
    # The NAME of an environment variable that holds the key; the key itself is never recorded.
    api_key_env: EnvName | None = None
    # Fixed generation length where the server allows it: `ignore_eos` (llama-server, vLLM)
    # and `min_tokens` (llama-cpp-python, vLLM) are sent unless the workload stops at EOS.
    ignore_eos: bool = True
    min_tokens: bool = True
    # Send synthetic prompts as token ids (llama-server and vLLM accept a list of ints).
    prompt_as_tokens: bool = False
    temperature: Annotated[float, Field(ge=0, le=10)] = 0.0
    # False: every request asks the server not to reuse a cached prompt prefix
    # (`cache_prompt: false` for llama-server, a fresh `cache_salt` for vLLM); True sends neither.
    prompt_cache: bool = False
    # Merged into every request body last, so it may override what bench sends.
    extra_body: dict[Name, Any] = {}

    _lists = field_validator("endpoint", mode="before")(_as_list)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else check_url(v)

    @model_validator(mode="after")
    def _where(self) -> OpenAISettings:
        if self.url is None and self.server is None:
            raise ValueError(
                "the openai backend needs 'url' (a running server, e.g. "
                "http://127.0.0.1:8080/v1) or 'server' (a command bench starts)"
            )
        if self.url is not None:
            bad = [f for f in placeholders(self.url) if f not in ("host", "port")]
            if bad or (placeholders(self.url) and self.server is None):
                raise ValueError("url may use {host} and {port} only, and only with 'server'")
        if len(set(self.endpoint)) != len(self.endpoint):
            raise ValueError("'endpoint' lists the same endpoint twice")
        reserved = {"model", "prompt", "messages", "stream", "stream_options", "max_tokens"}
        clash = sorted(reserved & set(self.extra_body))
        if clash:
            raise ValueError(f"extra_body may not set {', '.join(clash)}: bench sets them")
        return self

    def resolved_label(self) -> str:
        if self.label:
            return self.label
        if self.server is not None:
            return self.server.default_label()
        parts = urlsplit(self.url or "")
        return parts.netloc or "openai"

    def axes(self) -> dict[str, list[Any]]:
        return {"label": [self.resolved_label()], "endpoint": list(self.endpoint),
                **(self.server.args if self.server else {})}


# Options bench sets itself in every Ollama request.
_OLLAMA_OWN = ("num_predict", "seed", "temperature")


class OllamaSettings(HttpBackendSettings):
    """Ollama's native API (/api/generate, NDJSON), with its own timings per request."""

    name: Literal["ollama"]
    # Default http://127.0.0.1:11434, or http://{host}:{port} with `server:`.
    url: str | None = None
    # Ollama model options (num_ctx, num_thread, num_gpu, ...); a list sweeps. Ollama reloads
    # the model when they change, so each value is a load of its own.
    options: dict[Name, list[Scalar]] = {}
    temperature: Annotated[float, Field(ge=0, le=10)] = 0.0
    # How long Ollama keeps the model loaded between requests.
    keep_alive: Annotated[str, Field(pattern=r"^-?\d+(\.\d+)?(ms|s|m|h)?$")] = "30m"
    # Unload the model before loading it, so load_s measures a real load; unload at close.
    unload_first: bool = True
    unload_on_close: bool = True
    # Send the prompt without the model's template, so the tokens are the ones bench built.
    raw: bool = True

    @field_validator("options", mode="before")
    @classmethod
    def _option_lists(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: _as_list(x) for k, x in v.items()}
        return v

    @field_validator("options")
    @classmethod
    def _option_names(cls, v: dict[str, list[Scalar]]) -> dict[str, list[Scalar]]:
        for k, values in v.items():
            if k in _OLLAMA_OWN:
                raise ValueError(
                    f"option {k!r} is set by bench (num_predict from gen_tokens, seed from "
                    "trials.seed, temperature from 'temperature')"
                )
            if k in _CELL_KEYS:
                raise ValueError(f"option {k!r} clashes with a name bench uses")
            if not values:
                raise ValueError(f"option {k!r} needs at least one value")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else check_url(v)

    @model_validator(mode="after")
    def _placeholders_need_server(self) -> OllamaSettings:
        if self.url is not None:
            fields = placeholders(self.url)
            if any(f not in ("host", "port") for f in fields) or (fields and not self.server):
                raise ValueError("url may use {host} and {port} only, and only with 'server'")
        if self.server is not None and self.options:
            clash = sorted(set(self.server.args) & set(self.options))
            if clash:
                raise ValueError(f"{clash[0]!r} is both a server argument and an option")
        return self

    @property
    def LOAD_TIME(self) -> tuple[str, ...]:
        return (*super().LOAD_TIME, *self.options)

    def resolved_label(self) -> str:
        if self.label:
            return self.label
        if self.server is not None:
            return self.server.default_label()
        return "ollama" if self.url is None else (urlsplit(self.url).netloc or "ollama")

    def axes(self) -> dict[str, list[Any]]:
        return {**super().axes(), **self.options}

    def fixed(self) -> dict[str, Any]:
        # The options' values come per cell with the swept settings; their names say which.
        return {**super().fixed(), "option_names": sorted(self.options)}

