"""Energy attribution: meter readings at phase edges -> per-domain phase rows and trial columns.

Pure arithmetic, no hardware: the worker reads the meters (bench.meters) at its phase edges and
hands the readings here. The rules (docs/energy.md): only component domains are summed into the
headline figures, an estimate is never summed with a measurement, a domain that was not read
gives None (never 0), and a phase shorter than a domain's update period is unresolved.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.meters.base import Domain, Meter, Reading

PHASES = ("prefill", "decode")

TRIAL_ENERGY_COLUMNS = (
    "energy_j",
    "energy_net_j",
    "prefill_energy_j",
    "decode_energy_j",
    "j_per_token",
    "j_per_prompt_token",
    "tokens_per_j",
    "avg_power_w",
    "energy_method",
    "energy_resolved",
)


def all_domains(meters: Sequence[Meter]) -> list[Domain]:
    """Every domain of the open meters, in meter order (for phase_rows and the manifest)."""
    return [d for m in meters for d in m.domains()]


def merge_readings(readings: Sequence[Reading]) -> Reading:
    """One reading from several meters' readings taken at the same phase edge.

    t is the mean of the reads' times: they are taken back to back, well inside any meter's
    update period. A domain reported by two meters is a bug, not something to average.
    """
    if not readings:
        raise ValueError("merge_readings needs at least one reading")
    joules: dict[str, float] = {}
    for r in readings:
        for name, j in r.joules.items():
            if name in joules:
                raise ValueError(f"domain {name!r} is reported by two meters")
            joules[name] = j
    return Reading(sum(r.t for r in readings) / len(readings), joules)


def read_all(meters: Sequence[Meter]) -> Reading:
    """Read every meter once and merge: what the runner does at each phase edge."""
    return merge_readings([m.read() for m in meters])


def idle_baseline(
    meters: Sequence[Meter], seconds: float, sleep: Callable[[float], None] = time.sleep
) -> dict[str, float]:
    """Idle power per domain (W): energy over a quiet span divided by its measured length.

    Sampled meters integrate their own samples, so their pollers should be running (start()).
    """
    if seconds <= 0 or not meters:
        return {}
    start = read_all(meters)
    sleep(seconds)
    end = read_all(meters)
    dt = end.t - start.t
    if dt <= 0:
        raise ValueError(f"idle span measured as {dt} s; the clock did not advance")
    return {
        name: (end.joules[name] - j0) / dt for name, j0 in start.joules.items()
        if name in end.joules
    }


def phase_rows(
    domains: Sequence[Domain],
    edges: Sequence[tuple[str, Reading, Reading]],
    idle_w: dict[str, float],
) -> list[dict[str, Any]]:
    """One row per phase x domain: the energy.parquet columns the meters layer knows.

    joules is None when a domain is missing from either edge's reading; net_joules is None when
    joules is, or when no idle power was measured for the domain.
    """
    rows: list[dict[str, Any]] = []
    for phase, start, end in edges:
        seconds = end.t - start.t
        for d in domains:
            joules = None
            if d.name in start.joules and d.name in end.joules:
                joules = end.joules[d.name] - start.joules[d.name]
            idle = idle_w.get(d.name)
            net = joules - idle * seconds if joules is not None and idle is not None else None
            rows.append({
                "phase": phase,
                "domain": d.name,
                "meter": d.meter,
                "method": d.method,
                "boundary": d.boundary,
                "component": d.component,
                "joules": joules,
                "net_joules": net,
                "seconds": seconds,
                "resolved": seconds >= d.update_period_s,
            })
    return rows


def _empty() -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(TRIAL_ENERGY_COLUMNS)
    out["energy_method"] = ""
    return out


def _sum(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return float(sum(v for v in values if v is not None))


def trial_energy(
    rows: Sequence[dict[str, Any]], n_prompt: int, n_gen: int, e2e_s: float
) -> dict[str, Any]:
    """The trial row's energy columns (docs/results.md) from phase_rows' rows for one trial.

    Sums the component domains of the prefill and decode phases. Where any measured component
    is present, estimate domains are left out: the estimate of this process's CPU energy lies
    inside the measured CPU package, and an estimate is never mixed with a measurement.
    Everything is None (energy_method "") when there is no component domain, or when one of
    them was not read in this trial.
    """
    components = [r for r in rows if r["component"] and r["phase"] in PHASES]
    measured = [r for r in components if r["method"] != "estimate"]
    chosen = measured or components
    if not chosen or any(r["joules"] is None for r in chosen):
        return _empty()

    prefill = _sum([r["joules"] for r in chosen if r["phase"] == "prefill"])
    decode = _sum([r["joules"] for r in chosen if r["phase"] == "decode"])
    energy = prefill + decode if prefill is not None and decode is not None else None
    net = _sum([r["net_joules"] for r in chosen]) if energy is not None else None
    methods = {r["method"] for r in chosen}

    out = _empty()
    out.update({
        "energy_j": energy,
        "energy_net_j": net,
        "prefill_energy_j": prefill,
        "decode_energy_j": decode,
        "j_per_token": decode / (n_gen - 1) if decode is not None and n_gen > 1 else None,
        "j_per_prompt_token": prefill / n_prompt if prefill is not None and n_prompt > 0
        else None,
        "tokens_per_j": n_gen / energy if energy is not None and energy > 0 else None,
        "avg_power_w": energy / e2e_s if energy is not None and e2e_s > 0 else None,
        "energy_method": methods.pop() if len(methods) == 1 else "mixed",
        "energy_resolved": all(r["resolved"] for r in chosen),
    })
    return out


def power_timeline(readings: Sequence[Reading], t0: float) -> list[dict[str, Any]]:
    """Power between consecutive polled readings of one meter: {domain, t_s, watts} rows.

    t_s is the interval's midpoint in seconds since t0 (the trial start). For counter meters
    this is the counter delta over the measured interval; for sampled meters, the delta of the
    integral. Pass one meter's timeline at a time (Meter.timeline(t0, t1)).
    """
    rows: list[dict[str, Any]] = []
    for a, b in itertools.pairwise(readings):
        dt = b.t - a.t
        if dt <= 0:
            continue
        mid = (a.t + b.t) / 2 - t0
        for name, j in b.joules.items():
            if name in a.joules:
                rows.append({"domain": name, "t_s": mid, "watts": (j - a.joules[name]) / dt})
    return rows
