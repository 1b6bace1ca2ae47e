"""Language-fair figures on two real models with very different tokenizers."""
from __future__ import annotations

import math

import pytest
from support import GEMMA_MODEL_YAML, SMOL_MODEL_YAML, gemma_path, smollm2_path

from bench.config import loads_config
from bench.runner import Runner
from bench.sweep import expand
from bench.workload.packs import load_pack
from bench.workload.text import count_chars

pytestmark = pytest.mark.slow

LANGS = ["en", "hi", "zh"]
CONFIG = f"""\
name: ml
models:
{SMOL_MODEL_YAML}{GEMMA_MODEL_YAML}backends:
  - name: llama-cpp
    n_threads: 2
    n_ctx: 512
workload:
  pack: parallel
  languages: [{", ".join(LANGS)}]
  prompt_ids: [p03-explain]
  gen_tokens: 12
trials: {{warmup: 0, repeat: 1}}
energy: {{meters: [estimate], idle_s: 0}}
execution: {{isolate: false}}
quality: {{texts: heldout}}
"""


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    gemma_path()  # assemble once, outside the timed run
    loaded = loads_config(CONFIG)
    return Runner(loaded, expand(loaded.config), tmp_path_factory.mktemp("ml")).run()


def tokenizer(path):
    from llama_cpp import Llama

    return Llama(model_path=str(path), vocab_only=True, verbose=False)


def test_fertility_is_what_each_tokenizer_gives_for_the_text(outcome):
    prompts = {p.lang: p.text for p in load_pack("parallel", LANGS) if p.id == "p03-explain"}
    toks = {"smollm2-135m": tokenizer(smollm2_path()), "gemma3-270m": tokenizer(gemma_path())}
    rows = [r for r in outcome.trials if r["status"] == "ok"]
    assert len(rows) == 2 * len(LANGS)
    for r in rows:
        text = prompts[r["lang"]]
        n = len(toks[r["model"]].tokenize(text.encode(), add_bos=True, special=False))
        assert r["n_prompt"] == n
        assert r["tokens_per_char"] == pytest.approx(n / count_chars(text))
    fert = {(r["model"], r["lang"]): r["tokens_per_char"] for r in rows}
    # An English-centred 49k vocabulary spends several times more tokens on Hindi.
    assert fert[("smollm2-135m", "hi")] > 3 * fert[("gemma3-270m", "hi")]


def test_j_per_kchar_agrees_with_the_energy_and_the_text(outcome):
    for r in outcome.trials:
        assert r["decode_chars"] > 0
        assert r["j_per_kchar"] == pytest.approx(r["decode_energy_j"] / r["decode_chars"] * 1000)
        assert r["decode_chars_per_s"] == pytest.approx(r["decode_chars"] / r["decode_s"])


def test_bits_per_byte_for_every_model_and_language(outcome):
    rows = outcome.manifest and [q for q in _quality(outcome)]
    got = {(q["model"], q["lang"]): q["bits_per_byte"] for q in rows}
    assert set(got) == {(m, lang) for m in ("smollm2-135m", "gemma3-270m") for lang in LANGS}
    assert all(0.2 < v < 4 and math.isfinite(v) for v in got.values())
    assert all(q["kl_div"] is None for q in rows)  # one variant per model: no reference


def _quality(outcome):
    from bench.results import load_run

    return load_run(outcome.folder).table("quality")
