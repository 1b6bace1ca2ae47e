"""What can be measured on this machine, and why not, as data (`bench doctor` prints it)."""
from __future__ import annotations

import ctypes
import json
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.machine import is_root, machine_facts
from bench.meters import probe_all
from bench.meters.settings import EnergySettings


def llama_build() -> dict[str, Any]:
    """Which compute backends this llama-cpp-python build has (CPU, CUDA, Metal, ...)."""
    from bench.backends.base import BackendError
    from bench.backends.llama_cpp import LlamaCppBackend

    try:
        sw = LlamaCppBackend.software()
    except BackendError as e:
        return {"error": str(e)}
    if sw.get("error"):
        return {"error": sw["error"]}
    info = sw.get("llama_cpp_system_info") or ""
    backends = ["CPU"] + [b for b in ("CUDA", "Metal", "Vulkan", "ROCm", "SYCL") if b in info]
    return {**sw, "backends": backends}


def _ggml_library() -> Any:
    """ggml's shared library as shipped inside llama-cpp-python (None where it is not found)."""
    import llama_cpp

    folder = Path(llama_cpp.__file__).parent / "lib"
    names = {"darwin": ["libggml.dylib"], "win32": ["ggml.dll"]}.get(sys.platform, ["libggml.so"])
    for name in names:
        if (folder / name).is_file():
            return ctypes.CDLL(str(folder / name))
    return None


def ggml_devices() -> list[tuple[str, str]]:
    """(device, description) from ggml's backend registry, e.g. ("CUDA0", "NVIDIA H100"), through
    ggml's public C API (ggml-backend.h); [] where the library or the calls are missing."""
    try:
        import llama_cpp

        lib = _ggml_library()
        if lib is None:
            return []
        llama_cpp.llama_backend_init()  # loads the backends into the registry
        lib.ggml_backend_dev_count.restype = ctypes.c_size_t
        lib.ggml_backend_dev_get.restype = ctypes.c_void_p
        lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        for fn in (lib.ggml_backend_dev_name, lib.ggml_backend_dev_description):
            fn.restype = ctypes.c_char_p
            fn.argtypes = [ctypes.c_void_p]
        out = []
        for i in range(int(lib.ggml_backend_dev_count())):
            dev = lib.ggml_backend_dev_get(i)
            out.append((lib.ggml_backend_dev_name(dev).decode("utf-8", "replace"),
                        lib.ggml_backend_dev_description(dev).decode("utf-8", "replace")))
        return out
    except (ImportError, OSError, AttributeError):
        return []


# Servers people run next to bench, on their documented default ports, with the endpoint each
# documents for "am I up" (or the model list where there is no health endpoint).
SERVERS = (
    ("llama-server", 8080, "/health"),
    ("Ollama", 11434, "/api/version"),
    ("LM Studio", 1234, "/v1/models"),
    ("vLLM", 8000, "/health"),
)


@dataclass
class ServerProbe:
    name: str
    url: str
    answers: bool  # a 2xx answer from the documented endpoint
    detail: str  # what answered, or why nothing did


def _probe(name: str, url: str, timeout_s: float) -> ServerProbe:
    # Never through a proxy: these are local servers.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, method="GET"), timeout=timeout_s) as r:
            body = r.read(65536)
            status = r.status
    except urllib.error.HTTPError as e:
        return ServerProbe(name, url, False,
                           f"HTTP {e.code} there (still loading, or another program)")
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, ConnectionRefusedError):
            return ServerProbe(name, url, False, "nothing listening")
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            return ServerProbe(name, url, False, f"no answer within {timeout_s:g} s")
        return ServerProbe(name, url, False, f"no answer ({reason})")
    detail = f"HTTP {status}"
    try:
        doc = json.loads(body or b"null")
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        if isinstance(doc.get("data"), list):  # OpenAI-style model list
            ids = [str(m.get("id")) for m in doc["data"] if isinstance(m, dict)]
            detail += f", {len(ids)} model(s)" + (f": {', '.join(ids[:3])}" if ids else "")
        elif doc.get("version"):
            detail += f", version {doc['version']}"
        elif doc.get("status"):
            detail += f", status {doc['status']}"
    return ServerProbe(name, url, True, detail)


def probe_servers(
    servers: tuple[tuple[str, int, str], ...] = SERVERS, host: str = "127.0.0.1",
    timeout_s: float = 0.5,
) -> list[ServerProbe]:
    """Which local servers answer on their default ports (in parallel, one short GET each)."""
    urls = [(name, f"http://{host}:{port}{path}") for name, port, path in servers]
    with ThreadPoolExecutor(max_workers=max(1, len(urls))) as pool:
        return list(pool.map(lambda nu: _probe(nu[0], nu[1], timeout_s), urls))


# Facts too raw for the overview (they stay in the manifest).
_NOT_SHOWN = {"domains", "first_reading_j", "snapshot"}


@dataclass
class MeterRow:
    name: str
    available: bool
    what: str  # why not, or what it reads
    fix: str


@dataclass
class DoctorReport:
    machine: dict[str, Any]
    root: bool
    meters: list[MeterRow] = field(default_factory=list)
    llama: dict[str, Any] = field(default_factory=dict)
    devices: list[tuple[str, str]] = field(default_factory=list)
    servers: list[ServerProbe] = field(default_factory=list)

    @property
    def hardware_meter(self) -> bool:
        return any(m.available and m.name != "estimate" for m in self.meters)


def doctor(
    settings: EnergySettings | None = None,
    servers: tuple[tuple[str, int, str], ...] = SERVERS,
) -> DoctorReport:
    """Probe the machine, every energy meter, the engine build and the local servers; print
    nothing."""
    settings = settings or EnergySettings()
    report = DoctorReport(machine=machine_facts(), root=is_root())
    for s in probe_all(settings):
        shown = {k: v for k, v in (s.facts or {}).items() if k not in _NOT_SHOWN}
        what = s.reason if not s.available else (
            ", ".join(f"{k}={v}" for k, v in shown.items()) or "readable"
        )
        report.meters.append(MeterRow(s.name, s.available, str(what or ""), s.fix or ""))
    report.llama = llama_build()
    if "error" not in report.llama:
        report.devices = ggml_devices()
        if report.devices:
            # The registry is the engine's own word on what it was built with.
            names = [d for d, _ in report.devices]
            kinds = ["CPU" if n.startswith("CPU") else n.rstrip("0123456789") for n in names]
            report.llama["backends"] = list(dict.fromkeys(kinds))
    report.servers = probe_servers(servers)
    return report
