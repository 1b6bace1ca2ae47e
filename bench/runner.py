"""The measurement loop: idle baseline, load, warm-up, trials, cooldown; rows as cells finish.

Two halves. A `GroupWorker` loads one model (one load-time setting) and runs its cells: it reads
every meter at three edges of a trial (request start, first token, last token) and turns the
backend's trace into rows. The `Runner` owns the run folder: it measures idle power, starts a
worker per group (in a child process by default, so an engine abort or the OOM killer fails only
the affected cells), writes the tables after each cell, and resumes an interrupted run. Workers
talk to the runner only through events, the same ones in and out of process.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import energy as energy_math
from bench import roofline
from bench.backends.base import BackendError, Session, get_backend
from bench.config import Config, LoadedConfig
from bench.machine import (
    cpu_load_percent,
    machine_facts,
    peak_rss_bytes,
    power_state,
    reset_peak_rss,
    software_facts,
)
from bench.meters import open_meters
from bench.meters.base import Meter, MeterUnavailable, Reading
from bench.metrics import prompt_check, text_columns, trial_timing
from bench.models import ModelError, fetch, file_identity
from bench.results import FORMAT_VERSION, ResultsError, RunWriter, load_run
from bench.stats import cv, mean_ci
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
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{loaded.config.name}-{loaded.short_hash}"


def _utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def cell_key(cell: Cell, model_identity: str) -> str:
    """What makes two cells comparable across runs: the model file's bytes, not its name."""
    params = cell.params()
    params.pop("model")
    body = {
        "model": model_identity,
        "params": params,
        "prompt_text": cell.prompt_text,
        "extra": dict(cell.extra),
    }
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# The worker: one model load, its cells


@dataclass
class GroupJob:
    """Everything a worker needs; picklable, so it can cross into a child process."""

    config: Config
    cells: list[Cell]
    run_id: str
    load_id: str
    idle_w: dict[str, float]
    settings_hashes: dict[str, str]
    log_dir: str  # where servers that bench starts write their output


