"""`bench doctor`: what can be measured on this machine, and why not, without running a sweep."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.machine import is_root, machine_facts
from bench.meters import probe_all
from bench.meters.settings import EnergySettings


def _gib(n: int | None) -> str:
    return f"{n / 2**30:.1f} GiB" if n else "unknown"


def llama_build() -> dict[str, Any]:
    """Which compute backends this llama-cpp-python build has (CPU, CUDA, Metal, ...)."""
    from bench.backends.base import BackendError
    from bench.backends.llama_cpp import LlamaCppBackend

    try:
        sw = LlamaCppBackend.software()
    except BackendError as e:
        return {"error": str(e)}
    info = sw.get("llama_cpp_system_info") or ""
    backends = ["CPU"] + [b for b in ("CUDA", "Metal", "Vulkan", "ROCm", "SYCL") if b in info]
    return {**sw, "backends": backends}


# Facts too raw for the overview (they stay in the manifest).
_NOT_SHOWN = {"domains", "first_reading_j", "snapshot"}


def doctor(console: Console, settings: EnergySettings | None = None) -> int:
    settings = settings or EnergySettings()
    m = machine_facts()
    console.print("[bold]machine[/]")
    console.print(f"  CPU: {m['cpu_model']} ({m['cpu_cores_physical']} physical / "
                  f"{m['cpu_cores_logical']} logical cores), RAM {_gib(m['ram_bytes'])}")
    console.print(f"  OS: {m['os']}; running as {'root' if is_root() else 'a normal user'}"
                  + ("; virtual machine" if m.get("virtualized") else ""))
    if m.get("cpu_governor"):
        console.print(f"  CPU frequency governor: {m['cpu_governor']}")

    console.print("[bold]energy meters[/] (energy.meters: auto uses every available one)")
    table = Table(show_header=True)
    for col in ("meter", "available", "why not / what it reads", "fix"):
        table.add_column(col, overflow="fold")
    statuses = probe_all(settings)
    for s in statuses:
        shown = {k: v for k, v in (s.facts or {}).items() if k not in _NOT_SHOWN}
        what = s.reason if not s.available else (
            ", ".join(f"{k}={v}" for k, v in shown.items()) or "readable"
        )
        table.add_row(s.name, "yes" if s.available else "no", escape(what), escape(s.fix or ""))
    console.print(table)
    hardware = [s for s in statuses if s.available and s.name != "estimate"]
    if not hardware:
        console.print(
            "[yellow]No energy meter can be read here[/]: runs report energy as an ESTIMATE "
            "(CPU time × watts per core), marked method=estimate everywhere."
        )

    console.print("[bold]llama.cpp build[/]")
    b = llama_build()
    if "error" in b:
        console.print(f"  {escape(b['error'])}")
    else:
        console.print(f"  llama-cpp-python {b.get('llama_cpp_python')}; compute backends: "
                      f"{', '.join(b['backends'])}; GPU offload: "
                      f"{'yes' if b.get('llama_cpp_gpu_offload') else 'no'}")
        console.print(f"  system info: {escape(str(b.get('llama_cpp_system_info')))}")
        if not b.get("llama_cpp_gpu_offload"):
            console.print("  (for CUDA rebuild with CMAKE_ARGS='-DGGML_CUDA=on' pip install "
                          "--force-reinstall --no-cache-dir llama-cpp-python; see README)")
    return 0
