"""`bench doctor`: prints what `bench.doctor` found on this machine."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.cli.base import EXIT_OK, Command, fail
from bench.cli.base import console as make_console
from bench.cli.hints import fit_install_hints, pip_command

if TYPE_CHECKING:  # the probes import the meters: only when doctor runs
    from bench.doctor import DoctorReport


def _gib(n: int | None) -> str:
    return f"{n / 2**30:.1f} GiB" if n else "unknown"


def print_doctor(console: Console, report: DoctorReport) -> None:
    m = report.machine
    console.print("[bold]machine[/]")
    console.print(f"  CPU: {m['cpu_model']} ({m['cpu_cores_physical']} physical / "
                  f"{m['cpu_cores_logical']} logical cores), RAM {_gib(m['ram_bytes'])}")
    console.print(f"  OS: {m['os']}; running as {'root' if report.root else 'a normal user'}"
                  + ("; virtual machine" if m.get("virtualized") else ""))
    if m.get("cpu_governor"):
        console.print(f"  CPU frequency governor: {m['cpu_governor']}")

    console.print("[bold]energy meters[/] (energy.meters: auto uses every available one)")
    table = Table(show_header=True)
    for col in ("meter", "available", "why not / what it reads", "fix"):
        table.add_column(col, overflow="fold")
    for row in report.meters:
        table.add_row(row.name, "yes" if row.available else "no", escape(row.what),
                      escape(fit_install_hints(row.fix)))
    console.print(table)
    if not report.hardware_meter:
        console.print(
            "[yellow]No energy meter can be read here[/]: runs report energy as an ESTIMATE "
            "(CPU time × watts per core), marked method=estimate everywhere."
        )

    console.print("[bold]llama.cpp build[/]")
    b = report.llama
    if "error" in b:
        console.print(f"  {escape(fit_install_hints(b['error']))}")
    else:
        console.print(f"  llama-cpp-python {b.get('llama_cpp_python')}; compute backends: "
                      f"{', '.join(b['backends'])}; GPU offload: "
                      f"{'yes' if b.get('llama_cpp_gpu_offload') else 'no'}")
        for name, desc in report.devices:
            console.print(f"  device {escape(name)}: {escape(desc)}")
        console.print(f"  system info: {escape(str(b.get('llama_cpp_system_info')))}")
        if not b.get("llama_cpp_gpu_offload"):
            console.print(
                "  (for CUDA rebuild with CMAKE_ARGS='-DGGML_CUDA=on' "
                f"{escape(pip_command())} install --force-reinstall --no-cache-dir "
                "llama-cpp-python; see README)"
            )

    console.print("[bold]local servers[/] (127.0.0.1, default ports)")
    for s in report.servers:
        mark = "[green]answers[/]" if s.answers else "[dim]no[/]"
        console.print(f"  {s.name}: {mark} {escape(s.url)}: {escape(s.detail)}")


class DoctorCommand(Command):
    name = "doctor"
    help = "what can be measured here, and why not"

    @classmethod
    def add_arguments(cls, d: argparse.ArgumentParser) -> None:
        d.add_argument("config", nargs="?", help="a config whose energy settings to use")

    def run(self, config: str | None = None) -> int:
        from bench.config import ConfigError, load_config
        from bench.doctor import doctor

        settings = None
        if config:
            try:
                settings = load_config(config).config.energy
            except ConfigError as e:
                return fail(str(e))
        print_doctor(make_console(), doctor(settings))
        return EXIT_OK
