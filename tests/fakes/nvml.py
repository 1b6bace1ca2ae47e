"""A stand-in for the `pynvml` module of nvidia-ml-py, following its documented API.

Only what bench calls: nvmlInit / nvmlShutdown, device count and handles, name, total energy
(mJ; raises NVMLError_NotSupported before Volta), power (mW), temperature, clocks, clock event
reasons, memory info, and the NVMLError hierarchy (NVMLError_<Name> subclasses generated from
the NVML_ERROR_* codes, as nvidia-ml-py does). Install it with
`monkeypatch.setitem(sys.modules, "pynvml", make_pynvml(...))`.
"""
from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class FakeClock:
    t: float = 0.0

    def __call__(self) -> float:
        return self.t


@dataclass
class FakeGpu:
    name: str
    power_w: Callable[[float], float]  # power at clock time t
    # Energy counter (mJ) at clock time t; None for a pre-Volta board without the counter.
    energy_mj: Callable[[float], int] | None = None
    temperature_c: int = 45
    sm_clock_mhz: int = 1410
    throttle_mask: int = 0
    memory_used_bytes: int = 1 << 30
    memory_total_bytes: int = 16 << 30
    calls: list[str] = field(default_factory=list)


_ERRORS = {
    "UNINITIALIZED": 1, "INVALID_ARGUMENT": 2, "NOT_SUPPORTED": 3, "NO_PERMISSION": 4,
    "NOT_FOUND": 6, "DRIVER_NOT_LOADED": 9, "LIBRARY_NOT_FOUND": 12, "FUNCTION_NOT_FOUND": 13,
    "GPU_IS_LOST": 15, "UNKNOWN": 999,
}


def make_pynvml(gpus: list[FakeGpu], clock: FakeClock | None = None, init_error: str | None = None,
                driver: str = "550.54.15", event_reasons_api: bool = True) -> types.ModuleType:
    """A module object shaped like nvidia-ml-py's pynvml.

    init_error: an NVMLError_<Name> raised by nvmlInit, e.g. "LibraryNotFound" (no driver
    library) or "DriverNotLoaded". event_reasons_api=False leaves out
    nvmlDeviceGetCurrentClocksEventReasons, as bindings before driver 535 do.
    """
    clock = clock or FakeClock()
    m = types.ModuleType("pynvml")
    state = {"init": 0}

    class NVMLError(Exception):
        value = 999

        def __str__(self) -> str:
            return f"NVML error {self.value}"

    m.NVMLError = NVMLError
    for const, value in _ERRORS.items():
        setattr(m, f"NVML_ERROR_{const}", value)
        cls_name = "NVMLError_" + const.title().replace("_", "")
        setattr(m, cls_name, type(cls_name, (NVMLError,), {"value": value}))
    m.NVML_TEMPERATURE_GPU = 0
    m.NVML_CLOCK_SM = 1

    def initialized() -> None:
        if state["init"] <= 0:
            raise m.NVMLError_Uninitialized()

    def nvmlInit() -> None:
        if init_error is not None:
            raise getattr(m, f"NVMLError_{init_error}")()
        state["init"] += 1

    def nvmlShutdown() -> None:
        initialized()
        state["init"] -= 1

    def nvmlSystemGetDriverVersion() -> str:
        initialized()
        return driver

    def nvmlDeviceGetCount() -> int:
        initialized()
        return len(gpus)

    def nvmlDeviceGetHandleByIndex(i: int) -> FakeGpu:
        initialized()
        if not 0 <= i < len(gpus):
            raise m.NVMLError_InvalidArgument()
        return gpus[i]

    def nvmlDeviceGetName(h: FakeGpu) -> str:
        return h.name

    def nvmlDeviceGetTotalEnergyConsumption(h: FakeGpu) -> int:
        initialized()
        h.calls.append("energy")
        if h.energy_mj is None:
            raise m.NVMLError_NotSupported()
        return h.energy_mj(clock.t)

    def nvmlDeviceGetPowerUsage(h: FakeGpu) -> int:
        initialized()
        h.calls.append("power")
        return round(h.power_w(clock.t) * 1000)

    def nvmlDeviceGetTemperature(h: FakeGpu, sensor: int) -> int:
        if sensor != m.NVML_TEMPERATURE_GPU:
            raise m.NVMLError_InvalidArgument()
        return h.temperature_c

    def nvmlDeviceGetClockInfo(h: FakeGpu, clock_type: int) -> int:
        if clock_type != m.NVML_CLOCK_SM:
            raise m.NVMLError_InvalidArgument()
        return h.sm_clock_mhz

    def reasons(h: FakeGpu) -> int:
        return h.throttle_mask

    def nvmlDeviceGetMemoryInfo(h: FakeGpu) -> types.SimpleNamespace:
        used = h.memory_used_bytes
        return types.SimpleNamespace(total=h.memory_total_bytes,
                                     free=h.memory_total_bytes - used, used=used)

    for fn in (nvmlInit, nvmlShutdown, nvmlSystemGetDriverVersion, nvmlDeviceGetCount,
               nvmlDeviceGetHandleByIndex, nvmlDeviceGetName, nvmlDeviceGetTotalEnergyConsumption,
               nvmlDeviceGetPowerUsage, nvmlDeviceGetTemperature, nvmlDeviceGetClockInfo,
               nvmlDeviceGetMemoryInfo):
        setattr(m, fn.__name__, fn)
    m.nvmlDeviceGetCurrentClocksThrottleReasons = reasons
    if event_reasons_api:
        m.nvmlDeviceGetCurrentClocksEventReasons = reasons
    m.state = state  # for tests: how many nvmlInit are not yet shut down
    return m
