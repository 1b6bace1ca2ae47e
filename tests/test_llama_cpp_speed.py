"""How the llama.cpp backend sets the engine up: llama-bench's context, its threadpool, the
flash-attention choice recorded as llama.cpp made it. Real llama.cpp on the small model."""
from __future__ import annotations

import gc
from pathlib import Path

import pytest

from bench.backends.llama_cpp import LlamaCppBackend, _flash_attn_effective
from bench.config import loads_config

pytestmark = pytest.mark.slow

SETTINGS = {"n_threads": 2, "n_gpu_layers": 0, "n_ctx": 512, "n_batch": 512, "n_ubatch": 512}


def load(path: Path, **kw):
    return LlamaCppBackend().load(path, {**SETTINGS, **kw}, seed=42)


def test_flash_attn_defaults_to_auto_like_llama_cpp():
    loaded = loads_config("name: x\nmodels: [{id: m, path: m.gguf}]\n")
    # Auto is held as null, so the flash_attn column stays boolean in every table.
    assert loaded.config.backends[0].flash_attn == [None]
    sweep = loads_config(
        "name: x\nmodels: [{id: m, path: m.gguf}]\n"
        "backends: [{name: llama-cpp, flash_attn: [false, true, auto]}]\n")
    assert sweep.config.backends[0].flash_attn == [False, True, None]


def test_a_sweep_of_flash_attn_with_auto_writes_a_boolean_column(tmp_path):
    from bench.results import RunWriter, load_run

    w = RunWriter(tmp_path / "r", {"format_version": 1, "run_id": "r", "cells": []})
    w.add("trials", [{"cell_id": "c1", "trial": 0, "flash_attn": False},
                     {"cell_id": "c2", "trial": 0, "flash_attn": None}])
    w.flush()
    assert [r["flash_attn"] for r in load_run(tmp_path / "r").trials] == [False, None]


@pytest.mark.parametrize("requested", [False, True, None, "auto"])
def test_every_session_says_which_flash_attention_llama_cpp_chose(smol_path, requested):
    s = load(smol_path, flash_attn=requested)
    try:
        chosen = s.row_columns()["flash_attn_effective"]
        # The CPU backend supports flash attention: auto resolves to on.
        assert chosen is (True if requested in (None, "auto") else requested)
        trace = s.generate(s.prompt("p", 32, None), 4, False, lambda e: None)
        assert trace.engine["engine_n_eval"] == 3
    finally:
        s.close()


def test_flash_attention_choice_is_read_from_llama_cpp_log():
    assert _flash_attn_effective("auto", "llama_context: Flash Attention enabled\n") is True
    assert _flash_attn_effective(
        "auto", "resolve: Flash Attention not supported, set to disabled\n") is False
    assert _flash_attn_effective("auto", "") is None
    assert _flash_attn_effective(None, "Flash Attention enabled") is True
    assert _flash_attn_effective(True, "flash_attn is not compatible with Grok") is False
    assert _flash_attn_effective(False, "") is False


def test_a_threadpool_is_attached_and_follows_the_thread_count(smol_path):
    s = load(smol_path, flash_attn=False)
    try:
        assert s.threadpool.status.startswith("attached: 2 threads")
        s.configure({"n_threads": 1})
        assert s.threadpool.status.startswith("attached: 1 threads")
        t = s.generate(s.prompt("p", 32, None), 4, False, lambda e: None)
        assert t.engine["engine_n_p_eval"] == 32
    finally:
        s.close()


def test_the_context_has_the_requested_size_not_more(smol_path):
    s = load(smol_path, n_ctx=320)
    try:
        # llama.cpp pads the context to a multiple of 256, as it does for llama-bench.
        assert s.n_ctx == 512
    finally:
        s.close()


def test_the_garbage_collector_is_paused_inside_a_trial_and_restored(smol_path):
    s = load(smol_path)
    states = []
    try:
        s.generate(s.prompt("p", 16, None), 4, False, lambda e: states.append(gc.isenabled()))
        assert states == [False, False, False]
        assert gc.isenabled()
    finally:
        s.close()
