"""OpenAI-compatible servers over HTTP: `config` (typed cell settings) and `backend`.

Names are re-exported lazily, so importing the settings never imports the HTTP client code.
"""
from __future__ import annotations

from bench.backends.base import lazy_exports

__getattr__ = lazy_exports("bench.backends.openai.backend")