class GroupWorker:
    def __init__(
        self, job: GroupJob, emit: Callable[..., None], meters: list[Meter] | None = None,
        isolated: bool = False,
    ):
        self.job = job
        self.isolated = isolated
        self.config = job.config
        self.emit = emit
        self._given_meters = meters
        self.meters: list[Meter] = []
        self.cell_keys: dict[str, str] = {}

    def run(self) -> None:
        if self._given_meters is not None:
            self.meters = self._given_meters
        else:
            self.meters, _ = open_meters(self.config.energy)
            for m in self.meters:
                m.start()
        try:
            self._run()
        finally:
            if self._given_meters is None:
                for m in self.meters:
                    _close_quietly(m)

    def _fail(self, cells: list[Cell], message: str) -> None:
        for cell in cells:
            self.emit("rows", "trials", [self._error_row(cell, 0, False, message)])
            self.emit("cell_end", cell.cell_id, "error", message, None, [])

    def _base_row(self, cell: Cell, trial: int, warmup: bool) -> dict[str, Any]:
        return {
            "run_id": self.job.run_id,
            "cell_id": cell.cell_id,
            "cell_key": self.cell_keys.get(cell.cell_id),
            "settings_hash": self.job.settings_hashes[cell.cell_id],
            **cell.params(),
            "trial": trial,
            "warmup": warmup,
        }

    def _error_row(self, cell: Cell, trial: int, warmup: bool, message: str) -> dict[str, Any]:
        return {**self._base_row(cell, trial, warmup), "status": "error", "error": message}

    def _run(self) -> None:
        group = self.job.cells
        first = group[0]
        try:
            path = fetch(first.variant)
        except ModelError as e:
            self._fail(group, str(e))
            return
        # A served model has no local file: its identity is the name the server knows.
        ident = file_identity(path) if path is not None else {"served": first.variant.spec.served}
        load_settings = {**first.setting, **dict(first.extra), "log_dir": self.job.log_dir}
        load_entry: dict[str, Any] = {
            "load_id": self.job.load_id,
            "model_key": first.variant.key,
            "settings": load_settings,
            "status": "ok",
            "error": None,
        }
        reset_peak_rss()
        t0 = time.perf_counter()
        try:
            session = get_backend(first.backend)().load(
                path, load_settings, self.config.trials.seed,
                model_name=first.variant.spec.served or first.variant.spec.id,
            )
        except BackendError as e:
            load_entry.update(status="error", error=str(e))
            self.emit("load", load_entry)
            self._fail(group, str(e))
            return
        load_s = time.perf_counter() - t0
        load_entry["load_s"] = load_s
        try:
            server_pid = getattr(session, "server_pid", lambda: None)()
            if server_pid:
                for m in self.meters:
                    track = getattr(m, "track_pid", None)
                    if track is not None:
                        track(server_pid)
            self.emit(
                "model",
                first.variant.key,
                {
                    "id": first.variant.spec.id,
                    "quant": first.variant.quant,
                    "source": first.variant.source(),
                    **ident,
                    **session.info(),
                },
            )
            identity = ident.get("sha256") or f"served:{ident.get('served')}"
            fault = os.environ.get("BENCH_FAULT_ABORT_CELL")
            for cell in group:
                self.cell_keys[cell.cell_id] = cell_key(cell, identity)
                self.emit("cell_start", cell.cell_id)
                if fault == cell.cell_id and self.isolated:
                    # Test seam: stands in for llama.cpp's abort() on a fatal engine error.
                    os.abort()
                status, err, warnings = self._run_cell(cell, session, load_s)
                rss, how = peak_rss_bytes()
                load_entry.update(peak_rss_bytes=rss, peak_rss_method=how)
                usage = getattr(session, "resource_usage", lambda: {})()
                load_entry.update(usage)
                self.emit("load", dict(load_entry))
                self.emit("cell_end", cell.cell_id, status, err, self.cell_keys[cell.cell_id],
                          warnings)
        finally:
            session.close()

    def _n_trials(self, decode_rates: list[float], measured: int) -> bool:
        """Whether to run another measured trial (fixed count, or adaptive to a CI target)."""
        rep = self.config.trials.repeat
        if isinstance(rep, int):
            return measured < rep
        if measured < rep.min:
            return True
        if measured >= rep.max:
            return False
        s = mean_ci(decode_rates) if len(decode_rates) >= 2 else None
        return s is None or s.half_width / s.mean * 100.0 > rep.target_ci_pct

    def _run_cell(
        self, cell: Cell, session: Session, load_s: float
    ) -> tuple[str, str | None, list[str]]:
        trials = self.config.trials
        try:
            session.configure(cell.setting)
            prompt = session.prompt(cell.prompt_id, cell.prompt_tokens, cell.prompt_text)
        except BackendError as e:
            self.emit("rows", "trials", [self._error_row(cell, 0, False, str(e))])
            return "error", str(e), []
        decode_rates: list[float] = []
        j = 0
        while True:
            warm = j < trials.warmup
            if not warm and not self._n_trials(decode_rates, j - trials.warmup):
                break
            self.emit("trial", cell.cell_id, j, trials.warmup + trials.max_repeat, warm)
            if j > 0 and trials.cooldown_s > 0:
                time.sleep(trials.cooldown_s)
            try:
                row = self._trial(cell, session, prompt, j, warm, load_s)
            except BackendError as e:
                self.emit("rows", "trials", [self._error_row(cell, j, warm, str(e))])
                return "error", str(e), []
            if row["status"] != "ok":
                return "error", row["error"], []
            if not warm and row.get("decode_tps"):
                decode_rates.append(row["decode_tps"])
            j += 1
        warnings = []
        if len(decode_rates) >= 2:
            spread = cv(decode_rates) * 100.0
            if spread > self.config.execution.max_cv_pct:
                warnings.append(
                    f"decode t/s varies {spread:.1f}% across trials (coefficient of variation "
                    f"above {self.config.execution.max_cv_pct:g}%): the machine was noisy"
                )
        return "ok", None, warnings

    def _trial(
        self, cell: Cell, session: Session, prompt: Any, j: int, warm: bool, load_s: float
    ) -> dict[str, Any]:
        readings: dict[str, list[Reading]] = {}
        states: dict[str, dict[str, Any]] = {}
        meter_errors: list[str] = []
        meters = self.meters

        def on_edge(edge: str) -> None:
            try:
                readings[edge] = [m.read() for m in meters]
            except MeterUnavailable as e:
                # The trial's timing stands; its energy is reported missing, with why.
                meter_errors.append(str(e))
            # Device state (temperature, clocks, throttling) outside the timed phases only.
            if edge != "first":
                for m in meters:
                    snap = m.snapshot()
                    if snap:
                        states.setdefault(edge, {})[m.name] = snap

        trace = session.generate(prompt, cell.gen_tokens, self.config.workload.stop_at_eos, on_edge)
        row = self._base_row(cell, j, warm)
        timing = trial_timing(trace)
        problem = prompt_check(timing)
        row.update(status="error" if problem else "ok", error=problem)
        row.update(timing)
        # Per-row facts the backend learnt at load (#15: the flash_attn llama.cpp chose).
        row.update(getattr(session, "row_columns", dict)())
        row.update(load_id=self.job.load_id, load_s=load_s)
        if meter_errors:
            row["energy_error"] = meter_errors[0]
        else:
            self._energy(cell, j, warm, readings, row)
        gen_text, first_text = trace.text, None
        if gen_text is None and trace.token_ids:
            gen_text = session.detokenize(trace.token_ids)
            first_text = session.detokenize(trace.token_ids[:1])
        row.update(
            text_columns(
                cell.prompt_text, row.get("n_prompt") or 0, gen_text, first_text,
                row.get("decode_s"), row.get("decode_energy_j"),
            )
        )
        for edge, name in (("start", "meter_state_start"), ("end", "meter_state_end")):
            if edge in states:
                row[name] = json.dumps(states[edge], default=str, sort_keys=True)
        self.emit("rows", "trials", [row])
        self.emit(
            "rows",
            "tokens",
            [
                {
                    "run_id": self.job.run_id,
                    "cell_id": cell.cell_id,
                    "trial": j,
                    "i": i,
                    "t_s": t - trace.t_start,
                    "token_id": tok,
                }
                for i, (t, tok) in enumerate(zip(trace.token_times, trace.token_ids))
            ],
        )
        return row

    def _energy(
        self, cell: Cell, j: int, warm: bool, readings: dict[str, list[Reading]],
        row: dict[str, Any],
    ) -> None:
        if not self.meters or not {"start", "first", "end"} <= readings.keys():
            return
        start = energy_math.merge_readings(readings["start"])
        first = energy_math.merge_readings(readings["first"])
        end = energy_math.merge_readings(readings["end"])
        rows = energy_math.phase_rows(
            energy_math.all_domains(self.meters),
            [("prefill", start, first), ("decode", first, end)],
            self.job.idle_w,
        )
        tag = {"run_id": self.job.run_id, "cell_id": cell.cell_id, "trial": j}
        self.emit("rows", "energy", [{**tag, "warmup": warm, **r} for r in rows])
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
        self.emit("rows", "power", [{**tag, **p} for p in timeline])


