"""The shared base of every subcommand: exit codes, consoles, one-sentence errors.

A command is a class with a plain keyword-argument `run()` that tests call directly; argparse
only adapts the command line to it (`Command.__call__`).
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from rich.console import Console
from rich.markup import escape

EXIT_OK, EXIT_CELLS_FAILED, EXIT_USAGE, EXIT_WRITE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def console(stderr: bool = False) -> Console:
    """A console for people: a terminal's width, or a wide fixed width in a log or a pipe."""
    probe = Console(stderr=stderr)
    # In a log or a pipe, rich would fold tables to 80 columns; a wide fixed width keeps
    # the summary readable there (COLUMNS still wins when set).
    width = None if probe.is_terminal or os.environ.get("COLUMNS") else 160
    # A terminal gets lines wrapped at word boundaries, within its width; a log keeps each
    # message on one line, where grep finds it.
    return Console(stderr=stderr, highlight=False, soft_wrap=not probe.is_terminal,
                   width=width)


def fail(message: str, code: int = EXIT_USAGE) -> int:
    """Print one sentence on stderr and return the exit code (2: the user can fix it)."""
    from bench.cli.hints import fit_install_hints

    console(stderr=True).print(f"[bold red]error:[/] {escape(fit_install_hints(message))}")
    return code


class Command:
    """One subcommand. Subclasses set `name` and `help`, declare their arguments (whose `dest`
    names are `run()`'s keyword arguments) and implement `run()`."""

    name: ClassVar[str]
    help: ClassVar[str]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Declare the command's arguments on its sub-parser."""

    # Each command's run(keyword arguments) -> exit code; argparse's dest names match them.
    run: Callable[..., int]

    def __call__(self, args: argparse.Namespace) -> int:
        from bench.results import ResultsError

        kwargs = {k: v for k, v in vars(args).items() if k not in ("command", "func")}
        try:
            return int(self.run(**kwargs))
        except ResultsError as e:
            # A corrupt or foreign run folder is the user's to fix: one sentence, never a
            # traceback, in every subcommand.
            return fail(str(e))


DEFAULT_CONFIG = Path("configs/smoke.yaml")


def default_config() -> Path:
    if DEFAULT_CONFIG.exists():
        return DEFAULT_CONFIG
    # Installed without the repository: the packaged copy of the default.
    import importlib.resources

    return Path(str(importlib.resources.files("bench") / "configs" / "smoke.yaml"))
