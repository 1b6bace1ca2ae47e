"""`bench` on the command line: the parser, assembled from one module per subcommand.

Exit codes (all commands): 0 success; 1 finished, but some cells failed (run) or a regression
was found (compare); 2 usage, config or data error; 3 results could not be written (run),
or a comparison is unreliable because a side was measured under flagged conditions (compare);
130 interrupted (finished cells are saved).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from bench.cli.base import (
    EXIT_CELLS_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_WRITE,
    Command,
)
from bench.cli.compare import CompareCommand
from bench.cli.doctor import DoctorCommand
from bench.cli.export import ExportCommand
from bench.cli.report import ReportCommand
from bench.cli.run import RunCommand
from bench.cli.store import HistoryCommand, StoreCommand, WorkerCommand

# A new subcommand is a module with a Command subclass, listed here.
COMMANDS: list[type[Command]] = [
    RunCommand, DoctorCommand, CompareCommand, ReportCommand, ExportCommand, StoreCommand,
    HistoryCommand, WorkerCommand,
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench",
        description="Speed and energy of local language models, measured on this machine.",
    )
    from bench import __version__

    p.add_argument("--version", action="version", version=f"bench {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for cls in COMMANDS:
        sp = sub.add_parser(cls.name, help=cls.help)
        cls.add_arguments(sp)
        sp.set_defaults(func=cls())
    return p


class _FittedHints:
    """stderr as every command writes to it, with each `pip install ...` in it rewritten for
    this installation (bench.cli.hints): the one step every error message passes through, so
    no command, domain module or library message prints a bare `pip install` that would land
    in another environment."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        from bench.cli.hints import fit_install_hints

        return int(self._stream.write(fit_install_hints(text)) or 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    with contextlib.redirect_stderr(_FittedHints(sys.stderr)):
        try:
            return int(args.func(args))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


__all__ = [
    "COMMANDS",
    "EXIT_CELLS_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_WRITE",
    "build_parser",
    "main",
]
