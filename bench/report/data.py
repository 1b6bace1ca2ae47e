"""Runs -> the numbers a report or an export shows: one summary per cell, with runs told apart.

Owns which trials count (non-warm-up, status ok), the 95 % Student's t intervals of the headline
metrics, the representative trial of a cell (the median by decode t/s), the Pareto front of speed
against energy, and the labels that keep cells of several runs and machines apart. No plotting
and no files here, so `bench.export` uses it without matplotlib.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import columns
from bench.columns import Column, cell_label
from bench.results import ResultsError, Run, is_run_folder, load_run
from bench.stats import Summary, mean_ci
from bench.validity import Flag, cell_flags, check_run, run_flags

if TYPE_CHECKING:
    from bench.report.ladder import Ladder
    from bench.report.multilingual import Languages

# Cell parameters (bench.columns order); the numeric ones can be swept as an x axis.
PARAMS = columns.PARAMS
SWEEP_KEYS = ("n_threads", "prompt_tokens", "gen_tokens", "n_gpu_layers", "n_ctx", "n_batch",
              "n_ubatch")
SWEEP_LABELS = {k: columns.column(k).header for k in SWEEP_KEYS}

# The report's metrics are the schema's columns: one label, unit, direction and scale for all.
Metric = Column
PREFILL = columns.column("prefill_tps")
DECODE = columns.column("decode_tps")
TTFT = columns.column("ttft_s")
J_PER_TOKEN = columns.column("j_per_token")
METRICS: tuple[Metric, ...] = (PREFILL, DECODE, TTFT, J_PER_TOKEN)
# Language-fair figures (per character, per word) of multilingual runs; docs/results.md.
CHARS_PER_S = columns.column("decode_chars_per_s")
WORDS_PER_S = columns.column("decode_words_per_s")
J_PER_KCHAR = columns.column("j_per_kchar")
TOKENS_PER_CHAR = columns.column("tokens_per_char")
TOKENS_PER_WORD = columns.column("tokens_per_word")
# How near the machine's limits a cell ran (bench.roofline): summarised beside the metrics,
# shown in the per-cell table, never plotted or ranked on their own.
ROOFLINE_PCT = columns.column("roofline_pct")
J_FLOOR_RATIO = columns.column("j_floor_ratio")
LIMITS: tuple[Column, ...] = (ROOFLINE_PCT, J_FLOOR_RATIO)
LANG_METRICS: tuple[Metric, ...] = (CHARS_PER_S, WORDS_PER_S, J_PER_KCHAR, TOKENS_PER_CHAR,
                                    TOKENS_PER_WORD, DECODE, J_PER_TOKEN)


# Manifest cell statuses whose trials are not a result ("pending": the run stopped inside it).
FAILED_STATUSES = frozenset({"error", "failed", "pending", "interrupted", "timeout"})


class ReportError(Exception):
    """A run folder that cannot be reported; the message is one sentence for the user."""


@dataclass
class RunInfo:
    """One run of the report, with the short tag ("R1") that labels its cells in plots."""

    tag: str
    run: Run
    # Set for a machine of a fleet run whose fingerprint another machine of that run shares
    # (two identical boxes): its fleet name then tells them apart.
    twin_name: str | None = None

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def manifest(self) -> dict[str, Any]:
        return self.run.manifest

    @property
    def machine(self) -> dict[str, Any]:
        return dict(self.manifest.get("machine") or {})

    @property
    def machine_id(self) -> str:
        return str(self.machine.get("id") or "?")

    @property
    def machine_key(self) -> str:
        """What tells machines apart in a report: the fingerprint, as compare matches them (a
        hostname is not part of it: CI runners get a new one every time), and the fleet name
        only where two machines of one fleet run share a fingerprint."""
        return f"{self.machine_id}/{self.twin_name}" if self.twin_name else self.machine_id

    @property
    def machine_name(self) -> str:
        """The fleet worker's name, else the hostname, else the fingerprint."""
        m = self.machine
        return str(m.get("name") or m.get("hostname") or self.machine_id[:8])

    @property
    def machine_label(self) -> str:
        """"AMD EPYC 7B13 on bench-ci-1": what a reader recognises a machine by."""
        m = self.machine
        cpu = str(m.get("cpu_model") or "unknown CPU")
        gpus = m.get("gpus") or []
        names = [str(g.get("name", g)) if isinstance(g, dict) else str(g) for g in gpus]
        if names:
            cpu += " + " + ", ".join(names)
        host = m.get("hostname")
        return f"{cpu} on {host}" if host else cpu

    @property
    def config_name(self) -> str:
        cfg = self.manifest.get("config") or {}
        return str(cfg.get("name") or "")

    @property
    def description(self) -> str:
        cfg = self.manifest.get("config") or {}
        return str(cfg.get("description") or "")

    @property
    def flags(self) -> list[Flag]:
        return run_flags(self.manifest)

    @property
    def energy_methods(self) -> set[str]:
        return {str(r["energy_method"]) for r in self.run.trials if r.get("energy_method")}

    @property
    def estimated(self) -> bool:
        return "estimate" in self.energy_methods


