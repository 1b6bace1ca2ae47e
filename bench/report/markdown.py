"""The Markdown summary of a report: the same tables as the HTML, figures by relative path.

Every piece of text from a run goes through `md` (bench.columns.md_text): `|` or line breaks
would break a table, `<`/`&` would be HTML, and `[..](..)`/`![..](..)` in a model name or config
description would be a link or an image pointing anywhere.
"""
from __future__ import annotations

from bench.columns import CI_NOTE, md_text
from bench.report.plots import Plot
from bench.report.tables import SUB, Document, Table


def md(text: object) -> str:
    """Text safe inside a Markdown table cell or paragraph (bench.columns.md_text: no HTML,
    links, images, code or table breaks from run text)."""
    return md_text(text)


def render_table(t: Table, heading: bool = True) -> str:
    title = [f"### {md(t.title)}", ""] if heading else []
    if not t.rows:
        return "\n".join([*title, "(none)"]) + "\n"
    align = ["--:" if j in t.numeric else "---" for j in range(len(t.columns))]
    lines = [
        *title,
        "| " + " | ".join(md(c) or " " for c in t.columns) + " |",
        "|" + "|".join(align) + "|",
    ]
    for i, row in enumerate(t.rows):
        cells = [md(v) for v in row]
        if i in t.flagged and cells:
            cells[0] = f"**{cells[0]}**" if cells[0] else cells[0]
        if i in t.details and cells:
            cells[-1] = f"{cells[-1]}: {md(t.details[i])}"
        lines.append("| " + " | ".join(cells) + " |")
    if t.note:
        lines += ["", md(t.note)]
    return "\n".join(lines) + "\n"


def render_figure(p: Plot) -> list[str]:
    return [f"### {md(p.title)}", "", f"![{md(p.title)}]({p.file})", "", md(p.caption), ""]


def render_markdown(doc: Document) -> str:
    data, plots, summary, title, sections = (
        doc.data, doc.plots, doc.summary, doc.title, doc.sections
    )
    cells, runs, details, generated = doc.cells, doc.runs, doc.details, doc.generated
    out = [f"# {md(title)}", ""]
    if data.estimated:
        out += [("> **ESTIMATED ENERGY:** no energy meter could be read for some or all runs; "
                 "their joules are estimated from CPU time × a per-core power figure and are "
                 "not measurements."), ""]
    if data.mixed_machines:
        out += [(f"> **DIFFERENT MACHINES:** these runs come from {len(data.machines)} "
                 "machines; differences between them measure the machines."), ""]
    out += ["## Summary", ""]
    out += [f"  - {md(s.removeprefix(SUB))}" if s.startswith(SUB) else f"- {md(s)}"
            for s in summary] + [""]
    out += [md(f"{CI_NOTE}; TTFT in ms everywhere."), ""]
    if doc.headline is not None:
        out += render_figure(doc.headline)
    out += [render_table(runs)]
    if doc.comparisons:
        out += ["## Comparison", ""] + [render_table(t) for t in doc.comparisons]
    out += ["## Per-cell results", "", render_table(cells, heading=False)]
    placed = {sec.plot_kind for sec in sections}
    for sec in sections:
        out += [f"## {md(sec.title)}", ""]
        for text in sec.intro:
            out += [md(text), ""]
        out += [render_table(t) for t in sec.tables]
        for p in plots:
            if p.kind == sec.plot_kind:
                out += render_figure(p)
    out += ["## Figures", ""]
    rest = [p for p in plots if p.kind not in placed]
    if not rest:
        out += ["No cell has results to plot.", ""]
    for p in rest:
        out += render_figure(p)
    out += ["## Machine and software", ""]
    for t in details:
        out += [render_table(t)]
    out += [f"_{md(generated)}_", ""]
    return "\n".join(out)
