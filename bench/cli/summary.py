"""The per-cell summary `bench run` ends with: a table that fits the terminal, or Markdown,
CSV, JSON or JSON Lines on stdout (`-o`), each with mean ± 95% CI over the measured trials.

Every number of the table is formatted by `format_stat`, the one place that knows digits and
units per column.
"""
from __future__ import annotations

import csv
import io
import json
import math
import textwrap
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.cells import cell_len

CI_NOTE = "± is the 95% confidence interval of the mean over n trials (warm-ups excluded)"
FORMATS = ("md", "csv", "json", "jsonl")


@dataclass(frozen=True)
class Metric:
    key: str  # the summary's name for it
    label: str  # column header, unit included
    source: str  # the trials column it is computed from
    scale: float = 1.0  # TTFT is stored in seconds and shown in ms


METRICS = (
    Metric("prefill_tps", "prefill t/s", "prefill_tps"),
    Metric("decode_tps", "decode t/s", "decode_tps"),
    Metric("ttft_ms", "TTFT ms", "ttft_s", 1000.0),
    Metric("j_per_token", "J/token", "j_per_token"),
    Metric("overhead_decode_pct", "overhead %", "overhead_decode_pct"),
    # Decode t/s as a percentage of the memory-bandwidth bound (bench.roofline).
    Metric("roofline_pct", "% roofline", "roofline_pct"),
)


@dataclass
class Stat:
    mean: float
    ci95: float | None  # half-width; None with a single trial
    n: int


@dataclass
class CellSummary:
    cell_id: str
    model: str
    quant: str
    backend: str
    settings: str  # the swept backend settings that matter, short: "t=2 ngl=0"
    test: str  # the workload, llama-bench style: "pp128 tg64" (+ "d512", "[hi]")
    status: str
    n: int = 0
    error: str | None = None
    size_bytes: int | None = None
    n_params: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Stat] = field(default_factory=dict)

    @property
    def model_label(self) -> str:
        return self.model + (f" {self.quant}" if self.quant else "")


def format_stat(key: str, stat: Stat | None, ci: bool = True) -> str:
    """The one place a table number is formatted: mean [± CI] with the column's digits."""
    if stat is None or not math.isfinite(stat.mean):
        return "—"
    if key == "j_per_token":
        digits = 4 if abs(stat.mean) >= 0.001 else 6
    elif key == "overhead_decode_pct":
        digits, ci = 2, False  # a bound to check, not a figure to compare
    elif key == "roofline_pct":
        digits, ci = 0, False  # how near the physical limit: a whole percent says it
    else:
        digits = 1
    text = f"{stat.mean:.{digits}f}"
    if ci and stat.ci95 is not None and math.isfinite(stat.ci95):
        text += f" ± {stat.ci95:.{digits}f}"
    return text


