"""NVIDIA GPUs through NVML (the `pynvml` module of NVIDIA's nvidia-ml-py): board energy per GPU.

Volta and newer expose a total-energy counter (mJ since the driver loaded): method "counter".
Older boards only report instantaneous power (mW): those samples are integrated with the
trapezoid rule over the timestamps actually measured, method "sampled".
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.meters.base import Domain, Meter, MeterUnavailable
from bench.meters.settings import EnergySettings

# NVML refreshes the energy counter (and the power reading it accumulates) on the order of
# 100 ms on current boards (Zeus documents windows shorter than an update reading as 0 J), so a
# phase shorter than this is not resolved.
COUNTER_UPDATE_PERIOD_S = 0.1
# Pre-Volta power readings refresh no faster than that either.
SENSOR_UPDATE_PERIOD_S = 0.1

INSTALL_FIX = "pip install 'bench[nvml]'  (installs nvidia-ml-py, NVIDIA's own binding)"
UNOFFICIAL_FIX = "pip uninstall pynvml && pip install nvidia-ml-py"

# Clock event ("throttle") reason bits, from nvml.h's nvmlClocksEventReason* /
# nvmlClocksThrottleReason* constants (same values under both names).
THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
    0x200: "board_limit",
    0x400: "reliability",
}

# Seam for tests: the clock that timestamps power samples.
_now = time.perf_counter


def decode_throttle_reasons(mask: int) -> list[str]:
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_REASONS)
    if unknown:
        names.append(hex(unknown))
    return names


def _unofficial_pynvml(module: ModuleType) -> str | None:
    """The version of the unofficial `pynvml` distribution when it supplies the module, else None.

    nvidia-ml-py ships a single file, pynvml.py. The gpuopenanalytics `pynvml` distribution up to
    11.x ships a package, pynvml/__init__.py, which shadows it when both are installed (12.x and
    later only add pynvml_utils and depend on nvidia-ml-py, which is fine).
    """
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = Path(file)
    if path.name != "__init__.py" or path.parent.name != "pynvml":
        return None
    try:
        return importlib.metadata.version("pynvml")
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def _error_class(nvml: ModuleType, suffix: str) -> type[BaseException]:
    cls = getattr(nvml, f"NVMLError_{suffix}", None)
    # A class no exception is an instance of, so `except` on a missing name matches nothing.
    return cls if isinstance(cls, type) else _Never


class _Never(Exception):
    pass


def _text(value: Any) -> str:
    # nvidia-ml-py returns str since 11.5; older bindings returned bytes.
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class _Gpu:
    index: int
    handle: Any
    name: str
    domain: Domain
    uses_counter: bool
    base_mj: int = 0  # counter value at open
    # Trapezoid state for "sampled" GPUs: the last sample and the energy integrated up to it.
    last_t: float = 0.0
    last_w: float = 0.0
    joules: float = 0.0


class NvmlMeter(Meter):
    """Per-GPU board energy ("gpu-N", boundary gpu-board), by counter where the GPU has one."""

    name = "nvml"

    def __init__(self, settings: EnergySettings, nvml: ModuleType, gpus: list[_Gpu],
                 driver: str, skipped: list[str]):
        super().__init__(settings)
        self._nvml = nvml
        self._gpus = gpus
        self._driver = driver
        self._skipped = skipped

    @classmethod
    def open(cls, settings: EnergySettings) -> NvmlMeter:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError as err:
            raise MeterUnavailable(
                cls.name, "nvidia-ml-py is not installed (no module pynvml).", INSTALL_FIX
            ) from err
        unofficial = _unofficial_pynvml(nvml)
        if unofficial is not None:
            raise MeterUnavailable(
                cls.name,
                f"`import pynvml` finds the unofficial pynvml package ({unofficial}), which "
                "shadows NVIDIA's nvidia-ml-py and lags its API.",
                UNOFFICIAL_FIX,
            )

        try:
            nvml.nvmlInit()
        except nvml.NVMLError as err:
            raise cls._init_error(nvml, err) from err
        try:
            gpus, skipped = cls._open_gpus(nvml, settings)
            driver = _text(nvml.nvmlSystemGetDriverVersion())
        except MeterUnavailable:
            _shutdown(nvml)
            raise
        except nvml.NVMLError as err:
            _shutdown(nvml)
            raise MeterUnavailable(cls.name, f"NVML failed while opening the GPUs: {err}") from err
        return cls(settings, nvml, gpus, driver, skipped)

    @classmethod
    def _init_error(cls, nvml: ModuleType, err: BaseException) -> MeterUnavailable:
        if isinstance(err, _error_class(nvml, "LibraryNotFound")):
            return MeterUnavailable(
                cls.name,
                "the NVML library (libnvidia-ml.so.1 / nvml.dll) was not found: no NVIDIA "
                "driver here.",
                "install the NVIDIA driver; in a container, run it with the NVIDIA container "
                "toolkit (`--gpus all`)",
            )
        if isinstance(err, _error_class(nvml, "DriverNotLoaded")):
            return MeterUnavailable(
                cls.name,
                "the NVIDIA kernel driver is not loaded (no NVIDIA GPU, or the driver failed).",
                "check that `nvidia-smi` works; load the driver or reboot after installing it",
            )
        if isinstance(err, _error_class(nvml, "NoPermission")):
            return MeterUnavailable(
                cls.name, f"NVML refused access: {err}.",
                "give this user access to /dev/nvidia* (the video group on most distributions)",
            )
        return MeterUnavailable(cls.name, f"nvmlInit failed: {err}.")

    @classmethod
    def _open_gpus(cls, nvml: ModuleType, settings: EnergySettings) -> tuple[list[_Gpu], list[str]]:
        count = nvml.nvmlDeviceGetCount()
        if count == 0:
            raise MeterUnavailable(cls.name, "NVML sees no GPU.")
        wanted = settings.nvml.devices if settings.nvml.devices is not None else range(count)
        bad = [i for i in wanted if not 0 <= i < count]
        if bad:
            raise MeterUnavailable(
                cls.name,
                f"energy.nvml.devices names GPU(s) {bad}, but NVML sees {count} (0..{count - 1}).",
                "fix energy.nvml.devices",
            )
        not_supported = _error_class(nvml, "NotSupported")
        no_function = _error_class(nvml, "FunctionNotFound")
        gpus: list[_Gpu] = []
        skipped: list[str] = []
        for i in wanted:
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            name = _text(nvml.nvmlDeviceGetName(handle))
            try:
                base_mj = int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
            except (not_supported, no_function):
                pass
            else:
                domain = Domain(f"gpu-{i}", cls.name, "counter", "gpu-board", True,
                                COUNTER_UPDATE_PERIOD_S)
                gpus.append(_Gpu(i, handle, name, domain, True, base_mj=base_mj))
                continue
            try:
                watts = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            except (not_supported, no_function):
                skipped.append(f"gpu-{i} ({name}): reports neither an energy counter nor power")
                continue
            period = max(settings.interval_ms / 1000.0, SENSOR_UPDATE_PERIOD_S)
            domain = Domain(f"gpu-{i}", cls.name, "sampled", "gpu-board", True, period)
            gpus.append(_Gpu(i, handle, name, domain, False, last_t=_now(), last_w=watts))
        if not gpus:
            raise MeterUnavailable(cls.name, "; ".join(skipped))
        return gpus, skipped

    def domains(self) -> list[Domain]:
        return [g.domain for g in self._gpus]

    def _sample(self) -> dict[str, float]:
        nvml = self._nvml
        out: dict[str, float] = {}
        for g in self._gpus:
            if g.uses_counter:
                mj = int(nvml.nvmlDeviceGetTotalEnergyConsumption(g.handle))
                out[g.domain.name] = (mj - g.base_mj) / 1000.0
            else:
                watts = nvml.nvmlDeviceGetPowerUsage(g.handle) / 1000.0
                t = _now()
                # Trapezoid over the measured gap, not the requested interval: polls drift.
                g.joules += (g.last_w + watts) / 2.0 * (t - g.last_t)
                g.last_t, g.last_w = t, watts
                out[g.domain.name] = g.joules
        return out

    def snapshot(self) -> dict[str, object]:
        """Per GPU: temperature, SM clock, clock event (throttle) reasons, memory used.

        A few NVML calls per GPU (well under a millisecond each); read energy first at an edge.
        """
        nvml = self._nvml
        temp_sensor = getattr(nvml, "NVML_TEMPERATURE_GPU", 0)
        sm_clock = getattr(nvml, "NVML_CLOCK_SM", 1)
        # The clocks-event name replaced the throttle name in driver 535; keep both working.
        reasons_fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None
        )
        out: dict[str, object] = {}
        for g in self._gpus:
            state: dict[str, object] = {}
            for key, call in (
                ("temperature_c", lambda h: nvml.nvmlDeviceGetTemperature(h, temp_sensor)),
                ("sm_clock_mhz", lambda h: nvml.nvmlDeviceGetClockInfo(h, sm_clock)),
                ("throttle_reasons",
                 (lambda h: decode_throttle_reasons(int(reasons_fn(h)))) if reasons_fn else None),
                ("memory_used_bytes", lambda h: int(nvml.nvmlDeviceGetMemoryInfo(h).used)),
            ):
                if call is None:
                    continue
                try:
                    state[key] = call(g.handle)
                except nvml.NVMLError:
                    # Not supported on this board: leave it out rather than record a zero.
                    continue
            out[g.domain.name] = state
        return out

    def facts(self) -> dict[str, object]:
        try:
            binding = importlib.metadata.version("nvidia-ml-py")
        except importlib.metadata.PackageNotFoundError:
            binding = None
        return {
            "driver_version": self._driver,
            "nvidia_ml_py": binding,
            "gpus": [
                {
                    "index": g.index,
                    "name": g.name,
                    "domain": g.domain.name,
                    "energy_counter": g.uses_counter,
                    "method": g.domain.method,
                    "update_period_s": g.domain.update_period_s,
                }
                for g in self._gpus
            ],
            "skipped": list(self._skipped),
        }

    def _close(self) -> None:
        _shutdown(self._nvml)


def _shutdown(nvml: ModuleType) -> None:
    # Closing must not fail a run: a GPU that fell off the bus still lets us finish.
    with contextlib.suppress(nvml.NVMLError):
        nvml.nvmlShutdown()
