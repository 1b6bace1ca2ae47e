"""PowermetricsMeter: the stream parser on recorded-format data, the meter on a fake executable.

The fake `powermetrics` (tests/fakes/powermetrics_cli.py) stands in for macOS's
/usr/bin/powermetrics: it checks bench's arguments and plays a stream written in Apple's plist
layout (tests/data/powermetrics/README.md has the numbers). The macOS and root checks are
module functions patched here, since this machine is Linux.
"""
from __future__ import annotations

import getpass
import json
import os
import sys
import time
from pathlib import Path

import pytest
from fakes.powermetrics import install_fake_powermetrics, install_fake_sudo_without_rights

from bench.meters import powermetrics as pm
from bench.meters.base import MeterUnavailable
from bench.meters.powermetrics import PlistStream, PowermetricsMeter, parse_stream, record_joules
from bench.meters.settings import EnergySettings

DATA = Path(__file__).parent / "data" / "powermetrics"
M2 = DATA / "m2_cpu_gpu_ane.plist-stream"
M1 = DATA / "m1_energy_only.plist-stream"
# Hand-worked in tests/data/powermetrics/README.md: power x each record's own elapsed_ns.
M2_TRUTH = {"soc-cpu": 0.398609, "soc-gpu": 0.1696054, "ane": 0.00295}


def totals(records: list[dict]) -> dict[str, float]:  # type: ignore[type-arg]
    out: dict[str, float] = {}
    for rec in records:
        for k, v in record_joules(rec).items():
            out[k] = out.get(k, 0.0) + v
    return out


def test_powermetrics_is_unavailable_off_macos() -> None:
    if sys.platform == "darwin":
        pytest.skip("this is macOS")
    with pytest.raises(MeterUnavailable) as e:
        PowermetricsMeter.open(EnergySettings())
    assert "macOS only" in e.value.reason


@pytest.mark.parametrize("chunk", [1, 3, 100, 4096, 1 << 20])
def test_plist_stream_splits_nul_separated_records_wherever_chunks_break(chunk: int) -> None:
    data = M2.read_bytes()
    stream = PlistStream()
    records = []
    for i in range(0, len(data), chunk):
        records += stream.feed(data[i:i + chunk])
    records += stream.close()
    assert [r["elapsed_ns"] for r in records] == [52_104_000, 61_250_000, 48_010_000, 50_000_000]


def test_powermetrics_integrates_power_over_each_records_measured_elapsed_ns() -> None:
    got = totals(parse_stream(M2.read_bytes()))
    assert got == pytest.approx(M2_TRUTH, rel=1e-9)
    # Over the requested 50 ms instead, the CPU would read 0.375 J: 6 % low.
    assert abs(got["soc-cpu"] - 0.375) > 0.02


def test_powermetrics_reads_energy_only_records_of_older_releases() -> None:
    got = totals(parse_stream(M1.read_bytes()))
    assert got == pytest.approx({"soc-cpu": 0.2, "soc-gpu": 0.04, "ane": 0.005})


def test_powermetrics_parses_a_last_record_without_a_trailing_nul() -> None:
    data = M2.read_bytes().rstrip(b"\0")
    assert len(parse_stream(data)) == 4


