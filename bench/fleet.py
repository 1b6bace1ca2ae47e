"""One sweep across several machines through Dask distributed, written to one run folder.

Each machine runs `bench worker --scheduler ADDRESS --name NAME`: a Dask worker with one thread
and the resource `machine-NAME: 1`, so it takes exactly one cell group at a time, and runs it in
its own child process exactly as a local run does (its own meters and idle baseline). The driver
(`bench run CONFIG --cluster ADDRESS`) sends every group to every machine named, streams the rows
back through a Dask queue and writes one run folder in which every row carries `machine` (the
worker's name) and `machine_id` (the hardware fingerprint). A worker lost mid-sweep fails only its
cell in flight; `--resume` runs what is missing. See docs/fleet.md.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.config import LoadedConfig
from bench.results import FORMAT_VERSION, ResultsError, Run, RunWriter, load_run
from bench.sweep import Cell, groups

RESOURCE_PREFIX = "machine-"
# How often the driver drains the event queue and looks for lost workers.
POLL_S = 0.2


class FleetError(Exception):
    """A cluster that cannot be used as asked; the message says why and what to do."""


def resource_of(machine: str) -> str:
    return f"{RESOURCE_PREFIX}{machine}"


def _utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# The seam onto the runner (the integrator re-points this one function at bench/run/)


def run_group_here(
    job: Any, on_event: Callable[..., None], overdue: Callable[[], str | None]
) -> tuple[str | None, int | None]:
    """Run one cell group in a child process exactly as a local run does (bench.run.launcher);
    returns the child's crash reason (or None) and its exit code. Events reach `on_event` as
    they happen, as the plain tuples the fleet's queue carries (`as_tuple`)."""
    from bench.run.launcher import Child
    from bench.run.worker import run_group_job

    child = Child(run_group_job, (job,))
    child.pump(lambda event: on_event(*as_tuple(event)), overdue)
    return child.crash, child.proc.exitcode


def as_tuple(event: Any) -> tuple[Any, ...]:
    """A worker's typed event (bench.run.events) as the tuple the fleet sends to the driver:
    plain data, so it crosses Dask's queue without bench's classes on the other side."""
    from bench.run import events as ev

    if isinstance(event, ev.Rows):
        return ("rows", event.table, event.rows)
    if isinstance(event, ev.ModelLoaded):
        return ("model", event.key, event.facts)
    if isinstance(event, ev.LoadRecord):
        return ("load", event.entry)
    if isinstance(event, ev.CellStarted):
        return ("cell_start", event.cell_id)
    if isinstance(event, ev.TrialStarted):
        return ("trial", event.cell_id, event.trial, event.of, event.warmup)
    if isinstance(event, ev.CellFinished):
        return ("cell_end", event.cell_id, event.status, event.error, event.cell_key,
                list(event.warnings))
    if isinstance(event, ev.Message):
        return ("message", event.text)
    raise TypeError(f"unknown worker event {type(event).__name__}")


def _exit_text(code: int | None) -> str:
    from bench.run.launcher import signal_name

    return signal_name(code)


# ---------------------------------------------------------------------------------------------
# On the worker


_IDLE: dict[str, dict[str, Any]] = {}


def _idle_here(config: Any) -> dict[str, Any]:
    """This machine's idle power, measured once per worker and energy settings."""
    from bench import energy as energy_math
    from bench.meters import open_meters

    key = json.dumps(config.energy.model_dump(mode="json"), sort_keys=True)
    if key in _IDLE:
        return _IDLE[key]
    meters, statuses = open_meters(config.energy)
    watts: dict[str, float] = {}
    try:
        for m in meters:
            m.start()
        if meters and config.energy.idle_s > 0:
            watts = energy_math.idle_baseline(meters, config.energy.idle_s)
    finally:
        for m in meters:
            try:
                m.close()
            except Exception:  # noqa: BLE001, S110 - closing must not hide the baseline
                pass
    _IDLE[key] = {
        "seconds": config.energy.idle_s,
        "watts": watts,
        "meters": [s.__dict__ for s in statuses],
        "domains": [d.__dict__ for d in energy_math.all_domains(meters)],
    }
    return _IDLE[key]


