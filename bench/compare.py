"""Run versus run: regression verdicts for CI (`bench compare BASELINE... CANDIDATE`).

Owns matching cells across runs by `cell_key`, pooling baseline runs, the regression gate and the
three renderings (terminal table, Markdown for a pull-request comment, JSON). The CLI only adapts
argparse to `Compare.run`; `compare_runs` is the same logic without files or printing.

Verdict marks: `+` worse, `-` better, `~` no significant change beyond the threshold, `?`
unreliable (a side was measured under conditions its run flagged: the row's `reason` says which),
`x` not comparable (the row's `reason` says why). Exit codes: 0 no regression, 1 regression, 2 usage
or data error, 3 unreliable. Column names, units, directions and formats come from
`bench.columns`; validity flags from `bench.validity`. See docs/compare.md.
"""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from bench import columns
from bench.columns import MISSING, cell_label, format_change, format_ci, unique_labels
from bench.results import ResultsError, Run, is_run_folder, load_run
from bench.stats import (
    change_pct_ci,
    mann_whitney_u,
    mean_ci,
    min_achievable_p,
    mwu_method,
    stdev,
)
from bench.validity import Flag, cell_flags, check_run, energy_estimated, run_flags

Fmt = Literal["table", "markdown", "json"]
Mark = Literal["+", "-", "~", "?", "x"]
FORMATS: tuple[str, ...] = ("table", "markdown", "json")

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_UNRELIABLE = 0, 1, 2, 3
# What compare can judge: every trial column with a direction (bench.columns).
METRICS = frozenset(columns.METRICS)
DEFAULT_METRICS: tuple[str, ...] = ("decode_tps", "prefill_tps", "ttft_s", "j_per_token")
# Default metrics that are left out of a cell unless both sides measured them with a meter.
OPTIONAL_DEFAULTS = frozenset({"j_per_token"})
# The default threshold: twice the runner's default CV limit (execution.max_cv_pct = 5 %), so two
# runs that each passed that guard must drift apart by more than either's own noise allows
# before a change counts. On this project's shared 2-core VM the threshold alone cannot keep
# reruns apart from regressions (11 reruns under load: medians moved by up to 486 %, and 41 of
# 110 pairs would be a regression at any threshold up to 30 %); the validity flags do (all 110
# are "unreliable"). docs/compare.md, "Choosing the threshold", has the data.
DEFAULT_THRESHOLD_PCT = 10.0


class CompareError(Exception):
    """A usage or data problem; the message is one sentence for the user."""


# --------------------------------------------------------------------------------------------
# The gate


@dataclass(frozen=True)
class Judgement:
    change_pct: float
    test: str  # "mann-whitney-exact", "mann-whitney-asymptotic" or "ci-overlap"
    p_value: float | None  # None for ci-overlap
    significant: bool
    mark: Mark


@dataclass(frozen=True)
class Gate:
    """A change counts only when beyond `threshold_pct` and significant at `alpha`.

    Significance uses Mann-Whitney U when the exact test could reach `alpha` with these sample
    sizes (`min_achievable_p < alpha`), otherwise whether the (1 - alpha) Student's t confidence
    intervals of the two means overlap.
    """

    threshold_pct: float = DEFAULT_THRESHOLD_PCT
    alpha: float = 0.05

    def __post_init__(self) -> None:
        try:
            columns.parse_threshold_pct(self.threshold_pct)
        except ValueError as e:
            raise CompareError(str(e)) from None
        if not 0.0 < self.alpha < 1.0:
            raise CompareError(f"alpha must be between 0 and 1, got {self.alpha}")

    @classmethod
    def parse(cls, text: str | float, alpha: float = 0.05) -> Gate:
        """`"5%"`, `"5"`, `"2.5 %"` or a number -> a gate at that threshold."""
        try:
            return cls(columns.parse_threshold_pct(text), alpha)
        except ValueError as e:
            raise CompareError(str(e)) from None

    def significance(
        self, base: Sequence[float], cand: Sequence[float]
    ) -> tuple[str, float | None, bool]:
        if min_achievable_p(len(base), len(cand)) < self.alpha:
            method = mwu_method(base, cand)
            _, p = mann_whitney_u(base, cand, method)
            return f"mann-whitney-{method}", p, p < self.alpha
        level = 1.0 - self.alpha
        overlap = mean_ci(base, level).overlaps(mean_ci(cand, level))
        return "ci-overlap", None, not overlap

    def judge(
        self, higher_is_better: bool, base: Sequence[float], cand: Sequence[float]
    ) -> Judgement:
        """Both samples non-empty, baseline mean non-zero."""
        base_mean = math.fsum(base) / len(base)
        cand_mean = math.fsum(cand) / len(cand)
        change = (cand_mean - base_mean) / base_mean * 100.0
        test, p, significant = self.significance(base, cand)
        # The sign of "worse" flips with the metric's direction.
        worse_pct = -change if higher_is_better else change
        mark: Mark = "~"
        if significant and worse_pct > self.threshold_pct:
            mark = "+"
        elif significant and -worse_pct > self.threshold_pct:
            mark = "-"
        return Judgement(change, test, p, significant, mark)


