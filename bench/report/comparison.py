"""A report over runs whose cells match is a comparison: the first run is the baseline, each
later run a candidate, judged per cell and metric by `bench.compare` (the same gate, marks and
validity flags as `bench compare`), with Δ% and its 95% interval.

Owns the comparison section's tables and summary lines; the numbers and verdicts are compare's.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench import columns
from bench.columns import CI_NOTE
from bench.compare import (
    Comparison,
    Gate,
    change_text,
    compare_runs,
    legend,
    mark_text,
    side_text,
)
from bench.report.data import ReportData, RunInfo
from bench.report.tables import Table

# What each mark is called in words: a `~` is a tie, never a win.
MARK_WORDS = {"+": "worse", "-": "better", "~": "tied", "?": "unreliable", "x": "not comparable"}


@dataclass
class RunComparison:
    baseline: RunInfo
    candidate: RunInfo
    result: Comparison


def comparisons(data: ReportData, gate: Gate | None = None) -> list[RunComparison]:
    """Each run against the first run of its own machine, when they share at least one cell;
    [] for one run. Runs of different machines are shown side by side instead
    (bench.report.machines): their differences measure the machines, not a change."""
    if not data.multi_run:
        return []
    first: dict[str, RunInfo] = {}
    out = []
    for run in data.runs:
        base = first.setdefault(run.machine_key, run)
        if base is run:
            continue
        result = compare_runs([base.run], run.run, gate or Gate())
        if result.matched_cells:
            out.append(RunComparison(base, run, result))
    return out


def comparison_table(rc: RunComparison) -> Table:
    b, c = rc.baseline.tag, rc.candidate.tag
    cols = ["cell", "metric", f"{b} (baseline)", f"{c} (candidate)", "Δ% ± 95% CI", "mark",
            "verdict", "flags"]
    rows, flagged, details = [], set(), {}
    first_of: dict[str, int] = {}
    for i, r in enumerate(rc.result.rows):
        col = columns.METRICS[r.metric]
        flags = [f"{b}: {t}" for t in r.baseline_flags] + [f"{c}: {t}" for t in r.candidate_flags]
        mark = mark_text(r)
        rows.append([
            r.cell if r.cell_key not in first_of else "",
            f"{col.header}" + (f" ({col.display_unit})" if col.display_unit not in col.header
                               else ""),
            side_text(r.baseline_mean, r.baseline_ci, r.baseline_n, r.metric),
            side_text(r.candidate_mean, r.candidate_ci, r.candidate_n, r.metric),
            change_text(r), mark, MARK_WORDS[r.mark], "; ".join(flags),
        ])
        first_of.setdefault(r.cell_key, i)
        if r.mark in ("+", "?"):
            flagged.add(i)
        if r.mark == "x" and r.reason:
            details[i] = r.reason
    note = (f"{c} judged against {b} by bench compare's gate (threshold "
            f"{rc.result.gate.threshold_pct:g}%, alpha {rc.result.gate.alpha:g}). "
            + legend(rc.result.gate.alpha).replace("`", "")
            + f" Δ% is (candidate − baseline) / baseline; {CI_NOTE} (Welch, for Δ%).")
    return Table(f"{c} against {b}", cols, rows, numeric={2, 3, 4}, note=note,
                 flagged=flagged, details=details)


def comparison_summary(rcs: list[RunComparison]) -> list[str]:
    lines = []
    for rc in rcs:
        res = rc.result
        b, c = rc.baseline.tag, rc.candidate.tag
        verdict = res.headline()
        if verdict != "no regression":  # the verdict word stands out; its reason reads as text
            word, _, why = verdict.partition(":")
            verdict = word.upper() + (f":{why}" if why else "")
        head = (f"{c} against {b}: {verdict} — {res.count('+')} worse, "
                f"{res.count('-')} better, {res.count('~')} tied, "
                f"{res.count('?')} unreliable, {res.count('x')} not comparable "
                f"(threshold {res.gate.threshold_pct:g}%).")
        lines.append(head)
        for r in res.rows:
            if r.metric != "decode_tps" or r.change_pct is None:
                continue
            if r.mark == "~":
                lines.append(f"\t{r.cell}: decode tied ({change_text(r)}, not a significant "
                             "change beyond the threshold).")
            elif r.mark in ("+", "-"):
                word = "slower" if r.mark == "+" else "faster"
                lines.append(f"\t{r.cell}: {c} decodes {abs(r.change_pct):.1f}% {word} "
                             f"({change_text(r)}).")
            elif r.mark == "?":
                lines.append(f"\t{r.cell}: unreliable ({r.reason}).")
    return lines
