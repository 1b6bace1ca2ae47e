"""The runner's logic without llama.cpp: a fake engine registered through the backend registry
drives ordering, resume, failure, isolation, timeouts and fault injection in seconds."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.backends import base
from bench.backends.base import register_backend
from bench.config import loads_config
from bench.results import ResultsError, load_run
from bench.run.folder import FolderLock
from bench.run.runner import Runner
from bench.sweep import expand

FAKE = "fakes.backend:FakeBackend"


@pytest.fixture(autouse=True)
def fake_engine(monkeypatch):
    monkeypatch.setitem(base.REGISTRY, "llama-cpp", base.REGISTRY["llama-cpp"])
    register_backend("llama-cpp", FAKE)
    monkeypatch.delenv("BENCH_FAKE_PLAN", raising=False)


def model_file(tmp_path: Path) -> Path:
    p = tmp_path / "fake.Q4_0.gguf"
    p.write_bytes(b"GGUF" + b"\0" * 64)
    return p


CONFIG_TEXT = """
name: fake
models: [{{id: m, path: {model}}}]
backends: [{{name: llama-cpp, n_threads: 1, n_ctx: 64}}]
workload: {{prompt_tokens: 8, gen_tokens: {gen}}}
trials: {{warmup: 1, repeat: 2}}
energy: {{meters: none, idle_s: 0}}
execution: {{isolate: {isolate}{extra}}}
"""


def config(tmp_path: Path, gen: str = "[3, 4, 5]", isolate: bool = True, extra: str = ""):
    return loads_config(CONFIG_TEXT.format(model=model_file(tmp_path), gen=gen,
                                           isolate=str(isolate).lower(), extra=extra))


def run(tmp_path: Path, loaded, resume: Path | None = None):
    cells = expand(loaded.config)
    return Runner(loaded, cells, tmp_path / "out", resume=resume).run()


def plan(monkeypatch, **steps: dict) -> None:
    monkeypatch.setenv("BENCH_FAKE_PLAN", json.dumps({k.lstrip("g"): v for k, v in steps.items()}))


def pairs(trials):
    return [(r["cell_id"], r["trial"]) for r in trials]


@pytest.mark.parametrize("isolate", [True, False])
def test_cells_run_in_order_with_warmups_and_typed_settings(tmp_path, isolate):
    out = run(tmp_path, config(tmp_path, isolate=isolate))
    r = load_run(out.folder)
    assert [c["status"] for c in r.manifest["cells"]] == ["ok"] * 3
    assert pairs(r.trials) == [(f"c00{i}", j) for i in (1, 2, 3) for j in range(3)]
    assert [t["warmup"] for t in r.trials[:3]] == [True, False, False]
    assert {t["cell_status"] for t in r.trials} == {"ok"}
    assert len(r.table("tokens")) == 3 * (3 + 4 + 5)
    # The finished layout: one file per table, no part files left.
    assert not (out.folder / "parts").exists()
    assert {"manifest.json", "trials.parquet", "trials.csv", "tokens.parquet"} <= {
        p.name for p in out.folder.iterdir()}


def test_an_engine_abort_fails_only_its_cell_keeping_measured_trials_marked(
        tmp_path, monkeypatch):
    plan(monkeypatch, g4={"do": "abort", "after": 2})
    out = run(tmp_path, config(tmp_path))
    r = load_run(out.folder)
    status = {c["cell_id"]: c for c in r.manifest["cells"]}
    assert [status[c]["status"] for c in ("c001", "c002", "c003")] == ["ok", "error", "ok"]
    assert "SIGABRT" in status["c002"]["error"]
    mine = [t for t in r.trials if t["cell_id"] == "c002"]
    # Two trials were measured before the abort: kept, and marked as from a failed cell.
    assert [(t["trial"], t["status"]) for t in mine] == [(0, "ok"), (1, "ok"), (2, "error")]
    assert {t["cell_status"] for t in mine} == {"error"}
    assert [t["cell_status"] for t in out.trials] == [t["cell_status"] for t in r.trials]
    assert len(set(pairs(r.trials))) == len(r.trials)


def test_an_engine_abort_through_the_cli_fails_its_cell_and_the_next_cell_runs(
        tmp_path, monkeypatch, capsys):
    from bench.cli import main

    plan(monkeypatch, g4={"do": "abort"})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
name: fake
models: [{{id: m, path: {model_file(tmp_path)}}}]
backends: [{{name: llama-cpp, n_threads: 1, n_ctx: 64}}]
workload: {{prompt_tokens: 8, gen_tokens: [3, 4, 5, 6]}}
trials: {{warmup: 0, repeat: 2}}
energy: {{meters: none, idle_s: 0}}
""")
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 1
    (folder,) = (tmp_path / "o").iterdir()
    status = {c["cell_id"]: (c["status"], c["error"]) for c in load_run(folder).manifest["cells"]}
    assert status["c001"][0] == status["c003"][0] == status["c004"][0] == "ok"
    assert status["c002"][0] == "error"
    assert "SIGABRT" in status["c002"][1] and "engine process died" in status["c002"][1]
    assert "1 of 4 cells failed" in capsys.readouterr().out


