"""Config -> the ordered list of cells (cartesian product, then exclude, then include).

Cells come out grouped by load key (model variant, backend, load-time settings), so a model is
loaded once per distinct load-time setting, not once per cell.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from bench.config import BackendSettings, Config, ConfigError, ModelSpec, quant_from_filename

# The keys every cell has; each backend adds its swept settings. exclude/include use them all.
BASE_KEYS = ("model", "quant", "backend", "lang", "prompt_id", "prompt_tokens", "gen_tokens")


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
        }

    def load_key(self) -> tuple[Any, ...]:
        s = self.setting
        return (self.variant.key, self.backend, *(s[k] for k in self.load_time))

    def settings_hash(self, config_trials: dict[str, Any] | None = None) -> str:
        """Hash of what this cell measures; the same cell in another run has the same hash."""
        body = {
            "params": self.params(),
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
        return " ".join(str(b) for b in bits)


def model_variants(spec: ModelSpec) -> list[ModelVariant]:
    if spec.quants:
        out = []
        for q in spec.quants:
            file = spec.file.replace("{quant}", q) if spec.file else None
            out.append(ModelVariant(spec, q, file))
        return out
    if spec.synthetic is not None:
        return [ModelVariant(spec, "F16", None)]  # written as F16; `quants` for the ladder
    name = spec.path or spec.file or ""
    return [ModelVariant(spec, quant_from_filename(name), spec.file)]


def _row(variant: ModelVariant, backend: BackendSettings, setting: dict[str, Any],
         prompt: tuple[str, int | None, str | None, str | None], gen: int) -> dict[str, Any]:
    return {
        "variant": variant,
        "backend": backend,
        "setting": setting,
        "prompt": prompt,
        "gen_tokens": gen,
    }


def _product_cells(config: Config) -> list[dict[str, Any]]:
    rows = []
    prompts = config.workload.prompt_axis()
    for spec in config.models:
        for variant in model_variants(spec):
            for backend in config.backends:
                axes = backend.axes()
                for combo in itertools.product(*axes.values()):
                    setting = dict(zip(axes, combo))
                    for prompt in prompts:
                        for gen in config.workload.gen_tokens:
                            rows.append(_row(variant, backend, setting, prompt, gen))
    return rows


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
    }


def _check_keys(entry: dict[str, Any], what: str, i: int, allowed: tuple[str, ...]) -> None:
    unknown = [k for k in entry if k not in allowed]
    if unknown:
        raise ConfigError(
            f"{what}[{i}]: unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}"
        )
    if not entry:
        raise ConfigError(f"{what}[{i}]: an empty entry would match every cell")


def _matches(flat: dict[str, Any], entry: dict[str, Any]) -> bool:
    return all(flat.get(k) == v for k, v in entry.items())


def _include_row(config: Config, entry: dict[str, Any], i: int) -> dict[str, Any]:
    """An include entry names a cell; unspecified keys take the first value of their axis."""
    model_id = entry.get("model", config.models[0].id if len(config.models) == 1 else None)
    if model_id is None:
        raise ConfigError(f"include[{i}]: name the 'model' (the config has several)")
    spec = next((m for m in config.models if m.id == model_id), None)
    if spec is None:
        ids = ", ".join(m.id for m in config.models)
        raise ConfigError(f"include[{i}]: no model {model_id!r}; models: {ids}")
    variants = model_variants(spec)
    quant = entry.get("quant", variants[0].quant)
    variant = next((v for v in variants if v.quant == quant), None)
    if variant is None:
        raise ConfigError(f"include[{i}]: model {model_id!r} has no quant {quant!r}")
    bname = entry.get("backend", config.backends[0].name)
    backend = next((b for b in config.backends if b.name == bname), None)
    if backend is None:
        raise ConfigError(f"include[{i}]: no backend {bname!r} in the config")
    axes = backend.axes()
    unknown = [k for k in entry if k not in BASE_KEYS and k not in axes]
    if unknown:
        raise ConfigError(f"include[{i}]: backend {bname!r} has no setting {unknown[0]!r}")
    setting = {k: entry.get(k, values[0]) for k, values in axes.items()}
    prompts = config.workload.prompt_axis()
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
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1_000_000:
            raise ConfigError(f"include[{i}]: prompt_tokens must be an integer from 1 to 1000000")
        prompt = (f"synthetic-{n}", n, None, None)
    else:
        prompt = prompts[0]
    gen = entry.get("gen_tokens", config.workload.gen_tokens[0])
    if not isinstance(gen, int) or isinstance(gen, bool) or not 1 <= gen <= 1_000_000:
        raise ConfigError(f"include[{i}]: gen_tokens must be an integer from 1 to 1000000")
    # Swept values are validated by the backend's own schema.
    for k, v in setting.items():
        if v != axes[k][0]:
            try:
                type(backend).model_validate({**backend.model_dump(), k: [v]})
            except ValidationError as e:
                msg = e.errors(include_url=False)[0]["msg"]
                raise ConfigError(f"include[{i}]: {k}: {msg}") from None
    return _row(variant, backend, setting, prompt, gen)


def expand(config: Config) -> list[Cell]:
    rows = _product_cells(config)
    allowed = cell_keys(config)
    for i, entry in enumerate(config.exclude):
        _check_keys(entry, "exclude", i, allowed)
    rows = [r for r in rows if not any(_matches(_flat(r), e) for e in config.exclude)]
    seen = {json.dumps(_flat(r), sort_keys=True, default=str) for r in rows}
    for i, entry in enumerate(config.include):
        _check_keys(entry, "include", i, allowed)
        row = _include_row(config, entry, i)
        key = json.dumps(_flat(row), sort_keys=True, default=str)
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
    for idx, (_, r) in enumerate(cells):
        pid, n, text, lang = r["prompt"]
        b: BackendSettings = r["backend"]
        out.append(
            Cell(
                index=idx,
                variant=r["variant"],
                backend=b.name,
                settings=tuple(r["setting"].items()),
                prompt_id=pid,
                prompt_tokens=n,
                prompt_text=text,
                gen_tokens=r["gen_tokens"],
                lang=lang,
                extra=tuple(b.fixed().items()),
                load_time=b.LOAD_TIME,
            )
        )
    for c in out:
        need = (c.prompt_tokens or 0) + c.gen_tokens
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
