"""Quantization as a sweep axis: a ladder built locally from a higher-precision GGUF of the
small model, measured for speed and for quality against its source."""
from __future__ import annotations

import pytest
from support import smollm2_path

from bench.config import loads_config
from bench.quantize import quantize
from bench.results import load_run
from bench.runner import Runner
from bench.sweep import expand

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(cache))
    # The shipped Q4_1 upcast to F16: the highest-precision file we can make without a network.
    f16 = quantize(smollm2_path(), "F16", allow_requantize=True)
    cfg = f"""\
name: ladder
models:
  - id: smol
    quantize_from: {f16}
    quants: [Q8_0, Q4_0, Q2_K]
backends:
  - name: llama-cpp
    n_threads: 2
    n_ctx: 256
workload: {{prompt_tokens: 32, gen_tokens: 8}}
trials: {{warmup: 0, repeat: 2}}
energy: {{meters: [estimate], idle_s: 0}}
quality: {{texts: heldout, languages: [en], window: 128}}
"""
    loaded = loads_config(cfg)
    outcome = Runner(loaded, expand(loaded.config), tmp_path_factory.mktemp("out")).run()
    yield load_run(outcome.folder)
    mp.undo()


def test_every_level_is_built_and_measured(run):
    assert [c["status"] for c in run.manifest["cells"]] == ["ok"] * 3
    assert {r["quant"] for r in run.trials} == {"Q8_0", "Q4_0", "Q2_K"}
    types = {m["quant"]: m["quant_type"] for m in run.manifest["models"].values()}
    assert types == {"Q8_0": "Q8_0", "Q4_0": "Q4_0", "Q2_K": "Q2_K"}


def test_sizes_and_bits_per_weight_fall_down_the_ladder(run):
    q = {r["quant"]: r for r in run.table("quality")}
    order = ["F16", "Q8_0", "Q4_0", "Q2_K"]
    assert list(q) == order
    sizes = [q[k]["size_bytes"] for k in order]
    bpw = [q[k]["bits_per_weight"] for k in order]
    assert sizes == sorted(sizes, reverse=True) and bpw == sorted(bpw, reverse=True)


def test_kl_is_zero_for_the_reference_and_highest_for_the_lowest_level(run):
    q = {r["quant"]: r for r in run.table("quality")}
    assert q["F16"]["is_reference"] and q["F16"]["kl_div"] == pytest.approx(0.0, abs=1e-9)
    assert q["F16"]["top1_agree"] == 1.0
    assert q["Q8_0"]["kl_div"] < q["Q4_0"]["kl_div"] < q["Q2_K"]["kl_div"]
    assert q["Q2_K"]["top1_agree"] < q["Q8_0"]["top1_agree"]
