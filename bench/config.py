"""YAML config -> validated, frozen config objects.

Errors name the file, the line, the key and what is allowed, and never surface as a traceback.
YAML is read safely (no Python objects are constructed) and its expansion is bounded, so alias
bombs and huge documents are rejected before validation walks them.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from bench.backends.base import BackendSettings
from bench.backends.http_settings import OllamaSettings, OpenAISettings
from bench.backends.llama_cpp.config import LlamaCppSettings
from bench.backends.rwkv.config import RwkvSettings
from bench.backends.transformers.config import TransformersSettings
from bench.meters.settings import EnergySettings
from bench.schema import HubRepo, HubRevision, LocalPath, RelativeFile, StrictModel, relative_file

__all__ = ["BackendSettings", "Config", "ConfigError", "LlamaCppSettings", "LoadedConfig"]
from bench.synthetic import SyntheticShape

MAX_CONFIG_BYTES = 1_000_000
MAX_NODES = 100_000
# No config section nests deeper than about 6; 32 leaves room and keeps every walk shallow.
MAX_DEPTH = 32
# The longest string any key takes, except prompt texts (bounded by the file size instead).
MAX_STRING_CHARS = 100_000
# C0 controls and DEL, except tab and newlines: never meant in a config, and an escape sequence
# in a name would reach the terminal.
# libyaml when PyYAML has it: the same safe loader, many times faster on large documents.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class ConfigError(Exception):
    """A config the user must fix; the message is one or a few clear sentences."""


class _YamlProblem(Exception):
    def __init__(self, msg: str, line: int | None = None):
        super().__init__(msg)
        self.line = line


# ---------------------------------------------------------------------------------------------
# Schema


def _as_list(v: Any) -> Any:
    return v if isinstance(v, list) else [v]


PosInt = Annotated[int, Field(ge=1, le=1_000_000)]
LangCode = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]
NonNegInt = Annotated[int, Field(ge=0, le=1_000_000)]


class ModelSpec(StrictModel):
    """A model reference: one of `path`, `repo` (+ `file` or `quants`), `package` + `file`."""

    id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[\w.+-]+$")]
    path: LocalPath | None = None
    repo: HubRepo | None = None
    # The GGUF inside the repository or package; relative, never reaching outside it.
    file: RelativeFile | None = None
    quants: list[Annotated[str, Field(pattern=r"^[\w.-]+$", max_length=40)]] | None = None
    # An importable name, dotted segments that are identifiers (it is never imported to check).
    package: Annotated[
        str, Field(max_length=200, pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
    ] | None = None
    # A model known to a server by this name (Ollama's "mistral:7b"); no local file.
    served: Annotated[str, Field(min_length=1, max_length=300)] | None = None
    # A high-precision GGUF (F32/F16/BF16) that each of `quants` is built from locally, once,
    # with llama.cpp's quantizer; cached by the source's hash and the type.
    quantize_from: LocalPath | None = None
    imatrix: LocalPath | None = None  # optional importance matrix for quantize_from
    # The distribution to pip-install when `package` is missing (defaults to package with - for _).
    pip: Annotated[
        str,
        Field(
            max_length=200,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?"
            r"((==|>=|<=|~=|!=|<|>)[A-Za-z0-9.*+!-]+)?$",
        ),
    ] | None = None
    revision: HubRevision | None = None
    # What the model is, when `path`/`repo` do not say it: a GGUF file (llama.cpp and servers),
    # an RWKV `.pth` checkpoint (the rwkv backend) or a Hugging Face model folder or repository
    # (the transformers backend). Default: `.pth` -> rwkv, a folder -> hf, otherwise gguf.
    format: Literal["gguf", "rwkv", "hf"] | None = None
    # A model of a named shape with random weights (bench.synthetic): `llama-7b`, or a mapping
    # with `base` and/or arch, layers, embedding, heads, kv_heads, ff, vocab, seed.
    synthetic: Annotated[str, Field(pattern=r"^[\w.-]+$")] | SyntheticShape | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        sources = [
            k for k in ("path", "repo", "package", "served", "quantize_from", "synthetic")
            if getattr(self, k) is not None
        ]
        if len(sources) != 1:
            raise ValueError(
                "a model needs exactly one of 'path' (a local GGUF file), 'repo' (a Hugging "
                "Face repository, with 'file' or 'quants'), 'package' (with 'file'), "
                "'served' (a model name a server knows), 'quantize_from' (with 'quants') or "
                "'synthetic' (a named shape with random weights)"
                + (f"; it has {', '.join(sources)}" if sources else "")
            )
        if (
            self.repo is not None and self.file is None and not self.quants
            and self.format != "hf"
        ):
            raise ValueError(
                "a 'repo' model needs 'file' or 'quants' to pick the GGUF file (or "
                "format: hf for a transformers model repository)"
            )
        if self.package is not None and self.file is None:
            raise ValueError("a 'package' model needs 'file': the GGUF's name inside the package")
        if isinstance(self.synthetic, str):
            from bench.synthetic import PRESETS

            if self.synthetic not in PRESETS:
                raise ValueError(
                    f"unknown synthetic model {self.synthetic!r}; known: {', '.join(PRESETS)}"
                )
        if self.synthetic is not None:
            from bench.synthetic import model_format, resolve_shape

            # The whole shape is checked here (SyntheticError is a ValueError), so the sweep,
            # --dry-run and the run see only shapes that can be built.
            shape = resolve_shape(self.synthetic)
            native = model_format(shape)
            if self.format is not None and self.format != model_format(shape, self.format):
                raise ValueError(
                    f"a synthetic {shape['arch']} model is written as {native}, not "
                    f"{self.format}; drop 'format'"
                )
            if self.format == "rwkv" and native != "rwkv":
                raise ValueError(
                    f"a synthetic {shape['arch']} model is a GGUF file or, with format: hf, a "
                    "Hugging Face folder; the rwkv backend runs the rwkv5 shapes"
                )
            if self.format == "hf" and self.quants:
                raise ValueError(
                    "a format: hf synthetic model is one float16 folder and takes no "
                    "'quants'; the transformers backend's dtype sets its precision"
                )
            if native == "rwkv" and self.quants:
                raise ValueError(
                    "an rwkv5 synthetic model is one bf16 checkpoint and takes no 'quants'; "
                    "the rwkv backend's strategy ('cpu fp32', 'cuda fp16i8', ...) sets its "
                    "precision"
                )
        if (self.quants and self.repo is None and self.quantize_from is None
                and self.synthetic is None):
            raise ValueError(
                "'quants' needs 'repo' or 'quantize_from' (a path, package or served name is "
                "one file)"
            )
        if self.quantize_from is not None and not self.quants:
            raise ValueError("'quantize_from' needs 'quants': the levels to build")
        if self.imatrix is not None and self.quantize_from is None:
            raise ValueError("'imatrix' is used when quantizing: it needs 'quantize_from'")
        if self.quants and len(set(self.quants)) != len(self.quants):
            raise ValueError("'quants' lists the same quantization twice")
        if self.file is not None and self.quants:
            # A quant is put into the file name: the result must stay inside the repository too.
            for q in self.quants:
                try:
                    relative_file(self.file.replace("{quant}", q))
                except ValueError as e:
                    raise ValueError(f"'file' with quant {q!r}: {e}") from None
        return self


# Each backend's settings live beside its code (bench/backends/<name>/config.py); a new backend
# adds its model to this union.
BackendSpec = Annotated[
    LlamaCppSettings | OpenAISettings | OllamaSettings | RwkvSettings | TransformersSettings,
    Field(discriminator="name"),
]


class PromptText(StrictModel):
    id: Annotated[str, Field(pattern=r"^[\w.-]+$", max_length=100)]
    text: Annotated[str, Field(min_length=1, max_length=1_000_000)]


class Workload(StrictModel):
    # A synthetic prompt of N tokens (like llama-bench's pp512) ...
    prompt_tokens: list[PosInt] | None = None
    # ... or given text: a string or a list of {id, text} ...
    prompt: list[PromptText] | None = None
    # ... or a prompt pack: `parallel` (built in, 12 languages) or a JSONL file/folder of
    # {id, lang, text}. Each language and each prompt is a sweep value.
    pack: LocalPath | None = None
    languages: list[LangCode] | None = None
    prompt_ids: list[Annotated[str, Field(pattern=r"^[\w.-]+$")]] | None = None
    gen_tokens: list[PosInt] = [64]
    # Context depth, a sweep axis: tokens in the KV cache (or RNN state) before the timed
    # prompt, filled untimed each trial, like llama-bench's -d.
    depth: list[NonNegInt] = [0]
    # Fixed length by default: EOS does not end a trial early.
    stop_at_eos: bool = False

    _lists = field_validator("prompt_tokens", "gen_tokens", "depth", mode="before")(_as_list)

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_forms(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [{"id": "prompt-1", "text": v}]
        if isinstance(v, list):
            return [
                {"id": f"prompt-{i + 1}", "text": p} if isinstance(p, str) else p
                for i, p in enumerate(v)
            ]
        return v

    @model_validator(mode="after")
    def _one_prompt_source(self) -> Workload:
        given = [k for k in ("prompt_tokens", "prompt", "pack") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(
                "give one of 'prompt_tokens' (synthetic), 'prompt' (text) or 'pack' "
                f"(a prompt pack), not {' and '.join(given)}"
            )
        if self.pack is None and (self.languages or self.prompt_ids):
            raise ValueError(
                "'languages' and 'prompt_ids' choose from a 'pack'; add pack: parallel"
            )
        if self.prompt is not None and len({p.id for p in self.prompt}) != len(self.prompt):
            raise ValueError("two prompts share an id")
        return self

    def prompt_axis(self) -> list[tuple[str, int | None, str | None, str | None]]:
        """(prompt_id, prompt_tokens, text, lang) for each prompt of the sweep."""
        if self.pack is not None:
            from bench.workload.packs import PackError, load_pack

            try:
                prompts = load_pack(self.pack, self.languages)
            except PackError as e:
                raise ConfigError(f"workload.pack: {e}") from None
            if self.prompt_ids:
                known = {p.id for p in prompts}
                missing = [i for i in self.prompt_ids if i not in known]
                if missing:
                    raise ConfigError(
                        f"workload.prompt_ids: the pack has no prompt {missing[0]!r}; it has "
                        f"{', '.join(sorted(known))}"
                    )
                prompts = [p for p in prompts if p.id in self.prompt_ids]
            return [(p.id, None, p.text, p.lang) for p in prompts]
        if self.prompt is not None:
            return [(p.id, None, p.text, None) for p in self.prompt]
        return [(f"synthetic-{n}", n, None, None) for n in (self.prompt_tokens or [128])]


class AdaptiveRepeat(StrictModel):
    """Add trials until the 95% CI half-width of decode t/s is within target_ci_pct of its mean."""

    min: Annotated[int, Field(ge=2, le=100_000)] = 3
    max: Annotated[int, Field(ge=2, le=100_000)] = 20
    target_ci_pct: Annotated[float, Field(gt=0, le=1000)] = 2.0

    @model_validator(mode="after")
    def _order(self) -> AdaptiveRepeat:
        if self.max < self.min:
            raise ValueError("'max' must be at least 'min'")
        return self


class Trials(StrictModel):
    warmup: Annotated[int, Field(ge=0, le=1000)] = 1
    repeat: Annotated[int, Field(ge=1, le=100_000)] | AdaptiveRepeat = 5
    cooldown_s: Annotated[float, Field(ge=0, le=3600)] = 0.0
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 42

    @property
    def max_repeat(self) -> int:
        return self.repeat if isinstance(self.repeat, int) else self.repeat.max


class Execution(StrictModel):
    # Each model group runs in a child process, so an engine abort or the OOM killer fails
    # only the affected cells.
    isolate: bool = True
    # A cell still running after this many seconds is stopped and recorded as an error.
    cell_timeout_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] | None = None
    # Flag a cell whose decode t/s varies more than this across its trials.
    max_cv_pct: Annotated[float, Field(gt=0, le=1000)] = 5.0
    # Flag the run when the CPU was busier than this during the idle baseline.
    max_idle_cpu_pct: Annotated[float, Field(gt=0, le=100)] = 10.0
    # A sweep with more cells than this is refused before it is expanded (a typo such as an
    # extra list can multiply a sweep into millions); the ceiling keeps expansion within a few
    # seconds and a few hundred MB.
    max_cells: Annotated[int, Field(ge=1, le=100_000)] = 10_000


Scalar = bool | int | float | str | None


class Quality(StrictModel):
    """Model quality beside speed: bits per byte, perplexity and (for quantization ladders)
    KL divergence and top-1 agreement against the highest-precision variant."""

    # heldout: the built-in held-out text of each language; none: no quality measurement.
    texts: Literal["heldout", "none"] = "none"
    # Languages to score; default: the workload's pack languages, else English.
    languages: list[LangCode] | None = None
    # auto: KL/top-1 against the quantize_from source, or the highest bits-per-weight quant of
    # the model's `quants`; none: bits per byte and perplexity only.
    reference: Literal["auto", "none"] = "auto"
    # Tokens per evaluation window (texts longer than this are scored with a sliding window).
    window: Annotated[int, Field(ge=16, le=1_000_000)] | None = None


class Config(StrictModel):
    name: Annotated[str, Field(pattern=r"^[\w.-]+$", max_length=80)]
    description: Annotated[str, Field(max_length=10_000)] = ""
    models: Annotated[list[ModelSpec], Field(min_length=1, max_length=10_000)]
    backends: Annotated[list[BackendSpec], Field(min_length=1, max_length=1000)] = [
        LlamaCppSettings(name="llama-cpp")
    ]
    workload: Workload = Workload()
    trials: Trials = Trials()
    energy: EnergySettings = EnergySettings()
    execution: Execution = Execution()
    quality: Quality = Quality()
    exclude: list[dict[str, Scalar]] = []
    include: list[dict[str, Scalar]] = []
    # Fleet runs (`bench run --cluster`, docs/fleet.md): the workers' machine names to run on;
    # empty means every bench worker of the cluster. A local run ignores it.
    machines: list[Annotated[str, Field(pattern=r"^[\w.-]+$", max_length=80)]] = []

    @model_validator(mode="after")
    def _unique_model_ids(self) -> Config:
        ids = [m.id for m in self.models]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"model ids must be unique; repeated: {', '.join(dup)}")
        return self


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    path: Path | None
    raw: dict[str, Any]  # the YAML as read, for the manifest
    hash: str  # sha256 of the canonical resolved config

    @property
    def short_hash(self) -> str:
        return self.hash[:8]


# ---------------------------------------------------------------------------------------------
# Loading


def _node_to_python(
    node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int], budget: list[int]
) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise _YamlProblem(
            f"the YAML expands to more than {MAX_NODES} values (aliases expanding?); "
            "write the config out plainly"
        )
    lines.setdefault(path, node.start_mark.line + 1)
    if len(path) > MAX_DEPTH:
        # Reached through aliases (the event scan bounds plain nesting).
        raise _YamlProblem(
            f"{_dotted(path[:8])}...: nests deeper than {MAX_DEPTH} levels",
            node.start_mark.line + 1,
        )
    if node.tag not in _PLAIN_TAGS:
        raise _YamlProblem(
            f"the tag {node.tag} is not accepted; use plain YAML values", node.start_mark.line + 1
        )
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            kline = knode.start_mark.line + 1
            if not isinstance(knode, yaml.ScalarNode):
                raise _YamlProblem("a key must be plain text", kline)
            key = _scalar(knode)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise _YamlProblem("a key must be plain text", kline)
            if key in out:
                raise _YamlProblem(f"key {key!r} appears twice", kline)
            if isinstance(key, str):
                _check_text(key, path + (key,), kline, is_key=True)
            lines[path + (key,)] = knode.start_mark.line + 1
            out[key] = _node_to_python(vnode, path + (key,), lines, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _node_to_python(item, path + (i,), lines, budget) for i, item in enumerate(node.value)
        ]
    value = _scalar(node)
    if isinstance(value, str):
        _check_text(value, path, node.start_mark.line + 1)
    return value


def _check_text(text: str, path: tuple[Any, ...], line: int, is_key: bool = False) -> None:
    """Refuse what no key of any section means: NUL and control characters, huge strings."""
    what = f"{_dotted(path)}: the key" if is_key else f"{_dotted(path)}:"
    prompt_text = path[:2] == ("workload", "prompt")
    if "\x00" in text or (not prompt_text and _CONTROL.search(text)):
        raise _YamlProblem(
            f"{what} contains a NUL or other control character; remove it", line
        )
    limit = 200 if is_key else MAX_STRING_CHARS
    if len(text) > limit and not (prompt_text and not is_key):
        raise _YamlProblem(
            f"{what} is {len(text)} characters long, more than the {limit} allowed", line
        )


def _scan_depth(text: str, source: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH from the event stream, before composing: PyYAML
    composes recursively, so a deep document would otherwise end in a RecursionError."""
    # One frame per open collection: [is_mapping, expecting_key, key or index].
    stack: list[list[Any]] = []
    path: list[Any] = []

    def value_done() -> None:
        if stack:
            top = stack[-1]
            if top[0]:
                top[1] = True
            else:
                top[2] += 1

    try:
        for ev in yaml.parse(text, Loader=_LOADER):
            if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if stack:
                    top = stack[-1]
                    path.append(top[2])
                if len(stack) >= MAX_DEPTH:
                    where = f"{source}:{ev.start_mark.line + 1}"
                    shown = _dotted(tuple(path[:8])) + ("..." if len(path) > 8 else "")
                    raise ConfigError(
                        f"{where}: {shown}: nests deeper than {MAX_DEPTH} levels; no config "
                        "key needs that"
                    )
                stack.append([isinstance(ev, yaml.MappingStartEvent), True, 0])
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                stack.pop()
                if path:
                    path.pop()
                value_done()
            elif isinstance(ev, (yaml.ScalarEvent, yaml.AliasEvent)):
                scalar_of: list[Any] | None = stack[-1] if stack else None
                if scalar_of is not None and scalar_of[0] and scalar_of[1]:
                    scalar_of[1] = False
                    scalar_of[2] = ev.value if isinstance(ev, yaml.ScalarEvent) else "*"
                else:
                    value_done()
    except yaml.YAMLError as e:
        if "nesting depth" in str(e):
            # libyaml's own limit, met while it reads ahead of the events seen so far.
            mark = getattr(e, "problem_mark", None)
            where = f"{source}:{mark.line + 1}" if mark is not None else source
            shown = _dotted(tuple(path[:8]))
            raise ConfigError(
                f"{where}: {shown}...: nests deeper than {MAX_DEPTH} levels; no config key "
                "needs that"
            ) from None
        return  # composing reports it, with its line


