"""The results store on real DuckDB files: idempotent ingest, keys, column drift, SQL output."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import smol_config

from bench.cli import main
from bench.results import RunWriter, load_run
from bench.store import GitInfo, Store, git_of_cwd, query

CELL_KEY = "k" * 16


def make_run(
    parent: Path,
    run_id: str,
    *,
    started: str = "2026-01-01T00:00:00+00:00",
    machine: str = "desk",
    machine_id: str = "m1",
    commit: str | None = "a" * 40,
    decode: list[float] | None = None,
    cell_key: str = CELL_KEY,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A run folder written by bench's own writer: one cell whose measured trials have these
    decode rates (warm-up first)."""
    decode = decode if decode is not None else [100.0, 101.0, 99.0]
    manifest = {
        "format_version": 1,
        "run_id": run_id,
        "started_utc": started,
        "finished_utc": started,
        "status": "finished",
        "config": {"name": "hist"},
        "config_hash": "c" * 64,
        "machine": {"hostname": machine, "id": machine_id, "cpu_model": "test cpu"},
        "software": {"python": "3.11", "bench": "0.1.0", "bench_git_commit": commit,
                     "bench_git_dirty": False, "llama_cpp_python": "0.3.36",
                     "llama_cpp_system_info": "AVX = 1"},
        "cells": [{"cell_id": "c001", "cell_key": cell_key, "settings_hash": "s" * 16,
                   "params": {"model": "smollm2-135m", "backend": "llama-cpp",
                              "prompt_tokens": 16, "gen_tokens": 8},
                   "status": "ok", "error": None, "warnings": []}],
    }
    w = RunWriter(parent / run_id, manifest)
    base = {"run_id": run_id, "cell_id": "c001", "cell_key": cell_key, "model": "smollm2-135m",
            "backend": "llama-cpp", "prompt_tokens": 16, "gen_tokens": 8, "status": "ok",
            "error": None, "energy_method": "estimate"}
    rows = [{**base, "trial": 0, "warmup": True, "decode_tps": decode[0] * 0.9,
             "prefill_tps": 500.0, **(extra or {})}]
    rows += [{**base, "trial": i + 1, "warmup": False, "decode_tps": v, "prefill_tps": 500.0,
              **(extra or {})} for i, v in enumerate(decode)]
    w.add("trials", rows)
    w.add("energy", [{"run_id": run_id, "cell_id": "c001", "trial": 1, "phase": "decode",
                      "energy_j": 1.5}])
    w.flush()
    return parent / run_id


def count(store: Path, sql: str) -> int:
    with Store(store, read_only=True) as s:
        return int(s.query(sql)[1][0][0])


def test_adding_the_same_run_twice_stores_it_once(tmp_path):
    run = make_run(tmp_path / "runs", "r1")
    db = tmp_path / "bench.duckdb"
    with Store(db) as s:
        first = s.add_run(run)
    with Store(db) as s:  # a new connection: what the first wrote is on disk
        second = s.add_run(run)
    assert (first.outcome, second.outcome) == ("added", "unchanged")
    assert first.trials == second.trials == 4
    assert count(db, "SELECT count(*) FROM runs") == 1
    assert count(db, "SELECT count(*) FROM trials") == 4
    assert count(db, "SELECT count(*) FROM cells") == 1
    assert count(db, "SELECT count(*) FROM energy") == 1


def test_a_run_that_changed_since_replaces_its_rows(tmp_path):
    run = make_run(tmp_path / "runs", "r1")
    db = tmp_path / "bench.duckdb"
    with Store(db) as s:
        s.add_run(run)
        old = load_run(run)
        more = {**old.trials[-1], "trial": 9, "decode_tps": 77.0}
        RunWriter.reopen(run, old.manifest, {"trials": [*old.trials, more]})
        again = s.add_run(run)
    assert again.outcome == "updated" and again.trials == 5
    assert count(db, "SELECT count(*) FROM runs") == 1
    assert count(db, "SELECT count(*) FROM trials") == 5
    # The energy table was dropped from the folder by the rewrite: no stale rows stay behind.
    assert count(db, "SELECT count(*) FROM energy") == 0


