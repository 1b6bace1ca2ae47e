"""Secrets out of everything bench stores or prints: one registry of secret values (API keys,
registered where they are read) and `redact`, which every stored or shown string passes through.
"""
from __future__ import annotations

import re
import threading
from typing import TypeVar

MASK = "***"
T = TypeVar("T")

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so a secret that contains another goes whole
# `Authorization: Bearer <token>` as a server may echo it back; the token may be one bench was
# never told about (a proxy's, a default key), so the pattern masks any token after "Bearer".
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)(?!\*\*\*)[A-Za-z0-9._~+/=:-]+")


def register_secret(value: str) -> None:
    """From now on, `value` is masked in everything redact() sees (blank values are ignored)."""
    global _secrets
    if not isinstance(value, str) or not value.strip():
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
    return _BEARER.sub(lambda m: m.group(1) + m.group(2) + MASK, s)


def redact(obj: T) -> T:
    """`obj` with every registered secret and every `Bearer <token>` masked as ***: strings,
    bytes, and (recursively) the keys and values of dicts, lists and tuples; other values as
    they are."""
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
