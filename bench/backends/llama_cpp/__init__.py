"""llama-cpp-python in process: `config` (settings, light) and `backend` (the engine).

Names are re-exported lazily, so importing the settings never loads the engine's modules.
"""
from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__") or name == "backend":
        raise AttributeError(name)
    backend = importlib.import_module("bench.backends.llama_cpp.backend")

    try:
        return getattr(backend, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