# For argparse `type=`: "5%" -> 5.0 (ValueError otherwise); the one parser, in bench.columns.
parse_threshold_pct = columns.parse_threshold_pct


# --------------------------------------------------------------------------------------------
# Reading the two sides


@dataclass
class _Cell:
    key: str
    params: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)  # the cell's own, from every run pooled

    def values(self, metric: str) -> list[float]:
        out = []
        for row in self.samples:
            v = row.get(metric)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out.append(float(v))
        return out

    def energy_methods(self, metric: str) -> set[str]:
        return {
            str(r.get("energy_method") or "") for r in self.samples if r.get(metric) is not None
        }


def _is_sample(row: dict[str, Any]) -> bool:
    return row.get("status") == "ok" and not row.get("warmup")


def _params_of(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in columns.PARAMS if k in row}


def _cells(runs: Sequence[Run]) -> dict[str, _Cell]:
    """Trials pooled per cell_key, in first-seen order; cells with no usable trial kept empty."""
    cells: dict[str, _Cell] = {}
    for run in runs:
        entries = {e.get("cell_key"): e for e in run.manifest.get("cells") or []
                   if e.get("cell_key")}
        # A cell whose run marked it failed keeps its trials out: they are not a result.
        failed = {k for k, e in entries.items() if e.get("status") not in (None, "ok")}
        mine: dict[str, list[dict[str, Any]]] = {}
        for row in run.trials:
            key = row.get("cell_key")
            if not key:
                raise CompareError(
                    f"run {run.run_id} has trials without a cell_key; it was written by an older "
                    "bench, rerun it"
                )
            entry = entries.get(key)
            params = dict(entry.get("params") or {}) if entry else _params_of(row)
            cell = cells.setdefault(key, _Cell(key, params))
            if _is_sample(row) and key not in failed:
                cell.samples.append(row)
                mine.setdefault(key, []).append(row)
        for key, rows in mine.items():
            for flag in cell_flags(entries.get(key), rows):
                if flag not in cells[key].flags:
                    cells[key].flags.append(flag)
        # A cell that failed before any trial is only in the manifest; show it as not comparable.
        for key, entry in entries.items():
            if key not in cells:
                cells[key] = _Cell(key, dict(entry.get("params") or {}))
    return cells


def _machine(run: Run) -> tuple[str | None, str]:
    m = run.manifest.get("machine") or {}
    mid = m.get("id")
    return (str(mid) if mid else None), str(m.get("hostname") or "?")


def _load(path: Path) -> Run:
    run = load_run(path)
    check_run(run, tables=())  # compare reads trials only: side tables get a footer check
    return run


