"""Run versus run: regression verdicts for CI (`bench compare BASELINE... CANDIDATE`).

Owns matching cells across runs by `cell_key`, pooling baseline runs, the regression gate and the
three renderings (terminal table, Markdown for a pull-request comment, JSON). The CLI only adapts
argparse to `Compare.run`; `compare_runs` is the same logic without files or printing.

Verdict marks: `+` worse, `-` better, `~` no significant change beyond the threshold, `x` not
comparable (the row's `reason` says why). See docs/compare.md.
"""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from bench.results import ResultsError, Run, is_run_folder, load_run
from bench.stats import mann_whitney_u, mean_ci, min_achievable_p, mwu_method, stdev

Fmt = Literal["table", "markdown", "json"]
Mark = Literal["+", "-", "~", "x"]
FORMATS: tuple[str, ...] = ("table", "markdown", "json")

HIGHER_IS_BETTER = frozenset(
    {"decode_tps", "prefill_tps", "e2e_tps", "tokens_per_j", "engine_prefill_tps",
     "engine_decode_tps"}
)
LOWER_IS_BETTER = frozenset(
    {"ttft_s", "prefill_s", "decode_s", "e2e_s", "itl_ms_p50", "itl_ms_p90", "itl_ms_p99",
     "energy_j", "energy_net_j", "prefill_energy_j", "decode_energy_j", "j_per_token",
     "j_per_prompt_token"}
)
METRICS = HIGHER_IS_BETTER | LOWER_IS_BETTER
# Metrics whose numbers depend on how energy was obtained; comparing a counter with an estimate
# would report the meter, not the change.
ENERGY_METRICS = frozenset(
    {"energy_j", "energy_net_j", "prefill_energy_j", "decode_energy_j", "j_per_token",
     "j_per_prompt_token", "tokens_per_j"}
)
DEFAULT_METRICS: tuple[str, ...] = ("decode_tps", "prefill_tps", "ttft_s", "j_per_token")
# Default metrics that are left out of a cell unless both sides measured them.
OPTIONAL_DEFAULTS = frozenset({"j_per_token"})

# Cell parameters shown in the description, with llama-bench-like labels.
_SETTINGS = (("n_threads", "t"), ("n_gpu_layers", "ngl"), ("n_ctx", "ctx"), ("n_batch", "b"),
             ("n_ubatch", "ub"), ("strategy", "strategy"), ("device", "dev"), ("dtype", "dtype"),
             ("attn_implementation", "attn"))
_PARAMS = ("model", "quant", "backend", "n_threads", "n_gpu_layers", "n_ctx", "n_batch",
           "n_ubatch", "flash_attn", "prompt_tokens", "prompt_id", "gen_tokens",
           # the rwkv and transformers backends' settings, and the context depth (#13)
           "strategy", "device", "dtype", "attn_implementation", "depth")


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

    threshold_pct: float = 5.0
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold_pct) and self.threshold_pct >= 0):
            raise CompareError(f"the threshold must be a percentage >= 0, got {self.threshold_pct}")
        if not 0.0 < self.alpha < 1.0:
            raise CompareError(f"alpha must be between 0 and 1, got {self.alpha}")

    @classmethod
    def parse(cls, text: str, alpha: float = 0.05) -> Gate:
        """`"5%"`, `"5"` or `"2.5 %"` -> a gate at that threshold."""
        raw = text.strip().removesuffix("%").strip()
        try:
            value = float(raw)
        except ValueError:
            raise CompareError(f"threshold {text!r} is not a percentage such as '5%'") from None
        return cls(value, alpha)

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


def parse_threshold_pct(text: str) -> float:
    """For argparse `type=`: "5%" -> 5.0."""
    try:
        return Gate.parse(text).threshold_pct
    except CompareError as e:
        raise ValueError(str(e)) from None


# --------------------------------------------------------------------------------------------
# Reading the two sides


@dataclass
class _Cell:
    key: str
    params: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)

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


