"""RaplMeter against a fake powercap tree (tests/fakes/powercap.py) with known power."""
from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path

import pytest
from fakes.powercap import FakePowercap, desktop_tree

from bench.energy import phase_rows, trial_energy
from bench.meters import open_meters
from bench.meters import rapl as rapl_mod
from bench.meters.base import MeterUnavailable, Reading
from bench.meters.rapl import RaplMeter
from bench.meters.settings import EnergySettings


def settings(root: Path, **kw: object) -> EnergySettings:
    rapl = {"root": str(root), "max_power_w": kw.pop("max_power_w", 1000.0)}
    return EnergySettings(rapl=rapl, **kw)


def test_rapl_names_domains_from_name_files_and_marks_only_package_and_dram_components(
    tmp_path: Path,
) -> None:
    desktop_tree(tmp_path)
    m = RaplMeter.open(settings(tmp_path))
    got = {d.name: (d.boundary, d.component, d.method) for d in m.domains()}
    assert got == {
        "cpu-package-0": ("cpu-package", True, "counter"),
        "cpu-core-0": ("cpu-core", False, "counter"),
        "cpu-uncore-0": ("cpu-uncore", False, "counter"),
        "dram-0": ("dram", True, "counter"),
        "psys-0": ("psys", False, "counter"),
    }
    assert all(d.update_period_s == pytest.approx(0.001) for d in m.domains())


def test_rapl_two_sockets_get_distinct_package_and_dram_domains(tmp_path: Path) -> None:
    pc = FakePowercap(tmp_path)
    pc.add_zone("intel-rapl:0", "package-0", 80.0)
    pc.add_zone("intel-rapl:0:0", "dram", 6.0)
    pc.add_zone("intel-rapl:1", "package-1", 70.0)
    pc.add_zone("intel-rapl:1:0", "dram", 5.0)
    m = RaplMeter.open(settings(tmp_path))
    assert [d.name for d in m.domains()] == ["cpu-package-0", "dram-0", "cpu-package-1", "dram-1"]


def test_rapl_counts_several_wraparounds_within_one_phase(tmp_path: Path) -> None:
    pc = FakePowercap(tmp_path)
    # A 10 J counter starting at 7 J: 50 J in the phase wraps it five times.
    pc.add_zone("intel-rapl:0", "package-0", 50.0, max_range_uj=10_000_000, start_uj=7_000_000)
    m = RaplMeter.open(settings(tmp_path, interval_ms=10, max_power_w=100))
    start = m.read()
    for _ in range(20):  # what the poller does: a read every 50 ms of counter time
        pc.advance(0.05)
        m.read()
    end = m.read()
    assert pc.zones["intel-rapl:0"].wraps == 5
    measured = end.joules["cpu-package-0"] - start.joules["cpu-package-0"]
    assert measured == pytest.approx(pc.truth_j("intel-rapl:0"), rel=0.01)
    assert measured == pytest.approx(50.0, rel=1e-9)


def test_rapl_poller_counts_every_wraparound_while_counters_advance(tmp_path: Path) -> None:
    pc = FakePowercap(tmp_path)
    # 50 W in 1 ms steps on a 2 J counter: a wrap every 40 steps; the poller reads every 5 ms.
    pc.add_zone("intel-rapl:0", "package-0", 50.0, max_range_uj=2_000_000, start_uj=1_500_000)
    m = RaplMeter.open(settings(tmp_path, interval_ms=5, max_power_w=100))
    m.start()
    try:
        with pc.running(step_s=0.001):
            deadline = time.monotonic() + 10
            while pc.zones["intel-rapl:0"].wraps < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
        end = m.read()
    finally:
        m.close()
    assert pc.zones["intel-rapl:0"].wraps >= 3
    assert m.poll_error is None
    assert end.joules["cpu-package-0"] == pytest.approx(pc.truth_j("intel-rapl:0"), rel=0.01)
    assert len(m.timeline(0, float("inf"))) > 3


