"""Ollama's native API: `backend` (the session); its cell settings are HttpCell."""
from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__") or name == "backend":
        raise AttributeError(name)
    backend = importlib.import_module("bench.backends.ollama.backend")

    try:
        return getattr(backend, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
