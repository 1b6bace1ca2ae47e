"""RAPL through Linux powercap sysfs: CPU package, DRAM (components), core/uncore, psys (apart).

Zones are `intel-rapl:N` (package, psys, sometimes DRAM) and `intel-rapl:N:M` (core, uncore,
DRAM). AMD Zen appears under the same `intel-rapl` names since Linux 5.8; `amd-rapl` is accepted
where a kernel uses it. `intel-rapl-mmio:*` is a second window onto the same package counter and
is ignored, since reading both would count the package twice.
"""
from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.meters.base import Boundary, Domain, Meter, MeterUnavailable
from bench.meters.settings import EnergySettings

# RAPL updates its energy status registers about every millisecond (Intel SDM vol. 3B, 15.10.1):
# a shorter span cannot be resolved.
UPDATE_PERIOD_S = 0.001
# The poller reads each counter at least this many times per shortest possible wrap period
# (the range over energy.rapl.max_power_w, itself a generous bound): margin for late polls.
POLLS_PER_WRAP = 4
# Faster polling than the counters update cannot help: a counter that could wrap within this
# many seconds (POLLS_PER_WRAP polls) is refused.
MIN_POLL_S = UPDATE_PERIOD_S

_ZONE_RE = re.compile(r"^(intel-rapl|amd-rapl):(\d+)(?::(\d+))?$")

PERMISSION_REASON = (
    "energy_uj is readable only by root on this kernel: since CVE-2020-8694 (the PLATYPUS "
    "power side channel, Linux 5.10 and the 2020 stable updates) unprivileged reads are refused."
)
UDEV_RULE = (
    'ACTION=="add", SUBSYSTEM=="powercap", KERNEL=="intel-rapl:*", '
    'RUN+="/bin/chmod o+r /sys%p/energy_uj"'
)
PERMISSION_FIX = (
    "run bench as root, or make the counters readable until the next boot with "
    "`sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj "
    "/sys/class/powercap/intel-rapl:*:*/energy_uj`, or for good with a udev rule: put the line "
    f"`{UDEV_RULE}` in /etc/udev/rules.d/70-bench-rapl.rules, then run "
    "`sudo udevadm trigger --action=add --subsystem-match=powercap`. This reopens the side "
    "channel to every local user; do it only on a machine you trust everyone on."
)

# Seam for tests: the clock used to notice reads too far apart to count every wraparound.
_now = time.perf_counter


@dataclass
class _Zone:
    """One counter. Paths are resolved once at open so a read is one open/read/close per zone."""

    zone: str  # "intel-rapl:0:1"
    name: str  # the zone's `name` file: "package-0", "core", "dram", "psys", ...
    domain: Domain
    energy_path: str
    max_range_uj: int
    base_raw: int  # the raw value at open: cumulative energy counts from here
    last_raw: int
    wraps: int = 0


