"""`bench run --dry-run`: the validated sweep, its model files and what is missing."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from bench.cli.base import EXIT_OK
from bench.cli.hints import fit_install_hints


def _size(n: float | None) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return str(n)


def dry_run(
    console: Console, loaded: Any, cells: list[Any], online: bool = False,
    results: Path | None = None,
) -> int:
    from bench.cli.estimate import SYNTHETIC_WRITE_BPS, duration, plan
    from bench.models import locate, remote_size
    from bench.sweep import groups

    cfg = loaded.config
    console.print(
        f"[bold]{escape(cfg.name)}[/]: {len(cells)} cells in {len(groups(cells))} model loads, "
        f"{cfg.trials.warmup} warm-up + {cfg.trials.max_repeat} trials each (config valid)"
    )
    missing: set[str] = set()
    synthetic: set[str] = set()
    for group in groups(cells):
        loc = locate(group[0].variant)
        if loc.ok:
            state = f"[green]local[/] {escape(str(loc.path))} ({_size(loc.size_bytes)})"
        elif group[0].variant.spec.synthetic is not None:
            # Written here on first use: nothing to ask the Hub; its size is known already.
            synthetic.add(group[0].variant.key)
            known = f" ({_size(loc.size_bytes)})" if loc.size_bytes else ""
            state = f"[yellow]not local[/]: {escape(str(loc.problem))}{escape(known)}"
        else:
            missing.add(group[0].variant.key)
            size = remote_size(group[0].variant) if online and loc.downloadable else None
            hint = "" if online else " (pass --online to ask the Hub for sizes)"
            known = f"; download {_size(size)}" if size else (hint if loc.downloadable else "")
            problem = fit_install_hints(str(loc.problem))
            state = f"[yellow]not local[/]: {escape(problem)}{escape(known)}"
        console.print(f"load {escape(group[0].variant.key)} ({group[0].backend}): {state}")
        for c in group:
            console.print(f"  {c.cell_id}  {escape(c.describe())}")
    if missing:
        console.print(
            f"{len(missing)} model file(s) not local yet; `bench run` fetches Hub models"
        )
    if synthetic:
        console.print(
            f"{len(synthetic)} synthetic model(s) not written yet; `bench run` writes them to "
            "the cache first (minutes for a 7B shape)"
        )
    p = plan(cells, cfg, results)
    n_trials = len(cells) * p.trials_per_cell
    console.print(
        f"estimated duration: about {duration(p.total_s)} (a rough estimate: {n_trials} trials' "
        f"tokens at {p.how}, plus {duration(p.load_s)} of model loads"
        + (f" ({duration(p.write_s)} of it writing synthetic models at an assumed "
           f"{SYNTHETIC_WRITE_BPS / 1e6:.0f} MB/s)" if p.write_s else "")
        + " and "
        f"{duration(p.idle_s)} of idle baseline; downloads not included)"
    )
    return EXIT_OK
