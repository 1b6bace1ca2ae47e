"""Quantization ladders -> per model and level: file size, bits per weight, KL divergence against
the reference, top-1 agreement, perplexity, and the level's decode t/s and J/token, with the
Pareto fronts of quality against energy and against speed.

A ladder is shown for a model whose quality rows were compared with a reference (kl_div set) or
that was measured at several quantizations. Trials join quality rows by run, model and quant;
speed and energy are means over the level's non-warm-up successful trials (all its cells).
Numbers only: no plotting.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.report.data import PooledCells
from bench.stats import Summary, mean_ci

if TYPE_CHECKING:
    from bench.report.data import CellSummary, ReportData, RunInfo


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _norm(v: Any) -> str:
    return str(v or "")


@dataclass
class Level(PooledCells):
    """One quantization of one model in one run."""

    run: RunInfo
    model: str
    quant: str
    is_reference: bool = False
    size_bytes: float | None = None
    bits_per_weight: float | None = None
    quality: dict[str, float] = field(default_factory=dict)  # pooled over the texts
    n_texts: int = 0
    cells: list[CellSummary] = field(default_factory=list)
    stats: dict[str, Summary] = field(default_factory=dict)  # decode_tps, j_per_token
    energy_method: str = ""
    front_energy: bool = False  # on the quality vs J/token front
    front_speed: bool = False  # on the quality vs decode t/s front


@dataclass
class Ladder:
    run: RunInfo
    model: str
    label: str  # the model, with the run tag when several runs are shown
    levels: list[Level]
    reference: str | None  # the reference level's quant, when one was compared against

    @property
    def quality_key(self) -> str | None:
        """What the fronts measure quality by: KL when compared with a reference, else
        perplexity (the same tokenizer down a ladder, so comparable), else nothing."""
        for key in ("kl_div", "perplexity"):
            if any(key in lv.quality for lv in self.levels):
                return key
        return None

    @property
    def timed(self) -> list[Level]:
        return [lv for lv in self.levels if lv.stats]

    @property
    def estimated(self) -> bool:
        return any(lv.estimated and "j_per_token" in lv.stats for lv in self.levels)


def _pool(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Several texts (languages) of one level: KL, top-1 and log-perplexity weighted by the
    scored tokens, bits per byte by the bytes, the worst token's KL as the maximum."""
    out: dict[str, float] = {}

    def weighted(key: str, wkey: str, log: bool = False) -> None:
        raw = [(_finite(r.get(key)), _finite(r.get(wkey))) for r in rows]
        pairs: list[tuple[float, float]] = [
            (v, w if w is not None and w > 0 else 1.0) for v, w in raw
            if v is not None and (not log or v > 0)
        ]
        if not pairs:
            return
        total = sum(w for _, w in pairs)
        if log:
            out[key] = math.exp(sum(math.log(v) * w for v, w in pairs) / total)
        else:
            out[key] = sum(v * w for v, w in pairs) / total

    weighted("kl_div", "n_scored")
    weighted("top1_agree", "n_scored")
    weighted("perplexity", "n_scored", log=True)
    weighted("bits_per_byte", "n_bytes")
    worst = [v for r in rows if (v := _finite(r.get("kl_div_max"))) is not None]
    if worst:
        out["kl_div_max"] = max(worst)
    return out


def _manifest_facts(info: RunInfo, model: str, quant: str) -> dict[str, Any]:
    for key, m in (info.manifest.get("models") or {}).items():
        if not isinstance(m, dict):
            continue
        if _norm(m.get("id") or key) == model and _norm(m.get("quant")) == quant:
            return m
    return {}


def _order(level: Level) -> tuple[Any, ...]:
    # The reference first, then from the most bits per weight down; unknown sizes last, in
    # run order (the sort is stable).
    bpw = level.bits_per_weight
    size = level.size_bytes
    return (not level.is_reference, bpw is None, -(bpw or 0.0), size is None, -(size or 0.0))