@dataclass
class CellSummary:
    """One cell of one run: its parameters, status, samples and their summaries."""

    run: RunInfo
    cell_id: str
    cell_key: str | None
    params: dict[str, Any]
    status: str  # "ok", "error", "pending", ...
    error: str | None
    samples: list[dict[str, Any]] = field(default_factory=list)
    failed_trials: int = 0
    stats: dict[str, Summary] = field(default_factory=dict)  # metric key -> scaled summary
    values: dict[str, list[float]] = field(default_factory=dict)  # scaled samples
    energy_method: str = ""  # "counter", "sampled", "estimate", "mixed" or "" (none)
    pareto: bool = False
    # What the run recorded about this cell's conditions (bench.validity): its own (noisy,
    # throttled) and its run's (background load, battery).
    flags: list[Flag] = field(default_factory=list)

    @property
    def noisy(self) -> bool:
        return any(f.kind == "noisy" for f in self.flags)

    @property
    def flag_text(self) -> str:
        return ", ".join(dict.fromkeys(f.short for f in self.flags))

    @property
    def ok(self) -> bool:
        """Has successful trials and its run did not mark it failed: the trials of a cell that
        failed part-way (or was cut off) stay in the tables as that cell's, never as a result."""
        return bool(self.samples) and self.status not in FAILED_STATUSES

    @property
    def estimated(self) -> bool:
        return self.energy_method == "estimate"

    @property
    def description(self) -> str:
        return describe(self.params)

    @property
    def lang(self) -> str | None:
        lang = self.params.get("lang")
        return str(lang) if lang else None

    @property
    def representative_trial(self) -> int | None:
        """The trial with the median decode t/s (the lower middle one for an even count)."""
        rows = [r for r in self.samples if _finite(r.get("decode_tps")) is not None]
        if not rows:
            rows = list(self.samples)
            return int(rows[len(rows) // 2]["trial"]) if rows else None
        rows.sort(key=lambda r: (float(r["decode_tps"]), int(r["trial"])))
        return int(rows[(len(rows) - 1) // 2]["trial"])

    def sample(self, trial: int) -> dict[str, Any] | None:
        return next((r for r in self.samples if r.get("trial") == trial), None)


@dataclass
class ReportData:
    runs: list[RunInfo]
    cells: list[CellSummary]

    @property
    def multi_run(self) -> bool:
        return len(self.runs) > 1

    @property
    def machines(self) -> dict[str, list[RunInfo]]:
        out: dict[str, list[RunInfo]] = {}
        for r in self.runs:
            out.setdefault(r.machine_key, []).append(r)
        return out

    @property
    def mixed_machines(self) -> bool:
        return len(self.machines) > 1

    @property
    def ok_cells(self) -> list[CellSummary]:
        return [c for c in self.cells if c.ok]

    @property
    def failed_cells(self) -> list[CellSummary]:
        return [c for c in self.cells if not c.ok]

    @property
    def estimated(self) -> bool:
        return any(c.estimated and J_PER_TOKEN.name in c.stats for c in self.cells)

    @property
    def has_energy(self) -> bool:
        return any(J_PER_TOKEN.name in c.stats for c in self.cells)

    def varying(self, cells: Sequence[CellSummary] | None = None) -> list[str]:
        """Parameters that differ between the given cells (all ok cells by default)."""
        cells = self.ok_cells if cells is None else cells
        return [k for k in _keys(cells)
                if len({_hashable(c.params.get(k)) for c in cells}) > 1]

    def label(self, cell: CellSummary, keys: Iterable[str] | None = None) -> str:
        """A short cell label: the run tag when there are several runs, then the parameters
        in `keys` (by default those that vary), or the cell id when none vary."""
        keys = self.varying() if keys is None else list(keys)
        text = describe({k: cell.params.get(k) for k in keys}) if keys else cell.cell_id
        if text == "?":
            text = cell.cell_id
        return f"{cell.run.tag} {text}" if self.multi_run else text

    def common(self) -> str:
        """The parameters every ok cell shares, as one describe_cell line ("" if none)."""
        cells = self.ok_cells
        if not cells:
            return ""
        vary = set(self.varying())
        shared = {k: cells[0].params.get(k) for k in _keys(cells) if k not in vary}
        text = describe(shared)
        return "" if text == "?" else text

    # Computed on first use: `bench export` never reads the quality tables.
    @cached_property
    def languages(self) -> Languages | None:
        """Per language and model figures; None unless some cell's prompt has a language."""
        from bench.report.multilingual import languages

        return languages(self)

    @cached_property
    def ladders(self) -> list[Ladder]:
        """Quantization ladders: models with a KL reference or with several quants."""
        from bench.report.ladder import ladders

        return ladders(self)


# --------------------------------------------------------------------------------------------


def describe(params: dict[str, Any]) -> str:
    """The one cell label (bench.columns.cell_label): "gemma3-270m p03 lang=hi"."""
    return cell_label(params)


def _keys(cells: Sequence[CellSummary]) -> list[str]:
    """The schema's parameters, then any a backend added (server arguments), first seen."""
    keys = dict.fromkeys(PARAMS)
    for c in cells:
        keys.update(dict.fromkeys(c.params))
    return list(keys)


def _hashable(v: Any) -> Any:
    return repr(v) if isinstance(v, (dict, list)) else v


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _summaries(cell: CellSummary) -> None:
    for m in (*METRICS, *LIMITS):
        found = (_finite(r.get(m.name)) for r in cell.samples)
        vals = [x * m.scale for x in found if x is not None]
        if vals:
            cell.values[m.name] = vals
            cell.stats[m.name] = mean_ci(vals)
    methods = {str(r.get("energy_method") or "") for r in cell.samples
               if _finite(r.get(J_PER_TOKEN.name)) is not None}
    methods.discard("")
    cell.energy_method = methods.pop() if len(methods) == 1 else ("mixed" if methods else "")


def run_cells(info: RunInfo) -> list[CellSummary]:
    """The run's cells in manifest order (then any only found in trials), summarised."""
    run = info.run
    cells: dict[str, CellSummary] = {}
    for entry in run.manifest.get("cells") or []:
        cid = str(entry.get("cell_id"))
        params = dict(entry.get("params") or {})
        cells[cid] = CellSummary(
            info, cid, entry.get("cell_key"), {**{k: params.get(k) for k in PARAMS}, **params},
            str(entry.get("status") or "?"), entry.get("error"),
        )
    for row in run.trials:
        cid = str(row.get("cell_id"))
        cell = cells.get(cid)
        if cell is not None and cell.params.get("lang") is None and row.get("lang"):
            cell.params["lang"] = row["lang"]  # manifests older than the lang parameter
        if cell is None:
            cell = cells[cid] = CellSummary(
                info, cid, row.get("cell_key"), {k: row.get(k) for k in PARAMS},
                str(row.get("status") or "?"), row.get("error"),
            )
        if cell.cell_key is None and row.get("cell_key"):
            cell.cell_key = row["cell_key"]
        if row.get("status") != "ok":
            cell.failed_trials += 1
            if not cell.error and row.get("error"):
                cell.error = str(row["error"])
        elif not row.get("warmup"):
            cell.samples.append(row)
    entries = {str(e.get("cell_id")): e for e in run.manifest.get("cells") or []}
    whole = run_flags(run.manifest)
    for cell in cells.values():
        if not cell.ok:
            continue  # a failed cell's numbers are never summarised
        _summaries(cell)
        cell.flags = cell_flags(entries.get(cell.cell_id), cell.samples) + whole
    return list(cells.values())


def ranked(
    cells: Sequence[CellSummary], metric: Metric
) -> tuple[CellSummary | None, list[CellSummary]]:
    """(the best cell by mean, every cell tied with it). Tied = its 95% interval overlaps the
    best's: a winner is only crowned when nothing overlaps it."""
    have = [c for c in cells if metric.name in c.stats]
    if not have:
        return None, []
    pick = max if metric.higher_is_better else min
    best = pick(have, key=lambda c: c.stats[metric.name].mean)
    tied = [c for c in have if c is not best
            and c.stats[metric.name].overlaps(best.stats[metric.name])]
    return best, tied


def best_per_model(cells: Sequence[CellSummary], metric: Metric) -> list[CellSummary]:
    """Each model's best cell for `metric`, in first-seen model order."""
    models: dict[Any, list[CellSummary]] = {}
    for c in cells:
        if metric.name in c.stats:
            models.setdefault(c.params.get("model"), []).append(c)
    return [b for b in (ranked(cs, metric)[0] for cs in models.values()) if b is not None]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, gain) that no other point beats: nothing with a cost at
    most as high and a gain at least as high, one of them strictly. Sorted by cost."""
    front = []
    for i, (c, g) in enumerate(points):
        dominated = any(
            (c2 <= c and g2 >= g) and (c2 < c or g2 > g)
            for j, (c2, g2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def mark_pareto(cells: Sequence[CellSummary]) -> list[CellSummary]:
    """Mark the cells on the decode-t/s versus J/token front; returns them by J/token."""
    have = [c for c in cells if DECODE.name in c.stats and J_PER_TOKEN.name in c.stats]
    points = [(c.stats[J_PER_TOKEN.name].mean, c.stats[DECODE.name].mean) for c in have]
    front = [have[i] for i in pareto_front(points)]
    for c in have:
        c.pareto = c in front
    return front


def split_machines(runs: Sequence[Run]) -> list[RunInfo]:
    """The report's runs, tagged R1, R2, ...; a fleet run holding several machines becomes one
    run per machine ("R1@desk", "R1@mac"), each as a local run of that machine reads, so every
    table, plot and the machines section tells the machines apart."""
    from bench.fleet import machine_names, machine_view

    out = []
    for i, r in enumerate(runs):
        listed = r.manifest.get("machines")
        if isinstance(listed, dict) and listed:
            ids = [str((listed.get(m) or {}).get("id")) for m in machine_names(r)]
            for m, mid in zip(machine_names(r), ids, strict=True):
                twin = m if ids.count(mid) > 1 else None
                out.append(RunInfo(f"R{i + 1}@{m}", machine_view(r, m), twin))
        else:
            out.append(RunInfo(f"R{i + 1}", r))
    return out


def summarise(runs: Sequence[Run]) -> ReportData:
    infos = split_machines(runs)
    cells = [c for info in infos for c in run_cells(info)]
    mark_pareto(cells)
    return ReportData(infos, cells)


def load_runs(
    paths: Sequence[str | Path], what: str = "run", tables: Sequence[str] = (),
) -> list[Run]:
    """Paths -> runs: each a run folder or a folder holding run folders, checked by
    bench.validity.check_run (manifest shapes; `tables` read in full, the other side tables'
    footers). Raises ReportError with one sentence."""
    if not paths:
        raise ReportError(f"give at least one {what} folder")
    folders: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise ReportError(f"{p} does not exist; give a run folder written by `bench run`")
        if is_run_folder(p):
            folders.append(p)
        elif p.is_dir():
            try:
                kids = sorted(c for c in p.iterdir() if c.is_dir() and is_run_folder(c))
            except OSError as e:
                raise ReportError(f"cannot read {p} ({e.strerror or e})") from e
            if not kids:
                raise ReportError(
                    f"{p} is not a bench run folder (no manifest.json in it or its subfolders)"
                )
            folders.extend(kids)
        else:
            raise ReportError(f"{p} is a file, not a bench run folder")
    unique = list({f.resolve(): f for f in folders}.values())
    runs = []
    for f in unique:
        try:
            run = load_run(f)
            check_run(run, tables)
            runs.append(run)
        except ResultsError as e:
            raise ReportError(str(e)) from e
        except Exception as e:  # a damaged file must end in a sentence, not a traceback
            raise ReportError(f"cannot read the run folder {f}: {type(e).__name__}: {e}") from e
    return runs


fmt_num = columns.format_number


def fmt_ci(s: Summary | None) -> str:
    """"72.9 ± 4.6" (mean ± 95 % CI half width, already in the display unit); "72.9 (n=1)" when
    the interval is infinite."""
    if s is None:
        return columns.MISSING
    return columns.format_ci(s.mean, s.half_width, None, s.n)


class PooledCells:
    """For a series pooled over cells: `cells` (with `samples`) and `energy_method` fields."""

    cells: list[Any]
    energy_method: str

    @property
    def estimated(self) -> bool:
        return self.energy_method == "estimate"

    @property
    def n(self) -> int:
        return sum(len(c.samples) for c in self.cells)
