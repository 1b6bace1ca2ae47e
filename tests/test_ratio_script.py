"""The ratio script's statistics (scripts/llama_bench_ratio.py): what it prints about pairs.
Its build and runs need llama-bench and are a benchmark, never part of the default suite."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "llama_bench_ratio.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("llama_bench_ratio", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_interval_is_of_the_log_ratios_so_a_ratio_and_its_inverse_weigh_the_same(script):
    text = script.ratio_ci([0.9, 1 / 0.9, 0.9, 1 / 0.9])
    mean, lo, hi = (float(x) for x in text.replace("[", "").replace("]", "").replace(",", "")
                    .split())
    assert mean == pytest.approx(1.0, abs=5e-4)
    assert lo < 1.0 < hi and lo * hi == pytest.approx(1.0, abs=2e-3)
    assert script.ratio_ci([1.0]) == "n/a (one pair)"


def test_pairs_needed_follows_the_spread_of_the_log_ratios(script):
    # Log ratios of -5 %, 0, +5 % twice: sd 0.0447 (n - 1); (1.96 x 0.0447 / ln 1.01)^2 -> 78.
    values = [math.exp(x) for x in (-0.05, 0.0, 0.05, -0.05, 0.0, 0.05)]
    sd = 0.05 * math.sqrt(4 / 5)
    need = math.ceil((1.96 * sd / math.log1p(0.01)) ** 2)
    assert script.pairs_needed(values) == f"{sd * 100:.1f}% per pair; ~{need} pairs for +-1%"
    # A quiet machine needs no more pairs than it already ran.
    assert script.pairs_needed([1.0, 1.0001, 0.9999]).endswith("~3 pairs for +-1%")
    assert script.pairs_needed([1.0, 1.1]) == "n/a"