def machine_here(name: str) -> dict[str, Any]:
    from bench.machine import machine_facts, software_facts

    return {**machine_facts(), "name": name, "software": software_facts()}


def _child_pass(job: Any, send: Callable[..., None]) -> set[str]:
    """One child process over `job.cells`; returns the cells it finished. If the child dies, the
    cell in flight (or the first unfinished one) takes the blame, as in a local run, and the
    caller runs the others in a new child."""
    timeout = job.config.execution.cell_timeout_s
    finished: set[str] = set()
    state: dict[str, Any] = {"current": None, "since": 0.0}

    def on_event(*event: Any) -> None:
        if event[0] == "cell_start":
            state.update(current=event[1], since=time.monotonic())
        elif event[0] == "cell_end":
            finished.add(event[1])
            state["current"] = None
        send(*event)

    def overdue() -> str | None:
        late = state["current"] is not None and time.monotonic() - state["since"] > (
            timeout if timeout is not None else math.inf
        )
        if not late:
            return None
        return f"the cell ran longer than execution.cell_timeout_s ({timeout:g} s)"

    crash, code = run_group_here(job, on_event, overdue)
    rest = [c for c in job.cells if c.cell_id not in finished]
    if rest:
        blamed = state["current"] or rest[0].cell_id
        why = crash or (
            f"the engine process died ({_exit_text(code)}) while running this cell; "
            "llama.cpp aborted or the system ran out of memory"
        )
        send("cell_end", blamed, "error", why, None, [])
        finished.add(blamed)
    return finished


def remote_group(job: Any, machine: str, queue_name: str) -> str:
    """A Dask task: one cell group on this worker's machine, events streamed to the driver."""
    from distributed import Queue

    from bench.backends.base import BackendError, get_backend

    queue = Queue(queue_name)

    def send(*event: Any) -> None:
        queue.put([machine, list(event)])

    facts = machine_here(machine)
    for name in sorted({c.backend for c in job.cells}):
        try:
            facts["software"].update(get_backend(name).software())
        except BackendError as e:
            facts["software"][f"{name}_error"] = str(e)
    idle = _idle_here(job.config)
    send("machine", facts, idle)
    job.idle_w = dict(idle["watts"])
    job.log_dir = str(Path(os.environ.get("TMPDIR", "/tmp")) / "bench-worker-logs" / job.run_id)
    pending = list(job.cells)
    while pending:
        job.cells = pending
        finished = _child_pass(job, send)
        pending = [c for c in pending if c.cell_id not in finished]
    return machine


def remote_quality(config: Any, cells: list[Any], run_id: str, machine: str,
                   queue_name: str) -> str:
    """A Dask task: the quality phase (bits per byte, KL) on this worker's machine after its
    cells, in a child process as a local run does; rows streamed to the driver. Returns "ok"
    when the phase finished, else "failed" (the reason went to the driver as a message)."""
    from distributed import Queue

    from bench.quality_phase import run_quality
    from bench.run.launcher import Child

    queue = Queue(queue_name)

    def send(*event: Any) -> None:
        queue.put([machine, list(event)])

    child = Child(run_quality, (config, cells, run_id))
    child.pump(lambda event: send(*as_tuple(event)), lambda: None)
    if child.crash or child.proc.exitcode not in (0, None):
        send("message", "quality measurement failed: "
             + (child.crash or _exit_text(child.proc.exitcode)))
        return "failed"
    return "ok"


def fingerprint_here() -> str | None:
    """This worker's hardware fingerprint (bench.machine.machine_id), asked before a resume."""
    from bench.machine import machine_facts

    return machine_facts().get("id")


def check_resume_machines(old: dict[str, Any], now: dict[str, str | None]) -> None:
    """Refuse to resume a fleet run when a machine's worker now runs on other hardware: its
    kept cells and the new ones would be two machines under one name and cell key."""
    moved = [
        f"{m} was {facts.get('id')}, is now {now[m]}"
        for m, facts in (old.get("machines") or {}).items()
        if m in now and facts.get("id") and now[m] and facts.get("id") != now[m]
    ]
    if moved:
        raise FleetError(
            "--resume: a machine of this run now reports other hardware (" + "; ".join(moved)
            + "); resume with the workers on the machines that measured it, or start a new run"
        )


