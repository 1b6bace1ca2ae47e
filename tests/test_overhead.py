"""The harness must not slow what it measures: bench's wall-clock phase times against llama.cpp's
own engine timings for the same trials, on the real small model.

Ratios within one run, so a noisy shared machine moves both sides together. Overhead above 2% is
a bug in the timing loop, not a figure to document.
"""
from __future__ import annotations

import statistics

import pytest
from support import smol_config

from bench.config import loads_config
from bench.runner import Runner
from bench.sweep import expand

pytestmark = pytest.mark.slow

CONFIG = smol_config(
    "overhead", n_ctx="1024", workload="{prompt_tokens: [128, 512], gen_tokens: 64}",
    trials="{warmup: 1, repeat: 5}", energy="{meters: auto, idle_s: 0}",
)


@pytest.fixture(scope="module")
def trials(tmp_path_factory):
    loaded = loads_config(CONFIG)
    outcome = Runner(loaded, expand(loaded.config), tmp_path_factory.mktemp("r")).run()
    rows = [r for r in outcome.trials if not r["warmup"]]
    assert rows and all(r["status"] == "ok" for r in rows)
    return rows


def test_decode_overhead_against_engine_timing_is_under_2_percent(trials):
    over = [r["overhead_decode_pct"] for r in trials]
    assert statistics.median(over) < 2.0, over


def test_prefill_overhead_against_engine_timing_is_under_2_percent(trials):
    over = [r["overhead_prefill_pct"] for r in trials]
    assert statistics.median(over) < 2.0, over


def test_prefill_rate_does_not_jump_between_first_and_second_trial(trials):
    # A reused KV-cache prefix would make the second trial's prefill many times faster.
    for cell in {r["cell_id"] for r in trials}:
        first, second = [r["prefill_tps"] for r in trials if r["cell_id"] == cell][:2]
        assert 0.5 < second / first < 2.0, (cell, first, second)
