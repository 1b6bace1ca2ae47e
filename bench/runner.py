"""Transition alias: the run now lives in the bench.run package (runner, worker, launcher,
folder, events). Import from there; this module re-exports what callers used."""
from __future__ import annotations

from bench.results import ResultsError
from bench.run.runner import Progress, RunOutcome, Runner, make_run_id, resume_hint
from bench.run.worker import GroupJob, GroupWorker, cell_key

__all__ = ["Runner", "Progress", "RunOutcome", "GroupWorker", "GroupJob", "resume_hint",
           "ResultsError", "make_run_id", "cell_key"]
