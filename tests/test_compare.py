"""`bench compare` on the golden run folders in tests/data/compare/ (see make_compare_data.py)."""
from __future__ import annotations

import importlib.util
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.compare import Compare, CompareError, Gate, parse_threshold_pct
from bench.results import load_run, write_json, write_table
from bench.stats import mean_ci

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "compare"
BASE = DATA / "base"


def compare(baseline: Any, candidate: Path, **kw: Any) -> tuple[int, str, str]:
    # The golden data were written around a 5 % threshold (10 % changes, 0.5 % noise); the
    # default is tested on its own below.
    kw.setdefault("threshold_pct", 5.0)
    out, err = io.StringIO(), io.StringIO()
    base = baseline if isinstance(baseline, list) else [baseline]
    code = Compare().run(base, candidate, out=out, err=err, **kw)
    return code, out.getvalue(), err.getvalue()


def compare_json(baseline: Any, candidate: Path, **kw: Any) -> tuple[int, dict[str, Any]]:
    code, out, err = compare(baseline, candidate, fmt="json", **kw)
    assert "Traceback" not in err
    return code, json.loads(out)


def row(doc: dict[str, Any], threads: int, metric: str) -> dict[str, Any]:
    found = [r for r in doc["rows"] if f" t={threads} " in r["cell"] and r["metric"] == metric]
    assert len(found) == 1, (threads, metric, doc["rows"])
    return found[0]


def marks(doc: dict[str, Any]) -> set[str]:
    return {r["mark"] for r in doc["rows"]}


