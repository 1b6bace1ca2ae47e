"""The order of a run: lock or create the run folder, measure idle power, start a worker per
model group (in a child process by default, so an engine abort or the OOM killer fails only the
cell in flight), record the events it sends, checkpoint after each cell, resume an interrupted
run. The timed loop is bench.run.worker; process isolation bench.run.launcher."""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from bench import energy as energy_math
from bench import roofline
from bench.backends.base import REGISTRY, BackendError, get_backend
from bench.config import LoadedConfig
from bench.machine import cpu_load_percent, machine_facts, power_state, software_facts
from bench.meters import open_meters
from bench.meters.base import Meter
from bench.redact import register_secret
from bench.results import FORMAT_VERSION, ResultsError, RunWriter
from bench.run import folder as run_folder
from bench.run.events import (
    CellFinished,
    CellStarted,
    Event,
    LoadRecord,
    Message,
    ModelLoaded,
    Rows,
    TrialStarted,
)
from bench.run.launcher import Child, signal_name
from bench.run.worker import GroupJob, GroupWorker, close_quietly, run_group_job
from bench.sweep import Cell, groups


@dataclass
class Progress:
    """What the display needs; the CLI supplies callbacks (tests pass none)."""

    on_cell_start: Callable[[Cell, int, int], None] = lambda cell, i, n: None
    on_trial: Callable[[Cell, int, int, bool], None] = lambda cell, j, n, warm: None
    on_cell_end: Callable[[Cell, str, str | None], None] = lambda cell, status, err: None
    on_message: Callable[[str], None] = lambda msg: None


@dataclass
class RunOutcome:
    folder: Path
    run_id: str
    cells_ok: int = 0
    cells_failed: int = 0
    cells_skipped: int = 0
    interrupted: bool = False
    manifest: dict[str, Any] = field(default_factory=dict)
    trials: list[dict[str, Any]] = field(default_factory=list)


