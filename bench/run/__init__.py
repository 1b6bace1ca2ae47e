"""A run: `runner` (the order of things), `worker` (the timed loop: the only code that knows
phases), `launcher` (child-process isolation), `folder` (the run folder: create, lock, resume),
`events` (what a worker tells the runner). Names are re-exported lazily."""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Runner": "bench.run.runner", "Progress": "bench.run.runner",
    "RunOutcome": "bench.run.runner", "resume_hint": "bench.run.runner",
    "GroupWorker": "bench.run.worker", "GroupJob": "bench.run.worker",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