def test_a_run_is_keyed_by_machine_config_versions_commit_and_time(tmp_path):
    run = make_run(tmp_path / "runs", "r1", started="2026-03-04T05:06:07+00:00")
    db = tmp_path / "bench.duckdb"
    with Store(db) as s:
        s.add_run(run, GitInfo("b" * 40, "main", False, "given"))
        (row,) = s.records("SELECT * FROM runs")
        (trial,) = s.records("SELECT machine, machine_id, cell_key FROM trials WHERE trial = 1")
    assert row["machine"] == "desk" and row["machine_id"] == "m1"
    assert row["config_name"] == "hist" and row["config_hash"] == "c" * 64
    assert row["bench_version"] == "0.1.0"
    assert json.loads(row["engine_versions"]) == {"llama_cpp_python": "0.3.36"}
    assert (row["git_commit"], row["git_branch"], row["git_source"]) == ("b" * 40, "main", "given")
    assert str(row["started_utc"]) == "2026-03-04 05:06:07"
    assert trial == {"machine": "desk", "machine_id": "m1", "cell_key": CELL_KEY}


def test_without_a_given_commit_the_manifest_says_which(tmp_path):
    db = tmp_path / "bench.duckdb"
    with Store(db) as s:
        s.add_run(make_run(tmp_path / "runs", "r1", commit="d" * 40))
        s.add_run(make_run(tmp_path / "runs", "r2", commit=None))
        rows = s.records("SELECT run_id, git_commit, git_source FROM runs ORDER BY run_id")
    assert rows == [
        {"run_id": "r1", "git_commit": "d" * 40, "git_source": "bench checkout"},
        {"run_id": "r2", "git_commit": None, "git_source": "none"},
    ]


