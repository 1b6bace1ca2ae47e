"""`bench run -m`: llama-bench's flags become a config that YAML's own validation accepts."""
from __future__ import annotations

import pytest
import yaml

from bench.cli import main
from bench.cli.oneline import build_config, load_oneline, model_entry, parse_ints
from bench.config import ConfigError, loads_config
from bench.sweep import expand


def test_ranges_follow_llama_bench_syntax():
    assert parse_ints(["1-8*2"], "-t") == [1, 2, 4, 8]
    assert parse_ints(["128-512+128"], "-p") == [128, 256, 384, 512]
    assert parse_ints(["1-3"], "-t") == [1, 2, 3]
    # Comma lists and repeated flags add up; a value given twice is one cell.
    assert parse_ints(["128,512", "64", "512"], "-p") == [128, 512, 64]
    assert parse_ints(None, "-p") is None


@pytest.mark.parametrize("bad", ["8-4", "1-8*1", "0-8*2", "abc", "1-", "-3", "4-8+0"])
def test_a_bad_range_is_one_sentence_naming_the_flag(bad):
    with pytest.raises(ConfigError) as e:
        parse_ints([bad], "-p")
    assert str(e.value).startswith(f"-p {bad!r}")


def test_model_id_comes_from_the_file_name_and_the_quant_stays_a_column(smol_like):
    entry = model_entry(str(smol_like))
    assert entry == {"id": "SmolLM2-135M-Instruct", "path": str(smol_like.resolve())}
    cells = expand(load_oneline(build_config([str(smol_like)], gpu=False), "t")[0].config)
    assert cells[0].params()["quant"] == "Q4_1"


def test_hub_references_pick_a_file_or_a_quant():
    assert model_entry("bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M") == {
        "id": "SmolLM2-135M-Instruct", "repo": "bartowski/SmolLM2-135M-Instruct-GGUF",
        "quants": ["Q4_K_M"],
    }
    assert model_entry("org/repo-GGUF:model.Q8_0.gguf") == {
        "id": "model", "repo": "org/repo-GGUF", "file": "model.Q8_0.gguf",
    }
    assert model_entry("org/repo:q8/model-Q8_0.gguf")["file"] == "q8/model-Q8_0.gguf"


@pytest.mark.parametrize("arg,says", [
    ("missing.gguf", "no such file"),
    ("org/repo", "such as org/repo:Q4_K_M"),
])
def test_a_model_that_is_not_there_is_one_sentence(arg, says):
    with pytest.raises(ConfigError, match=says):
        model_entry(arg)


def test_two_quants_of_one_model_keep_distinct_ids(tmp_path):
    a, b = tmp_path / "m.Q4_0.gguf", tmp_path / "m.Q8_0.gguf"
    for p in (a, b):
        p.write_bytes(b"GGUF")
    cfg = build_config([str(a), str(b)], gpu=False)
    assert [m["id"] for m in cfg["models"]] == ["m-Q4_0", "m-Q8_0"]
    load_oneline(cfg, "t")  # unique ids: the schema accepts it


def test_flags_become_the_sweep_the_yaml_would_give(smol_like):
    cfg = build_config([str(smol_like)], prompt=["16,32"], gen=["8"], threads=["1-2"],
                       ngl=["0"], repetitions=2, gpu=False)
    loaded, text = load_oneline(cfg, "bench run -m x")
    cells = expand(loaded.config)
    got = {(c.params()["prompt_tokens"], c.params()["n_threads"]) for c in cells}
    assert got == {(16, 1), (32, 1), (16, 2), (32, 2)}
    assert all(c.gen_tokens == 8 and c.params()["n_gpu_layers"] == 0 for c in cells)
    assert loaded.config.trials.repeat == 2
    # The printed YAML is itself a config that gives the same sweep.
    again = loads_config(text, "again.yaml")
    assert again.hash == loaded.hash
    assert text.startswith("# The config of: bench run -m x")


def test_the_context_holds_the_largest_cell(smol_like):
    cfg = build_config([str(smol_like)], prompt=["1000"], gen=["100"], gpu=False)
    assert cfg["backends"][0]["n_ctx"] >= 1100


def test_depth_is_written_only_when_asked_for(smol_like):
    assert "depth" not in build_config([str(smol_like)], gpu=False)["workload"]
    cfg = build_config([str(smol_like)], depth=["0,512"], gpu=False)
    assert cfg["workload"]["depth"] == [0, 512]
    assert cfg["backends"][0]["n_ctx"] >= 512 + 128 + 64


def test_all_layers_go_to_the_gpu_only_where_the_build_can_offload(smol_like):
    assert "n_gpu_layers" not in build_config([str(smol_like)], gpu=False)["backends"][0]
    assert build_config([str(smol_like)], gpu=True)["backends"][0]["n_gpu_layers"] == [99]
    # An explicit -ngl wins either way.
    assert build_config([str(smol_like)], ngl=["0"], gpu=True)["backends"][0][
        "n_gpu_layers"] == [0]


def test_validation_errors_name_the_flag_not_the_yaml_key(smol_like, capsys):
    assert main(["run", "-m", str(smol_like), "-p", "0", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "-p" in err and "prompt_tokens" not in err and "Traceback" not in err


def test_print_config_prints_yaml_and_runs_nothing(smol_like, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["run", "-m", str(smol_like), "-p", "64", "-n", "32", "--print-config",
                 "--out", str(out)]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["workload"] == {"prompt_tokens": [64], "gen_tokens": [32]}
    assert doc["models"][0]["path"] == str(smol_like.resolve())
    assert not out.exists()


def test_sweep_flags_with_a_config_file_are_refused(tmp_path, capsys):
    assert main(["run", "configs/smoke.yaml", "-p", "64"]) == 2
    assert "goes with -m" in capsys.readouterr().err


def test_a_dry_run_estimates_the_duration_and_says_how(smol_like, tmp_path, capsys):
    assert main(["run", "-m", str(smol_like), "-p", "16,512", "--dry-run",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 cells in 1 model loads" in out
    assert "estimated duration: about" in out and "rough estimate" in out
    assert "assumed rates" in out  # no previous run of this model in tmp_path


@pytest.fixture
def smol_like(tmp_path):
    """A file named like the shipped model; enough for everything before llama.cpp loads it."""
    p = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    p.write_bytes(b"GGUF" + b"\0" * 64)
    return p
