"""The backend contract: (model, typed cell settings) -> a loaded session; (prompt, n) -> trace.

A backend knows nothing of phases or meters: it calls `on_edge` at the request start, when the
first generated token is available, and after the last one, and the worker reads meters there.
Optional abilities (a server process, resource usage) are small Protocols checked with
isinstance. Backends are found through a lazy "module:Class" registry (`register_backend`).
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, get_args, runtime_checkable

from bench.schema import StrictModel

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


class BackendSettings(StrictModel):
    """What every backend's config model provides to the sweep. A list in a swept setting
    sweeps it. Each backend keeps its subclass beside its code (bench/backends/<name>/config.py)
    with the defaults, in that one place."""

    name: str
    # Swept settings whose change needs a fresh load (a new model load or a new server).
    LOAD_TIME: ClassVar[tuple[str, ...]] = ()

    def axes(self) -> dict[str, list[Any]]:
        """Swept settings in display order, each a non-empty list."""
        return {}

    def fixed(self) -> dict[str, Any]:
        """Settings passed to the backend as they are (not swept)."""
        return {}

    def pick(self, swept: Mapping[str, Any]) -> dict[str, Any]:
        """One cell's values: each swept setting at the cell's value (its first value where
        the cell does not say), and the fixed settings."""
        return {**{k: swept.get(k, v[0]) for k, v in self.axes().items()}, **self.fixed()}

    @classmethod
    def from_cell_values(cls, values: Mapping[str, Any]) -> Self:
        """The config model from one cell's flat values (its swept settings and the fixed ones,
        as `Cell.setting` and `Cell.extra` hold them): validated, so a missing value takes the
        default declared in the model, and nowhere else."""
        (name,) = get_args(cls.model_fields["name"].annotation)
        fields = set(cls.model_fields) - {"name"}
        given = {k: v for k, v in values.items() if k in fields}
        return cls.model_validate({"name": name, **given})


class Session(ABC):
    """A loaded model with one engine configuration."""

    @abstractmethod
    def prompt(
        self, prompt_id: str, n_tokens: int | None, text: str | None, depth: int = 0
    ) -> Prompt:
        """Prepare a synthetic prompt of exactly n_tokens, or the given text, after `depth`
        tokens of context that each trial fills untimed (not timed)."""

    @abstractmethod
    def configure(self, settings: Any) -> None:
        """Apply the next cell's typed settings (the same type `load` got); only those that
        change without a reload (threads, endpoint) may differ from the loaded ones."""

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
    # The backend's typed, frozen per-cell settings (`LlamaCppCell`, `RwkvCell`, ...): a class
    # whose `from_values(values)` validates a cell's flat values through the config model.
    # A backend whose settings need more than the values (the HTTP ones) overrides
    # `cell_settings` instead.
    cell_type: ClassVar[Any] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Said when the backend is defined, not when its first cell runs.
        overridden = cls.cell_settings.__func__ is not Backend.cell_settings.__func__  # type: ignore[attr-defined]
        if cls.cell_type is None and not overridden:
            raise TypeError(f"backend {cls.__name__} sets neither cell_type nor cell_settings")

    @classmethod
    def cell_settings(cls, values: Mapping[str, Any]) -> Any:
        """One cell's settings as the backend's typed, frozen object, from the cell's swept
        values and the backend's fixed ones (`Cell.setting` + `Cell.extra`). Validated by the
        backend's config model, so a missing value takes the default declared there."""
        return cls.cell_type.from_values(values)

    @abstractmethod
    def load(
        self, model_path: Path | None, settings: Any, seed: int,
        model_name: str | None = None,
    ) -> Session:
        """Load (or connect to) the model. model_path is None for a `served` model; settings is
        what `cell_settings` returns (a plain mapping is converted through it)."""

    @classmethod
    def software(cls) -> dict[str, Any]:
        """Engine versions and build info for the manifest."""
        return {}


# -- optional capabilities: a session has them or not; the worker asks with isinstance ------


@runtime_checkable
class HasServerProcess(Protocol):
    """A session backed by a server process whose power and memory meters may follow."""

    def server_pid(self) -> int | None: ...


@runtime_checkable
class ReportsResourceUsage(Protocol):
    """A session that can say what it used (a server's peak memory, ...) for the manifest."""

    def resource_usage(self) -> dict[str, Any]: ...


@runtime_checkable
class ReportsRowColumns(Protocol):
    """A session with facts for every trial row that the engine decided at load (the flash
    attention llama.cpp chose when asked for auto)."""

    def row_columns(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DecodeReads:
    """What one decoded token reads from memory, as the engine holds the model (the roofline's
    bytes per token, bench.roofline). A session that knows its weights as loaded says it:
    an RWKV strategy converts them to fp32, bf16 or int8 and a transformers dtype sets them,
    so the stored file would give the wrong figure."""

    weight_bytes_per_token: int  # every weight read once, an embedding row per token
    # Attention KV cache bytes per context position (all layers); None for a recurrent model.
    kv_bytes_per_cell: int | None
    # A recurrent model's state, read and written once per token (0 for attention).
    state_bytes_per_token: int
    # "cpu" or "gpu": whose bandwidth bounds it; "split" when weights sit in both (no bound).
    memory: str
    method: str  # how the figures were obtained, in words


@runtime_checkable
class ReportsDecodeReads(Protocol):
    """A session that can say what a decoded token reads (bench.roofline uses it instead of
    a GGUF file's tensor table)."""

    def decode_reads(self) -> DecodeReads | None: ...


@runtime_checkable
class TracksProcess(Protocol):
    """A meter that can attribute the energy of one more process (a server bench started)."""

    def track_pid(self, pid: int) -> None: ...


# Lazy registry: choosing one backend never imports another's dependencies.
REGISTRY = {
    "llama-cpp": "bench.backends.llama_cpp.backend:LlamaCppBackend",
    "openai": "bench.backends.openai.backend:OpenAIBackend",
    "ollama": "bench.backends.ollama.backend:OllamaBackend",
    "rwkv": "bench.backends.rwkv.backend:RwkvBackend",
    "transformers": "bench.backends.transformers.backend:TransformersBackend",
}


def register_backend(name: str, target: str) -> None:
    """Make backend `name` available as "module:Class" (imported when first chosen)."""
    module, sep, cls = target.partition(":")
    if not sep or not module or not cls:
        raise ValueError(f"a backend is registered as 'module:Class', not {target!r}")
    REGISTRY[name] = target


def get_backend(name: str, registry: Mapping[str, str] | None = None) -> type[Backend]:
    """The backend class registered as `name` (in `registry`, a snapshot that crossed into a
    worker process, or the live REGISTRY)."""
    reg = REGISTRY if registry is None else registry
    if name not in reg:
        raise BackendError(f"unknown backend {name!r}; available: {', '.join(sorted(reg))}")
    module, cls = reg[name].split(":")
    return getattr(importlib.import_module(module), cls)


def lazy_exports(module: str) -> Callable[[str], Any]:
    """A package `__getattr__` that serves the names of `module` on first use, so importing a
    backend's package (for its settings) never imports its engine."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__") or name == "backend":
            raise AttributeError(name)
        try:
            return getattr(importlib.import_module(module), name)
        except AttributeError:
            raise AttributeError(f"module {module!r} has no attribute {name!r}") from None

    return __getattr__


def as_cell_settings(backend: type[Backend], settings: Any) -> Any:
    """`settings` as the backend's typed object: a plain mapping (tests, quality code that
    loads a model by hand) goes through the backend's own validation, typed ones pass."""
    return backend.cell_settings(settings) if isinstance(settings, Mapping) else settings
