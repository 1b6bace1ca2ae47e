"""bench export: github-action-benchmark's custom JSON and Bencher's BMF JSON, on synthetic runs
(tests/test_report.py writes them with bench.results)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_report import CELLS, MACHINE_B, WARMUP_DECODE_TPS, make_run

from bench.columns import cell_label
from bench.export import BENCHER_FILE, BIGGER_FILE, SMALLER_FILE, Export
from bench.results import load_run
from bench.stats import mean_ci


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"), "20260102T030405Z-synthetic-0123abcd")


@pytest.fixture(scope="module")
def rows(run) -> list[dict]:
    return load_run(run).trials


def _names(rows: list[dict]) -> list[str]:
    """cell_label of the successful cells, in run order."""
    seen: list[str] = []
    for r in rows:
        if r["status"] == "ok" and cell_label(r) not in seen:
            seen.append(cell_label(r))
    return seen


def _measured(rows: list[dict], cell_index: int, key: str, scale: float = 1.0) -> list[float]:
    """The values of one cell's measured (non-warm-up, successful) trials."""
    cid = f"c{cell_index + 1:03d}"
    return [r[key] * scale for r in rows
            if r["cell_id"] == cid and not r["warmup"] and r["status"] == "ok"]


def _gh(run: Path, out: Path) -> tuple[list[dict], list[dict]]:
    assert Export().run([run], "github-action-benchmark", out) == 0
    return (json.loads((out / BIGGER_FILE).read_text()),
            json.loads((out / SMALLER_FILE).read_text()))


def test_github_action_benchmark_writes_bigger_and_smaller_is_better_lists(run, rows, tmp_path):
    bigger, smaller = _gh(run, tmp_path)
    assert isinstance(bigger, list) and isinstance(smaller, list)
    for entry in bigger + smaller:
        assert set(entry) <= {"name", "unit", "value", "range", "extra"}
        assert isinstance(entry["name"], str) and isinstance(entry["unit"], str)
        assert isinstance(entry["value"], float)
        assert isinstance(entry.get("range", ""), str) and isinstance(entry.get("extra", ""), str)
    assert {e["unit"] for e in bigger} == {"tokens/s"}
    assert {e["unit"] for e in smaller} == {"ms", "J/token"}
    names = _names(rows)
    assert len(names) == len(CELLS)  # the failed cell is not exported
    assert [e["name"] for e in bigger] == [f"{n} - {m}" for n in names
                                           for m in ("prefill_tps", "decode_tps")]
    assert [e["name"] for e in smaller] == [f"{n} - {m}" for n in names
                                            for m in ("ttft_ms", "j_per_token (estimate)")]


def test_github_values_are_means_of_measured_trials_and_ranges_their_95_percent_ci(
    run, rows, tmp_path
):
    bigger, smaller = _gh(run, tmp_path)
    decode = [e for e in bigger if e["name"].endswith("- decode_tps")]
    for i, entry in enumerate(decode):
        s = mean_ci(_measured(rows, i, "decode_tps"))
        assert entry["value"] == pytest.approx(s.mean)
        assert entry["value"] < WARMUP_DECODE_TPS / 10  # warm-ups left out
        assert entry["range"] == f"± {s.half_width:.4g}"
        assert "n=3 trials" in entry["extra"] and "AMD EPYC 7B13" in entry["extra"]
    ttft = [e for e in smaller if e["unit"] == "ms"]
    assert ttft[0]["value"] == pytest.approx(mean_ci(_measured(rows, 0, "ttft_s", 1000.0)).mean)
    jpt = [e for e in smaller if e["unit"] == "J/token"]
    assert jpt[0]["value"] == pytest.approx(mean_ci(_measured(rows, 0, "j_per_token")).mean)
    assert "ESTIMATED" in jpt[0]["extra"]


def test_bencher_bmf_has_one_benchmark_per_cell_with_bounds_from_the_ci(run, rows, tmp_path):
    target = tmp_path / "bmf.json"
    assert Export().run([run], "bencher", target) == 0
    doc = json.loads(target.read_text())
    assert list(doc) == _names(rows)
    for i, measures in enumerate(doc.values()):
        assert set(measures) == {"prefill-tps", "decode-tps", "ttft-ms", "j-per-token-estimate"}
        for m in measures.values():
            assert set(m) == {"value", "lower_value", "upper_value"}
            assert m["lower_value"] <= m["value"] <= m["upper_value"]
        s = mean_ci(_measured(rows, i, "decode_tps"))
        d = measures["decode-tps"]
        assert (d["value"], d["lower_value"], d["upper_value"]) == pytest.approx(
            (s.mean, s.lo, s.hi))
        assert measures["ttft-ms"]["value"] == pytest.approx(
            mean_ci(_measured(rows, i, "ttft_s", 1000.0)).mean)


