"""The report's figures, drawn with matplotlib's Agg backend into PNG files.

Owns every plot: per-cell metrics with 95 % confidence intervals, speed against energy with the
Pareto front, the power timeline of each cell's representative trial, sweep line plots, grouped
bars per language (chars/s, J/kchar, fertility, bits per byte) and quantization ladders (KL and
perplexity against J/token and t/s, Pareto fronts marked). Each
function returns the `Plot`s it wrote (file name, title, caption) or nothing when the data has
nothing to show; failed cells never reach a plot (they are in the tables).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator
from matplotlib.transforms import Bbox

from bench.columns import format_number
from bench.report.data import (
    CHARS_PER_S,
    DECODE,
    J_PER_KCHAR,
    J_PER_TOKEN,
    METRICS,
    PREFILL,
    SWEEP_KEYS,
    SWEEP_LABELS,
    CellSummary,
    Metric,
    ReportData,
    _hashable,
    best_per_model,
    pareto_front,
    ranked,
)
from bench.report.ladder import Ladder

# No display, no GUI toolkit, the same PNGs everywhere. Figures here never go through pyplot
# (each gets its own Agg canvas, so nothing global accumulates); the switch covers any pyplot
# imported later in this process.
matplotlib.use("Agg")

WIDTH_IN = 10.0  # 1100 px at DPI: full width of the HTML column, legible on a laptop
DPI = 110
POWER_PER_FIGURE = 8  # cells per power-timeline figure; more go into further files
ESTIMATE_NOTE = "ESTIMATED (CPU time × W/core), not measured"
# Colour-blind-safe palette (Okabe-Ito), then matplotlib's tab10 for more series.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000"] + [matplotlib.colormaps["tab10"](i) for i in range(10)]
PHASE_COLOURS = {"prefill": "#9ecae1", "decode": "#fdd0a2"}

RC = {
    "font.size": 10, "axes.titlesize": 10.5, "figure.titlesize": 12, "legend.fontsize": 9,
    "axes.spines.top": False, "axes.spines.right": False, "savefig.dpi": DPI,
    "figure.dpi": DPI,
    # Names come from configs and GGUF files: a "$" must print as itself, not start TeX math.
    "text.parse_math": False,
}


@dataclass(frozen=True)
class Plot:
    file: str  # PNG file name inside the report folder
    title: str
    caption: str
    kind: str  # "headline", "metric", "pareto", "power", "sweep", "language", "quant"


# --------------------------------------------------------------------------------------------
# Helpers


def _figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, folder: Path, name: str) -> None:
    fig.savefig(folder / name, dpi=DPI, facecolor="white", metadata={"Software": None})


def _legend(fig: Figure, handles: list[Any], ncols: int | None = None) -> None:
    if not handles:
        return
    n = ncols or min(len(handles), 4)
    fig.legend(handles=handles, loc="outside lower center", ncols=n, frameon=False)


def _colour_key(data: ReportData) -> tuple[str, dict[Any, Any], dict[Any, str]]:
    """What colours mean: the run when several runs are shown (to tell them apart), else the
    model. Returns (attribute name, value -> colour, value -> legend label)."""
    cells = data.ok_cells
    if data.multi_run:
        colours = {r.tag: PALETTE[i % len(PALETTE)] for i, r in enumerate(data.runs)}
        labels = {r.tag: f"{r.tag}: {r.run_id} ({r.machine_label})" for r in data.runs}
        return "run", colours, labels
    models: list[Any] = []
    for c in cells:
        if c.params.get("model") not in models:
            models.append(c.params.get("model"))
    colours = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    return "model", colours, {m: str(m) for m in models}


def _colour_of(cell: CellSummary, key: str) -> Any:
    return cell.run.tag if key == "run" else cell.params.get("model")


def facet_key(data: ReportData) -> str | None:
    """Facets are quantizations when several are shown, else backends, else none."""
    cells = data.ok_cells
    for key in ("quant", "backend"):
        if len({c.params.get(key) for c in cells}) > 1:
            return key
    return None


def _order(data: ReportData, cells: Sequence[CellSummary]) -> list[CellSummary]:
    """Grouped by model (first-seen order), then by run, then in run order."""
    models: list[Any] = []
    for c in data.ok_cells:
        if c.params.get("model") not in models:
            models.append(c.params.get("model"))
    runs = [r.tag for r in data.runs]
    index = {id(c): i for i, c in enumerate(data.cells)}
    return sorted(
        cells, key=lambda c: (models.index(c.params.get("model")), runs.index(c.run.tag),
                              index[id(c)])
    )


def _title(base: str, data: ReportData, estimated: bool = False) -> str:
    common = data.common()
    lines = [base + (f" — {ESTIMATE_NOTE}" if estimated else "")]
    if common:
        lines.append(common)
    return "\n".join(lines)


def _wrap(text: str, width: int = 48) -> str:
    if len(text) <= width:
        return text
    words, lines, line = text.split(" "), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Per-cell metrics with confidence intervals


def plot_metric(data: ReportData, metric: Metric, folder: Path) -> Plot | None:
    cells = [c for c in data.ok_cells if metric.name in c.stats]
    if not cells:
        return None
    fkey = facet_key(data)
    facets: list[Any] = []
    for c in _order(data, cells):
        if (fkey and c.params.get(fkey)) not in facets:
            facets.append(fkey and c.params.get(fkey))
    groups = [[c for c in _order(data, cells) if (fkey and c.params.get(fkey)) == f]
              for f in facets]
    # Facet and colour say the quant/backend and model: labels carry the rest.
    label_keys = [k for k in data.varying() if k != fkey]
    ckey, colours, clabels = _colour_key(data)
    estimated = metric.energy and any(c.estimated for c in cells)

    rows = [len(g) + _gaps(g) for g in groups]
    height = 1.3 + sum(0.34 * r + 0.55 for r in rows) + 0.4
    fig = _figure((WIDTH_IN, height))
    axes = fig.subplots(len(groups), 1, sharex=True, height_ratios=rows, squeeze=False)
    xmax = 0.0
    for ax, facet, group in zip(axes[:, 0], facets, groups, strict=True):
        y, pos, prev_model = 0.0, [], None
        for c in group:
            if prev_model is not None and c.params.get("model") != prev_model:
                y += 0.6  # a gap between models
            prev_model = c.params.get("model")
            pos.append(y)
            y += 1.0
        for c, yy in zip(group, pos, strict=True):
            s = c.stats[metric.name]
            err = s.half_width if math.isfinite(s.half_width) else None
            hatch = "///" if metric.energy and c.estimated else None
            ax.barh(yy, s.mean, height=0.7, color=colours[_colour_of(c, ckey)],
                    alpha=0.4 if c.noisy else 0.85, hatch=hatch,
                    edgecolor="white" if hatch else None, linewidth=0)
            if err is not None:
                ax.errorbar(s.mean, yy, xerr=err, fmt="none", ecolor="black", elinewidth=1.2,
                            capsize=4)
            vals = c.values[metric.name]
            ax.plot(vals, [yy] * len(vals), "o", ms=3, mfc="white", mec="black", mew=0.7,
                    zorder=3)
            xmax = max(xmax, s.mean + (err or 0.0), *vals)
        ax.set_yticks(pos, [_wrap(data.label(c, label_keys) + (" (noisy)" if c.noisy else ""))
                            for c in group])
        for tick, c in zip(ax.get_yticklabels(), group, strict=True):
            if c.flags:
                tick.set_color("#b35900")  # flagged cells stand out in every plot
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.35)
        ax.set_axisbelow(True)
        if fkey:
            ax.set_title(f"{'quantization' if fkey == 'quant' else 'backend'}: {facet}",
                         loc="left", fontweight="bold")
    axes[0, 0].set_xlim(0, xmax * 1.08 if xmax > 0 else 1)
    unit = metric.display_unit + (", estimated" if estimated else "")
    axes[-1, 0].set_xlabel(f"{metric.words} ({unit}): bar = mean, whisker = 95% CI, dot = trial")
    fig.suptitle(_title(f"{metric.words.capitalize()} per cell", data, estimated))
    handles: list[Any] = [Patch(color=colours[k], label=clabels[k]) for k in colours]
    if estimated:
        handles.append(Patch(facecolor="#999999", hatch="///", edgecolor="white",
                             label="estimated energy"))
    if any(c.noisy for c in cells):
        handles.append(Patch(facecolor="#999999", alpha=0.4, label="noisy cell (faded, label "
                             "says so): decode t/s varied beyond the CV limit"))
    _legend(fig, handles, ncols=1 if data.multi_run else None)
    name = f"metric_{metric.slug}.png"
    _save(fig, folder, name)
    caption = (
        f"{metric.words.capitalize()} in {metric.display_unit}, one bar per cell: the mean over "
        "non-warm-up trials, its 95% confidence interval (Student's t) and each trial's value."
    )
    if estimated:
        caption += " Energy is an ESTIMATE from CPU time, not a measurement."
    return Plot(name, f"{metric.words.capitalize()} ({metric.display_unit})", caption, "metric")


def _gaps(group: Sequence[CellSummary]) -> int:
    return max(0, len({c.params.get("model") for c in group}) - 1)


# --------------------------------------------------------------------------------------------
# The headline: best decode t/s and best J/token per model, ties said as ties


def plot_headline(data: ReportData, folder: Path) -> Plot | None:
    panels = [m for m in (DECODE, J_PER_TOKEN) if best_per_model(data.ok_cells, m)]
    if not panels:
        return None
    models = best_per_model(data.ok_cells, panels[0])
    fig = _figure((WIDTH_IN, 0.8 + len(panels) * (1.1 + 0.5 * len(models))))
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    verdicts = []
    for ax, metric in zip(axes, panels, strict=True):
        bests = best_per_model(data.ok_cells, metric)
        top, tied = ranked(bests, metric)
        ys = list(range(len(bests)))
        for y, c in zip(ys, bests, strict=True):
            st = c.stats[metric.name]
            win = c is top or c in tied
            colour = PALETTE[0] if win else "#9aa5b1"
            hatch = "///" if metric.energy and c.estimated else None
            ax.barh(y, st.mean, height=0.6, color=colour, alpha=0.4 if c.noisy else 0.9,
                    hatch=hatch, edgecolor="white" if hatch else None, linewidth=0)
            if math.isfinite(st.half_width):
                ax.errorbar(st.mean, y, xerr=st.half_width, fmt="none", ecolor="black",
                            elinewidth=1.2, capsize=4)
            tag = ("best" if not tied else "tied") if win else ""
            end = st.mean + (st.half_width if math.isfinite(st.half_width) else 0.0)
            ax.annotate(f"{_fmt(st.mean)} {tag}".strip(), (end, y), xytext=(8, 0),
                        textcoords="offset points", va="center", fontsize=9,
                        fontweight="bold" if win else "normal")
        ax.set_yticks(ys, [_wrap(point_label(data, c), 34) for c in bests])
        ax.invert_yaxis()
        reach = max(c.stats[metric.name].mean + (c.stats[metric.name].half_width
                    if math.isfinite(c.stats[metric.name].half_width) else 0) for c in bests)
        ax.set_xlim(0, reach * 1.3 or 1.0)
        better = "higher" if metric.higher_is_better else "lower"
        unit = metric.display_unit + (", estimated" if metric.energy and any(
            c.estimated for c in bests) else "")
        ax.set_xlabel(f"{metric.words} ({unit}) — {better} is better")
        ax.grid(axis="x", alpha=0.35)
        ax.set_axisbelow(True)
        if top is not None:
            verdicts.append(f"{metric.words}: " + (
                f"{point_label(data, top)}" if not tied else
                "tied: " + ", ".join(point_label(data, c) for c in [top, *tied])))
    fig.suptitle("Best decode speed and best decode energy per model (mean, whisker = 95% CI)")
    name = "headline.png"
    _save(fig, folder, name)
    caption = (
        "For each model, its best cell: the highest mean decode t/s (top) and the lowest mean "
        "decode J/token (bottom), with 95% confidence intervals. The winner is marked best only "
        "when no other model's interval overlaps its own; otherwise every overlapping model is "
        "marked tied. " + "; ".join(verdicts) + "."
    )
    return Plot(name, "Headline: best speed and energy per model", caption, "headline")


_fmt = format_number


# --------------------------------------------------------------------------------------------
# Speed against energy


def plot_pareto(data: ReportData, folder: Path) -> Plot | None:
    cells = [c for c in data.ok_cells if DECODE.name in c.stats and J_PER_TOKEN.name in c.stats]
    if not cells:
        return None
    ckey, colours, clabels = _colour_key(data)
    estimated = any(c.estimated for c in cells)
    fig = _figure((WIDTH_IN, 6.2))
    ax = fig.subplots()
    for c in cells:
        x, y = c.stats[J_PER_TOKEN.name], c.stats[DECODE.name]
        col = colours[_colour_of(c, ckey)]
        ax.errorbar(
            x.mean, y.mean,
            xerr=x.half_width if math.isfinite(x.half_width) else None,
            yerr=y.half_width if math.isfinite(y.half_width) else None,
            fmt="o", ms=8 if c.pareto else 6, color=col,
            mfc="white" if c.estimated else col, mew=1.6, ecolor=col, elinewidth=1, capsize=3,
            zorder=3,
        )
    front = sorted((c for c in cells if c.pareto), key=lambda c: c.stats[J_PER_TOKEN.name].mean)
    if front:
        fx = [c.stats[J_PER_TOKEN.name].mean for c in front]
        fy = [c.stats[DECODE.name].mean for c in front]
        ax.step(fx, fy, where="post", color="black", lw=1.2, ls="--", zorder=2)
        ax.plot(fx, fy, "o", ms=15, mfc="none", mec="black", mew=1.2, zorder=4)
    unit = "J/token" + (", estimated" if estimated else "")
    ax.set_xlabel(f"decode energy per token ({unit}) — lower is better")
    ax.set_ylabel("decode speed (tokens/s) — higher is better")
    # Limits take in the intervals, up to 60 % beyond a mean: one very wide interval must not
    # squash every other point.
    def reach(metric: Metric) -> float:
        return max(min(c.stats[metric.name].hi, 1.6 * c.stats[metric.name].mean)
                   for c in cells) * 1.08 or 1.0

    ax.set_xlim(0, reach(J_PER_TOKEN))
    ax.set_ylim(0, reach(DECODE))
    ax.grid(alpha=0.35)
    fig.suptitle(_title("Speed against energy: decode t/s vs J/token", data, estimated))
    handles: list[Any] = [
        Line2D([], [], marker="o", ls="", color=colours[k], label=clabels[k]) for k in colours
    ]
    handles.append(Line2D([], [], marker="o", ms=13, mfc="none", mec="black", ls="--",
                          color="black", label="Pareto front (no cell is both faster and "
                          "cheaper)"))
    if estimated:
        handles.append(Line2D([], [], marker="o", ls="", mfc="white", mec="#555555",
                              label="hollow: estimated energy"))
    _legend(fig, handles, ncols=2)
    _annotate(ax, data, cells)  # last: label boxes are measured in the final layout
    name = "speed_vs_energy.png"
    _save(fig, folder, name)
    caption = (
        "Each point is a cell: mean decode t/s against mean decode J/token with 95% confidence "
        "intervals (a wide interval may run off the axes; the table has it). Circled points "
        "joined by the dashed line form the Pareto front: for each of them no other cell is "
        "both faster and more frugal."
    )
    if estimated:
        caption += " Energy is an ESTIMATE from CPU time, not a measurement."
    return Plot(name, "Speed against energy", caption, "pareto")


def point_label(data: ReportData, cell: CellSummary) -> str:
    """Model and quant, then whatever else varies (threads, prompt): what a reader recognises,
    not a cell id. Several runs: the run tag first."""
    keys = ["model", "quant", *(k for k in data.varying() if k not in ("model", "quant"))]
    text = data.label(cell, keys)
    return text + (" (noisy)" if cell.noisy else "")


# Offsets (points) tried in turn around a point until its label overlaps nothing placed.
_OFFSETS = [(8, 6), (8, -14), (-8, 6), (-8, -14), (8, 18), (-8, 18), (8, -26), (-8, -26),
            (24, 0), (-24, 0), (8, 30), (-8, -38)]


def _annotate(ax: Any, data: ReportData, cells: Sequence[CellSummary]) -> None:
    """Label each point; a label that would overlap one already placed (or a point) moves to
    the next free spot around its point, with a thin leader line when it moved far."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()  # final layout, so label boxes are where they will be drawn
    frame = ax.get_window_extent(renderer)
    # Points are obstacles too: a label never covers another cell's marker.
    taken: list[Any] = []
    for c in cells:
        px, py = ax.transData.transform((c.stats[J_PER_TOKEN.name].mean,
                                         c.stats[DECODE.name].mean))
        taken.append(Bbox.from_bounds(px - 5, py - 5, 10, 10))
    order = sorted(cells, key=lambda c: -c.stats[DECODE.name].mean)
    for c in order:
        x, y = c.stats[J_PER_TOKEN.name].mean, c.stats[DECODE.name].mean
        text = _wrap(point_label(data, c), 30)
        chosen = None
        for dx, dy in _OFFSETS:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                              fontsize=8.5, color="#333333", ha="left" if dx >= 0 else "right",
                              va="bottom" if dy >= 0 else "top", zorder=6)
            ann.set_in_layout(False)  # labels must not move the axes they were placed in
            box = ann.get_window_extent(renderer).expanded(1.04, 1.1)
            inside = (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0
                      and box.y1 <= frame.y1)
            if inside and not any(box.overlaps(t) for t in taken):
                chosen = ann
                break
            ann.remove()
        if chosen is None:  # crowded: further out, with a leader line back to the point
            for dx, dy in [(a * 3, b * 3) for a, b in _OFFSETS]:
                chosen = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                                     fontsize=8.5, color="#333333", zorder=6,
                                     ha="left" if dx >= 0 else "right",
                                     va="bottom" if dy >= 0 else "top",
                                     arrowprops={"arrowstyle": "-", "color": "#999999",
                                                 "lw": 0.6})
                chosen.set_in_layout(False)
                box = chosen.get_window_extent(renderer)
                if frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1) and \
                        not any(box.overlaps(t) for t in taken):
                    break
                chosen.remove()
                chosen = None
        if chosen is None:  # nowhere free: labelled all the same, beside its point
            chosen = ax.annotate(text, (x, y), xytext=_OFFSETS[0], textcoords="offset points",
                                 fontsize=8.5, color="#333333", zorder=6)
            chosen.set_in_layout(False)
        taken.append(chosen.get_window_extent(renderer))


