"""Child-process isolation: run a function in a spawned child that reports typed events through
a pipe, stop it on a timeout or Ctrl-C, and make it exit promptly and quietly if the main
process dies (a parent-death signal on Linux, a watched parent pid elsewhere)."""
from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench.redact import redact
from bench.run.events import Crashed, Done, Event

Emit = Callable[[Event], None]
PR_SET_PDEATHSIG = 1


class ParentDied(BaseException):
    """Raised in a child whose main process is gone: unwind (closing sessions, stopping the
    servers it started) and exit without a word."""


def _on_parent_death(signum: int, frame: Any) -> None:
    raise ParentDied


def watch_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """Arrange for SIGTERM when the parent dies, and turn SIGTERM into ParentDied."""
    signal.signal(signal.SIGTERM, _on_parent_death)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        raise ParentDied

    # A watcher thread as well: macOS has no parent-death signal, and a reparented child
    # sees another ppid within one poll.
    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="bench-parent-watch", daemon=True).start()


def _child_main(conn: Any, parent_pid: int, target: Callable[..., None],
                args: tuple[Any, ...]) -> None:
    """Entry point of a child process: runs target(*args, emit) and reports through the pipe."""
    # Ctrl-C reaches the whole process group; the parent decides, and stops us itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def emit(event: Event | Done | Crashed) -> None:
        # Redacted before it leaves the child: secrets this process read (an API key) are
        # registered here, not in the main process.
        conn.send(redact_event(event))

    try:
        watch_parent(parent_pid)
        target(*args, emit)
        emit(Done())
    except ParentDied:
        os._exit(0)  # nobody is listening; the finally blocks above have run
    except BaseException as e:  # noqa: BLE001 - report anything, then exit non-zero
        try:
            emit(Crashed(f"{type(e).__name__}: {e}", traceback.format_exc(limit=5)))
        except (OSError, EOFError):
            os._exit(1)
        raise SystemExit(1) from None
    finally:
        conn.close()


def redact_event(event: Any) -> Any:
    """The event with every string field passed through bench.redact."""
    if not dataclasses.is_dataclass(event) or isinstance(event, type):
        return redact(event)
    changes = {f.name: redact(getattr(event, f.name)) for f in dataclasses.fields(event)}
    return dataclasses.replace(event, **changes)


class Child:
    """A spawned child process and the events it sends; stopped for good on any exit."""

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...]):
        ctx = mp.get_context("spawn")
        self.conn, child_conn = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(
            target=_child_main, args=(child_conn, os.getpid(), target, args), daemon=True
        )
        self.proc.start()
        child_conn.close()
        self.crash: str | None = None

    def pump(self, on_event: Emit, overdue: Callable[[], str | None]) -> None:
        """Dispatch events until the child is done, dies, or `overdue()` names a reason to stop
        it (then recorded as the crash)."""
        try:
            while True:
                if self.conn.poll(0.2):
                    try:
                        event = self.conn.recv()
                    except EOFError:
                        break
                    if isinstance(event, Done):
                        break
                    if isinstance(event, Crashed):
                        self.crash = event.reason
                        continue
                    on_event(event)
                elif not self.proc.is_alive() and not self.conn.poll(0):
                    break
                else:
                    why = overdue()
                    if why is not None:
                        self.crash = why
                        self.proc.kill()
                        break
        except KeyboardInterrupt:
            self.proc.kill()
            raise
        finally:
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)


def signal_name(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