def _cells(runs: Sequence[Run]) -> dict[str, _Cell]:
    """Trials pooled per cell_key, in first-seen order; cells with no usable trial kept empty."""
    cells: dict[str, _Cell] = {}
    for run in runs:
        for row in run.trials:
            key = row.get("cell_key")
            if not key:
                raise CompareError(
                    f"run {run.run_id} has trials without a cell_key; it was written by an older "
                    "bench, rerun it"
                )
            cell = cells.setdefault(key, _Cell(key, {k: row.get(k) for k in _PARAMS}))
            if _is_sample(row):
                cell.samples.append(row)
        # A cell that failed before any trial is only in the manifest; show it as not comparable.
        for entry in run.manifest.get("cells") or []:
            key = entry.get("cell_key")
            if key and key not in cells:
                params = entry.get("params") or {}
                cells[key] = _Cell(key, {k: params.get(k) for k in _PARAMS})
    return cells


def _machine(run: Run) -> tuple[str | None, str]:
    m = run.manifest.get("machine") or {}
    mid = m.get("id")
    return (str(mid) if mid else None), str(m.get("hostname") or "?")


def describe_cell(params: dict[str, Any]) -> str:
    """"smollm2-135m Q4_1 llama-cpp t=2 ngl=0 ctx=2048 pp128 tg64"."""
    parts = [str(params[k]) for k in ("model", "quant", "backend") if params.get(k)]
    parts += [f"{label}={params[k]}" for k, label in _SETTINGS if params.get(k) is not None]
    if params.get("flash_attn"):
        parts.append("fa")
    if params.get("prompt_tokens") is not None:
        parts.append(f"pp{params['prompt_tokens']}")
    elif params.get("prompt_id"):
        parts.append(str(params["prompt_id"]))
    if params.get("gen_tokens") is not None:
        parts.append(f"tg{params['gen_tokens']}")
    if params.get("depth"):
        parts.append(f"@d{params['depth']}")
    return " ".join(parts) or "?"


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
    runs = [load_run(f) for f in unique]
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
    return load_run(p)


# --------------------------------------------------------------------------------------------
# The comparison


@dataclass
class Row:
    """One cell x metric verdict; also the JSON row."""

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


@dataclass
class Comparison:
    rows: list[Row]
    gate: Gate
    baseline_runs: list[str]
    candidate_run: str
    machine_reason: str | None = None
    matched_cells: int = 0

    def count(self, mark: Mark) -> int:
        return sum(1 for r in self.rows if r.mark == mark)

    @property
    def comparable(self) -> int:
        return len(self.rows) - self.count("x")

    def verdict(self) -> Literal["regression", "no regression", "not comparable"]:
        if self.comparable == 0:
            return "not comparable"
        return "regression" if self.count("+") else "no regression"

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
            "exit_code": exit_code(self, warn_only),
            "worse": self.count("+"),
            "better": self.count("-"),
            "unchanged": self.count("~"),
            "not_comparable": self.count("x"),
            "threshold_pct": self.gate.threshold_pct,
            "alpha": self.gate.alpha,
            "warn_only": warn_only,
            "baseline_runs": self.baseline_runs,
            "candidate_run": self.candidate_run,
            "machine": self.machine_reason,
        }


def exit_code(comparison: Comparison, warn_only: bool = False) -> int:
    if comparison.comparable == 0:
        return 2
    return 1 if comparison.count("+") and not warn_only else 0


def _sd(values: list[float]) -> float | None:
    return stdev(values) if len(values) > 1 else None


