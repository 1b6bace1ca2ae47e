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


# -- part files: a checkpoint writes only what is new ------------------------------------------


def _cell_rows(n: int) -> list[dict]:
    return [{"cell_id": f"c{n:05d}", "trial": t, "status": "ok", "decode_tps": 10.0 + t}
            for t in range(3)]


def test_a_checkpoint_writes_only_the_new_cell_whatever_the_run_size(tmp_path):
    w = RunWriter(tmp_path / "r", {"format_version": FORMAT_VERSION, "cells": []})
    sizes = []
    for n in range(40):
        w.add("trials", _cell_rows(n))
        w.journal({"set": {"last": n}})
        before = {p: p.stat().st_size for p in (tmp_path / "r").rglob("*") if p.is_file()}
        w.checkpoint()
        after = {p: p.stat().st_size for p in (tmp_path / "r").rglob("*") if p.is_file()}
        new = [p for p in after if p not in before and p.suffix == ".parquet"]
        assert len(new) == 1 and len(pq_rows(new[0])) == 3  # this cell's rows, nothing else
        # No file that was already there is rewritten, except the appended journal.
        changed = [p for p in before if after[p] != before[p]]
        assert [p.name for p in changed] in ([], ["journal.jsonl"])
        sizes.append(after[new[0]])
    assert max(sizes) == min(sizes)
    run = load_run(tmp_path / "r")
    assert [r["cell_id"] for r in run.trials][::3] == [f"c{n:05d}" for n in range(40)]
    assert run.manifest["last"] == 39


def pq_rows(path):
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def test_rows_merged_by_compaction_are_never_counted_twice(tmp_path):
    import shutil

    w = RunWriter(tmp_path / "r", {"format_version": FORMAT_VERSION, "cells": []})
    w.add("trials", _cell_rows(1))
    w.checkpoint()
    parts = tmp_path / "r" / "parts"
    saved = tmp_path / "saved"
    shutil.copytree(parts, saved)
    w.flush()
    # A kill between writing the merged table and removing the parts leaves both on disk.
    parts.mkdir(exist_ok=True)
    for p in saved.iterdir():
        shutil.copy(p, parts / p.name)
    assert len(load_run(tmp_path / "r").trials) == 3
    w.add("trials", _cell_rows(2))
    w.checkpoint()  # a later part is read again
    assert len(load_run(tmp_path / "r").trials) == 6


def test_a_journal_line_cut_by_a_kill_is_ignored_but_a_damaged_one_is_an_error(tmp_path):
    w = RunWriter(tmp_path / "r", {"format_version": FORMAT_VERSION,
                                   "cells": [{"cell_id": "c001", "status": "pending"}]})
    w.journal({"cell": {"cell_id": "c001", "status": "ok"}})
    w.checkpoint()
    journal = tmp_path / "r" / "parts" / "journal.jsonl"
    with journal.open("a") as f:
        f.write('{"cell": {"cell_id": "c0')
    assert load_run(tmp_path / "r").manifest["cells"][0]["status"] == "ok"
    journal.write_text('{"cell"\n' + journal.read_text())
    with pytest.raises(ResultsError, match="journal.jsonl:1 is not a JSON line"):
        load_run(tmp_path / "r")


def test_trials_carry_their_cells_status(tmp_path):
    w = RunWriter(tmp_path / "r", {"format_version": FORMAT_VERSION, "cells": [
        {"cell_id": "c001", "status": "ok"}, {"cell_id": "c002", "status": "error"}]})
    w.add("trials", [{"cell_id": "c001", "trial": 0, "status": "ok"},
                     {"cell_id": "c002", "trial": 0, "status": "ok"},
                     {"cell_id": "c002", "trial": 1, "status": "error"}])
    w.flush()
    run = load_run(tmp_path / "r")
    assert [r["cell_status"] for r in run.trials] == ["ok", "error", "error"]


# -- a corrupt or malformed folder is one sentence, not a traceback ----------------------------


def _finished(tmp_path, manifest=None):
    w = RunWriter(tmp_path / "r", manifest or {"format_version": FORMAT_VERSION, "cells": []})
    w.add("trials", _cell_rows(1))
    w.add("energy", [{"cell_id": "c00001", "trial": 0, "phase": "decode", "joules": 1.0}])
    w.add("tokens", [{"cell_id": "c00001", "trial": 0, "i": 0, "t_s": 0.1}])
    w.flush()
    return tmp_path / "r"


@pytest.mark.parametrize("table", ["energy", "tokens", "trials"])
def test_a_corrupt_side_table_is_a_results_error(tmp_path, table):
    folder = _finished(tmp_path)
    data = (folder / f"{table}.parquet").read_bytes()
    (folder / f"{table}.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(ResultsError, match=rf"cannot read .*{table}.parquet: it is not a "
                                           "readable Parquet table") as e:
        load_run(folder).table(table) if table != "trials" else load_run(folder)
    assert "\n" not in str(e.value)


