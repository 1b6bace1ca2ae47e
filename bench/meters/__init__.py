"""The meter registry: names -> lazily imported classes, and opening what this machine can read.

Importing bench.meters imports no vendor library (pynvml, ...): each meter module is imported
only when that meter is opened. A hardware problem never raises from here; it becomes a
MeterStatus with the reason and, where the user can act, the fix.
"""
from __future__ import annotations

import importlib
from dataclasses import asdict

from bench.meters.base import Domain, Meter, MeterStatus, MeterUnavailable, Reading
from bench.meters.settings import EnergySettings

__all__ = [
    "HARDWARE_METERS",
    "METERS",
    "Domain",
    "Meter",
    "MeterStatus",
    "MeterUnavailable",
    "Reading",
    "meter_class",
    "open_meter",
    "open_meters",
    "probe_all",
]

METERS: dict[str, str] = {
    "rapl": "bench.meters.rapl:RaplMeter",
    "nvml": "bench.meters.nvml:NvmlMeter",
    "powermetrics": "bench.meters.powermetrics:PowermetricsMeter",
    "estimate": "bench.meters.estimate:EstimateMeter",
}
# What `auto` tries; the estimate only opens when none of these does.
HARDWARE_METERS = ("rapl", "nvml", "powermetrics")


def meter_class(name: str) -> type[Meter]:
    try:
        target = METERS[name]
    except KeyError:
        raise ValueError(f"unknown meter {name!r}; valid: {', '.join(METERS)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def open_meter(name: str, settings: EnergySettings) -> Meter:
    """Open one meter or raise MeterUnavailable (also for an unexpected failure while probing)."""
    try:
        return meter_class(name).open(settings)
    except MeterUnavailable:
        raise
    except ValueError:
        raise
    except Exception as e:  # a broken driver or binding must not stop a run
        raise MeterUnavailable(name, f"unexpected error while opening: {type(e).__name__}: {e}") \
            from e


def _try(name: str, settings: EnergySettings) -> tuple[Meter | None, MeterStatus]:
    try:
        meter = open_meter(name, settings)
    except MeterUnavailable as e:
        return None, MeterStatus(name, False, e.reason, e.fix)
    return meter, MeterStatus(name, True, facts=_facts(meter))


def _facts(meter: Meter) -> dict[str, object]:
    try:
        facts = dict(meter.facts())
    except Exception as e:  # noqa: BLE001 - facts are for the manifest; never fatal
        facts = {"facts_error": f"{type(e).__name__}: {e}"}
    facts["domains"] = [asdict(d) for d in meter.domains()]
    return facts


def open_meters(settings: EnergySettings) -> tuple[list[Meter], list[MeterStatus]]:
    """Open the meters the settings ask for; statuses say, for each one tried, yes or why not.

    "auto": every hardware meter readable here; the estimate only if none is (an estimate is
    never mixed with measurements). A list: exactly those. "none": nothing.
    """
    if settings.meters == "none":
        return [], []
    auto = settings.meters == "auto"
    names = list(HARDWARE_METERS) if auto else list(dict.fromkeys(settings.meters))
    meters: list[Meter] = []
    statuses: list[MeterStatus] = []
    for name in names:
        meter, status = _try(name, settings)
        statuses.append(status)
        if meter is not None:
            meters.append(meter)
    if auto and not meters:
        meter, status = _try("estimate", settings)
        statuses.append(status)
        if meter is not None:
            meters.append(meter)
    return meters, statuses


def probe_all(settings: EnergySettings) -> list[MeterStatus]:
    """For `doctor`: open, read once and close every known meter; what works and what to fix."""
    statuses: list[MeterStatus] = []
    for name in METERS:
        meter, status = _try(name, settings)
        if meter is not None:
            try:
                status.facts["first_reading_j"] = meter.read().joules
            except Exception as e:  # noqa: BLE001 - opened but unreadable is unavailable
                reason = e.reason if isinstance(e, MeterUnavailable) else f"{type(e).__name__}: {e}"
                fix = e.fix if isinstance(e, MeterUnavailable) else None
                status = MeterStatus(name, False, f"opened, but a read failed: {reason}", fix,
                                     facts=status.facts)
            try:
                status.facts["snapshot"] = meter.snapshot()
            except Exception as e:  # noqa: BLE001 - a snapshot is extra detail, never fatal
                status.facts["snapshot_error"] = f"{type(e).__name__}: {e}"
            meter.close()
        statuses.append(status)
    return statuses
