"""The results store: run folders ingested into one embedded DuckDB file, and SQL over it.

A store is a single file (no server). `bench store add RUN...` and `bench run --store PATH` put
each run's manifest and tables in it, keyed by machine, config, cell key, bench and engine
versions, git commit and branch, and time; the same run added twice is one run. Run folders
stay the primary record: everything else in bench reads them without a store. See docs/store.md.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self, TextIO

from bench.results import TABLES, ResultsError, Run, is_run_folder, load_run

DEFAULT_STORE = Path("results/bench.duckdb")
SCHEMA_VERSION = 1
QueryFormat = Literal["table", "csv", "json"]
QUERY_FORMATS: tuple[str, ...] = ("table", "csv", "json")

# Software keys that describe bench or Python itself; every other key names an engine.
_NOT_ENGINE = frozenset(
    {"python", "python_implementation", "bench", "bench_git_commit", "bench_git_dirty"}
)

_RUNS_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    run_key VARCHAR PRIMARY KEY,
    run_id VARCHAR NOT NULL,
    fingerprint VARCHAR NOT NULL,
    machine VARCHAR,
    machine_id VARCHAR,
    machines VARCHAR,
    config_name VARCHAR,
    config_hash VARCHAR,
    bench_version VARCHAR,
    engine_versions VARCHAR,
    git_commit VARCHAR,
    git_branch VARCHAR,
    git_dirty BOOLEAN,
    git_source VARCHAR,
    started_utc TIMESTAMP,
    finished_utc TIMESTAMP,
    status VARCHAR,
    path VARCHAR,
    ingested_utc TIMESTAMP,
    manifest VARCHAR
)
"""
_CELLS_DDL = """
CREATE TABLE IF NOT EXISTS cells (
    run_key VARCHAR NOT NULL,
    run_id VARCHAR,
    cell_id VARCHAR,
    cell_key VARCHAR,
    machine VARCHAR,
    machine_id VARCHAR,
    settings_hash VARCHAR,
    status VARCHAR,
    error VARCHAR,
    params VARCHAR
)
"""


class StoreError(Exception):
    """A store that cannot be opened, written or queried; the message says why and what to do."""


@dataclass(frozen=True)
class GitInfo:
    """The commit a run measured, and where that fact came from (stated in the store)."""

    commit: str | None
    branch: str | None
    dirty: bool | None
    source: str  # "given", "manifest", "cwd at run time", "bench checkout" or "none"


