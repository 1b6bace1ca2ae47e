"""The progress display of `bench run`: one line redrawn in a terminal, plain lines in a log.

The line fits the terminal's width: a short cell label and its phase (warm-ups apart from
measured trials), a bar, measured trials done/total, elapsed, and an ETA that is never blank.
The ETA weights each cell by the seconds its tokens should take (`estimate.Plan`), scaled by
how long the finished trials really took, so a pp512 cell counts for more than a pp16 one.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from rich.cells import cell_len

from bench.cli.estimate import Plan
from bench.cli.hints import fit_install_hints


def clock(seconds: float) -> str:
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def _clip(text: str, width: int) -> str:
    if width <= 0:
        return ""
    if cell_len(text) <= width:
        return text
    out = ""
    for ch in text:
        if cell_len(out) + cell_len(ch) > width - 1:
            break
        out += ch
    return out + "…"


def short_label(cell: Any) -> str:
    """'c002 SmolLM2-135M Q4_1 t=2 pp64 tg32': the cell's id and what varies, briefly."""
    p = cell.params()
    bits = [cell.cell_id, p["model"] + (f" {p['quant']}" if p.get("quant") else "")]
    short = {"n_threads": "t", "n_gpu_layers": "ngl", "n_ctx": "ctx", "n_batch": "b",
             "n_ubatch": "ub", "flash_attn": "fa"}
    usual = {"n_ctx", "n_batch", "n_ubatch", "flash_attn"}  # rarely swept: left out
    bits += [f"{short.get(k, k)}={v}" for k, v in cell.settings if k not in usual]
    if p.get("lang"):
        bits.append(f"[{p['lang']}]")
    bits.append(p["prompt_id"] if p.get("prompt_tokens") is None else f"pp{p['prompt_tokens']}")
    bits.append(f"tg{p['gen_tokens']}")
    if p.get("depth"):
        bits.append(f"d{p['depth']}")
    return " ".join(str(b) for b in bits)


