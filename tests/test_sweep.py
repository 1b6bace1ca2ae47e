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


# -- exclude and include entries: converted once, with the sweep's own types -------------------


def test_an_include_value_written_as_text_becomes_the_number_the_sweep_would_hold():
    cells = cells_of(BASE + "include:\n  - {model: a, n_threads: '8', gen_tokens: '4'}\n")
    extra = [c for c in cells if c.setting["n_threads"] == 8]
    assert len(extra) == 1
    assert type(extra[0].setting["n_threads"]) is int and type(extra[0].gen_tokens) is int
    # The same conversion the main sweep applies to the same text.
    main = cells_of(BASE.replace("n_threads: [1, 2]", "n_threads: ['8']"))
    assert {type(c.setting["n_threads"]) for c in main} == {int}


def test_an_exclude_value_written_as_text_matches_like_the_number():
    cells = cells_of(BASE + "exclude:\n  - {model: b, n_threads: '1'}\n")
    assert not [c for c in cells if c.params()["model"] == "b" and c.setting["n_threads"] == 1]
    assert len(cells) == 24 - 8


@pytest.mark.parametrize(
    "entry, message",
    [
        ("include:\n  - {model: a, n_threads: lots}", r"include\[0\]\.n_threads: .*integer"),
        ("include:\n  - {model: a, n_threads: 0}", r"include\[0\]\.n_threads: .*greater"),
        ("include:\n  - {model: a, n_ctx: 99999999999}", r"include\[0\]\.n_ctx: .*less"),
        ("exclude:\n  - {gen_tokens: many}", r"exclude\[0\]\.gen_tokens: .*integer"),
        ("exclude:\n  - {flash_attn: perhaps}", r"exclude\[0\]\.flash_attn: .*boolean"),
        ("exclude:\n  - {model: c}", r"exclude\[0\]\.model: no model 'c'; models: a, b"),
        ("exclude:\n  - {model: 7}", r"exclude\[0\]\.model: .*string"),
        ("exclude:\n  - {quant: Q2_K}", r"exclude\[0\]\.quant: no quant 'Q2_K'"),
        ("exclude:\n  - {backend: openai}", r"exclude\[0\]\.backend: no backend 'openai'"),
        ("include:\n  - {model: b, lang: en}", r"include\[0\]\.lang: no language 'en'"),
        ("include:\n  - {model: a, prompt_tokens: -3}", r"include\[0\]\.prompt_tokens: "),
    ],
    ids=["text-int", "zero-threads", "huge-ctx", "text-gen", "text-bool", "unknown-model",
         "int-model", "unknown-quant", "unknown-backend", "unknown-lang", "negative-prompt"],
)
def test_a_bad_exclude_or_include_value_names_the_entry_and_key(entry, message):
    with pytest.raises(ConfigError, match=message):
        cells_of(BASE + entry + "\n")


def test_a_bad_include_value_fails_the_dry_run_with_exit_2(tmp_path, capsys):
    from bench.cli import main

    p = tmp_path / "c.yaml"
    p.write_text(BASE + "include:\n  - {model: a, n_threads: lots}\nenergy: {meters: none}\n")
    assert main(["run", str(p), "--dry-run"]) == 2
    assert "include[0].n_threads" in capsys.readouterr().err


# -- the sweep's size is counted before it is built --------------------------------------------


def test_a_sweep_above_the_default_cap_is_refused_with_its_size():
    lists = "n_threads: [" + ", ".join(str(i) for i in range(1, 101)) + "]"
    text = BASE.replace("n_threads: [1, 2]", lists).replace(
        "prompt_tokens: [16, 64]", "prompt_tokens: [" + ", ".join(str(i) for i in range(1, 21))
        + "]"
    )
    # 3 variants x 100 threads x 2 n_ctx x 20 prompts = 12,000 cells > 10,000
    with pytest.raises(ConfigError, match=r"the sweep has 12,000 cells .*execution\.max_cells"):
        cells_of(text)
    assert len(cells_of(text + "execution: {max_cells: 12000}\n")) == 12_000


def test_max_cells_is_configurable_and_bounded():
    with pytest.raises(ConfigError, match=r"24 cells .*more than execution.max_cells \(20\)"):
        cells_of(BASE + "execution: {max_cells: 20}\n")
    assert len(cells_of(BASE + "execution: {max_cells: 24}\n")) == 24
    with pytest.raises(ConfigError, match="execution.max_cells"):
        cells_of(BASE + "execution: {max_cells: 100000000}\n")


def test_a_sweep_of_a_trillion_cells_is_refused_at_once_without_building_it(tmp_path):
    import subprocess
    import sys

    from support import REPO

    # Six axes of 100 values: 10^12 cells. Building them would take days and terabytes, so the
    # check runs in a child process with 1 GB of address space and a deadline.
    values = "[" + ", ".join(str(i) for i in range(1, 101)) + "]"
    body = (
        "name: huge\nmodels: [{id: m, path: /x.gguf}]\nbackends:\n  - name: llama-cpp\n"
        f"    n_threads: {values}\n    n_batch: {values}\n    n_ubatch: {values}\n"
        f"    n_gpu_layers: {values}\n"
        "    n_ctx: [" + ", ".join(str(4096 + i) for i in range(100)) + "]\n"
        f"workload: {{prompt_tokens: {values}, gen_tokens: 1}}\n"
    )
    cfg = tmp_path / "huge.yaml"
    cfg.write_text(body)
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
        "from bench.cli import main; sys.exit(main(['run', sys.argv[1], '--dry-run']))"
    )
    proc = subprocess.run(  # noqa: PLW1510 - the exit code is what is tested
        [sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "the sweep has 1,000,000,000,000 cells" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_exclude_and_include_reach_server_arguments_and_ollama_options():
    text = """\
name: srv
models: [{id: s, served: smol}]
backends:
  - name: openai
    server: {command: [x, --ctx, "{ctx}"], args: {ctx: [256, 512]}}
    endpoint: [completions, chat]
  - name: ollama
    options: {num_ctx: [256, 512]}
workload: {prompt_tokens: 16, gen_tokens: 4}
exclude:
  - {backend: openai, ctx: 512, endpoint: chat}
  - {backend: ollama, num_ctx: 512}
include:
  - {backend: ollama, num_ctx: 1024}
"""
    cells = cells_of(text)
    got = sorted(
        (c.backend, c.setting.get("ctx") or c.setting.get("num_ctx"), c.setting.get("endpoint", ""))
        for c in cells
    )
    assert got == [
        ("ollama", 256, ""), ("ollama", 1024, ""),
        ("openai", 256, "chat"), ("openai", 256, "completions"), ("openai", 512, "completions"),
    ]
    with pytest.raises(ConfigError, match=r"exclude\[0\]\.endpoint: "):
        cells_of(text.replace("endpoint: chat}", "endpoint: fax}"))
