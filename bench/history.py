"""History from the store: each metric of a cell over commits per machine, and its change points.

`bench history` reads the results store (bench/store.py), builds one series per machine x cell x
metric (a point per run, or per commit, with its mean and 95 % confidence interval), finds step
changes with Apache Otava's E-divisive detector (the method of Hunter, Fleming et al. 2023) and
writes PNG plots with an HTML and a Markdown page. `store_baseline` gives `compare` the last N runs
of each cell on the candidate's machine. See docs/store.md.
"""
from __future__ import annotations

import html
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from bench.columns import METRICS, cell_label, direction
from bench.compare import CompareError
from bench.results import Run
from bench.stats import mean_ci
from bench.store import DEFAULT_STORE, Store, StoreError

By = Literal["commit", "time"]
DEFAULT_METRICS: tuple[str, ...] = ("decode_tps", "prefill_tps", "ttft_s", "j_per_token")
# Otava's defaults for the split/merge passes; a change must be this significant to be listed.
DEFAULT_MAX_PVALUE = 0.001
WINDOW_LEN = 30


class HistoryError(Exception):
    """A usage or data problem; the message is one sentence for the user."""


@dataclass
class Point:
    """One run (or one commit's runs pooled): the metric's mean and its 95 % CI."""

    label: str  # the short commit, or the run id where no commit is known
    commit: str | None
    run_ids: list[str]
    started_utc: datetime | None
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return math.fsum(self.values) / len(self.values)

    @property
    def half_width(self) -> float | None:
        if len(self.values) < 2:
            return None
        return mean_ci(self.values).half_width


@dataclass
class ChangePoint:
    """A step change: it began at `points[index]` (that commit is the first one after it)."""

    index: int
    commit: str | None
    label: str
    mean_before: float
    mean_after: float
    change_pct: float
    p_value: float
    worse: bool  # the direction of the metric makes this a regression


@dataclass
class Series:
    machine: str
    machine_id: str | None
    cell_key: str
    cell: str
    metric: str
    points: list[Point] = field(default_factory=list)
    changes: list[ChangePoint] = field(default_factory=list)

    @property
    def higher_is_better(self) -> bool:
        return direction(self.metric) == "higher"

    @property
    def slug(self) -> str:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", self.machine)[:40]
        return f"{self.metric}-{name}-{self.cell_key[:8]}"


# ---------------------------------------------------------------------------------------------
# Reading the store


def _trial_columns(store: Store) -> set[str]:
    if "trials" not in store.tables():
        return set()
    return {r["column_name"] for r in store.records(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'trials'"
    )}


def _cell_names(store: Store) -> dict[str, str]:
    names: dict[str, str] = {}
    for r in store.records("SELECT cell_key, params FROM cells WHERE cell_key IS NOT NULL"):
        try:
            params = json.loads(r["params"] or "{}")
        except ValueError:
            params = {}
        names.setdefault(r["cell_key"], cell_label(params))
    return names