def test_a_backend_error_and_a_bug_each_fail_their_cell_and_the_sweep_goes_on(
        tmp_path, monkeypatch):
    plan(monkeypatch, g3={"do": "raise"}, g5={"do": "crash"})
    out = run(tmp_path, config(tmp_path))
    r = load_run(out.folder)
    cells = {c["cell_id"]: c for c in r.manifest["cells"]}
    assert cells["c001"]["status"] == "error" and "as planned" in cells["c001"]["error"]
    assert cells["c002"]["status"] == "ok"
    assert cells["c003"]["status"] == "error" and "RuntimeError" in cells["c003"]["error"]
    assert out.cells_failed == 2 and out.cells_ok == 1


def test_a_secret_read_in_the_worker_child_never_reaches_the_run_folder(tmp_path, monkeypatch):
    secret = "sk-child-" + "7c1d" * 5
    monkeypatch.setenv("BENCH_FAKE_KEY", secret)
    plan(monkeypatch, g4={"do": "raise", "message": f"server echoed Bearer-less key {secret}"})
    out = run(tmp_path, config(tmp_path))
    r = load_run(out.folder)
    cells = {c["cell_id"]: c for c in r.manifest["cells"]}
    assert cells["c002"]["error"] == "server echoed Bearer-less key ***"
    on_disk = b"".join(p.read_bytes() for p in out.folder.rglob("*") if p.is_file())
    assert secret.encode() not in on_disk


def test_a_hung_cell_is_stopped_at_its_timeout(tmp_path, monkeypatch):
    plan(monkeypatch, g4={"do": "hang"})
    t0 = time.monotonic()
    out = run(tmp_path, config(tmp_path, extra=", cell_timeout_s: 3"))
    assert time.monotonic() - t0 < 60
    cells = {c["cell_id"]: c for c in load_run(out.folder).manifest["cells"]}
    assert cells["c002"]["status"] == "error" and "cell_timeout_s" in cells["c002"]["error"]
    assert cells["c003"]["status"] == "ok"


def test_resume_reruns_only_unfinished_cells_and_never_duplicates_a_trial(tmp_path, monkeypatch):
    loaded = config(tmp_path)
    plan(monkeypatch, g4={"do": "abort", "after": 1})
    first = run(tmp_path, loaded)
    monkeypatch.delenv("BENCH_FAKE_PLAN")
    again = run(tmp_path, loaded, resume=first.folder)
    assert again.cells_skipped == 1 + 1  # c001 and c003 finished ok the first time
    r = load_run(first.folder)
    assert [c["status"] for c in r.manifest["cells"]] == ["ok"] * 3
    assert len(set(pairs(r.trials))) == len(r.trials) == 9


def test_resume_with_a_config_that_no_longer_describes_the_run_refuses(tmp_path):
    first = run(tmp_path, config(tmp_path))
    before = load_run(first.folder).trials
    changed = config(tmp_path, gen="[3, 4]")
    with pytest.raises(ResultsError, match="no longer describes.*cells differ"):
        run(tmp_path, changed, resume=first.folder)
    assert load_run(first.folder).trials == before  # not one measured row dropped


def test_resume_on_another_machine_refuses_and_keeps_every_row(tmp_path, monkeypatch):
    from bench.run import runner

    loaded = config(tmp_path)
    plan(monkeypatch, g4={"do": "abort", "after": 1})
    first = run(tmp_path, loaded)
    monkeypatch.delenv("BENCH_FAKE_PLAN")
    before = load_run(first.folder).trials
    other = {**runner.machine_facts(), "hostname": "elsewhere", "id": "0123456789abcdef"}
    monkeypatch.setattr(runner, "machine_facts", lambda: other)
    with pytest.raises(ResultsError, match="measured on .* not on this machine"):
        run(tmp_path, loaded, resume=first.folder)
    assert load_run(first.folder).trials == before  # two machines never share a cell key