def _read_int(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return int(os.read(fd, 64))
    finally:
        os.close(fd)


def _zone_key(zone: str) -> tuple[str, int, int]:
    m = _ZONE_RE.match(zone)
    assert m is not None
    return (m.group(1), int(m.group(2)), -1 if m.group(3) is None else int(m.group(3)))


def _domain_for(
    name: str, parent_name: str | None, taken: set[str]
) -> tuple[str, Boundary, bool] | None:
    """Domain name, boundary and component flag for one zone, or None for a zone we don't know."""
    # "package-0" (or "package-0-die-1" on multi-die parts) -> suffix "0" / "0-die-1"
    parent_suffix = None
    if parent_name is not None and parent_name.startswith("package-"):
        parent_suffix = parent_name.removeprefix("package-")

    def unique(base: str, suffix: str | None) -> str:
        if suffix is not None and f"{base}-{suffix}" not in taken:
            return f"{base}-{suffix}"
        i = 0
        while f"{base}-{i}" in taken:
            i += 1
        return f"{base}-{i}"

    if name.startswith("package"):
        # Each package (and each die of a multi-die package) is disjoint from the others.
        return unique("cpu-package", name.removeprefix("package-")), "cpu-package", True
    if name == "dram":
        # Intel's DRAM domain is not part of PKG, even where sysfs lists it under the package.
        return unique("dram", parent_suffix), "dram", True
    if name == "core":
        # PP0: the cores, inside the package. Kept for analysis, never summed.
        return unique("cpu-core", parent_suffix), "cpu-core", False
    if name == "uncore":
        # PP1: the integrated GPU and other uncore parts, inside the package. Never summed.
        return unique("cpu-uncore", parent_suffix), "cpu-uncore", False
    if name == "psys":
        # The whole SoC/platform: a wider boundary that contains the package and DRAM.
        return unique("psys", None), "psys", False
    return None


class RaplMeter(Meter):
    """Cumulative joules per RAPL zone, counting wraparounds of each `energy_uj` counter.

    The poller (`start()`) must run while measuring: it is what sees every wraparound between
    phase edges. It reads as often as the smallest counter range needs (range / max_power_w /
    POLLS_PER_WRAP), even when the power timeline is sparser.
    """

    name = "rapl"

    def __init__(self, settings: EnergySettings, root: Path, zones: list[_Zone],
                 skipped: list[str]):
        super().__init__(settings)
        self.root = root
        self._zones = zones
        self._skipped = skipped
        self.max_power_w = settings.rapl.max_power_w
        # The shortest time any counter could take to wrap at the plausible maximum power.
        self.min_wrap_s = min(z.max_range_uj / 1e6 / self.max_power_w for z in zones)
        self.poll_interval_s = min(self.interval_s, self.min_wrap_s / POLLS_PER_WRAP)
        # Reads further apart than min_wrap_s may have missed a wrap; counted, never hidden.
        # The span from open() to the first read is not counted: no phase starts before it.
        self._last_sample_t: float | None = None
        self.unsafe_gaps = 0

    @classmethod
    def open(cls, settings: EnergySettings) -> RaplMeter:
        root = Path(settings.rapl.root)
        if not root.is_dir():
            if not sys.platform.startswith("linux"):
                raise MeterUnavailable(
                    cls.name, f"RAPL is read through Linux powercap; this is {sys.platform}."
                )
            raise MeterUnavailable(
                cls.name,
                f"no powercap tree at {root} (a VM, a CPU without RAPL, or a container that "
                "does not mount it).",
                "in a container, bind-mount /sys/class/powercap and point energy.rapl.root at it",
            )
        entries = [p.name for p in root.iterdir() if _ZONE_RE.match(p.name)]
        # Prefer intel-rapl: a kernel exposing both names would be showing the same counters.
        prefixes = {_zone_key(e)[0] for e in entries}
        prefix = "intel-rapl" if "intel-rapl" in prefixes else "amd-rapl"
        entries = sorted((e for e in entries if e.startswith(prefix + ":")), key=_zone_key)
        if not entries:
            raise MeterUnavailable(
                cls.name,
                f"no RAPL zones under {root} (no intel-rapl:* or amd-rapl:*; a VM or a CPU "
                "without RAPL, or the intel_rapl_common / rapl kernel module is not loaded).",
                "on bare metal, `sudo modprobe intel_rapl_common` (Intel) or `sudo modprobe "
                "intel_rapl_msr`; AMD Zen needs Linux 5.8 or newer",
            )

        names: dict[str, str] = {}
        for e in entries:
            try:
                names[e] = (root / e / "name").read_text().strip()
            except OSError as err:
                raise MeterUnavailable(cls.name, f"cannot read {root / e / 'name'}: {err}") from err

        zones: list[_Zone] = []
        skipped: list[str] = []
        taken: set[str] = set()
        for e in entries:
            _, pkg, sub = _zone_key(e)
            parent = names.get(f"{prefix}:{pkg}") if sub >= 0 else None
            mapped = _domain_for(names[e], parent, taken)
            if mapped is None:
                skipped.append(f"{e} ({names[e]}): unknown RAPL domain name")
                continue
            dom_name, boundary, component = mapped
            energy_path = str(root / e / "energy_uj")
            try:
                raw = _read_int(energy_path)
            except PermissionError as err:
                raise MeterUnavailable(
                    cls.name, f"{PERMISSION_REASON} ({energy_path})", PERMISSION_FIX
                ) from err
            except (OSError, ValueError) as err:
                raise MeterUnavailable(cls.name, f"cannot read {energy_path}: {err}") from err
            try:
                max_range = _read_int(str(root / e / "max_energy_range_uj"))
            except (OSError, ValueError) as err:
                skipped.append(f"{e} ({names[e]}): no max_energy_range_uj ({err}), so its "
                               "wraparounds cannot be counted")
                continue
            if max_range <= 0:
                skipped.append(f"{e} ({names[e]}): max_energy_range_uj is {max_range}")
                continue
            taken.add(dom_name)
            domain = Domain(dom_name, cls.name, "counter", boundary, component, UPDATE_PERIOD_S)
            zones.append(_Zone(e, names[e], domain, energy_path, max_range, raw, raw))
        if not zones:
            raise MeterUnavailable(cls.name, "no readable RAPL zone: " + "; ".join(skipped))

        meter = cls(settings, root, zones, skipped)
        if meter.poll_interval_s < MIN_POLL_S:
            # Only a tiny counter range or an absurd power bound gets here: no poll rate
            # could see each wrap, since the counters themselves update once per millisecond.
            raise MeterUnavailable(
                cls.name,
                f"a RAPL counter could wrap every {meter.min_wrap_s * 1000:.3g} ms at "
                f"{meter.max_power_w:g} W (energy.rapl.max_power_w), faster than any poll can "
                "count each wraparound.",
                "set energy.rapl.max_power_w to the most this machine's CPU can draw",
            )
        return meter

    def domains(self) -> list[Domain]:
        return [z.domain for z in self._zones]

    def _sample(self) -> dict[str, float]:
        now = _now()
        if self._last_sample_t is not None and now - self._last_sample_t > self.min_wrap_s:
            self.unsafe_gaps += 1
        self._last_sample_t = now
        out: dict[str, float] = {}
        for z in self._zones:
            raw = _read_int(z.energy_path)
            if raw < z.last_raw:
                # The counter runs 0..max_energy_range_uj, then starts again at 0.
                z.wraps += 1
            z.last_raw = raw
            out[z.domain.name] = (raw - z.base_raw + z.wraps * (z.max_range_uj + 1)) / 1e6
        return out

    def snapshot(self) -> dict[str, object]:
        return {"rapl_unsafe_gaps": self.unsafe_gaps}

    def facts(self) -> dict[str, object]:
        return {
            "root": str(self.root),
            "zones": [
                {
                    "zone": z.zone,
                    "name": z.name,
                    "domain": z.domain.name,
                    "boundary": z.domain.boundary,
                    "component": z.domain.component,
                    "max_energy_range_uj": z.max_range_uj,
                }
                for z in self._zones
            ],
            "skipped": list(self._skipped),
            "update_period_s": UPDATE_PERIOD_S,
            "poll_interval_s": self.interval_s,
            "max_power_w": self.max_power_w,
            "min_wrap_s": self.min_wrap_s,
            "unsafe_gaps": self.unsafe_gaps,
        }
