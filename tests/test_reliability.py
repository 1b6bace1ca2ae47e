"""Long sweeps survive crashes, kills and bad input without losing or duplicating rows."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import REPO, smol_config, smollm2_path, wait_for_first_cell

from bench.cli import main
from bench.results import load_run

pytestmark = pytest.mark.slow

FOUR_CELLS = smol_config(
    "rel", n_ctx="[256, 512]", workload="{prompt_tokens: [16, 32], gen_tokens: 4}",
    trials="{warmup: 0, repeat: 2}", energy="{meters: [estimate], idle_s: 0}",
)


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def only_run(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def cell_rows(run) -> dict[str, list[tuple]]:
    rows: dict[str, list[tuple]] = {}
    for r in run.trials:
        rows.setdefault(r["settings_hash"], []).append((r["trial"], r["warmup"], r["status"]))
    return {k: sorted(v) for k, v in rows.items()}


def bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench", "run", *args]


def test_kill_9_then_resume_gives_exactly_the_cells_of_an_uninterrupted_run(tmp_path):
    cfg = write(tmp_path, FOUR_CELLS)
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(ref_out)]) == 0
    reference = load_run(only_run(ref_out))

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(bench_cmd(str(cfg), "--out", str(out)), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill -9 once the first cell is on disk and the run is in the middle of the rest.
    wait_for_first_cell(out)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    folder = only_run(out)
    partial = load_run(folder)  # whatever was on disk is complete, never truncated
    assert partial.manifest["status"] == "running"
    done_before = sum(c["status"] == "ok" for c in partial.manifest["cells"])
    assert 1 <= done_before < 4

    assert main(["run", str(cfg), "--resume", str(folder)]) == 0
    resumed = load_run(folder)
    assert resumed.manifest["status"] == "finished"
    assert [c["status"] for c in resumed.manifest["cells"]] == ["ok"] * 4
    assert cell_rows(resumed) == cell_rows(reference)
    keys = [(r["cell_id"], r["trial"]) for r in resumed.trials]
    assert len(keys) == len(set(keys)) == 4 * 2
    tokens = resumed.table("tokens")
    assert len({(t["cell_id"], t["trial"], t["i"]) for t in tokens}) == len(tokens) == 4 * 2 * 4


# The engine-abort test moved to tests/test_runner_fake.py (a fake engine aborts there; the
# production code no longer has a fault-injection seam).


def test_a_truncated_model_file_is_an_error_row_not_a_crash(tmp_path):
    bad = tmp_path / "truncated.Q4_1.gguf"
    with smollm2_path().open("rb") as f:
        bad.write_bytes(f.read(2_000_000))
    body = FOUR_CELLS.replace(
        "models:\n", f"models:\n  - id: broken\n    path: {bad}\n"
    ).replace("n_ctx: [256, 512]", "n_ctx: 256")
    cfg = write(tmp_path, body)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 1
    run = load_run(only_run(tmp_path / "o"))
    by_model = {}
    for c in run.manifest["cells"]:
        by_model.setdefault(c["params"]["model"], set()).add(c["status"])
    assert by_model == {"broken": {"error"}, "smollm2-135m": {"ok"}}


def test_a_cell_over_its_timeout_is_stopped_and_the_sweep_goes_on(tmp_path):
    # The long cell needs minutes; the short one seconds, even on a loaded machine.
    body = FOUR_CELLS.replace("gen_tokens: 4", "gen_tokens: [4, 4000]").replace(
        "n_ctx: [256, 512]", "n_ctx: 4096").replace("prompt_tokens: [16, 32]", "prompt_tokens: 16")
    body += "execution: {cell_timeout_s: 30}\n"
    cfg = write(tmp_path, body)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 1
    run = load_run(only_run(tmp_path / "o"))
    cells = {c["params"]["gen_tokens"]: c for c in run.manifest["cells"]}
    assert cells[4]["status"] == "ok"
    assert cells[4000]["status"] == "error" and "cell_timeout_s" in cells[4000]["error"]


def test_sigterm_saves_finished_cells_and_prints_the_resume_command(tmp_path):
    cfg = write(tmp_path, FOUR_CELLS)
    out = tmp_path / "out"
    proc = subprocess.Popen(bench_cmd(str(cfg), "--out", str(out)), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "300"})
    wait_for_first_cell(out)
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, text
    assert "--resume" in text and "interrupted" in text
    run = load_run(only_run(out))
    assert run.manifest["status"] == "interrupted"
    assert any(c["status"] == "ok" for c in run.manifest["cells"])


def test_adaptive_repetitions_stop_at_the_ci_target_or_the_maximum(tmp_path):
    loose = FOUR_CELLS.replace("n_ctx: [256, 512]", "n_ctx: 256").replace(
        "prompt_tokens: [16, 32]", "prompt_tokens: 16").replace(
        "repeat: 2}", "repeat: {min: 2, max: 5, target_ci_pct: 1000}}")
    tight = loose.replace("target_ci_pct: 1000", "target_ci_pct: 0.0001")
    counts = []
    for i, body in enumerate((loose, tight)):
        cfg = write(tmp_path, body + "execution: {isolate: false}\n", f"c{i}.yaml")
        assert main(["run", str(cfg), "--out", str(tmp_path / f"o{i}")]) == 0
        counts.append(len(load_run(only_run(tmp_path / f"o{i}")).trials))
    assert counts == [2, 5]


def test_resume_refuses_a_folder_from_a_newer_bench(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"format_version": 99}))
    cfg = write(tmp_path, FOUR_CELLS)
    assert main(["run", str(cfg), "--resume", str(folder)]) == 2
    assert "newer bench" in capsys.readouterr().err


def test_no_shell_anywhere_in_the_package():
    for path in (REPO / "bench").rglob("*.py"):
        text = path.read_text()
        assert "shell=True" not in text, path
        assert "os.system(" not in text, path
