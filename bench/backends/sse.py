"""Reading servers' token streams: SSE framing (OpenAI-compatible APIs), NDJSON (Ollama), and
what their chunks say (text, usage, finish reason, the server's own timings).

Pure parsing over a `readline` callable, so tests feed canned bytes. Every line is stamped with
the clock when it arrives; a chunk can hold zero, one or several tokens, so the stamps are
per chunk and the token counts come from the server's usage or the caller's tokenizer.
"""
from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Readline = Callable[[], bytes]
Clock = Callable[[], float]


class StreamError(Exception):
    """The stream broke off or carried an error; the message is one sentence."""


@dataclass(frozen=True)
class SseEvent:
    event: str  # "message" unless the server named it
    data: str
    t: float  # clock when the event's last data line arrived


def _lines(readline: Readline, clock: Clock) -> Iterator[tuple[bytes, float]]:
    n = 0
    while True:
        try:
            line = readline()
        except (OSError, http.client.HTTPException) as e:
            # IncompleteRead, a reset connection, a read timeout: the server went away.
            raise StreamError(
                f"the connection broke after {n} lines of the stream ({type(e).__name__}: {e})"
            ) from None
        if not line:
            return
        n += 1
        yield line, clock()


def iter_sse(readline: Readline, clock: Clock = time.perf_counter) -> Iterator[SseEvent]:
    """Server-sent events: `field: value` lines, a blank line ends an event, `:` a comment."""
    data: list[str] = []
    event = ""
    t = 0.0
    for raw, now in _lines(readline, clock):
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line == "":
            if data:
                yield SseEvent(event or "message", "\n".join(data), t)
            data, event = [], ""
            continue
        if line.startswith(":"):
            continue  # a comment: keep-alive pings
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
            t = now
        elif name == "event":
            event = value
        # id and retry do not matter to a one-shot stream.
    if data:  # the stream ended without the blank line; the event is still whole
        yield SseEvent(event or "message", "\n".join(data), t)


def iter_ndjson(
    readline: Readline, clock: Clock = time.perf_counter
) -> Iterator[tuple[float, dict[str, Any]]]:
    """One JSON object per line (Ollama's native streams)."""
    for raw, now in _lines(readline, clock):
        line = raw.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            raise StreamError(f"the server sent a line that is not JSON: {_clip(line)}") from None
        if not isinstance(obj, dict):
            raise StreamError(f"the server sent JSON that is not an object: {_clip(line)}")
        yield now, obj


def _clip(text: str | bytes, n: int = 200) -> str:
    """A short one-line excerpt of what a server sent, for an error sentence."""
    s = text.decode("utf-8", "replace") if isinstance(text, (bytes, bytearray)) else text
    s = " ".join(s[: 4 * n].split())
    return s if len(s) <= n else s[:n] + "..."


def error_message(obj: Any) -> str | None:
    """The message of an error object in the shapes servers use, or None."""
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if err is None:
        return None
    if isinstance(err, dict):
        msg = err.get("message") or err.get("msg") or json.dumps(err)
        code = err.get("code") or err.get("type")
        return f"{msg} ({code})" if code and str(code) not in str(msg) else str(msg)
    return str(err)


@dataclass
class StreamResult:
    """What one streamed generation said, with a clock stamp per chunk that carried text."""

    times: list[float] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    n_chunks: int = 0  # every chunk, empty ones included
    finished: bool = False  # the server said the generation is complete
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    # The server's own counters: llama-server's `timings`, Ollama's final durations.
    timings: dict[str, Any] | None = None
    t_end: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def _piece(self, text: str, t: float, on_first: Callable[[], None] | None) -> None:
        if not text:
            return
        if not self.times and on_first is not None:
            on_first()
        self.times.append(t)
        self.pieces.append(text)


