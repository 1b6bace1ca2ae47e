"""`bench run`: a sweep from a YAML config or from llama-bench style flags (`-m model.gguf`),
with a progress line, an end table that fits the terminal, and `-o md|csv|json|jsonl`."""
from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
from bench.cli.fleet import store_git_of_cwd, store_run

CONFIG_FILE = "config.yaml"  # the equivalent YAML of a one-line run, in its run folder

# The llama-bench style flags: (dest, option strings, help).
_SWEEP_FLAGS = (
    ("prompt", ("-p", "--n-prompt"), "prompt tokens, e.g. 128,512 or 128-1024*2 (default 128)"),
    ("gen", ("-n", "--n-gen"), "generated tokens, e.g. 64 (default 64)"),
    ("threads", ("-t", "--threads"), "threads, e.g. 1,2,4 or 1-8*2 (default: physical cores)"),
    ("ngl", ("-ngl", "--n-gpu-layers"),
     "layers on the GPU, e.g. 0,99 (default 99 where the build can offload, else 0)"),
    ("depth", ("-d", "--n-depth"), ("tokens already in the KV cache before each trial, e.g. "
                                   "0,4096 (engines that support it)")),
)


def _command_line(models: Sequence[str], flags: dict[str, Any]) -> str:
    """The one-line command a config came from, for the head of its YAML."""
    words = ["bench", "run"]
    for m in models:
        words += ["-m", m]
    for dest, opts, _ in _SWEEP_FLAGS:
        for v in flags.get(dest) or []:
            words += [opts[0], str(v)]
    if flags.get("repetitions"):
        words += ["-r", str(flags["repetitions"])]
    return shlex.join(words)


