"""The self-contained HTML report: inline CSS, PNGs embedded as base64 data URIs, no scripts and
no external assets, so it opens offline and can be mailed or attached as one file.

Owns the page layout and HTML escaping: every piece of text that came from a run (model names,
GGUF metadata, config descriptions, errors) goes through `html.escape`.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

from bench.columns import CI_NOTE
from bench.report.plots import Plot
from bench.report.tables import SUB, Document, Table

CSS = """
:root { --fg: #1d232a; --muted: #5b6570; --line: #d8dde3; --zebra: #f5f7f9;
        --warn-bg: #fff4d6; --warn-line: #e0a800; --err-bg: #fde8e8; --err-line: #c62828; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
             sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 1.6rem; margin: 0 0 4px; }
h2 { font-size: 1.25rem; margin: 36px 0 10px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 24px 0 8px; }
.sub { color: var(--muted); margin: 0 0 16px; overflow-wrap: anywhere; }
.callout { border-left: 5px solid var(--warn-line); background: var(--warn-bg);
           padding: 10px 14px; margin: 12px 0; border-radius: 4px; }
.callout.err { border-color: var(--err-line); background: var(--err-bg); }
.callout strong { letter-spacing: .02em; }
ul.summary { padding-left: 1.2em; margin: 8px 0; }
ul.summary li { margin: 3px 0; }
ul.summary ul { padding-left: 1.3em; margin: 2px 0; }
.scroll { overflow-x: auto; margin: 8px 0 4px; border: 1px solid var(--line); border-radius: 4px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 5px 8px; text-align: left; vertical-align: top; border-bottom: 1px solid
         var(--line); white-space: nowrap; }
