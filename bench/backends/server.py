"""A model server seen from bench: reaching it over HTTP, and, when bench starts it, its process.

`Http` talks to a base URL with the standard library and turns every way a server can fail into
one BackendError sentence. `ManagedServer` launches a server without a shell, saves its output
to a log file, waits until it answers, samples its memory, and stops it (terminate, wait, kill)
when the session closes, on an error, on Ctrl-C, or when the interpreter exits.
Secrets (API keys) are filled into the command and environment only at launch; logs, errors and
everything returned here show them as `***`.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bench.backends.base import BackendError
from bench.backends.sse import StreamError, error_message
from bench.redact import redact as redact_secrets
from bench.redact import register_secret

REDACTED = "***"
_SECRET_QUERY = re.compile(
    r"(key|token|secret|password|passwd|pwd|sig|signature|auth)", re.IGNORECASE
)
# Where the runner may tell backends to put server logs (it also may pass settings["log_dir"]).
LOG_DIR_ENV = "BENCH_LOG_DIR"


# -- redaction -------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """The URL without a password (`user:***@host`) or key-like query values (`?key=***`)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{REDACTED}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if _SECRET_QUERY.search(k) else v) for k, v in pairs],
                          safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with these secrets and every registered one (bench.redact) masked."""
    for s in secrets:
        if s:
            text = text.replace(s, REDACTED)
    return redact_secrets(text)


# -- HTTP ------------------------------------------------------------------------------------


def _error_text(body: bytes) -> str:
    """A server's error body in a few words: the JSON `error`/`detail` message, or its text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        obj = None
    if isinstance(obj, dict):
        err = error_message(obj)
        if err is None:
            err = obj.get("detail", obj.get("message"))
            err = json.dumps(err) if isinstance(err, (list, dict)) else err
        if err is not None:
            text = str(err)
    text = " ".join(text.split())
    return (text[:300] + "...") if len(text) > 300 else (text or "no message")


