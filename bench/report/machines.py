"""Machines side by side: the same cells measured on each machine of a report, one column each.

A fleet run (`bench run --cluster`) or several runs from different machines measure the same
cells on different hardware. Their differences measure the machines, so the report never judges
them as regressions (bench.report.comparison only pairs runs of one machine); this section shows
them next to each other instead. A cell is matched across machines by its cell key (everything
that makes two cells comparable); when a machine has several runs of a cell, the last one given
is shown. A machine is "ahead" only when its 95% interval overlaps no other machine's; otherwise
the cell is a tie, never a win.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.columns import CI_NOTE, cell_label
from bench.report.data import (
    DECODE,
    J_PER_TOKEN,
    PREFILL,
    CellSummary,
    Metric,
    ReportData,
    RunInfo,
    fmt_ci,
)
from bench.report.tables import SUB, Section, Table

METRICS: tuple[Metric, ...] = (DECODE, PREFILL, J_PER_TOKEN)
# Not part of what a cell is across machines: the machine itself.
_NOT_CELL = ("machine",)


@dataclass
class MachineCell:
    """One cell key measured on several machines: machine id -> that machine's cell."""

    key: str
    label: str
    params: dict[str, Any]
    on: dict[str, CellSummary] = field(default_factory=dict)


def machine_names(data: ReportData) -> dict[str, str]:
    """Machine id -> the name a reader knows it by (fleet worker name or hostname), made unique."""
    out: dict[str, str] = {}
    for mid, runs in data.machines.items():
        name = runs[0].machine_name
        out[mid] = name if name not in out.values() else f"{name} ({mid[:6]})"
    return out


def machine_cells(data: ReportData) -> list[MachineCell]:
    """The cell keys with results on two machines or more, in first-seen order."""
    by_key: dict[str, MachineCell] = {}
    for c in data.ok_cells:
        if not c.cell_key:
            continue
        params = {k: v for k, v in c.params.items() if k not in _NOT_CELL}
        entry = by_key.setdefault(c.cell_key, MachineCell(c.cell_key, c.cell_id, params))
        entry.on[c.run.machine_key] = c  # later runs of one machine replace earlier ones
    found = [m for m in by_key.values() if len(m.on) >= 2]
    vary = _varying([m.params for m in found])
    for m in found:
        text = cell_label(m.params, vary) if vary else ""
        m.label = text if text and text != "?" else m.label
    return found


def _varying(params: list[dict[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(k for p in params for k in p))
    return [k for k in keys if len({repr(p.get(k)) for p in params}) > 1]


def ahead(cells: dict[str, CellSummary], metric: Metric) -> tuple[str | None, bool]:
    """(the machine id with the best mean, whether its interval overlaps no other's)."""
    have = {mid: c.stats[metric.name] for mid, c in cells.items() if metric.name in c.stats}
    if len(have) < 2:
        return None, False
    pick = max if metric.higher_is_better else min
    best = pick(have, key=lambda mid: have[mid].mean)
    clear = not any(s.overlaps(have[best]) for mid, s in have.items() if mid != best)
    return best, clear


def machines_table(data: ReportData) -> Table | None:
    found = machine_cells(data)
    if not found:
        return None
    names = machine_names(data)
    order = list(names)
    metrics = [m for m in METRICS if any(m.name in c.stats for mc in found for c in mc.on.values())]
    cols = ["cell", "metric", *(names[mid] for mid in order), "ahead"]
    rows: list[list[str]] = []
    flagged: set[int] = set()
    for mc in found:
        for j, metric in enumerate(metrics):
            values = []
            for mid in order:
                c = mc.on.get(mid)
                if c is None or metric.name not in c.stats:
                    values.append("–")
                    continue
                text = fmt_ci(c.stats[metric.name])
                if metric.energy and c.energy_method in ("estimate", "mixed"):
                    text += " (est.)" if c.estimated else " (mixed)"
                values.append(text)
            best, clear = ahead(mc.on, metric)
            verdict = (names[best] if clear else "tied") if best is not None else "–"
            methods = {c.energy_method for c in mc.on.values() if metric.name in c.stats}
            if metric.energy and len(methods) > 1:
                # An estimate against a meter's joules is no contest either way.
                verdict = "not comparable: " + " vs ".join(sorted(m or "none" for m in methods))
            if any(c.flags for c in mc.on.values()):
                verdict += " (flagged: read with care)"
                flagged.add(len(rows))
            unit = metric.display_unit
            name = metric.header + (f" ({unit})" if unit and unit not in metric.header else "")
            rows.append([mc.label if j == 0 else "", name, *values, verdict])
    note = ("The same cells (matched by cell key) on each machine; differences measure the "
            "machines, not a change. ahead = the machine whose 95% interval overlaps no other "
            f"machine's; tied otherwise. {CI_NOTE}. Energy marked (est.) is estimated from CPU "
            "time, not measured, and is not comparable with a meter's joules.")
    return Table("Machines side by side", cols, rows, numeric=set(range(2, 2 + len(order))),
                 note=note, flagged=flagged)


def machines_section(data: ReportData) -> Section | None:
    table = machines_table(data)
    if table is None:
        return None
    names = machine_names(data)
    intro = [
        f"{len(names)} machines: " + "; ".join(
            f"{names[mid]} ({_runs(rs)}): {rs[0].machine_label}"
            for mid, rs in data.machines.items()) + ".",
    ]
    return Section("machines", "Machines side by side", intro, [table], "machines")


def _runs(runs: list[RunInfo]) -> str:
    return ", ".join(r.tag for r in runs)


def machines_summary(data: ReportData) -> list[str]:
    """One line per report with several machines: who decodes faster on how many cells."""
    found = machine_cells(data)
    if not found:
        return []
    names = machine_names(data)
    wins: dict[str, int] = {}
    ties = 0
    for mc in found:
        best, clear = ahead(mc.on, DECODE)
        if best is None:
            continue
        if clear:
            wins[best] = wins.get(best, 0) + 1
        else:
            ties += 1
    parts = [f"{names[mid]} on {n}" for mid, n in wins.items()]
    line = (f"Machines side by side: {len(found)} cells measured on {len(names)} machines; "
            "decode clearly faster: " + (", ".join(parts) if parts else "none")
            + f"; tied on {ties}.")
    return [line] + [f"{SUB}{mc.label}: " + ", ".join(
        f"{names[mid]} {fmt_ci(c.stats[DECODE.name])}" for mid, c in mc.on.items()
        if DECODE.name in c.stats) + f" {DECODE.display_unit}" for mc in found[:6]]