th { background: #eef1f4; font-weight: 600; white-space: nowrap; position: sticky; top: 0; }
tbody tr:nth-child(even) td { background: var(--zebra); }
.scroll.compact { display: inline-block; max-width: 100%; vertical-align: top; }
.scroll.compact table { width: auto; }
th.num { text-align: right; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.key { font-weight: 600; white-space: nowrap; }
tr.flag td { background: var(--err-bg) !important; }
tr.flag td.key, tr.flag td:first-child { box-shadow: inset 3px 0 0 var(--err-line); }
tr.detail td { white-space: normal; overflow-wrap: anywhere; padding-left: 2.2em;
               color: var(--err-line); }
td.long { white-space: normal; min-width: 14em; max-width: 34em; overflow-wrap: anywhere; }
p.note { color: var(--muted); font-size: 13px; margin: 4px 0 0; }
figure { margin: 20px 0 28px; }
figure img { display: block; width: 100%; max-width: 1100px; height: auto;
             border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 6px; max-width: 1100px; }
nav.toc { font-size: 14px; margin: 8px 0 0; display: flex; flex-wrap: wrap; gap: 4px 14px; }
nav.toc a { white-space: nowrap; }
/* A phone: the page never scrolls sideways; wide tables scroll inside their own box. */
@media (max-width: 600px) { main { padding: 14px 12px 32px; } h1 { font-size: 1.3rem; } }
footer { color: var(--muted); font-size: 12.5px; margin-top: 40px; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 90%; }
"""

# Columns whose text can be long (errors, descriptions, reasons): allowed to wrap anywhere.
_LONG = {"status", "description", "reason / fix", "domains", "run id", "machine"}


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_table(t: Table, anchor: str = "", heading: bool = True) -> str:
    ident = f' id="{esc(anchor)}"' if anchor else ""
    num = ' class="num"'
    head = "".join(f"<th{num if j in t.numeric else ''}>{esc(c)}</th>"
                   for j, c in enumerate(t.columns))
    body = []
    for i, row in enumerate(t.rows):
        cells = []
        for j, v in enumerate(row):
            cls = []
            if j in t.numeric:
                cls.append("num")
            if t.columns[j] == "" and j == 0:
                cls.append("key")
            if t.columns[j] in _LONG:
                cls.append("long")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{attr}>{esc(v)}</td>")
        flag = ' class="flag"' if i in t.flagged else ""
        body.append(f"<tr{flag}>{''.join(cells)}</tr>")
        if i in t.details:
            body.append(f'<tr class="detail{" flag" if i in t.flagged else ""}">'
                        f'<td colspan="{len(t.columns)}">↳ {esc(t.details[i])}</td></tr>')
    note = f'<p class="note">{esc(t.note)}</p>' if t.note else ""
    title = f"<h3{ident}>{esc(t.title)}</h3>\n" if heading else ""
    scroll = "scroll compact" if t.compact else "scroll"
    return (f"{title}<div class=\"{scroll}\"><table><thead><tr>{head}"
            f"</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table></div>" + note)


def render_figure(p: Plot, folder: Path) -> str:
    return (f'<figure id="{esc(p.file.removesuffix(".png"))}"><h3>{esc(p.title)}</h3>'
            f'<img src="{data_uri(folder / p.file)}" alt="{esc(p.title)}" '
            f'data-file="{esc(p.file)}"><figcaption>{esc(p.caption)}</figcaption></figure>')


def render_summary(summary: list[str]) -> str:
    """The summary's lines as a list; a line that starts with SUB nests under the one before."""
    items: list[tuple[str, list[str]]] = []
    for line in summary:
        if line.startswith(SUB) and items:
            items[-1][1].append(line.removeprefix(SUB))
        else:
            items.append((line.removeprefix(SUB), []))
    out = []
    for text, subs in items:
        inner = ("<ul>" + "".join(f"<li>{esc(x)}</li>" for x in subs) + "</ul>") if subs else ""
        out.append(f"<li>{esc(text)}{inner}</li>")
    return '<ul class="summary">' + "".join(out) + "</ul>"


def render_html(doc: Document, folder: Path) -> str:
    data, plots, summary, title, sections = (
        doc.data, doc.plots, doc.summary, doc.title, doc.sections
    )
    cells, runs, details, generated = doc.cells, doc.runs, doc.details, doc.generated
    parts: list[str] = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # Nothing may load from elsewhere: the report is one file that opens offline.
        ("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
         "img-src data:; style-src 'unsafe-inline'\">"),
        f"<title>{esc(title)}</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="sub">{esc(", ".join(r.run_id for r in data.runs))}</p>',
    ]
    if data.estimated:
        parts.append(
            '<div class="callout"><strong>ESTIMATED ENERGY.</strong> No energy meter could be '
            "read for some or all runs, so their joules are estimated from CPU time × a per-core "
            "power figure (docs/energy.md). They are labelled “estimated” in every plot and "
            "table and must not be read as measurements.</div>"
        )
    if data.mixed_machines:
        parts.append(
            f'<div class="callout"><strong>DIFFERENT MACHINES.</strong> These runs come from '
            f"{len(data.machines)} machines: "
            + esc("; ".join(f"{', '.join(r.tag for r in rs)}: {rs[0].machine_label}"
                            for rs in data.machines.values()))
            + ". Differences between them measure the machines.</div>"
        )
    if data.failed_cells:
        parts.append(
            f'<div class="callout err"><strong>{len(data.failed_cells)} FAILED '
            f"CELL{'S' if len(data.failed_cells) > 1 else ''}.</strong> They are listed with "
            "their errors in the per-cell table and left out of the plots.</div>"
        )
    toc = [("summary", "Summary"), *([("comparison", "Comparison")] if doc.comparisons else []),
           ("cells", "Per-cell results"),
           *((sec.anchor, sec.title) for sec in sections), ("figures", "Figures"),
           ("machine", "Machine and software")]
    parts.append('<nav class="toc">' + "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in toc)
                 + "</nav>")
    parts.append('<h2 id="summary">Summary</h2>' + render_summary(summary))
    parts.append(f'<p class="note">{esc(CI_NOTE)}; TTFT in ms everywhere.</p>')
    if doc.headline is not None:
        parts.append(render_figure(doc.headline, folder))
    parts.append(render_table(runs, "runs"))
    if doc.comparisons:
        parts.append('<h2 id="comparison">Comparison</h2>')
        parts += [render_table(t) for t in doc.comparisons]
    parts.append('<h2 id="cells">Per-cell results</h2>')
    parts.append(render_table(cells, heading=False))
    placed = {sec.plot_kind for sec in sections}
    for sec in sections:
        parts.append(f'<h2 id="{esc(sec.anchor)}">{esc(sec.title)}</h2>')
        parts += [f'<p>{esc(text)}</p>' for text in sec.intro]
        parts += [render_table(t) for t in sec.tables]
        parts += [render_figure(p, folder) for p in plots if p.kind == sec.plot_kind]
    parts.append('<h2 id="figures">Figures</h2>')
    rest = [p for p in plots if p.kind not in placed]
    if not rest:
        parts.append('<p class="note">No cell has results to plot.</p>')
    parts += [render_figure(p, folder) for p in rest]
    parts.append('<h2 id="machine">Machine and software</h2>')
    parts += [render_table(t) for t in details]
    parts.append(f"<footer>{esc(generated)}</footer></main></body></html>")
    return "\n".join(parts) + "\n"
