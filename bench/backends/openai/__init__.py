"""OpenAI-compatible servers over HTTP: `config` (typed cell settings) and `backend`."""
from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so importing the settings never imports the HTTP client code.
    if name.startswith("__") or name == "backend":
        raise AttributeError(name)
    backend = importlib.import_module("bench.backends.openai.backend")

    try:
        return getattr(backend, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