def test_measured_energy_is_a_measure_of_its_own(tmp_path):
    measured = make_run(tmp_path / "runs", "20260102T030405Z-measured-0123abcd",
                        method="counter")
    assert Export().run([measured], "bencher", tmp_path / "out") == 0
    doc = json.loads((tmp_path / "out" / BENCHER_FILE).read_text())  # a folder: bencher.json
    assert all("j-per-token" in m and "j-per-token-estimate" not in m for m in doc.values())


def test_a_single_trial_gives_a_value_without_range_or_bounds(tmp_path):
    one = make_run(tmp_path / "runs", "20260102T030405Z-one-0123abcd",
                   cells=[("m", "Q4_0", 2, [50.0])], failed=False)
    bigger, _ = _gh(one, tmp_path / "gh")
    assert all("range" not in e for e in bigger) and bigger[1]["value"] == 50.0
    assert Export().run([one], "bencher", tmp_path / "b.json") == 0
    doc = json.loads((tmp_path / "b.json").read_text())
    assert next(iter(doc.values()))["decode-tps"] == {"value": 50.0}


def test_runs_of_one_machine_are_pooled_per_cell(run, tmp_path):
    again = make_run(tmp_path / "runs", "20260103T030405Z-synthetic-0123abcd")
    assert Export().run([run, again], "github-action-benchmark", tmp_path / "gh") == 0
    bigger = json.loads((tmp_path / "gh" / BIGGER_FILE).read_text())
    assert len(bigger) == 2 * len(CELLS)  # the same cells, not twice as many
    assert "n=6 trials" in bigger[0]["extra"] and again.name in bigger[0]["extra"]


def test_runs_of_two_machines_are_refused(run, tmp_path, capsys):
    other = make_run(tmp_path / "runs", "20260103T030405Z-other-0123abcd", machine=MACHINE_B)
    assert Export().run([run, other], "bencher", tmp_path / "b.json") == 2
    err = capsys.readouterr().err
    assert "different machines" in err and err.count("\n") == 1
    assert not (tmp_path / "b.json").exists()


def test_usage_errors_exit_2_with_one_sentence(run, tmp_path, capsys):
    assert Export().run([run], "csv", tmp_path / "x") == 2
    assert "unknown format 'csv'" in capsys.readouterr().err
    assert Export().run([run], "github-action-benchmark", tmp_path / "x.json") == 2
    assert "give --out a folder" in capsys.readouterr().err
    assert Export().run([tmp_path / "missing"], "bencher", tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def _damaged(src: Path, dst: Path, how: str) -> Path:
    import json as _json
    import shutil

    shutil.copytree(src, dst)
    if how == "truncated energy":
        data = (src / "trials.parquet").read_bytes()
        (dst / "energy.parquet").write_bytes(data[: len(data) // 2])
    else:
        m = _json.loads((dst / "manifest.json").read_text())
        m["cells"] = [["c001", "not an object"]]
        (dst / "manifest.json").write_text(_json.dumps(m))
    return dst


@pytest.mark.parametrize("how", ["truncated energy", "manifest shapes"])
def test_a_damaged_run_folder_is_one_sentence_and_exit_2(run, tmp_path, capsys, how):
    bad = _damaged(run, tmp_path / "bad", how)
    assert Export().run([bad], "bencher", tmp_path / "b.json") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert ("energy.parquet" if how == "truncated energy" else "cells[0]") in err
    assert not (tmp_path / "b.json").exists()


def test_a_cell_that_failed_part_way_is_neither_exported_nor_summarised(run, tmp_path):
    import json as _json
    import shutil

    from bench.report.data import load_runs, summarise

    part = tmp_path / "part"
    shutil.copytree(run, part)
    m = _json.loads((part / "manifest.json").read_text())
    m["cells"][0].update(status="error", error="worker killed after 3 trials (simulated)")
    (part / "manifest.json").write_text(_json.dumps(m))
    assert Export().run([part], "bencher", tmp_path / "b.json") == 0
    doc = json.loads((tmp_path / "b.json").read_text())
    first = cell_label(load_run(part).trials[0])
    assert first not in doc and len(doc) == len(CELLS) - 1
    cell = summarise(load_runs([part])).cells[0]
    assert cell.samples and not cell.ok and cell.stats == {}  # kept, marked, not a result


def test_a_flagged_run_says_so_in_every_entry(run, tmp_path):
    import json as _json
    import shutil

    loaded = tmp_path / "loaded"
    shutil.copytree(run, loaded)
    m = _json.loads((loaded / "manifest.json").read_text())
    m["guards"] = {"idle_cpu_load_pct": 60.0, "warnings": []}
    (loaded / "manifest.json").write_text(_json.dumps(m))
    assert Export().run([loaded], "github-action-benchmark", tmp_path / "gh") == 0
    bigger = json.loads((tmp_path / "gh" / BIGGER_FILE).read_text())
    assert all("UNRELIABLE: measured under background load (60% CPU" in e["extra"]
               for e in bigger)
    assert Export().run([run], "github-action-benchmark", tmp_path / "quiet") == 0
    quiet = json.loads((tmp_path / "quiet" / BIGGER_FILE).read_text())
    assert not any("UNRELIABLE" in e["extra"] for e in quiet)
