"""Apple Silicon SoC power through macOS `powermetrics`: CPU, GPU and ANE, boundary soc.

powermetrics runs as a child process writing one plist document per sample, documents separated
by NUL bytes. A reader thread integrates each record's average power (mW) over that record's
own measured `elapsed_ns`, never the requested interval (the two drift apart under load).
"""
from __future__ import annotations

import getpass
import os
import plistlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.meters.base import Domain, Meter, MeterUnavailable
from bench.meters.settings import EnergySettings

POWERMETRICS_PATH = "/usr/bin/powermetrics"
SAMPLERS = ("cpu_power", "gpu_power", "ane_power")

# Where each domain's figure lives in a record, tried in order. `*_power` is the average power
# over the record in mW (macOS 12+); `*_energy` is the energy over the record in mJ, the only
# figure some releases give. `combined_power` (CPU+GPU+ANE) is not a domain: it would double
# count.
_POWER_MW: dict[str, tuple[tuple[str, str], ...]] = {
    "soc-cpu": (("processor", "cpu_power"),),
    "soc-gpu": (("processor", "gpu_power"), ("gpu", "gpu_power")),
    "ane": (("processor", "ane_power"), ("ane", "ane_power")),
}
_ENERGY_MJ: dict[str, tuple[tuple[str, str], ...]] = {
    "soc-cpu": (("processor", "cpu_energy"),),
    "soc-gpu": (("processor", "gpu_energy"), ("gpu", "gpu_energy")),
    "ane": (("processor", "ane_energy"), ("ane", "ane_energy")),
}


# Seams for tests: the platform and privilege checks.
def _is_macos() -> bool:
    return sys.platform == "darwin"


def _is_root() -> bool:
    return os.geteuid() == 0


def default_command() -> list[str]:
    # sudo -n never prompts: without a NOPASSWD rule it fails at once, which open() explains.
    return ["powermetrics"] if _is_root() else ["sudo", "-n", "powermetrics"]


def sudoers_line() -> str:
    return f"{getpass.getuser()} ALL=(root) NOPASSWD: {POWERMETRICS_PATH}"


def _lookup(record: dict[str, Any], paths: tuple[tuple[str, str], ...]) -> float | None:
    for section, key in paths:
        part = record.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), int | float):
            return float(part[key])
    return None


def record_joules(record: dict[str, Any]) -> dict[str, float]:
    """Energy per domain in one powermetrics record, from its power over its own elapsed_ns."""
    elapsed_s = float(record["elapsed_ns"]) / 1e9
    out: dict[str, float] = {}
    for domain, power_paths in _POWER_MW.items():
        mw = _lookup(record, power_paths)
        if mw is not None:
            out[domain] = mw / 1000.0 * elapsed_s
            continue
        mj = _lookup(record, _ENERGY_MJ[domain])
        if mj is not None:
            out[domain] = mj / 1000.0
    return out


class PlistStream:
    """Splits powermetrics' byte stream into plist records (NUL-separated documents)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        """The records completed by `data`, parsed one at a time as they are taken.

        Lazy, so the records before a malformed document still count.
        """
        self._buf += data
        *docs, self._buf = self._buf.split(b"\0")
        return (plistlib.loads(d.strip()) for d in docs if d.strip())

    def close(self) -> list[dict[str, Any]]:
        """Whatever complete document is left when the stream ends without a final NUL."""
        rest, self._buf = self._buf.strip(), b""
        return [plistlib.loads(rest)] if rest else []


def parse_stream(data: bytes) -> list[dict[str, Any]]:
    """Every record in a whole captured stream (the doctor, tests, recorded files)."""
    stream = PlistStream()
    return [*stream.feed(data), *stream.close()]


@dataclass
class _Totals:
    joules: dict[str, float] = field(default_factory=dict)
    records: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # set when the stream ends or breaks
    first: threading.Event = field(default_factory=threading.Event)


class _Process:
    """The running powermetrics and the thread that integrates its records."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.totals = _Totals()
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._stderr = b""
        self._err_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._err_thread.start()
        self.thread = threading.Thread(target=self._read, name="powermetrics-reader", daemon=True)
        self.thread.start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr = (self._stderr + line)[-4000:]

    def stderr_text(self) -> str:
        self._err_thread.join(timeout=1)
        return self._stderr.decode(errors="replace").strip()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        stream = PlistStream()
        try:
            while True:
                chunk = os.read(fd, 65536)
                records = stream.feed(chunk) if chunk else stream.close()
                for rec in records:
                    self._add(rec)
                if not chunk:
                    break
        except Exception as e:  # noqa: BLE001 - a broken stream ends the meter, with the reason
            with self.lock:
                self.totals.error = f"cannot parse powermetrics output: {type(e).__name__}: {e}"
            self.totals.first.set()
            # Nobody reads its pipe any more: stop it rather than leave it blocked on a write.
            self.proc.terminate()
        code = self.proc.wait()
        with self.lock:
            if self.totals.error is None:
                self.totals.error = f"powermetrics exited with status {code}"
        self.totals.first.set()

    def _add(self, rec: dict[str, Any]) -> None:
        joules = record_joules(rec)
        with self.lock:
            t = self.totals
            for k, v in joules.items():
                t.joules[k] = t.joules.get(k, 0.0) + v
            t.records += 1
            t.last = rec
        self.totals.first.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.thread.join(timeout=3)


