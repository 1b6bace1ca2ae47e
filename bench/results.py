"""The tidy result tables of a run: writing them as cells finish, and reading them back.

Every write replaces a file atomically (temporary file + rename), so a crash or a kill leaves the
previous complete version, never a truncated table. Reading never unpickles anything: Parquet and
JSON only.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

FORMAT_VERSION = 1
TABLES = ("trials", "energy", "power", "tokens", "quality")


class ResultsError(Exception):
    """A results folder that cannot be written or read; the message says why and what to do."""


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp creates 0600; results are meant to be read like any other file.
        os.fchmod(fd, _umask_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path: Path, obj: Any) -> None:
    _atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=False, default=str).encode())


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    # The union over rows, in first-seen order, so a later row may add a column.
    names: dict[str, None] = {}
    for row in rows:
        for k in row:
            names.setdefault(k, None)
    return list(names)


def write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    names = _columns(rows)
    full = [{k: row.get(k) for k in names} for row in rows]
    table = pa.Table.from_pylist(full)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    _atomic_write_bytes(path, sink.getvalue().to_pybytes())


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    names = _columns(rows)
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=names)
    w.writeheader()
    for row in rows:
        w.writerow({k: _csv_cell(row.get(k)) for k in names})
    _atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def _csv_cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return v


class RunWriter:
    """Owns one run folder; call `flush()` after each cell so finished work is on disk."""

    def __init__(self, folder: Path, manifest: dict[str, Any]):
        self.folder = folder
        self.manifest = manifest
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
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
        self.write_manifest()

    @classmethod
    def reopen(
        cls, folder: Path, manifest: dict[str, Any], rows: dict[str, list[dict[str, Any]]]
    ) -> RunWriter:
        """Continue writing into an existing run folder with the rows that are kept."""
        self = cls.__new__(cls)
        self.folder = folder
        self.manifest = manifest
        self.rows = {name: list(rows.get(name, [])) for name in TABLES}
        self.flush()
        return self

    def add(self, table: str, rows: list[dict[str, Any]]) -> None:
        self.rows[table].extend(rows)

    def write_manifest(self) -> None:
        self._guard(lambda: write_json(self.folder / "manifest.json", self.manifest))

    def flush(self) -> None:
        def _write() -> None:
            for name, rows in self.rows.items():
                path = self.folder / f"{name}.parquet"
                if rows:
                    write_table(path, rows)
                elif path.exists():
                    path.unlink()  # a resumed run dropped every row of this table
            if self.rows["trials"]:
                write_csv(self.folder / "trials.csv", self.rows["trials"])
            write_json(self.folder / "manifest.json", self.manifest)

        self._guard(_write)

    def _guard(self, fn: Any) -> None:
        try:
            fn()
        except OSError as e:
            raise ResultsError(
                f"could not write results in {self.folder} ({e.strerror or e}); "
                "free some space or choose another --out; files already there are complete"
            ) from e


@dataclass
class Run:
    """A run read back: the manifest and its tables as lists of plain dicts."""

    path: Path
    manifest: dict[str, Any]
    trials: list[dict[str, Any]]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id", self.path.name))

    def table(self, name: str) -> list[dict[str, Any]]:
        if name not in self.tables:
            p = self.path / f"{name}.parquet"
            self.tables[name] = pq.read_table(p).to_pylist() if p.exists() else []
        return self.tables[name]


def load_run(path: str | Path) -> Run:
    """Read a run folder written by `bench run`."""
    p = Path(path)
    mpath = p / "manifest.json"
    if not mpath.is_file():
        raise ResultsError(f"{p} is not a bench run folder (no manifest.json)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ResultsError(f"cannot read {mpath}: {e}") from e
    version = manifest.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ResultsError(
            f"{p} was written by a newer bench (results format {version}, this bench reads "
            f"up to {FORMAT_VERSION}); upgrade bench to read it"
        )
    tpath = p / "trials.parquet"
    try:
        trials = pq.read_table(tpath).to_pylist() if tpath.exists() else []
    except (OSError, pa.ArrowException) as e:
        raise ResultsError(f"cannot read {tpath}: {e}") from e
    return Run(p, manifest, trials)


def is_run_folder(path: str | Path) -> bool:
    return (Path(path) / "manifest.json").is_file()