_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_PLAIN_TAGS = {
    f"tag:yaml.org,2002:{t}" for t in ("map", "seq", "str", "int", "float", "bool", "null")
}


def _scalar(node: yaml.Node) -> Any:
    line = node.start_mark.line + 1
    try:
        value = _CONSTRUCTOR.construct_object(node, deep=True)
    except yaml.YAMLError as e:
        raise _YamlProblem(
            f"the value {node.value!r} has a tag bench does not accept ({node.tag}); "
            "use plain YAML values",
            line,
        ) from e
    if isinstance(value, (bytes, set)) or type(value).__module__ == "datetime":
        raise _YamlProblem(
            f"{node.value!r} reads as a {type(value).__name__}; quote it to make it text", line
        )
    return value


def parse_yaml(text: str, source: str = "<config>") -> tuple[Any, dict[tuple[Any, ...], int]]:
    """YAML text -> (plain data, line of each key path). Raises ConfigError."""
    if len(text.encode("utf-8", "replace")) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: the file is larger than {MAX_CONFIG_BYTES} bytes")
    _scan_depth(text, source)
    try:
        nodes = list(yaml.compose_all(text, Loader=_LOADER))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if len(nodes) != 1 or nodes[0] is None:
        raise ConfigError(f"{source}: expected one YAML document with the config's keys")
    lines: dict[tuple[Any, ...], int] = {}
    try:
        data = _node_to_python(nodes[0], (), lines, [MAX_NODES])
    except _YamlProblem as e:
        where = f"{source}:{e.line}" if e.line else source
        raise ConfigError(f"{where}: {e}") from None
    except RecursionError:
        raise ConfigError(f"{source}: the YAML nests too deeply") from None
    return data, lines


