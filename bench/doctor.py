"""What can be measured on this machine, and why not, as data (`bench doctor` prints it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.machine import is_root, machine_facts
from bench.meters import probe_all
from bench.meters.settings import EnergySettings


def llama_build() -> dict[str, Any]:
    """Which compute backends this llama-cpp-python build has (CPU, CUDA, Metal, ...)."""
    from bench.backends.base import BackendError
    from bench.backends.llama_cpp import LlamaCppBackend

    try:
        sw = LlamaCppBackend.software()
    except BackendError as e:
        return {"error": str(e)}
    if sw.get("error"):
        return {"error": sw["error"]}
    info = sw.get("llama_cpp_system_info") or ""
    backends = ["CPU"] + [b for b in ("CUDA", "Metal", "Vulkan", "ROCm", "SYCL") if b in info]
    return {**sw, "backends": backends}


# Facts too raw for the overview (they stay in the manifest).
_NOT_SHOWN = {"domains", "first_reading_j", "snapshot"}


@dataclass
class MeterRow:
    name: str
    available: bool
    what: str  # why not, or what it reads
    fix: str


@dataclass
class DoctorReport:
    machine: dict[str, Any]
    root: bool
    meters: list[MeterRow] = field(default_factory=list)
    llama: dict[str, Any] = field(default_factory=dict)

    @property
    def hardware_meter(self) -> bool:
        return any(m.available and m.name != "estimate" for m in self.meters)


def doctor(settings: EnergySettings | None = None) -> DoctorReport:
    """Probe the machine, every energy meter and the engine build; print nothing."""
    settings = settings or EnergySettings()
    report = DoctorReport(machine=machine_facts(), root=is_root())
    for s in probe_all(settings):
        shown = {k: v for k, v in (s.facts or {}).items() if k not in _NOT_SHOWN}
        what = s.reason if not s.available else (
            ", ".join(f"{k}={v}" for k, v in shown.items()) or "readable"
        )
        report.meters.append(MeterRow(s.name, s.available, str(what or ""), s.fix or ""))
    report.llama = llama_build()
    return report
