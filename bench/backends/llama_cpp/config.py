"""Settings of the in-process llama.cpp backend: the config model (defaults live here, only
here) and the typed values of one cell that the session receives."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from bench.backends.base import BackendSettings


def _as_list(v: Any) -> Any:
    return v if isinstance(v, list) else [v]


class LlamaCppSettings(BackendSettings):
    """llama-cpp-python in process. (Defaults go through Field: pydantic copies them per
    instance, and a bare list literal in a class body reads as a shared mutable.)"""

    name: Literal["llama-cpp"]
    # None: the number of physical cores.
    n_threads: list[Annotated[int, Field(ge=1, le=1024)]] | None = None
    n_gpu_layers: list[Annotated[int, Field(ge=-1, le=100_000)]] = Field(default=[0])
    n_ctx: list[Annotated[int, Field(ge=16, le=10_000_000)]] = Field(default=[2048])
    n_batch: list[Annotated[int, Field(ge=1, le=1_000_000)]] = Field(default=[512])
    n_ubatch: list[Annotated[int, Field(ge=1, le=1_000_000)]] = Field(default=[512])
    # auto (llama.cpp's own default): on where the device supports it. Held as null, so the
    # column stays boolean; rows record what llama.cpp chose in flash_attn_effective.
    flash_attn: list[bool | None] = Field(default=[None])
    use_mmap: bool = True
    # llama.cpp's extra weight buffers (CPU repacking, AMX), llama-bench's --repack. false is
    # the fix on a CPU that advertises AMX but traps on it (the engine dies with SIGILL).
    repack: bool = True

    LOAD_TIME: ClassVar[tuple[str, ...]] = (
        "n_gpu_layers", "n_ctx", "n_batch", "n_ubatch", "flash_attn"
    )

    _lists = field_validator(
        "n_threads", "n_gpu_layers", "n_ctx", "n_batch", "n_ubatch", mode="before"
    )(_as_list)

    @field_validator("flash_attn", mode="before")
    @classmethod
    def _flash_attn_auto(cls, v: Any) -> Any:
        return [None if x == "auto" else x for x in _as_list(v)]

    def axes(self) -> dict[str, list[Any]]:
        from bench.machine import physical_cores

        return {
            # n_threads changes per cell without a reload (llama_set_n_threads).
            "n_threads": self.n_threads or [physical_cores()],
            "n_gpu_layers": self.n_gpu_layers,
            "n_ctx": self.n_ctx,
            "n_batch": self.n_batch,
            "n_ubatch": self.n_ubatch,
            "flash_attn": self.flash_attn,
        }

    def fixed(self) -> dict[str, Any]:
        return {"use_mmap": self.use_mmap, "repack": self.repack}

    def cell(self, swept: Mapping[str, Any]) -> LlamaCppCell:
        """The values of one cell: each swept setting at the cell's value (its first value
        where the cell does not say)."""
        return LlamaCppCell(**self.pick(swept))


@dataclass(frozen=True)
class LlamaCppCell:
    """One cell's llama.cpp settings; no defaults here: they live in LlamaCppSettings."""

    n_threads: int
    n_gpu_layers: int
    n_ctx: int
    n_batch: int
    n_ubatch: int
    flash_attn: bool | None  # None: auto, llama.cpp decides (rows say what it chose)
    use_mmap: bool
    repack: bool

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> LlamaCppCell:
        """Validate a cell's flat values (swept + fixed) through the config model."""
        return LlamaCppSettings.from_cell_values(values).cell({})