def _clean_loc(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """Drop pydantic's union/tag segments from an error location, keeping real keys."""
    out: list[Any] = []
    cur = data
    for seg in loc:
        in_dict = isinstance(cur, dict) and seg in cur
        in_list = isinstance(cur, list) and isinstance(seg, int) and 0 <= seg < len(cur)
        if in_dict or in_list:
            out.append(seg)
            cur = cur[seg]
    return tuple(out)


def _dotted(loc: tuple[Any, ...]) -> str:
    s = ""
    for seg in loc:
        s += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if s else str(seg))
    return s or "(top level)"


def _line_for(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def format_validation_error(
    err: ValidationError, data: Any, lines: dict[tuple[Any, ...], int], source: str
) -> str:
    grouped: dict[tuple[Any, ...], list[str]] = {}
    for e in err.errors(include_url=False):
        loc = _clean_loc(tuple(e["loc"]), data)
        if e["type"] == "unknown_key":
            loc = loc + (e["ctx"]["raw"],)
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            loc = loc + (e["loc"][-1],)
            msg = "required, but missing"
        elif e["type"] == "union_tag_invalid":
            loc = loc + ("name",)
            msg = f"unknown backend {e['ctx']['tag']!r}; available: {e['ctx']['expected_tags']}"
        elif e["type"] == "union_tag_not_found":
            msg = (
                "needs 'name', the backend to use (llama-cpp, openai, ollama, rwkv or "
                "transformers)"
            )
        msg = msg.removeprefix("Value error, ")
        if msg not in grouped.setdefault(loc, []):
            grouped[loc].append(msg)
    out = []
    for loc, msgs in list(grouped.items())[:8]:
        line = _line_for(loc, lines)
        where = f"{source}:{line}" if line else source
        msgs = [m.removeprefix("Input should be ") for m in msgs]
        text = " or ".join(msgs) if len(msgs) > 1 else msgs[0]
        if len(msgs) > 1 or msgs[0] != text or text.startswith(("a valid", "greater", "less")):
            text = "should be " + text
        out.append(f"{where}: {_dotted(loc)}: {text}")
    more = len(grouped) - len(out)
    if more > 0:
        out.append(f"... and {more} more")
    return "\n".join(out)


def validate(data: Any, lines: dict[tuple[Any, ...], int], source: str) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping of keys (name, models, ...)")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, data, lines, source)) from None


def config_hash(config: Config) -> str:
    canon = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def load_config(path: str | Path) -> LoadedConfig:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p} is a folder; give the path of a YAML config file")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a UTF-8 text file") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read it ({e.strerror})") from None
    return loads_config(text, str(p), p)


def loads_config(text: str, source: str = "<config>", path: Path | None = None) -> LoadedConfig:
    data, lines = parse_yaml(text, source)
    config = validate(data, lines, source)
    return LoadedConfig(config=config, path=path, raw=data, hash=config_hash(config))


_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32|FP16)(?![A-Za-z0-9])", re.IGNORECASE
)


def quant_from_filename(name: str) -> str:
    """'SmolLM2-135M-Instruct.Q4_1.gguf' -> 'Q4_1'; '' when the name does not say."""
    m = _QUANT_RE.findall(Path(name).stem)
    return m[-1].upper() if m else ""
