"""EstimateMeter, and the registry's choice of meters (auto, a list, none, doctor's probe)."""
from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from bench.meters import METERS, meter_class, open_meters, probe_all
from bench.meters import estimate as est
from bench.meters.estimate import EstimateMeter
from bench.meters.settings import EnergySettings


def no_hardware(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kw: object) -> EnergySettings:
    """Settings for a machine like a VM: no powercap tree, no NVML, not macOS."""
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr("bench.meters.powermetrics._is_macos", lambda: False)
    return EnergySettings(rapl={"root": str(tmp_path / "no-powercap")}, **kw)


def test_estimate_is_cpu_seconds_times_watts_per_core(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = [100.0]
    monkeypatch.setattr(est, "_process_time", lambda: cpu[0])
    m = EstimateMeter.open(EnergySettings(estimate={"watts_per_core": 12.5}))
    assert m.read().joules == {"cpu-estimate": 0.0}
    cpu[0] = 103.2  # 3.2 CPU seconds, e.g. 0.8 s on four busy threads
    assert m.read().joules["cpu-estimate"] == pytest.approx(40.0)


def test_estimate_domain_says_estimate_and_process_cpu_never_a_measurement() -> None:
    (d,) = EstimateMeter.open(EnergySettings()).domains()
    assert (d.name, d.meter, d.method, d.boundary, d.component) == (
        "cpu-estimate", "estimate", "estimate", "process-cpu", True
    )


def test_estimate_counts_a_tracked_child_process_from_when_it_is_tracked() -> None:
    pytest.importorskip("psutil")  # a core dependency of bench; absent from bare interpreters
    busy = (
        "import sys, time\n"
        "sys.stdin.readline()\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\n"
        "print('done', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", busy], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    try:
        m = EstimateMeter.open(EnergySettings(estimate={"watts_per_core": 10.0}))
        m.track_pid(child.pid)
        r0 = m.read()
        child.stdin.write(b"go\n")
        child.stdin.flush()
        assert child.stdout.readline() == b"done\n"
        r1 = m.read()  # while the child is still alive: its CPU time is still readable
    finally:
        child.kill()
        child.wait()
    # >= 0.3 CPU seconds in the child at 10 W; this process adds a little of its own.
    assert r1.joules["cpu-estimate"] - r0.joules["cpu-estimate"] >= 3.0 * 0.95


def test_estimate_keeps_a_tracked_process_share_after_it_exits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Seam: psutil.Process, whose cpu_times() raises NoSuchProcess once the process is gone.
    times = {"cpu": 1.0, "gone": False}

    class Gone(Exception):
        pass

    class Process:
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def cpu_times(self) -> types.SimpleNamespace:
            if times["gone"]:
                raise Gone(self.pid)
            return types.SimpleNamespace(user=times["cpu"], system=0.0)

    monkeypatch.setitem(sys.modules, "psutil", types.SimpleNamespace(Process=Process, Error=Gone))
    monkeypatch.setattr(est, "_process_time", lambda: 0.0)
    m = EstimateMeter.open(EnergySettings(estimate={"watts_per_core": 10.0}))
    m.track_pid(4242)
    times["cpu"] = 3.0
    assert m.read().joules["cpu-estimate"] == pytest.approx(20.0)
    times["gone"] = True
    assert m.read().joules["cpu-estimate"] == pytest.approx(20.0)


def test_auto_opens_the_estimate_only_when_no_hardware_meter_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meters, statuses = open_meters(no_hardware(tmp_path, monkeypatch))
    assert [m.name for m in meters] == ["estimate"]
    by = {s.name: s for s in statuses}
    assert list(by) == ["rapl", "nvml", "powermetrics", "estimate"]
    assert not by["rapl"].available and "powercap" in by["rapl"].reason
    assert not by["nvml"].available and by["nvml"].fix and "bench[nvml]" in by["nvml"].fix
    assert not by["powermetrics"].available and "macOS" in by["powermetrics"].reason
    assert by["estimate"].available
    assert by["estimate"].facts["watts_per_core"] == 10.0


def test_an_explicit_meter_list_opens_exactly_those_and_reports_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = no_hardware(tmp_path, monkeypatch, meters=["nvml", "estimate", "nvml"])
    meters, statuses = open_meters(s)
    assert [m.name for m in meters] == ["estimate"]
    assert [(st.name, st.available) for st in statuses] == [("nvml", False), ("estimate", True)]


def test_meters_none_opens_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_meters(no_hardware(tmp_path, monkeypatch, meters="none")) == ([], [])


def test_an_unexpected_failure_in_a_meter_becomes_a_status_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = no_hardware(tmp_path, monkeypatch, meters=["nvml"])
    broken = types.ModuleType("pynvml")  # a binding missing everything bench calls
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    meters, statuses = open_meters(s)
    assert meters == []
    assert not statuses[0].available and "unexpected error" in statuses[0].reason


def test_probe_all_opens_reads_and_closes_every_meter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    statuses = probe_all(no_hardware(tmp_path, monkeypatch))
    assert [s.name for s in statuses] == list(METERS)
    est_status = statuses[-1]
    assert est_status.available
    assert "cpu-estimate" in est_status.facts["first_reading_j"]  # type: ignore[operator]
    assert est_status.facts["domains"][0]["method"] == "estimate"  # type: ignore[index]


def test_an_unknown_meter_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="rapl, nvml, powermetrics, estimate"):
        meter_class("wattsup")
