"""The one-line path on the real small model: a Markdown table on stdout, the other formats,
and whole lines at 80 columns in a real pseudo-terminal."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import select
import subprocess
import sys
import time

import pytest
from rich.cells import cell_len
from support import REPO

from bench.cli import main
from bench.cli.summary import format_stat, render, summarise
from bench.config import load_config
from bench.results import load_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def md_run(smol_path, tmp_path_factory):
    """`bench run -m <smollm2> -p 64 -n 32 -o md`, as the README's one line."""
    out = tmp_path_factory.mktemp("results")
    stdout, stderr = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with _redirect(stdout, stderr):
        code = main(["run", "-m", str(smol_path), "-p", "64", "-n", "32", "-o", "md",
                     "--out", str(out)])
    wall = time.perf_counter() - t0
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert len(folders) == 1
    return code, stdout.getvalue(), stderr.getvalue(), folders[0], wall


class _redirect:
    def __init__(self, out: io.StringIO, err: io.StringIO):
        self.out, self.err = out, err

    def __enter__(self) -> None:
        self.saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self.out, self.err

    def __exit__(self, *exc: object) -> None:
        sys.stdout, sys.stderr = self.saved


def test_one_line_prints_a_markdown_table_and_only_that_on_stdout(md_run):
    code, out, err, _, wall = md_run
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("| model | size | params | backend |")
    assert "decode t/s" in lines[0] and "TTFT ms" in lines[0]
    assert re.fullmatch(r"\|( ---:? \|)+", lines[1].replace("---:", "---:"))
    row = [c.strip() for c in lines[2].strip("|").split("|")]
    assert row[0] == "SmolLM2-135M-Instruct Q4_1"
    assert row[1].endswith("MiB") and row[2].endswith(" M")  # size and parameters, from GGUF
    assert "pp64 tg32" in row and re.fullmatch(r"\d+\.\d ± \d+\.\d", row[8])
    assert any("95% confidence interval" in line for line in lines)
    build = [line for line in lines if line.startswith("build: ")]
    assert build and "bench " in build[0] and "llama-cpp-python" in build[0]
    assert "backend CPU" in build[0] and "CPU: " in build[0]
    # People read stderr: the progress, the folder; none of it is on stdout.
    assert "results:" in err and "results:" not in out
    print(f"one-line run wall time: {wall:.1f} s")


def test_the_run_folder_keeps_the_equivalent_yaml(md_run):
    folder = md_run[3]
    loaded = load_config(folder / "config.yaml")
    run = load_run(folder)
    assert loaded.hash == run.manifest["config_hash"]
    assert run.manifest["models"]["SmolLM2-135M-Instruct"]["quant_type"] == "Q4_1"


def test_csv_json_and_jsonl_say_the_same_as_the_markdown(md_run):
    _, out, _, folder, _ = md_run
    run = load_run(folder)
    cells = summarise(run.trials, run.manifest)
    doc = json.loads(render("json", run.trials, run.manifest))
    lines = [json.loads(x) for x in render("jsonl", run.trials, run.manifest).splitlines()]
    rows = list(csv.DictReader(io.StringIO(render("csv", run.trials, run.manifest))))
    assert [c["cell_id"] for c in doc["cells"]] == [r["cell_id"] for r in lines] == [
        r["cell_id"] for r in rows] == [c.cell_id for c in cells]
    mean = doc["cells"][0]["stats"]["decode_tps"]["mean"]
    assert lines[0]["decode_tps_mean"] == mean and float(rows[0]["decode_tps_mean"]) == mean
    assert lines[0]["build_bench"] == doc["build"]["bench"]
    assert format_stat("decode_tps", cells[0].stats["decode_tps"]) in out
    assert lines[0]["ttft_ms_mean"] == pytest.approx(
        1000 * sum(r["ttft_s"] for r in run.trials if not r["warmup"]) / 3)


def test_a_dry_run_estimates_from_the_rates_an_earlier_run_measured(md_run, smol_path, capsys):
    folder = md_run[3]
    assert main(["run", "-m", str(smol_path), "-p", "64,512", "-n", "32", "--dry-run",
                 "--out", str(folder.parent)]) == 0
    out = capsys.readouterr().out
    assert f"rates measured in {folder.name}" in out and "assumed" not in out


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def test_at_80_columns_progress_and_end_table_lines_are_whole(smol_path, tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "COLUMNS": "80", "LINES": "24", "TERM": "xterm-256color",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                         if p)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "-m", str(smol_path), "-p", "16", "-n", "4",
         "-t", "1,2", "-r", "2", "--out", str(tmp_path)],
        stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO, close_fds=True,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    # The terminal turns each \n into \r\n; a bare \r is a redraw of the same line.
    text = _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r\n", "\n")
    assert proc.wait(30) == 0, text
    # Each \r-separated piece is what one line of the screen showed at some moment.
    screens = [piece for line in text.split("\n") for piece in line.split("\r")]
    too_wide = [s for s in screens if cell_len(s) > 80]
    assert not too_wide, too_wide
    progress = [s for s in screens if " ETA " in s]
    assert progress, text
    assert all(re.search(r"ETA ~?\d+:\d\d$", s.rstrip()) for s in progress), progress
    assert any("warm-up 1/1" in s for s in progress) and any("trial 2/2" in s for s in progress)
    assert any(re.search(r" \d/4 w\d/2 ", s) for s in progress)  # measured apart from warm-up
    lines = [line.split("\r")[-1] for line in text.split("\n")]  # what each line ended as
    header = next(i for i, s in enumerate(lines)
                  if "decode t/s" in s and lines[i + 1].startswith("─"))
    rows = lines[header + 2: header + 4]
    assert len(rows) == 2 and all(row.strip() for row in rows)
    for row in rows:
        # Numbers whole: every mean ± CI in the row is a complete pair.
        assert len(re.findall(r"\d+\.\d+ ± \d+\.\d+", row)) >= 2, row
    assert any("95% CI" in s for s in lines[:header])
    assert "TTFT ms" in lines[header] or any("TTFT in ms" in s for s in lines[:header])
