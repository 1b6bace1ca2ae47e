"""What `--dry-run` accepts, the run can run: one preflight for both, before any measuring."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fakes.powercap import FakePowercap, desktop_tree
from support import REPO, smol_config

from bench.cli import main
from bench.config import loads_config
from bench.preflight import plan


def write(tmp_path: Path, body: str, name: str = "c") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(body)
    return p


def local_model_config(path: Path | str, energy: str = "{meters: none, idle_s: 0}") -> str:
    return (
        f"name: pre\nmodels:\n  - {{id: m, path: '{path}'}}\n"
        "backends: [{name: llama-cpp, n_threads: 1, n_ctx: 256}]\n"
        "workload: {prompt_tokens: 16, gen_tokens: 4}\n"
        f"trials: {{warmup: 0, repeat: 1}}\nenergy: {energy}\n"
    )


def gguf(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.Q8_0.gguf"
    p.write_bytes(b"GGUF" + b"\0" * 60)
    return p


# -- local model files ----------------------------------------------------------------------


def bad_model(kind: str, d: Path) -> Path:
    if kind == "missing":
        return d / "absent.gguf"
    if kind == "folder":
        return d
    if kind == "not-gguf":
        (d / "page.gguf").write_bytes(b"<html>not a model</html>")
        return d / "page.gguf"
    return Path("/dev/null")  # a character device


@pytest.mark.parametrize("mode", [["--dry-run"], []], ids=["dry-run", "run"])
@pytest.mark.parametrize(
    "kind, reason",
    [
        ("missing", "does not exist"),
        ("folder", "is a folder"),
        ("not-gguf", "is not a GGUF file"),
        ("device", "not a regular file"),
    ],
)
def test_a_bad_local_model_file_exits_2_before_any_measuring(
    tmp_path, capsys, mode, kind, reason
):
    model = bad_model(kind, tmp_path)
    out = tmp_path / "results"
    cfg = write(tmp_path, local_model_config(model, "{meters: [estimate], idle_s: 30}"))
    t0 = time.monotonic()
    assert main(["run", str(cfg), "--out", str(out), *mode]) == 2
    # Refused before the 30 s idle baseline, and before a run folder exists.
    assert time.monotonic() - t0 < 20
    assert not out.exists()
    err = capsys.readouterr().err
    assert reason in err and "models[m]" in err and "Traceback" not in err


def test_a_fifo_given_as_the_model_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    cfg = write(tmp_path, local_model_config(fifo))
    # A subprocess, so that a check which opens the FIFO (and blocks) fails by its timeout.
    proc = subprocess.run(  # noqa: PLW1510 - the exit code is what is tested
        [sys.executable, "-m", "bench", "run", str(cfg), "--dry-run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "named pipe (FIFO)" in proc.stderr and "Traceback" not in proc.stderr


def test_a_good_local_model_passes_the_same_preflight(tmp_path, capsys):
    cfg = write(tmp_path, local_model_config(gguf(tmp_path)))
    assert main(["run", str(cfg), "--dry-run"]) == 0
    assert "local" in capsys.readouterr().out


# -- package models: located through metadata, never imported -----------------------------------


def test_a_package_model_never_runs_a_same_named_module_in_the_working_folder(tmp_path):
    marker = tmp_path / "ran.txt"
    (tmp_path / "evilpkg.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    cfg = write(
        tmp_path,
        "name: evil\nmodels:\n  - {id: e, package: evilpkg, file: model.gguf}\n"
        "energy: {meters: none}\n",
    )
    # `python -m` puts the working folder first on sys.path, as a user running bench there has.
    proc = subprocess.run(  # noqa: PLW1510 - the exit code is what is tested
        [sys.executable, "-m", "bench", "run", str(cfg), "--dry-run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert not marker.exists(), "the dry run executed evilpkg.py from the working folder"
    assert proc.returncode == 0, proc.stderr
    assert "'evilpkg', which is not installed" in proc.stdout


# -- explicitly named energy meters ----------------------------------------------------------


@pytest.mark.parametrize("mode", [["--dry-run"], []], ids=["dry-run", "run"])
def test_an_explicit_meter_that_cannot_be_read_stops_the_run_before_the_sweep(
    tmp_path, capsys, mode
):
    energy = f"{{meters: [rapl], idle_s: 30, rapl: {{root: '{tmp_path / 'no-powercap'}'}}}}"
    cfg = write(tmp_path, local_model_config(gguf(tmp_path), energy))
    out = tmp_path / "results"
    t0 = time.monotonic()
    assert main(["run", str(cfg), "--out", str(out), *mode]) == 2
    assert time.monotonic() - t0 < 20 and not out.exists()
    err = capsys.readouterr().err
    assert "energy.meters names 'rapl', which cannot be read here" in err
    assert "Fix:" in err and "energy.meters: auto" in err and "Traceback" not in err


def test_auto_stays_lenient_when_no_hardware_meter_reads(tmp_path, capsys):
    energy = f"{{meters: auto, rapl: {{root: '{tmp_path / 'no-powercap'}'}}}}"
    cfg = write(tmp_path, local_model_config(gguf(tmp_path), energy))
    assert main(["run", str(cfg), "--dry-run"]) == 0


def test_an_explicit_meter_that_reads_passes(tmp_path):
    desktop_tree(tmp_path / "powercap")
    energy = f"{{meters: [rapl], rapl: {{root: '{tmp_path / 'powercap'}'}}}}"
    p = plan(loads_config(local_model_config(gguf(tmp_path), energy)))
    assert p.errors == [] and [(s.name, s.available) for s in p.meters] == [("rapl", True)]


def test_an_explicit_rapl_whose_counter_wraps_too_fast_is_refused_with_the_fix(tmp_path):
    FakePowercap(tmp_path / "powercap").add_zone(
        "intel-rapl:0", "package-0", 10.0, max_range_uj=1_000_000
    )
    energy = f"{{meters: [rapl], rapl: {{root: '{tmp_path / 'powercap'}'}}}}"
    p = plan(loads_config(local_model_config(gguf(tmp_path), energy)))
    assert len(p.errors) == 1 and "energy.rapl.max_power_w" in p.errors[0]


# -- expansion can be interrupted ----------------------------------------------------------------

BIG = """\
name: big
models: [{{id: m, path: '{model}'}}]
backends:
  - name: llama-cpp
    n_threads: [{threads}]
    n_ctx: [4096, 8192, 16384, 32768, 65536]
    n_batch: [{batch}]