class Tracker:
    """Counts and time of a sweep in progress; renders the progress line (no I/O)."""

    def __init__(self, plan: Plan, warmup: int, measured: int, now: float | None = None):
        self.plan = plan
        self.warmup = warmup
        self.measured = measured
        n = len(plan.cells)
        self.total = n * measured  # measured trials still planned
        self.done = 0
        self.warm_total = n * warmup
        self.warm_done = 0
        self.t0 = time.monotonic() if now is None else now
        self.cell: Any = None
        self.phase = "idle baseline, loading"
        # Seconds of work (by the plan) still ahead, finished, and really spent on finished.
        self.left_est = plan.total_s
        self.done_est = 0.0
        self.spent = 0.0
        self._trial_started: float | None = None
        self._trial_est = 0.0
        self._cell_trials = 0
        self._started = False
        self._warm = False

    # -- events ------------------------------------------------------------------------------
    def cell_start(self, cell: Any, now: float) -> None:
        self._finish_trial(now)
        if not self._started:
            self._started = True
            self.left_est -= self.plan.idle_s  # the idle baseline is behind us
        # The model load (if this cell opens a group) is behind us too.
        self.left_est -= self.plan.load_before.get(cell.cell_id, 0.0)
        self.cell = cell
        self._cell_trials = 0
        self.phase = "ready"

    def trial(self, cell: Any, j: int, warm: bool, now: float) -> None:
        self._finish_trial(now)
        self._trial_started = now
        self._trial_est = self.plan.seconds_per_trial.get(cell.cell_id, 0.0)
        self._cell_trials += 1
        if warm:
            self.phase = f"warm-up {j + 1}/{self.warmup}"
        else:
            self.phase = f"trial {j - self.warmup + 1}/{self.measured}"
        self._warm = warm

    def cell_end(self, cell: Any, now: float) -> None:
        self._finish_trial(now)
        # Trials the cell did not run (adaptive repeats met their target, or it failed, maybe
        # before it started) are no longer ahead.
        ran = self._cell_trials
        unrun_measured = max(0, self.measured - max(0, ran - self.warmup))
        unrun_warm = max(0, self.warmup - ran)
        self.total -= unrun_measured
        self.warm_total -= unrun_warm
        self.left_est -= (unrun_measured + unrun_warm) * self.plan.seconds_per_trial.get(
            cell.cell_id, 0.0
        )
        if self.cell is not cell:
            self.left_est -= self.plan.load_before.get(cell.cell_id, 0.0)
        self._cell_trials = 0
        self.cell = None
        self.phase = "next cell"

    def _finish_trial(self, now: float) -> None:
        if self._trial_started is None:
            return
        self.spent += now - self._trial_started
        self.done_est += self._trial_est
        self.left_est -= self._trial_est
        if self._warm:
            self.warm_done += 1
        else:
            self.done += 1
        self._trial_started = None

    # -- the numbers ---------------------------------------------------------------------------
    def eta_s(self, now: float) -> tuple[float, bool]:
        """(seconds left, whether measured): the plan's seconds ahead × how much slower or
        faster the finished trials ran than planned; the plan alone until one has finished."""
        measured = self.done_est > 0 and self.spent > 0
        scale = self.spent / self.done_est if measured else 1.0
        left = max(0.0, self.left_est) * scale
        if not self._started:
            # Idle baseline and first load under way: they count down, the trials do not.
            floor = self.left_est - self.plan.idle_s - self.plan.load_s
            left = max(floor, self.left_est - (now - self.t0))
        if self._trial_started is not None:
            left -= min(now - self._trial_started, self._trial_est * scale)
        return max(0.0, left), measured

    def line(self, width: int, now: float) -> str:
        eta, measured = self.eta_s(now)
        right = (f" {self.done}/{self.total}"
                 + (f" w{self.warm_done}/{self.warm_total}" if self.warm_total else "")
                 + f" {clock(now - self.t0)} ETA {'' if measured else '~'}{clock(eta)}")
        left = short_label(self.cell) if self.cell is not None else ""
        phase = self.phase
        bar_w = 12 if width >= 60 else max(4, width // 8)
        room = max(0, width - cell_len(right) - bar_w - 2)
        # The phase (warm-up or trial k/n) stays whole; the cell label gives way.
        if left and cell_len(phase) + 6 <= room:
            text = f"{_clip(left, room - cell_len(phase) - 1)} {phase}"
        else:
            text = _clip(f"{left} {phase}".strip(), room)
        frac = self.done / self.total if self.total else 1.0
        fill = round(frac * bar_w)
        bar = "━" * fill + "╺" + "─" * (bar_w - fill - 1) if fill < bar_w else "━" * bar_w
        line = f"{text}{' ' * max(0, room - cell_len(text))} {bar}{right}"
        return _clip(line, width)


class RunProgress:
    """Feeds the runner's progress callbacks into a Tracker and draws its line on a terminal
    (refreshed twice a second while a trial runs), or prints one line per cell in a log."""

    def __init__(self, console: Any, plan: Plan, warmup: int, measured: int):
        self.console = console
        self.live = bool(console.is_terminal)
        self.tracker = Tracker(plan, warmup, measured)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drawn = False

    def _width(self) -> int:
        # One column short of the edge: a terminal that wraps at the last column would
        # otherwise scroll on every redraw.
        return max(20, int(self.console.width) - 1)

    def _draw(self) -> None:
        if not self.live:
            return
        text = self.tracker.line(self._width(), time.monotonic())
        f = self.console.file
        f.write("\r\x1b[2K" + text)
        f.flush()
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            self.console.file.write("\r\x1b[2K")
            self.console.file.flush()
            self._drawn = False

    def say(self, text: str) -> None:
        """A message above the progress line."""
        text = fit_install_hints(text)
        with self._lock:
            self._clear()
            self.console.print(text, markup=False, highlight=False)
            self._draw()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                self._draw()

    def __enter__(self) -> Any:
        from bench.runner import Progress

        if self.live:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
            with self._lock:
                self._draw()
        return Progress(
            on_cell_start=self._cell_start,
            on_trial=self._trial,
            on_cell_end=self._cell_end,
            on_message=self.say,
        )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        with self._lock:
            self._clear()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _cell_start(self, cell: Any, i: int, n: int) -> None:
        with self._lock:
            self.tracker.cell_start(cell, time.monotonic())
            if not self.live:
                now = time.monotonic()
                eta, measured = self.tracker.eta_s(now)
                self.console.print(
                    f"cell {i + 1}/{n} {cell.describe()} ({clock(now - self.tracker.t0)} "
                    f"elapsed, ETA {'' if measured else '~'}{clock(eta)})",
                    markup=False, highlight=False,
                )
            self._draw()

    def _trial(self, cell: Any, j: int, n: int, warm: bool) -> None:
        with self._lock:
            self.tracker.trial(cell, j, warm, time.monotonic())
            self._draw()

    def _cell_end(self, cell: Any, status: str, err: str | None) -> None:
        with self._lock:
            self.tracker.cell_end(cell, time.monotonic())
            self._draw()
        if status != "ok":
            self.say(f"cell {cell.cell_id} failed: {err}")