def _shape(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str,
           what: str) -> Any:
    """obj[key] when it is absent (None) or of the expected kind; anything else is a server
    that does not speak the protocol, said in one sentence rather than a KeyError later."""
    v = obj.get(key)
    if v is None or (isinstance(v, kind) and not (isinstance(v, bool) and kind is not bool)):
        return v
    raise StreamError(
        f"the server sent a {where} whose `{key}` is {type(v).__name__}, not {what}: "
        f"{_clip(json.dumps(v, default=str))}"
    )


def _choice_text(choice: dict[str, Any]) -> str:
    """Text of a completions chunk (`text`) or a chat chunk (`delta.content`); reasoning
    models stream their thinking as `reasoning_content`, which is generated tokens too."""
    text = _shape(choice, "text", str, "choice", "a string")
    if text is not None:
        return text
    delta = _shape(choice, "delta", dict, "choice", "an object") or {}
    parts = [_shape(delta, k, str, "delta", "a string")
             for k in ("reasoning_content", "reasoning", "content")]
    return "".join(p for p in parts if p is not None)


def read_openai_stream(
    events: Iterator[SseEvent], on_first: Callable[[], None] | None = None
) -> StreamResult:
    """Consume an OpenAI-style stream to its `[DONE]`; raise StreamError if it breaks."""
    out = StreamResult()
    for ev in events:
        data = ev.data.strip()
        if data == "[DONE]":
            out.finished = True
            out.t_end = ev.t
            break
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):
            if ev.event == "error":
                raise StreamError(f"the server sent an error event: {_clip(data)}") from None
            raise StreamError(f"the server sent data that is not JSON: {_clip(data)}") from None
        msg = error_message(chunk)
        if msg is not None or ev.event == "error":
            raise StreamError(f"the server reported an error mid-stream: {msg or _clip(data)}")
        if not isinstance(chunk, dict):
            raise StreamError(f"the server sent JSON that is not an object: {_clip(data)}")
        out.n_chunks += 1
        out.t_end = ev.t
        usage = _shape(chunk, "usage", dict, "chunk", "an object")
        if usage is not None:
            out.usage = usage
        timings = _shape(chunk, "timings", dict, "chunk", "an object")
        if timings is not None:
            out.timings = timings
        choices = _shape(chunk, "choices", list, "chunk", "a list") or []
        if choices:
            choice = choices[0]
            if not isinstance(choice, dict):
                raise StreamError(
                    f"the server sent a chunk whose first choice is {type(choice).__name__}, "
                    f"not an object: {_clip(data)}"
                )
            out._piece(_choice_text(choice), ev.t, on_first)
            reason = _shape(choice, "finish_reason", str, "choice", "a string")
            if reason:
                out.finish_reason = reason
    if not out.finished:
        if out.finish_reason is None:
            raise StreamError(
                f"the stream ended after {out.n_chunks} chunks without a finish reason or "
                "[DONE]: the server dropped the connection"
            )
        out.finished = True  # a finish reason and a clean end, but no [DONE]: accept
    return out


def read_ollama_stream(
    lines: Iterator[tuple[float, dict[str, Any]]], on_first: Callable[[], None] | None = None
) -> StreamResult:
    """Consume an Ollama /api/generate stream to its `done: true` object."""
    out = StreamResult()
    for t, obj in lines:
        msg = error_message(obj)
        if msg is not None:
            raise StreamError(f"Ollama reported an error mid-stream: {msg}")
        out.n_chunks += 1
        out.t_end = t
        parts = [_shape(obj, k, str, "line", "a string") for k in ("thinking", "response")]
        out._piece("".join(p for p in parts if p is not None), t, on_first)
        done = _shape(obj, "done", bool, "line", "true or false")
        reason = _shape(obj, "done_reason", str, "line", "a string")
        if done:
            out.finished = True
            out.finish_reason = reason
            out.timings = {k: v for k, v in obj.items() if k not in ("response", "context")}
            break
    if not out.finished:
        raise StreamError(
            f"the stream ended after {out.n_chunks} chunks without `done: true`: the server "
            "dropped the connection"
        )
    return out