def serve_worker(scheduler: str, name: str | None = None) -> int:
    """`bench worker`: serve this machine to a scheduler until stopped (Ctrl-C)."""
    try:
        from distributed import Worker
    except ImportError:
        print("bench worker: needs Dask distributed; install it with pip install 'bench[fleet]'")
        return 2
    machine = name or socket.gethostname()

    async def serve() -> None:
        async with Worker(
            scheduler, nthreads=1, name=machine, resources={resource_of(machine): 1},
            # The scheduler must not restart or spill a worker that is measuring.
            memory_limit=0, dashboard=False,
        ) as worker:
            await worker.finished()

    print(f"bench worker {machine}: serving {scheduler} (one cell group at a time)", flush=True)
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        print(f"bench worker: cannot reach the scheduler at {scheduler} ({e}); start one with "
              "`dask scheduler` and pass its address")
        return 2
    return 0


# ---------------------------------------------------------------------------------------------
# The driver


@dataclass
class FleetOutcome:
    folder: Path
    run_id: str
    cells_ok: int = 0
    cells_failed: int = 0
    cells_not_run: int = 0
    interrupted: bool = False
    manifest: dict[str, Any] = field(default_factory=dict)
    trials: list[dict[str, Any]] = field(default_factory=list)
    lost: dict[str, str] = field(default_factory=dict)  # machine -> why


def fleet_cell_id(cell_id: str, machine: str) -> str:
    return f"{cell_id}@{machine}"


def _connect(address: str, timeout_s: float) -> Any:
    try:
        from distributed import Client
    except ImportError as e:
        raise FleetError(
            "--cluster needs Dask distributed; install it with pip install 'bench[fleet]'"
        ) from e
    try:
        return Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise FleetError(
            f"cannot reach the scheduler at {address} ({e}); start one with `dask scheduler` "
            "and workers with `bench worker --scheduler ADDRESS --name NAME`"
        ) from e


def _scheduler_workers(dask_scheduler: Any) -> dict[str, dict[str, float]]:
    """Runs on the scheduler: each worker's address and resources, as the scheduler sees now."""
    return {addr: dict(ws.resources) for addr, ws in dask_scheduler.workers.items()}


def workers_by_machine(client: Any) -> dict[str, str]:
    """Machine name -> worker address, from the workers' `machine-NAME` resources. Asked of the
    scheduler itself: the client's cached view lags and can omit workers that are there."""
    out: dict[str, str] = {}
    for addr, resources in client.run_on_scheduler(_scheduler_workers).items():
        for res in resources:
            if res.startswith(RESOURCE_PREFIX):
                out[res[len(RESOURCE_PREFIX):]] = addr
    return out