# --------------------------------------------------------------------------------------------
# Power timelines


def _domain_meta(cell: CellSummary) -> dict[str, dict[str, Any]]:
    return {str(d.get("name")): d for d in cell.run.manifest.get("domains") or []}


def _phase_edges(cell: CellSummary, trial: int) -> tuple[float | None, float | None]:
    """First and last token times (s since the trial started): tokens.parquet, else the trial's
    ttft_s and decode_s."""
    toks = [t for t in cell.run.run.table("tokens")
            if t.get("cell_id") == cell.cell_id and t.get("trial") == trial
            and t.get("t_s") is not None]
    if toks:
        toks.sort(key=lambda t: t["i"])
        return float(toks[0]["t_s"]), float(toks[-1]["t_s"])
    row = cell.sample(trial) or {}
    first = row.get("ttft_s")
    last = first + row["decode_s"] if first is not None and row.get("decode_s") else first
    return first, last


def plot_power(data: ReportData, folder: Path) -> list[Plot]:
    cells = [c for c in data.ok_cells if c.representative_trial is not None]
    timelines: list[tuple[CellSummary, int, list[dict[str, Any]]]] = []
    for c in cells:
        trial = c.representative_trial
        if trial is None:
            continue
        rows = [r for r in c.run.run.table("power")
                if r.get("cell_id") == c.cell_id and r.get("trial") == trial
                and r.get("watts") is not None and r.get("t_s") is not None]
        if rows:
            timelines.append((c, trial, rows))
    if not timelines:
        return []
    domains: list[str] = []
    for _, _, rows in timelines:
        for r in rows:
            if r["domain"] not in domains:
                domains.append(str(r["domain"]))
    dcolours = {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(domains)}
    # One y scale for every timeline (and every figure of them), so heights compare.
    top = max(float(r["watts"]) for _, _, rows in timelines for r in rows) * 1.08 or 1.0
    plots = []
    chunks = [timelines[i:i + POWER_PER_FIGURE]
              for i in range(0, len(timelines), POWER_PER_FIGURE)]
    for n, chunk in enumerate(chunks, start=1):
        plots.append(_power_figure(data, chunk, dcolours, folder, n, len(chunks), top))
    return plots


