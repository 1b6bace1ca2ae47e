"""The run folder as a run sees it: its manifest, the OS lock that keeps a second writer out,
and resuming (which refuses a config that no longer describes the folder, rather than drop a
measured row)."""
from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.results import ResultsError, RunWriter, load_run

LOCK_FILE = ".lock"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class FolderLock:
    """An exclusive `flock` on `<folder>/.lock`, held while a run writes the folder. The file
    names its holder (pid, host, start time) so a second writer can say who it is."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ResultsError(f"cannot lock {self.path.parent} ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise ResultsError(
                f"{self.path.parent} is being written by another bench ({holder}); wait for it "
                "to finish or stop it, then run again"
            ) from None
        except OSError:
            # A file system without locks (some network mounts): run without one.
            pass
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started_utc": utc_now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return (f"pid {info.get('pid')} on host {info.get('host')}, started "
                f"{info.get('started_utc')}")
    except (OSError, ValueError, AttributeError):
        return "a process that did not say who it is"


def create(folder: Path, manifest: dict[str, Any]) -> tuple[RunWriter, FolderLock]:
    """A fresh run folder, locked."""
    writer = RunWriter(folder, manifest)
    lock = FolderLock(folder)
    lock.acquire()
    return writer, lock


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What about a config changed, in words (empty when it still describes the folder)."""
    out: list[str] = []
    if old.get("config_hash") == new.get("config_hash"):
        return out
    old_cfg, new_cfg = old.get("config") or {}, new.get("config") or {}
    changed = sorted(k for k in set(old_cfg) | set(new_cfg) if old_cfg.get(k) != new_cfg.get(k))
    if "trials" in changed:
        out.append(f"trials {old_cfg.get('trials')} became {new_cfg.get('trials')}")
        changed.remove("trials")
    old_cells = {c.get("settings_hash") for c in old.get("cells", [])}
    new_cells = {c.get("settings_hash") for c in new.get("cells", [])}
    if old_cells != new_cells:
        gone, added = len(old_cells - new_cells), len(new_cells - old_cells)
        out.append(f"the cells differ ({gone} no longer in the config, {added} new)")
    if changed:
        out.append("settings changed: " + ", ".join(changed))
    if not out:
        out.append(f"config hash {str(old.get('config_hash'))[:8]} became "
                   f"{str(new.get('config_hash'))[:8]}")
    return out


def lock_for_resume(folder: Path, manifest: dict[str, Any]) -> FolderLock:
    """Lock a run folder to resume it and check the config still describes it (its
    config hash, cells, settings and trial counts); ResultsError says what differs."""
    if not (folder / "manifest.json").is_file():
        raise ResultsError(f"{folder} is not a bench run folder (no manifest.json)")
    lock = FolderLock(folder)
    lock.acquire()
    try:
        old = load_run(folder)
        for table in ("energy", "power", "tokens"):
            old.table(table)  # a damaged side table stops the resume here, before any work
        old_m, new_m = old.manifest.get("machine") or {}, manifest.get("machine") or {}
        if old_m.get("id") and new_m.get("id") and old_m["id"] != new_m["id"]:
            # Finishing a run elsewhere would put two machines' trials under one cell key.
            raise ResultsError(
                f"--resume {folder}: this run was measured on {old_m.get('hostname') or '?'} "
                f"(machine id {old_m['id']}), not on this machine ({new_m['id']}); resume it "
                "there, or start a new run here without --resume"
            )
        diffs = _differences(old.manifest, manifest)
        if diffs:
            raise ResultsError(
                f"--resume {folder}: the config no longer describes this run ("
                + "; ".join(diffs) + "); resume with the config it was started with, or start "
                "a new run without --resume"
            )
    except BaseException:
        lock.release()
        raise
    return lock


def resume(folder: Path, manifest: dict[str, Any], lock: FolderLock
           ) -> tuple[RunWriter, set[str]]:
    """Reopen a locked, checked run folder to finish it, keeping every finished cell and its
    rows. Returns the writer and the finished cell ids. Rows of a cell that did not finish ok
    are replaced when it runs again, so no (cell, trial) pair appears twice."""
    try:
        old = load_run(folder)
        by_id = {e["cell_id"]: e for e in old.manifest.get("cells", [])}
        finished: set[str] = set()
        for entry in manifest["cells"]:
            prev = by_id.get(entry["cell_id"])
            if prev is not None and prev.get("status") == "ok":
                entry.update({k: prev.get(k) for k in ("status", "error", "warnings", "cell_key")})
                finished.add(entry["cell_id"])
        rows: dict[str, list[dict[str, Any]]] = {}
        # Quality is measured again after the sweep (it is not per cell).
        for table in ("trials", "energy", "power", "tokens"):
            src = old.trials if table == "trials" else old.table(table)
            rows[table] = [
                {k: v for k, v in r.items() if k != "cell_status"} for r in src
                if r.get("cell_id") in finished
            ]
        for key in ("models", "loads", "idle", "started_utc", "resumed"):
            if old.manifest.get(key):
                manifest[key] = old.manifest[key]
        manifest["resumed"] = list(manifest.get("resumed") or []) + [utc_now()]
        manifest["run_id"] = old.manifest.get("run_id", folder.name)
        return RunWriter.reopen(folder, manifest, rows), finished
    except BaseException:
        lock.release()
        raise
