"""A fake Linux powercap tree: zone directories with name / energy_uj / max_energy_range_uj.

Counters advance at a known power and wrap at max_energy_range_uj exactly as the kernel's do
(0..max, then 0 again). Files are replaced atomically, so a meter reading while a writer thread
advances them sees either the old value or the new one, as with sysfs.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class FakeZone:
    path: Path
    power_w: float
    max_range_uj: int
    raw_uj: int
    injected_uj: int = 0  # the truth: every µJ added since creation, never wrapped
    wraps: int = 0


class FakePowercap:
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.zones: dict[str, FakeZone] = {}
        self._lock = threading.Lock()

    def add_zone(self, zone: str, name: str, power_w: float, max_range_uj: int = 262143328850,
                 start_uj: int = 0) -> FakeZone:
        d = self.root / zone
        d.mkdir()
        (d / "name").write_text(name + "\n")
        (d / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
        z = FakeZone(d, power_w, max_range_uj, start_uj)
        self.zones[zone] = z
        self._write(z)
        return z

    def _write(self, z: FakeZone) -> None:
        tmp = z.path / ".energy_uj.tmp"
        tmp.write_text(f"{z.raw_uj}\n")
        os.replace(tmp, z.path / "energy_uj")

    def advance(self, seconds: float) -> None:
        """Every zone draws its power for `seconds`; counters wrap as the hardware's do."""
        with self._lock:
            for z in self.zones.values():
                add = round(z.power_w * seconds * 1e6)
                z.injected_uj += add
                total = z.raw_uj + add
                z.wraps += total // (z.max_range_uj + 1)
                z.raw_uj = total % (z.max_range_uj + 1)
                self._write(z)

    def truth_j(self, zone: str) -> float:
        return self.zones[zone].injected_uj / 1e6

    @contextmanager
    def running(self, step_s: float) -> Iterator[threading.Event]:
        """Advance by `step_s` of energy per step in a thread until the block ends.

        Steps advance by a fixed amount of energy, not by wall time, so the truth stays exact
        even when the thread is scheduled late.
        """
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set():
                self.advance(step_s)
                stop.wait(0.001)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        try:
            yield stop
        finally:
            stop.set()
            t.join()


def desktop_tree(root: Path) -> FakePowercap:
    """A desktop-like tree: one package with nested core/uncore and a DRAM subzone, plus psys."""
    pc = FakePowercap(root)
    pc.add_zone("intel-rapl:0", "package-0", 30.0)
    pc.add_zone("intel-rapl:0:0", "core", 20.0)
    pc.add_zone("intel-rapl:0:1", "uncore", 5.0)
    pc.add_zone("intel-rapl:0:2", "dram", 4.0)
    pc.add_zone("intel-rapl:1", "psys", 60.0)
    return pc
