"""Servers bench starts itself: their lifecycle (with a stand-in server, fast), and whole sweeps
against a real OpenAI-compatible server (llama-cpp-python's, on the small model, slow) that must
agree with the in-process backend."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from support import REPO, SMOL_MODEL_YAML
from test_backend_openai import closed_port

from bench.backends.base import BackendError
from bench.backends.llama_cpp import LlamaCppBackend
from bench.backends.openai.backend import OpenAIBackend
from bench.backends.server import ManagedServer
from bench.cli import main
from bench.metrics import prompt_check, trial_timing
from bench.results import load_run

PY = sys.executable
STUB = [PY, "-m", "http.server", "{port}", "--bind", "{host}"]


def managed(tmp_path: Path, command: list[str], timeout_s: float = 20.0,
            values: dict[str, Any] | None = None, **kw: Any) -> ManagedServer:
    from bench.backends.server import free_port

    vals = {"host": "127.0.0.1", "port": free_port(), **(values or {})}
    return ManagedServer(command, kw.pop("env", {}), vals, kw.pop("secrets", {}),
                         kw.pop("ready_url", "http://{host}:{port}/").format(**vals),
                         timeout_s, 5.0, tmp_path / "server.log")


def gone(pid: int, wait_s: float = 5.0) -> bool:
    """The process has exited (a zombie counts), waiting a little for signals to land."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


# -- lifecycle with a stand-in server (fast) ----------------------------------------------------


def test_a_started_server_is_waited_for_logged_sampled_and_stopped(tmp_path):
    srv = managed(tmp_path, STUB)
    srv.start()
    try:
        assert srv.alive() and srv.startup_s is not None
        srv.sample()
        assert srv.peak_rss_bytes and srv.peak_rss_bytes > 1e6
    finally:
        srv.stop()
    assert srv.proc.returncode is not None and gone(srv.pid)
    head = (tmp_path / "server.log").read_text().splitlines()[0]
    assert "bench starts" in head and "http.server" in head


def test_a_server_that_exits_at_start_gives_its_code_and_last_words(tmp_path):
    cmd = [PY, "-c", "import sys; print('error: no model at /x.gguf'); sys.exit(3)"]
    with pytest.raises(BackendError) as e:
        managed(tmp_path, cmd).start()
    msg = str(e.value)
    assert msg.startswith("the server exited with code 3 before it was ready")
    assert "error: no model at /x.gguf" in msg and str(tmp_path / "server.log") in msg


def test_a_server_slow_to_start_is_stopped_after_the_startup_timeout(tmp_path):
    srv = managed(tmp_path, [PY, "-c", "import time; time.sleep(60)"], timeout_s=1.0)
    with pytest.raises(BackendError, match=r"did not answer http://127.0.0.1:\d+/ within 1 s"):
        srv.start()
    assert gone(srv.pid)


def test_a_missing_server_program_is_named(tmp_path):
    with pytest.raises(BackendError, match="'no-such-server-binary' was not found"):
        managed(tmp_path, ["no-such-server-binary", "{port}"]).start()


def test_ctrl_c_while_waiting_stops_the_server(tmp_path, monkeypatch):
    srv = managed(tmp_path, [PY, "-c", "import time; time.sleep(60)"])

    def interrupted(self: ManagedServer) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ManagedServer, "_wait_ready", interrupted)
    with pytest.raises(KeyboardInterrupt):
        srv.start()
    assert gone(srv.pid)


def test_a_server_nobody_closed_is_stopped_when_it_is_collected(tmp_path):
    srv = managed(tmp_path, STUB)
    srv.start()
    pid = srv.pid
    srv._stop_sampling.set()  # let the sampler thread drop its reference
    srv._sampler.join()
    del srv
    gc.collect()
    assert gone(pid, 10)


