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
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from bench.meters.settings import EnergySettings
from bench.schema import StrictModel

MAX_CONFIG_BYTES = 1_000_000
MAX_NODES = 100_000


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
NonNegInt = Annotated[int, Field(ge=0, le=1_000_000)]


class ModelSpec(StrictModel):
    """A model reference: one of `path`, `repo` (+ `file` or `quants`), `package` + `file`."""

    id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[\w.+-]+$")]
    path: str | None = None
    repo: Annotated[str, Field(pattern=r"^[\w.-]+/[\w.-]+$")] | None = None
    file: str | None = None
    quants: list[Annotated[str, Field(pattern=r"^[\w.-]+$", max_length=40)]] | None = None
    package: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*$")] | None = None
    # The distribution to pip-install when `package` is missing (defaults to package with - for _).
    pip: str | None = None
    revision: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        sources = [k for k in ("path", "repo", "package") if getattr(self, k) is not None]
        if len(sources) != 1:
            raise ValueError(
                "a model needs exactly one of 'path' (a local GGUF file), 'repo' (a Hugging "
                "Face repository, with 'file' or 'quants') or 'package' (with 'file')"
                + (f"; it has {', '.join(sources)}" if sources else "")
            )
        if self.repo is not None and self.file is None and not self.quants:
            raise ValueError("a 'repo' model needs 'file' or 'quants' to pick the GGUF file")
        if self.package is not None and self.file is None:
            raise ValueError("a 'package' model needs 'file': the GGUF's name inside the package")
        if self.path is not None and self.quants:
            raise ValueError("'quants' needs 'repo' (a local 'path' is one file, one quantization)")
        if self.quants and len(set(self.quants)) != len(self.quants):
            raise ValueError("'quants' lists the same quantization twice")
        return self


class LlamaCppSettings(StrictModel):
    """llama-cpp-python in process. A list in any setting sweeps it."""

    name: Literal["llama-cpp"]
    # None: the number of physical cores.
    n_threads: list[Annotated[int, Field(ge=1, le=1024)]] | None = None
    n_gpu_layers: list[Annotated[int, Field(ge=-1, le=100_000)]] = [0]
    n_ctx: list[Annotated[int, Field(ge=16, le=10_000_000)]] = [2048]
    n_batch: list[Annotated[int, Field(ge=1, le=1_000_000)]] = [512]
    n_ubatch: list[Annotated[int, Field(ge=1, le=1_000_000)]] = [512]
    flash_attn: list[bool] = [False]
    use_mmap: bool = True

    _lists = field_validator(
        "n_threads", "n_gpu_layers", "n_ctx", "n_batch", "n_ubatch", "flash_attn", mode="before"
    )(_as_list)


BackendSpec = Annotated[Union[LlamaCppSettings], Field(discriminator="name")]

# Settings that need a fresh model load when they change; the others change per cell.
LOAD_TIME_SETTINGS = ("n_gpu_layers", "n_ctx", "n_batch", "n_ubatch", "flash_attn")
RUN_TIME_SETTINGS = ("n_threads",)


class PromptText(StrictModel):
    id: Annotated[str, Field(pattern=r"^[\w.-]+$", max_length=100)]
    text: Annotated[str, Field(min_length=1, max_length=1_000_000)]


class Workload(StrictModel):
    # A synthetic prompt of N tokens (like llama-bench's pp512) ...
    prompt_tokens: list[PosInt] | None = None
    # ... or given text: a string or a list of {id, text}.
    prompt: list[PromptText] | None = None
    gen_tokens: list[PosInt] = [64]
    # Fixed length by default: EOS does not end a trial early.
    stop_at_eos: bool = False

    _lists = field_validator("prompt_tokens", "gen_tokens", mode="before")(_as_list)

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
        if self.prompt_tokens is not None and self.prompt is not None:
            raise ValueError("give either 'prompt_tokens' (synthetic) or 'prompt' (text), not both")
        if self.prompt is not None and len({p.id for p in self.prompt}) != len(self.prompt):
            raise ValueError("two prompts share an id")
        return self

    def prompt_axis(self) -> list[tuple[str, int | None, str | None]]:
        """(prompt_id, prompt_tokens, text) for each prompt of the sweep."""
        if self.prompt is not None:
            return [(p.id, None, p.text) for p in self.prompt]
        return [(f"synthetic-{n}", n, None) for n in (self.prompt_tokens or [128])]


class Trials(StrictModel):
    warmup: Annotated[int, Field(ge=0, le=1000)] = 1
    repeat: Annotated[int, Field(ge=1, le=100_000)] = 5
    cooldown_s: Annotated[float, Field(ge=0, le=3600)] = 0.0
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 42


Scalar = Union[bool, int, float, str, None]


class Config(StrictModel):
    name: Annotated[str, Field(pattern=r"^[\w.-]+$", max_length=80)]
    description: str = ""
    models: Annotated[list[ModelSpec], Field(min_length=1, max_length=10_000)]
    backends: Annotated[list[BackendSpec], Field(min_length=1, max_length=1000)] = [
        LlamaCppSettings(name="llama-cpp")
    ]
    workload: Workload = Workload()
    trials: Trials = Trials()
    energy: EnergySettings = EnergySettings()
    exclude: list[dict[str, Scalar]] = []
    include: list[dict[str, Scalar]] = []

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
            lines[path + (key,)] = knode.start_mark.line + 1
            out[key] = _node_to_python(vnode, path + (key,), lines, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _node_to_python(item, path + (i,), lines, budget) for i, item in enumerate(node.value)
        ]
    return _scalar(node)


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
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
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
        if isinstance(cur, dict) and seg in cur:
            out.append(seg)
            cur = cur[seg]
        elif isinstance(cur, list) and isinstance(seg, int) and 0 <= seg < len(cur):
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
            msg = "needs 'name', the backend to use (llama-cpp)"
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
