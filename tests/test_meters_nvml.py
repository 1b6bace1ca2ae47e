"""NvmlMeter against a stand-in `pynvml` module (tests/fakes/nvml.py, nvidia-ml-py's API)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fakes.nvml import FakeClock, FakeGpu, make_pynvml

from bench.meters import nvml as nvml_mod
from bench.meters import open_meters
from bench.meters.base import MeterUnavailable
from bench.meters.nvml import NvmlMeter, decode_throttle_reasons
from bench.meters.settings import EnergySettings

REPO = Path(__file__).resolve().parents[1]


def volta(power_w: float = 250.0, start_mj: int = 5_000_000) -> FakeGpu:
    return FakeGpu("Tesla V100-SXM2-16GB", power_w=lambda t: power_w,
                   energy_mj=lambda t: start_mj + round(power_w * 1000 * t))


def pascal(power_w) -> FakeGpu:  # type: ignore[no-untyped-def]
    return FakeGpu("Tesla P100-PCIE-16GB", power_w=power_w, energy_mj=None)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(nvml_mod, "_now", c)
    return c


def install(monkeypatch: pytest.MonkeyPatch, module: object) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", module)


def test_nvml_volta_gpu_reads_the_total_energy_counter(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    install(monkeypatch, make_pynvml([volta(250.0)], clock))
    m = NvmlMeter.open(EnergySettings())
    (d,) = m.domains()
    assert (d.name, d.method, d.boundary, d.component) == ("gpu-0", "counter", "gpu-board", True)
    assert d.update_period_s == pytest.approx(0.1)
    r0 = m.read()
    clock.t = 2.0
    r1 = m.read()
    assert r1.joules["gpu-0"] - r0.joules["gpu-0"] == pytest.approx(500.0)  # 250 W x 2 s
    m.close()


def test_nvml_older_gpu_integrates_power_over_measured_timestamps(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    # Power ramps 100 W -> 200 W over 1 s: 150 J. Samples at uneven times, as a late poller
    # takes them; the trapezoid over the real gaps is exact for a ramp.
    install(monkeypatch, make_pynvml([pascal(lambda t: 100.0 + 100.0 * t)], clock))
    m = NvmlMeter.open(EnergySettings(interval_ms=50))
    (d,) = m.domains()
    assert d.method == "sampled"
    for t in (0.1, 0.35, 0.4, 1.0):
        clock.t = t
        last = m.read()
    assert last.joules["gpu-0"] == pytest.approx(150.0)
    m.close()


def test_nvml_reads_counter_and_sampled_gpus_side_by_side(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    module = make_pynvml([volta(300.0), pascal(lambda t: 120.0)], clock)
    install(monkeypatch, module)
    m = NvmlMeter.open(EnergySettings())
    assert [(d.name, d.method) for d in m.domains()] == [("gpu-0", "counter"), ("gpu-1", "sampled")]
    r0 = m.read()
    clock.t = 0.5
    r1 = m.read()
    assert r1.joules["gpu-0"] - r0.joules["gpu-0"] == pytest.approx(150.0)
    assert r1.joules["gpu-1"] - r0.joules["gpu-1"] == pytest.approx(60.0)
    facts = m.facts()
    assert facts["driver_version"] == "550.54.15"
    assert [g["energy_counter"] for g in facts["gpus"]] == [True, False]
    m.close()


def test_nvml_devices_setting_reads_only_those_gpus(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    install(monkeypatch, make_pynvml([volta(), volta(), volta()], clock))
    m = NvmlMeter.open(EnergySettings(nvml={"devices": [2]}))
    assert [d.name for d in m.domains()] == ["gpu-2"]
    m.close()
    with pytest.raises(MeterUnavailable) as e:
        NvmlMeter.open(EnergySettings(nvml={"devices": [3]}))
    assert "sees 3" in e.value.reason


def test_nvml_library_missing_is_unavailable_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install(monkeypatch, make_pynvml([], init_error="LibraryNotFound"))
    with pytest.raises(MeterUnavailable) as e:
        NvmlMeter.open(EnergySettings())
    assert "libnvidia-ml.so.1" in e.value.reason
    assert e.value.fix is not None and "driver" in e.value.fix


def test_nvml_driver_not_loaded_is_unavailable_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install(monkeypatch, make_pynvml([], init_error="DriverNotLoaded"))
    with pytest.raises(MeterUnavailable) as e:
        NvmlMeter.open(EnergySettings())
    assert "driver is not loaded" in e.value.reason
    assert e.value.fix is not None and "nvidia-smi" in e.value.fix


def test_nvml_module_missing_says_to_install_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, None)  # `import pynvml` raises ImportError
    with pytest.raises(MeterUnavailable) as e:
        NvmlMeter.open(EnergySettings())
    assert "nvidia-ml-py" in e.value.reason
    assert e.value.fix is not None and "bench[nvml]" in e.value.fix


def test_nvml_unofficial_pynvml_package_says_to_switch_to_nvidia_ml_py(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = make_pynvml([volta()])
    # The unofficial pynvml (<= 11.x) is a package, pynvml/__init__.py; nvidia-ml-py is the
    # single file pynvml.py. That file location is what the meter checks.
    module.__file__ = "/venv/lib/python3.11/site-packages/pynvml/__init__.py"
    install(monkeypatch, module)
    with pytest.raises(MeterUnavailable) as e:
        NvmlMeter.open(EnergySettings())
    assert "unofficial pynvml" in e.value.reason
    assert e.value.fix == "pip uninstall pynvml && pip install nvidia-ml-py"
    assert module.state["init"] == 0  # never initialised


def test_nvml_official_module_file_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    module = make_pynvml([volta()])
    module.__file__ = "/venv/lib/python3.11/site-packages/pynvml.py"
    install(monkeypatch, module)
    NvmlMeter.open(EnergySettings()).close()


def test_nvml_snapshot_records_temperature_sm_clock_throttle_reasons_and_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpu = volta()
    gpu.temperature_c, gpu.sm_clock_mhz, gpu.throttle_mask = 83, 1230, 0x4 | 0x40
    gpu.memory_used_bytes = 7 << 30
    install(monkeypatch, make_pynvml([gpu]))
    m = NvmlMeter.open(EnergySettings())
    assert m.snapshot() == {"gpu-0": {
        "temperature_c": 83,
        "sm_clock_mhz": 1230,
        "throttle_reasons": ["sw_power_cap", "hw_thermal_slowdown"],
        "memory_used_bytes": 7 << 30,
    }}
    m.close()


def test_nvml_snapshot_uses_the_older_throttle_reasons_call_when_that_is_all_there_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpu = volta()
    gpu.throttle_mask = 0x1
    install(monkeypatch, make_pynvml([gpu], event_reasons_api=False))
    m = NvmlMeter.open(EnergySettings())
    assert m.snapshot()["gpu-0"]["throttle_reasons"] == ["gpu_idle"]  # type: ignore[index]
    m.close()


def test_throttle_reasons_keep_unknown_bits_visible() -> None:
    assert decode_throttle_reasons(0) == []
    assert decode_throttle_reasons(0x8 | 0x10000) == ["hw_slowdown", "0x10000"]


def test_nvml_close_shuts_nvml_down(monkeypatch: pytest.MonkeyPatch) -> None:
    module = make_pynvml([volta()])
    install(monkeypatch, module)
    m = NvmlMeter.open(EnergySettings())
    assert module.state["init"] == 1
    m.close()
    assert module.state["init"] == 0


def test_auto_with_nvml_says_why_not_and_falls_back_only_when_nothing_reads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install(monkeypatch, make_pynvml([], init_error="DriverNotLoaded"))
    s = EnergySettings(rapl={"root": str(tmp_path / "none")})
    meters, statuses = open_meters(s)
    by = {st.name: st for st in statuses}
    assert not by["nvml"].available and "driver is not loaded" in by["nvml"].reason
    assert [m.name for m in meters] == ["estimate"]
    for m in meters:
        m.close()


def test_importing_bench_meters_imports_no_vendor_module() -> None:
    code = (
        "import sys, bench.meters\n"
        "assert 'pynvml' not in sys.modules\n"
        "assert not [m for m in sys.modules if m.startswith('bench.meters.') and m not in "
        "('bench.meters.base', 'bench.meters.settings')], sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_the_stand_in_uses_only_names_the_real_nvidia_ml_py_has() -> None:
    real = pytest.importorskip("pynvml")  # nvidia-ml-py, where installed (bench[nvml])
    fake = make_pynvml([])
    names = [n for n in vars(fake) if n.startswith(("nvml", "NVML"))]
    missing = [n for n in names if not hasattr(real, n)]
    assert missing == []
    assert real.NVMLError_NotSupported(real.NVML_ERROR_NOT_SUPPORTED).value == 3
