"""How much writing one finished cell costs as a run grows: `RunWriter.checkpoint` (part files)
against `RunWriter.flush` (rewriting every table, what each cell used to cost).

    python benchmarks/flush_cost.py [--cells 10000] [--trials 5]

Prints the median seconds per cell near the start and near the end of the run; a flat
checkpoint column is the point (a sweep's total write cost is linear in its cells).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import FORMAT_VERSION, RunWriter  # noqa: E402


def cell_rows(n: int, trials: int) -> dict[str, list[dict]]:
    cid = f"c{n:05d}"
    return {
        "trials": [{"run_id": "r", "cell_id": cid, "trial": t, "status": "ok", "warmup": False,
                    "decode_tps": 50.0 + t, "prefill_tps": 500.0, "ttft_s": 0.05,
                    "j_per_token": 0.1, "model": "m", "quant": "Q4_0", "n_threads": 2}
                   for t in range(trials)],
        "tokens": [{"run_id": "r", "cell_id": cid, "trial": t, "i": i, "t_s": 0.01 * i,
                    "token_id": i} for t in range(trials) for i in range(16)],
    }


def measure(cells: int, trials: int, compact_every: bool, sample_at: list[int]) -> dict:
    out: dict[int, list[float]] = {s: [] for s in sample_at}
    with tempfile.TemporaryDirectory() as tmp:
        w = RunWriter(Path(tmp) / "run", {"format_version": FORMAT_VERSION, "cells": []})
        for n in range(cells):
            for table, rows in cell_rows(n, trials).items():
                w.add(table, rows)
            w.journal({"cell": {"cell_id": f"c{n:05d}", "status": "ok"}})
            t0 = time.perf_counter()
            w.flush() if compact_every else w.checkpoint()
            dt = time.perf_counter() - t0
            for s in sample_at:
                if s - 10 <= n < s:
                    out[s].append(dt)
    return {s: statistics.median(v) for s, v in out.items() if v}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=2000)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--flush-cells", type=int, default=300,
                    help="cells for the rewrite-everything comparison (it is quadratic)")
    a = ap.parse_args()
    marks = sorted({10, a.cells // 10, a.cells})
    cp = measure(a.cells, a.trials, False, marks)
    fmarks = sorted({10, a.flush_cells})
    fl = measure(a.flush_cells, a.trials, True, fmarks)
    print(f"median seconds to write one finished cell ({a.trials} trials, 16 tokens each)")
    for s in marks:
        print(f"  checkpoint at cell {s:>6}: {cp[s] * 1000:7.2f} ms")
    for s in fmarks:
        print(f"  full flush at cell {s:>6}: {fl[s] * 1000:7.2f} ms")


if __name__ == "__main__":
    main()