@pytest.fixture
def macos(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Path]:
    """A macOS stand-in: platform check on, fake tools in tmp/bin first on PATH."""
    monkeypatch.setattr(pm, "_is_macos", lambda: True)
    bin_dir = tmp_path / "bin"
    tool = install_fake_powermetrics(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_POWERMETRICS_STREAM", str(M2))
    argv_log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("FAKE_POWERMETRICS_ARGV", str(argv_log))
    return {"bin": bin_dir, "tool": tool, "argv": argv_log}


def wait_for_records(m: PowermetricsMeter, n: int) -> None:
    deadline = time.monotonic() + 10
    while m.records < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert m.records == n


def test_powermetrics_meter_runs_the_tool_on_path_as_root_and_integrates_its_stream(
    macos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pm, "_is_root", lambda: True)
    m = PowermetricsMeter.open(EnergySettings(interval_ms=50))
    try:
        assert [(d.name, d.boundary, d.method, d.component) for d in m.domains()] == [
            ("soc-cpu", "soc", "sampled", True),
            ("soc-gpu", "soc", "sampled", True),
            ("ane", "soc", "sampled", True),
        ]
        wait_for_records(m, 4)
        assert m.read().joules == pytest.approx(M2_TRUTH, rel=1e-9)
        assert m.snapshot()["combined_power_mw"] == 5010.0
        argv = json.loads(macos["argv"].read_text().splitlines()[0])
        assert argv == ["--samplers", "cpu_power,gpu_power,ane_power", "-i", "50", "-f", "plist"]
    finally:
        m.close()
    assert m._process.proc.poll() is not None  # the tool was stopped


def test_powermetrics_command_comes_from_settings(
    macos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", os.defpath)  # the tool is reachable only through the setting
    s = EnergySettings(powermetrics={"command": [str(macos["tool"])]})
    m = PowermetricsMeter.open(s)
    try:
        wait_for_records(m, 4)
        assert m.facts()["argv"][0] == str(macos["tool"])  # type: ignore[index]
    finally:
        m.close()


def test_powermetrics_without_a_sudo_right_gives_the_exact_sudoers_line(
    macos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pm, "_is_root", lambda: False)  # default command: sudo -n powermetrics
    install_fake_sudo_without_rights(macos["bin"])
    with pytest.raises(MeterUnavailable) as e:
        PowermetricsMeter.open(EnergySettings())
    assert "password" in e.value.reason
    line = f"{getpass.getuser()} ALL=(root) NOPASSWD: /usr/bin/powermetrics"
    assert e.value.fix is not None and line in e.value.fix


def test_powermetrics_retries_without_the_ane_sampler_where_it_is_unknown(
    macos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pm, "_is_root", lambda: True)
    monkeypatch.setenv("FAKE_POWERMETRICS_MODE", "reject-ane")
    m = PowermetricsMeter.open(EnergySettings())
    try:
        calls = [json.loads(x)[1] for x in macos["argv"].read_text().splitlines()]
        assert calls == ["cpu_power,gpu_power,ane_power", "cpu_power,gpu_power"]
        # ANE figures still come with the cpu_power sampler's record.
        assert [d.name for d in m.domains()] == ["soc-cpu", "soc-gpu", "ane"]
    finally:
        m.close()


def test_powermetrics_meter_raises_once_the_tool_has_died(
    macos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pm, "_is_root", lambda: True)
    monkeypatch.setenv("FAKE_POWERMETRICS_MODE", "exit")
    m = PowermetricsMeter.open(EnergySettings())
    try:
        m._process.thread.join(timeout=10)
        with pytest.raises(MeterUnavailable) as e:
            m.read()
        assert "exited" in e.value.reason
    finally:
        m.close()


def test_powermetrics_that_never_writes_a_record_is_unavailable(
    macos: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(pm, "_is_root", lambda: True)
    empty = tmp_path / "empty.plist-stream"
    empty.write_bytes(b"")
    monkeypatch.setenv("FAKE_POWERMETRICS_STREAM", str(empty))
    with pytest.raises(MeterUnavailable) as e:
        PowermetricsMeter.open(EnergySettings(powermetrics={"start_timeout_s": 0.3}))
    assert "no record within 0.3 s" in e.value.reason


def test_powermetrics_output_that_is_not_a_plist_stream_stops_the_meter_with_the_reason(
    macos: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(pm, "_is_root", lambda: True)
    garbage = tmp_path / "text.plist-stream"
    garbage.write_bytes(M2.read_bytes().split(b"\0")[0] + b"\0*** Sampled system activity\0")
    monkeypatch.setenv("FAKE_POWERMETRICS_STREAM", str(garbage))
    m = PowermetricsMeter.open(EnergySettings())
    try:
        m._process.thread.join(timeout=10)
        with pytest.raises(MeterUnavailable) as e:
            m.read()
        assert "cannot parse powermetrics output" in e.value.reason
    finally:
        m.close()