def copy_run(
    src: Path, dst: Path, edit: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> Path:
    """A copy of a run with its trials edited (None drops one) and its manifest to match."""
    run = load_run(src)
    rows = [e for e in (edit(dict(r)) for r in run.trials) if e is not None]
    manifest = dict(run.manifest)
    keys = {r["cell_key"] for r in rows}
    manifest["cells"] = [c for c in manifest["cells"] if c["cell_key"] in keys]
    dst.mkdir(parents=True)
    write_json(dst / "manifest.json", manifest)
    write_table(dst / "trials.parquet", rows)
    return dst


def mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


BASE_T2_DECODE = [101.2, 99.8, 100.5, 100.9, 99.4, 100.2]

# --- verdicts ----------------------------------------------------------------------------------


def test_identical_rerun_is_all_unchanged_and_exits_0():
    code, doc = compare_json(BASE, DATA / "same")
    assert code == 0
    assert marks(doc) == {"~"}
    assert [r["metric"] for r in doc["rows"][:4]] == [
        "decode_tps", "prefill_tps", "ttft_s", "j_per_token"
    ]
    assert doc["summary"]["verdict"] == "no regression"
    assert doc["summary"]["unchanged"] == 8


def test_warmups_and_failed_trials_are_not_samples():
    # base t=2 has a cold warm-up at 40 tok/s and a failed trial besides its six measured ones.
    _, doc = compare_json(BASE, DATA / "same")
    r = row(doc, 2, "decode_tps")
    assert r["baseline_n"] == 6
    assert r["baseline_mean"] == pytest.approx(mean(BASE_T2_DECODE), rel=1e-12)


def test_ten_percent_slower_decode_with_low_noise_is_a_regression():
    code, doc = compare_json(BASE, DATA / "slower")
    assert code == 1
    decode = row(doc, 2, "decode_tps")
    assert decode["mark"] == "+"
    assert decode["better"] == "higher"
    assert decode["change_pct"] == pytest.approx(-10.0, abs=1e-9)
    assert decode["test"] == "mann-whitney-exact"
    assert decode["p_value"] == pytest.approx(2 / 924, rel=1e-12)  # complete separation, 6 vs 6
    assert decode["significant"] is True
    # Same power, slower decode: more joules per token, also flagged.
    assert row(doc, 2, "j_per_token")["mark"] == "+"
    assert row(doc, 2, "j_per_token")["better"] == "lower"
    assert {row(doc, 2, m)["mark"] for m in ("prefill_tps", "ttft_s")} == {"~"}
    assert {r["mark"] for r in doc["rows"] if " t=4 " in r["cell"]} == {"~"}
    assert (doc["summary"]["verdict"], doc["summary"]["worse"]) == ("regression", 2)


def test_warn_only_still_reports_the_regression_but_exits_0():
    code, out, _ = compare(BASE, DATA / "slower", warn_only=True)
    assert code == 0
    assert "REGRESSION (warn only)" in out
    code, doc = compare_json(BASE, DATA / "slower", warn_only=True)
    assert code == 0 and doc["summary"]["exit_code"] == 0
    assert row(doc, 2, "decode_tps")["mark"] == "+"


def test_a_threshold_above_the_change_absorbs_it():
    for threshold in (15.0, "15%"):
        code, doc = compare_json(BASE, DATA / "slower", threshold_pct=threshold)
        assert code == 0
        decode = row(doc, 2, "decode_tps")
        assert decode["significant"] is True and decode["mark"] == "~"


def test_a_speedup_is_marked_better_and_passes():
    code, doc = compare_json(DATA / "slower", BASE)
    assert code == 0
    assert row(doc, 2, "decode_tps")["mark"] == "-"
    assert row(doc, 2, "j_per_token")["mark"] == "-"
    assert doc["summary"]["better"] == 2


def test_a_ten_percent_change_buried_in_noise_is_not_significant():
    code, doc = compare_json(BASE, DATA / "noisy")
    assert code == 0
    decode = row(doc, 2, "decode_tps")
    assert decode["change_pct"] == pytest.approx(-10.0, abs=0.1)
    assert decode["significant"] is False
    assert decode["mark"] == "~"
    assert decode["p_value"] == pytest.approx(1.0)


def test_three_trials_per_side_use_confidence_interval_overlap():
    code, doc = compare_json(DATA / "few_base", DATA / "few_slower")
    assert code == 1
    assert {r["test"] for r in doc["rows"]} == {"ci-overlap"}
    assert {r["p_value"] for r in doc["rows"]} == {None}
    decode = row(doc, 2, "decode_tps")
    assert (decode["mark"], decode["significant"]) == ("+", True)
    assert row(doc, 4, "decode_tps")["mark"] == "~"
    _, out, _ = compare(DATA / "few_base", DATA / "few_slower")
    assert " CI " in out


def test_a_single_candidate_trial_cannot_be_significant(tmp_path):
    def first_trial_only(r: dict[str, Any]) -> dict[str, Any] | None:
        return r if r["warmup"] or r["trial"] == 1 else None

    cand = copy_run(DATA / "slower", tmp_path / "one", first_trial_only)
    code, doc = compare_json(BASE, cand)
    decode = row(doc, 2, "decode_tps")
    assert decode["candidate_n"] == 1 and decode["candidate_sd"] is None
    assert decode["test"] == "ci-overlap"
    assert decode["mark"] == "~"
    assert code == 0


# --- not comparable ----------------------------------------------------------------------------


def test_changed_settings_make_those_cells_not_comparable():
    code, doc = compare_json(BASE, DATA / "mismatch")
    assert code == 0
    assert {r["mark"] for r in doc["rows"] if " t=2 " in r["cell"]} == {"~"}
    only_cand = [r for r in doc["rows"] if " t=8 " in r["cell"]]
    only_base = [r for r in doc["rows"] if " t=4 " in r["cell"]]
    assert only_cand and {(r["mark"], r["reason"]) for r in only_cand} == {
        ("x", "only in candidate")
    }
    assert only_base and {(r["mark"], r["reason"]) for r in only_base} == {
        ("x", "only in baseline")
    }
    assert only_cand[0]["candidate_mean"] is not None and only_cand[0]["baseline_mean"] is None


def test_another_machine_makes_every_row_not_comparable_and_exits_2():
    code, out, err = compare(BASE, DATA / "other_machine")
    assert code == 2
    assert "different machine" in out and "x" in out  # the report is still printed
    assert err.count("\n") == 1 and "different machine" in err and "Traceback" not in err
    code, doc = compare_json(BASE, DATA / "other_machine")
    assert code == 2
    assert marks(doc) == {"x"}
    assert all("different machine" in r["reason"] for r in doc["rows"])
    assert all(r["change_pct"] is None for r in doc["rows"])
    assert "9d1e7b3c5a2f4e80" in doc["summary"]["machine"]


def test_warn_only_does_not_hide_a_data_error():
    code, _, _ = compare(BASE, DATA / "other_machine", warn_only=True)
    assert code == 2


def test_energy_measured_another_way_is_not_comparable():
    code, doc = compare_json(BASE, DATA / "estimate")
    assert code == 0
    energy = [r for r in doc["rows"] if r["metric"] == "j_per_token"]
    assert len(energy) == 2
    assert {r["mark"] for r in energy} == {"x"}
    assert energy[0]["reason"] == "energy method differs: baseline counter, candidate estimate"
    assert {r["mark"] for r in doc["rows"] if r["metric"] != "j_per_token"} == {"~"}


def test_a_cell_that_failed_in_the_candidate_is_not_comparable(tmp_path):
    def fail_t4(r: dict[str, Any]) -> dict[str, Any]:
        if r["n_threads"] == 4 and not r["warmup"]:
            r["status"], r["error"] = "error", "out of memory (simulated)"
        return r

    cand = copy_run(DATA / "same", tmp_path / "failed", fail_t4)
    code, doc = compare_json(BASE, cand)
    t4 = [r for r in doc["rows"] if " t=4 " in r["cell"]]
    assert {r["mark"] for r in t4} == {"x"}
    assert "no successful trials" in t4[0]["reason"] and "candidate" in t4[0]["reason"]
    assert code == 0  # the t=2 cell was still compared


def test_no_matching_cell_is_a_data_error(tmp_path):
    def t2_only(r: dict[str, Any]) -> dict[str, Any] | None:
        return r if r["n_threads"] == 2 else None

    def t4_only(r: dict[str, Any]) -> dict[str, Any] | None:
        return r if r["n_threads"] == 4 else None

    base = copy_run(BASE, tmp_path / "b", t2_only)
    cand = copy_run(DATA / "same", tmp_path / "c", t4_only)
    code, out, err = compare(base, cand)
    assert code == 2
    assert err.startswith("bench compare: nothing to compare: no cell of")
    assert "only in baseline" in out and "only in candidate" in out


def test_a_cell_listed_in_the_manifest_without_trials_counts_as_failed(tmp_path):
    def no_t4_trials(r: dict[str, Any]) -> dict[str, Any] | None:
        return None if r["n_threads"] == 4 else r

    cand = copy_run(DATA / "same", tmp_path / "c", no_t4_trials)
    manifest = json.loads((DATA / "same" / "manifest.json").read_text())
    write_json(cand / "manifest.json", manifest)  # still lists the t=4 cell, as after a crash
    _, doc = compare_json(BASE, cand)
    t4 = [r for r in doc["rows"] if " t=4 " in r["cell"]]
    assert t4 and {r["mark"] for r in t4} == {"x"}
    assert t4[0]["reason"] == "no successful trials with this metric in the candidate"


def test_default_metrics_leave_out_j_per_token_without_energy(tmp_path):
    def no_energy(r: dict[str, Any]) -> dict[str, Any]:
        r["j_per_token"], r["energy_method"] = None, ""
        return r

    cand = copy_run(DATA / "same", tmp_path / "no-energy", no_energy)
    code, doc = compare_json(BASE, cand)
    assert code == 0
    assert {r["metric"] for r in doc["rows"]} == {"decode_tps", "prefill_tps", "ttft_s"}
    # Asked for explicitly, it is a row that says why it cannot be judged.
    code, doc = compare_json(BASE, cand, metrics=["j_per_token"])
    assert marks(doc) == {"x"}
    assert "no successful trials with this metric in the candidate" in doc["rows"][0]["reason"]


def test_explicit_metrics_choose_the_rows_and_their_direction():
    code, doc = compare_json(BASE, DATA / "slower", metrics=["e2e_s", "itl_ms_p99", "e2e_tps"])
    assert [r["metric"] for r in doc["rows"][:3]] == ["e2e_s", "itl_ms_p99", "e2e_tps"]
    assert [r["better"] for r in doc["rows"][:3]] == ["lower", "lower", "higher"]
    assert row(doc, 2, "itl_ms_p99")["mark"] == "+"
    assert code == 1


# --- pooled baselines --------------------------------------------------------------------------


def test_a_folder_of_runs_is_pooled_per_cell():
    code, doc = compare_json(DATA / "pooled", DATA / "slower")
    assert code == 1
    assert doc["summary"]["baseline_runs"] == [
        "20250227T120000Z-compare-main-1", "20250228T120000Z-compare-main-2"
    ]
    decode = row(doc, 2, "decode_tps")
    assert decode["baseline_n"] == 12
    assert decode["test"] == "mann-whitney-exact"
    assert decode["p_value"] == pytest.approx(2 / math.comb(18, 6), rel=1e-12)
    assert decode["mark"] == "+"


def test_several_run_folders_pool_like_a_folder_of_runs():
    runs = sorted(p for p in (DATA / "pooled").iterdir())
    _, from_list = compare_json(runs, DATA / "slower")
    _, from_folder = compare_json(DATA / "pooled", DATA / "slower")
    assert from_list == from_folder


def test_last_keeps_only_the_newest_baseline_runs():
    _, doc = compare_json(DATA / "pooled", DATA / "slower", last=1)
    assert doc["summary"]["baseline_runs"] == ["20250228T120000Z-compare-main-2"]
    assert row(doc, 2, "decode_tps")["baseline_n"] == 6


def test_baselines_from_different_machines_are_refused():
    code, out, err = compare([BASE, DATA / "other_machine"], DATA / "same")
    assert code == 2
    assert out == ""
    assert "baseline runs come from different machines" in err
    assert err.count("\n") == 1


# --- usage and data errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("baseline", "candidate", "kw", "message"),
    [
        (DATA / "missing", DATA / "same", {}, "does not exist"),
        (BASE, DATA / "missing", {}, "does not exist"),
        (BASE, DATA / "pooled", {}, "holds several runs"),
        (BASE, DATA / "same" / "manifest.json", {}, "not a bench run folder"),
        (BASE, DATA / "same", {"metrics": ["tokens_per_fortnight"]}, "unknown metric"),
        (BASE, DATA / "same", {"fmt": "html"}, "unknown format"),
        (BASE, DATA / "same", {"threshold_pct": -1.0}, "threshold"),
        (BASE, DATA / "same", {"threshold_pct": "five"}, "threshold"),
        (BASE, DATA / "same", {"alpha": 1.5}, "alpha"),
    ],
)
def test_usage_and_data_errors_exit_2_with_one_sentence(baseline, candidate, kw, message):
    code, out, err = compare(baseline, candidate, **kw)
    assert code == 2
    assert out == ""
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_folder_without_runs_is_refused(tmp_path):
    code, _, err = compare(tmp_path, DATA / "same")
    assert code == 2
    assert "neither a bench run folder nor a folder of run folders" in err


