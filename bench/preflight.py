"""One check of a config before anything is measured, shared by `--dry-run` and the run.

What the dry run accepts, the run can run: both expand the sweep here (refusing it above
execution.max_cells), check every local model file (exists, a regular file, readable, GGUF magic,
not a FIFO) and open every energy meter the config names explicitly. Nothing here imports or
runs code from the working folder or from model packages.
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import ConfigError, LoadedConfig
from bench.meters import MeterStatus, MeterUnavailable, open_meter
from bench.models import Located, check_local_file, locate
from bench.sweep import Cell, expand, groups


@dataclass
class Plan:
    """The cells of a run and what stands between them and a measurement."""

    cells: list[Cell]
    located: dict[str, Located] = field(default_factory=dict)  # variant key -> where it is
    # Not local yet, but the run can fetch them (Hub downloads, package assembly, quantizing).
    missing: list[Located] = field(default_factory=list)
    # Each stops the run before its idle baseline: one sentence with the cause and the fix.
    errors: list[str] = field(default_factory=list)
    meters: list[MeterStatus] = field(default_factory=list)

    def checked(self) -> Plan:
        """This plan, or ConfigError (exit 2) naming every problem found."""
        if self.errors:
            raise ConfigError("\n".join(self.errors))
        return self


class _Stop:
    """Ctrl-C and SIGTERM while the sweep is built: raise at once, and remember it.

    The handler raises KeyboardInterrupt, but an exception raised while the garbage collector
    runs a finalizer is swallowed (Python prints it as ignored), and building a large sweep
    triggers many collections. So the signal is also remembered, and expansion checks it as
    it goes (`check`), which makes every signal count.
    """

    def __init__(self) -> None:
        self.signalled = False

    def handler(self, signum: int, frame: Any) -> None:
        self.signalled = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.signalled:
            raise KeyboardInterrupt


@contextmanager
def _interruptible() -> Iterator[_Stop]:
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals go to the main thread; nothing to install here
        return
    old = {s: signal.signal(s, stop.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
        stop.check()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _model_errors(located: Located) -> list[str]:
    """Problems with files the user named on this machine; a download is the run's job."""
    spec = located.variant.spec
    out = []
    if spec.path is not None and located.problem is not None:
        out.append(f"models[{spec.id}]: {located.problem}")
    if spec.quantize_from is not None and not located.downloadable and located.problem:
        out.append(f"models[{spec.id}]: {located.problem}")
    if spec.imatrix is not None:
        # Legacy importance matrices (.dat) are not GGUF: everything but the magic is checked.
        problem = check_local_file(
            Path(os.path.expanduser(spec.imatrix)), "imatrix file", gguf=False
        )
        if problem is not None:
            out.append(f"models[{spec.id}].imatrix: {problem}")
    return out


def _meter_errors(loaded: LoadedConfig) -> tuple[list[str], list[MeterStatus]]:
    """Open and close each meter named in energy.meters; `auto` and `none` ask for nothing."""
    energy = loaded.config.energy
    if not isinstance(energy.meters, list):
        return [], []
    errors: list[str] = []
    statuses: list[MeterStatus] = []
    for name in dict.fromkeys(energy.meters):
        try:
            meter = open_meter(name, energy)
        except MeterUnavailable as e:
            statuses.append(MeterStatus(name, False, e.reason, e.fix))
            fix = e.fix or "fix the meter"
            errors.append(
                f"energy.meters names {name!r}, which cannot be read here: {e.reason.rstrip('.')}."
                f" Fix: {fix.rstrip('.')}, or use energy.meters: auto to measure with what is "
                "readable"
            )
            continue
        statuses.append(MeterStatus(name, True))
        meter.close()
    return errors, statuses


def plan(loaded: LoadedConfig, online: bool = False, check_meters: bool = True) -> Plan:
    """Expand and check a loaded config. Raises ConfigError for a sweep that cannot be built;
    other problems are collected in `errors` (see Plan.checked). `online` is accepted for the
    dry run's Hub sizes, which it asks for itself; nothing here uses the network."""
    del online  # the checks are the same offline and online
    with _interruptible() as stop:
        cells = expand(loaded.config, check=stop.check)
        result = Plan(cells)
        for group in groups(cells):
            variant = group[0].variant
            if variant.key in result.located:
                continue
            loc = locate(variant)
            result.located[variant.key] = loc
            result.errors += _model_errors(loc)
            if not loc.ok and loc.downloadable:
                result.missing.append(loc)
    if check_meters:
        errors, statuses = _meter_errors(loaded)
        result.errors += errors
        result.meters = statuses
    return result
