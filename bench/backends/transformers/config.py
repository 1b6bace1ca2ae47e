"""The transformers backend's settings: a typed model of what the YAML may say, defaults here.

The session receives `TransformersCell`, the typed values of one cell (no defaults there).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from bench.backends.base import BackendSettings

Device = Annotated[str, Field(pattern=r"^(cpu|mps|cuda(:\d+)?)$")]
DType = Literal["auto", "float32", "float16", "bfloat16"]
Attention = Literal["eager", "sdpa", "flash_attention_2"]


def _as_list(v: Any) -> Any:
    return v if isinstance(v, list) else [v]


class TransformersSettings(BackendSettings):
    """Causal LMs through Hugging Face transformers (pip install 'bench[transformers]')."""

    name: Literal["transformers"]
    device: list[Device] = ["cpu"]
    # auto: float32 on CPU (bf16/fp16 matmuls are slow there), the checkpoint's dtype on a GPU.
    dtype: list[DType] = ["auto"]
    # None: transformers' default (sdpa where the model supports it).
    attn_implementation: list[Attention] | None = None
    # torch's intra-op threads; None: the number of physical cores.
    n_threads: list[Annotated[int, Field(ge=1, le=1024)]] | None = None
    # Runs Python code from the model's repository (its modelling files). Off unless the config
    # says so; Eagle 7B's Hugging Face version needs it, its .pth via the rwkv backend does not.
    trust_remote_code: bool = False

    LOAD_TIME: ClassVar[tuple[str, ...]] = ("device", "dtype", "attn_implementation")

    _lists = field_validator(
        "device", "dtype", "attn_implementation", "n_threads", mode="before"
    )(_as_list)

    def axes(self) -> dict[str, list[Any]]:
        from bench.machine import physical_cores

        return {
            "device": list(self.device),
            "dtype": list(self.dtype),
            "attn_implementation": (
                list[str](self.attn_implementation) if self.attn_implementation else ["default"]
            ),
            "n_threads": self.n_threads or [physical_cores()],
        }

    def fixed(self) -> dict[str, Any]:
        return {"trust_remote_code": self.trust_remote_code}

    def cell(self, swept: Mapping[str, Any]) -> TransformersCell:
        """The values of one cell: each swept setting at the cell's value (its first value
        where the cell does not say)."""
        return TransformersCell(**self.pick(swept))


@dataclass(frozen=True)
class TransformersCell:
    """One cell's transformers settings; no defaults here: they live in TransformersSettings.
    `attn_implementation` is "default" where the config leaves it to transformers."""

    device: str
    dtype: str
    attn_implementation: str
    n_threads: int
    trust_remote_code: bool

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> TransformersCell:
        """Validate a cell's flat values (swept + fixed) through the config model."""
        given = dict(values)
        if given.get("attn_implementation") == "default":
            del given["attn_implementation"]  # the axis' name for "not set"
        return TransformersSettings.from_cell_values(given).cell({})