def test_the_default_threshold_is_twice_the_runners_cv_limit(tmp_path):
    from bench.compare import DEFAULT_THRESHOLD_PCT
    from bench.config import Execution

    assert Gate().threshold_pct == DEFAULT_THRESHOLD_PCT == 2 * Execution().max_cv_pct

    def eight_pct_slower(r: dict[str, Any]) -> dict[str, Any]:
        if r.get("decode_tps") is not None:  # the failed trial has none
            r["decode_tps"] = r["decode_tps"] * 0.92
        return r

    cand = copy_run(BASE, tmp_path / "slower8", eight_pct_slower)
    out, err = io.StringIO(), io.StringIO()
    code = Compare().run([BASE], cand, fmt="json", out=out, err=err)  # the default threshold
    doc = json.loads(out.getvalue())
    assert code == 0 and doc["summary"]["threshold_pct"] == 10.0
    decode = row(doc, 2, "decode_tps")
    assert decode["significant"] is True and decode["mark"] == "~"  # real, but within 10 %
    code, doc = compare_json(BASE, cand)  # at 5 % the same change is a regression
    assert code == 1 and row(doc, 2, "decode_tps")["mark"] == "+"


def test_gate_parses_a_percentage():
    assert Gate.parse("5%") == Gate(5.0, 0.05)
    assert Gate.parse(" 2.5 % ", alpha=0.01) == Gate(2.5, 0.01)
    assert parse_threshold_pct("10") == 10.0
    with pytest.raises(CompareError):
        Gate.parse("5 percent")
    with pytest.raises(ValueError):
        parse_threshold_pct("-3%")


