"""Trial metrics from timestamps, exactly as docs/results.md defines them."""
from __future__ import annotations

import pytest

from bench.backends.base import Trace
from bench.metrics import prompt_check, trial_timing


def trace(times, n_prompt=100, engine=None):
    return Trace(n_prompt=n_prompt, t_start=10.0, token_times=times,
                 token_ids=list(range(len(times))), engine=engine or {})


def test_phase_times_and_rates_follow_the_definitions():
    # first token 0.5 s after the start, then 4 more tokens 0.1 s apart
    row = trial_timing(trace([10.5, 10.6, 10.7, 10.8, 10.9]))
    assert row["ttft_s"] == pytest.approx(0.5)
    assert row["prefill_tps"] == pytest.approx(100 / 0.5)
    assert row["decode_s"] == pytest.approx(0.4)
    assert row["decode_tps"] == pytest.approx(4 / 0.4)  # (n_gen - 1) / decode_s
    assert row["e2e_tps"] == pytest.approx(5 / 0.9)
    assert row["itl_ms_p50"] == pytest.approx(100.0)


def test_itl_percentiles_see_a_slow_token():
    times = [1.0 + 0.01 * i for i in range(100)]
    times[-1] += 0.5
    row = trial_timing(Trace(10, 0.9, times, list(range(100))))
    assert row["itl_ms_p50"] == pytest.approx(10.0)
    assert row["itl_ms_p99"] > 10.0


def test_engine_overhead_is_wall_minus_engine_over_wall():
    eng = {"engine_n_p_eval": 100, "engine_t_p_eval_ms": 490.0,
           "engine_n_eval": 4, "engine_t_eval_ms": 396.0}
    row = trial_timing(trace([10.5, 10.6, 10.7, 10.8, 10.9], engine=eng))
    assert row["overhead_prefill_pct"] == pytest.approx(2.0)
    assert row["overhead_decode_pct"] == pytest.approx(1.0)
    assert row["engine_decode_tps"] == pytest.approx(4 / 0.396)
    assert prompt_check(row) is None


def test_a_reused_prompt_prefix_is_caught():
    eng = {"engine_n_p_eval": 3, "engine_t_p_eval_ms": 1.0,
           "engine_n_eval": 4, "engine_t_eval_ms": 1}
    row = trial_timing(trace([10.5, 10.6, 10.7, 10.8, 10.9], engine=eng))
    assert "evaluated 3 of 100 prompt tokens" in prompt_check(row)


def test_single_token_generation_has_no_decode_rate():
    row = trial_timing(trace([10.5]))
    assert row["decode_s"] is None and row["decode_tps"] is None and row["n_gen"] == 1