def _power_figure(
    data: ReportData, chunk: list[tuple[CellSummary, int, list[dict[str, Any]]]],
    dcolours: dict[str, Any], folder: Path, n: int, total: int, top: float,
) -> Plot:
    ncols = 1 if len(chunk) == 1 else 2
    nrows = math.ceil(len(chunk) / ncols)
    fig = _figure((WIDTH_IN, 1.6 + 2.9 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    estimated_domains: set[str] = set()
    apart: set[str] = set()
    used: list[str] = []
    for ax, (cell, trial, rows) in zip(axes.flat, chunk, strict=False):
        meta = _domain_meta(cell)
        first, last = _phase_edges(cell, trial)
        if first is not None:
            ax.axvspan(0, first, color=PHASE_COLOURS["prefill"], alpha=0.6, lw=0)
            if last is not None and last > first:
                ax.axvspan(first, last, color=PHASE_COLOURS["decode"], alpha=0.6, lw=0)
        by_domain: dict[str, list[tuple[float, float]]] = {}
        for r in rows:
            by_domain.setdefault(str(r["domain"]), []).append((float(r["t_s"]), float(r["watts"])))
        for dom, pts in by_domain.items():
            pts.sort()
            # Domains outside the headline sum (core inside the package, psys around it) dashed.
            summed = (meta.get(dom) or {}).get("component", True)
            if not summed:
                apart.add(dom)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-" if summed else "--",
                    marker=".", ms=3, lw=1.4, color=dcolours[dom])
            if (meta.get(dom) or {}).get("method") == "estimate" or dom == "cpu-estimate":
                estimated_domains.add(dom)
            if dom not in used:
                used.append(dom)
        ax.set_title(_wrap(f"{point_label(data, cell)} (trial {trial})", 60), loc="left")
        ax.set_xlabel("time since trial start (s)")
        ax.set_ylabel("power (W)" + (", estimated" if estimated_domains & set(by_domain)
                                     else ""))
        ax.set_xlim(left=0)
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(chunk):]:
        ax.set_visible(False)
    handles: list[Any] = []
    for d in used:
        label = d + (" (estimate)" if d in estimated_domains else "")
        label += " (not summed)" if d in apart else ""
        handles.append(Line2D([], [], color=dcolours[d], lw=2, ls="--" if d in apart else "-",
                              label=label))
    handles += [Patch(color=PHASE_COLOURS["prefill"], alpha=0.6, label="prefill"),
                Patch(color=PHASE_COLOURS["decode"], alpha=0.6, label="decode")]
    _legend(fig, handles, ncols=min(len(handles), 5))
    part = f" ({n} of {total})" if total > 1 else ""
    fig.suptitle(_title(f"Power during the median trial of each cell{part}", data,
                        bool(estimated_domains)))
    name = f"power_{n}.png"
    _save(fig, folder, name)
    caption = (
        "Power per energy domain over one representative trial of each cell (the trial with "
        "the median decode t/s), from power.parquet; the shading marks prefill (start to first "
        "token) and decode (first to last token). Every panel shares one power scale."
    )
    if apart:
        caption += (" Dashed domains lie inside or around the summed ones (RAPL core inside "
                    "the package, psys around the platform) and are not added to the energy "
                    "figures.")
    if estimated_domains:
        caption += " Domains marked (estimate) are ESTIMATED from CPU time, not measured."
    return Plot(name, f"Power timelines{part}", caption, "power")


