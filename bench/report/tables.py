"""The report's tables as plain text cells, shared by the HTML and Markdown renderers.

Owns what each table says (per-cell numbers with confidence intervals, runs, machines, software,
models, meters); the renderers own escaping and layout. Every cell here is unescaped text.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.columns import cell_label
from bench.report.data import (
    CHARS_PER_S,
    DECODE,
    J_FLOOR_RATIO,
    J_PER_KCHAR,
    J_PER_TOKEN,
    LIMITS,
    METRICS,
    PREFILL,
    TTFT,
    CellSummary,
    Metric,
    ReportData,
    fmt_ci,
    fmt_num,
    ranked,
)

if TYPE_CHECKING:
    from bench.report.data import ReportData
    from bench.report.plots import Plot


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)  # column indices to right-align
    note: str = ""
    flagged: set[int] = field(default_factory=set)  # row indices to highlight
    # Long text for a row (a failed cell's error): HTML shows it in a full-width row below,
    # Markdown appends it to the row's last cell.
    details: dict[int, str] = field(default_factory=dict)
    compact: bool = False  # a small grid of numbers: as wide as its content, not the page


SUB = "\t"  # a summary line that starts with it is a sub-item of the line before

# The engine settings shown in the settings column (labels from bench.columns.cell_label).
_SETTING_KEYS = ["n_threads", "n_gpu_layers", "n_ctx", "n_batch", "n_ubatch", "flash_attn"]
_WORKLOAD_KEYS = ["prompt_tokens", "prompt_id", "gen_tokens"]


def _settings(p: dict[str, Any], keys: list[str] | None = None) -> str:
    text = cell_label(p, _SETTING_KEYS if keys is None else keys)
    return "" if text == "?" else text


def _workload(p: dict[str, Any]) -> str:
    text = cell_label(p, _WORKLOAD_KEYS)
    return "" if text == "?" else text


def _status(c: CellSummary) -> tuple[str, str]:
    """(short status, the error to show with it or "")."""
    if not c.ok:
        err = c.error or ("no successful trials" if c.status == "ok" else f"status {c.status}")
        if c.samples:  # failed part-way: its measured trials are kept, and said to be partial
            err += f" ({len(c.samples)} trial(s) measured before it failed, not summarised)"
        return "FAILED", err
    if c.failed_trials:
        return f"ok, {c.failed_trials} trial(s) failed", c.error or "error"
    return "ok", ""


def cell_table(data: ReportData) -> Table:
    estimated = data.estimated
    # Engine settings every cell shares go into the note, so the table stays narrow.
    setting_keys = _SETTING_KEYS
    varying = [k for k in setting_keys
               if len({repr(c.params.get(k)) for c in data.cells}) > 1]
    shared = _settings(data.cells[0].params, [k for k in setting_keys if k not in varying]) \
        if data.cells else ""
    langs = any(c.lang for c in data.cells)
    any_flags = any(c.flags for c in data.cells)
    # How near the machine's limits (bench.roofline), where some cell has a bound.
    limits = [m for m in LIMITS if any(m.name in c.stats for c in data.cells)]
    cols = (["run"] if data.multi_run else []) + [
        "cell", "model", "quant", "backend", *(["settings"] if varying else []), "workload",
        *(["language"] if langs else []), "n",
        "prefill t/s", "decode t/s", "TTFT ms", "J/token" + (" (ESTIMATED)" if estimated else ""),
        *(_LIMIT_HEADERS[m.name] for m in limits),
        "status", *(["flags"] if any_flags else []),
    ]
    first_num = cols.index("n")
    rows, flagged, details = [], set(), {}
    for i, c in enumerate(data.cells):
        p = c.params
        status, error = _status(c)
        if error:
            details[i] = error
        jpt = fmt_ci(c.stats.get("j_per_token")) if "j_per_token" in c.stats else "–"
        if "j_per_token" in c.stats and c.energy_method in ("estimate", "mixed"):
            jpt += " (est.)" if c.estimated else " (mixed)"
        row = ([c.run.tag] if data.multi_run else []) + [
            c.cell_id + (" ★" if c.pareto else ""), str(p.get("model") or ""),
            str(p.get("quant") or ""), str(p.get("backend") or ""),
            *([_settings(p, varying)] if varying else []), _workload(p),
            *([c.lang or ""] if langs else []), str(len(c.samples)),
            *(fmt_ci(c.stats.get(m.name)) for m in METRICS[:3]), jpt,
            *(_limit(c, m) for m in limits), status,
            *([c.flag_text] if any_flags else []),
        ]
        rows.append(row)
        if not c.ok or c.flags:
            flagged.add(i)
    note = ("Mean ± half width of the 95% confidence interval (Student's t) over non-warm-up "
            "trials; n = trials summarised. ★ = on the speed/energy Pareto front.")
    if any_flags:
        note += (" flags: what the run recorded about a cell's conditions (noisy = decode t/s "
                 "varied beyond the CV limit; background load during the idle baseline; "
                 "throttled; on battery): highlighted, read its numbers with care.")
    if shared:
        note += f" Settings shared by every cell: {shared}."
    if estimated:
        note += (" J/token marked (est.) is ESTIMATED from CPU time × a per-core power figure "
                 "(docs/energy.md), not measured.")
    if limits:
        note += (" % roofline: decode t/s as a percentage of the memory-bandwidth bound (the "
                 "run's measured bandwidth / bytes read per token: weights plus KV cache at that "
                 "depth); * marks a bound that may not hold: weights that fit in the last-level "
                 "cache, or a bandwidth derived from reported clocks rather than timed.")
        if J_FLOOR_RATIO in limits:
            note += (" × J floor: gross J/token over idle power / decode t/s, the least a "
                     "machine idling at that power could spend per token (1 = nothing but idle "
                     "power).")
    numeric = set(range(first_num, first_num + 5 + len(limits)))
    return Table("Per-cell results", cols, rows, numeric=numeric, note=note, flagged=flagged,
                 details=details)


_LIMIT_HEADERS = {"roofline_pct": "% roofline", "j_floor_ratio": "× J floor"}


def _limit(c: CellSummary, m: Metric) -> str:
    s = c.stats.get(m.name)
    if s is None:
        return "–"
    if m.name == "roofline_pct":
        notes = " ".join(str(r.get("roofline_note") or "") for r in c.samples)
        caveat = "may not hold" in notes or "not timed" in notes
        return f"{s.mean:.0f}%" + ("*" if caveat else "")
    text = f"{s.mean:.2f}"
    if c.energy_method in ("estimate", "mixed"):  # as the J/token column marks it
        text += " (est.)" if c.estimated else " (mixed)"
    return text


def runs_table(data: ReportData) -> Table:
    values = []
    for r in data.runs:
        m = r.manifest
        methods = sorted(r.energy_methods)
        energy = ", ".join(methods) if methods else "not measured"
        if "estimate" in methods:
            energy = energy.replace("estimate", "ESTIMATE (not measured)")
        status = str(m.get("status") or ("finished" if m.get("finished_utc") else "?"))
        values.append({
            "run id": r.run_id,
            "config": r.config_name,
            "description": r.description,
            "started (UTC)": str(m.get("started_utc") or ""),
            "finished (UTC)": str(m.get("finished_utc") or ""),
            "status": status,
            "machine": r.machine_label,
            "machine id": r.machine_id,
            "energy": energy,
            "memory bandwidth": _bandwidth(m),
            "cells": str(len(m.get("cells") or [])),
            "validity": "; ".join(f.text for f in r.flags) or "no flags",
        })
    note = ""
    if data.mixed_machines:
        note = (f"These runs come from {len(data.machines)} different machines (highlighted "
                "rows differ): compare their numbers as machines, not as changes.")
    t = _by_run("Runs", data, values, note)
    # Run ids and times always differ; only what makes runs incomparable is highlighted.
    keep = {"machine", "machine id", "energy", "config", "validity"}
    t.flagged = {i for i in t.flagged if t.rows[i][0] in keep}
    t.flagged |= {i for i, row in enumerate(t.rows)
                  if row[0] == "validity" and any(v != "no flags" for v in row[1:])}
    return t


def _bandwidth(manifest: dict[str, Any]) -> str:
    """The bandwidth the run's % roofline divides by, with how it was obtained."""
    bw = manifest.get("roofline") or {}
    parts = [
        f"{mem.upper()} {b['bytes_per_s'] / 1e9:.1f} GB/s "
        f"({b.get('method') or 'method not recorded'})"
        for mem in ("cpu", "gpu") if isinstance(b := bw.get(mem), dict) and b.get("bytes_per_s")
    ]
    return "; ".join(parts) or "not measured"


