"""`bench run --cluster` and `bench run --store`: the run command's hand-offs to the fleet
driver (bench/fleet.py) and the results store (bench/store.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape

from bench.cli.base import (
    EXIT_CELLS_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_WRITE,
    fail,
)


def store_git_of_cwd(store: str | None) -> Any:
    """The git commit and branch of the working folder, read when the run starts (None without
    --store)."""
    if not store:
        return None
    from bench.store import git_of_cwd

    return git_of_cwd()


def store_run(store: str, folder: Path, git: Any) -> int:
    from bench.store import add

    return add([folder], store, git=git)


def run_on_cluster(
    console: Any, loaded: Any, cells: list[Any], config: Path | None, out: Path, cluster: str,
    resume: Path | None, store: str | None,
) -> int:
    """The sweep on every machine's bench worker (docs/fleet.md)."""
    from bench.cli.summary import print_summary
    from bench.fleet import FleetError, run_sweep, summary_line
    from bench.results import ResultsError

    store_git = store_git_of_cwd(store)
    try:
        outcome = run_sweep(
            loaded, cells, out, cluster, resume=resume,
            on_message=lambda msg: console.print(escape(msg)),
        )
    except FleetError as e:
        return fail(str(e))
    except ResultsError as e:
        return fail(str(e), EXIT_WRITE)
    print_summary(console, outcome.trials, outcome.manifest)
    console.print(escape(summary_line(outcome)))
    console.print(f"results: {escape(str(outcome.folder))}")
    if store and store_run(store, outcome.folder, store_git) != EXIT_OK:
        return EXIT_WRITE
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    if outcome.cells_failed or outcome.cells_not_run:
        console.print(
            "some cells failed or were not run; after fixing the cause, run the rest with\n"
            f"  python -m bench run {escape(str(config or '-m ...'))} --cluster "
            f"{escape(cluster)} --resume {escape(str(outcome.folder))}"
        )
        return EXIT_CELLS_FAILED
    return EXIT_OK