def _close_quietly(m: Meter) -> None:
    try:
        m.close()
    except Exception:  # noqa: BLE001 - closing must not hide the run's own outcome
        pass


def _run_group_job(job: GroupJob, emit: Callable[..., None]) -> None:
    GroupWorker(job, emit, isolated=True).run()


def _child_main(conn: Any, target: Callable[..., None], args: tuple[Any, ...]) -> None:
    """Entry point of a child process: runs target(*args, emit) and reports through the pipe."""
    # Ctrl-C reaches the whole process group; the parent decides, and stops us itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def emit(*event: Any) -> None:
        conn.send(event)

    try:
        target(*args, emit)
        emit("done")
    except BaseException as e:  # noqa: BLE001 - report anything, then exit non-zero
        emit("crash", f"{type(e).__name__}: {e}", traceback.format_exc(limit=5))
        raise SystemExit(1) from None
    finally:
        conn.close()


class _Child:
    """A spawned child process and the events it sends; stopped for good on any exit."""

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...]):
        ctx = mp.get_context("spawn")
        self.conn, child_conn = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(
            target=_child_main, args=(child_conn, target, args), daemon=True
        )
        self.proc.start()
        child_conn.close()
        self.crash: str | None = None

    def pump(self, on_event: Callable[..., None], overdue: Callable[[], str | None]) -> None:
        """Dispatch events until the child is done, dies, or `overdue()` names a reason to stop
        it (then recorded as the crash)."""
        try:
            while True:
                if self.conn.poll(0.2):
                    try:
                        event = self.conn.recv()
                    except EOFError:
                        break
                    if event[0] == "done":
                        break
                    if event[0] == "crash":
                        self.crash = event[1]
                        continue
                    on_event(*event)
                elif not self.proc.is_alive() and not self.conn.poll(0):
                    break
                else:
                    why = overdue()
                    if why is not None:
                        self.crash = why
                        self.proc.kill()
                        break
        except KeyboardInterrupt:
            self.proc.kill()
            raise
        finally:
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)


