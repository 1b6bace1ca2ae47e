"""The depth figure: decode tokens/s and decode J/token against context depth, per model.

Where RWKV's claim shows: an RNN's decode cost stays flat as the context fills, a
transformer's grows with its KV cache. Cells that differ only in their prompt (language,
prompt id) are pooled into one point per depth: the mean of their means.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.lines import Line2D

from bench.report.data import DECODE, J_PER_TOKEN, CellSummary, ReportData
from bench.report.plots import (
    PALETTE,
    WIDTH_IN,
    Plot,
    _figure,
    _hashable,
    _legend,
    _save,
    _title,
    _wrap,
)

PLOT_FILE = "depth_decode.png"
# Not part of a series' identity: depth is the x axis, and the prompt is pooled over.
POOLED = ("depth", "lang", "prompt_id", "prompt_tokens")


def depth_series(data: ReportData) -> dict[tuple[Any, ...], list[CellSummary]]:
    """Cells grouped by everything but depth and prompt; only groups with two depths or more."""
    out: dict[tuple[Any, ...], list[CellSummary]] = {}
    for c in data.ok_cells:
        if not isinstance(c.params.get("depth"), int):
            continue
        ident = (c.run.tag,) + tuple(
            (k, _hashable(c.params.get(k))) for k in sorted(c.params) if k not in POOLED
        )
        out.setdefault(ident, []).append(c)
    return {k: v for k, v in out.items() if len({c.params["depth"] for c in v}) >= 2}


def depth_points(cells: list[CellSummary], key: str) -> list[tuple[int, float, int]]:
    """(depth, mean of the cell means, cells pooled) for the cells that have `key`."""
    by_depth: dict[int, list[float]] = {}
    for c in cells:
        s = c.stats.get(key)
        if s is not None and math.isfinite(s.mean):
            by_depth.setdefault(int(c.params["depth"]), []).append(s.mean)
    return [(d, sum(v) / len(v), len(v)) for d, v in sorted(by_depth.items())]


def plot_depth(data: ReportData, folder: Path) -> Plot | None:
    series = depth_series(data)
    if not series:
        return None
    members = [c for s in series.values() for c in s]
    label_keys = [k for k in data.varying(members) if k not in POOLED]
    fig = _figure((WIDTH_IN, 4.6))
    axes = fig.subplots(1, 2, sharex=True)
    handles = []
    for i, group in enumerate(series.values()):
        colour = PALETTE[i % len(PALETTE)]
        marker = "osD^v<>p*h"[i // len(PALETTE) % 10]
        for ax, metric in zip(axes, (DECODE, J_PER_TOKEN), strict=True):
            pts = depth_points(group, metric.name)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", marker=marker,
                        color=colour, lw=1.6, ms=5)
        label = _wrap(data.label(group[0], label_keys), 40) if label_keys else "all cells"
        handles.append(Line2D([], [], color=colour, marker=marker, lw=1.6, label=label))
    for ax, metric in zip(axes, (DECODE, J_PER_TOKEN), strict=True):
        ax.set_xlabel("context depth (tokens before the prompt)")
        ax.set_ylabel(f"{metric.words} ({metric.display_unit})")
        ax.set_title(f"{metric.words} vs depth", loc="left")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.35)
    fig.suptitle(_title("Decode cost against context depth", data, data.estimated))
    _legend(fig, handles, ncols=min(len(handles), 3))
    _save(fig, folder, PLOT_FILE)
    caption = (
        "Decode tokens/s (left) and decode joules per token (right) against the number of "
        "tokens already in the context (workload.depth), one line per model and engine setting; "
        "cells that differ only by prompt are pooled (mean of their means). A flat line is a "
        "cost that does not grow with the context, as an RNN's (RWKV) should not."
    )
    return Plot(PLOT_FILE, "Decode cost vs context depth", caption, "sweep")


def depth_plots(data: ReportData, folder: Path) -> list[Plot]:
    p = plot_depth(data, folder)
    return [p] if p else []