def test_resume_through_the_cli_says_what_differs_and_exits_2(tmp_path, capsys):
    from bench.cli import main

    first = run(tmp_path, config(tmp_path))
    cfg = tmp_path / "other.yaml"
    cfg.write_text(f"""
name: fake
models: [{{id: m, path: {model_file(tmp_path)}}}]
backends: [{{name: llama-cpp, n_threads: 1, n_ctx: 64}}]
workload: {{prompt_tokens: 8, gen_tokens: [3, 4, 5]}}
trials: {{warmup: 1, repeat: 3}}
energy: {{meters: none, idle_s: 0}}
""")
    assert main(["run", str(cfg), "--resume", str(first.folder)]) == 2
    err = capsys.readouterr().err
    assert "trials" in err and "Traceback" not in err


def test_resume_of_a_folder_with_a_corrupt_side_table_exits_2_before_measuring(tmp_path, capsys):
    from bench.cli import main

    first = run(tmp_path, config(tmp_path))
    tokens = first.folder / "tokens.parquet"
    tokens.write_bytes(tokens.read_bytes()[:100])
    cfg = tmp_path / "same.yaml"
    cfg.write_text(CONFIG_TEXT.format(model=model_file(tmp_path), gen="[3, 4, 5]",
                                      isolate="true", extra=""))
    assert main(["run", str(cfg), "--resume", str(first.folder)]) == 2
    err = capsys.readouterr().err
    assert "tokens.parquet" in err and "Traceback" not in err


