"""The measurement loop: idle baseline, load, warm-up, trials, cooldown; rows as cells finish.

The runner alone knows about phases. It reads every meter at three edges of a trial (request
start, first token, last token), turns the backend's trace into a trial row, and writes the
tables after each cell so a crash loses at most the cell in flight.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import energy as energy_math
from bench.backends.base import BackendError, Session, get_backend
from bench.config import LOAD_TIME_SETTINGS, LoadedConfig
from bench.machine import machine_facts, peak_rss_bytes, reset_peak_rss, software_facts
from bench.meters import open_meters
from bench.meters.base import Meter, Reading
from bench.metrics import prompt_check, trial_timing
from bench.models import ModelError, fetch, file_identity
from bench.results import FORMAT_VERSION, RunWriter
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
    interrupted: bool = False
    manifest: dict[str, Any] = field(default_factory=dict)
    trials: list[dict[str, Any]] = field(default_factory=list)


def make_run_id(loaded: LoadedConfig, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{loaded.config.name}-{loaded.short_hash}"


def _utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Runner:
    def __init__(
        self,
        loaded: LoadedConfig,
        cells: list[Cell],
        out_dir: Path,
        progress: Progress | None = None,
        meters: list[Meter] | None = None,
    ):
        self.loaded = loaded
        self.config = loaded.config
        self.cells = cells
        self.progress = progress or Progress()
        self.run_id = make_run_id(loaded)
        self.folder = out_dir / self.run_id
        self._given_meters = meters
        self.meters: list[Meter] = []
        self.idle_w: dict[str, float] = {}
        self._cell_keys: dict[str, str] = {}
        self._cell_entry: dict[str, dict[str, Any]] = {}

    # -- set-up ------------------------------------------------------------------------------
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
            "started_utc": _utc(),
            "finished_utc": None,
            "status": "running",
            "config_path": str(self.loaded.path) if self.loaded.path else None,
            "config": self.config.model_dump(mode="json"),
            "config_hash": self.loaded.hash,
            "machine": machine_facts(),
            "software": software,
            "models": {},
            "meters": [s.__dict__ for s in statuses],
            "domains": [d.__dict__ for m in self.meters for d in m.domains()],
            "idle": {},
            "loads": [],
            "cells": [
                {
                    "cell_id": c.cell_id,
                    "settings_hash": c.settings_hash(),
                    "params": c.params(),
                    "status": "pending",
                    "error": None,
                }
                for c in self.cells
            ],
        }

    def _open_meters(self) -> list[Any]:
        if self._given_meters is not None:
            self.meters = list(self._given_meters)
            return []
        self.meters, statuses = open_meters(self.config.energy)
        return statuses

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> RunOutcome:
        statuses = self._open_meters()
        manifest = self._manifest(statuses)
        writer = RunWriter(self.folder, manifest)
        outcome = RunOutcome(self.folder, self.run_id, manifest=manifest)
        self._cell_entry = {e["cell_id"]: e for e in manifest["cells"]}
        try:
            for m in self.meters:
                m.start()
            if self.meters and self.config.energy.idle_s > 0:
                self.progress.on_message(
                    f"measuring idle power for {self.config.energy.idle_s:g} s before the sweep"
                )
                self.idle_w = energy_math.idle_baseline(self.meters, self.config.energy.idle_s)
                manifest["idle"] = {"seconds": self.config.energy.idle_s, "watts": self.idle_w}
            writer.write_manifest()
            done = 0
            for group in groups(self.cells):
                self._run_group(group, writer, outcome, done)
                done += len(group)
        except KeyboardInterrupt:
            outcome.interrupted = True
        finally:
            for m in self.meters:
                try:
                    m.close()
                except Exception:  # noqa: BLE001 - closing must not hide the run's own outcome
                    pass
            manifest["finished_utc"] = _utc()
            manifest["status"] = "interrupted" if outcome.interrupted else "finished"
            writer.flush()
        outcome.trials = writer.rows["trials"]
        return outcome

    def _fail_cells(
        self, cells: list[Cell], message: str, writer: RunWriter, outcome: RunOutcome
    ) -> None:
        for cell in cells:
            self._cell_entry[cell.cell_id].update(status="error", error=message)
            writer.add("trials", [self._error_row(cell, 0, False, message)])
            outcome.cells_failed += 1
            self.progress.on_cell_end(cell, "error", message)
        writer.flush()

    def _base_row(self, cell: Cell, trial: int, warmup: bool) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "cell_id": cell.cell_id,
            "cell_key": self._cell_keys.get(cell.cell_id),
            "settings_hash": self._cell_entry[cell.cell_id]["settings_hash"],
            **cell.params(),
            "trial": trial,
            "warmup": warmup,
        }

    def _error_row(self, cell: Cell, trial: int, warmup: bool, message: str) -> dict[str, Any]:
        return {**self._base_row(cell, trial, warmup), "status": "error", "error": message}

    def _run_group(
        self, group: list[Cell], writer: RunWriter, outcome: RunOutcome, done: int
    ) -> None:
        first = group[0]
        n_total = len(self.cells)
        try:
            path = fetch(first.variant)
        except ModelError as e:
            self._fail_cells(group, str(e), writer, outcome)
            return
        ident = file_identity(path)
        load_settings = {k: first.setting[k] for k in LOAD_TIME_SETTINGS}
        load_settings["n_threads"] = first.setting["n_threads"]
        load_settings.update(dict(first.extra))
        load_id = f"l{len(writer.manifest['loads']) + 1:02d}"
        load_entry: dict[str, Any] = {
            "load_id": load_id,
            "model_key": first.variant.key,
            "settings": load_settings,
            "status": "ok",
            "error": None,
        }
        writer.manifest["loads"].append(load_entry)
        reset_peak_rss()
        t0 = time.perf_counter()
        try:
            backend = get_backend(first.backend)()
            session = backend.load(path, load_settings, self.config.trials.seed)
        except BackendError as e:
            load_entry.update(status="error", error=str(e))
            self._fail_cells(group, str(e), writer, outcome)
            return
        load_s = time.perf_counter() - t0
        info = session.info()
        model_entry = {
            "id": first.variant.spec.id,
            "quant": first.variant.quant,
            "source": first.variant.source(),
            **ident,
            **info,
        }
        writer.manifest["models"][first.variant.key] = model_entry
        load_entry["load_s"] = load_s
        try:
            for k, cell in enumerate(group):
                self.progress.on_cell_start(cell, done + k, n_total)
                self._cell_keys[cell.cell_id] = _cell_key(cell, ident["sha256"])
                self._cell_entry[cell.cell_id]["cell_key"] = self._cell_keys[cell.cell_id]
                status, err = self._run_cell(cell, session, writer, load_id, load_s)
                if status == "ok":
                    outcome.cells_ok += 1
                else:
                    outcome.cells_failed += 1
                self._cell_entry[cell.cell_id].update(status=status, error=err)
                rss, how = peak_rss_bytes()
                load_entry.update(peak_rss_bytes=rss, peak_rss_method=how)
                writer.flush()
                self.progress.on_cell_end(cell, status, err)
        finally:
            session.close()

    def _run_cell(
        self, cell: Cell, session: Session, writer: RunWriter, load_id: str, load_s: float
    ) -> tuple[str, str | None]:
        trials = self.config.trials
        try:
            session.configure(cell.setting)
            prompt = session.prompt(cell.prompt_id, cell.prompt_tokens, cell.prompt_text)
        except BackendError as e:
            writer.add("trials", [self._error_row(cell, 0, False, str(e))])
            return "error", str(e)
        n = trials.warmup + trials.repeat
        for j in range(n):
            warm = j < trials.warmup
            self.progress.on_trial(cell, j, n, warm)
            readings: dict[str, list[Reading]] = {}
            meters = self.meters

            def on_edge(edge: str) -> None:
                readings[edge] = [m.read() for m in meters]

            try:
                trace = session.generate(
                    prompt, cell.gen_tokens, self.config.workload.stop_at_eos, on_edge
                )
            except BackendError as e:
                writer.add("trials", [self._error_row(cell, j, warm, str(e))])
                return "error", str(e)
            row = self._base_row(cell, j, warm)
            timing = trial_timing(trace)
            problem = prompt_check(timing)
            row.update(status="error" if problem else "ok", error=problem)
            row.update(timing)
            row.update(load_id=load_id, load_s=load_s)
            self._energy(cell, j, warm, trace, readings, row, writer)
            writer.add("trials", [row])
            writer.add(
                "tokens",
                [
                    {
                        "run_id": self.run_id,
                        "cell_id": cell.cell_id,
                        "trial": j,
                        "i": i,
                        "t_s": t - trace.t_start,
                        "token_id": tok,
                    }
                    for i, (t, tok) in enumerate(zip(trace.token_times, trace.token_ids))
                ],
            )
            if problem:
                return "error", problem
            if trials.cooldown_s > 0 and j < n - 1:
                time.sleep(trials.cooldown_s)
        return "ok", None

    def _energy(
        self,
        cell: Cell,
        j: int,
        warm: bool,
        trace: Any,
        readings: dict[str, list[Reading]],
        row: dict[str, Any],
        writer: RunWriter,
    ) -> None:
        if not self.meters or not {"start", "first", "end"} <= readings.keys():
            return
        start = energy_math.merge_readings(readings["start"])
        first = energy_math.merge_readings(readings["first"])
        end = energy_math.merge_readings(readings["end"])
        domains = [d for m in self.meters for d in m.domains()]
        rows = energy_math.phase_rows(
            domains, [("prefill", start, first), ("decode", first, end)], self.idle_w
        )
        tag = {"run_id": self.run_id, "cell_id": cell.cell_id, "trial": j, "warmup": warm}
        writer.add("energy", [{**tag, **r} for r in rows])
        row.update(
            energy_math.trial_energy(
                rows, row.get("n_prompt") or 0, row.get("n_gen") or 0, row.get("e2e_s") or 0.0
            )
        )
        timeline: list[dict[str, Any]] = []
        for k, m in enumerate(self.meters):
            polled = m.timeline(start.t, end.t)
            series = sorted(
                [readings["start"][k], *polled, readings["end"][k]], key=lambda r: r.t
            )
            timeline.extend(energy_math.power_timeline(series, start.t))
        tag.pop("warmup")
        writer.add("power", [{**tag, **p} for p in timeline])


def _cell_key(cell: Cell, sha256: str) -> str:
    """What makes two cells comparable across runs: the model file's bytes, not its name."""
    params = cell.params()
    params.pop("model")
    body = {
        "model_sha256": sha256,
        "params": params,
        "prompt_text": cell.prompt_text,
        "extra": dict(cell.extra),
    }
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]