workload: {{prompt_tokens: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512], gen_tokens: 1}}
execution: {{max_cells: 100000}}
energy: {{meters: none}}
"""


# A signal that lands in a gc callback (hypothesis installs one) is reported there as ignored:
# the case the remembered signal exists for.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_expansion_stops_it_with_exit_130(tmp_path, capsys, signum):
    threads = ", ".join(str(i) for i in range(1, 21))
    batch = ", ".join(str(i) for i in range(1, 101))
    cfg = write(tmp_path, BIG.format(model=gguf(tmp_path), threads=threads, batch=batch))
    # 100,000 cells take seconds to build: the signal lands while they are being built.
    fired: list[float] = []
    old = signal.signal(signal.SIGTERM, lambda *a: fired.append(-1.0))  # never kill pytest

    def send() -> None:
        fired.append(time.monotonic())
        os.kill(os.getpid(), signum)

    timer = threading.Timer(0.5, send)
    try:
        t0 = time.monotonic()
        timer.start()
        rc = main(["run", str(cfg), "--dry-run"])
        took = time.monotonic() - t0
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, old)
    assert -1.0 not in fired, "SIGTERM reached the default handler, not the expansion"
    assert rc == 130, f"exit {rc} after {took:.1f} s"
    assert took < 5, f"stopped {took:.1f} s after the start"
    assert "interrupted" in capsys.readouterr().err


# -- include entries that once crashed the writer ------------------------------------------------


@pytest.mark.slow
def test_an_include_value_written_as_text_is_converted_and_the_run_finishes(tmp_path, capsys):
    body = smol_config(
        "inc", n_ctx="256", workload="{prompt_tokens: 16, gen_tokens: 4}",
        trials="{warmup: 0, repeat: 1}", energy="{meters: none, idle_s: 0}",
    ) + "include: [{n_threads: '1'}]\n"
    cfg = write(tmp_path, body)
    out = tmp_path / "results"
    assert main(["run", str(cfg), "--out", str(out)]) == 0, capsys.readouterr()
    from bench.results import load_run

    run = load_run(next(out.iterdir()))
    assert sorted(c["params"]["n_threads"] for c in run.manifest["cells"]) == [1, 2]
    assert {r["status"] for r in run.trials} == {"ok"}


def test_a_missing_quantize_source_or_imatrix_stops_the_dry_run(tmp_path, capsys):
    src = gguf(tmp_path)
    body = (
        "name: q\nmodels:\n  - {id: q, quantize_from: '%s', quants: [Q4_0], imatrix: '%s'}\n"
        "energy: {meters: none}\n"
    )
    legacy = tmp_path / "imatrix.dat"
    legacy.write_bytes(b"\x01\x00\x00\x00legacy")  # the old format has no GGUF magic
    assert main(["run", str(write(tmp_path, body % (src, legacy))), "--dry-run"]) == 0
    assert main(["run", str(write(tmp_path, body % (tmp_path / "no.gguf", legacy))),
                 "--dry-run"]) == 2
    assert "quantize_from source" in capsys.readouterr().err
    assert main(["run", str(write(tmp_path, body % (src, tmp_path / "no.dat"))),
                 "--dry-run"]) == 2
    assert "models[q].imatrix: imatrix file" in capsys.readouterr().err