def test_rapl_never_adds_core_or_uncore_to_the_package_and_keeps_psys_apart(
    tmp_path: Path,
) -> None:
    pc = desktop_tree(tmp_path)
    m = RaplMeter.open(settings(tmp_path))
    r0 = Reading(100.0, m.read().joules)
    pc.advance(2.0)
    r1 = Reading(102.0, m.read().joules)
    pc.advance(0.5)
    r2 = Reading(102.5, m.read().joules)
    rows = phase_rows(m.domains(), [("prefill", r0, r1), ("decode", r1, r2)], {})
    by = {(r["phase"], r["domain"]): r for r in rows}
    assert by[("decode", "cpu-core-0")]["joules"] == pytest.approx(10.0)  # 20 W x 0.5 s, kept
    assert by[("prefill", "psys-0")]["boundary"] == "psys"
    assert by[("prefill", "psys-0")]["joules"] == pytest.approx(120.0)
    trial = trial_energy(rows, n_prompt=10, n_gen=11, e2e_s=2.5)
    # package 30 W + DRAM 4 W over 2.5 s; core, uncore and psys stay out.
    assert trial["energy_j"] == pytest.approx(85.0)
    assert trial["prefill_energy_j"] == pytest.approx(68.0)
    assert trial["decode_energy_j"] == pytest.approx(17.0)
    assert trial["energy_method"] == "counter"


def test_rapl_unreadable_energy_uj_names_the_cve_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    desktop_tree(tmp_path)
    target = str(tmp_path / "intel-rapl:0" / "energy_uj")
    real_open = os.open

    # Seam: the open(2) of energy_uj, which a kernel with the CVE-2020-8694 fix refuses to
    # non-root users with EACCES. chmod 000 cannot show it here: tests run as root.
    def guarded_open(path: str, flags: int, *args: int, **kw: int) -> int:
        if str(path) == target:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", guarded_open)
    with pytest.raises(MeterUnavailable) as e:
        RaplMeter.open(settings(tmp_path))
    assert "CVE-2020-8694" in e.value.reason
    assert e.value.fix is not None
    assert "root" in e.value.fix
    assert "chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj" in e.value.fix
    assert 'SUBSYSTEM=="powercap"' in e.value.fix and "udevadm trigger" in e.value.fix