class FleetRun:
    """The driver: every group to every machine, rows back into one run folder."""

    def __init__(
        self, loaded: LoadedConfig, cells: list[Cell], out_dir: Path, cluster: str,
        machines: Sequence[str] | None = None, resume: Path | None = None,
        on_message: Callable[[str], None] = lambda msg: None, connect_timeout_s: float = 10.0,
    ):
        from bench.runner import make_run_id

        self.loaded = loaded
        self.config = loaded.config
        self.cells = cells
        self.cluster = cluster
        self.asked = list(machines or getattr(self.config, "machines", None) or [])
        self.resume = resume
        self.say = on_message
        self.connect_timeout_s = connect_timeout_s
        self.run_id = resume.name if resume is not None else make_run_id(loaded)
        self.folder = resume if resume is not None else out_dir / self.run_id
        self._by_id = {c.cell_id: c for c in cells}

    # -- set-up --------------------------------------------------------------------------------
    def _manifest(self, machines: list[str]) -> dict[str, Any]:
        from bench.machine import machine_facts, software_facts

        return {
            "format_version": FORMAT_VERSION,
            "run_id": self.run_id,
            "started_utc": _utc(),
            "finished_utc": None,
            "status": "running",
            "config_path": str(self.loaded.path) if self.loaded.path else None,
            "config": self.config.model_dump(mode="json"),
            "config_hash": self.loaded.hash,
            # The driver only coordinates; what was measured is in `machines`.
            "machine": {**machine_facts(), "role": "fleet driver", "id": None},
            "machines": {m: {"name": m} for m in machines},
            "fleet": {"scheduler": self.cluster, "engine": "dask distributed",
                      "machines": machines},
            "software": software_facts(),
            "models": {},
            "meters": [],
            "domains": [],
            "idle": {},
            "guards": {"warnings": []},
            "loads": [],
            "resumed": [],
            "cells": [
                {
                    "cell_id": fleet_cell_id(c.cell_id, m),
                    "machine": m,
                    "settings_hash": c.settings_hash(),
                    "params": {**c.params(), "machine": m},
                    "status": "pending",
                    "error": None,
                    "warnings": [],
                }
                for m in machines for c in self.cells
            ],
        }

    def _writer(self, manifest: dict[str, Any]) -> tuple[RunWriter, set[str]]:
        if self.resume is None:
            return RunWriter(self.folder, manifest), set()
        old = load_run(self.resume)
        ok = {(e.get("machine"), e["settings_hash"]): e for e in old.manifest.get("cells", [])
              if e.get("status") == "ok"}
        keep: set[str] = set()
        for entry in manifest["cells"]:
            prev = ok.get((entry["machine"], entry["settings_hash"]))
            if prev is not None and prev["cell_id"] == entry["cell_id"]:
                keep.add(entry["cell_id"])
                entry.update({k: prev.get(k) for k in ("status", "error", "warnings",
                                                        "cell_key", "machine_id")})
        rows = {t: [r for r in (old.trials if t == "trials" else old.table(t))
                    if r.get("cell_id") in keep]
                for t in ("trials", "energy", "power", "tokens")}
        # Quality rows belong to a machine's models, not its cells: a machine whose phase
        # finished keeps them; one cut off part-way measures it again from the start.
        done = {m for m, f in (old.manifest.get("machines") or {}).items()
                if (f or {}).get("quality_done")}
        rows["quality"] = [r for r in old.table("quality") if r.get("machine") in done]
        for key in ("models", "loads", "started_utc", "resumed"):
            if old.manifest.get(key):
                manifest[key] = old.manifest[key]
        for m, facts in (old.manifest.get("machines") or {}).items():
            manifest["machines"].setdefault(m, {}).update(
                {k: v for k, v in facts.items() if k not in manifest["machines"].get(m, {})}
            )
        manifest["resumed"] = list(manifest.get("resumed") or []) + [_utc()]
        return RunWriter.reopen(self.folder, manifest, rows), keep

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> FleetOutcome:
        client = _connect(self.cluster, self.connect_timeout_s)
        try:
            return self._run(client)
        finally:
            client.close()

    def _machines(self, client: Any) -> dict[str, str]:
        found = workers_by_machine(client)
        if self.asked:
            missing = [m for m in self.asked if m not in found]
            if missing:
                have = ", ".join(sorted(found)) or "none"
                raise FleetError(
                    f"no worker serves machine {missing[0]!r} at {self.cluster} (workers: "
                    f"{have}); start `bench worker --scheduler {self.cluster} --name "
                    f"{missing[0]}` there, or drop it from `machines:`"
                )
            return {m: found[m] for m in self.asked}
        if not found:
            raise FleetError(
                f"the scheduler at {self.cluster} has no bench workers; start one on each machine "
                f"with `bench worker --scheduler {self.cluster} --name NAME`"
            )
        return dict(sorted(found.items()))

    def _run(self, client: Any) -> FleetOutcome:
        from distributed import Queue

        from bench.run.worker import GroupJob

        machines = self._machines(client)
        if self.resume is not None:
            try:
                found = client.run(fingerprint_here, workers=list(machines.values()))
            except Exception as e:  # noqa: BLE001 - a worker that cannot answer is one sentence
                raise FleetError(f"--resume: cannot ask the workers which hardware they run on "
                                 f"({type(e).__name__}: {e}); check they are up and retry") from e
            check_resume_machines(load_run(self.resume).manifest,
                                  {m: found.get(a) for m, a in machines.items()})
        manifest = self._manifest(list(machines))
        writer, kept = self._writer(manifest)
        self.writer = writer
        entries = {e["cell_id"]: e for e in manifest["cells"]}
        outcome = FleetOutcome(self.folder, self.run_id, manifest=manifest)
        outcome.cells_ok = len(kept)
        queue_name = f"bench-{self.run_id}-{uuid.uuid4().hex[:8]}"
        queue = Queue(queue_name, client=client)
        futures: dict[Any, tuple[str, list[str]]] = {}  # future -> (machine, fleet cell ids)
        in_flight: dict[str, str | None] = {m: None for m in machines}
        for m in machines:
            todo = [c for c in self.cells if fleet_cell_id(c.cell_id, m) not in kept]
            for gi, group in enumerate(groups(todo)):
                job = GroupJob(
                    config=self.config, cells=group, run_id=self.run_id,
                    load_id=f"{m}-l{gi + 1:02d}", idle_w={},
                    settings_hashes={c.cell_id: c.settings_hash() for c in group},
                    log_dir="",
                )
                fut = client.submit(
                    remote_group, job, m, queue_name, resources={resource_of(m): 1},
                    pure=False, retries=0, key=f"bench-{self.run_id}-{m}-g{gi + 1:02d}",
                )
                futures[fut] = (m, [fleet_cell_id(c.cell_id, m) for c in group])
        total = sum(len(ids) for _, ids in futures.values())
        self.say(f"fleet: {total} cells on {len(machines)} machines "
                 f"({', '.join(f'{m} at {a}' for m, a in machines.items())})")

        def handle(machine: str, event: list[Any]) -> None:
            self._on_event(machine, event, entries, in_flight, outcome)

        def drain() -> None:
            items = queue.get(batch=True) or []
            for machine, event in items:
                handle(machine, event)

        def wait(futures: dict[Any, tuple[str, list[str]]]) -> None:
            missed: set[str] = set()
            while futures:
                drain()
                seen = workers_by_machine(client)
                # A machine counts as lost only when two looks in a row miss its worker.
                alive = {m: a for m, a in machines.items()
                         if seen.get(m) == a or m not in missed}
                missed = {m for m in machines if seen.get(m) != machines[m]}
                for fut, (m, ids) in list(futures.items()):
                    if fut not in futures:
                        continue  # cancelled with its machine a moment ago
                    if fut.done():
                        drain()  # a task's events are all queued before it returns
                        if fut.status == "error":
                            why = f"the worker for {m} failed the group: {fut.exception()}"
                            if not ids:
                                self.say(f"{m}: quality measurement failed: {fut.exception()}")
                            for cid in ids:
                                if entries[cid]["status"] == "pending":
                                    self._fail(cid, m, why, outcome)
                        elif not ids:  # a quality task: its rows are in, keep them on disk
                            if fut.result() == "ok":
                                manifest["machines"].setdefault(m, {})["quality_done"] = True
                            writer.flush()
                        del futures[fut]
                    elif m not in alive or alive[m] != machines[m]:
                        self._lose(m, machines[m], futures, entries, in_flight, outcome)
                time.sleep(POLL_S)
            drain()

        quality: dict[Any, tuple[str, list[str]]] = {}
        try:
            wait(futures)
            # Quality after the sweep, as a local run does: on each machine still serving, so
            # each machine's part of the run is what a local run of it holds.
            if self.config.quality.texts != "none":
                for m in machines:
                    if m in outcome.lost or manifest["machines"].get(m, {}).get("quality_done"):
                        continue
                    # One at a time into `quality`, so a Ctrl-C between submits cancels them.
                    fut = client.submit(remote_quality, self.config, self.cells, self.run_id, m,
                                        queue_name, resources={resource_of(m): 1}, pure=False,
                                        retries=0, key=f"bench-{self.run_id}-{m}-quality")
                    quality[fut] = (m, [])
                if quality:
                    self.say("fleet: measuring model quality (bits per byte, KL) on "
                             + ", ".join(m for m, _ in quality.values()))
                wait(quality)
        except KeyboardInterrupt:
            outcome.interrupted = True
            for fut in [*futures, *quality]:
                fut.cancel()
        finally:
            manifest["finished_utc"] = _utc()
            manifest["status"] = "interrupted" if outcome.interrupted else "finished"
            outcome.cells_not_run = sum(
                1 for e in manifest["cells"] if e["status"] in ("pending", "not run")
            )
            writer.flush()
        outcome.trials = writer.rows["trials"]
        return outcome

    def _lose(
        self, m: str, address: str, futures: dict[Any, tuple[str, list[str]]],
        entries: dict[str, dict[str, Any]], in_flight: dict[str, str | None],
        outcome: FleetOutcome,
    ) -> None:
        """Machine `m`'s worker left: its cell in flight fails, its other cells are not run."""
        why = f"the worker for machine {m} ({address}) was lost while running this cell"
        outcome.lost[m] = why
        current = in_flight.get(m)
        if current is not None and entries[current]["status"] == "pending":
            self._fail(current, m, why, outcome)
        in_flight[m] = None
        for fut, (fm, ids) in list(futures.items()):
            if fm != m:
                continue
            fut.cancel()
            del futures[fut]
            for cid in ids:
                if entries[cid]["status"] == "pending":
                    entries[cid].update(
                        status="not run",
                        error=f"the worker for machine {m} was lost before this cell started; "
                        "run it with --resume",
                    )
        self.say(f"fleet: lost the worker for {m} ({address}); "
                 + ("its cell in flight failed, its other cells were not run"
                    if current is not None else "what it had left was not run")
                 + " (--resume runs them)")
        self.writer.flush()

    def _fail(self, cid: str, m: str, why: str, outcome: FleetOutcome) -> None:
        entry = next(e for e in self.writer.manifest["cells"] if e["cell_id"] == cid)
        entry.update(status="error", error=why)
        cell = self._by_id[cid.rsplit("@", 1)[0]]
        facts = self.writer.manifest["machines"].get(m) or {}
        self.writer.add("trials", [{
            "run_id": self.run_id, "cell_id": cid, "machine": m, "machine_id": facts.get("id"),
            "settings_hash": entry["settings_hash"], **cell.params(), "trial": 0,
            "warmup": False, "status": "error", "error": why,
        }])
        outcome.cells_failed += 1
        self.say(f"cell {cid} failed: {why}")
        self.writer.flush()

    def _on_event(
        self, m: str, event: list[Any], entries: dict[str, dict[str, Any]],
        in_flight: dict[str, str | None], outcome: FleetOutcome,
    ) -> None:
        kind, args = event[0], event[1:]
        w, manifest = self.writer, self.writer.manifest
        facts = manifest["machines"].setdefault(m, {"name": m})
        mid = facts.get("id")
        if kind == "machine":
            facts.update(args[0])
            facts["idle"] = {"seconds": args[1]["seconds"], "watts": args[1]["watts"]}
            facts["meters"], facts["domains"] = args[1]["meters"], args[1]["domains"]
            return
        if kind == "rows":
            table, rows = args
            # Every row says which machine measured it; cell ids are per machine.
            w.add(table, [{**r, **({"cell_id": fleet_cell_id(str(r["cell_id"]), m)}
                                   if "cell_id" in r else {}),
                           "machine": m, "machine_id": mid} for r in rows])
        elif kind == "model":
            entry = manifest["models"].setdefault(args[0], {})
            for k, v in args[1].items():
                if entry.get(k) is None:
                    entry[k] = v
        elif kind == "load":
            load = {**args[0], "machine": m}
            manifest["loads"] = [x for x in manifest["loads"]
                                 if x["load_id"] != load["load_id"]] + [load]
        elif kind == "cell_start":
            in_flight[m] = fleet_cell_id(args[0], m)
            self.say(f"cell {in_flight[m]} started")
        elif kind == "cell_end":
            cell_id, status, err, key, warnings = args
            cid = fleet_cell_id(cell_id, m)
            if entries[cid]["status"] != "pending":
                return  # already failed by the driver (a worker declared lost)
            entries[cid].update(status=status, error=err, cell_key=key, warnings=warnings,
                                machine_id=mid)
            in_flight[m] = None
            if status == "ok":
                outcome.cells_ok += 1
            else:
                outcome.cells_failed += 1
                if err and not any(r.get("cell_id") == cid for r in w.rows["trials"]):
                    cell = self._by_id[cell_id]
                    w.add("trials", [{"run_id": self.run_id, "cell_id": cid, "machine": m,
                                      "machine_id": mid, "settings_hash": cell.settings_hash(),
                                      **cell.params(), "trial": 0, "warmup": False,
                                      "status": "error", "error": err}])
            self.say(f"cell {cid} {status}" + (f": {err}" if err else ""))
            w.flush()
        elif kind == "message":
            self.say(f"{m}: {args[0]}")


