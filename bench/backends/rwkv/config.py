"""The rwkv backend's settings: a typed model of what the YAML may say, defaults in one place.

The session receives `RwkvCell`, the typed values of one cell (no defaults there).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from bench.backends.base import BackendSettings

# The strategy grammar the `rwkv` package accepts (its STRATEGY_REGEX): device, then the
# activation and weight type, optionally several stages joined by "->", e.g.
# "cuda fp16 *20 -> cpu fp32". bench checks it here so a typo fails at --dry-run, not at load.
STRATEGY_RE = re.compile(
    r"^(?:(?:^|->) *(?:cuda(?::\d+)?|cpu|mps|dml) (?:fp(?:16|32)|bf16)(?:i8|i4|i3)?"
    r"(?: \*\d+\+?)? *)+$"
)
Strategy = Annotated[str, Field(min_length=3, max_length=200)]


def _as_list(v: Any) -> Any:
    return v if isinstance(v, list) else [v]


class RwkvSettings(BackendSettings):
    """RWKV `.pth` checkpoints in process through the `rwkv` package (pip install 'bench[rwkv]')."""

    name: Literal["rwkv"]
    # The package's strategy string: "cpu fp32", "cpu bf16", "cuda fp16", "cuda bf16", ...
    strategy: list[Strategy] = Field(default=["cpu fp32"])
    # torch's intra-op threads; None: the number of physical cores.
    n_threads: list[Annotated[int, Field(ge=1, le=1024)]] | None = None
    # RWKV_JIT_ON: TorchScript for the layer functions (the package's default, faster); the
    # first forward then compiles, which the warm-up trials absorb.
    jit: bool = True
    # RWKV_CUDA_ON: the package's own CUDA kernels, compiled with nvcc at first import (needs
    # the CUDA toolkit); off uses plain torch ops on the GPU.
    cuda_kernels: bool = False

    LOAD_TIME: ClassVar[tuple[str, ...]] = ("strategy",)

    _lists = field_validator("strategy", "n_threads", mode="before")(_as_list)

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: list[str]) -> list[str]:
        for s in v:
            if not STRATEGY_RE.match(s):
                raise ValueError(
                    f"strategy {s!r} is not one the rwkv package accepts; write a device and "
                    "types such as 'cpu fp32', 'cpu bf16', 'cuda fp16' or 'cuda fp16i8 *10 -> "
                    "cpu fp32'"
                )
        if len(set(v)) != len(v):
            raise ValueError("'strategy' lists the same strategy twice")
        return v

    def axes(self) -> dict[str, list[Any]]:
        from bench.machine import physical_cores

        return {
            "strategy": list(self.strategy),
            # Changes per cell without a reload (torch.set_num_threads).
            "n_threads": self.n_threads or [physical_cores()],
        }

    def fixed(self) -> dict[str, Any]:
        return {"jit": self.jit, "cuda_kernels": self.cuda_kernels}

    def cell(self, swept: Mapping[str, Any]) -> RwkvCell:
        """The values of one cell: each swept setting at the cell's value (its first value
        where the cell does not say)."""
        return RwkvCell(**self.pick(swept))


@dataclass(frozen=True)
class RwkvCell:
    """One cell's rwkv settings; no defaults here: they live in RwkvSettings."""

    strategy: str
    n_threads: int
    jit: bool
    cuda_kernels: bool

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> RwkvCell:
        """Validate a cell's flat values (swept + fixed) through the config model."""
        return RwkvSettings.from_cell_values(values).cell({})