class _Deadline:
    """The whole request's time limit. The socket timeout only bounds each wait for bytes, so a
    server that sends a byte now and then would never hit it; at the deadline a timer shuts the
    socket down, which wakes a blocked read at once, and the read is then reported as late."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.t0 = time.monotonic()
        self.expired = False
        self._timer: threading.Timer | None = None

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.t0)

    def arm(self, conn: http.client.HTTPConnection) -> None:
        sock = conn.sock

        def fire() -> None:
            self.expired = True
            try:
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        self._timer = threading.Timer(max(0.0, self.left()), fire)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class StreamResponse:
    """An open streamed response read line by line, within the request's deadline, a cap on one
    line and a cap on the whole response; each limit broken is one StreamError sentence."""

    def __init__(self, http_: Http, conn: http.client.HTTPConnection,
                 resp: http.client.HTTPResponse, deadline: _Deadline):
        self.http = http_
        self.conn = conn
        self.resp = resp
        self.deadline = deadline
        self.n_bytes = 0

    def readline(self) -> bytes:
        limit = self.http.max_line_bytes
        try:
            line = self.resp.readline(limit + 1)
        except (OSError, http.client.HTTPException):
            if self.deadline.expired:
                raise StreamError(self.http.late_message()) from None
            raise
        if self.deadline.expired:
            raise StreamError(self.http.late_message())
        self.n_bytes += len(line)
        if len(line) > limit:
            raise StreamError(
                f"the server sent a line longer than max_line_bytes ({limit} bytes); raise "
                "max_line_bytes if that is what it means to send"
            )
        if self.n_bytes > self.http.max_response_bytes:
            raise StreamError(
                f"the server sent more than max_response_bytes ({self.http.max_response_bytes} "
                "bytes) in one response; raise max_response_bytes if that is what it means to send"
            )
        return line

    def close(self) -> None:
        self.deadline.cancel()
        self.conn.close()


class Http:
    """Requests to one base URL (which may include a path such as /v1)."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        managed_hint: bool = False,
        key_env: str | None = None,
        explain: Callable[[int, str], str | None] | None = None,
        deadline_s: float = 1800.0,
        max_line_bytes: int = 1 << 20,
        max_response_bytes: int = 64 << 20,
    ):
        parts = urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self.shown = redact_url(self.base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.max_line_bytes = max_line_bytes
        self.max_response_bytes = max_response_bytes
        self.headers = dict(headers or {})
        self.secrets = [s for s in secrets if s]
        for s in self.secrets:
            register_secret(s)
        self.managed = managed_hint  # bench started this server (changes the advice)
        self.key_env = key_env
        self.explain = explain  # a backend's own reading of an error status, or None

    def connection(self, timeout_s: float | None = None) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout_s or self.timeout_s)

    def late_message(self, deadline_s: float | None = None) -> str:
        return (
            f"the server at {self.shown} did not finish the request within deadline_s "
            f"({deadline_s or self.deadline_s:g} s in all); raise deadline_s if it is only slow"
        )

    def unreachable(self, e: BaseException, timeout_s: float | None = None) -> BackendError:
        where = self.shown
        if isinstance(e, ConnectionRefusedError):
            advice = (
                "the server bench started is not listening (see its log)" if self.managed
                else "start it or give `server:` so bench starts it"
            )
            return BackendError(f"no server answered at {where} (connection refused); {advice}")
        if isinstance(e, (socket.timeout, TimeoutError)):
            return BackendError(
                f"the server at {where} did not answer within {timeout_s or self.timeout_s:g} s; "
                "raise timeout_s if it is only slow"
            )
        if isinstance(e, socket.gaierror):
            return BackendError(f"cannot resolve the host of {where} ({e.strerror})")
        msg = redact(str(e) or type(e).__name__, self.secrets)
        return BackendError(f"cannot reach the server at {where} ({msg})")

    def status_error(self, status: int, body: bytes, method: str, path: str) -> BackendError:
        msg = redact(_error_text(body), self.secrets)
        own = self.explain(status, msg) if self.explain is not None else None
        if own:
            return BackendError(redact(own, self.secrets))
        where = f"the server at {self.shown} answered HTTP {status} to {method} {path}"
        if status in (401, 403):
            advice = (
                f"check the key in the environment variable {self.key_env}" if self.key_env
                else "it wants an API key: put it in an environment variable and name that "
                "variable in api_key_env"
            )
            return BackendError(f"{where} ({msg}); {advice}")
        return BackendError(f"{where}: {msg}")

    def _send(
        self, conn: http.client.HTTPConnection, method: str, path: str, body: Any
    ) -> http.client.HTTPResponse:
        payload = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Accept": "application/json, text/event-stream, application/x-ndjson",
                   **self.headers}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, self.prefix + path, body=payload, headers=headers)
        return conn.getresponse()

    def _open(self, timeout_s: float | None, deadline: _Deadline) -> http.client.HTTPConnection:
        """A connected connection whose socket the deadline will shut down."""
        idle = timeout_s or self.timeout_s
        conn = self.connection(max(0.001, min(idle, deadline.left())))
        try:
            conn.connect()
        except OSError as e:
            conn.close()
            if deadline.left() <= 0 and isinstance(e, (socket.timeout, TimeoutError)):
                raise BackendError(self.late_message(deadline.seconds)) from None
            raise self.unreachable(e, timeout_s) from None
        if conn.sock is not None:
            conn.sock.settimeout(idle)
        deadline.arm(conn)
        return conn

    def _read_all(self, resp: http.client.HTTPResponse, deadline: _Deadline) -> bytes:
        cap = self.max_response_bytes
        parts: list[bytes] = []
        n = 0
        while True:
            piece = resp.read(min(1 << 16, cap + 1 - n))
            if deadline.expired:
                raise BackendError(self.late_message(deadline.seconds))
            if not piece:
                return b"".join(parts)
            n += len(piece)
            if n > cap:
                raise BackendError(
                    f"the server at {self.shown} sent more than max_response_bytes ({cap} "
                    "bytes) in one response; raise max_response_bytes if that is what it means "
                    "to send"
                )
            parts.append(piece)

    def request(
        self, method: str, path: str, body: Any = None, timeout_s: float | None = None
    ) -> tuple[int, bytes]:
        """The whole response; connection problems become BackendError, statuses do not."""
        deadline = _Deadline(self.deadline_s)
        conn = self._open(timeout_s, deadline)
        try:
            resp = self._send(conn, method, path, body)
            return resp.status, self._read_all(resp, deadline)
        except (OSError, http.client.HTTPException) as e:
            if deadline.expired:
                raise BackendError(self.late_message(deadline.seconds)) from None
            raise self.unreachable(e, timeout_s) from None
        finally:
            deadline.cancel()
            conn.close()

    def json(self, method: str, path: str, body: Any = None,
             timeout_s: float | None = None) -> Any:
        status, data = self.request(method, path, body, timeout_s)
        if status >= 400:
            raise self.status_error(status, data, method, self.prefix + path)
        try:
            return json.loads(data) if data.strip() else None
        except (ValueError, RecursionError):
            raise BackendError(
                f"the server at {self.shown} answered {method} {self.prefix + path} with "
                f"something that is not JSON: {redact(_error_text(data), self.secrets)}"
            ) from None

    def stream(self, path: str, body: Any, before_send: Callable[[], None]) -> StreamResponse:
        """POST and return the open response once its status is good. The TCP connection is
        made before `before_send` runs, so the timed request starts at the request itself."""
        deadline = _Deadline(self.deadline_s)
        conn = self._open(None, deadline)

        def fail() -> None:
            deadline.cancel()
            conn.close()

        try:
            before_send()
            resp = self._send(conn, "POST", path, body)
        except (OSError, http.client.HTTPException) as e:
            fail()
            if deadline.expired:
                raise BackendError(self.late_message()) from None
            raise self.unreachable(e) from None
        except BaseException:
            fail()
            raise
        if resp.status >= 400:
            try:
                data = self._read_all(resp, deadline)
            except (OSError, http.client.HTTPException, BackendError):
                data = b""
            fail()
            raise self.status_error(resp.status, data, "POST", self.prefix + path)
        return StreamResponse(self, conn, resp, deadline)


