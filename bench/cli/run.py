"""`bench run`: a sweep from a YAML config, with a live progress display and an end table."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from bench.cli.base import (
    EXIT_CELLS_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_WRITE,
    Command,
    default_config,
    fail,
)
from bench.cli.base import console as make_console


class RunCommand(Command):
    name = "run"
    help = "run a sweep (default: configs/smoke.yaml)"

    @classmethod
    def add_arguments(cls, r: argparse.ArgumentParser) -> None:
        r.add_argument("config", nargs="?", help="YAML config (default: configs/smoke.yaml)")
        r.add_argument("--out", default="results",
                       help="folder for run folders (default: results)")
        r.add_argument("--dry-run", action="store_true",
                       help="validate and list cells; run nothing")
        r.add_argument("--online", action="store_true",
                       help="with --dry-run: ask the Hub for sizes")
        r.add_argument(
            "--resume", metavar="RUN_FOLDER",
            help="continue an interrupted run: keep its finished cells, run the rest",
        )

    def run(
        self,
        config: str | Path | None = None,
        out: str | Path = "results",
        dry_run: bool = False,
        online: bool = False,
        resume: str | Path | None = None,
    ) -> int:
        from bench.cli.dryrun import dry_run as print_dry_run
        from bench.cli.progress import RunProgress
        from bench.cli.summary import print_summary
        from bench.config import ConfigError, load_config
        from bench.results import ResultsError, load_run
        from bench.sweep import expand

        config_path = Path(config) if config else default_config()
        try:
            loaded = load_config(config_path)
            cells = expand(loaded.config)
        except ConfigError as e:
            return fail(str(e))
        console = make_console()
        if dry_run:
            return print_dry_run(console, loaded, cells, online=online)
        from bench.runner import Runner, resume_hint

        resume_path = Path(resume) if resume else None
        if resume_path is not None:
            try:
                load_run(resume_path)
            except ResultsError as e:
                return fail(f"cannot resume: {e}")
        runner = Runner(loaded, cells, Path(out), progress=None, resume=resume_path)
        trials_per_cell = loaded.config.trials.warmup + loaded.config.trials.max_repeat
        console.print(
            f"[bold]bench run[/] {escape(str(config_path))}: {len(cells)} cells × "
            f"{trials_per_cell} trials ({loaded.config.trials.warmup} warm-up) → "
            f"{escape(str(runner.folder))}"
        )
        display = RunProgress(console, len(cells) * trials_per_cell)
        with display as prog:
            runner.progress = prog
            try:
                outcome = runner.run()
            except ResultsError as e:
                display.stop()
                return fail(str(e), EXIT_WRITE)
        print_summary(console, outcome.trials, outcome.manifest)
        for w in outcome.manifest.get("guards", {}).get("warnings", []):
            console.print(f"[yellow]warning:[/] {escape(w)}")
        for c in outcome.manifest.get("cells", []):
            for w in c.get("warnings") or []:
                console.print(f"[yellow]warning:[/] cell {c['cell_id']}: {escape(w)}")
        console.print(f"results: {escape(str(outcome.folder))}")
        if outcome.interrupted:
            console.print(
                "[yellow]interrupted:[/] finished cells are saved in the folder above; resume "
                f"with\n  {escape(resume_hint(outcome.folder, config_path))}"
            )
            return EXIT_INTERRUPTED
        if outcome.cells_failed:
            console.print(
                f"[red]{outcome.cells_failed} of {len(cells)} cells failed[/]; "
                "the errors are in the table above and in manifest.json"
            )
            return EXIT_CELLS_FAILED
        return EXIT_OK