class PowermetricsMeter(Meter):
    """Cumulative SoC energy integrated from powermetrics records, method "sampled".

    A reading counts the records that have arrived: energy lands at the end of each record, so
    phase edges are quantized to the record interval (energy.interval_ms), which is this meter's
    update period: shorter phases are marked unresolved.
    """

    name = "powermetrics"

    def __init__(self, settings: EnergySettings, process: _Process, domain_names: list[str]):
        super().__init__(settings)
        self._process = process
        period = settings.interval_ms / 1000.0
        self._domains = [Domain(n, self.name, "sampled", "soc", True, period)
                         for n in domain_names]

    @classmethod
    def open(cls, settings: EnergySettings) -> PowermetricsMeter:
        if not _is_macos():
            raise MeterUnavailable(cls.name, f"powermetrics is macOS only; this is {sys.platform}.")
        command = list(settings.powermetrics.command or default_command())
        interval = str(max(1, round(settings.interval_ms)))
        failure = ""
        # ane_power is its own sampler on recent macOS and unknown to older ones: try it, then
        # without it. The ane domain exists wherever the first record carries an ANE figure.
        for samplers in (SAMPLERS, SAMPLERS[:2]):
            argv = [*command, "--samplers", ",".join(samplers), "-i", interval, "-f", "plist"]
            try:
                process = _Process(argv)
            except OSError as err:
                raise MeterUnavailable(
                    cls.name, f"cannot run {command[0]!r}: {err}.",
                    "set energy.powermetrics.command to the powermetrics command line",
                ) from err
            process.totals.first.wait(settings.powermetrics.start_timeout_s)
            with process.lock:
                records, last = process.totals.records, dict(process.totals.last)
            if records:
                names = [d for d in _POWER_MW if d in record_joules(last)]
                if not names:
                    process.stop()
                    raise MeterUnavailable(
                        cls.name, "powermetrics records carry no CPU, GPU or ANE power figure "
                        f"(record keys: {sorted(last)})."
                    )
                return cls(settings, process, names)
            code = process.proc.poll()
            with process.lock:
                stream_error = process.totals.error
            process.stop()
            stderr = process.stderr_text()
            if stream_error is not None and stream_error.startswith("cannot parse"):
                failure = stream_error
            elif code is None:
                failure = (f"no record within {settings.powermetrics.start_timeout_s:g} s"
                           + (f" (stderr: {stderr})" if stderr else ""))
            else:
                failure = f"exited with status {code}" + (f": {stderr}" if stderr else "")
            if _is_sudo_refusal(stderr):
                raise MeterUnavailable(
                    cls.name,
                    f"sudo would need a password to run powermetrics ({stderr.splitlines()[0]}).",
                    "run bench as root, or allow this one command without a password: run "
                    "`sudo visudo -f /etc/sudoers.d/bench-powermetrics` and add the line "
                    f"`{sudoers_line()}`",
                )
        raise MeterUnavailable(cls.name, f"{' '.join(command)} gave no power record: {failure}.")

    def domains(self) -> list[Domain]:
        return list(self._domains)

    def _sample(self) -> dict[str, float]:
        p = self._process
        with p.lock:
            if p.totals.error is not None:
                raise MeterUnavailable(self.name, p.totals.error)
            joules = dict(p.totals.joules)
        return {d.name: joules.get(d.name, 0.0) for d in self._domains}

    @property
    def records(self) -> int:
        with self._process.lock:
            return self._process.totals.records

    def snapshot(self) -> dict[str, object]:
        with self._process.lock:
            last = self._process.totals.last
            out: dict[str, object] = {"records": self._process.totals.records}
            if "thermal_pressure" in last:
                out["thermal_pressure"] = last["thermal_pressure"]
            proc = last.get("processor")
            if isinstance(proc, dict) and "combined_power" in proc:
                out["combined_power_mw"] = proc["combined_power"]
        return out

    def facts(self) -> dict[str, object]:
        with self._process.lock:
            hw_model = self._process.totals.last.get("hw_model")
        return {
            "argv": self._process.argv,
            "hw_model": hw_model,
            "domains": [d.name for d in self._domains],
            "update_period_s": self.interval_s,
        }

    def _close(self) -> None:
        self._process.stop()


def _is_sudo_refusal(stderr: str) -> bool:
    text = stderr.lower()
    return "password is required" in text or "a terminal is required" in text

