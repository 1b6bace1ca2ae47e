"""Facts about the machine and the software, for the manifest, and peak-memory probes."""
from __future__ import annotations

import hashlib
import os
import platform
import resource
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

import bench


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True, text=True, timeout=5, check=False,
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def machine_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "system": platform.system(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "cpu_cores_logical": psutil.cpu_count(logical=True),
        "ram_bytes": psutil.virtual_memory().total,
        "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "virtualized": _virtualized(),
        "gpus": nvidia_gpus(),
    }
    facts["id"] = machine_id(facts)
    return facts


NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")


def nvidia_gpus(root: Path = NVIDIA_PROC) -> list[str]:
    """The NVIDIA GPUs' model names, from the driver's own procfs files (one folder per GPU,
    its `information` file with a `Model:` line): no library, no driver call, so a machine
    without NVIDIA has an empty list at no cost. Part of the fingerprint: the same CPU with
    another GPU is another machine."""
    names = []
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return []
    for folder in folders:
        text = _read(str(folder / "information")) or ""
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model" and value.strip():
                names.append(value.strip())
                break
    return names


def _virtualized() -> bool | None:
    flags = _read("/proc/cpuinfo")
    if flags is None:
        return None
    return " hypervisor" in flags


def machine_id(facts: dict[str, Any], gpus: list[str] | None = None) -> str:
    """A fingerprint of what decides performance; runs compare only when it matches."""
    parts = [
        facts.get("cpu_model"),
        facts.get("cpu_cores_physical"),
        facts.get("cpu_cores_logical"),
        # RAM rounded to GiB: the kernel's reserved memory moves the byte count between boots.
        round((facts.get("ram_bytes") or 0) / 2**30),
        facts.get("system"),
        facts.get("arch"),
        ",".join(sorted(gpus or facts.get("gpus") or [])),
    ]
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def git_commit() -> tuple[str | None, bool | None]:
    root = Path(bench.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None, None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, None
    return (head or None), bool(dirty)


def software_facts() -> dict[str, Any]:
    commit, dirty = git_commit()
    return {
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "bench": bench.__version__,
        "bench_git_commit": commit,
        "bench_git_dirty": dirty,
    }


# -- peak resident memory ---------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> tuple[int | None, str]:
    """(bytes, how): VmHWM since the last reset where Linux has it, else the process's peak."""
    status = _read("/proc/self/status")
    if status:
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024, "VmHWM"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux, bytes on macOS.
    return (rss if sys.platform == "darwin" else rss * 1024), "ru_maxrss"


def power_state() -> dict[str, Any]:
    """What can make numbers noisy or low: governor, turbo, battery (None where unreadable)."""
    turbo: bool | None = None
    no_turbo = _read("/sys/devices/system/cpu/intel_pstate/no_turbo")
    boost = _read("/sys/devices/system/cpu/cpufreq/boost")
    if no_turbo is not None:
        turbo = no_turbo == "0"
    elif boost is not None:
        turbo = boost == "1"
    on_battery: bool | None = None
    try:
        battery = psutil.sensors_battery()
    except (AttributeError, NotImplementedError, OSError):
        battery = None
    if battery is not None:
        on_battery = not battery.power_plugged
    return {
        "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "turbo": turbo,
        "on_battery": on_battery,
    }


def physical_cores() -> int:
    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


def cpu_load_percent(interval_s: float = 0.0) -> float:
    return psutil.cpu_percent(interval=interval_s)


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0