def test_gate_flips_worse_with_the_metric_direction():
    gate = Gate(5.0)
    base = [1.00, 1.01, 0.99, 1.02, 0.98]
    higher = [x * 1.2 for x in base]
    assert gate.judge(True, base, higher).mark == "-"  # more tokens/s: better
    assert gate.judge(False, base, higher).mark == "+"  # more seconds: worse


# --- output formats ----------------------------------------------------------------------------


def test_markdown_has_a_verdict_line_and_the_table():
    code, out, _ = compare(BASE, DATA / "slower", fmt="markdown")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("**bench compare: REGRESSION: 2 worse, 0 better, 6 unchanged")
    assert "| cell | metric | unit | baseline | candidate | change | test | mark | note |" in lines
    decode = next(line for line in lines if "| decode_tps |" in line and "t=2" in line)
    assert "-10.0%" in decode and "p=0.0022" in decode and "`+`" in decode
    # ± is the 95% CI half width (t(5) = 2.571 x sd / sqrt(6)), not the sd (0.67).
    ci = mean_ci(BASE_T2_DECODE)
    assert ci.half_width == pytest.approx(2.5706 * ci.sd / math.sqrt(6), rel=1e-4)
    assert f"{ci.mean:.2f} ± {ci.half_width:.2f} (n=6)" in decode  # the mean to the same place
    assert "95% confidence interval" in out