def test_a_side_table_of_the_wrong_shape_is_a_results_error(tmp_path):
    folder = _finished(tmp_path)
    write_table(folder / "tokens.parquet", [{"cell_id": "c1", "trial": "zero", "i": 0, "t_s": 1.0}])
    with pytest.raises(ResultsError, match="has a str in 'trial'; it is not a tokens table"):
        load_run(folder).table("tokens")
    write_table(folder / "energy.parquet", [{"joules": 1.0}])
    with pytest.raises(ResultsError, match="has no column 'cell_id'"):
        load_run(folder).table("energy")


@pytest.mark.parametrize("field, value, says", [
    ("cells", {"c001": "ok"}, "field 'cells' should be a list, not a object"),
    ("models", [], "field 'models' should be a object, not a list"),
    ("cells", [{"cell_id": 7}], r"cells\[0\] should be an object with a text cell_id"),
    ("loads", ["l01"], r"loads\[0\] should be an object"),
])
def test_a_manifest_whose_fields_have_the_wrong_shape_is_a_results_error(
        tmp_path, field, value, says):
    folder = _finished(tmp_path)
    m = json.loads((folder / "manifest.json").read_text())
    m[field] = value
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ResultsError, match=says):
        load_run(folder)


def test_a_manifest_that_is_not_an_object_is_a_results_error(tmp_path):
    folder = _finished(tmp_path)
    (folder / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ResultsError, match="not a JSON object"):
        load_run(folder)


# -- redaction: every string the writer stores ---------------------------------------------------


def test_every_string_the_writer_stores_is_redacted(tmp_path):
    from bench.redact import register_secret

    secret = "sk-test-" + "9f3a" * 6
    register_secret(secret)
    leak = f"server said: Authorization: Bearer {secret}"
    w = RunWriter(tmp_path / "r", {"format_version": FORMAT_VERSION, "cells": [
        {"cell_id": "c001", "status": "pending"}], "models": {"m": {"server_models": [leak]}}})
    w.add("trials", [{"cell_id": "c001", "trial": 0, "status": "error", "error": leak}])
    w.journal({"cell": {"cell_id": "c001", "status": "error", "error": leak}})
    w.journal({"load": {"load_id": "l01", "error": f"Bearer {secret}"}})
    w.checkpoint()
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file())
    assert secret.encode() not in on_disk
    w.flush()
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file())
    assert secret.encode() not in on_disk and b"***" in on_disk
    run = load_run(tmp_path / "r")
    assert run.trials[0]["error"] == "server said: Authorization: Bearer ***"


def test_redact_masks_registered_secrets_and_authorization_values_everywhere():
    from bench.redact import redact, register_secret

    register_secret("hunter2-key")
    got = redact({"a": ["x hunter2-key y", ("hunter2-key",)], "hunter2-key": 1,
                  "h": '{"authorization": "Bearer abcdefghijk"}', "n": 5,
                  "plain": "the bearer of good news"})
    assert got == {"a": ["x *** y", ("***",)], "***": 1,
                   "h": '{"authorization": "Bearer ***"}', "n": 5,
                   "plain": "the bearer of good news"}


# -- one cache-folder lookup ---------------------------------------------------------------------


def test_an_empty_xdg_cache_home_means_unset(monkeypatch, tmp_path):
    from pathlib import Path

    from bench.files import cache_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert cache_dir("quants") == Path(tmp_path) / ".cache" / "bench" / "quants"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir("sha256.json") == tmp_path / "x" / "bench" / "sha256.json"


def test_declared_column_types_are_applied_to_every_part_and_the_compacted_table(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("decode_tps", pa.float64()), ("trial", pa.int32())])
    w = RunWriter(tmp_path / "r", {"format_version": FORMAT_VERSION}, schemas={"trials": schema})
    # An all-null column would be inferred as the null type; an int as int64.
    w.add("trials", [{"cell_id": "c1", "trial": 0, "decode_tps": None}])
    w.checkpoint()
    (part,) = (tmp_path / "r" / "parts").glob("trials-*.parquet")
    assert pq.read_schema(part).field("decode_tps").type == pa.float64()
    w.add("trials", [{"cell_id": "c2", "trial": 1, "decode_tps": 12}])
    w.flush()
    got = pq.read_schema(tmp_path / "r" / "trials.parquet")
    assert got.field("decode_tps").type == pa.float64() and got.field("trial").type == pa.int32()
    assert [r["decode_tps"] for r in load_run(tmp_path / "r").trials] == [None, 12.0]
