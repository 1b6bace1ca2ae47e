"""Transition alias: the run now lives in the bench.run package (runner, worker, launcher,
folder, events). Import from there; this module re-exports what callers used."""
from __future__ import annotations

from bench.results import ResultsError
from bench.run.runner import Progress, Runner, RunOutcome, make_run_id, resume_hint
from bench.run.worker import GroupJob, GroupWorker, cell_key

__all__ = [
           "GroupJob",
           "GroupWorker",
           "Progress",
           "ResultsError",
           "RunOutcome",
           "Runner",
           "cell_key",
           "make_run_id",
           "resume_hint",
]