def _model_facts(manifest: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    models = manifest.get("models") or {}
    return models.get(f"{params.get('model')}@{params.get('quant')}") or models.get(
        params.get("model"), {}
    )


def summarise(trials: list[dict[str, Any]], manifest: dict[str, Any]) -> list[CellSummary]:
    """One summary per cell of the manifest, in its order, from the measured trials."""
    from bench.stats import mean_ci

    ok: dict[str, list[dict[str, Any]]] = defaultdict(list)
    errors: dict[str, str] = {}
    for r in trials:
        if r.get("status") == "ok" and not r.get("warmup"):
            ok[r["cell_id"]].append(r)
        elif r.get("status") != "ok":
            errors.setdefault(r["cell_id"], r.get("error") or "error")
    out = []
    for entry in manifest.get("cells", []):
        cid, p = entry["cell_id"], entry["params"]
        facts = _model_facts(manifest, p)
        settings = " ".join(
            f"{short}={p[k]}" for k, short in (("n_threads", "t"), ("n_gpu_layers", "ngl"))
            if p.get(k) is not None
        )
        test = p["prompt_id"] if p.get("prompt_tokens") is None else f"pp{p['prompt_tokens']}"
        test += f" tg{p['gen_tokens']}"
        if p.get("depth"):  # context depth: cells that differ only by it stay apart
            test += f" @d{p['depth']}"
        if p.get("lang"):
            test = f"[{p['lang']}] {test}"
        rows = ok.get(cid, [])
        cell = CellSummary(
            cell_id=cid,
            model=str(p.get("model")),
            # The GGUF's own word on its file type; the file name's where it was not read.
            quant=str(facts.get("quant_type") or p.get("quant") or ""),
            backend=str(p.get("backend")),
            settings=settings,
            test=test,
            status="ok" if rows else str(entry.get("status") or "error"),
            n=len(rows),
            error=None if rows else _hint(errors.get(cid) or entry.get("error")),
            size_bytes=facts.get("size_bytes"),
            n_params=facts.get("n_params"),
            params=dict(p),
        )
        for m in METRICS:
            vals = [
                r[m.source] * m.scale for r in rows
                if isinstance(r.get(m.source), (int, float)) and math.isfinite(r[m.source])
            ]
            if vals:
                s = mean_ci(vals)
                half = s.half_width if s.n >= 2 and math.isfinite(s.half_width) else None
                cell.stats[m.key] = Stat(s.mean, half, s.n)
        out.append(cell)
    return out


def _hint(error: str | None) -> str | None:
    from bench.cli.hints import fit_install_hints

    return fit_install_hints(error) if error else error


def energy_note(trials: list[dict[str, Any]]) -> str | None:
    """What the J/token column is, where it is not a plain measurement."""
    measured = [r for r in trials if r.get("status") == "ok" and not r.get("warmup")]
    if not measured:
        return None
    methods = {r.get("energy_method") for r in measured if r.get("energy_method")}
    if "estimate" in methods:
        return ("energy is ESTIMATED from CPU time × a per-core power figure: no energy meter "
                "can be read here (see `bench doctor`)")
    if not methods:
        return "energy: not measured (no meter)"
    return None


# -- the terminal table ---------------------------------------------------------------------

@dataclass
class _Col:
    label: str
    values: list[str]
    numeric: bool
    drop_rank: int  # lower goes first when the table is too wide; 99 never goes
    min_width: int = 0

    @property
    def width(self) -> int:
        return max([cell_len(self.label)] + [cell_len(v) for v in self.values])


def _clip(text: str, width: int) -> str:
    if cell_len(text) <= width:
        return text
    out = ""
    for ch in text:
        if cell_len(out + ch) > width - 1:
            break
        out += ch
    return out + "…"


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def _pack(items: list[str], width: int) -> list[str]:
    """Items on as few lines as fit `width`, each item whole where it fits on a line."""
    lines: list[str] = []
    cur = ""
    for i, item in enumerate(items):
        sep = "" if not cur else (" " if i == 1 else " · ")
        if cur and cell_len(cur + sep + item) > width:
            lines.append(cur)
            cur = ""
            sep = ""
        if cell_len(item) > width:
            lines.extend(_wrap(item, width))
            continue
        cur += sep + item
    if cur:
        lines.append(cur)
    return lines


def render_table(cells: list[CellSummary], width: int, estimated: bool = False) -> list[str]:
    """The end table as lines no wider than `width`. When it is too wide, what every row shares
    moves to a line above, long text is abbreviated with …, then the least important number
    columns are dropped; a number is never cut."""
    cols = [
        _Col("cell", [c.cell_id for c in cells], False, 2),
        _Col("model", [c.model_label for c in cells], False, 99, 8),
        _Col("backend", [" ".join(x for x in (c.backend, c.settings) if x) for c in cells],
             False, 99, 8),
        _Col("test", [c.test for c in cells], False, 99, 8),
        _Col("n", [str(c.n) for c in cells], True, 3),
    ]
    ranks = {"prefill_tps": 6, "decode_tps": 99, "ttft_ms": 4, "j_per_token": 5,
             "overhead_decode_pct": 1, "roofline_pct": 1}
    for m in METRICS:
        if m.key == "roofline_pct" and not any(m.key in c.stats for c in cells):
            continue  # no cell has a bound (an HTTP engine, an unmeasured bandwidth)
        label = m.label + (" (est.)" if m.key == "j_per_token" and estimated else "")
        cols.append(_Col(label, [format_stat(m.key, c.stats.get(m.key)) for c in cells], True,
                         ranks[m.key]))
    above: list[str] = []

    def total(cs: list[_Col]) -> int:
        return sum(c.width for c in cs) + 2 * (len(cs) - 1)

    if total(cols) > width and len(cells) > 0:
        # What every row shares says nothing about the rows: state it once, above.
        for c in list(cols):
            if c.numeric or c.label == "cell":
                continue
            split = [v.split(" ") for v in c.values]
            common = [t for t in split[0] if t and all(t in row for row in split[1:])]
            if not common:
                continue
            above.append(f"{c.label}: {' '.join(common)}")
            rest = [" ".join(t for t in row if t not in common) for row in split]
            if any(rest):
                c.values = rest
            else:
                cols.remove(c)
    # Abbreviate text, widest first, down to its minimum.
    while total(cols) > width:
        text = [c for c in cols if not c.numeric and c.min_width and c.width > c.min_width]
        if not text:
            break
        widest = max(text, key=lambda c: c.width)
        new = max(widest.min_width, widest.width - (total(cols) - width))
        widest.values = [_clip(v, new) for v in widest.values]
        widest.label = _clip(widest.label, new)
    while total(cols) > width:
        droppable = [c for c in cols if c.drop_rank < 99]
        if not droppable:
            break
        cols.remove(min(droppable, key=lambda c: c.drop_rank))
    widths = [c.width for c in cols]

    def line(values: list[str]) -> str:
        parts = []
        for c, w, v in zip(cols, widths, values, strict=False):
            pad = " " * (w - cell_len(v))
            parts.append(pad + v if c.numeric else v + pad)
        return "  ".join(parts).rstrip()

    out = _pack(["all cells:"] + above, width) if above else []
    out.append(line([c.label for c in cols]))
    out.append(line(["─" * w for w in widths]))
    for i in range(len(cells)):
        out.append(line([c.values[i] for c in cols]))
    return out


def print_summary(
    console: Any, trials: list[dict[str, Any]], manifest: dict[str, Any],
    width: int | None = None,
) -> None:
    """The end table on a rich console, every line within its width (or `width`)."""
    cells = summarise(trials, manifest)
    width = width or console.width
    note = energy_note(trials)
    estimated = note is not None and "ESTIMATED" in note
    wrap = console.is_terminal  # a log keeps whole lines, which grep can find
    lines = ["per cell, mean ± 95% CI (n trials, warm-ups excluded); TTFT in ms"]
    lines += render_table(cells, width, estimated)
    for c in cells:
        if c.error:
            msg = f"{c.cell_id} failed: {c.error}"
            lines += _wrap(msg, width) if wrap else [msg]
    if note:
        lines += _wrap(note, width) if wrap else [note]
    for text in lines:
        console.print(text, markup=False, highlight=False, soft_wrap=True)


# -- machine-readable outputs (-o) -----------------------------------------------------------


def build_info(manifest: dict[str, Any]) -> dict[str, Any]:
    """bench version, engine version, compute backends, CPU and GPU of the run."""
    sw = manifest.get("software") or {}
    m = manifest.get("machine") or {}
    info = sw.get("llama_cpp_system_info") or ""
    backends = ["CPU"] + [b for b in ("CUDA", "Metal", "Vulkan", "ROCm", "SYCL") if b in info]
    gpus = list(m.get("gpus") or [])
    for meter in manifest.get("meters") or []:
        for name in (meter.get("facts") or {}).get("gpus") or []:
            if name not in gpus:
                gpus.append(str(name))
    commit = sw.get("bench_git_commit")
    return {
        "bench": sw.get("bench"),
        "bench_commit": commit[:8] if commit else None,
        "engine": "llama-cpp-python",
        "engine_version": sw.get("llama_cpp_python"),
        "compute_backends": backends,
        "cpu": m.get("cpu_model"),
        "cpu_cores": m.get("cpu_cores_logical"),
        "gpus": gpus,
        "run_id": manifest.get("run_id"),
    }


def build_line(b: dict[str, Any]) -> str:
    bench = f"bench {b['bench']}" + (f" ({b['bench_commit']})" if b.get("bench_commit") else "")
    gpu = ", ".join(b["gpus"]) if b["gpus"] else "none"
    return (f"build: {bench} · {b['engine']} {b['engine_version'] or 'unknown'} · backend "
            f"{', '.join(b['compute_backends'])} · CPU: {b['cpu']} ({b['cpu_cores']} threads) "
            f"· GPU: {gpu}")


def _size(n: int | None) -> str:
    return f"{n / 2**20:.1f} MiB" if n and n < 2**30 else (f"{n / 2**30:.2f} GiB" if n else "")


def _params(n: int | None) -> str:
    return f"{n / 1e9:.2f} B" if n and n >= 1e9 else (f"{n / 1e6:.2f} M" if n else "")


def render_markdown(cells: list[CellSummary], manifest: dict[str, Any],
                    estimated: bool = False) -> str:
    """A GitHub-flavoured table pasteable into an issue, with a legend and the build line."""
    head = ["model", "size", "params", "backend", "settings", "test", "n"] + [
        m.label + (" (est.)" if m.key == "j_per_token" and estimated else "") for m in METRICS
    ]
    right = {"size", "params", "n"} | {m.label for m in METRICS}

    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(head) + " |",
             "| " + " | ".join("---:" if h.split(" (")[0] in right else "---" for h in head)
             + " |"]
    for c in cells:
        row = [c.model_label, _size(c.size_bytes), _params(c.n_params), c.backend, c.settings,
               c.test, str(c.n)]
        if c.error:
            row += [f"failed: {c.error}"] + [""] * (len(METRICS) - 1)
        else:
            row += [format_stat(m.key, c.stats.get(m.key)) for m in METRICS]
        lines.append("| " + " | ".join(esc(x) for x in row) + " |")
    lines += ["", f"{CI_NOTE}; TTFT in ms."]
    if estimated:
        lines.append("J/token is an estimate (CPU time × watts per core): no energy meter could "
                     "be read.")
    lines += ["", build_line(build_info(manifest))]
    return "\n".join(lines) + "\n"