def _signal_name(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


# ---------------------------------------------------------------------------------------------
# The runner: the run folder, idle baseline, workers, resume


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
            "domains": [d.__dict__ for d in energy_math.all_domains(self.meters)],
            "idle": {},
            # Memory bandwidth for the decode roofline (#15), measured once per run.
            "roofline": roofline.measure_bandwidth(
                gpu=any(c.params().get("n_gpu_layers") for c in self.cells)
            ),
            "guards": {"warnings": []},
            "loads": [],
            "resumed": [],
            "cells": [
                {
                    "cell_id": c.cell_id,
                    "settings_hash": c.settings_hash(),
                    "params": c.params(),
                    "status": "pending",
                    "error": None,
                    "warnings": [],
                }
                for c in self.cells
            ],
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
        """A fresh run folder, or the folder being resumed with its finished cells kept."""
        if self.resume is None:
            return RunWriter(self.folder, manifest), set()
        old = load_run(self.resume)
        by_hash = {
            e["settings_hash"]: e for e in old.manifest.get("cells", []) if e.get("status") == "ok"
        }
        keep: dict[str, str] = {}  # old cell_id -> new cell_id
        for entry in manifest["cells"]:
            prev = by_hash.get(entry["settings_hash"])
            if prev is not None:
                keep[prev["cell_id"]] = entry["cell_id"]
                entry.update({k: prev.get(k) for k in ("status", "error", "warnings", "cell_key")})
        rows: dict[str, list[dict[str, Any]]] = {}
        for table in ("trials", "energy", "power", "tokens"):
            kept = []
            for r in old.table(table) if table != "trials" else old.trials:
                if r.get("cell_id") in keep:
                    kept.append({**r, "cell_id": keep[r["cell_id"]]})
            rows[table] = kept
        for key in ("models", "loads", "idle", "started_utc", "resumed"):
            if old.manifest.get(key):
                manifest[key] = old.manifest[key]
        manifest["resumed"] = list(manifest.get("resumed") or []) + [_utc()]
        manifest["run_id"] = self.run_id
        return RunWriter.reopen(self.folder, manifest, rows), set(keep.values())

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> RunOutcome:
        statuses = self._open_meters()
        manifest = self._manifest(statuses)
        writer, finished = self._writer(manifest)
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
                _close_quietly(m)
            manifest["finished_utc"] = _utc()
            manifest["status"] = "interrupted" if outcome.interrupted else "finished"
            writer.flush()
        outcome.trials = writer.rows["trials"]
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
                _close_quietly(m)
            self.meters = []

    # -- events from workers -------------------------------------------------------------------
    def _on_event(self, kind: str, *args: Any) -> None:
        w, m = self.writer, self.writer.manifest
        if kind == "rows":
            if args[0] == "trials":  # roofline and energy-floor columns (#15)
                args[1][:] = [{**r, **roofline.trial_columns(r, m)} for r in args[1]]
            w.add(args[0], args[1])
        elif kind == "model":
            # Several backends may load the same file; keep what the first learnt, add the rest.
            entry = m["models"].setdefault(args[0], {})
            for k, v in args[1].items():
                if entry.get(k) is None:
                    entry[k] = v
        elif kind == "load":
            loads = [x for x in m["loads"] if x["load_id"] != args[0]["load_id"]]
            m["loads"] = loads + [args[0]]
        elif kind == "cell_start":
            self._current = args[0]
            self._cell_started = time.monotonic()
            self.progress.on_cell_start(self._cells_by_id[args[0]], self._done, len(self.cells))
        elif kind == "trial":
            self.progress.on_trial(self._cells_by_id[args[0]], *args[1:])
        elif kind == "cell_end":
            cell_id, status, err, key, warnings = args
            self._finish_cell(cell_id, status, err, key, warnings)
        elif kind == "message":
            self.progress.on_message(args[0])

    def _finish_cell(
        self, cell_id: str, status: str, err: str | None, key: str | None, warnings: list[str]
    ) -> None:
        entry = self._entry[cell_id]
        entry.update(status=status, error=err, cell_key=key, warnings=warnings)
        self._current = None
        self._done += 1
        if status == "ok":
            self.outcome.cells_ok += 1
        else:
            self.outcome.cells_failed += 1
        self.writer.flush()
        cell = self._cells_by_id[cell_id]
        self.progress.on_cell_end(cell, status, err)
        for warning in warnings:
            self.progress.on_message(f"warning: cell {cell_id}: {warning}")

    def _run_quality(self) -> None:
        """Quality after the sweep, in its own child process when isolating."""
        from bench.quality_phase import run_quality

        self.progress.on_message("measuring model quality (bits per byte, KL) after the sweep")
        if not self.isolate:
            run_quality(self.config, self.cells, self.run_id, self._on_event)
        else:
            child = _Child(run_quality, (self.config, self.cells, self.run_id))
            child.pump(self._on_event, lambda: None)
            if child.crash or child.proc.exitcode not in (0, None):
                self.progress.on_message(
                    "quality measurement failed: "
                    + (child.crash or _signal_name(child.proc.exitcode))
                )
        self.writer.flush()

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
        child = _Child(_run_group_job, (self._job(cells),))
        finished: set[str] = set()
        timeout = self.config.execution.cell_timeout_s

        def on_event(*event: Any) -> None:
            if event[0] == "cell_end":
                finished.add(event[1])
            self._on_event(*event)

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
                f"the engine process died ({_signal_name(proc.exitcode)}) while running this "
                "cell; llama.cpp aborted or the system ran out of memory"
            )
            cell = self._cells_by_id[in_flight]
            self.writer.add(
                "trials",
                [
                    {
                        "run_id": self.run_id,
                        "cell_id": in_flight,
                        "settings_hash": self._entry[in_flight]["settings_hash"],
                        **cell.params(),
                        "trial": 0,
                        "warmup": False,
                        "status": "error",
                        "error": why,
                    }
                ],
            )
            self._finish_cell(in_flight, "error", why, None, [])
            finished.add(in_flight)
        return finished


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def resume_hint(folder: Path, config_path: Path | None) -> str:
    cfg = str(config_path) if config_path else "CONFIG"
    return f"python -m bench run {cfg} --resume {folder}"


__all__ = ["Runner", "Progress", "RunOutcome", "GroupWorker", "GroupJob", "resume_hint",
           "ResultsError"]
