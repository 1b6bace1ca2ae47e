"""llama-cpp-python in process: `config` (settings, light) and `backend` (the engine).

Names are re-exported lazily, so importing the settings never loads the engine's modules.
"""
from __future__ import annotations

from bench.backends.base import lazy_exports

__getattr__ = lazy_exports("bench.backends.llama_cpp.backend")
