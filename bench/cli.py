"""`python -m bench`: argparse adapts the command line to plain functions.

Exit codes (all commands): 0 success; 1 finished, but some cells failed (run) or a regression
was found (compare); 2 usage, config or data error; 3 results could not be written;
130 interrupted (finished cells are saved).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress as RichProgress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

EXIT_OK, EXIT_CELLS_FAILED, EXIT_USAGE, EXIT_WRITE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEFAULT_CONFIG = Path("configs/smoke.yaml")


def _console(stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    # In a log or a pipe, rich would fold tables to 80 columns; a wide fixed width keeps
    # the summary readable there (COLUMNS still wins when set).
    width = None if probe.is_terminal or os.environ.get("COLUMNS") else 160
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    _console(stderr=True).print(f"[bold red]error:[/] {escape(message)}")
    return code


def _default_config() -> Path:
    if DEFAULT_CONFIG.exists():
        return DEFAULT_CONFIG
    # Installed without the repository: the packaged copy of the default.
    import importlib.resources

    return Path(str(importlib.resources.files("bench") / "configs" / "smoke.yaml"))


# -- run ----------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from bench.config import ConfigError, load_config
    from bench.results import ResultsError
    from bench.sweep import expand

    config_path = Path(args.config) if args.config else _default_config()
    try:
        loaded = load_config(config_path)
        cells = expand(loaded.config)
    except ConfigError as e:
        return _fail(str(e))
    if args.dry_run:
        return dry_run(loaded, cells, online=args.online)
    from bench.results import load_run
    from bench.runner import Runner, resume_hint

    resume = Path(args.resume) if args.resume else None
    if resume is not None:
        try:
            load_run(resume)
        except ResultsError as e:
            return _fail(f"cannot resume: {e}")
    console = _console()
    runner = Runner(loaded, cells, Path(args.out), progress=None, resume=resume)
    trials_per_cell = loaded.config.trials.warmup + loaded.config.trials.max_repeat
    console.print(
        f"[bold]bench run[/] {escape(str(config_path))}: {len(cells)} cells × {trials_per_cell} "
        f"trials ({loaded.config.trials.warmup} warm-up) → {escape(str(runner.folder))}"
    )
    display = _progress(console, len(cells) * trials_per_cell)
    with display as prog:
        runner.progress = prog
        try:
            outcome = runner.run()
        except ResultsError as e:
            display.stop()
            return _fail(str(e), EXIT_WRITE)
    print_summary(console, outcome.trials, outcome.manifest)
    for w in outcome.manifest.get("guards", {}).get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(w)}")
    flagged = [c for c in outcome.manifest.get("cells", []) if c.get("warnings")]
    for c in flagged:
        for w in c["warnings"]:
            console.print(f"[yellow]warning:[/] cell {c['cell_id']}: {escape(w)}")
    console.print(f"results: {escape(str(outcome.folder))}")
    if outcome.interrupted:
        console.print(
            "[yellow]interrupted:[/] finished cells are saved in the folder above; resume with\n"
            f"  {escape(resume_hint(outcome.folder, config_path))}"
        )
        return EXIT_INTERRUPTED
    if outcome.cells_failed:
        console.print(
            f"[red]{outcome.cells_failed} of {len(cells)} cells failed[/]; "
            "the errors are in the table above and in manifest.json"
        )
        return EXIT_CELLS_FAILED
    return EXIT_OK


class _progress:
    """A progress bar in a terminal (cell i of N, trial j, elapsed, ETA); plain lines in a log."""

    def __init__(self, console: Console, total_trials: int):
        self.console = console
        self.total = total_trials
        self.live = console.is_terminal
        self.bar: RichProgress | None = None
        self.t0 = time.perf_counter()
        self.done = 0

    def __enter__(self) -> Any:
        from bench.runner import Progress

        if self.live:
            self.bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("trials"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task("starting", total=self.total)
            self.bar.start()
        return Progress(
            on_cell_start=self._cell_start,
            on_trial=self._trial,
            on_cell_end=self._cell_end,
            on_message=self._message,
        )

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _cell_start(self, cell: Any, i: int, n: int) -> None:
        self.cell_label = f"cell {i + 1}/{n} {cell.describe()}"
        self.cell_trials_left = None
        if not self.live:
            self.console.print(escape(self.cell_label))

    def _trial(self, cell: Any, j: int, n: int, warm: bool) -> None:
        if self.bar is not None:
            if j > 0:
                self.bar.advance(self.task)
            kind = "warm-up" if warm else "trial"
            self.bar.update(
                self.task, description=escape(f"{self.cell_label} · {kind} {j + 1}/{n}")
            )
        self.cell_trials = n
        self.cell_j = j

    def _cell_end(self, cell: Any, status: str, err: str | None) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)
            # Trials a failed cell never ran still count towards the bar.
            left = getattr(self, "cell_trials", 1) - getattr(self, "cell_j", 0) - 1
            if left > 0:
                self.bar.advance(self.task, left)
        if status != "ok":
            self.console.print(f"[red]cell {cell.cell_id} failed:[/] {escape(str(err))}")

    def _message(self, msg: str) -> None:
        self.console.print(escape(msg))


def _fmt_ci(s: Any, digits: int = 1, scale: float = 1.0) -> str:
    if s is None:
        return "—"
    mean = s.mean * scale
    if s.n < 2 or s.half_width != s.half_width:  # nan
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {s.half_width * scale:.{digits}f}"


def print_summary(console: Console, trials: list[dict[str, Any]], manifest: dict[str, Any]) -> None:
    from bench.stats import mean_ci

    by_cell: dict[str, list[dict[str, Any]]] = defaultdict(list)
    errors: dict[str, str] = {}
    for r in trials:
        if r.get("status") == "ok" and not r.get("warmup"):
            by_cell[r["cell_id"]].append(r)
        elif r.get("status") != "ok":
            errors.setdefault(r["cell_id"], r.get("error") or "error")
    estimated = any(r.get("energy_method") == "estimate" for r in trials)
    table = Table(title="per cell: mean ± 95% CI over trials (warm-ups excluded)")
    for col in ("cell", "model", "backend · settings", "workload", "n", "prefill t/s",
                "decode t/s", "TTFT ms", "J/token" + (" (estimate)" if estimated else ""),
                "overhead %"):
        table.add_column(col, overflow="fold")

    def summ(rows: list[dict[str, Any]], key: str) -> Any:
        vals = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
        return mean_ci(vals) if vals else None

    for entry in manifest.get("cells", []):
        cid = entry["cell_id"]
        p = entry["params"]
        model = p["model"] + (f" {p['quant']}" if p.get("quant") else "")
        settings = p["backend"] + "".join(
            f" {short}={p[k]}" for k, short in (("n_threads", "t"), ("n_gpu_layers", "ngl"))
            if p.get(k) is not None
        )
        work = (p["prompt_id"] if p.get("prompt_tokens") is None else f"pp{p['prompt_tokens']}")
        if p.get("lang"):
            work = f"[{p['lang']}] {work}"
        work += f" tg{p['gen_tokens']}"
        if p.get("depth"):  # context depth (#13): cells that differ only by it stay apart
            work += f" @d{p['depth']}"
        rows = by_cell.get(cid, [])
        if not rows:
            err = errors.get(cid) or entry.get("error") or entry.get("status")
            table.add_row(
                escape(cid), escape(model), settings, escape(work), "0",
                f"[red]{escape(str(err))}[/]", "", "", "", "",
            )
            continue
        jpt = summ(rows, "j_per_token")
        ov = summ(rows, "overhead_decode_pct")
        table.add_row(
            escape(cid),
            escape(model),
            settings,
            escape(work),
            str(len(rows)),
            _fmt_ci(summ(rows, "prefill_tps")),
            _fmt_ci(summ(rows, "decode_tps")),
            _fmt_ci(summ(rows, "ttft_s"), 1, 1000.0),
            _fmt_ci(jpt, 4) if jpt else "—",
            f"{ov.mean:.2f}" if ov else "—",
        )
    console.print(table)
    methods = sorted({r.get("energy_method") for r in trials if r.get("energy_method")})
    if "estimate" in methods:
        console.print(
            "[yellow]energy is ESTIMATED[/] from CPU time × a per-core power figure: no energy "
            "meter can be read here (see `python -m bench doctor`)"
        )
    elif not methods:
        console.print("energy: not measured (no meter)")


# -- dry run ------------------------------------------------------------------------------------


def _size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return str(n)


def dry_run(loaded: Any, cells: list[Any], online: bool = False) -> int:
    from bench.models import locate, remote_size
    from bench.sweep import groups

    console = _console()
    cfg = loaded.config
    console.print(
        f"[bold]{escape(cfg.name)}[/]: {len(cells)} cells in {len(groups(cells))} model loads, "
        f"{cfg.trials.warmup} warm-up + {cfg.trials.max_repeat} trials each (config valid)"
    )
    missing: set[str] = set()
    for group in groups(cells):
        loc = locate(group[0].variant)
        if loc.ok:
            state = f"[green]local[/] {escape(str(loc.path))} ({_size(loc.size_bytes)})"
        else:
            missing.add(group[0].variant.key)
            size = remote_size(group[0].variant) if online and loc.downloadable else None
            hint = "" if online else " (pass --online to ask the Hub for sizes)"
            known = f"; download {_size(size)}" if size else (hint if loc.downloadable else "")
            state = f"[yellow]not local[/]: {escape(str(loc.problem))}{escape(known)}"
        console.print(f"load {escape(group[0].variant.key)} ({group[0].backend}): {state}")
        for c in group:
            console.print(f"  {c.cell_id}  {escape(c.describe())}")
    if missing:
        console.print(
            f"{len(missing)} model file(s) not local yet; `bench run` fetches Hub models"
        )
    return EXIT_OK


# -- doctor -------------------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    from bench.config import ConfigError, load_config
    from bench.doctor import doctor

    settings = None
    if args.config:
        try:
            settings = load_config(args.config).config.energy
        except ConfigError as e:
            return _fail(str(e))
    return doctor(_console(), settings)


# -- compare ------------------------------------------------------------------------------------


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.compare import Compare

    threshold = args.threshold.strip().rstrip("%")
    try:
        threshold_pct = float(threshold)
    except ValueError:
        return _fail(f"--threshold {args.threshold!r} is not a percentage such as 5%")
    return Compare().run(
        baseline=args.baseline,
        candidate=args.candidate,
        threshold_pct=threshold_pct,
        metrics=args.metric or None,
        fmt=args.format,
        warn_only=args.warn_only,
    )


# -- report, export -------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import Report

    return Report().run(runs=args.runs, out=args.out)


def cmd_export(args: argparse.Namespace) -> int:
    from bench.export import Export

    return Export().run(runs=args.runs, fmt=args.format, out=args.out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench",
        description="Speed and energy of local language models, measured on this machine.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a sweep (default: configs/smoke.yaml)")
    r.add_argument("config", nargs="?", help="YAML config (default: configs/smoke.yaml)")
    r.add_argument("--out", default="results", help="folder for run folders (default: results)")
    r.add_argument("--dry-run", action="store_true", help="validate and list cells; run nothing")
    r.add_argument("--online", action="store_true", help="with --dry-run: ask the Hub for sizes")
    r.add_argument(
        "--resume", metavar="RUN_FOLDER",
        help="continue an interrupted run: keep its finished cells, run the rest",
    )
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("doctor", help="what can be measured here, and why not")
    d.add_argument("config", nargs="?", help="a config whose energy settings to use")
    d.set_defaults(func=cmd_doctor)

    c = sub.add_parser("compare", help="compare two runs; exit 1 on a regression")
    c.add_argument("baseline", nargs="+", help="baseline run folder(s), or a folder of runs")
    c.add_argument("candidate", help="candidate run folder")
    c.add_argument("--threshold", default="5%", help="smallest change that counts (default 5%%)")
    c.add_argument("--metric", action="append", help="metric to compare (repeatable)")
    c.add_argument("--format", choices=["table", "markdown", "json"], default="table")
    c.add_argument("--warn-only", action="store_true", help="report regressions but exit 0")
    c.set_defaults(func=cmd_compare)

    rp = sub.add_parser("report", help="HTML + Markdown + PNG report of one or more runs")
    rp.add_argument("runs", nargs="+", help="run folder(s), or a folder of runs")
    rp.add_argument("--out", help="output folder (default: reports/<run_id>)")
    rp.set_defaults(func=cmd_report)

    ex = sub.add_parser("export", help="results for github-action-benchmark or Bencher")
    ex.add_argument("runs", nargs="+", help="run folder(s), or a folder of runs")
    ex.add_argument("--format", required=True, choices=["github-action-benchmark", "bencher"])
    ex.add_argument("--out", required=True, help="output folder (or .json file for bencher)")
    ex.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
