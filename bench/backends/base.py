"""The backend protocol: (model, settings) -> a loaded session; (prompt, n) -> a trace.

A backend knows nothing of phases or meters: it calls `on_edge` at the request start, when the
first generated token is available, and after the last one, and the runner reads meters there.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

Edge = Callable[[str], None]  # called with "start", "first", "end"


class BackendError(Exception):
    """The engine failed; the message is one sentence naming the cause."""


@dataclass
class Prompt:
    """A prompt ready for the engine: token ids when the backend tokenizes in process."""

    prompt_id: str
    tokens: list[int] | None
    text: str | None


@dataclass
class Trace:
    n_prompt: int
    t_start: float  # perf_counter at the request start
    token_times: list[float]  # perf_counter when each generated token became available
    token_ids: list[int]
    engine: dict[str, Any] = field(default_factory=dict)  # the engine's own counters
    stopped_at_eos: bool = False
    text: str | None = None

    @property
    def n_gen(self) -> int:
        return len(self.token_times)


class Session(ABC):
    """A loaded model with one engine configuration."""

    @abstractmethod
    def prompt(self, prompt_id: str, n_tokens: int | None, text: str | None) -> Prompt:
        """Prepare a synthetic prompt of exactly n_tokens, or the given text (not timed)."""

    @abstractmethod
    def configure(self, run_settings: dict[str, Any]) -> None:
        """Apply settings that change without a reload (threads)."""

    @abstractmethod
    def generate(self, prompt: Prompt, n_gen: int, stop_at_eos: bool, on_edge: Edge) -> Trace:
        """One trial, from an empty KV cache."""

    def info(self) -> dict[str, Any]:
        """Model identity and engine facts learnt at load."""
        return {}

    def close(self) -> None:
        pass


class Backend(ABC):
    name: ClassVar[str]

    @abstractmethod
    def load(self, model_path: Path, settings: dict[str, Any], seed: int) -> Session: ...

    @classmethod
    def software(cls) -> dict[str, Any]:
        """Engine versions and build info for the manifest."""
        return {}


# Lazy registry: choosing one backend never imports another's dependencies.
REGISTRY = {"llama-cpp": "bench.backends.llama_cpp:LlamaCppBackend"}


def get_backend(name: str) -> type[Backend]:
    if name not in REGISTRY:
        raise BackendError(f"unknown backend {name!r}; available: {', '.join(sorted(REGISTRY))}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)
