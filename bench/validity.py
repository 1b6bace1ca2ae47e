"""A run's own validity flags, read back from its folder: what the run recorded about the
conditions it was measured under (background load during the idle baseline, battery power, a
cell whose trials varied beyond the CV limit, throttled devices, energy that was estimated).

compare turns a flagged side into an "unreliable" verdict instead of a regression; report and
export show the flags beside the numbers. Reading only: the runner decides what to record.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["background-load", "on-battery", "noisy", "throttled", "estimate"]

# NVML clock-event reasons that mean the device slowed down under a limit (not idle or a
# clock the user set): bench.meters.nvml.THROTTLE_REASONS' names.
THROTTLING = frozenset({"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown",
                        "hw_thermal_slowdown", "hw_power_brake_slowdown", "board_limit"})
DEFAULT_MAX_IDLE_CPU_PCT = 10.0  # bench.config.Execution's default, for manifests without it


@dataclass(frozen=True)
class Flag:
    """One reason a side's numbers cannot be trusted; `text` reads after "measured ..." or
    stands alone ("under background load (23% CPU during the idle baseline)")."""

    kind: Kind
    text: str

    @property
    def short(self) -> str:
        """A few words for a table cell: "background load", "noisy", "throttled"."""
        return self.kind.replace("-", " ")


def _limit(manifest: Mapping[str, Any], key: str, default: float) -> float:
    execution = ((manifest.get("config") or {}).get("execution") or {})
    value = execution.get(key) if isinstance(execution, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else default


def run_flags(manifest: Mapping[str, Any]) -> list[Flag]:
    """Flags that cover the whole run, from `manifest["guards"]`."""
    guards = manifest.get("guards")
    if not isinstance(guards, dict):
        return []
    out: list[Flag] = []
    warnings = [str(w) for w in guards.get("warnings") or [] if isinstance(w, str)]
    load = guards.get("idle_cpu_load_pct")
    limit = _limit(manifest, "max_idle_cpu_pct", DEFAULT_MAX_IDLE_CPU_PCT)
    loaded = any("background" in w for w in warnings)
    if isinstance(load, (int, float)) and not isinstance(load, bool):
        loaded = loaded or load > limit
        if loaded:
            out.append(Flag("background-load", f"under background load ({load:.0f}% CPU during "
                            f"the idle baseline, limit {limit:g}%)"))
    elif loaded:
        out.append(Flag("background-load", "under background load"))
    if guards.get("on_battery") is True:
        out.append(Flag("on-battery", "on battery power"))
    return out


def _states(rows: Iterable[Mapping[str, Any]]) -> Iterable[Any]:
    for r in rows:
        for key in ("meter_state_start", "meter_state_end"):
            raw = r.get(key)
            if isinstance(raw, str) and raw:
                try:
                    yield json.loads(raw)
                except ValueError:
                    continue
            elif isinstance(raw, dict):
                yield raw


def _reasons(state: Any) -> set[str]:
    """Every `throttle_reasons` list anywhere in a meter state snapshot."""
    found: set[str] = set()
    if isinstance(state, dict):
        for k, v in state.items():
            if k == "throttle_reasons" and isinstance(v, list):
                found |= {str(x) for x in v}
            else:
                found |= _reasons(v)
    elif isinstance(state, list):
        for v in state:
            found |= _reasons(v)
    return found


def cell_flags(
    entry: Mapping[str, Any] | None, samples: Sequence[Mapping[str, Any]]
) -> list[Flag]:
    """Flags of one cell of one run: its manifest entry's warnings (the CV check) and the
    throttle reasons its measured trials recorded."""
    out: list[Flag] = []
    warnings = [str(w) for w in (entry or {}).get("warnings") or [] if isinstance(w, str)]
    noisy = [w for w in warnings if "coefficient of variation" in w or "noisy" in w]
    if noisy:
        out.append(Flag("noisy", noisy[0].split(":")[0]))
    reasons = set().union(*(_reasons(s) for s in _states(samples))) & THROTTLING
    if reasons:
        out.append(Flag("throttled", f"throttled ({', '.join(sorted(reasons))})"))
    return out


def energy_estimated(samples: Sequence[Mapping[str, Any]], metric: str) -> bool:
    """True when this metric's energy came from the estimate (CPU time × W/core) in any
    sample: a comparison of estimates would report the model of power, not a change."""
    return any(r.get("energy_method") in ("estimate", "mixed") for r in samples
               if r.get(metric) is not None)


# --------------------------------------------------------------------------------------------
# Shapes: a damaged run folder is one sentence, never a traceback mid-report

_MANIFEST_SHAPES: dict[str, type | tuple[type, ...]] = {
    "run_id": str, "config": dict, "machine": dict, "software": dict, "models": dict,
    "meters": list, "domains": list, "idle": dict, "guards": dict, "loads": list, "cells": list,
}


def check_run(run: Any, tables: Sequence[str] = ("energy", "power", "tokens", "quality")) -> None:
    """Raise ResultsError (one sentence naming the file and what is wrong) when the manifest's
    fields have the wrong shape or a side table cannot be read. `tables` are read in full (and
    cached on the run); the others present only have their footer checked, which catches a
    truncated file without reading a large one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.results import TABLES, ResultsError

    path = run.path / "manifest.json"
    m = run.manifest
    if not isinstance(m, dict):
        raise ResultsError(f"{path} is not a JSON object; the run folder is damaged, rerun it")
    for key, shape in _MANIFEST_SHAPES.items():
        if m.get(key) is not None and not isinstance(m[key], shape):
            raise ResultsError(
                f"{path}: {key!r} should be a JSON {_shape_name(shape)}, not "
                f"{type(m[key]).__name__}; the run folder is damaged, rerun it"
            )
    for i, entry in enumerate(m.get("cells") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("params") or {}, dict) or \
                not isinstance(entry.get("warnings") or [], list):
            raise ResultsError(
                f"{path}: cells[{i}] should be an object with 'params' an object and "
                "'warnings' a list; the run folder is damaged, rerun it"
            )
    for name in TABLES:
        if name == "trials":
            continue
        p = run.path / f"{name}.parquet"
        if not p.exists():
            continue
        try:
            if name in tables:
                run.table(name)
            else:
                pq.read_metadata(p)
        except (OSError, ValueError, pa.ArrowException) as e:
            raise ResultsError(f"cannot read {p} ({type(e).__name__}: {e}); the run folder is "
                               "damaged, rerun it or delete that file") from e


def _shape_name(shape: type | tuple[type, ...]) -> str:
    return {dict: "object", list: "array", str: "string"}.get(shape, str(shape))  # type: ignore