def run_ladders(data: ReportData, info: RunInfo) -> list[Ladder]:
    quality = info.run.table("quality")
    cells = [c for c in data.ok_cells if c.run is info]
    models: list[str] = []
    for m in [_norm(c.params.get("model")) for c in cells] + [_norm(r.get("model"))
                                                                for r in quality]:
        if m and m not in models:
            models.append(m)
    out = []
    for model in models:
        q_rows = [r for r in quality if _norm(r.get("model")) == model]
        m_cells = [c for c in cells if _norm(c.params.get("model")) == model]
        quants: list[str] = []
        for qn in [_norm(c.params.get("quant")) for c in m_cells] + [_norm(r.get("quant"))
                                                                     for r in q_rows]:
            if qn not in quants:
                quants.append(qn)
        has_kl = any(_finite(r.get("kl_div")) is not None for r in q_rows)
        if not has_kl and len(quants) < 2:
            continue
        levels = [_level(info, model, qn, q_rows, m_cells) for qn in quants]
        levels.sort(key=_order)
        refs = [lv.quant for lv in levels if lv.is_reference]
        named = {_norm(r.get("reference")) for r in q_rows} - {""}
        reference = refs[0] if refs else (named.pop() if len(named) == 1 else None)
        label = f"{info.tag} {model}" if data.multi_run else model
        ladder = Ladder(info, model, label, levels, reference)
        _mark_fronts(ladder)
        out.append(ladder)
    return out


def _level(info: RunInfo, model: str, quant: str, q_rows: list[dict[str, Any]],
           cells: list[CellSummary]) -> Level:
    rows = [r for r in q_rows if _norm(r.get("quant")) == quant]
    lv = Level(info, model, quant)
    lv.is_reference = any(bool(r.get("is_reference")) for r in rows)
    facts = _manifest_facts(info, model, quant)
    sizes = [_finite(r.get("size_bytes")) for r in rows] + [_finite(facts.get("size_bytes"))]
    bpws = [_finite(r.get("bits_per_weight")) for r in rows] + [
        _finite(facts.get("bits_per_weight"))]
    lv.size_bytes = next((v for v in sizes if v is not None), None)
    lv.bits_per_weight = next((v for v in bpws if v is not None), None)
    lv.quality = _pool(rows)
    lv.n_texts = len({str(r.get("text_id")) for r in rows})
    lv.cells = [c for c in cells if _norm(c.params.get("quant")) == quant]
    samples = [s for c in lv.cells for s in c.samples]
    for key in ("decode_tps", "j_per_token"):
        vals = [x for x in (_finite(s.get(key)) for s in samples) if x is not None]
        if vals:
            lv.stats[key] = mean_ci(vals)
    methods = {str(s.get("energy_method") or "") for s in samples
               if _finite(s.get("j_per_token")) is not None} - {""}
    lv.energy_method = methods.pop() if len(methods) == 1 else ("mixed" if methods else "")
    return lv


def energy_points(ladder: Ladder) -> list[Level]:
    key = ladder.quality_key
    return [lv for lv in ladder.levels if key in lv.quality and "j_per_token" in lv.stats]


def speed_points(ladder: Ladder) -> list[Level]:
    key = ladder.quality_key
    return [lv for lv in ladder.levels if key in lv.quality and "decode_tps" in lv.stats]


def _mark_fronts(ladder: Ladder) -> None:
    from bench.report.data import pareto_front

    key = ladder.quality_key
    if key is None:
        return
    # Lower quality loss and lower J/token are better: cost = J/token, gain = -loss.
    pts = energy_points(ladder)
    for i in pareto_front([(lv.stats["j_per_token"].mean, -lv.quality[key]) for lv in pts]):
        pts[i].front_energy = True
    # Lower loss and higher t/s are better: cost = loss, gain = t/s.
    pts = speed_points(ladder)
    for i in pareto_front([(lv.quality[key], lv.stats["decode_tps"].mean) for lv in pts]):
        pts[i].front_speed = True


def ladders(data: ReportData) -> list[Ladder]:
    return [lad for info in data.runs for lad in run_ladders(data, info)]
