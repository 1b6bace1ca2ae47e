"""The tidy result tables of a run: writing them as cells finish, and reading them back.

While a run is going, each flush writes only what is new: the new rows of each table as one
part file (`parts/<table>-<n>.parquet`) and the manifest's changes as lines appended to
`parts/journal.jsonl`, so appending a cell costs the same at cell 10 and cell 10 000. Reading
merges the parts; when the run ends they are compacted into `<table>.parquet`, `trials.csv` and
`manifest.json`. Every file is written atomically (temporary file + rename) and every stored
string passes through bench.redact. Reading never unpickles anything: Parquet and JSON only,
and a malformed table or manifest is a ResultsError with one sentence, never a traceback.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench.files import atomic_write_bytes
from bench.redact import redact

FORMAT_VERSION = 1
TABLES = ("trials", "energy", "power", "tokens", "quality")
PARTS = "parts"
_UPTO = b"bench_parts_upto"
JOURNAL = "journal.jsonl"

# Columns each side table must have, with the Python types their values may take; a file
# missing one, or holding another type, is not a table bench wrote.
_REQUIRED: dict[str, dict[str, tuple[type, ...]]] = {
    "trials": {"cell_id": (str,), "trial": (int,)},
    "energy": {"cell_id": (str,), "trial": (int,)},
    "power": {"cell_id": (str,), "trial": (int,)},
    "tokens": {"cell_id": (str,), "trial": (int,), "i": (int,), "t_s": (int, float)},
    "quality": {},
}
# Manifest fields and the JSON shape each must have when present.
_MANIFEST_SHAPES: dict[str, type | tuple[type, ...]] = {
    "run_id": str, "config": dict, "models": dict, "meters": list, "domains": list,
    "idle": dict, "guards": dict, "loads": list, "resumed": list, "cells": list,
    "machine": dict, "software": dict, "config_hash": (str, type(None)),
}


class ResultsError(Exception):
    """A results folder that cannot be written or read; the message says why and what to do."""


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(redact(obj), indent=2, default=str).encode())


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    # The union over rows, in first-seen order, so a later row may add a column.
    names: dict[str, None] = {}
    for row in rows:
        for k in row:
            names.setdefault(k, None)
    return list(names)


def write_table(path: Path, rows: list[dict[str, Any]], parts_upto: int | None = None,
                schema: pa.Schema | None = None) -> None:
    """Rows as one Parquet file; `parts_upto` records the last part file merged into it, so a
    crash before those parts are removed never counts their rows twice. Columns named in
    `schema` (the declared results schema) get its types; others keep the inferred ones."""
    names = _columns(rows)
    full = [{k: row.get(k) for k in names} for row in rows]
    table = pa.Table.from_pylist(full)
    if schema is not None:
        table = _declared_types(table, schema, path)
    if parts_upto is not None:
        table = table.replace_schema_metadata({_UPTO: str(parts_upto)})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def _declared_types(table: pa.Table, schema: pa.Schema, path: Path) -> pa.Table:
    for i, name in enumerate(table.column_names):
        idx = schema.get_field_index(name)
        if idx < 0 or table.schema.field(i).type == schema.field(idx).type:
            continue
        try:
            table = table.set_column(i, schema.field(idx), table.column(i).cast(
                schema.field(idx).type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ResultsError(
                f"column {name!r} of {path.name} does not fit its declared type "
                f"{schema.field(idx).type} ({e}); this is a bug in bench"
            ) from None
    return table


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    names = _columns(rows)
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=names)
    w.writeheader()
    for row in rows:
        w.writerow({k: _csv_cell(row.get(k)) for k in names})
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def _csv_cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return v


def apply_journal(manifest: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    """Replay journal lines onto a manifest read from disk (in place)."""
    cells = {c.get("cell_id"): c for c in manifest.get("cells", []) if isinstance(c, dict)}
    for e in entries:
        if "cell" in e:
            entry = cells.get(e["cell"].get("cell_id"))
            if entry is not None:
                entry.update(e["cell"])
        elif "load" in e:
            loads = [x for x in manifest.get("loads", []) if x.get("load_id")
                     != e["load"].get("load_id")]
            manifest["loads"] = loads + [e["load"]]
        elif "model" in e:
            key, facts = e["model"]
            manifest.setdefault("models", {})[key] = facts
        elif "set" in e:
            manifest.update(e["set"])


class RunWriter:
    """Owns one run folder. `checkpoint()` after each cell puts finished work on disk at a cost
    independent of the run's size; `flush()` writes the compacted, finished layout.

    `rows` holds every row of the run (read back on resume, then added); a checkpoint writes
    only the rows not yet on disk. Manifest changes go through `journal()`."""

    def __init__(self, folder: Path, manifest: dict[str, Any], *, create: bool = True,
                 schemas: dict[str, pa.Schema] | None = None):
        self.folder = folder
        self.manifest = manifest
        # Declared Arrow schemas per table (from the results schema), applied on every write.
        self.schemas = dict(schemas or {})
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
        self._written = {name: 0 for name in TABLES}
        self._journal: list[dict[str, Any]] = []
        self._part = 0
        if create:
            try:
                folder.mkdir(parents=True, exist_ok=False)
            except FileExistsError as e:
                raise ResultsError(
                    f"results folder {folder} already exists; choose another --out"
                ) from e
            except OSError as e:
                raise ResultsError(
                    f"cannot create the results folder {folder} ({e.strerror}); "
                    "pass --out with a writable folder"
                ) from e
        self._guard(lambda: (self.folder / PARTS).mkdir(exist_ok=True))
        self._part = _next_part(self.folder / PARTS)
        self.write_manifest()

    @classmethod
    def reopen(
        cls, folder: Path, manifest: dict[str, Any], rows: dict[str, list[dict[str, Any]]],
        schemas: dict[str, pa.Schema] | None = None,
    ) -> RunWriter:
        """Continue writing into an existing run folder with the rows that are kept: they are
        compacted at once, so the folder holds exactly them and the new manifest."""
        self = cls(folder, manifest, create=False, schemas=schemas)
        # Kept rows keep what they say (a folder from before the machine columns says nothing;
        # the store fills them from that run's manifest).
        self.rows = {name: [redact(r) for r in rows.get(name, [])] for name in TABLES}
        self.flush()
        return self

    def machine_stamp(self) -> dict[str, Any]:
        """The `machine` and `machine_id` every row of a one-machine run carries, from the
        manifest; empty for a fleet driver's manifest (its rows say which worker measured them)."""
        m = self.manifest.get("machine") or {}
        if not isinstance(m, dict) or not m.get("id"):
            return {}
        return {"machine": m.get("name") or m.get("hostname"), "machine_id": m["id"]}

    def add(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Rows of `table`, each through bench.redact and stamped with the machine (a row that
        names its own machine keeps it)."""
        stamp = self.machine_stamp()
        self.rows[table].extend(
            redact({**r, **{k: v for k, v in stamp.items() if k not in r}}) for r in rows)

    def journal(self, entry: dict[str, Any]) -> None:
        """Record a manifest change (written with the next checkpoint, applied now in memory)."""
        apply_journal(self.manifest, [entry])
        self._journal.append(entry)

    def write_manifest(self) -> None:
        self._guard(lambda: write_json(self.folder / "manifest.json", self.manifest))

    def checkpoint(self) -> None:
        """Write what is new since the last write: one part file per table, journal lines."""

        def _write() -> None:
            parts = self.folder / PARTS
            parts.mkdir(exist_ok=True)
            for name, rows in self.rows.items():
                new = rows[self._written[name]:]
                if new:
                    write_table(parts / f"{name}-{self._part:06d}.parquet", new,
                                schema=self.schemas.get(name))
                    self._written[name] = len(rows)
            self._part += 1
            if self._journal:
                text = "".join(json.dumps(redact(e), default=str) + "\n" for e in self._journal)
                with open(parts / JOURNAL, "a", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                self._journal = []

        self._guard(_write)

    def flush(self) -> None:
        """The finished layout: one file per table, trials.csv and the full manifest; the part
        files go once their content is in the merged files."""

        def _write() -> None:
            for name, rows in self.rows.items():
                path = self.folder / f"{name}.parquet"
                if rows:
                    write_table(path, rows, parts_upto=self._part - 1,
                                schema=self.schemas.get(name))
                elif path.exists():
                    path.unlink()  # a resumed run dropped every row of this table
                self._written[name] = len(rows)
            if self.rows["trials"]:
                write_csv(self.folder / "trials.csv", self.rows["trials"])
            self._journal = []
            write_json(self.folder / "manifest.json", self.manifest)
            parts = self.folder / PARTS
            if parts.is_dir():
                for p in sorted(parts.glob("*")):
                    p.unlink()
                parts.rmdir()

        self._guard(_write)

    def _guard(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except OSError as e:
            raise ResultsError(
                f"could not write results in {self.folder} ({e.strerror or e}); "
                "free some space or choose another --out; files already there are complete"
            ) from e


def _part_number(p: Path) -> int | None:
    tail = p.stem.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _parts_upto(main: Path) -> int:
    """The last part file already merged into a compacted table (-1: none)."""
    try:
        meta = pq.read_schema(main).metadata or {}
        return int(meta.get(_UPTO, b"-1"))
    except (OSError, pa.ArrowException, ValueError):
        return -1


def _next_part(parts: Path) -> int:
    nums = [n for p in parts.glob("*-*.parquet") if (n := _part_number(p)) is not None] \
        if parts.is_dir() else []
    merged = [_parts_upto(m) for m in parts.parent.glob("*.parquet")]
    return max([*nums, *merged], default=-1) + 1


@dataclass
class Run:
    """A run read back: the manifest and its tables as lists of plain dicts. Each trial row
    carries `cell_status`, its cell's status from the manifest ("ok", "error", "pending"): a
    trial measured in a cell that failed part-way is never a normal result."""

    path: Path
    manifest: dict[str, Any]
    trials: list[dict[str, Any]]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id", self.path.name))

    def table(self, name: str) -> list[dict[str, Any]]:
        if name not in self.tables:
            self.tables[name] = read_table(self.path, name)
        return self.tables[name]


def _read_parquet(path: Path, name: str) -> list[dict[str, Any]]:
    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowException, ValueError) as e:
        raise ResultsError(
            f"cannot read {path}: it is not a readable Parquet table ({type(e).__name__}); "
            "restore it from a copy or run the cells again"
        ) from None
    need = _REQUIRED.get(name, {})
    for row in rows:
        for col, types in need.items():
            v = row.get(col, _MISSING)
            if v is _MISSING or (not isinstance(v, types) or isinstance(v, bool)):
                what = "has no column" if v is _MISSING else f"has a {type(v).__name__} in"
                raise ResultsError(
                    f"{path} {what} {col!r}; it is not a {name} table bench wrote"
                )
        break  # a Parquet column has one type: the first row speaks for all
    return rows


_MISSING = object()


def read_table(folder: Path, name: str) -> list[dict[str, Any]]:
    """A table of a run folder: the compacted file, then any part files, in order."""
    rows: list[dict[str, Any]] = []
    main = folder / f"{name}.parquet"
    upto = -1
    if main.exists():
        rows.extend(_read_parquet(main, name))
        upto = _parts_upto(main)
    parts = folder / PARTS
    if parts.is_dir():
        for p in sorted(parts.glob(f"{name}-*.parquet")):
            n = _part_number(p)
            if n is not None and n > upto:
                rows.extend(_read_parquet(p, name))
    return rows


def _read_journal(folder: Path) -> list[dict[str, Any]]:
    path = folder / PARTS / JOURNAL
    if not path.exists():
        return []
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"cannot read {path} ({e}); the run folder is damaged") from None
    for n, line in enumerate(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            if n == len(lines) - 1:
                break  # a line cut short by a kill: its flush never finished
            raise ResultsError(
                f"{path}:{n + 1} is not a JSON line; the run folder is damaged"
            ) from None
        if not isinstance(entry, dict):
            raise ResultsError(f"{path}:{n + 1} is not a journal entry")
        out.append(entry)
    return out


def _check_manifest(manifest: Any, mpath: Path) -> None:
    if not isinstance(manifest, dict):
        raise ResultsError(f"{mpath} is not a JSON object; it is not a manifest bench wrote")
    for key, shape in _MANIFEST_SHAPES.items():
        if key in manifest and not isinstance(manifest[key], shape):
            want = shape.__name__ if isinstance(shape, type) else shape[0].__name__
            raise ResultsError(
                f"{mpath}: field {key!r} should be a {_json_name(want)}, not a "
                f"{_json_name(type(manifest[key]).__name__)}; the manifest is malformed"
            )
    for i, cell in enumerate(manifest.get("cells", [])):
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_id"), str) \
                or not isinstance(cell.get("status", ""), str):
            raise ResultsError(
                f"{mpath}: cells[{i}] should be an object with a text cell_id and status; "
                "the manifest is malformed"
            )
    for i, load in enumerate(manifest.get("loads", [])):
        if not isinstance(load, dict):
            raise ResultsError(f"{mpath}: loads[{i}] should be an object; the manifest is "
                               "malformed")


def _json_name(py: str) -> str:
    return {"dict": "object", "list": "list", "str": "string", "NoneType": "null",
            "int": "number", "float": "number", "bool": "boolean"}.get(py, py)


def load_run(path: str | Path) -> Run:
    """Read a run folder written by `bench run` (finished, or with part files still open)."""
    p = Path(path)
    mpath = p / "manifest.json"
    if not mpath.is_file():
        raise ResultsError(f"{p} is not a bench run folder (no manifest.json)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ResultsError(f"cannot read {mpath}: {e}") from e
    if not isinstance(manifest, dict):
        raise ResultsError(f"{mpath} is not a JSON object; it is not a manifest bench wrote")
    version = manifest.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ResultsError(
            f"{p} was written by a newer bench (results format {version}, this bench reads "
            f"up to {FORMAT_VERSION}); upgrade bench to read it"
        )
    _check_manifest(manifest, mpath)
    try:
        apply_journal(manifest, _read_journal(p))
    except (AttributeError, TypeError, ValueError, KeyError):
        raise ResultsError(f"{p / PARTS / JOURNAL} holds malformed entries; the run folder "
                           "is damaged") from None
    _check_manifest(manifest, mpath)
    trials = read_table(p, "trials")
    status = {c["cell_id"]: c.get("status") for c in manifest.get("cells", [])}
    for row in trials:
        row["cell_status"] = status.get(row.get("cell_id"), row.get("cell_status"))
    return Run(p, manifest, trials)


def is_run_folder(path: str | Path) -> bool:
    return (Path(path) / "manifest.json").is_file()
