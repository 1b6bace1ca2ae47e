"""Tidy tables on disk: atomic replacement, round trip, and refusing what cannot be read."""
from __future__ import annotations

import json
import os

import pytest

from bench.results import FORMAT_VERSION, ResultsError, RunWriter, load_run, write_table


def test_rows_written_per_flush_read_back_as_plain_dicts(tmp_path):
    w = RunWriter(tmp_path / "r1", {"format_version": FORMAT_VERSION, "run_id": "r1"})
    w.add("trials", [{"cell_id": "c001", "trial": 0, "decode_tps": 10.5}])
    w.flush()
    w.add("trials", [{"cell_id": "c002", "trial": 0, "decode_tps": None, "error": "x"}])
    w.flush()
    run = load_run(tmp_path / "r1")
    assert run.run_id == "r1"
    assert [r["cell_id"] for r in run.trials] == ["c001", "c002"]
    # a column that appears later is filled with nulls for earlier rows
    assert run.trials[0]["error"] is None and run.trials[1]["error"] == "x"
    csv_text = (tmp_path / "r1" / "trials.csv").read_text()
    assert csv_text.splitlines()[0] == "cell_id,trial,decode_tps,error"


def test_a_failed_write_leaves_the_previous_complete_file(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    write_table(path, [{"a": 1}])
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    # Stands in for a full disk at the moment of writing: the temporary file write fails.
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        write_table(path, [{"a": 1}, {"a": 2}])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_writer_turns_disk_errors_into_one_sentence(tmp_path, monkeypatch):
    w = RunWriter(tmp_path / "r", {"format_version": FORMAT_VERSION})
    w.add("trials", [{"a": 1}])
    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    expected = r"could not write results .*\(No space left on device\)"
    with pytest.raises(ResultsError, match=expected):
        w.flush()


def test_existing_or_unwritable_folder_is_a_clear_error(tmp_path):
    (tmp_path / "r").mkdir()
    with pytest.raises(ResultsError, match="already exists"):
        RunWriter(tmp_path / "r", {})
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ResultsError, match="cannot create the results folder"):
        RunWriter(blocker / "r", {})


def test_results_from_a_newer_bench_are_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ResultsError, match="newer bench"):
        load_run(tmp_path)


def test_a_folder_without_manifest_is_not_a_run(tmp_path):
    with pytest.raises(ResultsError, match="not a bench run folder"):
        load_run(tmp_path)