def test_a_second_writer_of_a_run_folder_exits_naming_the_holder(tmp_path, capsys):
    first = run(tmp_path, config(tmp_path))
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]);"
            "from bench.run.folder import FolderLock; from pathlib import Path;"
            "FolderLock(Path(sys.argv[2])).acquire(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(Path(__file__).resolve().parents[1]), str(first.folder)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        held = rf"being written by another bench \(pid {holder.pid} on host .*, started"
        with pytest.raises(ResultsError, match=held):
            FolderLock(first.folder).acquire()
        with pytest.raises(ResultsError, match="being written"):
            run(tmp_path, config(tmp_path), resume=first.folder)
        cfg = tmp_path / "same.yaml"
        cfg.write_text(CONFIG_TEXT.format(model=model_file(tmp_path), gen="[3, 4, 5]",
                                          isolate="true", extra=""))
        from bench.cli import main

        assert main(["run", str(cfg), "--resume", str(first.folder)]) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "Traceback" not in err
    finally:
        holder.kill()
        holder.wait()
    FolderLock(first.folder).acquire()  # free again once the holder is gone


def test_the_worker_exits_promptly_when_the_main_process_is_killed(tmp_path):
    script = tmp_path / "main.py"
    model = model_file(tmp_path)
    script.write_text(f"""
import json, os, sys
sys.path[:0] = [{str(Path(__file__).resolve().parents[1])!r}, {str(Path(__file__).parent)!r}]
os.environ["BENCH_FAKE_PLAN"] = json.dumps({{"3": {{"do": "hang"}}}})
from bench.backends.base import register_backend
from bench.config import loads_config
from bench.run.runner import Runner, Progress
from bench.sweep import expand
register_backend("llama-cpp", {FAKE!r})
loaded = loads_config('''
name: fake
models: [{{id: m, path: {model}}}]
backends: [{{name: llama-cpp, n_threads: 1, n_ctx: 64}}]
workload: {{prompt_tokens: 8, gen_tokens: 3}}
trials: {{warmup: 0, repeat: 1}}
energy: {{meters: none, idle_s: 0}}
''')
def started(cell, i, n):
    print("child", __import__("psutil").Process().children()[0].pid, flush=True)
if __name__ == "__main__":
    Runner(loaded, expand(loaded.config), __import__("pathlib").Path({str(tmp_path / "o")!r}),
           progress=Progress(on_cell_start=started)).run()
""")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("child"), proc.stderr.read()
    child = int(line.split()[1])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), "the worker outlived the main process"
    # Quietly: the worker shares the main process's stderr and wrote nothing to it.
    assert proc.stderr.read() == ""


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_kill_9_mid_run_then_resume_gives_every_cell_once(tmp_path):
    from bench.cli import main

    model = model_file(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
name: fake
models: [{{id: m, path: {model}}}]
backends: [{{name: llama-cpp, n_threads: 1, n_ctx: 64}}]
workload: {{prompt_tokens: 8, gen_tokens: [3, 4, 5, 6]}}
trials: {{warmup: 0, repeat: 2}}
energy: {{meters: none, idle_s: 0}}
""")
    slow = {str(g): {"do": "slow", "seconds": 0.5} for g in (3, 4, 5, 6)}
    script = tmp_path / "main.py"
    script.write_text(f"""
import sys
sys.path[:0] = [{str(Path(__file__).resolve().parents[1])!r}, {str(Path(__file__).parent)!r}]
from bench.backends.base import register_backend
from bench.cli import main
register_backend("llama-cpp", {FAKE!r})
if __name__ == "__main__":
    sys.exit(main(["run", {str(cfg)!r}, "--out", {str(tmp_path / "o")!r}]))
""")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            env={**os.environ, "BENCH_FAKE_PLAN": json.dumps(slow)})
    out = tmp_path / "o"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob("*/parts/trials-*.parquet")):
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (folder,) = out.iterdir()
    partial = load_run(folder)  # whatever was on disk reads back whole
    assert partial.manifest["status"] == "running"
    done_before = sum(c["status"] == "ok" for c in partial.manifest["cells"])
    assert 1 <= done_before < 4

    assert main(["run", str(cfg), "--resume", str(folder)]) == 0
    resumed = load_run(folder)
    assert resumed.manifest["status"] == "finished"
    assert [c["status"] for c in resumed.manifest["cells"]] == ["ok"] * 4
    keys = pairs(resumed.trials)
    assert len(keys) == len(set(keys)) == 4 * 2
    tokens = resumed.table("tokens")
    assert len({(t["cell_id"], t["trial"], t["i"]) for t in tokens}) == len(tokens) \
        == 2 * (3 + 4 + 5 + 6)


def test_energy_per_phase_from_counters_read_at_the_fake_engines_edges(tmp_path, monkeypatch):
    from test_energy_e2e import DRAM_W, PKG_W, WallClockPowercap

    root = tmp_path / "powercap"
    WallClockPowercap(root, monkeypatch)
    plan(monkeypatch, g24={"do": "slow", "seconds": 0.01})
    loaded = loads_config(f"""
name: fake
models: [{{id: m, path: {model_file(tmp_path)}}}]
backends: [{{name: llama-cpp, n_threads: 1, n_ctx: 64}}]
workload: {{prompt_tokens: 8, gen_tokens: 24}}
trials: {{warmup: 0, repeat: 2}}
energy: {{meters: [rapl], idle_s: 0.3, interval_ms: 20, rapl: {{root: "{root}", max_power_w: 50}}}}
execution: {{isolate: false}}  # the patched counter lives in this process
""")
    out = Runner(loaded, expand(loaded.config), tmp_path / "out").run()
    assert len(out.trials) == 2
    for r in out.trials:
        assert r["status"] == "ok" and r["energy_method"] == "counter"
        assert r["j_per_token"] == pytest.approx((PKG_W + DRAM_W) * r["decode_s"] / 23, rel=0.02)
    energy = load_run(out.folder).table("energy")
    assert {(e["trial"], e["phase"]) for e in energy} == {(t, p) for t in (0, 1)
                                                          for p in ("prefill", "decode")}


def test_a_backend_without_typed_settings_is_refused_when_it_is_defined():
    with pytest.raises(TypeError, match="neither cell_type nor cell_settings"):
        class Untyped(base.Backend):  # noqa: F841 - defining it is the test
            name = "untyped"


@pytest.mark.parametrize("isolate", [True, False])
def test_a_session_that_cannot_say_its_bytes_leaves_the_roofline_empty_and_says_why(
        tmp_path, monkeypatch, isolate):
    monkeypatch.setenv("BENCH_FAKE_PLAN", json.dumps({"decode_reads": "raise"}))
    out = run(tmp_path, config(tmp_path, gen="3", isolate=isolate))
    rows = load_run(out.folder).trials
    assert [r["status"] for r in rows] == ["ok"] * 3  # the trials stand
    for r in rows:
        assert r["roofline_pct"] is None and r["roofline_method"] is None
        assert "the engine could not say what a token reads (RuntimeError: the fake engine " \
            "keeps no weights to count)" in r["roofline_note"]


def test_a_sessions_bytes_per_token_make_the_roofline_with_the_runs_bandwidth(tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setenv("BENCH_FAKE_PLAN", json.dumps({"decode_reads": 10**8}))
    out = run(tmp_path, config(tmp_path, gen="3"))
    r = load_run(out.folder)
    bw = r.manifest["roofline"]["cpu"]["bytes_per_s"]
    for row in r.trials:
        assert row["roofline_bytes_per_token"] == 1e8
        assert row["roofline_method"] == "the fake engine's planned bytes"
        assert row["roofline_tps"] == pytest.approx(bw / 1e8)
        assert row["roofline_pct"] == pytest.approx(100 * row["decode_tps"] / (bw / 1e8))
