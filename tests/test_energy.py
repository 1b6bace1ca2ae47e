"""bench.energy: attribution arithmetic on hand-made readings, checked against hand-worked sums."""
from __future__ import annotations

from collections.abc import Sequence

import pytest

from bench.energy import (
    TRIAL_ENERGY_COLUMNS,
    idle_baseline,
    merge_readings,
    phase_rows,
    power_timeline,
    trial_energy,
)
from bench.meters.base import Domain, Reading

PKG = Domain("cpu-package-0", "rapl", "counter", "cpu-package", True, 0.001)
DRAM = Domain("dram-0", "rapl", "counter", "dram", True, 0.001)
CORE = Domain("cpu-core-0", "rapl", "counter", "cpu-core", False, 0.001)
PSYS = Domain("psys-0", "rapl", "counter", "psys", False, 0.001)
GPU = Domain("gpu-0", "nvml", "counter", "gpu-board", True, 0.1)
DOMAINS = [PKG, DRAM, CORE, PSYS, GPU]

# Cumulative joules at the three edges of one trial: start, first token (t+0.05), end (t+2.05).
R0 = Reading(10.00, {"cpu-package-0": 100.0, "dram-0": 20.0, "cpu-core-0": 50.0,
                     "psys-0": 300.0, "gpu-0": 1000.0})
R1 = Reading(10.05, {"cpu-package-0": 101.5, "dram-0": 20.1, "cpu-core-0": 50.9,
                     "psys-0": 303.0, "gpu-0": 1010.0})
R2 = Reading(12.05, {"cpu-package-0": 161.5, "dram-0": 24.1, "cpu-core-0": 90.9,
                     "psys-0": 423.0, "gpu-0": 1510.0})
IDLE_W = {"cpu-package-0": 5.0, "dram-0": 1.0, "psys-0": 30.0, "gpu-0": 20.0}  # no core


def rows_for(domains: Sequence[Domain] = DOMAINS, idle: dict[str, float] | None = None,
             r1: Reading = R1) -> list[dict]:  # type: ignore[type-arg]
    return phase_rows(domains, [("prefill", R0, r1), ("decode", r1, R2)],
                      IDLE_W if idle is None else idle)


def test_phase_rows_give_gross_and_net_joules_per_phase_and_domain() -> None:
    by = {(r["phase"], r["domain"]): r for r in rows_for()}
    assert len(by) == 10
    pre, dec = by[("prefill", "cpu-package-0")], by[("decode", "cpu-package-0")]
    assert pre["seconds"] == pytest.approx(0.05) and dec["seconds"] == pytest.approx(2.0)
    assert pre["joules"] == pytest.approx(1.5)
    assert pre["net_joules"] == pytest.approx(1.25)  # 1.5 - 5 W x 0.05 s
    assert dec["joules"] == pytest.approx(60.0)
    assert dec["net_joules"] == pytest.approx(50.0)  # 60 - 5 W x 2 s
    assert by[("decode", "gpu-0")]["net_joules"] == pytest.approx(460.0)  # 500 - 20 x 2
    assert by[("prefill", "psys-0")]["net_joules"] == pytest.approx(1.5)  # 3 - 30 x 0.05
    # No idle figure for the core: no net number, rather than a made-up one.
    assert by[("decode", "cpu-core-0")]["joules"] == pytest.approx(40.0)
    assert by[("decode", "cpu-core-0")]["net_joules"] is None
    assert {k: pre[k] for k in ("meter", "method", "boundary", "component")} == {
        "meter": "rapl", "method": "counter", "boundary": "cpu-package", "component": True
    }


def test_a_phase_shorter_than_the_update_period_is_unresolved() -> None:
    by = {(r["phase"], r["domain"]): r["resolved"] for r in rows_for()}
    assert by[("prefill", "gpu-0")] is False  # 0.05 s < NVML's 0.1 s
    assert by[("prefill", "cpu-package-0")] is True  # 0.05 s >= RAPL's 0.001 s
    assert by[("decode", "gpu-0")] is True


def test_trial_energy_sums_component_domains_only_with_hand_worked_figures() -> None:
    t = trial_energy(rows_for(), n_prompt=128, n_gen=65, e2e_s=2.1)
    # prefill 1.5 + 0.1 + 10 = 11.6; decode 60 + 4 + 500 = 564 (core and psys left out)
    assert t["prefill_energy_j"] == pytest.approx(11.6)
    assert t["decode_energy_j"] == pytest.approx(564.0)
    assert t["energy_j"] == pytest.approx(575.6)
    # net: (1.25 + 0.05 + 9) + (50 + 2 + 460)
    assert t["energy_net_j"] == pytest.approx(522.3)
    assert t["j_per_token"] == pytest.approx(564.0 / 64)  # 8.8125 J per decoded token
    assert t["j_per_prompt_token"] == pytest.approx(11.6 / 128)
    assert t["tokens_per_j"] == pytest.approx(65 / 575.6)
    assert t["avg_power_w"] == pytest.approx(575.6 / 2.1)
    assert t["energy_method"] == "counter"
    assert t["energy_resolved"] is False  # the GPU's prefill was too short
    assert set(t) == set(TRIAL_ENERGY_COLUMNS)


