"""Context depth as a sweep axis: cells per depth, the fill placed untimed before the prompt by
every backend (llama.cpp's KV cache, a server's uncached prefix), and model formats paired with
the backends that run them."""
from __future__ import annotations

import pytest

from bench.backends.base import get_backend
from bench.config import ConfigError, loads_config
from bench.sweep import expand


def cells(body: str):
    return expand(loads_config(body).config)


SMOL = "name: d\nmodels: [{id: s, path: s.gguf}]\n"


def test_each_depth_is_a_cell_and_is_recorded_in_its_params():
    cs = cells(SMOL + "workload: {prompt_tokens: 32, gen_tokens: 8, depth: [0, 512, 2048]}\n"
               "backends: [{name: llama-cpp, n_ctx: 4096}]\n")
    assert [c.depth for c in cs] == [0, 512, 2048]
    assert [c.params()["depth"] for c in cs] == [0, 512, 2048]
    assert "@d512" in cs[1].describe() and "@d" not in cs[0].describe()
    assert len({c.settings_hash() for c in cs}) == 3


def test_depth_zero_keeps_the_settings_hash_cells_had_before_the_axis():
    with_axis = cells(SMOL + "workload: {prompt_tokens: 32, depth: [0, 64]}\n")[0]
    without = cells(SMOL + "workload: {prompt_tokens: 32}\n")[0]
    assert with_axis.settings_hash() == without.settings_hash()
    assert "depth" not in __import__("bench.sweep").sweep.hashed_params(without.params())


def test_depth_counts_against_n_ctx_at_validation():
    with pytest.raises(ConfigError, match="needs 2088 tokens of context but n_ctx is 2048"):
        cells(SMOL + "workload: {prompt_tokens: 32, gen_tokens: 8, depth: 2048}\n")


def test_a_negative_depth_is_refused():
    with pytest.raises(ConfigError, match="depth"):
        cells(SMOL + "workload: {prompt_tokens: 32, depth: -1}\n")


def test_models_meet_only_the_backends_that_run_their_format(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    cs = cells(
        "name: f\nmodels:\n  - {id: g, path: m.gguf}\n  - {id: r, path: e.pth}\n"
        f"  - {{id: h, path: '{folder}'}}\n"
        "backends: [{name: llama-cpp}, {name: rwkv}, {name: transformers}]\n"
    )
    assert sorted((c.variant.spec.id, c.backend) for c in cs) == [
        ("g", "llama-cpp"), ("h", "transformers"), ("r", "rwkv"),
    ]


def test_a_model_no_backend_can_run_names_the_backend_to_add():
    with pytest.raises(ConfigError, match="model 'r' is a rwkv model .* `- name: rwkv`"):
        cells("name: f\nmodels: [{id: r, path: e.pth}]\n")


@pytest.mark.slow
def test_llama_cpp_fills_the_kv_cache_untimed_and_counts_only_the_prompt(smol_path):
    s = get_backend("llama-cpp")().load(
        smol_path, {"n_threads": 2, "n_ctx": 512, "n_batch": 512, "n_ubatch": 512,
                    "n_gpu_layers": 0, "flash_attn": False}, seed=1)
    try:
        s.configure({"n_threads": 2})
        lib = s.lib
        for depth in (0, 200):
            p = s.prompt("synthetic-32", 32, None, depth=depth)
            assert len(p.fill or []) == depth
            t = s.generate(p, 8, False, lambda e: None)
            assert t.n_prompt == 32 and t.engine["engine_n_p_eval"] == 32
            # The cache holds fill, prompt and all generated tokens but the last.
            assert lib.llama_memory_seq_pos_max(s.mem, 0) == depth + 32 + 8 - 2
        too_deep = s.prompt("synthetic-32", 32, None, depth=500)
        with pytest.raises(Exception, match="at depth 500 exceed n_ctx 512"):
            s.generate(too_deep, 8, False, lambda e: None)
    finally:
        s.close()


@pytest.mark.slow
def test_a_server_gets_the_depth_as_a_prefix_it_cannot_have_cached(smol_path):
    from test_backend_openai import ReplayServer, load, openai_routes

    from bench.backends.openai.backend import ServerCountError

    with ReplayServer(openai_routes()) as srv:
        s = load(srv, smol_path)
        p = s.prompt("synthetic-16", 16, None, depth=100)
        for _ in range(3):
            # The replayed stream's canned usage (16 prompt, 8 generated tokens) cannot match
            # a depth-100 request, and bench rightly refuses those counts; what this test
            # checks is the request each trial sends.
            with pytest.raises(ServerCountError):
                s.generate(p, 4, False, lambda e: None)
        sent = [r["body"]["prompt"] for r in srv.posts("/v1/completions")]
    assert len(sent) == 3 and len(set(sent)) == 3
    assert len({x.split("]")[0] for x in sent}) == 3  # a fresh tag starts every trial
    for x in sent:
        n = len(s.tok.tokenize(x))
        # fill + prompt, plus the random tag and a break (a random hex tag is 8 to 16 tokens)
        assert 100 + 16 <= n <= 100 + 16 + 16, n


def test_the_eagle_config_validates_offline_and_names_the_files_it_would_fetch(
        monkeypatch, capsys):
    from support import REPO

    from bench.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["run", str(REPO / "configs" / "eagle-7b.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "108 cells in 3 model loads" in out
    assert "RWKV-5-World-7B-v2-20240128-ctx4096.pth" in out
    assert "eagle-7b rwkv strategy=cuda fp16" in out and "@d2048" in out
    assert "mistral-7b-instruct-v0.2 Q8_0 llama-cpp" in out
    assert "eagle-7b llama-cpp" not in out  # a .pth never meets llama.cpp