# ---------------------------------------------------------------------------------------------
# Reading a fleet run one machine at a time (compare, report)


def machine_names(run: Run) -> list[str]:
    """The machines whose rows a run holds: the names of a fleet run, else its one host."""
    listed = run.manifest.get("machines")
    if isinstance(listed, dict) and listed:
        return list(listed)
    return [str((run.manifest.get("machine") or {}).get("hostname") or "?")]


def machine_view(run: Run, machine: str) -> Run:
    """The part of a fleet run measured on `machine`, as a one-machine run (cell ids as in a
    local run, so its cells line up with other runs of that machine)."""
    listed = run.manifest.get("machines") or {}
    if machine not in listed:
        raise FleetError(
            f"run {run.run_id} has no machine {machine!r}; it holds {', '.join(listed) or 'none'}"
        )
    facts = dict(listed[machine])
    suffix = f"@{machine}"

    def local(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Quality rows belong to a model, not a cell: they have no cell id to map back.
        return [{**r, **({"cell_id": str(r["cell_id"]).removesuffix(suffix)}
                         if "cell_id" in r else {})}
                for r in rows if r.get("machine") == machine]

    manifest = {
        **run.manifest,
        "machine": {k: v for k, v in facts.items() if k not in ("software", "meters", "domains")},
        "machines": {machine: facts},
        "cells": [{**e, "cell_id": str(e["cell_id"]).removesuffix(suffix)}
                  for e in run.manifest.get("cells", []) if e.get("machine") == machine],
        "idle": facts.get("idle") or {},
    }
    view = Run(run.path, manifest, local(run.trials))
    for t in ("energy", "power", "tokens", "quality"):
        view.tables[t] = local(run.table(t))
    return view


def one_machine(run: Run, machine: str | None) -> Run:
    """`run` itself when it holds one machine; the view of `machine` when asked; otherwise a
    refusal, since pooling two machines' trials would measure the machines."""
    names = machine_names(run)
    if not isinstance(run.manifest.get("machines"), dict) or not run.manifest["machines"]:
        return run
    if machine is not None:
        return machine_view(run, machine)
    if len(names) == 1:
        return machine_view(run, names[0])
    raise FleetError(
        f"run {run.run_id} holds results of {len(names)} machines ({', '.join(names)}); "
        "pick one with --machine NAME"
    )


# ---------------------------------------------------------------------------------------------
# The command (argparse in bench/cli.py adapts to these)


def run_sweep(
    loaded: LoadedConfig, cells: list[Cell], out_dir: Path, cluster: str,
    resume: Path | None = None, machines: Sequence[str] | None = None,
    on_message: Callable[[str], None] = print,
) -> FleetOutcome:
    """`bench run CONFIG --cluster ADDRESS`; raises FleetError or ResultsError for the CLI."""
    if resume is not None:
        load_run(resume)  # a readable run folder, or ResultsError
    return FleetRun(loaded, cells, out_dir, cluster, machines, resume, on_message).run()


def summary_line(outcome: FleetOutcome) -> str:
    machines = list(outcome.manifest.get("machines") or {})
    parts = [f"{outcome.cells_ok} ok", f"{outcome.cells_failed} failed"]
    if outcome.cells_not_run:
        parts.append(f"{outcome.cells_not_run} not run")
    return f"fleet: {', '.join(parts)} on {len(machines)} machines ({', '.join(machines)})"


__all__ = [
    "FleetError",
    "FleetOutcome",
    "FleetRun",
    "ResultsError",
    "machine_names",
    "machine_view",
    "one_machine",
    "run_group_here",
    "run_sweep",
    "serve_worker",
]
