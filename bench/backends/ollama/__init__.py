"""Ollama's native API: `backend` (the session); its cell settings are HttpCell (`config`).

Names are re-exported lazily.
"""
from __future__ import annotations

from bench.backends.base import lazy_exports

__getattr__ = lazy_exports("bench.backends.ollama.backend")
