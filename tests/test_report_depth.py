"""The depth figure's numbers: cells grouped per model across depths, prompts pooled."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib")

from bench.report.data import load_runs, summarise
from bench.report.depth import PLOT_FILE, depth_points, depth_series, plot_depth
from bench.results import RunWriter

# (model, backend, lang, depth, decode t/s of the measured trials)
CELLS = [
    (m, b, lang, d, [tps(d) + (1.0 if lang == "fr" else 0.0)] * 3)
    for m, b, tps in (("rwkv", "rwkv", lambda d: 50.0), ("llama", "llama-cpp",
                                                         lambda d: 50.0 - d / 100))
    for lang in ("en", "fr")
    for d in (0, 512, 2048)
]


def make_run(root: Path, cells: list[Any] = CELLS) -> Path:
    folder = root / "r1"
    manifest: dict[str, Any] = {
        "format_version": 1, "run_id": "r1", "status": "finished",
        "started_utc": "2026-01-02T03:04:05+00:00", "config": {"name": "depth"},
        "machine": {"id": "m1", "hostname": "h"}, "software": {}, "models": {}, "meters": [],
        "domains": [], "idle": {}, "loads": [], "cells": [],
    }
    writer = RunWriter(folder, manifest)
    for n, (model, backend, lang, depth, decode) in enumerate(cells, start=1):
        cid = f"c{n:03d}"
        params = {"model": model, "quant": "", "backend": backend, "lang": lang,
                  "prompt_id": "p01", "prompt_tokens": None, "gen_tokens": 16, "depth": depth}
        manifest["cells"].append({"cell_id": cid, "cell_key": f"{n:016x}", "params": params,
                                  "status": "ok", "error": None})
        writer.add("trials", [
            {"run_id": "r1", "cell_id": cid, "cell_key": f"{n:016x}", **params, "trial": t,
             "warmup": False, "status": "ok", "error": None, "n_prompt": 32, "n_gen": 16,
             "decode_tps": tps, "j_per_token": 1.0 / tps, "energy_method": "estimate"}
            for t, tps in enumerate(decode)
        ])
    writer.manifest = manifest
    writer.flush()
    return folder


def test_one_series_per_model_with_languages_pooled_at_each_depth(tmp_path):
    data = summarise(load_runs([make_run(tmp_path)]))
    series = depth_series(data)
    assert sorted(g[0].params["model"] for g in series.values()) == ["llama", "rwkv"]
    by_model = {g[0].params["model"]: g for g in series.values()}
    # en and fr pooled: the mean of their means (50 and 51 for rwkv at every depth).
    assert depth_points(by_model["rwkv"], "decode_tps") == [
        (0, 50.5, 2), (512, 50.5, 2), (2048, 50.5, 2)]
    llama = depth_points(by_model["llama"], "decode_tps")
    assert [d for d, _, _ in llama] == [0, 512, 2048]
    assert llama[0][1] == pytest.approx(50.5) and llama[2][1] == pytest.approx(30.02)
    assert plot_depth(data, tmp_path) is not None and (tmp_path / PLOT_FILE).is_file()


def test_no_figure_without_two_depths(tmp_path):
    data = summarise(load_runs([make_run(tmp_path, [c for c in CELLS if c[3] == 0])]))
    assert depth_series(data) == {} and plot_depth(data, tmp_path) is None


def test_the_runs_table_names_the_bandwidth_each_runs_roofline_divides_by(tmp_path):
    from bench.report.tables import runs_table

    folder = make_run(tmp_path)
    plain = runs_table(summarise(load_runs([folder])))
    row = {r[0]: r[1:] for r in plain.rows}
    assert row["memory bandwidth"] == ["not measured"]
    import json

    mf = folder / "manifest.json"
    manifest = json.loads(mf.read_text())
    manifest["roofline"] = {"cpu": {"memory": "cpu", "bytes_per_s": 12.34e9, "measured": True,
                                    "method": "NumPy copy of 512 MiB, best of 3"}, "gpu": None}
    mf.write_text(json.dumps(manifest))
    row = {r[0]: r[1:] for r in runs_table(summarise(load_runs([folder]))).rows}
    assert row["memory bandwidth"] == ["CPU 12.3 GB/s (NumPy copy of 512 MiB, best of 3)"]
