"""The one redaction step: every string bench stores or shows passes through `redact` first.

Secrets are registered when they are read (an API key from its environment variable); values
shaped like an Authorization header or a `Bearer <token>` are masked even when nobody registered
them, so a server that echoes a header it was sent cannot leak it into a table, the manifest, a
log or the terminal.
"""
from __future__ import annotations

import re
import threading
from typing import TypeVar

MASK = "***"
T = TypeVar("T")

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so a secret that contains another goes whole
# "Authorization: Bearer abc", "x-api-key=abc", "authorization": "Basic abc" and the like.
_AUTH = re.compile(
    r"(?i)(\b(?:authorization|proxy-authorization|x-api-key|api[-_]?key)\b[\"']?\s*[:=]\s*"
    r"[\"']?)(?:(bearer|basic|token)\s+)?(?!\*\*\*)(?!(?:bearer|basic|token)\s)[^\s\"',;}&]+"
)
# A bare `Bearer <token>`: the token may be one bench was never told about (a proxy's).
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+)(?!\*\*\*)[A-Za-z0-9._~+/=:-]{8,}")
# Keys shorter than this are too likely to match ordinary text to be replaced everywhere.
_MIN_SECRET = 4


def register_secret(value: str) -> None:
    """From now on, `value` is masked in everything redact() sees (blank or tiny values are
    ignored: they would mask ordinary text)."""
    global _secrets
    if not isinstance(value, str) or len(value.strip()) < _MIN_SECRET:
        return
    with _lock:
        if value not in _secrets:
            _secrets = tuple(sorted({*_secrets, value}, key=len, reverse=True))


def registered() -> tuple[str, ...]:
    """The registered secrets (for a streaming redactor that must hold back a partial one)."""
    return _secrets


def _text(s: str) -> str:
    for secret in _secrets:
        if secret in s:
            s = s.replace(secret, MASK)
    s = _AUTH.sub(lambda m: m.group(1) + (m.group(2) + " " if m.group(2) else "") + MASK, s)
    return _BEARER.sub(lambda m: m.group(1) + m.group(2) + MASK, s)


def redact(obj: T) -> T:
    """`obj` with every registered secret and Authorization-looking value masked as ***:
    strings, bytes, and (recursively) the keys and values of dicts, lists and tuples; other
    values as they are."""
    if isinstance(obj, str):
        return _text(obj)  # type: ignore[return-value]
    if isinstance(obj, bytes):
        # surrogateescape keeps bytes that are not UTF-8 exactly as they were.
        return _text(obj.decode("utf-8", "surrogateescape")).encode(  # type: ignore[return-value]
            "utf-8", "surrogateescape")
    if isinstance(obj, dict):
        return {redact(k): redact(v) for k, v in obj.items()}  # type: ignore[return-value]
    if isinstance(obj, list):
        return [redact(v) for v in obj]  # type: ignore[return-value]
    if isinstance(obj, tuple):
        return tuple(redact(v) for v in obj)  # type: ignore[return-value]
    return obj
