"""The transformers backend's settings: a typed model of what the YAML may say, defaults here.

Mirrors bench.config.BackendSettings (name, LOAD_TIME, axes(), fixed()) without importing it,
so bench.config can list this model in its backend union without an import cycle.
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from bench.schema import StrictModel

Device = Annotated[str, Field(pattern=r"^(cpu|mps|cuda(:\d+)?)$")]
DType = Literal["auto", "float32", "float16", "bfloat16"]
Attention = Literal["eager", "sdpa", "flash_attention_2"]


def _as_list(v: Any) -> Any:
    return v if isinstance(v, list) else [v]


class TransformersSettings(StrictModel):
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
            "attn_implementation": list(self.attn_implementation or ["default"]),
            "n_threads": self.n_threads or [physical_cores()],
        }

    def fixed(self) -> dict[str, Any]:
        return {"trust_remote_code": self.trust_remote_code}