def git_of_cwd(cwd: Path | None = None) -> GitInfo:
    """`git rev-parse` of the working directory; none (stated) outside a repository."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return GitInfo(None, None, None, "none")
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return GitInfo(
        commit, None if branch in (None, "HEAD") else branch,
        None if status is None else bool(status), "cwd at run time",
    )


def git_of_manifest(manifest: dict[str, Any]) -> GitInfo:
    """The run's own record: a `git` section if the runner wrote one, else bench's checkout."""
    g = manifest.get("git") or {}
    if g.get("commit"):
        return GitInfo(g["commit"], g.get("branch"), g.get("dirty"), str(g.get("source") or
                                                                          "manifest"))
    sw = manifest.get("software") or {}
    if sw.get("bench_git_commit"):
        return GitInfo(sw["bench_git_commit"], None, sw.get("bench_git_dirty"), "bench checkout")
    return GitInfo(None, None, None, "none")


def machines_of(run: Run) -> dict[str, dict[str, Any]]:
    """Machine name -> facts. A fleet run lists several (manifest `machines`); a local run has
    one, named after its host."""
    listed = run.manifest.get("machines")
    if isinstance(listed, dict) and listed:
        return {str(k): dict(v or {}) for k, v in listed.items()}
    m = dict(run.manifest.get("machine") or {})
    return {str(m.get("name") or m.get("hostname") or "unknown"): m}


def _ts(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    # DuckDB TIMESTAMP is naive; store UTC.
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def _fingerprint(folder: Path) -> str:
    """What the run folder holds now: a resumed run changes it, a re-add of the same does not."""
    h = hashlib.sha256()
    for name in ["manifest.json", *(f"{t}.parquet" for t in TABLES)]:
        p = folder / name
        if p.is_file():
            h.update(name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:32]


def run_key(run: Run) -> str:
    """Stable identity of a run: its id, when it started and where (two machines could share an
    id to the second)."""
    m = run.manifest
    body = f"{run.run_id}|{m.get('started_utc')}|{(m.get('machine') or {}).get('id')}"
    return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Ingested:
    run_id: str
    run_key: str
    outcome: Literal["added", "unchanged", "updated"]
    trials: int
    git: GitInfo


def _numeric(t: str) -> bool:
    t = t.upper()
    return t in {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE",
                 "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"} or t.startswith("DECIMAL")


def _widen(old: str, new: str) -> str | None:
    """The type both fit in, or None when `old` already holds `new`."""
    if old == new or new == '"NULL"' or new.upper() == "NULL":
        return None
    if old.upper() == "NULL":
        return new
    if _numeric(old) and _numeric(new):
        return None if old == "DOUBLE" else "DOUBLE"
    if old == "VARCHAR":
        return None
    return "VARCHAR"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Store:
    """One DuckDB file. Use as a context manager; writes happen in one transaction per run."""

    def __init__(self, path: str | Path, read_only: bool = False):
        try:
            import duckdb
        except ImportError as e:
            raise StoreError(
                "the results store needs DuckDB; install it with pip install 'bench[store]'"
            ) from e
        self.path = Path(path)
        if read_only and not self.path.is_file():
            raise StoreError(f"no store at {self.path}; add runs with `bench store add RUN...`")
        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create {self.path.parent} ({e.strerror})") from e
        self._duckdb = duckdb
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as e:
            raise StoreError(
                f"cannot open the store {self.path}: {e}; is it a DuckDB file, and is another "
                "bench writing it?"
            ) from e
        if not read_only:
            self.con.execute(_RUNS_DDL)
            self.con.execute(_CELLS_DDL)
            self.con.execute(
                "CREATE TABLE IF NOT EXISTS store_info (key VARCHAR PRIMARY KEY, value VARCHAR)"
            )
            self.con.execute(
                "INSERT OR IGNORE INTO store_info VALUES ('schema_version', ?)",
                [str(SCHEMA_VERSION)],
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    # -- writing -------------------------------------------------------------------------------
    def add_run(self, folder: str | Path, git: GitInfo | None = None) -> Ingested:
        """Ingest one run folder. Adding it again is a no-op; a run that changed since (resumed)
        replaces its earlier rows."""
        folder = Path(folder)
        run = load_run(folder)
        key = run_key(run)
        fp = _fingerprint(folder)
        git = git if git is not None and git.commit else git_of_manifest(run.manifest)
        old = self.con.execute(
            "SELECT fingerprint FROM runs WHERE run_key = ?", [key]
        ).fetchone()
        if old is not None and old[0] == fp:
            return Ingested(run.run_id, key, "unchanged", self._count("trials", key), git)
        self.con.execute("BEGIN TRANSACTION")
        try:
            if old is not None:
                for t in ("runs", "cells", *self._data_tables()):
                    self.con.execute(f"DELETE FROM {_q(t)} WHERE run_key = ?", [key])
            self._insert_run(run, key, fp, git, folder)
            for table in TABLES:
                p = folder / f"{table}.parquet"
                if p.is_file():
                    self._insert_table(table, p, run, key)
            n_trials = self._count("trials", key)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return Ingested(run.run_id, key, "updated" if old is not None else "added", n_trials, git)

    def _count(self, table: str, key: str) -> int:
        if not self._has(table):
            return 0
        row = self.con.execute(
            f"SELECT count(*) FROM {_q(table)} WHERE run_key = ?", [key]
        ).fetchone()
        return int(row[0]) if row else 0

    def _has(self, table: str) -> bool:
        row = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
        ).fetchone()
        return bool(row and row[0])

    def _data_tables(self) -> list[str]:
        return [t for t in TABLES if self._has(t)]

    def _insert_run(
        self, run: Run, key: str, fp: str, git: GitInfo, folder: Path
    ) -> None:
        m = run.manifest
        machines = machines_of(run)
        name, facts = next(iter(machines.items()))
        several = len(machines) > 1
        sw = m.get("software") or {}
        # Build flags (`*_system_info`) stay in the manifest column; versions are what is keyed.
        engines = {
            k: v for k, v in sw.items() if k not in _NOT_ENGINE and not k.endswith("_system_info")
        }
        cfg = m.get("config") or {}
        self.con.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                key, run.run_id, fp,
                None if several else name, None if several else facts.get("id"),
                json.dumps(sorted(machines)), cfg.get("name"), m.get("config_hash"),
                sw.get("bench"), json.dumps(engines, sort_keys=True, default=str),
                git.commit, git.branch, git.dirty, git.source,
                _ts(m.get("started_utc")), _ts(m.get("finished_utc")), m.get("status"),
                str(folder.resolve()), datetime.now(UTC).replace(tzinfo=None),
                json.dumps(m, default=str),
            ],
        )
        only = None if several else (name, facts.get("id"))
        for e in m.get("cells") or []:
            mname = e.get("machine") or (only[0] if only else None)
            mid = e.get("machine_id") or (
                only[1] if only else ((machines.get(mname) if mname else None) or {}).get("id")
            )
            self.con.execute(
                "INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [key, run.run_id, e.get("cell_id"), e.get("cell_key"), mname, mid,
                 e.get("settings_hash"), e.get("status"), e.get("error"),
                 json.dumps(e.get("params") or {}, sort_keys=True, default=str)],
            )

    def _columns(self, table: str) -> dict[str, str]:
        rows = self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = ? ORDER BY ordinal_position", [table]
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def _insert_table(self, table: str, parquet: Path, run: Run, key: str) -> None:
        src = f"read_parquet({_sql_str(str(parquet))})"
        incoming = {
            r[0]: r[1] for r in self.con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()
        }
        machines = machines_of(run)
        name, facts = next(iter(machines.items()))
        # Rows of a fleet run carry their machine; a local run's rows take the run's.
        select = ["? AS run_key"]
        params: list[Any] = [key]
        for col, default in (("machine", name), ("machine_id", facts.get("id"))):
            if col == "machine_id" and len(machines) > 1 and "machine" in incoming:
                # A fleet row without an id (its worker was lost before it reported) takes
                # its own machine's id, never the first machine's.
                cases = " ".join("WHEN ? THEN ?" for _ in machines)
                fill = f"CASE {_q('machine')} {cases} END"
                expr = f"coalesce({_q(col)}, {fill})" if col in incoming else fill
                select.append(f"{expr} AS {_q(col)}")
                incoming.setdefault(col, "VARCHAR")
                for m, f in machines.items():
                    params += [m, f.get("id")]
                continue
            if col in incoming:
                select.append(f"coalesce({_q(col)}, ?) AS {_q(col)}")
            else:
                select.append(f"? AS {_q(col)}")
                incoming[col] = "VARCHAR"
            params.append(default)
        rest = [c for c in incoming if c not in ("run_key", "machine", "machine_id")]
        select += [_q(c) for c in rest]
        body = f"SELECT {', '.join(select)} FROM {src}"
        if not self._has(table):
            self.con.execute(f"CREATE TABLE {_q(table)} AS {body} LIMIT 0", params)
        have = self._columns(table)
        for col, typ in incoming.items():
            if col not in have:
                # A column that is all null in this run has no type of its own yet.
                new_type = "VARCHAR" if typ.upper() == '"NULL"' or typ == "NULL" else typ
                self.con.execute(f"ALTER TABLE {_q(table)} ADD COLUMN {_q(col)} {new_type}")
            else:
                wider = _widen(have[col], typ)
                if wider is not None:
                    self.con.execute(
                        f"ALTER TABLE {_q(table)} ALTER {_q(col)} SET DATA TYPE {wider}"
                    )
        self.con.execute(f"INSERT INTO {_q(table)} BY NAME {body}", params)

    # -- reading -------------------------------------------------------------------------------
    def query(
        self, sql: str, params: Sequence[Any] = ()
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        try:
            cur = self.con.execute(sql, list(params))
            rows = cur.fetchall()
        except self._duckdb.Error as e:
            raise StoreError(f"the query failed: {str(e).splitlines()[0]}") from e
        cols = [d[0] for d in cur.description or []]
        return cols, rows

    def records(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cols, rows = self.query(sql, params)
        return [dict(zip(cols, r, strict=False)) for r in rows]

    def tables(self) -> list[str]:
        return [r[0] for r in self.con.execute(
            "SELECT table_name FROM information_schema.tables ORDER BY table_name"
        ).fetchall()]


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def run_folders(paths: Sequence[str | Path]) -> Iterator[Path]:
    """Each path a run folder, or a folder whose subfolders are run folders."""
    for raw in paths:
        p = Path(raw)
        if is_run_folder(p):
            yield p
        elif p.is_dir() and any(is_run_folder(c) for c in p.iterdir()):
            yield from sorted(c for c in p.iterdir() if is_run_folder(c))
        else:
            raise StoreError(f"{p} is not a bench run folder (no manifest.json in it or below)")


# ---------------------------------------------------------------------------------------------
# Commands (argparse in bench/cli.py only adapts to these)


def add(
    runs: Sequence[str | Path], store: str | Path = DEFAULT_STORE, commit: str | None = None,
    branch: str | None = None, git: GitInfo | None = None, out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """`bench store add RUN...`: 0 when every run is in the store, 2 on a usage or data error."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if commit:
        git = GitInfo(commit, branch, None, "given")
    try:
        folders = list(run_folders(runs))
        with Store(store) as s:
            for f in folders:
                r = s.add_run(f, git)
                where = f"{r.git.commit[:12]} ({r.git.source})" if r.git.commit else "no commit"
                print(f"{r.outcome}: {r.run_id} ({r.trials} trials; {where}) -> {store}", file=out)
    except (StoreError, ResultsError) as e:
        print(f"bench store: {e}", file=err)
        return 2
    return 0


