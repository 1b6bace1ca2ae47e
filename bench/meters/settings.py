"""Energy settings from the config's `energy:` section (owned by the meters layer).

Every path or command a meter needs comes from here, so tests and containers can point it
elsewhere (docs/design.md). docs/energy.md explains each figure's default.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from bench.schema import LocalPath, StrictModel

MeterName = Literal["rapl", "nvml", "powermetrics", "estimate"]


# Unknown keys are errors that suggest the key meant, like everywhere in the config.
_Strict = StrictModel


class RaplSettings(_Strict):
    root: LocalPath = "/sys/class/powercap"
    # A generous ceiling on what one RAPL zone can draw. With each zone's counter range it gives
    # the shortest time the counter can take to wrap; the poller reads often enough to see each.
    max_power_w: float = Field(default=1000.0, gt=0, le=100_000)


class PowermetricsSettings(_Strict):
    # None means: `powermetrics` when running as root, else `sudo -n powermetrics`.
    command: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=4096)]],
        Field(min_length=1, max_length=100),
    ] | None = None
    # How long open() waits for the first record before calling powermetrics unusable.
    start_timeout_s: float = Field(default=5.0, gt=0, le=120)


class NvmlSettings(_Strict):
    # Which GPUs to read (indices); None reads every GPU NVML reports.
    devices: list[Annotated[int, Field(ge=0, le=1023)]] | None = None


class EstimateSettings(_Strict):
    # Watts drawn by one fully busy core; see docs/energy.md for where the default comes from.
    watts_per_core: float = Field(default=10.0, gt=0, le=1000)


class EnergySettings(_Strict):
    meters: Literal["auto", "none"] | list[MeterName] = "auto"
    idle_s: float = Field(default=5.0, ge=0, le=3600)
    interval_ms: float = Field(default=50.0, ge=1, le=60_000)
    rapl: RaplSettings = RaplSettings()
    powermetrics: PowermetricsSettings = PowermetricsSettings()
    nvml: NvmlSettings = NvmlSettings()
    estimate: EstimateSettings = EstimateSettings()
