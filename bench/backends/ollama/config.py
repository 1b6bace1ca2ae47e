"""Ollama's settings: the config model (bench.backends.http_settings) and one cell's typed
values, the HttpCell every HTTP backend receives."""
from __future__ import annotations

from bench.backends.http_settings import OllamaSettings
from bench.backends.openai.config import HttpCell

__all__ = ["HttpCell", "OllamaSettings"]