def load_series(
    store: Store, metrics: Sequence[str] = DEFAULT_METRICS, by: By = "commit",
    machine: str | None = None, cell_key: str | None = None,
) -> list[Series]:
    """One series per machine x cell x metric, points in time order (commits by first run)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise HistoryError(
            f"unknown metric {unknown[0]!r}; choose from {', '.join(sorted(METRICS))}"
        )
    if by not in ("commit", "time"):
        raise HistoryError(f"--by must be commit or time, not {by!r}")
    have = _trial_columns(store)
    if not have:
        raise HistoryError("the store holds no trials yet; add runs with `bench store add`")
    names = _cell_names(store)
    out: list[Series] = []
    for metric in metrics:
        if metric not in have:
            continue
        where = ["t.status = 'ok'", "NOT coalesce(t.warmup, false)", "t.cell_key IS NOT NULL",
                 f't."{metric}" IS NOT NULL', f'isfinite(t."{metric}")']
        params: list[Any] = []
        if machine is not None:
            where.append("(t.machine = ? OR t.machine_id = ?)")
            params += [machine, machine]
        if cell_key is not None:
            where.append("t.cell_key LIKE ?")
            params.append(cell_key + "%")
        rows = store.records(
            f'SELECT t.machine, t.machine_id, t.cell_key, r.run_id, r.git_commit, r.started_utc, '
            f't."{metric}" AS v FROM trials t JOIN runs r USING (run_key) '
            f"WHERE {' AND '.join(where)} ORDER BY r.started_utc, r.run_id, t.trial",
            params,
        )
        by_series: dict[tuple[str, str | None, str], Series] = {}
        point_of: dict[tuple[Any, ...], Point] = {}
        for row in rows:
            k = (str(row["machine"]), row["machine_id"], row["cell_key"])
            series = by_series.get(k)
            if series is None:
                series = by_series[k] = Series(k[0], k[1], k[2], names.get(k[2], k[2]), metric)
            commit, run_id = row["git_commit"], str(row["run_id"])
            # By commit, every run of one commit is one point (a commit measured again joins
            # it); by time, or where no commit is known, each run is its own point.
            pkey = (*k, "commit", commit) if by == "commit" and commit else (*k, "run", run_id)
            point = point_of.get(pkey)
            if point is None:
                label = commit[:8] if commit and by == "commit" else run_id
                point = point_of[pkey] = Point(label, commit, [], row["started_utc"], [])
                series.points.append(point)
            if run_id not in point.run_ids:
                point.run_ids.append(run_id)
            point.values.append(float(row["v"]))
        out.extend(by_series.values())
    return out


# ---------------------------------------------------------------------------------------------
# Change points


def _otava() -> Any:
    try:
        from otava.analysis import compute_change_points
    except ImportError as e:
        raise HistoryError(
            "change points need Apache Otava's detector; install it without its command-line "
            "tool's requirements (cloud clients, a numpy==2.2 pin) with "
            "pip install --no-deps 'apache-otava>=0.8' beside bench[history]"
        ) from e
    return compute_change_points


def detect(
    series: Series, max_pvalue: float = DEFAULT_MAX_PVALUE, min_change_pct: float = 0.0
) -> list[ChangePoint]:
    """E-divisive change points of the series of point means (Otava's split + merge passes);
    each with its size and the t-test p-value of the segments on either side."""
    means = [p.mean for p in series.points]
    if len(means) < 3:
        return []
    compute = _otava()
    found, _weak = compute(
        means, window_len=WINDOW_LEN, max_pvalue=max_pvalue, min_magnitude=min_change_pct / 100.0
    )
    changes = []
    for cp in found:
        i = int(cp.index)
        st = cp.stats
        before, after = float(st.mean_1), float(st.mean_2)
        pct = (after / before - 1.0) * 100.0 if before else math.inf
        worse = after < before if series.higher_is_better else after > before
        p = series.points[i]
        changes.append(ChangePoint(i, p.commit, p.label, before, after, pct, float(st.pvalue),
                                   worse))
    series.changes = changes
    return changes


# ---------------------------------------------------------------------------------------------
# Baseline for compare


def store_baseline(store_path: str | Path, candidate: Run, last: int = 5) -> list[Run]:
    """The last `last` runs of each of the candidate's cells on the candidate's machine, from the
    store, as runs `compare` can pool (the candidate itself left out)."""
    if last < 1:
        raise CompareError(f"--last must be at least 1, got {last}")
    machine = candidate.manifest.get("machine") or {}
    mid = machine.get("id")
    if not mid:
        raise CompareError(f"candidate {candidate.run_id} has no machine id in its manifest")
    keys = sorted({str(r["cell_key"]) for r in candidate.trials if r.get("cell_key")})
    try:
        with Store(store_path, read_only=True) as s:
            rows: list[dict[str, Any]] = []
            for key in keys:
                recent = s.records(
                    "SELECT DISTINCT t.run_key, r.started_utc, r.run_id FROM trials t "
                    "JOIN runs r USING (run_key) WHERE t.machine_id = ? AND t.cell_key = ? "
                    "AND r.run_id <> ? ORDER BY r.started_utc DESC, r.run_id DESC LIMIT ?",
                    [mid, key, candidate.run_id, last],
                )
                if not recent:
                    continue
                marks = ", ".join("?" for _ in recent)
                rows += s.records(
                    f"SELECT t.*, r.run_id AS store_run_id, r.started_utc AS store_started "
                    f"FROM trials t JOIN runs r USING (run_key) WHERE t.machine_id = ? "
                    f"AND t.cell_key = ? AND t.run_key IN ({marks})",
                    [mid, key, *[r["run_key"] for r in recent]],
                )
    except StoreError as e:
        raise CompareError(str(e)) from None
    if not rows:
        raise CompareError(
            f"the store {store_path} has no run of the candidate's cells on its machine "
            f"({machine.get('hostname') or mid}); add some with `bench store add`"
        )
    runs: dict[str, Run] = {}
    for row in rows:
        rid = str(row.pop("store_run_id"))
        started = row.pop("store_started")
        run = runs.get(rid)
        if run is None:
            manifest: dict[str, Any] = {
                "run_id": rid,
                "started_utc": started.isoformat() if started else None,
                "machine": {"id": row.get("machine_id"), "hostname": row.get("machine")},
                "cells": [],
            }
            run = runs[rid] = Run(Path(store_path), manifest, [])
        run.trials.append({k: v for k, v in row.items() if v is not None or k == "error"})
    return sorted(runs.values(), key=lambda r: (str(r.manifest["started_utc"]), r.run_id))


# ---------------------------------------------------------------------------------------------
# Plots and pages


def plot_series(series: Series, folder: Path) -> str:
    """A PNG of the series with its CI per point and its change points; returns the file name."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax = fig.subplots()
    xs = list(range(len(series.points)))
    ys = [p.mean for p in series.points]
    err = [p.half_width if p.half_width is not None and math.isfinite(p.half_width) else 0.0
           for p in series.points]
    ax.errorbar(xs, ys, yerr=err, fmt="o-", ms=4, lw=1, capsize=3, color="#1f77b4",
                ecolor="#7aa6d6", label="mean ± 95% CI")
    for c in series.changes:
        colour = "#d62728" if c.worse else "#2ca02c"
        ax.axvline(c.index - 0.5, color=colour, ls="--", lw=1)
        ax.annotate(f"{c.change_pct:+.1f}% at {c.label}", (c.index - 0.5, max(ys)),
                    color=colour, fontsize=8, rotation=90, va="top", ha="right")
    ax.set_xticks(xs)
    ax.set_xticklabels([p.label for p in series.points], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(series.metric)
    ax.set_title(f"{series.metric}: {series.cell} on {series.machine}", fontsize=9)
    ax.grid(alpha=0.3)
    name = f"history-{series.slug}.png"
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / name, dpi=110)
    return name


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _change_rows(all_series: Sequence[Series]) -> list[tuple[Series, ChangePoint]]:
    return [(s, c) for s in all_series for c in s.changes]


def render_markdown(all_series: Sequence[Series], images: dict[str, str], threshold_pct: float
                    ) -> str:
    lines = ["# bench history", ""]
    changes = _change_rows(all_series)
    if changes:
        lines += ["| machine | cell | metric | began at | before | after | change | p | verdict |",
                  "|---|---|---|---|--:|--:|--:|--:|---|"]
        for s, c in changes:
            verdict = _verdict(c, threshold_pct)
            lines.append(
                f"| {s.machine} | {s.cell} | {s.metric} | {c.commit or c.label} | "
                f"{_fmt(c.mean_before)} | {_fmt(c.mean_after)} | {c.change_pct:+.1f}% | "
                f"{c.p_value:.2g} | {verdict} |"
            )
    else:
        lines.append("No change points found.")
    lines.append("")
    for s in all_series:
        lines += [f"## {s.metric}: {s.cell} on {s.machine}", "", f"![{s.slug}]({images[s.slug]})",
                  ""]
    return "\n".join(lines)


def render_html(all_series: Sequence[Series], images: dict[str, str], threshold_pct: float
                ) -> str:
    e = html.escape
    parts = ["<!doctype html><meta charset='utf-8'><title>bench history</title>",
             ("<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px}"
              "table{border-collapse:collapse}tr:nth-child(even){background:#f4f4f4}</style>"),
             "<h1>bench history</h1>"]
    changes = _change_rows(all_series)
    if changes:
        parts.append("<table><tr><th>machine</th><th>cell</th><th>metric</th><th>began at</th>"
                     "<th>before</th><th>after</th><th>change</th><th>p</th><th>verdict</th></tr>")
        for s, c in changes:
            parts.append(
                f"<tr><td>{e(s.machine)}</td><td>{e(s.cell)}</td><td>{e(s.metric)}</td>"
                f"<td><code>{e(c.commit or c.label)}</code></td><td>{_fmt(c.mean_before)}</td>"
                f"<td>{_fmt(c.mean_after)}</td><td>{c.change_pct:+.1f}%</td>"
                f"<td>{c.p_value:.2g}</td><td>{e(_verdict(c, threshold_pct))}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>No change points found.</p>")
    for s in all_series:
        parts.append(f"<h2>{e(s.metric)}: {e(s.cell)} on {e(s.machine)}</h2>"
                     f"<img src='{e(images[s.slug])}' alt='{e(s.slug)}'>")
    return "\n".join(parts) + "\n"


def _verdict(c: ChangePoint, threshold_pct: float) -> str:
    if c.worse and abs(c.change_pct) > threshold_pct:
        return "REGRESSION"
    if c.worse:
        return f"worse (within {threshold_pct:g}%)"
    return "better"


# ---------------------------------------------------------------------------------------------
# The command


def history(
    store: str | Path = DEFAULT_STORE,
    out: str | Path = "reports/history",
    metrics: Sequence[str] | None = None,
    by: By = "commit",
    machine: str | None = None,
    cell: str | None = None,
    threshold_pct: float = 5.0,
    fail_recent: int | None = None,
    max_pvalue: float = DEFAULT_MAX_PVALUE,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """`bench history`: plots and pages in `out`, change points listed on stdout. Returns 1 when
    `fail_recent` is set and a regression above `threshold_pct` began within the newest
    `fail_recent` points of a series, 2 on a usage or data error, else 0."""
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    try:
        if not (math.isfinite(threshold_pct) and threshold_pct >= 0):
            raise HistoryError(f"the threshold must be a percentage >= 0, got {threshold_pct}")
        with Store(store, read_only=True) as s:
            all_series = load_series(s, metrics or DEFAULT_METRICS, by, machine, cell)
        if not all_series:
            raise HistoryError("no successful trials match in the store (check --machine/--cell)")
        for series in all_series:
            detect(series, max_pvalue)
        folder = Path(out)
        images = {s.slug: plot_series(s, folder) for s in all_series}
        threshold = float(threshold_pct)
        (folder / "history.md").write_text(render_markdown(all_series, images, threshold))
        (folder / "history.html").write_text(render_html(all_series, images, threshold))
    except (HistoryError, StoreError) as e:
        print(f"bench history: {e}", file=stderr)
        return 2
    except OSError as e:
        print(f"bench history: cannot write {out} ({e.strerror}); choose another --out",
              file=stderr)
        return 3
    failing = []
    print(f"{len(all_series)} series; plots and pages in {folder}", file=stdout)
    for series in all_series:
        for c in series.changes:
            verdict = _verdict(c, threshold)
            print(
                f"{verdict}: {series.metric} {c.change_pct:+.1f}% "
                f"({_fmt(c.mean_before)} -> {_fmt(c.mean_after)}, p={c.p_value:.2g}) "
                f"began at {c.commit or c.label} on {series.machine}: {series.cell}",
                file=stdout,
            )
            recent = fail_recent is not None and c.index >= len(series.points) - fail_recent
            if verdict == "REGRESSION" and recent:
                failing.append(c)
    if not any(s.changes for s in all_series):
        print("no change points", file=stdout)
    if failing:
        print(f"bench history: {len(failing)} regression(s) above {threshold:g}% began within "
              f"the newest {fail_recent} points", file=stderr)
        return 1
    return 0
