"""The one redaction step: every string bench stores passes through `redact` first.

Secrets are registered when they are read (an API key from its environment variable); values
shaped like an Authorization header are masked even when nobody registered them, so a server
that echoes a header it was sent cannot leak it into a table, the manifest or a log.
"""
from __future__ import annotations

import re
from typing import Any

MASK = "[redacted]"
_secrets: set[str] = set()
# "Authorization: Bearer abc", "Bearer abc", "authorization": "Basic abc" and the like.
_AUTH = re.compile(
    r"(?i)(\b(?:authorization|proxy-authorization|x-api-key|api[-_]?key)\b[\"']?\s*[:=]\s*"
    r"[\"']?)(?:(bearer|basic|token)\s+)?[^\s\"',;}]+"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
# Keys shorter than this are too likely to match ordinary text to be replaced everywhere.
_MIN_SECRET = 4


def register_secret(value: str) -> None:
    """Remember a secret (an API key) so that no stored string contains it."""
    if value and len(value) >= _MIN_SECRET:
        _secrets.add(value)


def _redact_str(s: str) -> str:
    # Longest first, so a secret containing another is masked whole.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in s:
            s = s.replace(secret, MASK)
    s = _AUTH.sub(lambda m: m.group(1) + (m.group(2) + " " if m.group(2) else "") + MASK, s)
    return _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", s)


def redact(obj: Any) -> Any:
    """`obj` with every registered secret and Authorization-looking value masked, recursively
    through str, dict (keys and values), list and tuple; other values are returned as they are."""
    if isinstance(obj, str):
        return _redact_str(obj)
    if isinstance(obj, dict):
        return {redact(k): redact(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(redact(v) for v in obj)
    return obj