class RunCommand(Command):
    name = "run"
    help = "run a sweep: a YAML config (default: configs/smoke.yaml) or -m MODEL.gguf"

    @classmethod
    def add_arguments(cls, r: argparse.ArgumentParser) -> None:
        r.add_argument("config", nargs="?", help="YAML config (default: configs/smoke.yaml)")
        r.add_argument(
            "-m", "--model", action="append", dest="models", metavar="MODEL",
            help="a GGUF file, or a Hugging Face repo:file.gguf or repo:QUANT (repeatable); "
                 "runs without a config, like llama-bench",
        )
        for dest, opts, text in _SWEEP_FLAGS:
            r.add_argument(*opts, action="append", dest=dest, metavar="N", help=text)
        r.add_argument("-r", "--repetitions", type=int, metavar="N",
                       help="measured trials per cell, after 1 warm-up (default 3)")
        r.add_argument("-o", "--output", choices=["md", "csv", "json", "jsonl"],
                       help="print the per-cell summary to stdout in this format (progress "
                            "and messages go to stderr)")
        r.add_argument("--print-config", action="store_true",
                       help="print the YAML config of this command line and exit")
        r.add_argument("--out", default="results",
                       help="folder for run folders (default: results)")
        r.add_argument("--dry-run", action="store_true",
                       help="validate, list cells and estimate the duration; run nothing")
        r.add_argument("--online", action="store_true",
                       help="with --dry-run: ask the Hub for sizes")
        r.add_argument(
            "--cluster", metavar="ADDRESS",
            help="run on every bench worker of this Dask scheduler (see docs/fleet.md)",
        )
        r.add_argument(
            "--store", metavar="PATH",
            help="also add the run to this results store (a DuckDB file; see docs/store.md)",
        )
        r.add_argument(
            "--resume", metavar="RUN_FOLDER",
            help="continue an interrupted run: keep its finished cells, run the rest",
        )

    def run(
        self,
        config: str | Path | None = None,
        models: Sequence[str] | None = None,
        prompt: Sequence[str] | None = None,
        gen: Sequence[str] | None = None,
        threads: Sequence[str] | None = None,
        ngl: Sequence[str] | None = None,
        depth: Sequence[str] | None = None,
        repetitions: int | None = None,
        output: str | None = None,
        print_config: bool = False,
        out: str | Path = "results",
        dry_run: bool = False,
        online: bool = False,
        resume: str | Path | None = None,
        cluster: str | None = None,
        store: str | None = None,
    ) -> int:
        from bench.config import ConfigError, load_config
        from bench.preflight import plan as preflight

        flags = {"prompt": prompt, "gen": gen, "threads": threads, "ngl": ngl, "depth": depth,
                 "repetitions": repetitions}
        given = [opts[0] for dest, opts, _ in _SWEEP_FLAGS if flags[dest]]
        given += ["-r"] if repetitions else []
        yaml_text: str | None = None
        try:
            if models:
                if config:
                    return fail(f"give a config file or -m, not both ({config} and -m "
                                f"{models[0]})")
                from bench.cli.oneline import build_config, load_oneline

                line = _command_line(models, flags)
                built = build_config(models, prompt=prompt, gen=gen, threads=threads, ngl=ngl,
                                     depth=depth, repetitions=repetitions)
                loaded, yaml_text = load_oneline(built, line)
                config_path: Path | None = None
            else:
                if given or print_config:
                    return fail(f"{(given or ['--print-config'])[0]} goes with -m MODEL.gguf; "
                                "with a config file, set it in the config instead")
                config_path = Path(config) if config else default_config()
                loaded = load_config(config_path)
            # The same checks for --dry-run and the run: what the dry run accepts, the run can run.
            cells = preflight(loaded, online=online).checked().cells
        except ConfigError as e:
            return fail(str(e))
        if print_config:
            sys.stdout.write(yaml_text or "")
            return EXIT_OK
        # With -o, stdout carries only the summary; people read stderr.
        console = make_console(stderr=output is not None)
        if dry_run:
            from bench.cli.dryrun import dry_run as print_dry_run

            return print_dry_run(console, loaded, cells, online=online, results=Path(out))
        if cluster:
            from bench.cli.fleet import run_on_cluster

            return run_on_cluster(console, loaded, cells, config_path, Path(out), cluster,
                                  Path(resume) if resume else None, store)
        return self._measure(console, loaded, cells, config_path, yaml_text, Path(out),
                             Path(resume) if resume else None, output, store)

    def _measure(
        self, console: Any, loaded: Any, cells: list[Any], config_path: Path | None,
        yaml_text: str | None, out: Path, resume: Path | None, output: str | None,
        store: str | None = None,
    ) -> int:
        from bench.cli.estimate import duration, plan
        from bench.cli.progress import RunProgress
        from bench.cli.summary import print_summary, render
        from bench.results import ResultsError, load_run
        from bench.run.runner import Runner, resume_hint

        to_run = cells
        runner = Runner(loaded, cells, out, progress=None, resume=resume)
        if resume is not None:
            try:
                runner.open()  # locks the folder; refuses a config that no longer describes it
                previous = load_run(resume)
            except ResultsError as e:
                return fail(f"cannot resume: {e}")
            # The runner keeps the finished cells (matched by settings hash); so does the ETA.
            kept = {c.get("settings_hash") for c in previous.manifest.get("cells", [])
                    if c.get("status") == "ok"}
            to_run = [c for c in cells if c.settings_hash() not in kept]
        # The commit is read when the run starts, so a checkout changed meanwhile is not recorded.
        store_git = store_git_of_cwd(store)
        trials = loaded.config.trials
        the_plan = plan(to_run, loaded.config, out)
        what = escape(str(config_path)) if config_path else "-m"
        console.print(
            f"[bold]bench run[/] {what}: {len(cells)} cell{'s' if len(cells) != 1 else ''} × "
            f"{trials.warmup} warm-up + "
            f"{trials.max_repeat} trials, about {duration(the_plan.total_s)} → "
            f"{escape(str(runner.folder))}"
        )
        display = RunProgress(console, the_plan, trials.warmup, trials.max_repeat)
        try:
            with display as prog:
                runner.progress = prog
                try:
                    outcome = runner.run()
                except ResultsError as e:
                    display.stop()
                    return fail(str(e), EXIT_WRITE)
        finally:
            if yaml_text is not None and runner.folder.is_dir():
                try:
                    (runner.folder / CONFIG_FILE).write_text(yaml_text, encoding="utf-8")
                except OSError as e:
                    console.print(f"[yellow]warning:[/] could not write {CONFIG_FILE}: "
                                  f"{escape(e.strerror or str(e))}")
        if yaml_text is not None:
            config_path = runner.folder / CONFIG_FILE
        if output is not None:
            sys.stdout.write(render(output, outcome.trials, outcome.manifest))
            sys.stdout.flush()
        else:
            print_summary(console, outcome.trials, outcome.manifest)
        for w in outcome.manifest.get("guards", {}).get("warnings", []):
            console.print(f"[yellow]warning:[/] {escape(w)}")
        for c in outcome.manifest.get("cells", []):
            for w in c.get("warnings") or []:
                console.print(f"[yellow]warning:[/] cell {c['cell_id']}: {escape(w)}")
        console.print(f"results: {escape(str(outcome.folder))}")
        if store and store_run(store, outcome.folder, store_git) != EXIT_OK:
            return EXIT_WRITE
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

