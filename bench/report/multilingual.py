"""Multilingual runs -> per language and model: characters/s, J per 1000 characters, tokenizer
fertility and bits per byte, and which model is cheapest per character in each language.

Tokens are not a fair unit across tokenizers (one model spends 5 tokens on a Hindi word that
another spends 1.2 on), so this section counts characters (NFC code points) and words instead;
docs/report.md says how to read it. Numbers only: no plotting and no files beyond the run's own
quality table.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.report.data import PooledCells
from bench.stats import Summary, mean_ci

if TYPE_CHECKING:
    from bench.report.data import CellSummary, ReportData

# Settings that tell a model series apart (the language and the prompt do not: they are what a
# series is measured over).
SERIES_KEYS = ("model", "quant", "backend", "n_threads", "n_gpu_layers", "n_ctx", "n_batch",
               "n_ubatch", "flash_attn", "gen_tokens")


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


@dataclass
class LangRow(PooledCells):
    """One model series in one language: its cells (one per prompt) pooled."""

    lang: str
    series: str  # the series label: the model, plus what else varies, plus the run tag
    cells: list[CellSummary]
    stats: dict[str, Summary] = field(default_factory=dict)  # pooled over the cells' trials
    values: dict[str, list[float]] = field(default_factory=dict)
    fertility: dict[str, float] = field(default_factory=dict)  # mean over the cells (prompts)
    quality: dict[str, float] = field(default_factory=dict)  # bits_per_byte, bits_per_char
    energy_method: str = ""


@dataclass
class Cheapest:
    """The model series with the least decode energy per character in one language."""

    lang: str
    best: LangRow
    runner_up: LangRow | None  # the next cheapest, None when one series was measured
    n_series: int
    metric: str  # "j_per_kchar", or "decode_chars_per_s" when no energy was measured

    @property
    def ratio(self) -> float | None:
        if self.runner_up is None:
            return None
        a, b = self.best.stats[self.metric].mean, self.runner_up.stats[self.metric].mean
        if self.metric == "j_per_kchar":
            return b / a if a > 0 else None
        return a / b if b > 0 else None

    @property
    def clear(self) -> bool:
        """False when the two 95 % intervals overlap: the ranking may be noise."""
        if self.runner_up is None:
            return True
        return not self.best.stats[self.metric].overlaps(self.runner_up.stats[self.metric])


@dataclass
class Languages:
    langs: list[str]  # in run order
    series: list[str]  # series labels in run order
    rows: dict[tuple[str, str], LangRow]  # (lang, series) -> row

    def get(self, lang: str, series: str) -> LangRow | None:
        return self.rows.get((lang, series))

    def in_lang(self, lang: str) -> list[LangRow]:
        return [r for s in self.series if (r := self.rows.get((lang, s))) is not None]

    @property
    def estimated(self) -> bool:
        return any(r.estimated and "j_per_kchar" in r.stats for r in self.rows.values())

    @property
    def has_energy(self) -> bool:
        return any("j_per_kchar" in r.stats for r in self.rows.values())

    @property
    def has_quality(self) -> bool:
        return any("bits_per_byte" in r.quality for r in self.rows.values())

    def cheapest(self, lang: str) -> Cheapest | None:
        """Least mean J/kchar in the language (the fastest in chars/s when no energy)."""
        metric = "j_per_kchar" if self.has_energy else "decode_chars_per_s"
        rows = [r for r in self.in_lang(lang) if metric in r.stats]
        if not rows:
            return None
        if metric == "j_per_kchar":
            rows.sort(key=lambda r: r.stats[metric].mean)
        else:
            rows.sort(key=lambda r: -r.stats[metric].mean)
        return Cheapest(lang, rows[0], rows[1] if len(rows) > 1 else None, len(rows), metric)


def _series_label(data: ReportData, cell: CellSummary, keys: Sequence[str]) -> str:
    from bench.report.data import describe

    text = describe({k: cell.params.get(k) for k in ("model", *keys)})
    return f"{cell.run.tag} {text}" if data.multi_run else text


def _pooled_quality(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Bits per byte (and per char) over several texts: total bits / total bytes (chars)."""
    out: dict[str, float] = {}
    for metric, weight in (("bits_per_byte", "n_bytes"), ("bits_per_char", "n_chars")):
        found = [(v, w) for v, w in ((_finite(r.get(metric)), _finite(r.get(weight)))
                                     for r in rows) if v is not None]
        if not found:
            continue
        weights = [w for _, w in found if w is not None and w > 0]
        if len(weights) == len(found):
            out[metric] = sum(v * w for (v, _), w in zip(found, weights, strict=True)) / sum(
                weights)
        else:
            out[metric] = sum(v for v, _ in found) / len(found)
    return out