def test_table_is_plain_text_off_a_terminal_and_ignores_columns(monkeypatch):
    _, first, _ = compare(BASE, DATA / "slower")
    monkeypatch.setenv("COLUMNS", "40")
    _, second, _ = compare(BASE, DATA / "slower")
    assert first == second
    assert "\x1b[" not in first
    decode = next(line for line in first.splitlines() if "decode_tps" in line and "t=2" in line)
    assert "-10.0%" in decode and "p=0.0022" in decode and " + " in decode
    assert first.splitlines()[-1].startswith("bench compare: REGRESSION")


def test_json_is_strict_and_carries_the_summary():
    code, out, _ = compare(BASE, DATA / "slower", fmt="json")
    doc = json.loads(out)  # no NaN or Infinity
    assert "NaN" not in out and "Infinity" not in out
    assert doc["summary"]["exit_code"] == code == 1
    assert doc["summary"]["threshold_pct"] == 5.0 and doc["summary"]["alpha"] == 0.05
    assert doc["summary"]["candidate_run"] == "20250303T120000Z-compare-slower"
    assert len(doc["rows"]) == 8
    assert set(doc["rows"][0]) >= {
        "cell_key", "cell", "metric", "baseline_mean", "candidate_mean", "change_pct", "test",
        "p_value", "mark", "reason",
    }


# --- validity flags: verdicts you can act on ---------------------------------------------------

LOAD_WARNING = ("background CPU load was 51% during the idle baseline (above 10%): other programs "
                "were running")
CV_WARNING = ("decode t/s varies 12.0% across trials (coefficient of variation above 5%): the "
              "machine was noisy")


def flagged_copy(
    src: Path, dst: Path, manifest_edit: Callable[[dict[str, Any]], None],
    trial_edit: Callable[[dict[str, Any]], dict[str, Any] | None] = lambda r: r,
) -> Path:
    """A copy of a run whose manifest (and trials) record what the runner records when it sees
    background load, a noisy cell or a throttled device."""
    copy_run(src, dst, trial_edit)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest_edit(manifest)
    write_json(dst / "manifest.json", manifest)
    return dst


def loaded(m: dict[str, Any]) -> None:
    m["guards"] = {"idle_cpu_load_pct": 51.0, "warnings": [LOAD_WARNING]}


