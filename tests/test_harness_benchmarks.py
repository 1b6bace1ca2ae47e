"""The harness's own overhead, guarded: the per-token timing arithmetic, meter reads and result
writing must stay cheap next to what they measure, so a slower harness fails the project's CI.

Each test times its subject itself with time.perf_counter (best of several loops, so one stall
on a busy machine does not fail it) and asserts a bound with ample headroom that a real
regression (quadratic work per token, a directory listing per read, row-by-row writing) would
still break. The `benchmark` fixture (pytest-benchmark) also runs the subject: pyproject's
addopts pass --benchmark-disable, so it runs once there; with `--benchmark-enable` (or
`--benchmark-only`) it calibrates, reports, and its median is held to the same bound.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes.powercap import desktop_tree

from bench.backends.base import Trace
from bench.meters.estimate import EstimateMeter
from bench.meters.rapl import RaplMeter
from bench.meters.settings import EnergySettings
from bench.metrics import trial_timing
from bench.results import RunWriter


def best_mean_s(fn: Callable[[], Any], loops: int, repeats: int = 5) -> float:
    """The lowest mean seconds per call over `repeats` runs of `loops` calls."""
    means = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        means.append((time.perf_counter() - t0) / loops)
    return min(means)


def check(benchmark: Any, fn: Callable[[], Any], loops: int, bound_s: float, what: str) -> None:
    own = best_mean_s(fn, loops)
    assert own < bound_s, f"{what}: {own * 1e3:.3f} ms per call, bound {bound_s * 1e3:.3f} ms"
    benchmark(fn)
    if benchmark.enabled and benchmark.stats is not None:
        median = benchmark.stats.stats.median
        assert median < bound_s, (
            f"{what}: pytest-benchmark median {median * 1e3:.3f} ms, bound {bound_s * 1e3:.3f} ms"
        )


# -- (a) the per-token timing loop ------------------------------------------------------------

N_TOKENS = 512
FAST_DECODE_TPS = 1000.0  # a fast GPU decode: the harshest ratio the harness must meet


def trace(n: int = N_TOKENS, tps: float = FAST_DECODE_TPS) -> Trace:
    t0 = 1000.0
    first = t0 + 0.05
    times = [first + i / tps for i in range(n)]
    engine = {"engine_n_p_eval": 128, "engine_t_p_eval_ms": 49.0, "engine_n_eval": n - 1,
              "engine_t_eval_ms": (n - 1) / tps * 1000.0 * 0.99}
    return Trace(n_prompt=128, t_start=t0, token_times=times, token_ids=list(range(n)),
                 engine=engine)


def test_timing_a_512_token_trial_costs_under_half_a_percent_of_its_decode(benchmark):
    tr = trace()
    row = trial_timing(tr)
    assert row["n_gen"] == N_TOKENS and row["decode_tps"] == pytest.approx(FAST_DECODE_TPS)
    # 511 gaps at 1000 t/s: 0.511 s of decode; the arithmetic may take 0.5 % of it (2.6 ms).
    budget = 0.005 * (N_TOKENS - 1) / FAST_DECODE_TPS
    check(benchmark, lambda: trial_timing(tr), loops=50, bound_s=budget,
          what="trial_timing of a 512-token trace")


def test_timing_cost_grows_linearly_with_tokens_not_quadratically():
    short, long = trace(512), trace(4096)
    t_short = best_mean_s(lambda: trial_timing(short), 20)
    t_long = best_mean_s(lambda: trial_timing(long), 5)
    # 8x the tokens: linear (with a sort) is ~8-10x; quadratic would be ~64x.
    assert t_long / t_short < 25, (t_short, t_long)


# -- (b) meter reads --------------------------------------------------------------------------

# The poller reads every meter every energy.interval_ms (50 ms by default): a read under 1 ms is
# under 2 % of one core, and phase-edge reads stay far below the shortest phase worth measuring.
READ_BOUND_S = 1e-3


def test_estimate_meter_read_is_far_under_a_millisecond(benchmark):
    meter = EstimateMeter.open(EnergySettings())
    try:
        # One process-time call and a multiplication: 100 µs leaves 20x headroom or more.
        check(benchmark, meter.read, loops=2000, bound_s=READ_BOUND_S / 10,
              what="EstimateMeter.read")
    finally:
        meter.close()


@pytest.fixture
def rapl_tree(tmp_path: Path) -> Path:
    """A desktop-like tree: package with core, uncore and DRAM, plus psys (five counters)."""
    desktop_tree(tmp_path)
    return tmp_path


def test_rapl_meter_read_of_five_zones_is_under_a_millisecond(benchmark, rapl_tree):
    meter = RaplMeter.open(EnergySettings(rapl={"root": str(rapl_tree)}))
    try:
        assert len(meter.read().joules) == 5
        check(benchmark, meter.read, loops=500, bound_s=READ_BOUND_S, what="RaplMeter.read")
    finally:
        meter.close()


# -- (c) result writing -----------------------------------------------------------------------

N_TRIALS = 500  # a sweep of 100 cells x 5 trials; flush rewrites every row after each cell
GEN_TOKENS = 64
# Flushing happens between cells, outside any measured phase, but a sweep waits for it; with
# every row rewritten after each cell a slow flush grows quadratically over a long sweep.
FLUSH_BOUND_S = 1.0


def trial_row(i: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": "20260101T000000Z-bench-0123abcd", "cell_id": f"c{i // 5 + 1:03d}",
        "cell_key": f"{i // 5:016x}", "settings_hash": "a429b116f8ce610a",
        "model": "smollm2-135m", "quant": "Q4_1", "backend": "llama-cpp", "n_threads": 2,
        "n_gpu_layers": 0, "n_ctx": 1024, "n_batch": 512, "n_ubatch": 512, "flash_attn": False,
        "prompt_id": "synthetic-128", "prompt_tokens": 128, "gen_tokens": GEN_TOKENS,
        "trial": i % 5, "warmup": False, "status": "ok", "error": None, "n_prompt": 128,
        "n_gen": GEN_TOKENS, "stopped_at_eos": False, "energy_method": "counter",
        "energy_resolved": True, "load_id": "l01",
    }
    floats = ("ttft_s", "prefill_s", "prefill_tps", "decode_s", "decode_tps", "e2e_s", "e2e_tps",
              "itl_ms_p50", "itl_ms_p90", "itl_ms_p99", "engine_t_p_eval_ms", "engine_t_eval_ms",
              "engine_prefill_tps", "engine_decode_tps", "overhead_prefill_pct",
              "overhead_decode_pct", "load_s", "energy_j", "energy_net_j", "prefill_energy_j",
              "decode_energy_j", "j_per_token", "j_per_prompt_token", "tokens_per_j",
              "avg_power_w")
    row.update({k: 1.0 + (i * 7 + j) % 13 / 10 for j, k in enumerate(floats)})
    row.update(engine_n_p_eval=128, engine_n_eval=GEN_TOKENS - 1, peak_rss_bytes=336_719_872)
    return row


@pytest.fixture
def writer(tmp_path: Path) -> RunWriter:
    w = RunWriter(tmp_path / "run", {"format_version": 1, "run_id": "x", "cells": []})
    trials = [trial_row(i) for i in range(N_TRIALS)]
    w.add("trials", trials)
    w.add("energy", [{"run_id": r["run_id"], "cell_id": r["cell_id"], "trial": r["trial"],
                      "warmup": False, "phase": phase, "domain": "cpu-package-0",
                      "meter": "rapl", "method": "counter", "boundary": "cpu-package",
                      "component": True, "joules": 1.5, "net_joules": 1.2, "seconds": 0.3,
                      "resolved": True}
                     for r in trials for phase in ("prefill", "decode")])
    w.add("tokens", [{"run_id": r["run_id"], "cell_id": r["cell_id"], "trial": r["trial"],
                      "i": k, "t_s": 0.2 + k * 0.01, "token_id": 1000 + k}
                     for r in trials for k in range(GEN_TOKENS)])
    return w


def test_flushing_500_trials_with_their_energy_and_token_rows_is_under_a_second(
    benchmark, writer
):
    writer.flush()
    assert {p.name for p in writer.folder.iterdir()} >= {
        "manifest.json", "trials.parquet", "trials.csv", "energy.parquet", "tokens.parquet"}
    check(benchmark, writer.flush, loops=2, bound_s=FLUSH_BOUND_S,
          what=f"RunWriter.flush of {N_TRIALS} trials")