def test_a_server_outlives_no_bench_process_killed_without_cleanup(tmp_path):
    # A runner worker killed by SIGKILL runs no finally and no atexit; the kernel still
    # stops the server it started (Linux).
    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signal is Linux only")
    marker = tmp_path / "server.pid"
    code = (
        "import sys, time; from pathlib import Path;"
        "from bench.backends.server import ManagedServer, free_port;"
        "p = free_port();"
        f"s = ManagedServer({STUB!r}, {{}}, {{'host': '127.0.0.1', 'port': p}}, {{}},"
        " f'http://127.0.0.1:{p}/', 20.0, 5.0, Path(sys.argv[1]) / 'x.log');"
        "s.start(); Path(sys.argv[2]).write_text(str(s.pid)); time.sleep(60)"
    )
    parent = subprocess.Popen([PY, "-c", code, str(tmp_path), str(marker)], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = int(marker.read_text())
        assert not gone(pid, 0)
    finally:
        parent.kill()
        parent.wait()
    assert gone(pid, 10)


def test_workers_the_server_started_are_stopped_with_it(tmp_path):
    code = ("import subprocess, sys, http.server, socketserver;"
            "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            "open(sys.argv[2], 'w').write(str(w.pid));"
            "http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler,"
            " port=int(sys.argv[1]), bind='127.0.0.1')")
    marker = tmp_path / "worker.pid"
    srv = managed(tmp_path, [PY, "-c", code, "{port}", str(marker)])
    srv.start()
    worker = int(marker.read_text())
    assert not gone(worker, 0)
    srv.stop()
    assert gone(worker)


def test_the_openai_backend_starts_and_stops_its_server_with_the_session(tmp_path):
    settings = {
        "label": "stub", "endpoint": "completions", "url": None, "model": "m",
        "timeout_s": 10.0, "log_dir": str(tmp_path / "logs"),
        "server": {"command": STUB, "ready_url": "http://{host}:{port}/", "host": "127.0.0.1",
                   "port": None, "startup_timeout_s": 20.0, "stop_timeout_s": 5.0, "env": {}},
    }
    session = OpenAIBackend().load(None, settings, seed=1)
    pid = session.server_pid()
    assert pid and not gone(pid, 0)
    usage = session.resource_usage()
    assert usage["server_pid"] == pid and usage["server_peak_rss_bytes"] > 1e6
    assert session.info()["server_log"].startswith(str(tmp_path / "logs"))
    session.close()
    assert gone(pid)


def test_a_server_that_dies_during_the_session_is_named_in_the_error(tmp_path):
    settings = {
        "label": "stub", "endpoint": "completions", "url": None, "model": "m",
        "timeout_s": 10.0, "log_dir": str(tmp_path),
        "server": {"command": STUB, "ready_url": "http://{host}:{port}/", "env": {}},
    }
    session = OpenAIBackend().load(None, settings, seed=1)
    try:
        session.server.proc.kill()
        session.server.proc.wait()
        with pytest.raises(BackendError, match="the server bench started exited with code -9"):
            session.generate(session.prompt("p", None, "hello"), 4, False, lambda e: None)
    finally:
        session.close()


def test_the_servers_config_is_valid_and_lists_its_cells(capsys):
    assert main(["run", str(REPO / "configs" / "servers.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for label in ("llama-cpp", "llama_cpp.server", "ollama", "lm-studio"):
        assert label in out


# -- a real server on the small model (slow) ----------------------------------------------------

SERVER = f"""\
    server:
      command: [{PY}, -m, llama_cpp.server, --model, "{{model_path}}", --host, "{{host}}",
                --port, "{{port}}", --n_ctx, "{{n_ctx}}", --n_threads, "{{n_threads}}",
                --n_threads_batch, "{{n_threads}}", --n_gpu_layers, "{{n_gpu_layers}}",
                --verbose, "false"]
      args: {{n_threads: 1, n_ctx: 512, n_gpu_layers: 0}}
      startup_timeout_s: 120
    # llama-cpp-python's server applies a repeat penalty unless told not to; the in-process
    # backend takes the plain argmax.
    extra_body: {{repeat_penalty: 1.0}}
"""


def write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(body)
    return p


def only_run(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


@pytest.mark.slow
def test_a_sweep_through_llama_cpp_server_agrees_with_in_process(tmp_path, capsys):
    cfg = write(tmp_path, "name: agree\nmodels:\n" + SMOL_MODEL_YAML + """\
backends:
  - name: llama-cpp
    n_threads: 1
    n_ctx: 512
    # llama_cpp.server runs with flash attention off; bench defaults to llama.cpp's `auto`,
    # which picks another attention path on some CPUs: like against like.
    flash_attn: false
  - name: openai
""" + SERVER + """\
workload: {prompt_tokens: 64, gen_tokens: 32}
trials: {warmup: 1, repeat: 5}
energy: {meters: none, idle_s: 0}
""")
    out = tmp_path / "results"
    assert main(["run", str(cfg), "--out", str(out)]) == 0, capsys.readouterr().out
    run = load_run(only_run(out))
    rows = [r for r in run.trials if not r["warmup"]]
    assert all(r["status"] == "ok" for r in run.trials)
    local = [r for r in rows if r["backend"] == "llama-cpp"]
    served = [r for r in rows if r["backend"] == "openai"]
    # Tokens are counted identically: the same synthetic prompt, the same fixed length.
    assert {(r["n_prompt"], r["n_gen"]) for r in local + served} == {(64, 32)}
    assert {r["count_source"] for r in served} == {"tokenizer/length"}
    assert {r["n_gen_retokenized"] for r in served} <= {31, 32, 33}
    # Speed: the server runs the same llama.cpp on the same thread count, but each token also
    # crosses detokenization, JSON, SSE framing and a socket, and the server samples through
    # llama-cpp-python's high-level API; so its decode rate should be at most about the same,
    # and well above a third of it. Best-of-5 rates are compared, because interference from
    # other work only ever slows a trial down; the upper bound, 1.5x, leaves room for a shared
    # machine (on a busy 2-core VM the ratio ranged 0.8x-1.3x), and still catches a count or
    # clock that is off by a factor of two.
    dec = max(r["decode_tps"] for r in served) / max(r["decode_tps"] for r in local)
    pre = max(r["prefill_tps"] for r in served) / max(r["prefill_tps"] for r in local)
    print(f"server/in-process (best of 5): decode {dec:.2f}x, prefill {pre:.2f}x")
    assert 0.3 <= dec <= 1.5
    # Prefill over HTTP also pays for the request and for tokenizing the text on the server, so
    # it is at most about the in-process rate; but a 64-token prefill lasts a fraction of a
    # second, and on a shared VM one backend's five can all land in a slow spell (1.56x was
    # seen once in CI-like runs, 0.70x-0.89x otherwise). Below 2x still catches a prefill clock
    # that counts half the time.
    assert 0.2 <= pre < 2.0
    loads = run.manifest["loads"]
    assert loads[1]["status"] == "ok" and loads[1]["load_s"] > 0
    # The server's output is saved in the run folder.
    assert list((only_run(out) / "logs").glob("server-llama_cpp.server-*.log"))


@pytest.mark.slow
def test_the_server_generates_the_tokens_the_in_process_backend_does(smol_path, tmp_path):
    local = LlamaCppBackend().load(smol_path, {"n_threads": 1, "n_gpu_layers": 0, "n_ctx": 512,
                                               "n_batch": 512, "n_ubatch": 512,
                                               "flash_attn": False}, seed=42)
    try:
        p = local.prompt("synthetic-48", 48, None)
        ids = local.generate(p, 16, False, lambda e: None).token_ids
        expected = local.detokenize(ids)
    finally:
        local.close()
    settings = {
        "label": "llama_cpp.server", "endpoint": "completions", "url": None, "model": None,
        "timeout_s": 120.0, "log_dir": str(tmp_path), "extra_body": {"repeat_penalty": 1.0},
        "n_threads": 1, "n_ctx": 512, "n_gpu_layers": 0,
        "server": {"command": [PY, "-m", "llama_cpp.server", "--model", "{model_path}",
                               "--host", "{host}", "--port", "{port}", "--n_ctx", "{n_ctx}",
                               "--n_threads", "{n_threads}", "--verbose", "false"],
                   "startup_timeout_s": 120.0, "env": {}},
    }
    served = OpenAIBackend().load(smol_path, settings, seed=42, model_name="smollm2-135m")
    try:
        trace = served.generate(served.prompt("synthetic-48", 48, None), 16, False,
                                lambda e: None)
    finally:
        served.close()
    assert trace.text == expected and trace.n_gen == 16


@pytest.mark.slow
def test_the_api_key_never_reaches_the_results_or_logs(tmp_path, monkeypatch, capsys):
    key = "sk-bench-test-7c41e0a9"
    monkeypatch.setenv("BENCH_TEST_SERVER_KEY", key)
    server = SERVER.replace('--verbose, "false"]', '--verbose, "false", --api_key, "{api_key}"]')
    cfg = write(tmp_path, "name: secret\nmodels:\n" + SMOL_MODEL_YAML + """\
backends:
  - name: openai
    api_key_env: BENCH_TEST_SERVER_KEY
""" + server + """\
workload: {prompt_tokens: 16, gen_tokens: 4}
trials: {warmup: 0, repeat: 1}
energy: {meters: none, idle_s: 0}
""")
    out = tmp_path / "results"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert key not in printed.out + printed.err
    run = load_run(only_run(out))
    assert run.trials[0]["status"] == "ok"  # the key was sent, and the server accepted it
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in files)
    assert any(p.suffix == ".log" for p in files)
    for p in files:
        assert key.encode() not in p.read_bytes(), p
    model = run.manifest["models"]["smollm2-135m"]
    assert "***" in model["server_command"]
    assert json.dumps(run.manifest).count("BENCH_TEST_SERVER_KEY") >= 1  # the name is kept


@pytest.mark.slow
def test_a_fixed_prompt_through_llama_cpp_server_fails_no_trial_though_its_prefix_is_reused(
    smol_path, tmp_path
):
    # llama-cpp-python's server drops `cache_prompt` (an unknown field) and always reuses the
    # prefix a request shares with the previous one; it reports no timings, so no trial fails
    # as "KV cache reused", and the only trace of the reuse is its verbose log.
    settings = {
        "label": "llama_cpp.server", "endpoint": "completions", "url": None, "model": None,
        "timeout_s": 120.0, "log_dir": str(tmp_path), "extra_body": {"repeat_penalty": 1.0},
        "n_threads": 1, "n_ctx": 512,
        "server": {"command": [PY, "-m", "llama_cpp.server", "--model", "{model_path}",
                               "--host", "{host}", "--port", "{port}", "--n_ctx", "{n_ctx}",
                               "--n_threads", "{n_threads}", "--verbose", "true"],
                   "startup_timeout_s": 120.0, "env": {}},
    }
    served = OpenAIBackend().load(smol_path, settings, seed=42, model_name="smollm2-135m")
    try:
        p = served.prompt("fixed", None, "The river runs long and the way home runs longer")
        rows = [trial_timing(served.generate(p, 8, False, lambda e: None)) for _ in range(3)]
        log_path = served.server.log_path
    finally:
        served.close()
    assert [prompt_check(r) for r in rows] == [None, None, None]
    assert {(r["n_prompt"], r["n_gen"]) for r in rows} == {(rows[0]["n_prompt"], 8)}
    assert "engine_n_p_eval" not in rows[0]  # nothing bench could check the prompt against
    assert log_path.read_text().count("prefix-match hit") >= 2  # trials 2 and 3 reused it


@pytest.mark.slow
def test_servers_that_are_not_there_fail_their_own_cells_and_the_sweep_goes_on(tmp_path):
    port = closed_port()
    cfg = write(tmp_path, "name: absent\nmodels:\n" + SMOL_MODEL_YAML + f"""\
backends:
  - name: llama-cpp
    n_threads: 1
    n_ctx: 512
  - name: openai
    label: lm-studio
    url: http://127.0.0.1:{port}/v1
  - name: ollama
    url: http://127.0.0.1:{port}
workload: {{prompt_tokens: 16, gen_tokens: 4}}
trials: {{warmup: 0, repeat: 1}}
energy: {{meters: none, idle_s: 0}}
""")
    # Through the runner: the CLI's summary table still assumes llama-cpp's settings columns.
    from bench.config import load_config
    from bench.runner import Runner
    from bench.sweep import expand

    loaded = load_config(cfg)
    outcome = Runner(loaded, expand(loaded.config), tmp_path / "results").run()
    run = load_run(outcome.folder)
    status = {c["params"]["backend"]: (c["status"], c["error"]) for c in run.manifest["cells"]}
    assert status["llama-cpp"] == ("ok", None)
    for backend in ("openai", "ollama"):
        state, err = status[backend]
        assert state == "error" and err == (
            f"no server answered at http://127.0.0.1:{port}"
            + ("/v1" if backend == "openai" else "")
            + " (connection refused); start it or give `server:` so bench starts it"
        )
    assert outcome.cells_ok == 1 and outcome.cells_failed == 2


def test_no_server_process_is_left_behind_by_these_tests():
    # A server these tests started is a child of this process or, orphaned, of init; servers
    # other people run on this machine have parents of their own.
    ours = {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)}
    left = []
    for p in psutil.process_iter(["cmdline", "status", "ppid"]):
        cmd = " ".join(p.info["cmdline"] or [])
        server = "llama_cpp.server" in cmd or "http.server" in cmd
        if server and p.info["status"] != psutil.STATUS_ZOMBIE and (
                p.pid in ours or p.info["ppid"] == 1):
            left.append(cmd)
    assert not left

