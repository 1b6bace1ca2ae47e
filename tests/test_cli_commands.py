"""The command base, `--version`, `bench doctor`'s servers and devices, and install hints."""
from __future__ import annotations

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import bench
from bench.cli import COMMANDS, build_parser, main
from bench.cli.base import Command
from bench.cli.hints import fit_install_hints, pip_command, source_checkout
from bench.doctor import probe_servers
from bench.results import ResultsError, RunWriter


def test_version_prints_the_package_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"bench {bench.__version__}"


def test_every_subcommand_is_a_command_whose_run_takes_the_parsed_arguments():
    parser = build_parser()
    names = {c.name for c in COMMANDS}
    assert {"run", "doctor", "compare", "report", "export"} <= names
    args = parser.parse_args(["run", "-m", "x.gguf", "-p", "1-4*2", "-o", "md"])
    assert args.models == ["x.gguf"] and args.prompt == ["1-4*2"] and args.output == "md"


def test_a_results_error_in_any_command_is_one_sentence_and_exit_2(capsys):
    class Broken(Command):
        name, help = "broken", "raises what a corrupt run folder raises"

        def run(self) -> int:
            raise ResultsError("runs/x is not a bench run folder (no manifest.json)")

    import argparse

    assert Broken()(argparse.Namespace(command="broken")) == 2
    err = capsys.readouterr().err
    assert "not a bench run folder" in err and "Traceback" not in err


@pytest.fixture
def corrupt_run(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "manifest.json").write_text("{not json")
    (folder / "trials.parquet").write_bytes(b"PAR1 garbage")
    return folder


@pytest.mark.parametrize("argv", [
    ["report", "{run}", "--out", "{tmp}/rep"],
    ["export", "{run}", "--format", "bencher", "--out", "{tmp}/b.json"],
    ["compare", "{run}", "{run}"],
    ["run", "configs/smoke.yaml", "--resume", "{run}"],
])
def test_a_corrupt_run_folder_never_tracebacks(argv, corrupt_run, tmp_path, capfd):
    argv = [a.format(run=corrupt_run, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert err.strip() and "Traceback" not in err and len(err.strip().splitlines()) <= 2


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the name http.server calls
        if self.path == "/health":
            body, code = json.dumps({"status": "ok"}).encode(), 200
        elif self.path == "/v1/models":
            body, code = json.dumps({"data": [{"id": "smol"}]}).encode(), 200
        else:
            body, code = b"no", 404
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def local_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_doctor_says_which_local_servers_answer(local_server):
    closed = _closed_port()
    found = probe_servers((("llama-server", local_server, "/health"),
                           ("LM Studio", local_server, "/v1/models"),
                           ("Ollama", local_server, "/api/version"),
                           ("vLLM", closed, "/health")), timeout_s=2.0)
    by = {p.name: p for p in found}
    assert by["llama-server"].answers and "status ok" in by["llama-server"].detail
    assert by["LM Studio"].answers and "1 model(s): smol" in by["LM Studio"].detail
    assert not by["Ollama"].answers and "HTTP 404" in by["Ollama"].detail
    assert not by["vLLM"].answers and by["vLLM"].detail == "nothing listening"


def test_doctor_prints_servers_and_the_engines_devices(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "local servers" in out and "127.0.0.1:11434" in out and "127.0.0.1:8080" in out
    # The engine's own backend registry: the CPU device is always there.
    assert "device CPU" in out and "compute backends: CPU" in out


def test_install_hints_name_this_interpreter_never_a_bare_pip(monkeypatch, tmp_path):
    text = fit_install_hints("install it with: pip install no-such-model-pkg")
    assert text.endswith(f"{pip_command()} install no-such-model-pkg")
    assert text.split(": ", 1)[1].split()[0] != "pip"
    python, rest = pip_command().split(" ", 1)
    assert Path(python).resolve() == Path(sys.executable).resolve() and rest == "-m pip"
    # bench's own extras come from the checkout it is installed from, not from PyPI.
    extra = fit_install_hints("plots need matplotlib; install it with pip install 'bench[report]'")
    checkout = source_checkout()
    assert checkout is not None and "[report]" in extra and " -e " in extra
    assert "'bench[report]'" not in extra
    # Already fitted hints stay as they are.
    assert fit_install_hints(text) == text


@pytest.mark.parametrize("cwd", ["parent", "elsewhere"])
def test_fitting_a_hint_twice_changes_nothing_for_a_checkout_named_bench(monkeypatch, tmp_path,
                                                                        cwd):
    """The CLI fits what it prints and stderr fits again: a checkout folder called `bench` (the
    repository's own name) must not turn into `-e -e 'bench[report]'`."""
    from bench.cli import hints

    checkout = tmp_path / "bench"
    checkout.mkdir()
    monkeypatch.setattr(hints, "source_checkout", lambda: checkout)
    monkeypatch.chdir(tmp_path if cwd == "parent" else tmp_path.parent)
    once = fit_install_hints("install it with pip install 'bench[report]' or pip install x")
    assert once.count(" -e ") == 1 and "[report]" in once and "-m pip install x" in once
    assert fit_install_hints(once) == once


def test_every_command_error_passes_through_the_fitted_install_hint(monkeypatch, tmp_path,
                                                                     capsys):
    """A domain module prints a plain hint straight to stderr (here: report without its plots
    module, as when matplotlib is missing); what the user sees names this installation."""
    from bench.cli import main

    run = tmp_path / "run"
    RunWriter(run, {"run_id": "r", "cells": []}).flush()
    # matplotlib missing: importing bench.report.plots (afresh, even when an earlier test
    # imported it) raises ImportError.
    import bench.report

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "bench.report.plots", raising=False)
    monkeypatch.delattr(bench.report, "plots", raising=False)
    assert main(["report", str(run), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert "plots need matplotlib" in err
    assert f"{pip_command()} install -e" in err and "'bench[report]'" not in err


def test_install_hints_under_pipx_use_pipx(monkeypatch):
    from bench.cli import hints

    hints._pipx_package.cache_clear()
    monkeypatch.setattr(sys, "prefix", "/home/u/.local/share/pipx/venvs/bench")
    try:
        assert fit_install_hints("run: pip install x") == "run: pipx runpip bench install x"
    finally:
        monkeypatch.undo()
        hints._pipx_package.cache_clear()