def _metrics_for(
    metrics: Sequence[str] | None, sides: Sequence[_Cell | None]
) -> list[str]:
    if metrics is not None:
        return list(metrics)
    present = [c for c in sides if c is not None]
    return [
        m for m in DEFAULT_METRICS
        if m not in OPTIONAL_DEFAULTS or all(c.values(m) for c in present)
    ]


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

    base_cells = _cells(baseline)
    cand_cells = _cells([candidate])
    keys = list(cand_cells) + [k for k in base_cells if k not in cand_cells]

    # Two distinct cells with the same description would be ambiguous in the table.
    descriptions: dict[str, str] = {}
    for key in keys:
        cell = cand_cells.get(key) or base_cells[key]
        descriptions[key] = describe_cell(cell.params)
    seen: dict[str, int] = {}
    for d in descriptions.values():
        seen[d] = seen.get(d, 0) + 1
    for key, d in descriptions.items():
        if seen[d] > 1:
            descriptions[key] = f"{d} #{key[:8]}"

    rows: list[Row] = []
    for key in keys:
        b, c = base_cells.get(key), cand_cells.get(key)
        params = (c or b).params  # type: ignore[union-attr]
        for metric in _metrics_for(metrics, (b, c)):
            bv = b.values(metric) if b else []
            cv_ = c.values(metric) if c else []
            row = Row(
                cell_key=key, cell=descriptions[key], model=params.get("model"),
                quant=params.get("quant"), backend=params.get("backend"), metric=metric,
                better="higher" if metric in HIGHER_IS_BETTER else "lower",
                baseline_n=len(bv), baseline_mean=math.fsum(bv) / len(bv) if bv else None,
                baseline_sd=_sd(bv), candidate_n=len(cv_),
                candidate_mean=math.fsum(cv_) / len(cv_) if cv_ else None, candidate_sd=_sd(cv_),
                change_pct=None, test=None, p_value=None, significant=None, mark="x",
            )
            row.reason = _not_comparable(machine_reason, metric, b, c, bv, cv_)
            if row.reason is None:
                j = gate.judge(metric in HIGHER_IS_BETTER, bv, cv_)
                row.change_pct, row.test, row.p_value, row.significant, row.mark = (
                    j.change_pct, j.test, j.p_value, j.significant, j.mark
                )
            rows.append(row)

    matched = sum(1 for k in keys if k in base_cells and k in cand_cells)
    return Comparison(
        rows, gate, [r.run_id for r in baseline], candidate.run_id, machine_reason, matched
    )


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
    if metric in ENERGY_METRICS:
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