def _gb(v: Any) -> str:
    return f"{v / 1e9:.1f} GB" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""


def _plain(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else ""
    if isinstance(v, list):
        return ", ".join(_plain(x.get("name", x) if isinstance(x, dict) else x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}={_plain(x)}" for k, x in v.items())
    return str(v)


def _by_run(title: str, data: ReportData, values: list[dict[str, str]], note: str = "") -> Table:
    """Keys as rows, one column per run; rows whose values differ between runs are flagged."""
    keys: list[str] = []
    for v in values:
        for k in v:
            if k not in keys:
                keys.append(k)
    cols = ["", *(r.tag if data.multi_run else "value" for r in data.runs)]
    rows, flagged = [], set()
    for i, k in enumerate(keys):
        cells = [v.get(k, "") for v in values]
        rows.append([k, *cells])
        if len(set(cells)) > 1:
            flagged.add(i)
    return Table(title, cols, rows, note=note, flagged=flagged)


def machine_table(data: ReportData) -> Table:
    values = []
    for r in data.runs:
        m = r.machine
        v = {
            "CPU": _plain(m.get("cpu_model")),
            "cores (physical / logical)":
                f"{_plain(m.get('cpu_cores_physical'))} / {_plain(m.get('cpu_cores_logical'))}",
            "RAM": _gb(m.get("ram_bytes")),
            "GPUs": _plain(m.get("gpus")) or "none",
            "OS": _plain(m.get("os")),
            "kernel": _plain(m.get("kernel")),
            "architecture": _plain(m.get("arch")),
            "hostname": _plain(m.get("hostname")),
            "CPU governor": _plain(m.get("cpu_governor", m.get("governor"))),
            "virtualized": _plain(m.get("virtualized")),
            "machine id": _plain(m.get("id")),
        }
        shown = {"cpu_model", "cpu_cores_physical", "cpu_cores_logical", "ram_bytes", "gpus",
                 "os", "kernel", "arch", "hostname", "cpu_governor", "governor", "virtualized",
                 "id"}
        v.update({k: _plain(x) for k, x in m.items() if k not in shown})
        values.append(v)
    note = "Rows that differ between runs are highlighted." if data.multi_run else ""
    return _by_run("Machine", data, values, note)


def software_table(data: ReportData) -> Table:
    values = [{k: _plain(v) for k, v in (r.manifest.get("software") or {}).items()}
              for r in data.runs]
    return _by_run("Software", data, values)


def models_table(data: ReportData) -> Table:
    cols = (["run"] if data.multi_run else []) + [
        "model", "quant", "name (GGUF)", "architecture", "parameters", "bits/weight", "file size",
        "sha256", "description",
    ]
    rows = []
    for r in data.runs:
        for key, m in (r.manifest.get("models") or {}).items():
            if not isinstance(m, dict):
                continue
            n = m.get("n_params")
            params = f"{n / 1e6:,.0f} M" if isinstance(n, (int, float)) and n else ""
            sha = str(m.get("sha256") or "")
            rows.append(([r.tag] if data.multi_run else []) + [
                str(m.get("id") or key), _plain(m.get("quant") or m.get("quant_type")),
                _plain(m.get("name")), _plain(m.get("architecture")), params,
                _plain(m.get("bits_per_weight")), _gb(m.get("size_bytes")),
                sha[:12] + ("…" if len(sha) > 12 else ""), _plain(m.get("description")),
            ])
    return Table("Models", cols, rows)


def meters_table(data: ReportData) -> Table:
    cols = (["run"] if data.multi_run else []) + ["meter", "available", "domains",
                                                  "idle W", "reason / fix"]
    rows = []
    for r in data.runs:
        m = r.manifest
        idle = (m.get("idle") or {}).get("watts") or {}
        domains = m.get("domains") or []
        for meter in m.get("meters") or []:
            name = str(meter.get("name"))
            doms = [d for d in domains if d.get("meter") == name]
            dtext = "; ".join(
                f"{d.get('name')} ({d.get('method')}, {d.get('boundary')}"
                + ("" if d.get("component") else ", not summed") + ")" for d in doms
            )
            itext = ", ".join(
                f"{d.get('name')} {idle[d.get('name')]:.2f}" for d in doms
                if isinstance(idle.get(d.get("name")), (int, float))
            )
            reason = str(meter.get("reason") or "")
            if meter.get("fix"):
                reason += f" Fix: {meter['fix']}"
            available = "yes" if meter.get("available") else "no"
            if meter.get("available") and name == "estimate":
                available = "yes (ESTIMATE, not a measurement)"
            rows.append(([r.tag] if data.multi_run else []) + [
                name, available, dtext, itext, reason.strip(),
            ])
    return Table("Energy meters", cols, rows)


def detail_tables(data: ReportData) -> list[Table]:
    return [machine_table(data), software_table(data), models_table(data), meters_table(data)]


def _best(data: ReportData, metric: Metric) -> tuple[CellSummary | None, list[CellSummary]]:
    return ranked(data.ok_cells, metric)


def _winner(data: ReportData, metric: Metric, word: str, unit: str) -> str | None:
    """"Fastest decode: 72.9 ± 4.6 tokens/s, c003 (t=4)." or, when intervals overlap,
    "Fastest decode: tied between c003 (t=4) 72.9 ± 4.6 and c002 (t=2) 70.1 ± 3.0 tokens/s"."""
    best, tied = _best(data, metric)
    if best is None:
        return None
    if not tied:
        return f"{word}: {fmt_ci(best.stats[metric.name])} {unit}, {_name(data, best)}."
    shown = [best, *tied[:3]]
    more = f" and {len(tied) - 3} more" if len(tied) > 3 else ""
    return (f"{word}: tied (95% intervals overlap) between "
            + ", ".join(f"{_name(data, c)} {fmt_ci(c.stats[metric.name])}" for c in shown)
            + f"{more} {unit}.")


def _name(data: ReportData, c: CellSummary) -> str:
    # The label names what varies; the per-cell table has the rest.
    label = data.label(c).removeprefix(f"{c.run.tag} ")
    tag = f"{c.run.tag} " if data.multi_run else ""
    return f"{tag}{c.cell_id}" + (f" ({label})" if label != c.cell_id else "")


def summary_lines(data: ReportData) -> list[str]:
    """The headline facts in a few sentences, the same in HTML and Markdown."""
    n_ok, n_failed = len(data.ok_cells), len(data.failed_cells)
    runs = f"{len(data.runs)} runs" if data.multi_run else "1 run"
    lines = [f"{runs}, {len(data.cells)} cells: {n_ok} with results"
             + (f", {n_failed} FAILED (their errors are in the table)" if n_failed else "") + "."]
    if data.mixed_machines:
        lines.append(f"The runs come from {len(data.machines)} different machines: "
                     + "; ".join(f"{', '.join(r.tag for r in rs)} on {rs[0].machine_label}"
                                 for rs in data.machines.values()) + ".")
    for metric, word in ((DECODE, "Fastest decode"), (PREFILL, "Fastest prefill"),
                         (TTFT, "Shortest time to first token")):
        line = _winner(data, metric, word, metric.display_unit)
        if line:
            lines.append(line)
    c, _ = _best(data, J_PER_TOKEN)
    if c:
        est = " (ESTIMATED)" if c.estimated else ""
        line = _winner(data, J_PER_TOKEN, "Least decode energy", f"J/token{est}")
        if line:
            lines.append(line)
        front = sorted((x for x in data.ok_cells if x.pareto),
                       key=lambda x: x.stats[J_PER_TOKEN.name].mean)
        if front:
            lines.append("Speed/energy Pareto front: " + ", ".join(
                f"{(x.run.tag + ' ') if data.multi_run else ''}{x.cell_id} "
                f"({fmt_num(x.stats[DECODE.name].mean)} t/s at "
                f"{fmt_num(x.stats[J_PER_TOKEN.name].mean)} J/token)" for x in front) + ".")
    # Sub-items (one per language) start with SUB; the renderers nest them.
    lines += language_summary(data)
    lines += ladder_summary(data)
    if data.estimated:
        lines.append("Energy figures are ESTIMATED from CPU time × a per-core power figure "
                     "(no energy meter could be read): they are not measurements.")
    elif not data.has_energy:
        lines.append("Energy was not measured (no meter).")
    return lines


# --------------------------------------------------------------------------------------------
# Languages and quantization ladders: sections of their own, shown only when the data has them


@dataclass
class Section:
    """A report section beyond the standard ones: its tables, and the figures of `plot_kind`
    (the renderers put those figures here instead of under Figures)."""

    anchor: str
    title: str
    intro: list[str]
    tables: list[Table]
    plot_kind: str


@dataclass
class Document:
    """Everything a renderer lays out: one value, so HTML and Markdown take the same input."""

    data: ReportData
    plots: list[Plot]
    summary: list[str]
    cells: Table
    runs: Table
    details: list[Table]
    title: str
    generated: str
    sections: Sequence[Section] = ()
    comparisons: Sequence[Table] = ()  # one per candidate run whose cells match R1's
    headline: Plot | None = None  # the figure on top


def _size(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v / 1e9:.2f} GB" if v >= 1e9 else f"{v / 1e6:.1f} MB"


def _energy_cell(stats: dict[str, Any], key: str, method: str) -> str:
    if key not in stats:
        return "–"
    text = fmt_ci(stats[key])
    if method in ("estimate", "mixed"):
        text += " (est.)" if method == "estimate" else " (mixed)"
    return text


def _ratio(r: float) -> str:
    return f"{r:.1f}×" if r < 10 else f"{r:.0f}×"


def language_tables(data: ReportData) -> list[Table]:
    langs = data.languages
    if langs is None:
        return []
    est = langs.estimated
    cheapest = {lang: langs.cheapest(lang) for lang in langs.langs}
    bpb = langs.has_quality
    cols = ["language", "model", "n", "decode chars/s",
            "J/kchar" + (" (ESTIMATED)" if est else ""), "decode t/s",
            "J/token" + (" (ESTIMATED)" if est else ""), *(["bits/byte"] if bpb else [])]
    rows = []
    for lang in langs.langs:
        for r in langs.in_lang(lang):
            best = cheapest[lang]
            mark = " ★" if best is not None and best.best is r and best.runner_up else ""
            rows.append([
                lang, r.series + mark, str(r.n), fmt_ci(r.stats.get(CHARS_PER_S.name)),
                _energy_cell(r.stats, J_PER_KCHAR.name, r.energy_method),
                fmt_ci(r.stats.get(DECODE.name)),
                _energy_cell(r.stats, J_PER_TOKEN.name, r.energy_method),
                *([fmt_num(r.quality.get("bits_per_byte"))] if bpb else []),
            ])
    what = "least decode energy per character" if langs.has_energy else "fastest in chars/s"
    note = ("Per language and model, pooled over the language's prompts: mean ± 95% CI over "
            "non-warm-up successful trials; n = trials. Characters are the decode phase's "
            "(the generated text after the first token), counted as Unicode code points; "
            f"J/kchar is decode energy per 1000 of them. ★ = {what} in the language. Tokens "
            "are not comparable across tokenizers; characters are."
            + (" bits/byte is from the language's held-out text (quality.parquet)." if bpb
               else ""))
    if est:
        note += " Energy marked (est.) is ESTIMATED from CPU time, not measured."
    out = [Table("Speed and energy per language", cols, rows,
                 numeric=set(range(2, len(cols))), note=note)]

    def wide(title: str, key: str, where: str, note: str, fmt: Any = fmt_num) -> Table | None:
        series = [s for s in langs.series
                  if any(key in getattr(r, where) for r in langs.rows.values()
                         if r.series == s)]
        if not series:
            return None
        body = []
        for lang in langs.langs:
            vals = []
            for s in series:
                r = langs.get(lang, s)
                vals.append(fmt(getattr(r, where).get(key)) if r else "–")
            body.append([lang, *vals])
        return Table(title, ["language", *series], body,
                     numeric=set(range(1, len(series) + 1)), note=note, compact=True)

    fert = []
    for key, unit in (("tokens_per_char", "tokens per character"),
                      ("tokens_per_word", "tokens per word")):
        t = wide(f"Tokenizer fertility: prompt {unit}", key, "fertility",
                 f"Prompt tokens per {unit.split()[-1]} of the language's prompts (mean over "
                 "prompts): how many tokens each model's tokenizer spends on the same text. "
                 "Higher means more tokens, so more decode steps, for the same text.")
        if t:
            fert.append(t)
    if len(fert) == 2:  # one table: the char and word columns side by side
        a, b = fert
        n = len(a.columns) - 1
        cols = (["language"] + [f"{c} tokens/char" for c in a.columns[1:]]
                + [f"{c} tokens/word" for c in b.columns[1:]])
        body = [ra + rb[1:] for ra, rb in zip(a.rows, b.rows, strict=True)]
        fert = [Table("Tokenizer fertility", cols, body, numeric=set(range(1, 2 * n + 1)),
                      note="Prompt tokens per character and per word (Unicode code points; "
                      "words as bench.workload.text counts them) of the language's prompts, "
                      "mean over prompts: what each tokenizer spends on the same text. More "
                      "tokens per character means more decode steps for the same text.",
                      compact=True)]
    out += fert
    t = wide("Bits per byte on held-out text", "bits_per_byte", "quality",
             "−log₂ p of the language's held-out text per UTF-8 byte (quality.parquet; "
             "docs/quality.md): independent of the tokenizer, so comparable across models and "
             "languages. Lower is better.")
    if t:
        out.append(t)
    return out


def ladder_tables(data: ReportData) -> list[Table]:
    out = []
    for lad in data.ladders:
        est = lad.estimated
        cols = ["level", "file size", "bits/weight",
                "KL vs " + (lad.reference or "reference") + " (nats)", "max KL", "top-1 agree",
                "perplexity", "bits/byte", "n", "decode t/s",
                "J/token" + (" (ESTIMATED)" if est else ""), "Pareto front"]
        rows = []
        for lv in lad.levels:
            q = lv.quality
            fronts = [w for w, on in (("energy", lv.front_energy), ("speed", lv.front_speed))
                      if on]
            rows.append([
                lv.quant + (" (reference)" if lv.is_reference else ""), _size(lv.size_bytes),
                fmt_num(lv.bits_per_weight), _kl(q.get("kl_div")), _kl(q.get("kl_div_max")),
                fmt_num(q.get("top1_agree")), fmt_num(q.get("perplexity")),
                fmt_num(q.get("bits_per_byte")), str(lv.n) if lv.stats else "–",
                fmt_ci(lv.stats.get(DECODE.name)),
                _energy_cell(lv.stats, J_PER_TOKEN.name, lv.energy_method),
                ", ".join(fronts) or ("–" if lv.stats else "not timed"),
            ])
        key = lad.quality_key
        by = {"kl_div": "KL divergence", "perplexity": "perplexity"}.get(key or "", "")
        note = ("One row per quantization level, from the most bits per weight down. KL is the "
                "mean over scored tokens of KL(reference ‖ level) in nats; top-1 agree the "
                "share of tokens where both pick the same most likely token (docs/quality.md). "
                "Speed and energy: mean ± 95% CI over the level's non-warm-up trials; n = "
                "trials.")
        if by:
            note += (f" Pareto front: energy = no other level has both lower {by} and lower "
                     f"J/token; speed = none has both lower {by} and higher decode t/s.")
        else:
            note += " No quality was measured for this model (add `quality:` to the config)."
        if est:
            note += " Energy marked (est.) is ESTIMATED from CPU time, not measured."
        title = f"Quantization ladder: {lad.label}"
        if lad.reference:
            title += f" (reference {lad.reference})"
        out.append(Table(title, cols, rows, numeric=set(range(1, 11)), note=note))
    return out


def _kl(v: float | None) -> str:
    if v is None:
        return "–"
    return "0" if v == 0 else fmt_num(v)


def language_summary(data: ReportData) -> list[str]:
    langs = data.languages
    if langs is None:
        return []
    lines = []
    if langs.has_energy:
        est = ", ESTIMATED" if langs.estimated else ""
        lines.append("Cheapest model per character, by language (decode J per 1000 "
                     f"characters{est}; ★ in the language table):")
    else:
        lines.append("Energy was not measured; the fastest model in decode characters per "
                     "second, by language:")
    for lang in langs.langs:
        c = langs.cheapest(lang)
        if c is None:
            continue
        m = c.metric
        unit = "J/kchar" if m == J_PER_KCHAR.name else "chars/s"
        bpb = [r.quality.get("bits_per_byte") for r in (c.best, c.runner_up) if r is not None]
        if c.runner_up is None:
            text = (f"{lang}: only {c.best.series} was measured "
                    f"({fmt_num(c.best.stats[m].mean)} {unit}"
                    + (f"; bits per byte {fmt_num(bpb[0])}" if bpb[0] is not None else "")
                    + ").")
            lines.append(SUB + text)
            continue
        ratio = c.ratio
        other = c.runner_up.series
        # (verb, "<ratio> ..." phrase, "about as ..." phrase) for the metric compared.
        verb, more, same = (
            ("costs", "less energy per character than", "much energy per character as")
            if m == J_PER_KCHAR.name
            else ("decodes", "more characters per second than", "many characters per second as")
        )
        if ratio is not None and ratio >= 1.05:
            head = f"{lang}: {c.best.series} {verb} {_ratio(ratio)} {more} {other}"
        else:
            head = f"{lang}: {c.best.series} {verb} about as {same} {other}"
        if c.n_series > 2:
            head += f", the next of {c.n_series}"
        vals = f"{fmt_num(c.best.stats[m].mean)} vs {fmt_num(c.runner_up.stats[m].mean)} {unit}"
        if all(b is not None for b in bpb):
            vals += f"; bits per byte {fmt_num(bpb[0])} vs {fmt_num(bpb[1])}"
        tail = "" if c.clear else " The 95% intervals overlap: not a clear difference."
        lines.append(f"{SUB}{head} ({vals}).{tail}")
    return lines


def ladder_summary(data: ReportData) -> list[str]:
    lines = []
    for lad in data.ladders:
        key = lad.quality_key
        head = f"Quantization ladder of {lad.label}"
        if key is None:
            lines.append(f"{head}: {len(lad.levels)} levels, no quality measured (see its "
                         "table).")
            continue
        unit = " nats" if key == "kl_div" else ""
        name = "KL" if key == "kl_div" else "perplexity"
        if key == "kl_div" and lad.reference:
            head += f" (KL against {lad.reference})"
        front = sorted((lv for lv in lad.levels if lv.front_energy),
                       key=lambda lv: lv.stats["j_per_token"].mean)
        if front:
            est = " (ESTIMATED)" if lad.estimated else ""
            lines.append(
                f"{head}: the levels no other beats on both {name} and J/token{est}: "
                + ", ".join(f"{lv.quant} ({name} {_kl(lv.quality[key])}{unit}, "
                            f"{fmt_num(lv.stats['j_per_token'].mean)} J/token)"
                            for lv in front) + ".")
        else:
            worst = max((lv for lv in lad.levels if key in lv.quality),
                        key=lambda lv: lv.quality[key])
            lines.append(f"{head}: {len(lad.levels)} levels; the largest {name} is "
                         f"{worst.quant}'s, {_kl(worst.quality[key])}{unit}.")
    return lines


def extra_sections(data: ReportData) -> list[Section]:
    out = []
    tables = language_tables(data)
    if tables:
        langs = data.languages
        assert langs is not None
        out.append(Section(
            "languages", "Languages",
            [(f"{len(langs.langs)} languages ({', '.join(langs.langs)}) × "
              f"{len(langs.series)} models. Tokenizers split languages very differently, so "
              "this section counts characters: decode characters per second and decode joules "
              "per 1000 characters compare models fairly where tokens/s and J/token do not.")],
            tables, "language"))
    tables = ladder_tables(data)
    if tables:
        out.append(Section(
            "quantization", "Quantization",
            [("What each quantization level costs in quality (KL divergence from the reference's "
              "next-token distribution, perplexity) against what it saves in energy and gains in "
              "speed. Lower KL is better; a level on the Pareto front is one that no other level "
              "beats on both quality and cost.")],
            tables, "quant"))
    return out