def test_trial_energy_is_none_not_zero_without_component_domains() -> None:
    t = trial_energy(rows_for([CORE, PSYS]), n_prompt=128, n_gen=65, e2e_s=2.1)
    assert t["energy_method"] == ""
    assert all(t[k] is None for k in TRIAL_ENERGY_COLUMNS if k != "energy_method")
    assert trial_energy([], n_prompt=1, n_gen=2, e2e_s=1.0)["energy_j"] is None


def test_trial_energy_is_none_when_a_component_was_not_read() -> None:
    r1 = Reading(R1.t, {k: v for k, v in R1.joules.items() if k != "gpu-0"})
    rows = rows_for(r1=r1)
    assert [r["joules"] for r in rows if r["domain"] == "gpu-0"] == [None, None]
    assert trial_energy(rows, n_prompt=128, n_gen=65, e2e_s=2.1)["energy_j"] is None


def test_trial_energy_net_is_none_without_an_idle_baseline() -> None:
    t = trial_energy(rows_for(idle={}), n_prompt=128, n_gen=65, e2e_s=2.1)
    assert t["energy_j"] == pytest.approx(575.6)
    assert t["energy_net_j"] is None


def test_an_estimate_is_never_summed_with_a_measurement() -> None:
    estimate = Domain("cpu-estimate", "estimate", "estimate", "process-cpu", True, 0.01)
    r0 = Reading(0.0, {"cpu-package-0": 0.0, "cpu-estimate": 0.0})
    r1 = Reading(1.0, {"cpu-package-0": 20.0, "cpu-estimate": 8.0})
    r2 = Reading(3.0, {"cpu-package-0": 60.0, "cpu-estimate": 24.0})
    edges = [("prefill", r0, r1), ("decode", r1, r2)]
    both = trial_energy(phase_rows([PKG, estimate], edges, {}), n_prompt=4, n_gen=3, e2e_s=3.0)
    assert both["energy_j"] == pytest.approx(60.0)
    assert both["energy_method"] == "counter"
    only = trial_energy(phase_rows([estimate], edges, {}), n_prompt=4, n_gen=3, e2e_s=3.0)
    assert only["energy_j"] == pytest.approx(24.0)
    assert only["energy_method"] == "estimate"


def test_counter_and_sampled_components_together_are_mixed() -> None:
    sampled_gpu = Domain("gpu-0", "nvml", "sampled", "gpu-board", True, 0.1)
    t = trial_energy(rows_for([PKG, sampled_gpu]), n_prompt=128, n_gen=65, e2e_s=2.1)
    assert t["energy_method"] == "mixed"
    assert t["energy_j"] == pytest.approx(1.5 + 60 + 10 + 500)


def test_per_token_figures_are_none_where_the_division_has_no_meaning() -> None:
    t = trial_energy(rows_for(), n_prompt=0, n_gen=1, e2e_s=0.0)
    assert t["energy_j"] == pytest.approx(575.6)
    assert t["j_per_token"] is None  # one token: no decode interval
    assert t["j_per_prompt_token"] is None
    assert t["avg_power_w"] is None
    assert t["tokens_per_j"] == pytest.approx(1 / 575.6)


def test_merge_readings_joins_meters_at_one_edge() -> None:
    m = merge_readings([Reading(1.0, {"cpu-package-0": 3.0}), Reading(1.002, {"gpu-0": 7.0})])
    assert m.t == pytest.approx(1.001)
    assert m.joules == {"cpu-package-0": 3.0, "gpu-0": 7.0}
    with pytest.raises(ValueError, match="two meters"):
        merge_readings([Reading(1.0, {"gpu-0": 1.0}), Reading(1.0, {"gpu-0": 1.0})])
    with pytest.raises(ValueError):
        merge_readings([])


class ScriptedMeter:
    """Returns the readings it is given, in order: a meter read at known instants."""

    def __init__(self, *readings: Reading):
        self._readings = list(readings)

    def read(self) -> Reading:
        return self._readings.pop(0)


def test_idle_baseline_is_energy_over_the_measured_idle_span() -> None:
    slept: list[float] = []
    rapl = ScriptedMeter(Reading(0.000, {"cpu-package-0": 10.0}),
                         Reading(5.000, {"cpu-package-0": 35.0}))
    nvml = ScriptedMeter(Reading(0.001, {"gpu-0": 0.0}), Reading(5.001, {"gpu-0": 100.0}))
    watts = idle_baseline([rapl, nvml], 5.0, sleep=slept.append)  # type: ignore[list-item]
    assert slept == [5.0]
    assert watts == pytest.approx({"cpu-package-0": 5.0, "gpu-0": 20.0})
    assert idle_baseline([rapl], 0.0) == {}  # type: ignore[list-item]


def test_power_timeline_turns_consecutive_readings_into_watts_at_interval_midpoints() -> None:
    readings = [
        Reading(1.00, {"cpu-package-0": 0.0, "dram-0": 0.0}),
        Reading(1.05, {"cpu-package-0": 1.5, "dram-0": 0.05}),
        Reading(1.05, {"cpu-package-0": 1.5, "dram-0": 0.05}),  # same instant: no interval
        Reading(1.15, {"cpu-package-0": 3.5, "dram-0": 0.15}),
    ]
    rows = power_timeline(readings, t0=1.0)
    assert [(r["domain"], round(r["t_s"], 6), round(r["watts"], 6)) for r in rows] == [
        ("cpu-package-0", 0.025, 30.0),
        ("dram-0", 0.025, 1.0),
        ("cpu-package-0", 0.1, 20.0),
        ("dram-0", 0.1, 1.0),
    ]
