"""The timed loop, the only code that knows phases: a `GroupWorker` loads one model (one
load-time setting) and runs its cells, reading every meter at three edges of a trial (request
start, first token, last token) and turning the backend's trace into rows, sent as events."""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bench import energy as energy_math
from bench import roofline
from bench.backends.base import (
    BackendError,
    DecodeReads,
    HasServerProcess,
    ReportsDecodeReads,
    ReportsResourceUsage,
    ReportsRowColumns,
    Session,
    TracksProcess,
    get_backend,
)
from bench.config import Config
from bench.machine import peak_rss_bytes, reset_peak_rss
from bench.meters import open_meters
from bench.meters.base import Meter, MeterUnavailable, Reading
from bench.metrics import prompt_check, text_columns, trial_timing
from bench.models import ModelError, fetch, file_identity
from bench.run.events import (
    CellFinished,
    CellStarted,
    Event,
    LoadRecord,
    ModelLoaded,
    Rows,
    TrialStarted,
)
from bench.stats import cv, mean_ci
from bench.sweep import Cell, hashed_params

Emit = Callable[[Event], None]


def cell_key(cell: Cell, model_identity: str) -> str:
    """What makes two cells comparable across runs: the model file's bytes, not its name."""
    params = hashed_params(cell.params())
    params.pop("model")
    body = {
        "model": model_identity,
        "params": params,
        "prompt_text": cell.prompt_text,
        "extra": dict(cell.extra),
    }
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


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
    # The backend registry as the runner saw it, so backends registered at run time (tests'
    # fakes) are found in a spawned child too.
    backends: Mapping[str, str] | None = None


def close_quietly(m: Meter) -> None:
    # Closing must not hide the run's own outcome.
    with contextlib.suppress(Exception):
        m.close()


class GroupWorker:
    def __init__(self, job: GroupJob, emit: Emit, meters: list[Meter] | None = None):
        self.job = job
        self.config = job.config
        self.emit = emit
        self._given_meters = meters
        self.meters: list[Meter] = []
        self.cell_keys: dict[str, str] = {}
        # The session whose DecodeReads were asked, and its answer (once per load).
        self._reads: tuple[Session | None, DecodeReads | None] = (None, None)
        self._reads_error: str | None = None

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
                    close_quietly(m)

    def _fail(self, cells: list[Cell], message: str) -> None:
        for cell in cells:
            self.emit(Rows("trials", [self._error_row(cell, 0, False, message)]))
            self.emit(CellFinished(cell.cell_id, "error", message))

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

    def _settings(self, cell: Cell) -> Any:
        """The cell's typed settings, validated by its backend's own model."""
        backend = get_backend(cell.backend, self.job.backends)
        return backend.cell_settings(
            {**cell.setting, **dict(cell.extra), "log_dir": self.job.log_dir}
        )

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
            backend = get_backend(first.backend, self.job.backends)
            session = backend().load(
                path, self._settings(first), self.config.trials.seed,
                model_name=first.variant.spec.served or first.variant.spec.id,
            )
        except BackendError as e:
            load_entry.update(status="error", error=str(e))
            self.emit(LoadRecord(load_entry))
            self._fail(group, str(e))
            return
        load_s = time.perf_counter() - t0
        load_entry["load_s"] = load_s
        try:
            server_pid = session.server_pid() if isinstance(session, HasServerProcess) else None
            if server_pid:
                for m in self.meters:
                    if isinstance(m, TracksProcess):
                        m.track_pid(server_pid)
            self.emit(ModelLoaded(
                first.variant.key,
                {
                    "id": first.variant.spec.id,
                    "quant": first.variant.quant,
                    "source": first.variant.source(),
                    **ident,
                    **session.info(),
                },
            ))
            identity = ident.get("sha256") or f"served:{ident.get('served')}"
            for cell in group:
                self.cell_keys[cell.cell_id] = cell_key(cell, identity)
                self.emit(CellStarted(cell.cell_id))
                status, err, warnings = self._run_cell(cell, session, load_s)
                rss, how = peak_rss_bytes()
                load_entry.update(peak_rss_bytes=rss, peak_rss_method=how)
                if isinstance(session, ReportsResourceUsage):
                    load_entry.update(session.resource_usage())
                self.emit(LoadRecord(dict(load_entry)))
                self.emit(CellFinished(cell.cell_id, status, err, self.cell_keys[cell.cell_id],
                                       warnings))
        finally:
            session.close()

    def _more_trials(self, decode_rates: list[float], measured: int) -> bool:
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
            session.configure(self._settings(cell))
            prompt = session.prompt(
                cell.prompt_id, cell.prompt_tokens, cell.prompt_text, depth=cell.depth
            )
        except BackendError as e:
            self.emit(Rows("trials", [self._error_row(cell, 0, False, str(e))]))
            return "error", str(e), []
        decode_rates: list[float] = []
        j = 0
        while True:
            warm = j < trials.warmup
            if not warm and not self._more_trials(decode_rates, j - trials.warmup):
                break
            self.emit(TrialStarted(cell.cell_id, j, trials.warmup + trials.max_repeat, warm))
            if j > 0 and trials.cooldown_s > 0:
                time.sleep(trials.cooldown_s)
            try:
                row = self._trial(cell, session, prompt, j, warm, load_s)
            except BackendError as e:
                self.emit(Rows("trials", [self._error_row(cell, j, warm, str(e))]))
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
        if isinstance(session, ReportsRowColumns):
            row.update(session.row_columns())  # what the engine chose at load (flash_attn)
        if isinstance(session, ReportsDecodeReads) and row["status"] == "ok":
            # What a decoded token reads as the engine holds the weights (bench.roofline).
            if self._reads[0] is not session:
                try:
                    self._reads = (session, session.decode_reads())
                except Exception as e:  # noqa: BLE001 - a figure, not the trial: say why
                    self._reads = (session, None)
                    self._reads_error = f"{type(e).__name__}: {e}"
            reads = self._reads[1]
            if reads is None and self._reads_error:
                row["roofline_note"] = (f"the engine could not say what a token reads "
                                        f"({self._reads_error})")
            if reads is not None:
                row.update(roofline.reads_columns(
                    reads, int(row.get("n_prompt") or 0), int(row.get("n_gen") or 0),
                    int(row.get("depth") or 0),
                ))
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
        self.emit(Rows("trials", [row]))
        self.emit(Rows(
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
                for i, (t, tok) in enumerate(zip(trace.token_times, trace.token_ids, strict=False))
            ],
        ))
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
        self.emit(Rows("energy", [{**tag, "warmup": warm, **r} for r in rows]))
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
        self.emit(Rows("power", [{**tag, **p} for p in timeline]))


def run_group_job(job: GroupJob, emit: Emit) -> None:
    """What a worker child runs (a module-level function, so spawn can import it)."""
    GroupWorker(job, emit).run()