# --------------------------------------------------------------------------------------------
# Sweeps


def _series(cells: Sequence[CellSummary], key: str) -> dict[Any, list[CellSummary]]:
    out: dict[Any, list[CellSummary]] = {}
    for c in cells:
        # A synthetic prompt's id ("synthetic-128") follows its length: not a series of its own.
        skip = {key, "prompt_id"} if key == "prompt_tokens" else {key}
        ident = (c.run.tag,) + tuple(_hashable(c.params.get(k)) for k in sorted(c.params)
                                     if k not in skip)
        out.setdefault(ident, []).append(c)
    return out


def sweep_keys(data: ReportData) -> list[str]:
    """Numeric settings that vary and give at least one series of two or more values."""
    out = []
    for key in SWEEP_KEYS:
        cells = [c for c in data.ok_cells if isinstance(c.params.get(key), int)
                 and not isinstance(c.params.get(key), bool)]
        if len({c.params[key] for c in cells}) < 2:
            continue
        if any(len({c.params[key] for c in s}) >= 2 for s in _series(cells, key).values()):
            out.append(key)
    return out


def _x_position(
    key: str, values: list[int]
) -> tuple[dict[int, float], list[tuple[float, str]], bool]:
    """x for each value, the ticks (x, label) and whether to use a log2 axis.
    n_gpu_layers = -1 (all layers) goes one step right of the largest count."""
    xs = sorted(set(values))
    pos: dict[int, float] = {}
    labels: list[tuple[float, str]] = []
    plain = [v for v in xs if v >= 0]
    for v in xs:
        if key == "n_gpu_layers" and v < 0:
            step = (plain[-1] - plain[0]) / max(1, len(plain) - 1) if len(plain) > 1 else 1.0
            pos[v] = (plain[-1] + step) if plain else 0.0
            labels.append((pos[v], "all"))
        else:
            pos[v] = float(v)
            labels.append((pos[v], str(v)))
    positive = all(p > 0 for p in pos.values())
    log = positive and max(pos.values()) / min(pos.values()) >= 4
    return pos, sorted(labels), log


