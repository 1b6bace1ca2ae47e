"""`bench compare`: argparse adapted to `bench.compare.Compare`."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from bench.cli.base import Command, fail


class CompareCommand(Command):
    name = "compare"
    help = "compare two runs; exit 1 on a regression"

    @classmethod
    def add_arguments(cls, c: argparse.ArgumentParser) -> None:
        c.add_argument("baseline", nargs="+", help="baseline run folder(s), or a folder of runs")
        c.add_argument("candidate", help="candidate run folder")
        c.add_argument("--threshold", default="5%",
                       help="smallest change that counts (default 5%%)")
        c.add_argument("--metric", action="append", help="metric to compare (repeatable)")
        c.add_argument("--format", choices=["table", "markdown", "json"], default="table")
        c.add_argument("--warn-only", action="store_true", help="report regressions but exit 0")

    def run(
        self,
        baseline: Sequence[str],
        candidate: str,
        threshold: str = "5%",
        metric: list[str] | None = None,
        format: str = "table",
        warn_only: bool = False,
    ) -> int:
        from bench.compare import Compare

        try:
            threshold_pct = float(threshold.strip().rstrip("%"))
        except ValueError:
            return fail(f"--threshold {threshold!r} is not a percentage such as 5%")
        return Compare().run(
            baseline=baseline,
            candidate=candidate,
            threshold_pct=threshold_pct,
            metrics=metric or None,
            fmt=format,  # type: ignore[arg-type]
            warn_only=warn_only,
        )
