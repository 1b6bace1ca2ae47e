"""`synthetic:` models: shapes, deterministic GGUF files, the config form, and a real run."""
from __future__ import annotations

import hashlib
from pathlib import Path

import gguf
import pytest

from bench.config import ConfigError, loads_config
from bench.models import fetch, locate
from bench.quantize import gguf_facts
from bench.sweep import expand, model_variants
from bench.synthetic import (
    PRESETS,
    QUALITY_REFUSAL,
    SyntheticError,
    SyntheticShape,
    build,
    n_params,
    resolve_shape,
)


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_same_seed_gives_the_same_file_and_another_seed_does_not(tmp_path: Path):
    a = build("tiny", folder=tmp_path / "a")
    b = build("tiny", folder=tmp_path / "b")
    c = build(SyntheticShape(base="tiny", seed=1), folder=tmp_path / "c")
    assert sha256(a) == sha256(b)
    assert sha256(a) != sha256(c)


def test_the_file_has_the_declared_shape_and_vocabulary(tmp_path: Path):
    shape = SyntheticShape(base="tiny", layers=3, vocab=700)
    path = build(shape, folder=tmp_path)
    reader = gguf.GGUFReader(path)

    def meta(key: str):
        f = reader.fields[key]
        return f.parts[f.data[0]][0]

    assert int(meta("llama.block_count")) == 3
    assert int(meta("llama.embedding_length")) == PRESETS["tiny"]["embedding"]
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == 700
    facts = gguf_facts(path)
    assert facts["file_type"] == "F16"
    assert facts["n_params"] == n_params(resolve_shape(shape))


def test_qwen2_shape_carries_attention_biases(tmp_path: Path):
    shape = SyntheticShape(base="qwen2.5-7b", layers=1, embedding=64, heads=4, kv_heads=2,
                           ff=128, vocab=400)
    names = {t.name for t in gguf.GGUFReader(build(shape, folder=tmp_path)).tensors}
    assert {"blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias"} <= names
    assert gguf_facts(build(shape, folder=tmp_path))["n_params"] == n_params(resolve_shape(shape))


def test_a_quantized_level_is_built_from_the_f16_file(tmp_path: Path):
    q = build("tiny", "Q4_0", folder=tmp_path)
    assert gguf_facts(q)["file_type"] == "Q4_0"
    assert q.stat().st_size < build("tiny", folder=tmp_path).stat().st_size


def test_shapes_that_cannot_work_are_refused_with_the_reason():
    with pytest.raises(SyntheticError, match="multiple of heads"):
        resolve_shape(SyntheticShape(base="tiny", embedding=66))
    with pytest.raises(ValueError, match="needs arch"):
        SyntheticShape(layers=2)


CONFIG = """\
name: syn
models:
  - id: tiny
    synthetic: {model}
    {quants}
backends:
  - {{name: llama-cpp, n_threads: 2, n_ctx: 256}}
workload: {{prompt_tokens: 16, gen_tokens: 4}}
trials: {{warmup: 0, repeat: 1}}
energy: {{meters: auto, idle_s: 0}}
"""


def test_config_accepts_a_preset_name_and_a_shape_mapping():
    loaded = loads_config(CONFIG.format(model="tiny", quants="quants: [Q8_0, Q4_0]"))
    variants = model_variants(loaded.config.models[0])
    assert [v.quant for v in variants] == ["Q8_0", "Q4_0"]
    assert "synthetic" in variants[0].source()
    plain = loads_config(CONFIG.format(model="{base: tiny, layers: 3}", quants=""))
    v = model_variants(plain.config.models[0])
    assert [x.quant for x in v] == ["F16"]
    assert v[0].source()["synthetic"]["layers"] == 3


def test_an_unknown_preset_is_a_config_error_naming_the_known_ones():
    with pytest.raises(ConfigError, match="unknown synthetic model 'llama-9b'; known: tiny"):
        loads_config(CONFIG.format(model="llama-9b", quants=""))


def test_dry_run_location_says_the_file_is_written_on_first_use(cache: Path):
    loaded = loads_config(CONFIG.format(model="tiny", quants=""))
    (variant,) = model_variants(loaded.config.models[0])
    loc = locate(variant)
    assert not loc.ok and loc.downloadable and "first use" in (loc.problem or "")
    path = fetch(variant)
    assert path is not None and path.is_relative_to(cache)
    assert locate(variant).ok and locate(variant).path == path


def test_quality_is_refused_for_synthetic_models_with_a_sentence(cache: Path):
    from bench.quality_phase import run_quality

    text = CONFIG.format(model="tiny", quants="").replace(
        "energy:", "quality: {texts: heldout}\nenergy:")
    loaded = loads_config(text)
    from bench.run.events import Message

    events: list[object] = []
    # The quality phase emits the worker's typed events, one per call (bench.run.events).
    run_quality(loaded.config, expand(loaded.config), "r", events.append)
    assert events == [Message(QUALITY_REFUSAL.format(model="tiny"))]  # and no Rows


@pytest.mark.slow
def test_a_tiny_synthetic_llama_runs_end_to_end_through_bench_run(cache: Path, tmp_path: Path):
    from bench.cli import main

    cfg = tmp_path / "syn.yaml"
    cfg.write_text(CONFIG.format(model="tiny", quants="quants: [Q4_0]"))
    out = tmp_path / "results"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    from bench.results import load_run

    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    run = load_run(folder)
    rows = [r for r in run.trials if not r["warmup"]]
    assert rows and all(r["status"] == "ok" for r in rows)
    assert all(r["model_source"] == "synthetic" for r in rows)
    assert all(r["roofline_pct"] is not None for r in rows)
    (entry,) = run.manifest["models"].values()
    assert entry["quant"] == "Q4_0" and "synthetic" in entry["source"]


@pytest.mark.slow
@pytest.mark.slow7b
def test_a_7b_shaped_q4_0_runs_end_to_end(tmp_path: Path):
    # The real cache: the 13.5 GB F16 file and its 3.8 GB Q4_0 level are written once.
    from bench.runner import Runner

    text = CONFIG.format(model="llama-7b", quants="quants: [Q4_0]").replace(
        "id: tiny", "id: llama-7b")
    loaded = loads_config(text)
    outcome = Runner(loaded, expand(loaded.config), tmp_path).run()
    rows = [r for r in outcome.trials if not r["warmup"]]
    assert rows and all(r["status"] == "ok" for r in rows), rows
    (entry,) = outcome.manifest["models"].values()
    assert entry["n_params"] == n_params(resolve_shape("llama-7b"))
    assert entry["quant_type"] == "Q4_0"
    assert all(r["model_source"] == "synthetic" and r["roofline_pct"] for r in rows)
