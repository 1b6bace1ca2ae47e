"""What a worker tells the runner, as typed events; the same objects in and out of process."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Rows:
    """Rows for one table of the run folder."""

    table: str
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class ModelLoaded:
    """What a load learnt about a model file (identity, architecture, size)."""

    key: str
    facts: dict[str, Any]


@dataclass(frozen=True)
class LoadRecord:
    """A load (one model, one load-time setting) for the manifest's `loads`, updated per cell."""

    entry: dict[str, Any]


@dataclass(frozen=True)
class CellStarted:
    cell_id: str


@dataclass(frozen=True)
class TrialStarted:
    cell_id: str
    trial: int
    of: int
    warmup: bool


@dataclass(frozen=True)
class CellFinished:
    cell_id: str
    status: str  # "ok" or "error"
    error: str | None = None
    cell_key: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Message:
    text: str


@dataclass(frozen=True)
class Done:
    """The child finished its work normally (sent last)."""


@dataclass(frozen=True)
class Crashed:
    """The child's work raised: the reason in one line, and where (for the log)."""

    reason: str
    where: str = ""


Event = Rows | ModelLoaded | LoadRecord | CellStarted | TrialStarted | CellFinished | Message
