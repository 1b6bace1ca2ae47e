"""`bench export`: argparse adapted to `bench.export.Export`."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from bench.cli.base import Command


class ExportCommand(Command):
    name = "export"
    help = "results for github-action-benchmark or Bencher"

    @classmethod
    def add_arguments(cls, ex: argparse.ArgumentParser) -> None:
        ex.add_argument("runs", nargs="+", help="run folder(s), or a folder of runs")
        ex.add_argument("--format", required=True,
                        choices=["github-action-benchmark", "bencher"])
        ex.add_argument("--out", required=True, help="output folder (or .json file for bencher)")
        ex.add_argument("--machine", help="export this machine's results of fleet runs")

    def run(self, runs: Sequence[str], format: str, out: str, machine: str | None = None) -> int:
        from bench.export import Export

        return Export().run(runs=runs, fmt=format, out=out, machine=machine)