def records(cells: list[CellSummary], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat per-cell records: the numbers unrounded, with their CI and the build."""
    build = build_info(manifest)
    out = []
    for c in cells:
        rec: dict[str, Any] = {
            "cell_id": c.cell_id, "model": c.model, "quant": c.quant,
            "size_bytes": c.size_bytes, "n_params": c.n_params, "backend": c.backend,
            **{k: c.params.get(k) for k in ("n_threads", "n_gpu_layers", "n_ctx", "depth",
                                             "prompt_tokens", "gen_tokens", "lang")
               if k in c.params},
            "status": c.status, "error": c.error, "n": c.n,
        }
        for m in METRICS:
            s = c.stats.get(m.key)
            rec[f"{m.key}_mean"] = s.mean if s else None
            rec[f"{m.key}_ci95"] = s.ci95 if s else None
        rec.update({f"build_{k}": (",".join(v) if isinstance(v, list) else v)
                    for k, v in build.items()})
        out.append(rec)
    return out


def render(fmt: str, trials: list[dict[str, Any]], manifest: dict[str, Any]) -> str:
    """The summary in one of FORMATS, as the text to write to stdout."""
    cells = summarise(trials, manifest)
    note = energy_note(trials)
    estimated = note is not None and "ESTIMATED" in note
    if fmt == "md":
        return render_markdown(cells, manifest, estimated)
    recs = records(cells, manifest)
    if fmt == "jsonl":
        return "".join(json.dumps(r, default=str) + "\n" for r in recs)
    if fmt == "json":
        doc = {"build": build_info(manifest), "ci": CI_NOTE, "energy_estimated": estimated,
               "cells": [asdict(c) | {"stats": {k: asdict(v) for k, v in c.stats.items()}}
                         for c in cells]}
        return json.dumps(doc, indent=2, default=str) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        names: dict[str, None] = {}
        for r in recs:
            names.update(dict.fromkeys(r))
        w = csv.DictWriter(buf, fieldnames=list(names), lineterminator="\n")
        w.writeheader()
        w.writerows(recs)
        return buf.getvalue()
    raise ValueError(f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)}")
