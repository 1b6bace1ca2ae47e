"""The estimate used where no energy can be read (VMs, locked-down machines): CPU time x watts.

energy = (CPU seconds of this process + of tracked child processes) x energy.estimate.
watts_per_core. It is method "estimate", boundary "process-cpu", and never a measurement:
docs/energy.md gives the default figure and its arithmetic.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from bench.meters.base import Domain, Meter
from bench.meters.settings import EnergySettings

DOMAIN = "cpu-estimate"
# This process's CPU clock is fine-grained, but a child's CPU time (from /proc on Linux) moves in
# scheduler ticks of 10 ms, so shorter phases are not resolved.
UPDATE_PERIOD_S = 0.01

# Seam for tests: this process's CPU clock (all its threads, user + system).
_process_time = time.process_time


@dataclass
class _Child:
    process: Any  # psutil.Process
    base_cpu_s: float
    last_cpu_s: float  # kept after the process exits, so its share is not lost


class _Never(Exception):
    """Matches nothing: the stand-in for psutil.Error until psutil is imported."""


def _cpu_s(process: Any) -> float:
    t = process.cpu_times()
    return float(t.user + t.system)


class EstimateMeter(Meter):
    """CPU seconds x watts per core. Always opens: it needs nothing from the machine."""

    name = "estimate"

    def __init__(self, settings: EnergySettings):
        super().__init__(settings)
        self.watts_per_core = settings.estimate.watts_per_core
        self._cpu0 = _process_time()
        self._children: dict[int, _Child] = {}
        self._gone: type[BaseException] = _Never
        self._domain = Domain(DOMAIN, self.name, "estimate", "process-cpu", True, UPDATE_PERIOD_S)

    @classmethod
    def open(cls, settings: EnergySettings) -> EstimateMeter:
        return cls(settings)

    def track_pid(self, pid: int) -> None:
        """Count another process's CPU time too (a server backend such as llama-server).

        Counts from now on. Needs psutil (a core dependency of bench).
        """
        import psutil  # imported here: only backends that spawn a server call this

        with self._lock:
            if pid in self._children:
                return
            proc = psutil.Process(pid)
            cpu = _cpu_s(proc)
            self._children[pid] = _Child(proc, cpu, cpu)
            # NoSuchProcess / AccessDenied once the process has exited.
            self._gone = psutil.Error

    def domains(self) -> list[Domain]:
        return [self._domain]

    def _sample(self) -> dict[str, float]:
        cpu_s = _process_time() - self._cpu0
        for child in self._children.values():
            # Once it has exited, keep what it had used at the last read. The poller reads
            # every interval, so at most one interval of its CPU time goes uncounted.
            with contextlib.suppress(self._gone):
                child.last_cpu_s = _cpu_s(child.process)
            cpu_s += child.last_cpu_s - child.base_cpu_s
        return {DOMAIN: cpu_s * self.watts_per_core}

    def facts(self) -> dict[str, object]:
        return {
            "formula": "joules = CPU seconds (this process + tracked children) x watts_per_core",
            "watts_per_core": self.watts_per_core,
            "tracked_pids": sorted(self._children),
            "note": "an estimate, not a measurement; see docs/energy.md",
        }
