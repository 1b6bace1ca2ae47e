"""Energy end to end on the real small model, with a fake RAPL tree standing in for the
kernel's powercap interface (this machine has no RAPL counters).

The fake's counters follow wall-clock time at a known power, wrapping at a small
max_energy_range_uj as real counters wrap at theirs, so the truth is power × seconds.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from bench.backends.llama_cpp import LlamaCppBackend
from bench.config import loads_config
from bench.meters import open_meters
from bench.meters import rapl as rapl_mod
from bench.meters.settings import EnergySettings
from bench.runner import Runner
from bench.sweep import expand
from support import SMOL_MODEL_YAML

pytestmark = pytest.mark.slow

PKG_W, DRAM_W = 20.0, 3.0
WRAP_UJ = 4_000_000  # 4 J: the package counter wraps every 0.2 s, several times per phase


class WallClockPowercap:
    """A powercap tree whose energy_uj is power × (now − t0) mod (max + 1) at the moment it is
    read, as the kernel computes it on read. The tree's files give the zones and ranges; the
    read itself goes through the meter's one file-reading function, patched here."""

    def __init__(self, root: Path, monkeypatch=None):
        self.root = root
        self.zones = {"intel-rapl:0": ("package-0", PKG_W), "intel-rapl:0:1": ("dram", DRAM_W)}
        for zone, (name, _) in self.zones.items():
            d = root / zone
            d.mkdir(parents=True)
            (d / "name").write_text(name + "\n")
            (d / "max_energy_range_uj").write_text(f"{WRAP_UJ - 1}\n")
            (d / "energy_uj").write_text("0\n")
        self.t0 = time.perf_counter()
        if monkeypatch is not None:
            original = rapl_mod._read_int
            watts = {str(root / z / "energy_uj"): w for z, (_, w) in self.zones.items()}

            def live(path: str) -> int:
                if path in watts:
                    return int(watts[path] * (time.perf_counter() - self.t0) * 1e6) % WRAP_UJ
                return original(path)

            monkeypatch.setattr(rapl_mod, "_read_int", live)


def config(root: Path) -> str:
    return f"""\
name: energy
models:
{SMOL_MODEL_YAML}backends:
  - name: llama-cpp
    n_threads: 2
    n_ctx: 512
workload: {{prompt_tokens: [128], gen_tokens: 48}}
trials: {{warmup: 1, repeat: 3}}
energy: {{meters: [rapl], idle_s: 0.5, interval_ms: 20, rapl: {{root: "{root}", max_power_w: 50}}}}
execution: {{isolate: false}}  # the patched counter lives in this process
"""


def test_j_per_token_matches_known_power_times_decode_time(tmp_path, monkeypatch):
    root = tmp_path / "powercap"
    WallClockPowercap(root, monkeypatch)
    loaded = loads_config(config(root))
    outcome = Runner(loaded, expand(loaded.config), tmp_path / "out").run()
    rows = [r for r in outcome.trials if not r["warmup"]]
    assert len(rows) == 3
    for r in rows:
        assert r["status"] == "ok" and r["energy_method"] == "counter"
        expected = (PKG_W + DRAM_W) * r["decode_s"] / (r["n_gen"] - 1)
        assert r["j_per_token"] == pytest.approx(expected, rel=0.02)
        assert r["j_per_prompt_token"] == pytest.approx(
            (PKG_W + DRAM_W) * r["prefill_s"] / r["n_prompt"], rel=0.02
        )
        assert r["avg_power_w"] == pytest.approx(PKG_W + DRAM_W, rel=0.02)
        # idle power equals the load power here, so the net energy is close to zero
        assert abs(r["energy_net_j"]) < 0.05 * r["energy_j"]
    idle = outcome.manifest["idle"]["watts"]
    assert idle["cpu-package-0"] == pytest.approx(PKG_W, rel=0.02)
    assert {d["boundary"] for d in outcome.manifest["domains"]} == {"cpu-package", "dram"}


def test_meters_do_not_slow_decoding(tmp_path, smol_path):
    """Sampling must not disturb what it measures: paired trials, the meters' poller running
    and read at every phase edge versus no meter at all, on the same loaded model."""
    root = tmp_path / "powercap"
    WallClockPowercap(root)  # unpatched: static counters, only bench's own reading costs count
    settings = EnergySettings(
        meters=["rapl", "estimate"], interval_ms=50, rapl={"root": str(root), "max_power_w": 50}
    )
    session = LlamaCppBackend().load(
        smol_path, {"n_threads": 2, "n_gpu_layers": 0, "n_ctx": 256, "n_batch": 512,
                    "n_ubatch": 512, "flash_attn": False}, seed=42)
    prompt = session.prompt("p", 32, None)
    ratios = []
    try:
        session.generate(prompt, 48, False, lambda e: None)  # warm-up
        for _ in range(12):
            meters, _ = open_meters(settings)
            for m in meters:
                m.start()

            def read_all(edge, meters=meters):
                for m in meters:
                    m.read()

            on = session.generate(prompt, 48, False, read_all)
            for m in meters:
                m.close()
            off = session.generate(prompt, 48, False, lambda e: None)
            rate = lambda t: (t.n_gen - 1) / (t.token_times[-1] - t.token_times[0])  # noqa: E731
            ratios.append(rate(on) / rate(off))
    finally:
        session.close()
    # One-sided: meters on may not be more than 1% slower (a faster "on" is noise).
    assert statistics.median(ratios) > 0.99, ratios