def test_git_of_the_working_directory_or_none_stated(tmp_path):
    assert git_of_cwd(tmp_path) == GitInfo(None, None, None, "none")
    repo = tmp_path / "repo"
    repo.mkdir()
    env = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "feature", str(repo)], check=True)
    (repo / "f").write_text("x")
    subprocess.run(["git", "-C", str(repo), "add", "f"], check=True)
    subprocess.run(["git", "-C", str(repo), *env, "commit", "-qm", "m"], check=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert git_of_cwd(repo) == GitInfo(head, "feature", False, "cwd at run time")


def test_a_column_that_changes_type_between_runs_keeps_its_values(tmp_path):
    db = tmp_path / "bench.duckdb"
    with Store(db) as s:
        s.add_run(make_run(tmp_path / "runs", "r1", extra={"n_new": 2, "only_null": None}))
        s.add_run(make_run(tmp_path / "runs", "r2", extra={"n_new": 2.5, "only_null": "x"}))
        vals = s.query("SELECT DISTINCT n_new, only_null FROM trials ORDER BY n_new")[1]
    assert vals == [(2.0, None), (2.5, "x")]


def test_store_commands_print_tables_csv_json_and_fail_in_one_line(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_run(runs, "r1")
    make_run(runs, "r2", started="2026-01-02T00:00:00+00:00")
    db = tmp_path / "s.duckdb"
    assert main(["store", "add", str(runs), "--store", str(db), "--commit", "e" * 40]) == 0
    out = capsys.readouterr().out
    assert out.count("added:") == 2 and "eeeeeeeeeeee (given)" in out
    assert main(["store", "add", str(runs / "r1"), "--store", str(db)]) == 0
    assert "unchanged: r1" in capsys.readouterr().out
    sql = "SELECT run_id, git_commit FROM runs ORDER BY started_utc"
    assert main(["store", "query", sql, "--store", str(db), "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "run_id,git_commit", f"r1,{'e' * 40}", f"r2,{'e' * 40}"
    ]
    assert main(["store", "query", sql, "--store", str(db), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[1] == {"run_id": "r2", "git_commit": "e" * 40}
    assert main(["store", "query", sql, "--store", str(db)]) == 0
    table = capsys.readouterr().out
    assert "run_id" in table and "r2" in table and "2 rows" in table
    assert query("SELECT nothing_here FROM runs", db) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench store: the query failed") and err.count("\n") == 1
    assert main(["store", "query", "SELECT 1", "--store", str(tmp_path / "none.duckdb")]) == 2
    assert "no store at" in capsys.readouterr().err
    assert main(["store", "add", str(tmp_path), "--store", str(db)]) == 2
    assert "not a bench run folder" in capsys.readouterr().err


@pytest.mark.slow
def test_run_with_store_adds_the_run_with_the_commit_of_the_working_directory(
    tmp_path, capsys, monkeypatch
):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(smol_config(
        "st", n_ctx="256", workload="{prompt_tokens: 16, gen_tokens: 4}",
        trials="{warmup: 0, repeat: 2}", energy="{meters: [estimate], idle_s: 0}",
    ))
    monkeypatch.chdir(tmp_path)  # not a git repository: the run's own record is used, stated
    db = tmp_path / "s.duckdb"
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--store", str(db)]) == 0
    assert "added:" in capsys.readouterr().out
    with Store(db, read_only=True) as s:
        (row,) = s.records("SELECT run_id, git_commit, git_source, status FROM runs")
        n = s.query("SELECT count(*) FROM trials WHERE status = 'ok'")[1][0][0]
    manifest = load_run(tmp_path / "out" / row["run_id"]).manifest
    checkout = manifest["software"]["bench_git_commit"]
    assert row["git_commit"] == checkout
    assert row["git_source"] == ("bench checkout" if checkout else "none")
    assert row["status"] == "finished" and n == 2


def test_a_fleet_row_without_an_id_takes_its_own_machines_id(tmp_path):
    """A fleet worker lost before it reported leaves its error row without machine_id; the
    store fills it from that machine's facts in the manifest, never from the first machine's."""
    manifest = {
        "format_version": 1, "run_id": "fleet", "started_utc": "2026-01-01T00:00:00+00:00",
        "finished_utc": "2026-01-01T00:00:00+00:00", "status": "finished",
        "config": {"name": "hist"}, "config_hash": "c" * 64,
        "machine": {"hostname": "driver", "id": None, "role": "fleet driver"},
        "machines": {"desk": {"name": "desk", "id": "d" * 16}, "mac": {"name": "mac",
                                                                     "id": "e" * 16}},
        "software": {"bench": "0.1.0"},
        "cells": [{"cell_id": f"c001@{m}", "machine": m, "cell_key": CELL_KEY,
                   "settings_hash": "s" * 16, "params": {"model": "x", "machine": m},
                   "status": "ok" if m == "desk" else "error", "error": None}
                  for m in ("desk", "mac")],
    }
    w = RunWriter(tmp_path / "fleet", manifest)
    w.add("trials", [
        {"run_id": "fleet", "cell_id": "c001@desk", "machine": "desk", "machine_id": "d" * 16,
         "cell_key": CELL_KEY, "trial": 0, "warmup": False, "status": "ok", "decode_tps": 9.0},
        {"run_id": "fleet", "cell_id": "c001@mac", "machine": "mac", "machine_id": None,
         "cell_key": CELL_KEY, "trial": 0, "warmup": False, "status": "error", "error": "lost"},
    ])
    w.flush()
    db = tmp_path / "s.duckdb"
    with Store(db) as s:
        s.add_run(tmp_path / "fleet")
        got = dict(s.query("SELECT machine, machine_id FROM trials ORDER BY machine")[1])
    assert got == {"desk": "d" * 16, "mac": "e" * 16}