def test_a_regression_measured_under_background_load_is_unreliable_not_a_regression(tmp_path):
    cand = flagged_copy(DATA / "slower", tmp_path / "loaded", loaded)
    code, out, err = compare(BASE, cand)
    assert code == 3
    assert "REGRESSION" not in out
    assert out.splitlines()[-1].startswith(
        "bench compare: UNRELIABLE: candidate measured under background load (51% CPU")
    assert err.startswith("bench compare: unreliable: candidate measured under background load")
    assert err.count("\n") == 1 and "Traceback" not in err
    code, doc = compare_json(BASE, cand)
    assert (code, doc["summary"]["verdict"], doc["summary"]["exit_code"]) == (3, "unreliable", 3)
    assert doc["summary"]["headline"].startswith("unreliable: candidate measured under "
                                                 "background load")
    decode = row(doc, 2, "decode_tps")
    # The numbers stay: the row says what it would have been, and why it is not trusted.
    assert (decode["mark"], decode["unflagged_mark"]) == ("?", "+")
    assert decode["change_pct"] == pytest.approx(-10.0, abs=1e-9)
    assert "candidate measured under background load" in decode["reason"]
    _, md, _ = compare(BASE, cand, fmt="markdown")
    assert md.startswith("**bench compare: UNRELIABLE: candidate measured under background load")
    assert "`?+`" in md


def test_background_load_in_a_pooled_baseline_run_names_that_run(tmp_path):
    pooled = tmp_path / "pooled"
    pooled.mkdir()
    for p in sorted((DATA / "pooled").iterdir()):
        copy_run(p, pooled / p.name, lambda r: r)
    flagged_copy(DATA / "pooled" / "20250228T120000Z-compare-main-2",
                 tmp_path / "tmp-main-2", loaded)
    import shutil
    shutil.rmtree(pooled / "20250228T120000Z-compare-main-2")
    shutil.move(tmp_path / "tmp-main-2", pooled / "20250228T120000Z-compare-main-2")
    code, doc = compare_json(pooled, DATA / "same")
    assert code == 3
    assert doc["summary"]["unreliable_because"][0].startswith(
        "baseline 20250228T120000Z-compare-main-2 measured under background load")


def test_a_noisy_cell_makes_only_its_own_rows_unreliable(tmp_path):
    def noisy_t2(m: dict[str, Any]) -> None:
        m["cells"][0]["warnings"] = [CV_WARNING]

    base = flagged_copy(BASE, tmp_path / "noisy-base", noisy_t2)
    code, doc = compare_json(base, DATA / "same")
    assert code == 3
    assert {r["mark"] for r in doc["rows"] if " t=2 " in r["cell"]} == {"?"}
    assert {r["mark"] for r in doc["rows"] if " t=4 " in r["cell"]} == {"~"}
    assert "baseline measured decode t/s varies 12.0% across trials" in row(doc, 2, "decode_tps")[
        "reason"]


def test_throttled_trials_flag_their_cell(tmp_path):
    state = json.dumps({"nvml": {"gpu0": {"throttle_reasons": ["sw_thermal_slowdown"]}}})
    idle = json.dumps({"nvml": {"gpu0": {"throttle_reasons": ["gpu_idle"]}}})

    def throttle_t4(r: dict[str, Any]) -> dict[str, Any]:
        r["meter_state_end"] = state if r["n_threads"] == 4 else idle
        return r

    cand = flagged_copy(DATA / "same", tmp_path / "hot", lambda m: None, throttle_t4)
    code, doc = compare_json(BASE, cand)
    assert code == 3
    assert "candidate measured throttled (sw_thermal_slowdown)" in row(doc, 4, "decode_tps")[
        "reason"]
    # An idle GPU's clock reason is not throttling.
    assert {r["mark"] for r in doc["rows"] if " t=2 " in r["cell"]} == {"~"}


def test_estimated_energy_is_left_out_by_default_and_unreliable_when_asked_for(tmp_path):
    def estimated(r: dict[str, Any]) -> dict[str, Any]:
        r["energy_method"] = "estimate"
        return r

    base = copy_run(BASE, tmp_path / "est-base", estimated)
    code, doc = compare_json(base, DATA / "estimate")
    assert code == 0
    assert "j_per_token" not in {r["metric"] for r in doc["rows"]}
    code, doc = compare_json(base, DATA / "estimate", metrics=["j_per_token", "decode_tps"])
    assert code == 3
    energy = [r for r in doc["rows"] if r["metric"] == "j_per_token"]
    assert {r["mark"] for r in energy} == {"?"}
    assert "estimated energy" in energy[0]["reason"]
    assert {r["mark"] for r in doc["rows"] if r["metric"] == "decode_tps"} == {"~"}