def _norm(v: Any) -> str:
    return str(v or "")


def quality_rows(cell: CellSummary, lang: str) -> list[dict[str, Any]]:
    """The run's quality rows of the cell's model (and quant) in one language."""
    rows = [r for r in cell.run.run.table("quality")
            if _norm(r.get("model")) == _norm(cell.params.get("model"))
            and _norm(r.get("lang")) == lang]
    same = [r for r in rows if _norm(r.get("quant")) == _norm(cell.params.get("quant"))]
    if same:
        return same
    # A quality row that names the quant differently: only unambiguous with one quant.
    return rows if len({_norm(r.get("quant")) for r in rows}) == 1 else []


def languages(data: ReportData) -> Languages | None:
    cells = [c for c in data.ok_cells if c.lang]
    if not cells:
        return None
    # A label names the model, and a setting only where one model was run with several values
    # of it (a quant that comes with its model is not worth repeating).
    vary = [k for k in SERIES_KEYS[1:]
            if any(len({repr(c.params.get(k)) for c in cells if c.params.get("model") == m}) > 1
                   for m in {c.params.get("model") for c in cells})]
    groups: dict[tuple[str, str], list[CellSummary]] = {}
    langs: list[str] = []
    series: list[str] = []
    keys: dict[tuple[Any, ...], str] = {}
    for c in cells:
        ident = (c.run.tag, *(repr(c.params.get(k)) for k in SERIES_KEYS))
        if ident not in keys:
            label = _series_label(data, c, vary)
            while label in series:  # two series one label would merge: keep them apart
                label += "'"
            keys[ident] = label
            series.append(label)
        lang = str(c.lang)
        if lang not in langs:
            langs.append(lang)
        groups.setdefault((lang, keys[ident]), []).append(c)
    rows = {k: _row(k[0], k[1], v) for k, v in groups.items()}
    return Languages(langs, series, rows)


def _row(lang: str, series: str, cells: list[CellSummary]) -> LangRow:
    from bench.report.data import LANG_METRICS

    row = LangRow(lang, series, cells)
    samples = [s for c in cells for s in c.samples]
    for m in LANG_METRICS:
        vals = [x for x in (_finite(s.get(m.name)) for s in samples) if x is not None]
        if vals:
            row.values[m.name] = vals
            row.stats[m.name] = mean_ci(vals)
    for key in ("tokens_per_char", "tokens_per_word"):
        per_cell = [c_mean for c in cells
                    if (c_mean := _mean(_finite(s.get(key)) for s in c.samples)) is not None]
        if per_cell:
            row.fertility[key] = sum(per_cell) / len(per_cell)
    methods = {str(s.get("energy_method") or "") for s in samples
               if _finite(s.get("j_per_kchar")) is not None} - {""}
    row.energy_method = methods.pop() if len(methods) == 1 else ("mixed" if methods else "")
    q: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for c in cells:  # cells of one series share a run, a model and a quant
        for r in quality_rows(c, lang):
            ident = (str(r.get("text_id")), _norm(r.get("quant")))
            if ident not in seen:
                seen.add(ident)
                q.append(r)
    row.quality = _pooled_quality(q)
    return row


def _mean(values: Any) -> float | None:
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None
