"""The meter protocol: cumulative energy per domain at any instant, plus a polled timeline.

The runner alone knows about phases: it calls `read()` at phase edges and subtracts. Meters never
return a made-up number: a meter that cannot be read raises `MeterUnavailable` with a reason and,
where the user can act, the fix.
"""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from bench.meters.settings import EnergySettings

Method = Literal["counter", "sampled", "estimate"]
# What a domain's energy includes. Only component boundaries are summed into headline figures.
# "cpu-core" and "cpu-uncore" are RAPL's PP0/PP1 subzones: they lie inside "cpu-package".
Boundary = Literal[
    "cpu-package", "cpu-core", "cpu-uncore", "dram", "gpu-board", "soc", "psys", "wall",
    "process-cpu",
]


@dataclass(frozen=True)
class Domain:
    name: str  # "cpu-package-0", "dram-0", "gpu-0", "soc-cpu", "soc-gpu", "ane", "psys-0", ...
    meter: str  # "rapl", "nvml", "powermetrics", "estimate"
    method: Method
    boundary: Boundary
    # True when the domain is one of the disjoint components summed into energy_j (CPU packages,
    # DRAM, GPUs, SoC parts). False for wider boundaries (psys, wall) that are kept apart.
    component: bool
    # Shortest span over which a reading means something (counter update period, sample interval).
    update_period_s: float


@dataclass(frozen=True)
class Reading:
    t: float  # time.perf_counter() seconds
    joules: dict[str, float]  # cumulative energy per domain name since the meter started



class MeterUnavailable(Exception):
    """This meter cannot be read here; `reason` says why and `fix` (if any) what to do."""

    def __init__(self, meter: str, reason: str, fix: str | None = None):
        self.meter = meter
        self.reason = reason
        self.fix = fix
        super().__init__(f"{meter}: {reason}" + (f" Fix: {fix}" if fix else ""))


class Meter(ABC):
    """One energy interface. Subclasses implement `_sample`; polling and the timeline live here."""

    name: ClassVar[str]

    def __init__(self, settings: EnergySettings):
        self.settings = settings
        # The power timeline's spacing (energy.interval_ms) ...
        self.interval_s = settings.interval_ms / 1000.0
        # ... and how often the poller reads, which a meter may make shorter: RAPL reads each
        # counter often enough to see every wraparound, whatever the timeline's spacing.
        self.poll_interval_s = self.interval_s
        self._next_timeline_t = 0.0
        self._lock = threading.Lock()
        self._timeline: deque[Reading] = deque(maxlen=200_000)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Set when a poll failed; the poller then stops and the next read() at a phase edge
        # raises the same problem to the runner instead of a thread dying with a traceback.
        self.poll_error: BaseException | None = None

    # -- to implement -------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def open(cls, settings: EnergySettings) -> Meter:
        """Probe and open the meter, or raise MeterUnavailable(reason, fix)."""

    @abstractmethod
    def domains(self) -> list[Domain]: ...

    @abstractmethod
    def _sample(self) -> dict[str, float]:
        """Cumulative joules per domain now. Called under the lock, by the poller and by read()."""

    def snapshot(self) -> dict[str, object]:
        """State worth recording at a phase edge (temperature, clocks, throttle reasons)."""
        return {}

    def facts(self) -> dict[str, object]:
        """What the manifest should say about this meter (devices, driver, counter ranges)."""
        return {}

    def _close(self) -> None:
        pass

    # -- shared machinery ---------------------------------------------------------------------
    def read(self) -> Reading:
        if self.poll_error is not None:
            # A stopped poller may have missed counter wraps: no more numbers from this meter.
            raise MeterUnavailable(
                self.name, f"polling stopped: {type(self.poll_error).__name__}: {self.poll_error}"
            ) from self.poll_error
        with self._lock:
            t = time.perf_counter()
            joules = self._sample()
        return Reading(t, joules)

    def start(self) -> None:
        """Start the poller: it counts counter wraparounds and records the power timeline."""
        if self._thread is not None:
            return
        first = self.read()
        self._timeline.append(first)
        self._next_timeline_t = first.t + self.interval_s
        self._thread = threading.Thread(target=self._poll, name=f"meter-{self.name}", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                reading = self.read()
            except Exception as e:  # noqa: BLE001 - any failure ends polling; read() re-raises it
                self.poll_error = e
                return
            # Only every interval_s goes into the timeline; the reads between only keep
            # counters honest. A late poll does not shift the later timeline points.
            if reading.t >= self._next_timeline_t:
                self._timeline.append(reading)
                self._next_timeline_t += self.interval_s
                if self._next_timeline_t <= reading.t:  # more than one interval late
                    self._next_timeline_t = reading.t + self.interval_s

    def timeline(self, t0: float, t1: float) -> list[Reading]:
        """Polled readings with t0 <= t <= t1 (perf_counter seconds)."""
        return [r for r in list(self._timeline) if t0 <= r.t <= t1]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._close()


@dataclass
class MeterStatus:
    """What `auto` found for one meter: open, or why not."""

    name: str
    available: bool
    reason: str = ""
    fix: str | None = None
    facts: dict[str, object] = field(default_factory=dict)