def collect_runs(paths: Sequence[str | Path], last: int | None = None) -> list[Run]:
    """Baseline arguments -> runs: each path a run folder or a folder holding run folders.

    `last` keeps the newest N runs (by start time, then run_id) after expanding folders.
    """
    if not paths:
        raise CompareError("give at least one baseline run folder")
    folders: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise CompareError(f"baseline {p} does not exist")
        if is_run_folder(p):
            folders.append(p)
        elif p.is_dir():
            kids = sorted(c for c in p.iterdir() if c.is_dir() and is_run_folder(c))
            if not kids:
                raise CompareError(
                    f"baseline {p} is neither a bench run folder nor a folder of run folders "
                    "(no manifest.json in it or its subfolders)"
                )
            folders.extend(kids)
        else:
            raise CompareError(f"baseline {p} is a file, not a bench run folder")
    unique = list({f.resolve(): f for f in folders}.values())
    runs = [_load(f) for f in unique]
    if last is not None:
        if last < 1:
            raise CompareError(f"--last must be at least 1, got {last}")
        runs.sort(key=lambda r: (str(r.manifest.get("started_utc") or ""), r.run_id))
        runs = runs[-last:]
    return runs


def load_candidate(path: str | Path) -> Run:
    p = Path(path)
    if not p.exists():
        raise CompareError(f"candidate {p} does not exist")
    if not is_run_folder(p):
        if p.is_dir() and any(c.is_dir() and is_run_folder(c) for c in p.iterdir()):
            raise CompareError(f"candidate {p} holds several runs; give one run folder")
        raise CompareError(f"candidate {p} is not a bench run folder (no manifest.json)")
    return _load(p)


# --------------------------------------------------------------------------------------------
# The comparison


@dataclass
class Row:
    """One cell x metric verdict; also the JSON row. Means, SDs and CI half widths are in the
    column's stored unit (bench.columns); `*_ci` is the 95% interval's half width."""

    cell_key: str
    cell: str
    model: str | None
    quant: str | None
    backend: str | None
    metric: str
    better: Literal["higher", "lower"]
    baseline_n: int
    baseline_mean: float | None
    baseline_sd: float | None
    candidate_n: int
    candidate_mean: float | None
    candidate_sd: float | None
    change_pct: float | None
    test: str | None
    p_value: float | None
    significant: bool | None
    mark: Mark
    reason: str | None = None
    baseline_ci: float | None = None
    candidate_ci: float | None = None
    change_ci_pct: float | None = None  # half width of the change's 95% interval (Welch)
    # What the mark would be without the flags (`?` rows only): "+", "-" or "~".
    unflagged_mark: Mark | None = None
    baseline_flags: list[str] = field(default_factory=list)
    candidate_flags: list[str] = field(default_factory=list)


Verdict = Literal["regression", "no regression", "unreliable", "not comparable"]


@dataclass
class Comparison:
    rows: list[Row]
    gate: Gate
    baseline_runs: list[str]
    candidate_run: str
    machine_reason: str | None = None
    matched_cells: int = 0
    # Whole-run flags of each side ("under background load ..."), with the run they came from.
    baseline_flags: list[tuple[str, Flag]] = field(default_factory=list)
    candidate_flags: list[Flag] = field(default_factory=list)

    def count(self, mark: Mark) -> int:
        return sum(1 for r in self.rows if r.mark == mark)

    @property
    def comparable(self) -> int:
        return len(self.rows) - self.count("x")

    def verdict(self) -> Verdict:
        if self.comparable == 0:
            return "not comparable"
        if self.count("?"):
            return "unreliable"
        return "regression" if self.count("+") else "no regression"

    def unreliable_because(self) -> list[str]:
        """Why the comparison is unreliable, most general first: "candidate measured under
        background load (51% CPU during the idle baseline, limit 10%)"."""
        out: list[str] = []
        for flag in self.candidate_flags:
            out.append(f"candidate measured {flag.text}")
        for run_id, flag in self.baseline_flags:
            out.append(f"baseline {run_id} measured {flag.text}")
        for r in self.rows:
            if r.mark == "?" and r.reason and r.reason not in out:
                out.append(r.reason)
        return list(dict.fromkeys(out))

    def headline(self) -> str:
        """The verdict as one phrase: "unreliable: candidate measured under background load"."""
        v = self.verdict()
        if v == "unreliable":
            why = self.unreliable_because()
            more = f" (and {len(why) - 1} more)" if len(why) > 1 else ""
            return f"unreliable: {why[0]}{more}" if why else "unreliable"
        return v

    def problem(self) -> str | None:
        """The one-sentence data error when nothing could be compared, else None."""
        if self.comparable:
            return None
        if self.machine_reason:
            return f"nothing to compare: {self.machine_reason}; compare runs from one machine"
        if not self.matched_cells:
            return (
                f"nothing to compare: no cell of {self.candidate_run} matches a baseline cell "
                "(model, settings or workload differ)"
            )
        return "nothing to compare: no metric has successful trials on both sides"

    def summary(self, warn_only: bool = False) -> dict[str, Any]:
        return {
            "verdict": self.verdict(),
            "headline": self.headline(),
            "exit_code": exit_code(self, warn_only),
            "worse": self.count("+"),
            "better": self.count("-"),
            "unchanged": self.count("~"),
            "unreliable": self.count("?"),
            "not_comparable": self.count("x"),
            "unreliable_because": self.unreliable_because(),
            "threshold_pct": self.gate.threshold_pct,
            "alpha": self.gate.alpha,
            "warn_only": warn_only,
            "baseline_runs": self.baseline_runs,
            "candidate_run": self.candidate_run,
            "machine": self.machine_reason,
        }