def _num(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 100:
        return f"{v:.1f}"
    return f"{v:.4g}"


def _spread(v: float) -> str:
    # Two significant digits: enough to judge noise, short enough to read.
    if v == 0:
        return "0"
    return f"{round(v, 1 - math.floor(math.log10(abs(v)))):g}"


def _mean_sd(mean: float | None, sd: float | None, n: int) -> str:
    if mean is None:
        return "-"
    spread = f" ± {_spread(sd)}" if sd is not None else ""
    return f"{_num(mean)}{spread} (n={n})"


def _change(row: Row) -> str:
    if row.change_pct is None:
        return "-"
    text = f"{row.change_pct:+.1f}%"
    return "0.0%" if text in ("+0.0%", "-0.0%") else text


def _test(row: Row) -> str:
    if row.test is None:
        return "-"
    if row.test == "ci-overlap":
        return "CI"
    return f"p={row.p_value:.2g}" if row.p_value is not None else "-"


def _verdict_line(comparison: Comparison, warn_only: bool) -> str:
    v = comparison.verdict()
    word = {"regression": "REGRESSION", "no regression": "no regression",
            "not comparable": "NOT COMPARABLE"}[v]
    if v == "regression" and warn_only:
        word += " (warn only)"
    g = comparison.gate
    return (
        f"bench compare: {word}: {comparison.count('+')} worse, {comparison.count('-')} better, "
        f"{comparison.count('~')} unchanged, {comparison.count('x')} not comparable "
        f"(threshold {g.threshold_pct:g}%, alpha {g.alpha:g})"
    )


def _runs_line(comparison: Comparison) -> str:
    base = comparison.baseline_runs
    pooled = f" ({len(base)} runs pooled)" if len(base) > 1 else ""
    return f"baseline: {', '.join(base)}{pooled}; candidate: {comparison.candidate_run}"


def _with_first(rows: list[Row]) -> list[tuple[Row, bool]]:
    """Each row with whether it opens its cell, so a cell is named once."""
    return [(r, i == 0 or rows[i - 1].cell_key != r.cell_key) for i, r in enumerate(rows)]


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
    for name, justify in (("cell", "left"), ("metric", "left"), ("baseline", "right"),
                          ("candidate", "right"), ("change", "right"), ("test", "right"),
                          ("mark", "center"), ("note", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    styles = {"+": "bold red", "-": "bold green", "~": "", "x": "yellow"}
    for r, first in _with_first(comparison.rows):
        note = r.reason if r.reason and r.reason != comparison.machine_reason else ""
        table.add_row(
            Text(r.cell if first else ""),
            Text(r.metric),
            Text(_mean_sd(r.baseline_mean, r.baseline_sd, r.baseline_n)),
            Text(_mean_sd(r.candidate_mean, r.candidate_sd, r.candidate_n)),
            Text(_change(r)),
            Text(_test(r)),
            Text(r.mark, style=styles[r.mark]),
            Text(note),
        )
    console.print(table)
    console.print(Text(_verdict_line(comparison, warn_only)))


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(comparison: Comparison, warn_only: bool = False) -> str:
    lines = [f"**{_verdict_line(comparison, warn_only)}**", "", _md_cell(_runs_line(comparison))]
    if comparison.machine_reason:
        lines += ["", f"Not comparable: {_md_cell(comparison.machine_reason)}."]
    lines += [
        "",
        "| cell | metric | baseline | candidate | change | test | mark | note |",
        "|---|---|--:|--:|--:|--:|:-:|---|",
    ]
    for r, first in _with_first(comparison.rows):
        note = r.reason if r.reason and r.reason != comparison.machine_reason else ""
        cells = [
            r.cell if first else "",
            r.metric,
            _mean_sd(r.baseline_mean, r.baseline_sd, r.baseline_n),
            _mean_sd(r.candidate_mean, r.candidate_sd, r.candidate_n),
            _change(r),
            _test(r),
            f"`{r.mark}`",
            note,
        ]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    legend = (
        "`+` worse, `-` better (beyond the threshold and significant), `~` no significant change "
        "beyond the threshold, `x` not comparable. p: Mann-Whitney U; CI: non-overlap of "
        f"{(1 - comparison.gate.alpha) * 100:g}% confidence intervals (too few trials for the "
        "U test)."
    )
    lines += ["", legend]
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
        threshold_pct: float | str = 5.0,
        metrics: Sequence[str] | None = None,
        alpha: float = 0.05,
        fmt: Fmt = "table",
        warn_only: bool = False,
        last: int | None = None,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> int:
        """Print the comparison to `out`; return 0 (no regression), 1 (regression, unless
        `warn_only`) or 2 (usage or data error, one sentence on `err`)."""
        out = out if out is not None else sys.stdout
        err = err if err is not None else sys.stderr
        try:
            if fmt not in FORMATS:
                raise CompareError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
            if isinstance(baseline, (str, Path)):
                baseline = [baseline]
            if isinstance(threshold_pct, str):
                gate = Gate.parse(threshold_pct, float(alpha))
            else:
                gate = Gate(float(threshold_pct), float(alpha))
            base_runs = collect_runs(baseline, last)
            cand_run = load_candidate(candidate)
            comparison = compare_runs(base_runs, cand_run, gate, metrics)
        except (CompareError, ResultsError) as e:
            print(f"bench compare: {e}", file=err)
            return 2
        if fmt == "json":
            out.write(render_json(comparison, warn_only))
        elif fmt == "markdown":
            out.write(render_markdown(comparison, warn_only))
        else:
            render_table(comparison, out, warn_only)
        problem = comparison.problem()
        if problem:
            print(f"bench compare: {problem}", file=err)
        return exit_code(comparison, warn_only)
