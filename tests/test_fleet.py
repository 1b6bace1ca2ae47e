"""A real Dask scheduler and two bench workers on 127.0.0.1: one sweep across both, a worker
killed mid-run, and resume. Everything is started and stopped by the tests, bounded in time."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from support import REPO, smol_config

from bench.cli import main
from bench.config import load_config
from bench.fleet import (
    FleetError,
    FleetRun,
    check_resume_machines,
    machine_view,
    workers_by_machine,
)
from bench.results import load_run
from bench.store import Store
from bench.sweep import expand

START_S = 60.0  # a scheduler or worker that is not up by then is a failure, not a hang
SWEEP_S = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A scheduler and named workers as separate processes; all stopped at the end."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ,
                    "PYTHONPATH": os.pathsep.join(
                        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self._spawn("scheduler", [sys.executable, "-m", "distributed.cli.dask_scheduler",
                                  "--host", "127.0.0.1", "--port", str(self.port),
                                  "--no-dashboard", "--no-show"])

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=log, env=self.env)

    def start_worker(self, name: str) -> None:
        self._spawn(name, [sys.executable, "-m", "bench", "worker", "--scheduler", self.address,
                           "--name", name])

    def wait_for(self, names: set[str]) -> None:
        from distributed import Client

        deadline = time.monotonic() + START_S
        client = None
        while time.monotonic() < deadline:
            try:
                client = client or Client(self.address, timeout=5, set_as_default=False)
                if names <= set(workers_by_machine(client)):
                    client.close()
                    return
            except OSError:
                pass
            time.sleep(0.3)
        if client is not None:
            client.close()
        logs = {p.name: p.read_text(errors="replace")[-800:] for p in self.tmp.glob("*.log")}
        raise AssertionError(f"workers {names} not up within {START_S} s: {logs}")

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        kids = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for k in kids:  # the orphaned engine child: the test started it, the test ends it
            try:
                k.kill()
            except psutil.NoSuchProcess:
                pass

    def stop(self) -> None:
        for name in [n for n in self.procs if n != "scheduler"] + ["scheduler"]:
            if name in self.procs:
                self.kill(name)


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        c.start_worker("desk")
        c.start_worker("mac")
        c.wait_for({"desk", "mac"})
        yield c
    finally:
        c.stop()


def sweep_config(tmp_path: Path, prompts: str, trials: str = "{warmup: 0, repeat: 2}",
                 extra: str = "") -> Path:
    body = smol_config(
        "fleet", n_ctx="256", workload=f"{{prompt_tokens: {prompts}, gen_tokens: 4}}",
        trials=trials, energy="{meters: [estimate], idle_s: 0.2}",
    ) + "execution: {cell_timeout_s: 120}\nmachines: [desk, mac]\n" + extra
    p = tmp_path / "fleet.yaml"
    p.write_text(body)
    return p


def only_run(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def test_a_fleet_resume_refuses_a_machine_that_now_reports_other_hardware():
    old = {"machines": {"desk": {"name": "desk", "id": "a" * 16},
                        "mac": {"name": "mac", "id": "b" * 16}}}
    check_resume_machines(old, {"desk": "a" * 16, "mac": "b" * 16})  # same hardware: fine
    check_resume_machines(old, {"desk": "a" * 16})  # a machine not asked for now: fine
    with pytest.raises(FleetError, match=r"mac was b{16}, is now c{16}"):
        check_resume_machines(old, {"desk": "a" * 16, "mac": "c" * 16})


def test_a_scheduler_that_cannot_be_reached_is_one_sentence(tmp_path):
    cfg = sweep_config(tmp_path, "8")
    loaded = load_config(cfg)
    dead = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(FleetError, match="cannot reach the scheduler at .*dask scheduler"):
        FleetRun(loaded, expand(loaded.config), tmp_path, dead, connect_timeout_s=1).run()


def test_a_machine_without_a_worker_is_named_with_the_command_to_start_it(tmp_path, capsys):
    c = Cluster(tmp_path)
    try:
        c.wait_for(set())
        cfg = sweep_config(tmp_path, "8")
        assert main(["run", str(cfg), "--cluster", c.address, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "no worker serves machine 'desk'" in err and "bench worker --scheduler" in err
        assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # no run folder was made
    finally:
        c.stop()


@pytest.mark.slow
def test_one_sweep_across_two_workers_lands_in_one_run_folder(cluster, tmp_path, capsys):
    cfg = sweep_config(tmp_path, "[8, 16]", extra="quality: {texts: heldout, window: 64}\n")
    out = tmp_path / "results"
    t0 = time.monotonic()
    assert main(["run", str(cfg), "--cluster", cluster.address, "--out", str(out)]) == 0
    took = time.monotonic() - t0
    assert "fleet: 4 ok, 0 failed on 2 machines (desk, mac)" in capsys.readouterr().out
    run = load_run(only_run(out))
    m = run.manifest
    assert set(m["machines"]) == {"desk", "mac"} and m["fleet"]["scheduler"] == cluster.address
    for name in ("desk", "mac"):
        facts = m["machines"][name]
        assert facts["name"] == name and facts["id"] and facts["software"]["llama_cpp_python"]
        assert facts["idle"]["seconds"] == 0.2
    assert sorted(e["cell_id"] for e in m["cells"]) == ["c001@desk", "c001@mac", "c002@desk",
                                                         "c002@mac"]
    assert all(e["status"] == "ok" for e in m["cells"])
    for table in ("trials", "energy", "tokens"):
        rows = run.trials if table == "trials" else run.table(table)
        assert rows and all(r["machine"] in ("desk", "mac") and r["machine_id"] for r in rows)
        assert all(str(r["cell_id"]).endswith("@" + r["machine"]) for r in rows)
    # The quality phase ran after the sweep on each machine, as a local run does.
    quality = run.table("quality")
    assert {r["machine"] for r in quality} == {"desk", "mac"}
    assert all(r["bits_per_byte"] > 0 and "cell_id" not in r for r in quality)
    assert all(m["machines"][n]["quality_done"] for n in ("desk", "mac"))  # a resume keeps it
    # The same cell on both machines: one cell key, never one pool.
    keys = {(r["machine"], r["cell_key"]) for r in run.trials}
    assert len(keys) == 4 and len({k for _, k in keys}) == 2
    desk = machine_view(run, "desk")
    assert {r["cell_id"] for r in desk.trials} == {"c001", "c002"}
    assert all(r["status"] == "ok" for r in desk.trials) and len(desk.trials) == 4
    print(f"fleet sweep of 4 cells on 2 workers: {took:.1f} s")

    folder = str(only_run(out))
    assert main(["compare", folder, folder]) == 2
    assert "holds results of 2 machines (desk, mac)" in capsys.readouterr().err
    # Both "machines" are processes on this one host, so each idle baseline can see the other's
    # work: compare may rightly call the pair unreliable (exit 3); --warn-only shows it either
    # way, and what this checks is that one machine's rows compare with themselves.
    assert main(["compare", folder, folder, "--machine", "mac", "--metric", "decode_tps",
                 "--warn-only"]) == 0

    # The report shows the machines side by side: each cell once, one column per machine.
    assert main(["report", folder, "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    side = md.split("### Machines side by side\n", 1)[1].strip().splitlines()
    assert [c.strip() for c in side[0].strip("|").split("|")] == [
        "cell", "metric", "desk", "mac", "ahead"]
    assert sum(1 for ln in side if "| decode t/s" in ln) == 2  # two cells, each on both
    assert "## Comparison" not in md  # machines are never judged against each other
    # Export takes one machine at a time, and says how to pick one.
    assert main(["export", folder, "--format", "bencher", "--out", str(tmp_path / "x.json")]) == 2
    assert "--machine NAME" in capsys.readouterr().err
    assert main(["export", folder, "--format", "bencher", "--out", str(tmp_path / "x.json"),
                 "--machine", "desk"]) == 0
    assert (tmp_path / "x.json").is_file()

    db = tmp_path / "s.duckdb"
    assert main(["store", "add", folder, "--store", str(db)]) == 0
    with Store(db, read_only=True) as s:
        per_machine = s.query("SELECT machine, count(DISTINCT cell_key), count(*) FROM trials "
                              "GROUP BY machine ORDER BY machine")[1]
    assert per_machine == [("desk", 2, 4), ("mac", 2, 4)]


@pytest.mark.slow
def test_a_worker_killed_mid_run_fails_only_its_cell_in_flight_and_resume_runs_the_rest(
    cluster, tmp_path
):
    # A cooldown between trials keeps each cell running for seconds, so the kill lands while
    # c002@mac is in flight, not after it.
    cfg = sweep_config(tmp_path, "[8, 12, 16]", "{warmup: 0, repeat: 2, cooldown_s: 2}")
    loaded = load_config(cfg)
    cells = expand(loaded.config)
    out = tmp_path / "results"
    messages: list[str] = []

    def on_message(msg: str) -> None:
        messages.append(msg)
        if msg == "cell c002@mac started":
            cluster.kill("mac")

    result: dict[str, object] = {}
    driver = threading.Thread(target=lambda: result.update(
        outcome=FleetRun(loaded, cells, out, cluster.address, on_message=on_message).run()))
    driver.start()
    driver.join(SWEEP_S)
    assert not driver.is_alive(), f"the sweep did not end within {SWEEP_S} s: {messages}"
    outcome = result["outcome"]
    status = {e["cell_id"]: (e["status"], e["error"]) for e in outcome.manifest["cells"]}
    assert [status[f"c00{i}@desk"][0] for i in (1, 2, 3)] == ["ok", "ok", "ok"], (status, messages)
    assert status["c001@mac"] == ("ok", None)
    assert status["c002@mac"][0] == "error"
    assert "worker for machine mac" in status["c002@mac"][1] and "lost" in status["c002@mac"][1]
    assert status["c003@mac"][0] == "not run" and "--resume" in status["c003@mac"][1]
    assert (outcome.cells_ok, outcome.cells_failed, outcome.cells_not_run) == (4, 1, 1)
    folder = outcome.folder

    cluster.start_worker("mac")
    cluster.wait_for({"desk", "mac"})
    assert main(["run", str(cfg), "--cluster", cluster.address, "--resume", str(folder)]) == 0
    run = load_run(folder)
    assert all(e["status"] == "ok" for e in run.manifest["cells"])
    by_cell: dict[str, list[str]] = {}
    for r in run.trials:
        by_cell.setdefault(r["cell_id"], []).append(r["status"])
    # Each cell's trials once: the failed attempt's rows are gone, the kept cells not rerun.
    assert by_cell == {cid: ["ok", "ok"] for cid in status}
    assert len(run.manifest["resumed"]) == 1
