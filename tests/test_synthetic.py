"""`synthetic:` models: shapes, deterministic GGUF files, the config form, and a real run."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import gguf
import pytest
from support import run_config

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
    # Sized before it exists (two bytes a parameter at F16), for the run's time estimate.
    assert loc.size_bytes == 2 * n_params(resolve_shape("tiny"))
    path = fetch(variant)
    assert path is not None and path.is_relative_to(cache)
    assert locate(variant).ok and locate(variant).path == path


def test_dry_run_says_a_synthetic_model_is_written_here_with_its_size_not_fetched(
        cache: Path, tmp_path: Path, capsys):
    from bench.cli import main

    cfg = tmp_path / "syn.yaml"
    cfg.write_text(CONFIG.format(model="llama-7b", quants=""))
    assert main(["run", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    size = 2 * n_params(resolve_shape("llama-7b"))
    assert f"written to the cache on first use ({size / 1e9:.1f} GB)" in out
    assert "synthetic model(s) not written yet; `bench run` writes them" in out
    # The estimate counts writing it once, at the assumed rate it names.
    from bench.cli.estimate import SYNTHETIC_WRITE_BPS, duration

    assert (f"({duration(size / SYNTHETIC_WRITE_BPS)} of it writing synthetic models at an "
            f"assumed {SYNTHETIC_WRITE_BPS / 1e6:.0f} MB/s)") in " ".join(out.split())
    assert "Hub" not in out.split("estimated duration")[0]  # nothing to download
    assert not cache.exists()  # a dry run writes nothing


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
    _, run = run_config(CONFIG.format(model="tiny", quants="quants: [Q4_0]"), tmp_path)
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


# -- rwkv5: Eagle-shaped checkpoints for the rwkv backend ------------------------------------


def test_an_rwkv5_checkpoint_is_the_shape_the_rwkv_package_detects(tmp_path: Path):
    pytest.importorskip("torch", reason="rwkv5 synthetic models need torch: bench[rwkv]")
    import torch

    from bench.backends.rwkv.checkpoint import inspect

    a = build("rwkv5-tiny", "BF16", folder=tmp_path / "a")
    b = build("rwkv5-tiny", "BF16", folder=tmp_path / "b")
    assert a.suffix == ".pth" and a.name == b.name and sha256(a) == sha256(b)
    # Another process writes the same bytes (torch names records after the file, not a PID).
    import subprocess
    import sys

    c = tmp_path / "c"
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                    "from bench.synthetic import build; build('rwkv5-tiny', 'BF16', "
                    "folder=Path(sys.argv[1]))", str(c)], check=True)
    assert sha256(c / a.name) == sha256(a)
    # A valid zip: every record's CRC matches the values filled in after torch.save.
    import zipfile

    with zipfile.ZipFile(a) as z:
        assert z.testzip() is None
    assert not list(tmp_path.glob("*/.*.tmp"))  # no temporary folder left behind
    facts = inspect(a)
    shape = resolve_shape("rwkv5-tiny")
    assert facts.version == 5.2  # the package's rules: ln_x, gate, a 2-D time_decay
    assert (facts.n_layer, facts.n_embd, facts.n_head, facts.n_ffn, facts.n_vocab) == (
        2, 64, 2, 224, 65536)
    assert facts.dtype == "bfloat16" and facts.n_params == n_params(shape)
    wa = torch.load(str(a), weights_only=True)
    wb = torch.load(str(b), weights_only=True)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # Random, not the empty space the archive was first written with.
    assert float(wa["blocks.1.att.key.weight"].float().std()) == pytest.approx(0.02, rel=0.1)
    assert torch.all(wa["blocks.0.ln1.weight"] == 1)
    other = build(SyntheticShape(base="rwkv5-tiny", seed=1), "BF16", folder=tmp_path / "c")
    wc = torch.load(str(other), weights_only=True)
    assert not torch.equal(wa["head.weight"], wc["head.weight"])


def test_the_eagle_7b_preset_has_eagle_7bs_parameter_count():
    # RWKV-5 World 7B ("Eagle 7B"): 7.52 billion parameters, 32 layers of 4096.
    shape = resolve_shape("rwkv5-7b")
    assert (shape["layers"], shape["embedding"], shape["heads"], shape["ff"]) == (
        32, 4096, 64, 14336)
    assert n_params(shape) == pytest.approx(7.52e9, rel=0.005)


@pytest.mark.slow
def test_synthetic_models_run_on_all_three_engines_with_a_roofline_and_no_quality(
        cache: Path, tmp_path: Path):
    pytest.importorskip("rwkv", reason="the rwkv extra is not installed: pip install 'bench[rwkv]'")
    pytest.importorskip("transformers", reason="pip install 'bench[transformers]'")
    _, run = run_config(
        "name: shapes\nmodels:\n  - {id: eagle-tiny, synthetic: rwkv5-tiny}\n"
        "  - {id: llama-tiny, synthetic: tiny}\n"
        "  - {id: llama-tiny-hf, synthetic: tiny, format: hf}\n"
        "backends:\n  - {name: rwkv, strategy: cpu fp32, n_threads: 1}\n"
        "  - {name: llama-cpp, n_threads: 1, n_ctx: 256}\n"
        "  - {name: transformers, device: cpu, n_threads: 1}\n"
        "workload: {prompt_tokens: 16, gen_tokens: 8}\ntrials: {warmup: 1, repeat: 2}\n"
        "quality: {texts: heldout}\nenergy: {meters: [estimate], idle_s: 0}\n",
        tmp_path,
    )
    rows = [r for r in run.trials if not r["warmup"]]
    # Each synthetic model pairs only with the engine that runs its format.
    assert sorted({(r["model"], r["backend"]) for r in rows}) == [
        ("eagle-tiny", "rwkv"), ("llama-tiny", "llama-cpp"), ("llama-tiny-hf", "transformers")]
    for r in rows:
        assert r["status"] == "ok" and r["model_source"] == "synthetic", r
        assert r["roofline_pct"] > 0 and r["roofline_method"], r
    models = run.manifest["models"]
    assert models["eagle-tiny"]["rwkv_version"] == "5.2" and models["eagle-tiny"]["quant"] == "BF16"
    assert models["llama-tiny-hf"]["hf_architecture"] == "LlamaForCausalLM"
    # The GGUF and the folder are the same shape: the same parameter count.
    assert models["llama-tiny-hf"]["n_params"] == models["llama-tiny"]["n_params"] == n_params(
        resolve_shape("tiny"))
    assert not run.table("quality")  # random weights: no quality figure for any of them


# -- format: hf: a Hugging Face folder for the transformers backend ---------------------------


def test_an_hf_folder_loads_offline_and_tokenizes_any_text(tmp_path: Path):
    pytest.importorskip("transformers", reason="pip install 'bench[transformers]'")
    from transformers import AutoConfig, AutoTokenizer

    a = build("tiny", "F16", folder=tmp_path / "a", fmt="hf")
    b = build("tiny", "F16", folder=tmp_path / "b", fmt="hf")
    assert a.is_dir() and a.name == b.name and a.name.endswith("-hf")
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        assert sha256(a / f) == sha256(b / f), f  # the same folder on any machine
    cfg = AutoConfig.from_pretrained(a)
    shape = resolve_shape("tiny")
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.num_key_value_heads,
            cfg.vocab_size) == ("llama", 2, 64, 2, 512)
    tok = AutoTokenizer.from_pretrained(a)
    ids = tok("Grüße, 世界 and the river")["input_ids"]
    assert ids[0] == 1 and max(ids) < shape["vocab"]  # BOS first; byte fallback covers all
    assert tok.decode(ids[1:]) == "Grüße, 世界 and the river"
    from safetensors import safe_open

    with safe_open(str(a / "model.safetensors"), "np") as f:
        total = sum(f.get_slice(k).get_shape()[0] * (
            f.get_slice(k).get_shape()[1] if len(f.get_slice(k).get_shape()) > 1 else 1)
            for k in f.keys())
        q = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
    assert total == n_params(shape)
    assert q.dtype.name == "float16" and abs(float(q.std()) - 0.02) < 0.002  # random, N(0, .02)


SHAPE_CONFIG = ("name: s\nmodels:\n  - id: r\n    synthetic: {model}\n{extra}"
                "backends: [{{name: {backend}}}]\n")


@pytest.mark.parametrize("backend,model,extra,message", [
    ("rwkv", "rwkv5-tiny", "    quants: [Q4_0]\n", "an rwkv5 synthetic model is one bf16 "
     "checkpoint and takes no 'quants'"),
    ("rwkv", "{base: rwkv5-tiny, vocab: 1000}", "", "World tokenizer, so its vocab must be "
     "65536"),
    ("rwkv", "{base: rwkv5-tiny, kv_heads: 1}", "", "no grouped KV heads"),
    ("transformers", "tiny", "    format: hf\n    quants: [Q4_0]\n",
     "one float16 folder and takes no 'quants'"),
    ("transformers", "rwkv5-tiny", "    format: hf\n", "written as rwkv, not hf"),
    ("transformers", "tiny", "    format: rwkv\n", "the rwkv backend runs the rwkv5 shapes"),
])
def test_synthetic_shapes_are_refused_where_their_engine_could_not_run_them(
        backend, model, extra, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        loads_config(SHAPE_CONFIG.format(model=model, extra=extra, backend=backend))


@pytest.mark.parametrize("backend,model,extra,quant", [
    # An explicit rwkv5 shape needs no kv_heads or vocab: its heads and the World vocabulary.
    ("rwkv", "{arch: rwkv5, layers: 2, embedding: 64, heads: 2, ff: 224}", "", "BF16"),
    ("transformers", "tiny", "    format: hf\n", "F16"),
])
def test_a_synthetic_shape_pairs_with_the_engine_of_its_format(backend, model, extra, quant):
    loaded = loads_config(SHAPE_CONFIG.format(model=model, extra=extra, backend=backend))
    (cell,) = expand(loaded.config)
    assert cell.backend == backend and cell.variant.quant == quant


@pytest.mark.slow
@pytest.mark.slow7b
def test_an_eagle_7b_shaped_rwkv5_runs_end_to_end(tmp_path: Path):
    # The real cache: a 15.0 GB bf16 checkpoint written once; 'cpu bf16' holds ~16 GB in RAM.
    pytest.importorskip("rwkv", reason="the rwkv extra is not installed: pip install 'bench[rwkv]'")
    from bench.runner import Runner

    loaded = loads_config(
        "name: eagle\nmodels:\n  - {id: eagle-7b, synthetic: rwkv5-7b}\n"
        "backends:\n  - {name: rwkv, strategy: cpu bf16}\n"
        "workload: {prompt_tokens: 16, gen_tokens: 4}\ntrials: {warmup: 1, repeat: 1}\n"
        "energy: {meters: [estimate], idle_s: 0}\n"
    )
    outcome = Runner(loaded, expand(loaded.config), tmp_path).run()
    rows = [r for r in outcome.trials if not r["warmup"]]
    assert rows and all(r["status"] == "ok" for r in rows), rows
    (entry,) = outcome.manifest["models"].values()
    assert entry["n_params"] == n_params(resolve_shape("rwkv5-7b"))
    assert entry["rwkv_version"] == "5.2" and entry["dtype"] == "bfloat16"
    assert all(r["model_source"] == "synthetic" and r["roofline_pct"] for r in rows)
