"""`bench compare`: argparse adapted to `bench.compare.Compare`."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from bench.cli.base import Command
from bench.compare import DEFAULT_THRESHOLD_PCT


class CompareCommand(Command):
    name = "compare"
    help = "compare two runs; exit 1 on a regression"

    @classmethod
    def add_arguments(cls, c: argparse.ArgumentParser) -> None:
        c.add_argument("baseline", nargs="+", help="baseline run folder(s), or a folder of runs, "
                       "or store:PATH for the last runs of each cell on this machine in a store")
        c.add_argument("candidate", help="candidate run folder")
        c.add_argument("--threshold", default=f"{DEFAULT_THRESHOLD_PCT:g}%",
                       help=f"smallest change that counts (default {DEFAULT_THRESHOLD_PCT:g}%%)")
        c.add_argument("--metric", action="append", help="metric to compare (repeatable)")
        c.add_argument("--format", choices=["table", "markdown", "json"], default="table")
        c.add_argument("--warn-only", action="store_true",
                       help="report regressions and unreliable comparisons but exit 0")
        c.add_argument("--machine", help="compare this machine's results of fleet runs")
        c.add_argument("--last", type=int, metavar="N",
                       help="keep the newest N baseline runs (with store:PATH, per cell; "
                       "default 5)")

    def run(
        self,
        baseline: Sequence[str],
        candidate: str,
        threshold: str | None = None,
        metric: list[str] | None = None,
        format: str = "table",
        warn_only: bool = False,
        machine: str | None = None,
        last: int | None = None,
    ) -> int:
        from bench.compare import Compare

        # Compare parses the threshold (one parser, bench.columns.parse_threshold_pct).
        return Compare().run(
            baseline=baseline,
            candidate=candidate,
            threshold_pct=threshold if threshold is not None else DEFAULT_THRESHOLD_PCT,
            metrics=metric or None,
            fmt=format,  # type: ignore[arg-type]
            warn_only=warn_only,
            last=last,
            machine=machine,
        )