# -- the server process ----------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def fill(template: str, values: Mapping[str, Any]) -> str:
    """`{name}` placeholders from values; the settings schema has already checked the names."""
    try:
        return template.format_map({k: str(v) for k, v in values.items()})
    except (KeyError, IndexError, ValueError) as e:
        raise BackendError(f"cannot fill the placeholders of {template!r} ({e})") from None


def log_dir_for(settings: Mapping[str, Any]) -> Path:
    """Where server logs go: settings["log_dir"] (the runner's run folder), $BENCH_LOG_DIR,
    or a fresh temporary folder."""
    given = settings.get("log_dir") or os.environ.get(LOG_DIR_ENV)
    if given:
        path = Path(str(given)).expanduser()
    else:
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="bench-server-logs-"))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BackendError(f"cannot create the server log folder {path} ({e.strerror})") from None
    return path


def _process_tree_rss(pid: int) -> int | None:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except (psutil.Error, OSError):
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.Error, OSError):
            pass
    return total


def _terminate(proc: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM to the server's process group (it may have workers), wait, then SIGKILL."""
    group = hasattr(os, "killpg")

    def send(sig: int) -> None:
        try:
            if group:
                os.killpg(proc.pid, sig)
            elif proc.poll() is None:
                proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    if proc.poll() is None:
        send(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
    if group:
        send(signal.SIGKILL)  # any worker the server left behind in its group


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook that has the kernel SIGKILL the server the moment the process
    that started it dies, even by SIGKILL or abort(), where no finally or atexit runs. SIGKILL,
    not SIGTERM: a server shutting down gracefully would first finish the request in flight.
    The kernel ties this to the starting thread, so it is only used from the main thread; the
    reaper (below) covers every other case and the server's own workers."""
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)
    parent = os.getpid()

    def hook() -> None:
        prctl(pr_set_pdeathsig, sigkill)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


# The reaper: a tiny process that holds the read end of a pipe whose write end only bench holds.
# When bench dies in any way the kernel closes that end, the read returns nothing, and the
# reaper SIGKILLs the server's whole process group (its workers too). On a normal stop bench
# writes one byte first, and the reaper exits without killing anything.
_REAPER = (
    "import os, signal, sys\n"
    "try:\n    d = os.read(0, 1)\nexcept OSError:\n    d = b''\n"
    "if not d:\n"
    "    try:\n        os.killpg(int(sys.argv[1]), signal.SIGKILL)\n"
    "    except OSError:\n        pass\n"
)


def _start_reaper(pgid: int) -> subprocess.Popen | None:
    if not hasattr(os, "killpg"):
        return None
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _REAPER, str(pgid)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=True,
            # Its own session: Ctrl-C in the terminal must not take it out before the server.
            start_new_session=True,
        )
    except OSError:
        return None


