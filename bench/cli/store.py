"""`bench store add|query`, `bench history` and `bench worker`: argparse adapted to
bench/store.py, bench/history.py and bench/fleet.py."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from bench.cli.base import Command, fail

DEFAULT_STORE = "results/bench.duckdb"


class StoreCommand(Command):
    name = "store"
    help = "the results store: add runs, query them with SQL"

    @classmethod
    def add_arguments(cls, st: argparse.ArgumentParser) -> None:
        st_sub = st.add_subparsers(dest="store_command", required=True)
        sa = st_sub.add_parser("add", help="add run folders to the store (again: no change)")
        sa.add_argument("runs", nargs="+", help="run folder(s), or a folder of runs")
        sq = st_sub.add_parser("query", help="run SQL on the store and print the result")
        sq.add_argument("sql", help='e.g. "SELECT run_id, git_commit FROM runs"')
        sq.add_argument("--format", choices=["table", "csv", "json"], default="table")
        for sp in (sa, sq):
            sp.add_argument("--store", default=DEFAULT_STORE,
                            help=f"the DuckDB file (default: {DEFAULT_STORE})")
        sa.add_argument("--commit", help="the git commit the runs measured (default: from the run)")
        sa.add_argument("--branch", help="the git branch, with --commit")

    def run(
        self,
        store_command: str,
        store: str = DEFAULT_STORE,
        runs: Sequence[str] = (),
        commit: str | None = None,
        branch: str | None = None,
        sql: str = "",
        format: str = "table",
    ) -> int:
        from bench import store as results_store

        if store_command == "add":
            return results_store.add(list(runs), store, commit=commit, branch=branch)
        return results_store.query(sql, store, format)  # type: ignore[arg-type]  # argparse choices


class HistoryCommand(Command):
    name = "history"
    help = "each metric over commits per machine, with change points"

    @classmethod
    def add_arguments(cls, hi: argparse.ArgumentParser) -> None:
        hi.add_argument("--store", default=DEFAULT_STORE, help="the DuckDB file")
        hi.add_argument("--out", default="reports/history", help="folder for PNGs and pages")
        hi.add_argument("--metric", action="append", help="metric to plot (repeatable)")
        hi.add_argument("--by", choices=["commit", "time"], default="commit",
                        help="one point per commit (runs pooled) or per run")
        hi.add_argument("--machine", help="only this machine (name or fingerprint)")
        hi.add_argument("--cell", help="only the cell whose cell_key starts with this")
        hi.add_argument("--threshold", default="5%", help="smallest regression that counts")
        hi.add_argument("--fail-recent", type=int, metavar="N",
                        help="exit 1 when a regression above the threshold began in the newest "
                        "N points")

    def run(
        self,
        store: str = DEFAULT_STORE,
        out: str = "reports/history",
        metric: list[str] | None = None,
        by: str = "commit",
        machine: str | None = None,
        cell: str | None = None,
        threshold: str = "5%",
        fail_recent: int | None = None,
    ) -> int:
        from bench.columns import parse_threshold_pct
        from bench.history import history

        try:
            threshold_pct = parse_threshold_pct(threshold)
        except ValueError as e:
            return fail(f"--threshold: {e}")
        return history(
            store=store, out=out, metrics=metric, by=by,  # type: ignore[arg-type]  # choices
            machine=machine, cell=cell,
            threshold_pct=threshold_pct, fail_recent=fail_recent,
        )


class WorkerCommand(Command):
    name = "worker"
    help = "serve this machine to a fleet sweep (a Dask worker)"

    @classmethod
    def add_arguments(cls, wk: argparse.ArgumentParser) -> None:
        wk.add_argument("--scheduler", required=True, help="the Dask scheduler, tcp://HOST:PORT")
        wk.add_argument("--name", help="this machine's name in results (default: host name)")

    def run(self, scheduler: str, name: str | None = None) -> int:
        from bench.fleet import serve_worker

        return serve_worker(scheduler, name)