def test_auto_reports_rapl_permission_problem_with_the_fix_instead_of_raising(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    desktop_tree(tmp_path)
    real_open = os.open

    def guarded_open(path: str, flags: int, *args: int, **kw: int) -> int:
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", guarded_open)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML here either
    meters, statuses = open_meters(settings(tmp_path))
    rapl = next(s for s in statuses if s.name == "rapl")
    assert not rapl.available and "CVE-2020-8694" in rapl.reason and rapl.fix
    for m in meters:
        m.close()


def test_rapl_refuses_only_a_counter_that_could_wrap_faster_than_it_updates(
    tmp_path: Path,
) -> None:
    pc = FakePowercap(tmp_path)
    # 1 J counter at up to 1000 W wraps within 1 ms: no poll can see each wrap of it.
    pc.add_zone("intel-rapl:0", "package-0", 10.0, max_range_uj=1_000_000)
    with pytest.raises(MeterUnavailable) as e:
        RaplMeter.open(settings(tmp_path, interval_ms=50))
    assert "wraparound" in e.value.reason
    assert e.value.fix is not None and "energy.rapl.max_power_w" in e.value.fix


def test_rapl_polls_each_counter_as_often_as_its_range_needs_not_at_the_timeline_interval(
    tmp_path: Path,
) -> None:
    pc = FakePowercap(tmp_path)
    # A 2 J counter at up to 100 W could wrap every 20 ms; the timeline asks for 400 ms, which
    # once made the meter unavailable. The poller now reads every 5 ms and the timeline keeps
    # its 400 ms spacing.
    pc.add_zone("intel-rapl:0", "package-0", 10.0, max_range_uj=2_000_000, start_uj=1_900_000)
    m = RaplMeter.open(settings(tmp_path, interval_ms=400, max_power_w=100))
    assert m.poll_interval_s == pytest.approx(0.02 / rapl_mod.POLLS_PER_WRAP)
    assert m.interval_s == pytest.approx(0.4)
    start = m.read()
    m.start()
    try:
        with pc.running(step_s=0.001):
            deadline = time.monotonic() + 20
            while pc.zones["intel-rapl:0"].wraps < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
        end = m.read()
    finally:
        m.close()
    assert pc.zones["intel-rapl:0"].wraps >= 4
    assert m.poll_error is None
    measured = end.joules["cpu-package-0"] - start.joules["cpu-package-0"]
    assert measured == pytest.approx(pc.truth_j("intel-rapl:0"), rel=0.01)
    points = m.timeline(0, float("inf"))
    gaps = [b.t - a.t for a, b in itertools.pairwise(points)]
    assert gaps and min(gaps) >= 0.39  # the fast reads stay out of the power timeline


def test_rapl_flags_reads_too_far_apart_to_count_wraps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pc = FakePowercap(tmp_path)
    pc.add_zone("intel-rapl:0", "package-0", 10.0, max_range_uj=100_000_000)  # 100 J
    clock = [0.0]
    monkeypatch.setattr(rapl_mod, "_now", lambda: clock[0])
    m = RaplMeter.open(settings(tmp_path, interval_ms=10))  # wraps after >= 0.1 s at 1000 W
    m.read()
    clock[0] = 0.05
    m.read()
    assert m.unsafe_gaps == 0
    clock[0] = 5.0  # no poll for 4.95 s: a wrap could have gone unseen
    m.read()
    assert m.unsafe_gaps == 1
    assert m.facts()["unsafe_gaps"] == 1


def test_rapl_read_touches_only_precomputed_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    desktop_tree(tmp_path)
    m = RaplMeter.open(settings(tmp_path))

    def no_listing(*a: object, **k: object) -> None:
        raise AssertionError("a read must not list directories")

    monkeypatch.setattr(Path, "iterdir", no_listing)
    monkeypatch.setattr(Path, "glob", no_listing)
    monkeypatch.setattr(os, "listdir", no_listing)
    monkeypatch.setattr(os, "scandir", no_listing)
    assert set(m.read().joules) == {d.name for d in m.domains()}


def test_rapl_ignores_the_mmio_window_onto_the_same_package(tmp_path: Path) -> None:
    pc = FakePowercap(tmp_path)
    pc.add_zone("intel-rapl:0", "package-0", 15.0)
    pc.add_zone("intel-rapl-mmio:0", "package-0", 15.0)  # same counter, other interface
    m = RaplMeter.open(settings(tmp_path))
    assert [d.name for d in m.domains()] == ["cpu-package-0"]


def test_rapl_reads_amd_zones_under_the_amd_rapl_name(tmp_path: Path) -> None:
    pc = FakePowercap(tmp_path)
    pc.add_zone("amd-rapl:0", "package-0", 65.0)
    pc.add_zone("amd-rapl:0:0", "core", 40.0)
    m = RaplMeter.open(settings(tmp_path))
    assert [(d.name, d.component) for d in m.domains()] == [
        ("cpu-package-0", True), ("cpu-core-0", False)
    ]


def test_rapl_without_a_powercap_tree_is_unavailable_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(MeterUnavailable) as e:
        RaplMeter.open(settings(tmp_path / "absent"))
    assert "powercap" in e.value.reason


def test_rapl_with_an_empty_powercap_tree_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "intel-rapl").mkdir()  # the control type directory alone, as in many VMs
    with pytest.raises(MeterUnavailable) as e:
        RaplMeter.open(settings(tmp_path))
    assert "no RAPL zones" in e.value.reason


def test_auto_uses_rapl_and_not_the_estimate_when_rapl_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    desktop_tree(tmp_path)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    meters, statuses = open_meters(settings(tmp_path))
    try:
        assert [m.name for m in meters] == ["rapl"]
        assert [s.name for s in statuses] == ["rapl", "nvml", "powermetrics"]
        assert statuses[0].available
        assert statuses[0].facts["domains"]
    finally:
        for m in meters:
            m.close()


def test_rapl_a_failed_poll_stops_the_meter_instead_of_hiding_missed_wraps(
    tmp_path: Path,
) -> None:
    pc = FakePowercap(tmp_path)
    pc.add_zone("intel-rapl:0", "package-0", 10.0)
    m = RaplMeter.open(settings(tmp_path, interval_ms=5))
    m.start()
    try:
        (tmp_path / "intel-rapl:0" / "energy_uj").unlink()  # the zone vanished mid-run
        deadline = time.monotonic() + 5
        while m.poll_error is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert isinstance(m.poll_error, FileNotFoundError)
        pc.advance(1.0)  # the file is back, but wraps in between could have been missed
        with pytest.raises(MeterUnavailable) as e:
            m.read()
        assert "polling stopped" in e.value.reason
    finally:
        m.close()