def test_warn_only_reports_an_unreliable_comparison_but_exits_0(tmp_path):
    cand = flagged_copy(DATA / "slower", tmp_path / "loaded", loaded)
    code, out, _ = compare(BASE, cand, warn_only=True)
    assert code == 0
    assert "UNRELIABLE" in out and "(warn only)" in out


def test_flagged_runs_of_another_machine_are_still_not_comparable(tmp_path):
    cand = flagged_copy(DATA / "other_machine", tmp_path / "loaded", loaded)
    code, _, _ = compare(BASE, cand)
    assert code == 2


LOADED_VM = HERE / "data" / "loaded_vm"


def test_reruns_on_the_loaded_shared_vm_are_unreliable_never_a_regression():
    """Eleven real runs of one config (tests/data/loaded_vm/noise.yaml) on this project's shared
    2-core VM while other builds and tests ran: every pair is called unreliable, none a
    regression, although their medians moved far beyond any threshold."""
    import itertools
    import statistics

    from bench.compare import compare_runs

    runs = [load_run(p) for p in sorted(LOADED_VM.iterdir()) if p.is_dir()]
    assert len(runs) >= 10
    medians = [statistics.median(r["decode_tps"] for r in run.trials
                                 if r["status"] == "ok" and not r["warmup"]
                                 and r["n_threads"] == 1) for run in runs]
    assert max(medians) / min(medians) > 2  # the noise is real: no threshold would absorb it
    verdicts = set()
    for a, b in itertools.permutations(runs, 2):
        c = compare_runs([a], b, metrics=["decode_tps"])
        verdicts.add(c.verdict())
        assert c.headline().startswith("unreliable: candidate measured under background load")
    assert verdicts == {"unreliable"}


# --- damaged run folders -------------------------------------------------------------------------


def test_a_truncated_side_table_is_one_sentence_and_exit_2(tmp_path):
    cand = copy_run(DATA / "same", tmp_path / "cut", lambda r: r)
    whole = tmp_path / "whole.parquet"
    write_table(whole, [{"run_id": "x", "cell_id": "c001", "trial": 1, "joules": 1.0}] * 50)
    data = whole.read_bytes()
    (cand / "energy.parquet").write_bytes(data[: len(data) // 2])
    code, out, err = compare(BASE, cand)
    assert code == 2 and out == ""
    assert "energy.parquet" in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(("field", "value"), [
    ("cells", "c001"), ("guards", ["busy"]), ("machine", 7), ("cells", [3]),
    ("cells", [{"cell_id": "c001", "params": "t=2"}]),
])
def test_a_manifest_with_fields_of_the_wrong_shape_is_one_sentence_and_exit_2(
    tmp_path, field, value
):
    def damage(m: dict[str, Any]) -> None:
        m[field] = value

    cand = flagged_copy(DATA / "same", tmp_path / "bad", damage)
    code, out, err = compare(BASE, cand)
    assert code == 2 and out == ""
    assert "manifest.json" in err and repr(field) in err or "cells[0]" in err
    assert err.count("\n") == 1 and "Traceback" not in err


# --- the golden data ---------------------------------------------------------------------------


def test_golden_folders_are_what_the_generator_writes(tmp_path):
    script = HERE / "make_compare_data.py"
    spec = importlib.util.spec_from_file_location("make_compare_data", script)
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.main(tmp_path / "compare")
    committed = sorted(p.parent.relative_to(DATA) for p in DATA.rglob("manifest.json"))
    fresh = sorted(p.parent.relative_to(tmp_path / "compare")
                   for p in (tmp_path / "compare").rglob("manifest.json"))
    assert committed == fresh
    for rel in committed:
        a, b = load_run(DATA / rel), load_run(tmp_path / "compare" / rel)
        assert a.manifest == b.manifest, rel
        assert a.trials == b.trials, rel