def _nudge(x: float, shift: float, span: float, log: bool) -> float:
    """x moved by `shift` of the axis span (in log2 units on a log axis)."""
    return x * 2 ** (shift * span) if log else x + shift * span


def plot_sweep(data: ReportData, key: str, folder: Path) -> Plot | None:
    cells = [c for c in data.ok_cells if isinstance(c.params.get(key), int)]
    series = {k: v for k, v in _series(cells, key).items()
              if len({c.params[key] for c in v}) >= 2}
    if not series:
        return None
    members = [c for s in series.values() for c in s]
    skip = {key, "prompt_id"} if key == "prompt_tokens" else {key}
    label_keys = [k for k in data.varying(members) if k not in skip]
    pos, ticks, log = _x_position(key, [c.params[key] for c in members])
    # Series share x values: nudge each a little sideways so their whiskers stay apart.
    lo, hi = min(pos.values()), max(pos.values())
    span = (math.log2(hi / lo) if log else hi - lo) or 1.0
    n_series = len(series)
    fig = _figure((WIDTH_IN, 4.6))
    axes = fig.subplots(1, 2, sharex=True)
    handles = []
    for i, group in enumerate(series.values()):
        group = sorted(group, key=lambda c: pos[c.params[key]])
        colour = PALETTE[i % len(PALETTE)]
        marker = "osD^v<>p*h"[i // len(PALETTE) % 10]
        first = group[0]
        if label_keys:
            label = _wrap(data.label(first, label_keys), 40)
        else:  # the series differ only by run, or there is one series
            label = first.run.tag if data.multi_run else "all cells"
        shift = (i - (n_series - 1) / 2) * min(0.012, 0.06 / n_series)
        for ax, metric in zip(axes, (PREFILL, DECODE), strict=True):
            pts = [(_nudge(pos[c.params[key]], shift, span, log), c.stats[metric.name])
                   for c in group if metric.name in c.stats]
            if not pts:
                continue
            ax.errorbar(
                [p[0] for p in pts], [p[1].mean for p in pts],
                yerr=[p[1].half_width if math.isfinite(p[1].half_width) else 0 for p in pts],
                fmt="-", marker=marker, color=colour, capsize=3, lw=1.6, ms=5,
            )
        handles.append(Line2D([], [], color=colour, marker=marker, lw=1.6, label=label))
    for ax, metric in zip(axes, (PREFILL, DECODE), strict=True):
        if log:
            ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator([p for p, _ in ticks]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([t for _, t in ticks])
        ax.set_xlabel(SWEEP_LABELS.get(key, key) + (" (log scale)" if log else ""))
        ax.set_ylabel(f"{metric.words} speed ({metric.display_unit})")
        ax.set_title(f"{metric.words} t/s vs {SWEEP_LABELS.get(key, key)}", loc="left")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.35)
    fig.suptitle(_title(f"Sweep over {SWEEP_LABELS.get(key, key)}: mean and 95% CI", data))
    _legend(fig, handles, ncols=min(len(handles), 3))
    name = f"sweep_{key}.png"
    _save(fig, folder, name)
    caption = (
        f"Prefill and decode tokens/s against {SWEEP_LABELS.get(key, key)} ({key}), one line "
        "per combination of the other settings; whiskers are 95% confidence intervals."
    )
    return Plot(name, f"Sweep: {SWEEP_LABELS.get(key, key)}", caption, "sweep")


# --------------------------------------------------------------------------------------------
# Languages: grouped bars per language, one bar per model series


def _series_colours(series: Sequence[str]) -> dict[str, Any]:
    return {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(series)}


def _grouped_bars(
    ax: Any, langs: Sequence[str], series: Sequence[str], colours: dict[str, Any],
    value: Any, estimated: Any = None,
) -> tuple[float, bool]:
    """Bars at x = language, one per series side by side. `value(lang, series)` gives
    (mean, half width or None, trial values) or None. Returns (top of the axis, whether a
    whisker was cut there)."""
    n = max(1, len(series))
    width = min(0.8 / n, 0.3)
    tops, cut = [], False
    reach: list[float] = []
    for i, s in enumerate(series):
        for j, lang in enumerate(langs):
            v = value(lang, s)
            if v is None:
                continue
            mean, err, trials = v
            x = j + (i - (n - 1) / 2) * width
            hatch = "///" if estimated is not None and estimated(lang, s) else None
            ax.bar(x, mean, width=width * 0.92, color=colours[s], alpha=0.85, hatch=hatch,
                   edgecolor="white" if hatch else None, linewidth=0)
            if err is not None:
                ax.errorbar(x, mean, yerr=err, fmt="none", ecolor="black", elinewidth=1.0,
                            capsize=min(3.0, 40 * width))
            if trials:
                ax.plot([x] * len(trials), trials, "o", ms=2.6, mfc="white", mec="black",
                        mew=0.6, zorder=3)
            tops.append(max([mean, *trials]))
            # A whisker may reach at most twice its mean: one noisy cell must not flatten
            # every other bar (the table has the interval).
            full = mean + (err or 0.0)
            reach.append(min(full, 2.0 * mean) if mean > 0 else full)
            cut = cut or full > 2.0 * mean > 0
    top = max(tops + reach) * 1.08 if tops else 1.0
    ax.set_xticks(range(len(langs)), list(langs))
    ax.set_xlim(-0.6, len(langs) - 0.4)
    ax.set_ylim(0, top or 1.0)
    ax.grid(axis="y", alpha=0.35)
    ax.set_axisbelow(True)
    return top, cut


def plot_language_metric(data: ReportData, metric: Metric, folder: Path) -> Plot | None:
    langs = data.languages
    if langs is None:
        return None
    rows = [r for r in langs.rows.values() if metric.name in r.stats]
    if not rows:
        return None
    series = [s for s in langs.series if any(r.series == s for r in rows)]
    lang_list = [lang for lang in langs.langs if any(r.lang == lang for r in rows)]
    colours = _series_colours(series)
    estimated = metric.energy and any(r.estimated for r in rows)

    def value(lang: str, s: str) -> tuple[float, float | None, list[float]] | None:
        r = langs.get(lang, s)
        if r is None or metric.name not in r.stats:
            return None
        st = r.stats[metric.name]
        return st.mean, (st.half_width if math.isfinite(st.half_width) else None), \
            r.values[metric.name]

    def est(lang: str, s: str) -> bool:
        r = langs.get(lang, s)
        return bool(metric.energy and r is not None and r.estimated)

    fig = _figure((WIDTH_IN, 5.0))
    ax = fig.subplots()
    _, cut = _grouped_bars(ax, lang_list, series, colours, value, est)
    unit = metric.display_unit + (", estimated" if estimated else "")
    better = "higher" if metric.higher_is_better else "lower"
    ax.set_ylabel(f"{metric.words} ({unit})")
    ax.set_xlabel(f"language — bar = mean, whisker = 95% CI, dot = trial; {better} is better")
    base = f"{metric.words.capitalize()} ({metric.display_unit}) per language"
    fig.suptitle(_title(base, data, estimated))
    handles: list[Any] = [Patch(color=colours[s], label=s) for s in series]
    if estimated:
        handles.append(Patch(facecolor="#999999", hatch="///", edgecolor="white",
                             label="estimated energy"))
    _legend(fig, handles)
    name = f"lang_{metric.name}.png"
    _save(fig, folder, name)
    caption = (
        f"{metric.words.capitalize()} in {metric.display_unit} for each language, one bar per "
        "model: "
        "the mean over the language's non-warm-up trials, its 95% confidence interval and "
        "each trial. Characters are those decoded after the first token (Unicode code points), "
        "a unit that means the same for every tokenizer."
    )
    if cut:
        caption += " Whiskers longer than the bar itself are cut at the top; the table has them."
    if estimated:
        caption += " Energy is an ESTIMATE from CPU time, not a measurement."
    return Plot(name, base, caption, "language")


def plot_fertility(data: ReportData, folder: Path) -> Plot | None:
    langs = data.languages
    if langs is None:
        return None
    keys = [(k, t) for k, t in (("tokens_per_char", "tokens per character"),
                                ("tokens_per_word", "tokens per word"))
            if any(k in r.fertility for r in langs.rows.values())]
    if not keys:
        return None
    colours = _series_colours(langs.series)
    fig = _figure((WIDTH_IN, 1.4 + 3.3 * len(keys)))
    axes = fig.subplots(len(keys), 1, squeeze=False)
    for ax, (key, text) in zip(axes[:, 0], keys, strict=True):
        def value(lang: str, s: str, key: str = key) -> tuple[float, None, list[float]] | None:
            r = langs.get(lang, s)
            if r is None or key not in r.fertility:
                return None
            return r.fertility[key], None, []

        _grouped_bars(ax, langs.langs, langs.series, colours, value)
        ax.set_ylabel(f"prompt {text}")
        ax.set_title(f"Prompt {text}", loc="left")
    axes[-1, 0].set_xlabel("language — lower means fewer tokens (decode steps) for the same text")
    fig.suptitle(_title("Tokenizer fertility per language", data))
    _legend(fig, [Patch(color=colours[s], label=s) for s in langs.series])
    name = "lang_fertility.png"
    _save(fig, folder, name)
    caption = (
        "How many tokens each model's tokenizer makes of the same prompt, per character and per "
        "word, for each language (mean over the language's prompts). A model that needs more "
        "tokens for a language spends more decode steps, time and energy on the same text."
    )
    return Plot(name, "Tokenizer fertility per language", caption, "language")


def plot_language_bpb(data: ReportData, folder: Path) -> Plot | None:
    langs = data.languages
    if langs is None or not langs.has_quality:
        return None
    series = [s for s in langs.series
              if any("bits_per_byte" in r.quality for r in langs.rows.values() if r.series == s)]
    lang_list = [lang for lang in langs.langs
                 if any("bits_per_byte" in r.quality for r in langs.in_lang(lang))]
    colours = _series_colours(langs.series)

    def value(lang: str, s: str) -> tuple[float, None, list[float]] | None:
        r = langs.get(lang, s)
        if r is None or "bits_per_byte" not in r.quality:
            return None
        return r.quality["bits_per_byte"], None, []

    fig = _figure((WIDTH_IN, 4.6))
    ax = fig.subplots()
    _grouped_bars(ax, lang_list, series, colours, value)
    ax.set_ylabel("bits per byte")
    ax.set_xlabel("language — lower is better")
    # From quality.parquet, not the timed trials: the sweep's settings are not its subtitle.
    fig.suptitle("Bits per byte on each language's held-out text")
    _legend(fig, [Patch(color=colours[s], label=s) for s in series])
    name = "lang_bits_per_byte.png"
    _save(fig, folder, name)
    caption = (
        "−log₂ probability of each language's held-out text per UTF-8 byte (quality.parquet): "
        "independent of the tokenizer, so comparable across models and languages. Lower means "
        "the model predicts the language's text better."
    )
    return Plot(name, "Bits per byte per language", caption, "language")


# --------------------------------------------------------------------------------------------
# Quantization ladders: quality loss against energy and against speed, Pareto fronts marked


def plot_ladder(data: ReportData, ladder: Ladder, n: int, folder: Path) -> Plot | None:
    """One figure per ladder: rows = quality measures (KL, perplexity), columns = costs
    (J/token, decode t/s); each panel marks its own Pareto front."""
    qkeys = [k for k in ("kl_div", "perplexity") if any(k in lv.quality for lv in ladder.timed)]
    costs = [m for m in (J_PER_TOKEN, DECODE) if any(m.name in lv.stats for lv in ladder.timed)]
    if not qkeys or not costs:
        return None
    estimated = ladder.estimated
    fig = _figure((WIDTH_IN, 1.5 + 3.7 * len(qkeys)))
    axes = fig.subplots(len(qkeys), len(costs), squeeze=False)
    ref = next((lv for lv in ladder.levels if lv.is_reference), None)
    qtitle = {"kl_div": f"KL vs {ladder.reference or 'reference'} (nats)",
              "perplexity": "perplexity"}
    for r, qkey in enumerate(qkeys):
        for c, metric in enumerate(costs):
            _ladder_panel(axes[r, c], ladder, qkey, metric, ref)
            unit = metric.display_unit + (", estimated" if metric.energy and estimated else "")
            better = "higher" if metric.higher_is_better else "lower"
            axes[r, c].set_xlabel(f"{metric.words} ({unit}) — {better} is better")
            axes[r, c].set_ylabel(qtitle[qkey] + " — lower is better")
    base = f"Quantization ladder of {ladder.label}: quality against energy and speed"
    fig.suptitle(_title(base, data, estimated))
    handles: list[Any] = [
        Line2D([], [], marker="o", ls="", color=PALETTE[0],
               label="a quantization level (x: mean and 95% CI)"),
        Line2D([], [], marker="o", ms=13, mfc="none", mec="black", ls="--", color="black",
               label="Pareto front of the panel"),
    ]
    if ref is not None and not ref.stats and "perplexity" in qkeys:
        handles.append(Line2D([], [], color="#777777", ls=":", label=f"{ref.quant} "
                              "(reference, not timed)"))
    if estimated:
        handles.append(Line2D([], [], marker="o", ls="", mfc="white", mec=PALETTE[0],
                              label="hollow: estimated energy"))
    _legend(fig, handles, ncols=min(len(handles), 2))
    name = f"quant_{n}.png"
    _save(fig, folder, name)
    what = " and ".join({"kl_div": "KL divergence from the reference's next-token "
                                   "distribution (nats)",
                         "perplexity": "perplexity on the held-out text"}[k] for k in qkeys)
    caption = (
        f"Each point is one quantization level of {ladder.label}: its {what} (y, lower is "
        "better) against its decode energy per token (left) and decode speed (right), means "
        "over its trials with 95% confidence intervals. In each panel the circled points "
        "joined by the dashed line are the Pareto front: no other level is both better in "
        "quality and cheaper (left) or faster (right)."
    )
    if ref is not None and not ref.stats:
        caption += (f" The reference {ref.quant} was not timed: its KL is 0 by definition"
                    + (" and its perplexity is the dotted line" if "perplexity" in qkeys
                       else "") + ".")
    if estimated:
        caption += " Energy is an ESTIMATE from CPU time, not a measurement."
    return Plot(name, f"Quality against energy and speed: {ladder.label}", caption, "quant")


def _ladder_panel(ax: Any, ladder: Ladder, qkey: str, metric: Metric, ref: Any) -> None:
    pts = [lv for lv in ladder.levels if qkey in lv.quality and metric.name in lv.stats]
    if not pts:
        ax.text(0.5, 0.5, "no level has both", transform=ax.transAxes, ha="center",
                color="#777777")
        return
    xs = [lv.stats[metric.name].mean for lv in pts]
    ys = [lv.quality[qkey] for lv in pts]
    # Lower quality loss is better on y; on x lower J/token or higher t/s.
    if metric.higher_is_better:
        front = [pts[i] for i in pareto_front([(y, x) for x, y in zip(xs, ys, strict=True)])]
    else:
        front = [pts[i] for i in pareto_front([(x, -y) for x, y in zip(xs, ys, strict=True)])]
    for lv, x, y in zip(pts, xs, ys, strict=True):
        st = lv.stats[metric.name]
        hollow = metric.energy and lv.estimated
        ax.errorbar(x, y, xerr=st.half_width if math.isfinite(st.half_width) else None,
                    fmt="o", ms=7, color=PALETTE[0], mfc="white" if hollow else PALETTE[0],
                    mew=1.5, ecolor=PALETTE[0], elinewidth=1, capsize=3, zorder=3)
        if lv in front:
            ax.plot(x, y, "o", ms=15, mfc="none", mec="black", mew=1.2, zorder=4)
        ax.annotate(lv.quant, (x, y), xytext=(9, 6), textcoords="offset points", fontsize=9,
                    color="#333333", zorder=5,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                          "alpha": 0.8})
    front.sort(key=lambda lv: lv.stats[metric.name].mean)
    if len(front) > 1:
        # The boundary of what the front dominates: a staircase between its points.
        ax.step([lv.stats[metric.name].mean for lv in front], [lv.quality[qkey] for lv in front],
                where="pre" if metric.higher_is_better else "post", color="black", lw=1.1,
                ls="--", zorder=2)
    vals = list(ys)
    if ref is not None and not ref.stats and qkey == "perplexity" and qkey in ref.quality:
        ax.axhline(ref.quality[qkey], color="#777777", lw=1, ls=":", zorder=1)
        vals.append(ref.quality[qkey])
    positive = [v for v in vals if v > 0]
    if qkey == "kl_div" and positive and min(vals) > 0 and max(vals) / min(vals) >= 20:
        # KL spans decades down a ladder (Q8_0 ~0.005, Q2_K ~0.5): a log axis keeps the good
        # levels apart. Plain numbers on the ticks (TeX is off for names from configs).
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(min(vals) / 2, max(vals) * 2)
    elif qkey == "kl_div":
        ax.set_ylim(0, max(vals) * 1.2 or 1.0)
    else:  # perplexity: its spread matters, not its distance from zero
        lo, hi = min(vals), max(vals)
        pad = (hi - lo) * 0.2 or hi * 0.05 or 1.0
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlim(0, max(min(lv.stats[metric.name].hi, 1.6 * lv.stats[metric.name].mean)
                       for lv in pts) * 1.15 or 1.0)
    ax.grid(alpha=0.35)