def exit_code(comparison: Comparison, warn_only: bool = False) -> int:
    """0 no regression, 1 regression, 2 nothing comparable, 3 unreliable. `warn_only` turns
    1 and 3 into 0 (the output still says them), never 2."""
    v = comparison.verdict()
    if v == "not comparable":
        return EXIT_USAGE
    if warn_only:
        return EXIT_OK
    return {"unreliable": EXIT_UNRELIABLE, "regression": EXIT_REGRESSION}.get(v, EXIT_OK)


def _sd(values: list[float]) -> float | None:
    return stdev(values) if len(values) > 1 else None


def _ci(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    return mean_ci(values).half_width


def _metrics_for(
    metrics: Sequence[str] | None, sides: Sequence[_Cell | None]
) -> list[str]:
    if metrics is not None:
        return list(metrics)
    present = [c for c in sides if c is not None]

    def wanted(m: str) -> bool:
        if m not in OPTIONAL_DEFAULTS:
            return True
        if not all(c.values(m) for c in present):
            return False
        # Estimates on both sides would compare a model of power with itself: left out by
        # default (ask with --metric to see that row, marked unreliable). A meter on one side
        # and an estimate on the other stays, as not comparable, so the reader sees why.
        return not all(energy_estimated(c.samples, m) for c in present)

    return [m for m in DEFAULT_METRICS if wanted(m)]


def compare_runs(
    baseline: Sequence[Run],
    candidate: Run,
    gate: Gate | None = None,
    metrics: Sequence[str] | None = None,
) -> Comparison:
    """Judge every cell x metric of `candidate` against the pooled `baseline` runs.

    Raises `CompareError` when the baseline runs come from different machines or a metric is
    unknown.
    """
    gate = gate or Gate()
    if not baseline:
        raise CompareError("give at least one baseline run folder")
    if metrics is not None:
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise CompareError(
                f"unknown metric {unknown[0]!r}; choose from {', '.join(sorted(METRICS))}"
            )
        if not metrics:
            raise CompareError("give at least one metric")

    # Pooling samples from two machines would measure the machines; refuse it outright.
    base_machines: dict[str, tuple[str, str]] = {}  # id -> (hostname, first run_id)
    for run in baseline:
        mid, host = _machine(run)
        if mid is not None:
            base_machines.setdefault(mid, (host, run.run_id))
    if len(base_machines) > 1:
        found = "; ".join(f"{rid} on {host} ({mid})" for mid, (host, rid) in base_machines.items())
        raise CompareError(
            f"baseline runs come from different machines ({found}); pool runs from one machine only"
        )
    machine_reason = None
    cand_mid, cand_host = _machine(candidate)
    if base_machines and cand_mid is not None and cand_mid not in base_machines:
        base_mid, (base_host, _) = next(iter(base_machines.items()))
        machine_reason = (
            f"different machine: baseline {base_host} ({base_mid}), "
            f"candidate {cand_host} ({cand_mid})"
        )

    base_flags = [(r.run_id, f) for r in baseline for f in run_flags(r.manifest)]
    cand_flags = run_flags(candidate.manifest)
    base_cells = _cells(baseline)
    cand_cells = _cells([candidate])
    keys = list(cand_cells) + [k for k in base_cells if k not in cand_cells]
    # Two distinct cells with the same label would be ambiguous in the table.
    descriptions = unique_labels(
        {k: cell_label((cand_cells.get(k) or base_cells[k]).params) for k in keys}
    )

    rows: list[Row] = []
    for key in keys:
        b, c = base_cells.get(key), cand_cells.get(key)
        params = (c or b).params  # type: ignore[union-attr]
        for metric in _metrics_for(metrics, (b, c)):
            col = columns.METRICS[metric]
            bv = b.values(metric) if b else []
            cv_ = c.values(metric) if c else []
            row = Row(
                cell_key=key, cell=descriptions[key], model=params.get("model"),
                quant=params.get("quant"), backend=params.get("backend"), metric=metric,
                better="higher" if col.higher_is_better else "lower",
                baseline_n=len(bv), baseline_mean=math.fsum(bv) / len(bv) if bv else None,
                baseline_sd=_sd(bv), candidate_n=len(cv_),
                candidate_mean=math.fsum(cv_) / len(cv_) if cv_ else None, candidate_sd=_sd(cv_),
                change_pct=None, test=None, p_value=None, significant=None, mark="x",
                baseline_ci=_ci(bv), candidate_ci=_ci(cv_),
            )
            row.reason = _not_comparable(machine_reason, metric, b, c, bv, cv_)
            if row.reason is None:
                j = gate.judge(col.higher_is_better, bv, cv_)
                row.change_pct, row.test, row.p_value, row.significant, row.mark = (
                    j.change_pct, j.test, j.p_value, j.significant, j.mark
                )
                if len(bv) > 1 and len(cv_) > 1:
                    row.change_ci_pct = change_pct_ci(bv, cv_)[1]
                _flag(row, metric, b, c, base_flags, cand_flags)  # type: ignore[arg-type]
            rows.append(row)

    matched = sum(1 for k in keys if k in base_cells and k in cand_cells)
    return Comparison(
        rows, gate, [r.run_id for r in baseline], candidate.run_id, machine_reason, matched,
        base_flags, cand_flags,
    )


def _flag(
    row: Row, metric: str, b: _Cell, c: _Cell, base_flags: list[tuple[str, Flag]],
    cand_flags: list[Flag],
) -> None:
    """Turn a judged row into `?` when either side's numbers are flagged by its run."""
    cand = [f.text for f in cand_flags] + [f.text for f in c.flags]
    base = list(dict.fromkeys([f.text for _, f in base_flags] + [f.text for f in b.flags]))
    if columns.METRICS[metric].energy:
        if energy_estimated(c.samples, metric):
            cand.append("with estimated energy (no meter)")
        if energy_estimated(b.samples, metric):
            base.append("with estimated energy (no meter)")
    row.baseline_flags, row.candidate_flags = base, cand
    if not (base or cand):
        return
    row.unflagged_mark, row.mark = row.mark, "?"
    parts = [f"candidate measured {t}" for t in cand] + [f"baseline measured {t}" for t in base]
    row.reason = "; ".join(parts)


def _not_comparable(
    machine_reason: str | None, metric: str, b: _Cell | None, c: _Cell | None,
    bv: list[float], cv_: list[float],
) -> str | None:
    if machine_reason:
        return machine_reason
    if c is None:
        return "only in baseline"
    if b is None:
        return "only in candidate"
    if not bv and not cv_:
        return "no successful trials with this metric on either side"
    if not bv:
        return "no successful trials with this metric in the baseline"
    if not cv_:
        return "no successful trials with this metric in the candidate"
    if columns.METRICS[metric].energy:
        bm, cm = b.energy_methods(metric), c.energy_methods(metric)
        if bm != cm:
            return (
                f"energy method differs: baseline {'/'.join(sorted(bm)) or '?'}, "
                f"candidate {'/'.join(sorted(cm)) or '?'}"
            )
    if sum(bv) == 0:
        return "baseline mean is zero"
    return None


# --------------------------------------------------------------------------------------------
# Rendering


def side_text(mean: float | None, ci: float | None, n: int, metric: str) -> str:
    """"100.33 ± 0.71 (n=6)" in the metric's display unit; MISSING without a mean."""
    if mean is None:
        return MISSING
    return f"{format_ci(mean, ci, metric)} (n={n})"


def change_text(row: Row) -> str:
    """"-10.0% ± 0.9": the change with its 95% interval's half width (Welch)."""
    text = format_change(row.change_pct)
    if row.change_pct is not None and row.change_ci_pct is not None:
        text += f" ± {row.change_ci_pct:.1f}"
    return text


def _test(row: Row) -> str:
    if row.test is None:
        return MISSING
    if row.test == "ci-overlap":
        return "CI"
    return f"p={row.p_value:.2g}" if row.p_value is not None else MISSING


def mark_text(row: Row) -> str:
    # An unreliable row still shows what it would have said: "?+" is "worse, but flagged".
    return f"?{row.unflagged_mark}" if row.mark == "?" and row.unflagged_mark else row.mark


def _verdict_line(comparison: Comparison, warn_only: bool) -> str:
    v = comparison.verdict()
    word = {"regression": "REGRESSION", "no regression": "no regression",
            "not comparable": "NOT COMPARABLE", "unreliable": "UNRELIABLE"}[v]
    if v == "unreliable":
        word += comparison.headline().removeprefix("unreliable")
    if v in ("regression", "unreliable") and warn_only:
        word += " (warn only)"
    g = comparison.gate
    return (
        f"bench compare: {word}: {comparison.count('+')} worse, {comparison.count('-')} better, "
        f"{comparison.count('~')} unchanged, {comparison.count('?')} unreliable, "
        f"{comparison.count('x')} not comparable (threshold {g.threshold_pct:g}%, "
        f"alpha {g.alpha:g})"
    )


def _runs_line(comparison: Comparison) -> str:
    base = comparison.baseline_runs
    pooled = f" ({len(base)} runs pooled)" if len(base) > 1 else ""
    return f"baseline: {', '.join(base)}{pooled}; candidate: {comparison.candidate_run}"


def _with_first(rows: list[Row]) -> list[tuple[Row, bool]]:
    """Each row with whether it opens its cell, so a cell is named once."""
    return [(r, i == 0 or rows[i - 1].cell_key != r.cell_key) for i, r in enumerate(rows)]


def _cells_of(r: Row, comparison: Comparison) -> list[str]:
    note = r.reason if r.reason and r.reason != comparison.machine_reason else ""
    return [
        r.metric, columns.METRICS[r.metric].display_unit,
        side_text(r.baseline_mean, r.baseline_ci, r.baseline_n, r.metric),
        side_text(r.candidate_mean, r.candidate_ci, r.candidate_n, r.metric),
        change_text(r), _test(r), mark_text(r), note,
    ]


_HEADERS = ("cell", "metric", "unit", "baseline", "candidate", "change", "test", "mark", "note")


def legend(alpha: float) -> str:
    """What the marks and ± mean, for every rendering (and the report's comparison)."""
    return (
        "`+` worse, `-` better (beyond the threshold and significant), `~` no significant change "
        "beyond the threshold, `?` unreliable (a side's run flagged its conditions: background "
        "load, noisy trials, throttling or estimated energy; `?+` = would be worse), `x` not "
        "comparable. p: Mann-Whitney U; CI: non-overlap of "
        f"{(1 - alpha) * 100:g}% confidence intervals (too few trials for the U test). "
        "Values: mean ± half width of its 95% confidence interval (Student's t)."
    )


def render_table(comparison: Comparison, out: TextIO, warn_only: bool = False) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    tty = bool(getattr(out, "isatty", lambda: False)())
    # A fixed width off a terminal keeps logs and tests identical whatever COLUMNS says.
    console = Console(file=out, width=None if tty else 200, highlight=False, emoji=False)
    console.print(Text(_runs_line(comparison)))
    if comparison.machine_reason:
        console.print(Text(f"not comparable: {comparison.machine_reason}"))
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for name in _HEADERS:
        justify = "right" if name in ("baseline", "candidate", "change", "test") else (
            "center" if name == "mark" else "left")
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    styles = {"+": "bold red", "-": "bold green", "~": "", "x": "yellow", "?": "bold yellow"}
    for r, first in _with_first(comparison.rows):
        cells = _cells_of(r, comparison)
        texts = [Text(r.cell if first else "")] + [Text(x) for x in cells]
        texts[7] = Text(cells[6], style=styles[r.mark])
        table.add_row(*texts)
    console.print(table)
    console.print(Text("± = 95% confidence interval of the mean; TTFT in ms."))
    # The verdict is one line whatever its length: CI logs grep it.
    console.print(Text(_verdict_line(comparison, warn_only)), soft_wrap=True)


def render_markdown(comparison: Comparison, warn_only: bool = False) -> str:
    md = columns.md_text
    lines = [f"**{md(_verdict_line(comparison, warn_only))}**", "", md(_runs_line(comparison))]
    if comparison.machine_reason:
        lines += ["", f"Not comparable: {md(comparison.machine_reason)}."]
    lines += [
        "",
        "| " + " | ".join(_HEADERS) + " |",
        "|---|---|---|--:|--:|--:|--:|:-:|---|",
    ]
    for r, first in _with_first(comparison.rows):
        cells = _cells_of(r, comparison)
        cells[6] = f"`{cells[6]}`"
        out = [md(r.cell if first else "")] + [
            c if i == 6 else md(c) for i, c in enumerate(cells)
        ]
        lines.append("| " + " | ".join(out) + " |")
    lines += ["", legend(comparison.gate.alpha)]
    return "\n".join(lines) + "\n"


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    return v


def render_json(comparison: Comparison, warn_only: bool = False) -> str:
    doc = {
        "summary": comparison.summary(warn_only),
        "rows": [asdict(r) for r in comparison.rows],
    }
    return json.dumps(_json_safe(doc), indent=2, allow_nan=False) + "\n"


# --------------------------------------------------------------------------------------------
# The command


class Compare:
    """`bench compare`: judge a candidate run against one or more baseline runs."""

    def run(
        self,
        baseline: Sequence[str | Path],
        candidate: str | Path,
        threshold_pct: float | str = DEFAULT_THRESHOLD_PCT,
        metrics: Sequence[str] | None = None,
        alpha: float = 0.05,
        fmt: Fmt = "table",
        warn_only: bool = False,
        last: int | None = None,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> int:
        """Print the comparison to `out`; return 0 (no regression), 1 (regression), 3
        (unreliable: a side's run flagged its conditions; `warn_only` makes 1 and 3 a 0) or 2
        (usage or data error, one sentence on `err`). `threshold_pct` may be the flag's text
        ("5%")."""
        out = out if out is not None else sys.stdout
        err = err if err is not None else sys.stderr
        try:
            if fmt not in FORMATS:
                raise CompareError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
            if isinstance(baseline, (str, Path)):
                baseline = [baseline]
            gate = Gate.parse(threshold_pct, float(alpha))
            base_runs = collect_runs(baseline, last)
            cand_run = load_candidate(candidate)
            comparison = compare_runs(base_runs, cand_run, gate, metrics)
        except (CompareError, ResultsError) as e:
            print(f"bench compare: {e}", file=err)
            return EXIT_USAGE
        if fmt == "json":
            out.write(render_json(comparison, warn_only))
        elif fmt == "markdown":
            out.write(render_markdown(comparison, warn_only))
        else:
            render_table(comparison, out, warn_only)
        problem = comparison.problem()
        if problem:
            print(f"bench compare: {problem}", file=err)
        elif comparison.verdict() == "unreliable":
            print(f"bench compare: {comparison.headline()}; rerun on a quiet machine",
                  file=err)
        return exit_code(comparison, warn_only)
