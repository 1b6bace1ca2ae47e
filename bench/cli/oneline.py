"""`bench run -m model.gguf -p 128,512 -n 64 ...`: llama-bench's flags -> a config dict.

The dict is written out as YAML and read back through `bench.config.loads_config`, the same
validation a YAML file gets, so the one-line path has no rules of its own; the YAML is kept in
the run folder so the run can be repeated and grown.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bench.config import ConfigError, LoadedConfig, loads_config, quant_from_filename

# What a one-line run measures when a flag is left out. Chosen so a 7B Q4 model on a laptop
# CPU gives its first number within about a minute (1 warm-up + 3 trials of pp128 + tg64), and
# the small shipped model within seconds.
DEFAULT_PROMPT = [128]
DEFAULT_GEN = [64]
DEFAULT_REPEAT = 3
DEFAULT_WARMUP = 1
# llama-bench offloads every layer by default; so do we, where the engine can offload at all.
ALL_LAYERS = 99

SOURCE = "bench run -m"

# llama-bench's range syntax: first[-last[(+|*)step]], comma-separated.
_RANGE = re.compile(r"^(\d+)(?:-(\d+)(?:([+*])(\d+))?)?$")
_HUB = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+):(?P<what>[^:]+)$")
_ID_BAD = re.compile(r"[^\w.+-]+")


def parse_ints(values: Sequence[str] | None, flag: str) -> list[int] | None:
    """`["1,2", "4-16*2"]` -> [1, 2, 4, 8, 16] (llama-bench's `first-last`, `first-last+step`,
    `first-last*mult`; a flag may be repeated); None when the flag was not given."""
    if not values:
        return None
    out: list[int] = []
    for value in values:
        for part in str(value).split(","):
            m = _RANGE.match(part.strip())
            if m is None:
                raise ConfigError(
                    f"{flag} {value!r}: expected numbers such as 128,512 or ranges such as "
                    "1-8 (every 1), 128-512+128 (step) or 1-16*2 (doubling)"
                )
            first = int(m.group(1))
            last = int(m.group(2)) if m.group(2) is not None else first
            op = m.group(3) or "+"
            step = int(m.group(4)) if m.group(4) is not None else 1
            if last < first:
                raise ConfigError(
                    f"{flag} {value!r}: the range {part} is empty; write it first-last with "
                    "first <= last"
                )
            i = first
            while i <= last:
                out.append(i)
                nxt = i + step if op == "+" else i * step
                if nxt <= i:
                    raise ConfigError(
                        f"{flag} {value!r}: the range never reaches {last} (a step of 0, or "
                        "doubling from 0); use a step that grows"
                    )
                i = nxt
            if len(out) > 10_000:
                raise ConfigError(f"{flag} {value!r} expands to more than 10000 values")
    return list(dict.fromkeys(out))  # repeated values would be repeated cells


def _model_id(file_name: str) -> str:
    """'SmolLM2-135M-Instruct.Q4_1.gguf' -> 'SmolLM2-135M-Instruct' (the quant is its own
    column)."""
    stem = Path(file_name).name
    stem = stem[: -len(".gguf")] if stem.lower().endswith(".gguf") else stem
    quant = quant_from_filename(file_name)
    if quant:
        cut = re.sub(rf"[._-]*{re.escape(quant)}$", "", stem, flags=re.IGNORECASE)
        stem = cut or stem
    return _ID_BAD.sub("-", stem).strip("-.")[:120] or "model"


def model_entry(arg: str) -> dict[str, Any]:
    """One `-m`: a local GGUF file, a Hub `repo:file.gguf` or a Hub `repo:QUANT`."""
    path = Path(arg).expanduser()
    if path.exists():
        if path.is_dir():
            raise ConfigError(f"-m {arg}: is a folder; give the .gguf file inside it")
        return {"id": _model_id(path.name), "path": str(path.resolve())}
    hub = _HUB.match(arg)
    if hub is not None:
        repo, what = hub.group("repo"), hub.group("what")
        if what.lower().endswith(".gguf"):
            return {"id": _model_id(Path(what).name), "repo": repo, "file": what}
        if "/" in what:
            raise ConfigError(f"-m {arg}: after the ':' give a .gguf file or a quantization "
                              "such as Q4_K_M")
        name = re.sub(r"[-_.]gguf$", "", repo.split("/", 1)[1], flags=re.IGNORECASE)
        return {"id": _ID_BAD.sub("-", name)[:120], "repo": repo, "quants": [what]}
    if "/" in arg and ":" not in arg and not arg.lower().endswith(".gguf"):
        raise ConfigError(
            f"-m {arg}: no such file; for a Hugging Face repository add the file or the "
            f"quantization, such as {arg}:Q4_K_M"
        )
    raise ConfigError(
        f"-m {arg}: no such file; give a local .gguf file, or a Hugging Face repo:file.gguf "
        "or repo:QUANT"
    )


def _unique_ids(models: list[dict[str, Any]]) -> None:
    """Two files with the same name but another quant get their quant back in the id."""
    seen: dict[str, int] = {}
    ids = [m["id"] for m in models]
    for m in models:
        if ids.count(m["id"]) > 1:
            source = m.get("path") or m.get("file") or ""
            quant = quant_from_filename(source) or "".join(m.get("quants") or [])
            if quant:
                m["id"] = _ID_BAD.sub("-", f"{m['id']}-{quant}")
    for m in models:
        n = seen.get(m["id"], 0)
        seen[m["id"]] = n + 1
        if n:
            m["id"] = f"{m['id']}-{n + 1}"


def gpu_offload_available() -> bool:
    """Whether this llama.cpp build can offload layers (CUDA, Metal, Vulkan, ...)."""
    try:
        import llama_cpp
    except ImportError:
        return False
    try:
        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:  # noqa: BLE001 - an old binding without the call: treat as CPU-only
        return False


def build_config(
    models: Sequence[str],
    prompt: Sequence[str] | None = None,
    gen: Sequence[str] | None = None,
    threads: Sequence[str] | None = None,
    ngl: Sequence[str] | None = None,
    depth: Sequence[str] | None = None,
    repetitions: int | None = None,
    gpu: bool | None = None,
) -> dict[str, Any]:
    """The config a one-line run stands for, as plain data (validated by `load_oneline`)."""
    entries = [model_entry(m) for m in models]
    _unique_ids(entries)
    prompts = parse_ints(prompt, "-p") or DEFAULT_PROMPT
    gens = parse_ints(gen, "-n") or DEFAULT_GEN
    depths = parse_ints(depth, "-d")
    backend: dict[str, Any] = {"name": "llama-cpp"}
    t = parse_ints(threads, "-t")
    if t:
        backend["n_threads"] = t
    layers = parse_ints(ngl, "-ngl")
    if layers is None and (gpu if gpu is not None else gpu_offload_available()):
        layers = [ALL_LAYERS]
    if layers is not None:
        backend["n_gpu_layers"] = layers
    # One context that holds the largest cell (llama-bench sizes it per test the same way),
    # rounded up so a small change of -p does not change the load.
    need = max(prompts) + max(gens) + (max(depths) if depths else 0)
    backend["n_ctx"] = max(512, -(-need // 256) * 256)
    workload: dict[str, Any] = {"prompt_tokens": prompts, "gen_tokens": gens}
    if depths is not None:
        # Tokens already in the KV cache before each trial (llama-bench's -d); the key exists
        # only where an engine measures at depth, so it is written only when asked for.
        workload["depth"] = depths
    first = entries[0]["id"]
    name = first[:60] + (f"-and-{len(entries) - 1}-more" if len(entries) > 1 else "")
    return {
        "name": _ID_BAD.sub("-", name).strip("-.") or "oneline",
        "description": "made from a bench run -m command line",
        "models": entries,
        "backends": [backend],
        "workload": workload,
        "trials": {"warmup": DEFAULT_WARMUP, "repeat": repetitions or DEFAULT_REPEAT},
    }


def to_yaml(config: dict[str, Any], command: str) -> str:
    head = (
        f"# The config of: {command}\n"
        "# Run it again with `bench run THIS_FILE`; edit it to grow the sweep.\n"
    )
    return head + yaml.safe_dump(
        config, sort_keys=False, allow_unicode=True, default_flow_style=None
    )


# Where validation names a config key, the one-line user typed a flag.
_FLAG_OF = [
    (re.compile(r"\bworkload\.prompt_tokens(\[\d+\])?"), "-p"),
    (re.compile(r"\bworkload\.gen_tokens(\[\d+\])?"), "-n"),
    (re.compile(r"\bworkload\.depth(\[\d+\])?"), "-d"),
    (re.compile(r"\bbackends\[0\]\.n_threads(\[\d+\])?"), "-t"),
    (re.compile(r"\bbackends\[0\]\.n_gpu_layers(\[\d+\])?"), "-ngl"),
    (re.compile(r"\btrials\.repeat"), "-r"),
    (re.compile(r"\bmodels(\[\d+\])?(\.\w+)?"), "-m"),
]


def _as_flags(message: str) -> str:
    message = re.sub(rf"^{re.escape(SOURCE)}:\d+: ", f"{SOURCE}: ", message, flags=re.MULTILINE)
    for pattern, flag in _FLAG_OF:
        message = pattern.sub(flag, message)
    return message


def load_oneline(config: dict[str, Any], command: str) -> tuple[LoadedConfig, str]:
    """Validate the dict exactly as a YAML file is validated; returns it and its YAML text."""
    text = to_yaml(config, command)
    try:
        return loads_config(text, SOURCE), text
    except ConfigError as e:
        raise ConfigError(_as_flags(str(e))) from None