def _release_reaper(reaper: subprocess.Popen | None) -> None:
    """Tell the reaper the server was stopped in order, so it exits without a kill."""
    if reaper is None or reaper.stdin is None:
        return
    try:
        reaper.stdin.write(b"q")
        reaper.stdin.close()
    except OSError:
        pass
    try:
        reaper.wait(5)
    except subprocess.TimeoutExpired:
        reaper.kill()


def _shutdown(proc: subprocess.Popen, reaper: subprocess.Popen | None, timeout_s: float,
              pump: threading.Thread | None) -> None:
    _terminate(proc, timeout_s)
    _release_reaper(reaper)
    if pump is not None and pump is not threading.current_thread():
        pump.join(timeout=2)


def _pump_log(src: Any, log_path: Path) -> None:
    """Copy the server's output to its log, with every registered secret masked. A secret may be
    split across two reads, so the last bytes that could start one are held back until the next
    read (or the end) shows whether they do."""
    import bench.redact as secrets_mod

    held = b""
    try:
        with open(log_path, "ab") as log:
            while True:
                try:
                    chunk = os.read(src.fileno(), 1 << 16)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                buf = redact_secrets(held + chunk)
                longest = max((len(x.encode()) for x in secrets_mod.registered()), default=0)
                # Also hold a trailing "Bearer <tok" whose token may go on in the next read.
                keep = max(0, longest - 1)
                tail = buf[-(keep + 256):]
                bearer = tail.lower().rfind(b"bearer")
                if bearer >= 0:
                    keep = max(keep, len(tail) - bearer)
                cut = len(buf) - keep
                nl = buf.rfind(b"\n", 0, cut)
                if nl >= 0:
                    cut = nl + 1  # whole lines where possible, so a log reads in lines
                elif len(buf) - keep < (1 << 20):
                    cut = 0  # no newline yet: wait for one, up to a MiB of line
                else:
                    cut = len(buf) - keep
                log.write(buf[:cut])
                log.flush()
                held = buf[cut:]
            log.write(redact_secrets(held))
    except OSError:
        pass  # the log folder went away; the server runs on
    finally:
        try:
            src.close()
        except OSError:
            pass


