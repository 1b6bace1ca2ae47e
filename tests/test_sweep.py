"""Sweep expansion: cartesian product, exclude, include, and ordering by model load."""
from __future__ import annotations

import pytest

from bench.config import ConfigError, loads_config
from bench.sweep import expand, groups

BASE = """\
name: s
models:
  - {id: a, package: pkg_a, file: a.Q4_0.gguf}
  - {id: b, repo: org/b-GGUF, file: "b.{quant}.gguf", quants: [Q4_K_M, Q8_0]}
backends:
  - name: llama-cpp
    n_threads: [1, 2]
    n_ctx: [1024, 2048]
workload: {prompt_tokens: [16, 64], gen_tokens: 8}
"""


def cells_of(text):
    return expand(loads_config(text).config)


def test_every_list_is_a_sweep_axis():
    cells = cells_of(BASE)
    # 3 model variants x 2 threads x 2 n_ctx x 2 prompts
    assert len(cells) == 3 * 2 * 2 * 2
    assert {c.variant.quant for c in cells} == {"Q4_0", "Q4_K_M", "Q8_0"}
    assert {c.variant.file for c in cells if c.variant.spec.id == "b"} == {
        "b.Q4_K_M.gguf", "b.Q8_0.gguf"
    }


def test_cells_are_grouped_so_each_model_setting_loads_once():
    cells = cells_of(BASE)
    gs = groups(cells)
    # threads and prompts change within a load; model variant and n_ctx need a new load
    assert len(gs) == 3 * 2
    keys = [g[0].load_key() for g in gs]
    assert len(set(keys)) == len(keys)
    assert all(len(g) == 4 for g in gs)
    assert [c.cell_id for c in cells] == [f"c{i:03d}" for i in range(1, len(cells) + 1)]


def test_exclude_drops_matching_combinations():
    rules = "exclude:\n  - {model: b, n_threads: 1}\n  - {quant: Q4_0, n_ctx: 2048}\n"
    cells = cells_of(BASE + rules)
    assert not [c for c in cells if c.params()["model"] == "b" and c.params()["n_threads"] == 1]
    assert not [c for c in cells if c.variant.quant == "Q4_0" and c.setting["n_ctx"] == 2048]
    assert len(cells) == 24 - 8 - 4


def test_include_adds_a_cell_with_first_values_for_unnamed_axes():
    cells = cells_of(BASE + "include:\n  - {model: a, n_threads: 8, prompt_tokens: 100}\n")
    extra = [c for c in cells if c.setting["n_threads"] == 8]
    assert len(extra) == 1
    p = extra[0].params()
    assert (p["n_ctx"], p["prompt_tokens"], p["gen_tokens"], p["quant"]) == (1024, 100, 8, "Q4_0")
    # it joins the load of the matching model setting instead of forcing a reload
    assert len(groups(cells)) == 6


def test_include_of_an_existing_cell_is_not_duplicated():
    assert len(cells_of(BASE + "include:\n  - {model: a, n_threads: 1}\n")) == 24


def test_exclude_with_unknown_key_lists_allowed_keys():
    with pytest.raises(ConfigError, match="exclude\\[0\\]: unknown key 'thread'; allowed: model"):
        cells_of(BASE + "exclude:\n  - {thread: 1}\n")


def test_excluding_everything_is_an_error():
    with pytest.raises(ConfigError, match="sweep is empty"):
        cells_of(BASE + "exclude:\n  - {backend: llama-cpp}\n")


def test_context_too_small_for_the_workload_is_caught_before_running():
    with pytest.raises(ConfigError, match="needs 72 tokens of context but n_ctx is 64"):
        cells_of(BASE.replace("n_ctx: [1024, 2048]", "n_ctx: 64"))


def test_settings_hash_is_stable_and_distinguishes_cells():
    a, b = cells_of(BASE), cells_of(BASE)
    assert [c.settings_hash() for c in a] == [c.settings_hash() for c in b]
    assert len({c.settings_hash() for c in a}) == len(a)


def test_text_prompts_are_an_axis_too():
    prompts = 'prompt: ["hello there", {id: q2, text: "why?"}]'
    text = BASE.replace("prompt_tokens: [16, 64]", prompts)
    cells = cells_of(text)
    assert {c.prompt_id for c in cells} == {"prompt-1", "q2"}
    assert all(c.prompt_tokens is None for c in cells)