def make_run_id(loaded: LoadedConfig, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{loaded.config.name}-{loaded.short_hash}"


def resume_hint(folder: Path, config_path: Path | None) -> str:
    cfg = str(config_path) if config_path else "CONFIG"
    return f"python -m bench run {cfg} --resume {folder}"


def _register_config_secrets(loaded: LoadedConfig) -> None:
    """Secrets the config names (API keys by their environment variable), registered here too:
    a worker child reads them itself, and the writer in this process must mask them as well."""
    for b in loaded.config.backends:
        env = getattr(b, "api_key_env", None)
        if env and os.environ.get(env):
            register_secret(os.environ[env])


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class Runner:
    def __init__(
        self,
        loaded: LoadedConfig,
        cells: list[Cell],
        out_dir: Path,
        progress: Progress | None = None,
        meters: list[Meter] | None = None,
        resume: Path | None = None,
    ):
        self.loaded = loaded
        self.config = loaded.config
        self.cells = cells
        self.progress = progress or Progress()
        self.resume = resume
        if resume is not None:
            self.folder = resume
            self.run_id = resume.name
        else:
            self.run_id = make_run_id(loaded)
            self.folder = out_dir / self.run_id
        # Meters handed in (tests) run in process; they cannot cross into a child.
        self._given_meters = meters
        self.isolate = self.config.execution.isolate and meters is None
        self.meters: list[Meter] = []
        self.idle_w: dict[str, float] = {}
        self._cells_by_id = {c.cell_id: c for c in cells}
        self._entry: dict[str, dict[str, Any]] = {}
        self._done = 0
        self._loads = 0
        self._current: str | None = None
        self._cell_started = 0.0
        self._next_trial: dict[str, int] = {}
        self._lock: run_folder.FolderLock | None = None
        _register_config_secrets(loaded)

    # -- set-up ------------------------------------------------------------------------------
    def _cells_manifest(self) -> list[dict[str, Any]]:
        return [
            {
                "cell_id": c.cell_id,
                "settings_hash": c.settings_hash(),
                "params": c.params(),
                "status": "pending",
                "error": None,
                "warnings": [],
            }
            for c in self.cells
        ]

    @cached_property
    def machine(self) -> dict[str, Any]:
        """This machine's facts, read once: the manifest's and the resume check's."""
        return machine_facts()

    def open(self) -> None:
        """Check the run can write its folder before anything is measured: resuming locks the
        folder and refuses a config that no longer describes it; ResultsError says why."""
        if self.resume is not None and self._lock is None:
            self._lock = run_folder.lock_for_resume(self.resume, {
                "machine": self.machine,
                "config_hash": self.loaded.hash,
                "config": self.config.model_dump(mode="json"),
                "cells": self._cells_manifest(),
            })

    def _manifest(self, statuses: list[Any]) -> dict[str, Any]:
        software = software_facts()
        for name in sorted({c.backend for c in self.cells}):
            try:
                software.update(get_backend(name).software())
            except BackendError as e:
                software[f"{name}_error"] = str(e)
        return {
            "format_version": FORMAT_VERSION,
            "run_id": self.run_id,
            "started_utc": run_folder.utc_now(),
            "finished_utc": None,
            "status": "running",
            "config_path": str(self.loaded.path) if self.loaded.path else None,
            "config": self.config.model_dump(mode="json"),
            "config_hash": self.loaded.hash,
            "machine": self.machine,
            "software": software,
            "models": {},
            "meters": [s.__dict__ for s in statuses],
            "domains": [d.__dict__ for d in energy_math.all_domains(self.meters)],
            "idle": {},
            # Memory bandwidth for the decode roofline, measured once per run (bench.roofline).
            "roofline": roofline.measure_bandwidth(
                gpu=any(roofline.uses_gpu(c.params()) for c in self.cells)
            ),
            "guards": {"warnings": []},
            "loads": [],
            "resumed": [],
            "cells": self._cells_manifest(),
        }

    def _open_meters(self) -> list[Any]:
        if self._given_meters is not None:
            self.meters = list(self._given_meters)
            return []
        self.meters, statuses = open_meters(self.config.energy)
        used = ", ".join(
            f"{m.name} ({', '.join(d.name for d in m.domains())})" for m in self.meters
        )
        self.progress.on_message(f"energy meters: {used or 'none'}")
        asked = self.config.energy.meters
        for s in statuses:
            if not s.available and isinstance(asked, list) and s.name in asked:
                self.progress.on_message(
                    f"energy meter {s.name} is unavailable: {s.reason}"
                    + (f" Fix: {s.fix}" if s.fix else "")
                )
        return statuses

    def _writer(self, manifest: dict[str, Any]) -> tuple[RunWriter, set[str]]:
        """A fresh, locked run folder, or the folder being resumed with its finished cells."""
        if self.resume is None:
            writer, self._lock = run_folder.create(self.folder, manifest)
            return writer, set()
        self.open()
        assert self._lock is not None
        writer, finished = run_folder.resume(self.resume, manifest, self._lock)
        self.run_id = manifest["run_id"]
        return writer, finished

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> RunOutcome:
        try:
            return self._run()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _run(self) -> RunOutcome:
        self.open()
        statuses = self._open_meters()
        manifest = self._manifest(statuses)
        try:
            writer, finished = self._writer(manifest)
        except ResultsError:
            for m in self.meters:
                close_quietly(m)
            raise
        self.writer = writer
        outcome = RunOutcome(self.folder, self.run_id, manifest=manifest)
        self.outcome = outcome
        self._entry = {e["cell_id"]: e for e in manifest["cells"]}
        self._loads = len(manifest["loads"])
        outcome.cells_skipped = len(finished)
        outcome.cells_ok = len(finished)
        if finished:
            self.progress.on_message(
                f"resuming {self.run_id}: {len(finished)} finished cells kept, "
                f"{len(self.cells) - len(finished)} to run"
            )
        old_term = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            self._baseline(manifest)
            writer.write_manifest()
            for group in groups([c for c in self.cells if c.cell_id not in finished]):
                self._run_group(group)
            if self.config.quality.texts != "none" and not writer.rows["quality"]:
                self._run_quality()
        except KeyboardInterrupt:
            outcome.interrupted = True
        finally:
            signal.signal(signal.SIGTERM, old_term)
            for m in self.meters:
                close_quietly(m)
            manifest["finished_utc"] = run_folder.utc_now()
            manifest["status"] = "interrupted" if outcome.interrupted else "finished"
            writer.flush()
        # As load_run gives them: each trial says how its cell ended.
        status = {e["cell_id"]: e.get("status") for e in manifest["cells"]}
        outcome.trials = [{**r, "cell_status": status.get(r.get("cell_id"))}
                          for r in writer.rows["trials"]]
        return outcome

    def _baseline(self, manifest: dict[str, Any]) -> None:
        """Idle power per domain, and the validity guards read before the sweep."""
        guards = manifest["guards"]
        guards.update(power_state())
        if guards.get("on_battery"):
            guards["warnings"].append("running on battery: clocks and power may be limited")
        if guards.get("cpu_governor") not in (None, "performance"):
            guards["warnings"].append(
                f"CPU frequency governor is {guards['cpu_governor']!r}, not 'performance': "
                "clock changes add noise"
            )
        idle_s = self.config.energy.idle_s
        for m in self.meters:
            m.start()
        cpu_load_percent()  # starts psutil's interval
        if self.meters and idle_s > 0 and not manifest.get("idle"):
            self.progress.on_message(f"measuring idle power for {idle_s:g} s before the sweep")
            self.idle_w = energy_math.idle_baseline(self.meters, idle_s)
            manifest["idle"] = {"seconds": idle_s, "watts": self.idle_w}
            load = cpu_load_percent()
            guards["idle_cpu_load_pct"] = load
            if load > self.config.execution.max_idle_cpu_pct:
                guards["warnings"].append(
                    f"background CPU load was {load:.0f}% during the idle baseline (above "
                    f"{self.config.execution.max_idle_cpu_pct:g}%): other programs were running"
                )
        elif manifest.get("idle"):
            self.idle_w = dict(manifest["idle"].get("watts") or {})
        for w in guards["warnings"]:
            self.progress.on_message(f"warning: {w}")
        # The workers read their own meters; the runner's only served the baseline.
        if self.isolate:
            for m in self.meters:
                close_quietly(m)
            self.meters = []

    # -- events from workers -------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        w, m = self.writer, self.writer.manifest
        if isinstance(event, Rows):
            if event.table == "trials":
                # The roofline and energy-floor columns need the run's bandwidth and idle power.
                event.rows[:] = [{**r, **roofline.trial_columns(r, m)} for r in event.rows]
                for r in event.rows:
                    cid = str(r.get("cell_id"))
                    self._next_trial[cid] = max(self._next_trial.get(cid, 0),
                                                int(r.get("trial") or 0) + 1)
            w.add(event.table, event.rows)
        elif isinstance(event, ModelLoaded):
            # Several backends may load the same file; keep what the first learnt, add the rest.
            entry = dict(m["models"].get(event.key, {}))
            for k, v in event.facts.items():
                if entry.get(k) is None:
                    entry[k] = v
            w.journal({"model": [event.key, entry]})
        elif isinstance(event, LoadRecord):
            w.journal({"load": event.entry})
        elif isinstance(event, CellStarted):
            self._current = event.cell_id
            self._cell_started = time.monotonic()
            self.progress.on_cell_start(self._cells_by_id[event.cell_id], self._done,
                                        len(self.cells))
        elif isinstance(event, TrialStarted):
            self.progress.on_trial(self._cells_by_id[event.cell_id], event.trial, event.of,
                                   event.warmup)
        elif isinstance(event, CellFinished):
            self._finish_cell(event)
        elif isinstance(event, Message):
            self.progress.on_message(event.text)

    def _finish_cell(self, event: CellFinished) -> None:
        self.writer.journal({"cell": {
            "cell_id": event.cell_id, "status": event.status, "error": event.error,
            "cell_key": event.cell_key, "warnings": list(event.warnings),
        }})
        self._current = None
        self._done += 1
        if event.status == "ok":
            self.outcome.cells_ok += 1
        else:
            self.outcome.cells_failed += 1
        self.writer.checkpoint()
        cell = self._cells_by_id[event.cell_id]
        self.progress.on_cell_end(cell, event.status, event.error)
        for warning in event.warnings:
            self.progress.on_message(f"warning: cell {event.cell_id}: {warning}")

    def _run_quality(self) -> None:
        """Quality after the sweep, in its own child process when isolating."""
        from bench.quality_phase import run_quality

        self.progress.on_message("measuring model quality (bits per byte, KL) after the sweep")
        if not self.isolate:
            run_quality(self.config, self.cells, self.run_id, self._on_event)
        else:
            child = Child(run_quality, (self.config, self.cells, self.run_id))
            child.pump(self._on_event, lambda: None)
            if child.crash or child.proc.exitcode not in (0, None):
                self.progress.on_message(
                    "quality measurement failed: "
                    + (child.crash or signal_name(child.proc.exitcode))
                )
        self.writer.checkpoint()

    def _job(self, cells: list[Cell]) -> GroupJob:
        self._loads += 1
        return GroupJob(
            config=self.config,
            cells=cells,
            run_id=self.run_id,
            load_id=f"l{self._loads:02d}",
            idle_w=self.idle_w,
            settings_hashes={c.cell_id: self._entry[c.cell_id]["settings_hash"] for c in cells},
            log_dir=str(self.folder / "logs"),
            backends=dict(REGISTRY),
        )

    def _run_group(self, group: list[Cell]) -> None:
        self._current = None
        if not self.isolate:
            GroupWorker(self._job(group), self._on_event, self._given_meters).run()
            return
        pending = list(group)
        while pending:
            finished = self._run_child(pending)
            pending = [c for c in pending if c.cell_id not in finished]

    def _run_child(self, cells: list[Cell]) -> set[str]:
        """Run cells in a child process; returns the ids of the cells it finished. A crash,
        abort or kill fails the cell in flight; the rest are retried in a new child."""
        child = Child(run_group_job, (self._job(cells),))
        finished: set[str] = set()
        timeout = self.config.execution.cell_timeout_s

        def on_event(event: Event) -> None:
            if isinstance(event, CellFinished):
                finished.add(event.cell_id)
            self._on_event(event)

        def overdue() -> str | None:
            if (
                timeout is not None
                and self._current is not None
                and time.monotonic() - self._cell_started > timeout
            ):
                return f"the cell ran longer than execution.cell_timeout_s ({timeout:g} s)"
            return None

        child.pump(on_event, overdue)
        crash, proc = child.crash, child.proc
        in_flight = self._current
        if in_flight is None:
            # Died before or between cells: the first unfinished cell takes the blame.
            rest = [c for c in cells if c.cell_id not in finished]
            in_flight = rest[0].cell_id if rest else None
        if in_flight is not None and in_flight not in finished:
            why = crash or (
                f"the engine process died ({signal_name(proc.exitcode)}) while running this "
                "cell; llama.cpp aborted or the system ran out of memory"
            )
            cell = self._cells_by_id[in_flight]
            # The error row takes the next trial number: trials measured before the crash
            # keep theirs, so no (cell, trial) pair appears twice.
            self.writer.add(
                "trials",
                [
                    {
                        "run_id": self.run_id,
                        "cell_id": in_flight,
                        "settings_hash": self._entry[in_flight]["settings_hash"],
                        **cell.params(),
                        "trial": self._next_trial.get(in_flight, 0),
                        "warmup": False,
                        "status": "error",
                        "error": why,
                    }
                ],
            )
            self._finish_cell(CellFinished(in_flight, "error", why))
            finished.add(in_flight)
        return finished


__all__ = ["Progress", "ResultsError", "RunOutcome", "Runner", "make_run_id", "resume_hint"]
