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
    # Context depth (workload.depth): tokens placed in the KV cache or RNN state before the
    # timed prompt, untimed, like `llama-bench -d`. `fill` holds them for in-process engines.
    depth: int = 0
    fill: list[int] | None = None


@dataclass
class Trace:
    n_prompt: int
    t_start: float  # perf_counter at the request start
    # perf_counter when each generated token became available. In process: one per token.
    # Over HTTP: one per non-empty stream chunk (a chunk can hold several tokens), and
    # `n_gen_counted` then gives the token count.
    token_times: list[float]
    token_ids: list[int]
    engine: dict[str, Any] = field(default_factory=dict)  # the engine's own counters
    stopped_at_eos: bool = False
    text: str | None = None
    n_gen_counted: int | None = None
    # Where the token counts come from: "engine" (in process), "usage" (the server's report),
    # "tokenizer" (counted by bench with the model's tokenizer).
    count_source: str = "engine"

    @property
    def n_gen(self) -> int:
        return self.n_gen_counted if self.n_gen_counted is not None else len(self.token_times)


class Session(ABC):
    """A loaded model with one engine configuration."""

    @abstractmethod
    def prompt(
        self, prompt_id: str, n_tokens: int | None, text: str | None, depth: int = 0
    ) -> Prompt:
        """Prepare a synthetic prompt of exactly n_tokens, or the given text, after `depth`
        tokens of context that each trial fills untimed (not timed)."""

    @abstractmethod
    def configure(self, run_settings: dict[str, Any]) -> None:
        """Apply settings that change without a reload (threads)."""

    @abstractmethod
    def generate(self, prompt: Prompt, n_gen: int, stop_at_eos: bool, on_edge: Edge) -> Trace:
        """One trial, from an empty KV cache."""

    def detokenize(self, token_ids: list[int]) -> str | None:
        """Text of generated tokens (not timed); None where the backend cannot say."""
        return None

    def info(self) -> dict[str, Any]:
        """Model identity and engine facts learnt at load."""
        return {}

    def close(self) -> None:
        pass


class Backend(ABC):
    name: ClassVar[str]

    @abstractmethod
    def load(
        self, model_path: Path | None, settings: dict[str, Any], seed: int,
        model_name: str | None = None,
    ) -> Session:
        """Load (or connect to) the model. model_path is None for a `served` model; settings
        holds the cell's swept settings and the backend's fixed ones."""

    @classmethod
    def software(cls) -> dict[str, Any]:
        """Engine versions and build info for the manifest."""
        return {}


# Lazy registry: choosing one backend never imports another's dependencies.
REGISTRY = {
    "llama-cpp": "bench.backends.llama_cpp:LlamaCppBackend",
    "openai": "bench.backends.openai_http:OpenAIBackend",
    "ollama": "bench.backends.ollama:OllamaBackend",
    "rwkv": "bench.backends.rwkv.backend:RwkvBackend",
    "transformers": "bench.backends.transformers.backend:TransformersBackend",
}


def get_backend(name: str) -> type[Backend]:
    if name not in REGISTRY:
        raise BackendError(f"unknown backend {name!r}; available: {', '.join(sorted(REGISTRY))}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)
