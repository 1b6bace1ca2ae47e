"""`bench report`: argparse adapted to `bench.report.Report`."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from bench.cli.base import Command


class ReportCommand(Command):
    name = "report"
    help = "HTML + Markdown + PNG report of one or more runs"

    @classmethod
    def add_arguments(cls, rp: argparse.ArgumentParser) -> None:
        rp.add_argument("runs", nargs="+", help="run folder(s), or a folder of runs")
        rp.add_argument("--out", help="output folder (default: reports/<run_id>)")

    def run(self, runs: Sequence[str], out: str | None = None) -> int:
        from bench.report import Report

        return Report().run(runs=runs, out=out)
