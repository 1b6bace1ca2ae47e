"""Config -> the ordered list of cells (cartesian product, then exclude, then include).

The product is counted before it is built and refused above execution.max_cells; exclude and
include entries are converted with the same types as the sweep's own lists.

Cells come out grouped by load key (model variant, backend, load-time settings), so a model is
loaded once per distinct load-time setting, not once per cell.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from bench.backends.formats import FORMAT_BACKEND, model_format, runs_on
from bench.config import (
    BackendSpec,
    Config,
    ConfigError,
    LangCode,
    ModelSpec,
    NonNegInt,
    PosInt,
    quant_from_filename,
)

# The keys every cell has; each backend adds its swept settings. exclude/include use them all.
BASE_KEYS = (
    "model", "quant", "backend", "lang", "prompt_id", "prompt_tokens", "gen_tokens", "depth"
)


def cell_keys(config: Config) -> tuple[str, ...]:
    keys: dict[str, None] = dict.fromkeys(BASE_KEYS[:3])
    for b in config.backends:
        keys.update(dict.fromkeys(b.axes()))
    keys.update(dict.fromkeys(BASE_KEYS[3:]))
    return tuple(keys)


@dataclass(frozen=True)
class ModelVariant:
    """One model file to load: a model spec at one quantization."""

    spec: ModelSpec
    quant: str
    file: str | None  # file name in the repo/package; None for a local path

    @property
    def key(self) -> str:
        return f"{self.spec.id}@{self.quant}" if self.spec.quants else self.spec.id

    def source(self) -> dict[str, Any]:
        s = self.spec
        if s.path is not None:
            return {"path": s.path}
        if s.repo is not None:
            return {"repo": s.repo, "file": self.file, "revision": s.revision}
        if s.served is not None:
            return {"served": s.served}
        if s.quantize_from is not None:
            return {"quantize_from": s.quantize_from, "imatrix": s.imatrix}
        if s.synthetic is not None:
            from bench.synthetic import resolve_shape

            return {"synthetic": resolve_shape(s.synthetic)}
        return {"package": s.package, "file": self.file}


@dataclass(frozen=True)
class Cell:
    index: int
    variant: ModelVariant
    backend: str
    settings: tuple[tuple[str, Any], ...]  # the backend's swept settings, in its axes order
    prompt_id: str
    prompt_tokens: int | None
    prompt_text: str | None = field(repr=False)
    gen_tokens: int
    lang: str | None = None  # the prompt's language, for prompts from a pack
    extra: tuple[tuple[str, Any], ...] = ()  # backend options that are not swept
    load_time: tuple[str, ...] = ()  # which settings need a fresh load
    depth: int = 0  # tokens of context filled (untimed) before the prompt; workload.depth

    @property
    def cell_id(self) -> str:
        return f"c{self.index + 1:03d}"

    @property
    def setting(self) -> dict[str, Any]:
        return dict(self.settings)

    def params(self) -> dict[str, Any]:
        """The flat description used in tables, exclude/include and cell keys."""
        return {
            "model": self.variant.spec.id,
            "quant": self.variant.quant,
            "backend": self.backend,
            **self.setting,
            "lang": self.lang,
            "prompt_id": self.prompt_id,
            "prompt_tokens": self.prompt_tokens,
            "gen_tokens": self.gen_tokens,
            "depth": self.depth,
        }

    def load_key(self) -> tuple[Any, ...]:
        s = self.setting
        return (self.variant.key, self.backend, *(s[k] for k in self.load_time))

    def settings_hash(self, config_trials: dict[str, Any] | None = None) -> str:
        """Hash of what this cell measures; the same cell in another run has the same hash."""
        body = {
            "params": hashed_params(self.params()),
            "source": self.variant.source(),
            "prompt_text": self.prompt_text,
            "extra": dict(self.extra),
            "trials": config_trials,
        }
        canon = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def describe(self) -> str:
        p = self.params()
        bits = [p["model"] + (f" {p['quant']}" if p["quant"] else ""), p["backend"]]
        short = {"n_threads": "threads", "n_gpu_layers": "ngl"}
        # Settings at their usual defaults are left out to keep the line short.
        usual = {"n_ctx": 2048, "n_batch": 512, "n_ubatch": 512, "flash_attn": None}
        bits += [
            f"{short.get(k, k)}={v}" for k, v in self.settings if k not in usual or usual[k] != v
        ]
        if self.lang:
            bits.append(f"[{self.lang}]")
        bits.append(p["prompt_id"] if p["prompt_tokens"] is None else f"pp{p['prompt_tokens']}")
        bits.append(f"tg{p['gen_tokens']}")
        if self.depth:
            bits.append(f"@d{self.depth}")
        return " ".join(str(b) for b in bits)


def hashed_params(params: dict[str, Any]) -> dict[str, Any]:
    """Params as hashed into settings and cell keys: depth 0 (no fill) is left out, so cells of
    runs made before the depth axis existed keep their keys."""
    return {k: v for k, v in params.items() if not (k == "depth" and not v)}


def model_variants(spec: ModelSpec) -> list[ModelVariant]:
    if spec.quants:
        out = []
        for q in spec.quants:
            file = spec.file.replace("{quant}", q) if spec.file else None
            out.append(ModelVariant(spec, q, file))
        return out
    if spec.synthetic is not None:
        from bench.synthetic import resolve_shape, stored_quant

        # Written as F16 GGUF (`quants` for the ladder), or as an RWKV's bf16 checkpoint.
        return [ModelVariant(spec, stored_quant(resolve_shape(spec.synthetic)), None)]
    name = spec.path or spec.file or ""
    return [ModelVariant(spec, quant_from_filename(name), spec.file)]


def _row(variant: ModelVariant, backend: BackendSpec, setting: dict[str, Any],
         prompt: tuple[str, int | None, str | None, str | None], gen: int,
         depth: int = 0) -> dict[str, Any]:
    return {
        "variant": variant,
        "backend": backend,
        "setting": setting,
        "prompt": prompt,
        "gen_tokens": gen,
        "depth": depth,
    }


def count_cells(config: Config, n_prompts: int | None = None) -> int:
    """Cells of the full product (before exclude and include), counted without building any."""
    if n_prompts is None:
        n_prompts = len(config.workload.prompt_axis())
    total = 0
    for spec in config.models:
        # A model meets only the backends that run its format, as in _product_rows.
        settings = sum(math.prod(len(v) for v in b.axes().values())
                       for b in config.backends if runs_on(b.name, spec))
        total += len(model_variants(spec)) * settings
    return total * n_prompts * len(config.workload.gen_tokens) * len(config.workload.depth)


def _product_rows(
    config: Config, prompts: list[tuple[str, int | None, str | None, str | None]]
) -> Iterator[dict[str, Any]]:
    """The product, one row at a time, so exclude filters it before anything is kept."""
    for spec in config.models:
        # A model meets only the backends that run its format (GGUF, RWKV .pth, HF folder).
        backends = [b for b in config.backends if runs_on(b.name, spec)]
        if not backends:
            fmt = model_format(spec)
            need = FORMAT_BACKEND.get(fmt, "llama-cpp")
            raise ConfigError(
                f"model {spec.id!r} is a {fmt} model and no backend in the config runs it; add "
                f"`- name: {need}` to backends"
            )
        for variant in model_variants(spec):
            for backend in backends:
                axes = backend.axes()
                for combo in itertools.product(*axes.values()):
                    setting = dict(zip(axes, combo, strict=False))
                    for prompt in prompts:
                        for gen in config.workload.gen_tokens:
                            for depth in config.workload.depth:
                                yield _row(variant, backend, setting, prompt, gen, depth)


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    v: ModelVariant = row["variant"]
    pid, n, _, lang = row["prompt"]
    return {
        "model": v.spec.id,
        "quant": v.quant,
        "backend": row["backend"].name,
        **row["setting"],
        "lang": lang,
        "prompt_id": pid,
        "prompt_tokens": n,
        "gen_tokens": row["gen_tokens"],
        "depth": row["depth"],
    }


def _check_keys(entry: dict[str, Any], what: str, i: int, allowed: tuple[str, ...]) -> None:
    unknown = [k for k in entry if k not in allowed]
    if unknown:
        raise ConfigError(
            f"{what}[{i}]: unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}"
        )
    if not entry:
        raise ConfigError(f"{what}[{i}]: an empty entry would match every cell")


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python, but flash_attn: true and a count of 1 are different settings.
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _matches(flat: dict[str, Any], entry: dict[str, Any]) -> bool:
    return all(k in flat and _same(flat[k], v) for k, v in entry.items())


# The types of the keys every cell has: the same types the main sweep's keys have.
_BASE_TYPES: dict[str, TypeAdapter[Any]] = {
    "model": TypeAdapter(str),
    "quant": TypeAdapter(str),
    "backend": TypeAdapter(str),
    "lang": TypeAdapter(LangCode | None),
    "prompt_id": TypeAdapter(str),
    "prompt_tokens": TypeAdapter(PosInt | None),
    "gen_tokens": TypeAdapter(PosInt),
    "depth": TypeAdapter(NonNegInt),
}


def _first_error(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    return str(err["msg"]).removeprefix("Value error, ")


def _axis_value(backend: BackendSpec, key: str, value: Any) -> Any:
    """`value` as the backend's own schema converts it when `key` is swept over it alone.

    Raises ValidationError. The backend model is rebuilt with the one value in place, so a
    value in exclude/include passes exactly the validators (and conversions) the sweep's does.
    """
    data = backend.model_dump(mode="python")
    if key in type(backend).model_fields:
        tries: list[Any] = [[value], value]
    else:
        tries = []
        server = data.get("server")
        if isinstance(server, dict) and key in (server.get("args") or {}):
            server["args"][key] = [value]
            tries = [None]
        elif key in (data.get("options") or {}):
            data["options"][key] = [value]
            tries = [None]
    first: ValidationError | None = None
    for t in tries:
        body = dict(data) if t is None else {**data, key: t}
        try:
            rebuilt = type(backend).model_validate(body)
        except ValidationError as e:
            first = first or e
            continue
        got = rebuilt.axes().get(key)
        if got is not None and len(got) == 1:
            return got[0]
    if first is not None:
        raise first
    raise ValueError(f"{key!r} is not a swept setting of backend {backend.name!r}")


def _coerce_entry(
    config: Config,
    entry: dict[str, Any],
    what: str,
    i: int,
    prompts: list[tuple[str, int | None, str | None, str | None]],
) -> dict[str, Any]:
    """Validate and convert an exclude/include entry once, with the sweep's own types, and
    check that the names in it (model, quant, backend, prompt, language) exist."""
    _check_keys(entry, what, i, cell_keys(config))
    where = f"{what}[{i}]"
    out: dict[str, Any] = {}
    for k, v in entry.items():
        if k in _BASE_TYPES:
            try:
                out[k] = _BASE_TYPES[k].validate_python(v)
            except ValidationError as e:
                raise ConfigError(f"{where}.{k}: {_first_error(e)}") from None
            continue
        backends = [
            b for b in config.backends
            if k in b.axes() and entry.get("backend", b.name) == b.name
        ]
        if not backends:
            named = entry.get("backend")
            raise ConfigError(f"{where}: backend {named!r} has no setting {k!r}")
        problem = ""
        for b in backends:
            try:
                out[k] = _axis_value(b, k, v)
                break
            except (ValidationError, ValueError) as e:
                problem = problem or (
                    _first_error(e) if isinstance(e, ValidationError) else str(e)
                )
        else:
            raise ConfigError(f"{where}.{k}: {problem}")
    ids = [m.id for m in config.models]
    if "model" in out and out["model"] not in ids:
        raise ConfigError(f"{where}.model: no model {out['model']!r}; models: {', '.join(ids)}")
    if "quant" in out:
        specs = [m for m in config.models if out.get("model", m.id) == m.id]
        quants = sorted({v.quant for m in specs for v in model_variants(m)})
        if out["quant"] not in quants:
            raise ConfigError(
                f"{where}.quant: no quant {out['quant']!r}; quants: {', '.join(quants) or 'none'}"
            )
    names = list(dict.fromkeys(b.name for b in config.backends))
    if "backend" in out and out["backend"] not in names:
        raise ConfigError(
            f"{where}.backend: no backend {out['backend']!r} in the config; backends: "
            f"{', '.join(names)}"
        )
    if "prompt_id" in out and out["prompt_id"] not in {p[0] for p in prompts} and not (
        # An include may name a synthetic prompt length that is not on the axis.
        what == "include" and out["prompt_id"].startswith("synthetic-")
    ):
        raise ConfigError(
            f"{where}.prompt_id: no prompt {out['prompt_id']!r}; prompts: "
            f"{', '.join(dict.fromkeys(p[0] for p in prompts))}"
        )
    if out.get("lang") is not None and out["lang"] not in {p[3] for p in prompts}:
        langs = sorted({p[3] for p in prompts if p[3]})
        raise ConfigError(
            f"{where}.lang: no language {out['lang']!r} in the workload; languages: "
            f"{', '.join(langs) or 'none (no pack)'}"
        )
    return out


def _include_row(
    config: Config,
    entry: dict[str, Any],
    i: int,
    prompts: list[tuple[str, int | None, str | None, str | None]],
) -> dict[str, Any]:
    """An include entry (already converted) names a cell; unnamed keys take their axis's first
    value."""
    model_id = entry.get("model", config.models[0].id if len(config.models) == 1 else None)
    if model_id is None:
        raise ConfigError(f"include[{i}]: name the 'model' (the config has several)")
    spec = next(m for m in config.models if m.id == model_id)
    variants = model_variants(spec)
    quant = entry.get("quant", variants[0].quant)
    variant = next((v for v in variants if v.quant == quant), None)
    if variant is None:
        raise ConfigError(f"include[{i}]: model {model_id!r} has no quant {quant!r}")
    bname = entry.get("backend", config.backends[0].name)
    backend = next(b for b in config.backends if b.name == bname)
    axes = backend.axes()
    unknown = [k for k in entry if k not in BASE_KEYS and k not in axes]
    if unknown:
        raise ConfigError(f"include[{i}]: backend {bname!r} has no setting {unknown[0]!r}")
    setting = {k: entry.get(k, values[0]) for k, values in axes.items()}
    if "prompt_id" in entry or "lang" in entry:
        prompt = next(
            (
                p for p in prompts
                if p[0] == entry.get("prompt_id", p[0]) and p[3] == entry.get("lang", p[3])
            ),
            None,
        )
        if prompt is None:
            raise ConfigError(f"include[{i}]: no such prompt/language in the workload")
    elif "prompt_tokens" in entry:
        if config.workload.prompt is not None:
            raise ConfigError(f"include[{i}]: 'prompt_tokens' needs a synthetic workload")
        n = entry["prompt_tokens"]
        if n is None:
            raise ConfigError(f"include[{i}].prompt_tokens: give a number of tokens")
        prompt = (f"synthetic-{n}", n, None, None)
    else:
        prompt = prompts[0]
    gen = entry.get("gen_tokens", config.workload.gen_tokens[0])
    depth = entry.get("depth", config.workload.depth[0])
    return _row(variant, backend, setting, prompt, gen, depth)


def _row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    # 1 and True are different settings (see _same).
    return tuple((k, isinstance(v, bool), v) for k, v in _flat(row).items())


def _no_check() -> None:
    pass


def expand(config: Config, check: Callable[[], None] = _no_check) -> list[Cell]:
    """The sweep's cells. `check` is called as the cells are built (every 1024) so a caller
    can stop a long expansion (bench.preflight raises KeyboardInterrupt from it on a signal)."""
    prompts = config.workload.prompt_axis()
    cap = config.execution.max_cells
    total = count_cells(config, len(prompts))
    if total + len(config.include) > cap:
        raise ConfigError(
            f"the sweep has {total + len(config.include):,} cells (the product of its lists, "
            f"before exclude), more than execution.max_cells ({cap:,}); shorten its lists, or "
            "raise execution.max_cells"
        )
    excludes = [_coerce_entry(config, e, "exclude", i, prompts)
                for i, e in enumerate(config.exclude)]
    includes = [_coerce_entry(config, e, "include", i, prompts)
                for i, e in enumerate(config.include)]
    rows = []
    for n, r in enumerate(_product_rows(config, prompts)):
        if not n & 1023:
            check()
        if not any(_matches(_flat(r), e) for e in excludes):
            rows.append(r)
    seen = {_row_key(r) for r in rows}
    for i, entry in enumerate(includes):
        row = _include_row(config, entry, i, prompts)
        key = _row_key(row)
        if key not in seen:
            seen.add(key)
            rows.append(row)
    # Group by load key, groups in order of first appearance (stable within a group).
    order: dict[tuple[Any, ...], int] = {}
    cells = []
    for r in rows:
        s, b = r["setting"], r["backend"]
        lk = (r["variant"].key, b.name, *(s[k] for k in b.LOAD_TIME))
        order.setdefault(lk, len(order))
        cells.append((order[lk], r))
    cells.sort(key=lambda t: t[0])
    out = []
    # One tuple per backend, shared by its cells (a large sweep must stay small in memory).
    fixed = {id(b): tuple(b.fixed().items()) for b in config.backends}
    for idx, (_, r) in enumerate(cells):
        if not idx & 1023:
            check()
        pid, n, text, lang = r["prompt"]
        be: BackendSpec = r["backend"]
        out.append(
            Cell(
                index=idx,
                variant=r["variant"],
                backend=be.name,
                settings=tuple(r["setting"].items()),
                prompt_id=pid,
                prompt_tokens=n,
                prompt_text=text,
                gen_tokens=r["gen_tokens"],
                lang=lang,
                extra=fixed[id(be)],
                load_time=be.LOAD_TIME,
                depth=r["depth"],
            )
        )
    for c in out:
        need = (c.prompt_tokens or 0) + c.gen_tokens + c.depth
        n_ctx = c.setting.get("n_ctx")
        if c.prompt_tokens is not None and n_ctx is not None and need > n_ctx:
            raise ConfigError(
                f"cell {c.cell_id} ({c.describe()}) needs {need} tokens of context but n_ctx is "
                f"{c.setting['n_ctx']}; raise n_ctx or shorten the workload"
            )
    if not out:
        raise ConfigError("the sweep is empty: 'exclude' removed every cell")
    return out


def groups(cells: list[Cell]) -> list[list[Cell]]:
    """Consecutive cells sharing a load key."""
    out: list[list[Cell]] = []
    for c in cells:
        if out and out[-1][0].load_key() == c.load_key():
            out[-1].append(c)
        else:
            out.append([c])
    return out
