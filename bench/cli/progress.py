"""The progress display of `bench run`: a live bar in a terminal, plain lines in a log."""
from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress


class RunProgress:
    """A progress bar in a terminal (cell i of N, trial j, elapsed, ETA); plain lines in a log."""

    def __init__(self, console: Console, total_trials: int):
        self.console = console
        self.total = total_trials
        self.live = console.is_terminal
        self.bar: RichProgress | None = None
        self.t0 = time.perf_counter()
        self.done = 0

    def __enter__(self) -> Any:
        from bench.runner import Progress

        if self.live:
            self.bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("trials"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task("starting", total=self.total)
            self.bar.start()
        return Progress(
            on_cell_start=self._cell_start,
            on_trial=self._trial,
            on_cell_end=self._cell_end,
            on_message=self._message,
        )

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _cell_start(self, cell: Any, i: int, n: int) -> None:
        self.cell_label = f"cell {i + 1}/{n} {cell.describe()}"
        self.cell_trials_left = None
        if not self.live:
            self.console.print(escape(self.cell_label))

    def _trial(self, cell: Any, j: int, n: int, warm: bool) -> None:
        if self.bar is not None:
            if j > 0:
                self.bar.advance(self.task)
            kind = "warm-up" if warm else "trial"
            self.bar.update(
                self.task, description=escape(f"{self.cell_label} · {kind} {j + 1}/{n}")
            )
        self.cell_trials = n
        self.cell_j = j

    def _cell_end(self, cell: Any, status: str, err: str | None) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)
            # Trials a failed cell never ran still count towards the bar.
            left = getattr(self, "cell_trials", 1) - getattr(self, "cell_j", 0) - 1
            if left > 0:
                self.bar.advance(self.task, left)
        if status != "ok":
            self.console.print(f"[red]cell {cell.cell_id} failed:[/] {escape(str(err))}")

    def _message(self, msg: str) -> None:
        self.console.print(escape(msg))