# --------------------------------------------------------------------------------------------


def draw_all(data: ReportData, folder: Path) -> list[Plot]:
    """Every figure the data supports, written into `folder`, in report order."""
    with matplotlib.rc_context(RC):  # type: ignore[arg-type]  # its stubs list keys as Literal
        return _draw_all(data, folder)


def _draw_all(data: ReportData, folder: Path) -> list[Plot]:
    plots: list[Plot] = []
    p = plot_headline(data, folder)
    if p:
        plots.append(p)
    for metric in METRICS:
        p = plot_metric(data, metric, folder)
        if p:
            plots.append(p)
    p = plot_pareto(data, folder)
    if p:
        plots.append(p)
    for key in sweep_keys(data):
        p = plot_sweep(data, key, folder)
        if p:
            plots.append(p)
    plots += plot_power(data, folder)
    from bench.report.depth import depth_plots  # engines (#13): decode cost against depth

    plots += depth_plots(data, folder)
    if data.languages is not None:
        for metric in (CHARS_PER_S, J_PER_KCHAR):
            p = plot_language_metric(data, metric, folder)
            if p:
                plots.append(p)
        for p in (plot_fertility(data, folder), plot_language_bpb(data, folder)):
            if p:
                plots.append(p)
    for n, ladder in enumerate(data.ladders, start=1):
        p = plot_ladder(data, ladder, n, folder)
        if p:
            plots.append(p)
    return plots


PLOT_GLOBS = ("headline.png", "metric_*.png", "depth_*.png", "speed_vs_energy.png", "sweep_*.png",
              "power_*.png", "lang_*.png",
              "quant_*.png")