def query(
    sql: str, store: str | Path = DEFAULT_STORE, fmt: QueryFormat = "table",
    out: TextIO | None = None, err: TextIO | None = None,
) -> int:
    """`bench store query "SQL"`: the result as a table, CSV or JSON."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if fmt not in QUERY_FORMATS:
        print(f"bench store: unknown format {fmt!r}; choose from {', '.join(QUERY_FORMATS)}",
              file=err)
        return 2
    try:
        with Store(store, read_only=True) as s:
            cols, rows = s.query(sql)
    except StoreError as e:
        print(f"bench store: {e}", file=err)
        return 2
    out.write(render(cols, rows, fmt, out))
    return 0


def _plain(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return str(v)


def render(cols: list[str], rows: list[tuple[Any, ...]], fmt: QueryFormat,
           out: TextIO | None = None) -> str:
    if fmt == "json":
        return json.dumps([{c: _plain(v) for c, v in zip(cols, r, strict=False)} for r in rows],
                          indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if v is None else _plain(v) for v in r])
        return buf.getvalue()
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    buf = io.StringIO()
    tty = bool(getattr(out, "isatty", lambda: False)())
    console = Console(file=buf, width=None if tty else 200, highlight=False, emoji=False)
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for c in cols:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*(Text("" if v is None else _cell_text(v)) for v in r))
    console.print(table)
    console.print(f"{len(rows)} row{'s' if len(rows) != 1 else ''}")
    return buf.getvalue()


def _cell_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(_plain(v))