class ManagedServer:
    """A server process owned by one session."""

    SAMPLE_INTERVAL_S = 0.5

    def __init__(
        self,
        command: list[str],
        env: Mapping[str, str],
        values: Mapping[str, Any],
        secrets: Mapping[str, str],
        ready_url: str,
        startup_timeout_s: float,
        stop_timeout_s: float,
        log_path: Path,
        ready_headers: Mapping[str, str] | None = None,
    ):
        self.command_template = list(command)
        self.env_template = dict(env)
        self.values = dict(values)
        self.secrets = dict(secrets)
        self.ready_url = ready_url
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_path = log_path
        self.ready_headers = dict(ready_headers or {})
        self.proc: subprocess.Popen | None = None
        self.peak_rss_bytes: int | None = None
        self.rss_samples = 0
        self.startup_s: float | None = None
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None
        self._finalizer: weakref.finalize | None = None
        self._pump: threading.Thread | None = None
        self._reaper: subprocess.Popen | None = None
        for v in self.secrets.values():
            register_secret(v)

    # What may be shown: secrets as ***.
    def shown_command(self) -> list[str]:
        shown = {**self.values, **{k: REDACTED for k in self.secrets}}
        return [fill(a, shown) for a in self.command_template]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def _log_tail(self, n: int = 3) -> str:
        try:
            lines = self.log_path.read_text("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        tail = " | ".join(line.strip() for line in lines[-n:] if line.strip())
        return redact(tail, self.secrets.values())[-400:]

    def start(self) -> None:
        """Launch and wait until healthy; on any failure (Ctrl-C too) the process is stopped."""
        full = {**self.values, **self.secrets}
        argv = [fill(a, full) for a in self.command_template]
        env = {**os.environ, **{k: fill(v, full) for k, v in self.env_template.items()}}
        t0 = time.perf_counter()
        with open(self.log_path, "ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"# {stamp} bench starts: {json.dumps(self.shown_command())}\n".encode())
            log.flush()
        # The server's output reaches its log through _pump_log, with secrets masked.
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                close_fds=True,
                # Its own process group: Ctrl-C in the terminal reaches bench, which then
                # stops the server (and its workers) in order.
                start_new_session=sys.platform != "win32",
                # Only prctl runs between fork and exec, which is safe with threads.
                preexec_fn=_die_with_parent(),  # noqa: PLW1509
            )
        except FileNotFoundError:
            raise BackendError(
                f"cannot start the server: {argv[0]!r} was not found; install it or fix "
                "server.command"
            ) from None
        except PermissionError:
            raise BackendError(
                f"cannot start the server: {argv[0]!r} is not executable"
            ) from None
        except OSError as e:
            raise BackendError(f"cannot start the server {argv[0]!r} ({e.strerror})") from None
        self._pump = threading.Thread(target=_pump_log, args=(self.proc.stdout, self.log_path),
                                      name="bench-server-log", daemon=True)
        self._pump.start()
        self._reaper = _start_reaper(self.proc.pid) if sys.platform != "win32" else None
        # Stops the server if the session is dropped or the interpreter exits without close().
        self._finalizer = weakref.finalize(self, _shutdown, self.proc, self._reaper,
                                           self.stop_timeout_s, self._pump)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - t0
        self._sample()
        self._sampler = threading.Thread(target=self._sample_loop, name="bench-server-rss",
                                         daemon=True)
        self._sampler.start()

    def _wait_ready(self) -> None:
        assert self.proc is not None
        parts = urlsplit(self.ready_url)
        https = parts.scheme == "https"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if https else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        deadline = time.monotonic() + self.startup_timeout_s
        last = "no answer yet"
        while True:
            code = self.proc.poll()
            if code is not None:
                if self._pump is not None:
                    self._pump.join(timeout=2)  # its last words, into the log first
                tail = self._log_tail()
                raise BackendError(
                    f"the server exited with code {code} before it was ready; its output is in "
                    f"{self.log_path}" + (f" (last lines: {tail})" if tail else "")
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise BackendError(
                    f"the server did not answer {redact_url(self.ready_url)} within "
                    f"{self.startup_timeout_s:g} s ({last}); raise server.startup_timeout_s "
                    f"or see its log {self.log_path}"
                )
            cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
            conn = cls(host, port, timeout=max(0.1, min(2.0, left)))
            try:
                conn.request("GET", path, headers=self.ready_headers)
                status = conn.getresponse().status
                # Up and answering; 401/403 means it is up and wants the key.
                if 200 <= status < 300 or status in (401, 403):
                    return
                last = f"HTTP {status}"
            except (OSError, http.client.HTTPException) as e:
                last = type(e).__name__
            finally:
                conn.close()
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _sample(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        rss = _process_tree_rss(self.proc.pid)
        if rss is not None:
            self.rss_samples += 1
            self.peak_rss_bytes = max(self.peak_rss_bytes or 0, rss)

    def _sample_loop(self) -> None:
        while not self._stop_sampling.wait(self.SAMPLE_INTERVAL_S):
            self._sample()

    def sample(self) -> None:
        """One memory sample now (the session calls it after each trial)."""
        self._sample()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        self._stop_sampling.set()
        if self._sampler is not None and self._sampler is not threading.current_thread():
            self._sampler.join(timeout=2)
        if self._finalizer is not None:
            self._finalizer()  # runs _shutdown once; later calls do nothing
        elif self.proc is not None:
            _shutdown(self.proc, self._reaper, self.stop_timeout_s, self._pump)


def listening_pid(host: str, port: int) -> int | None:
    """The process listening on a local port, when this user may see it (best effort)."""
    if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        return None
    try:
        import psutil

        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                return int(c.pid)
    except Exception:  # noqa: BLE001 - permissions and platforms vary; no pid is fine
        return None
    return None
