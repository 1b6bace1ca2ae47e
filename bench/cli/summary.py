"""The table `bench run` ends with: per cell, mean ± 95% CI over the measured trials."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _fmt_ci(s: Any, digits: int = 1, scale: float = 1.0) -> str:
    if s is None:
        return "—"
    mean = s.mean * scale
    if s.n < 2 or s.half_width != s.half_width:  # nan
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {s.half_width * scale:.{digits}f}"


def print_summary(console: Console, trials: list[dict[str, Any]], manifest: dict[str, Any]) -> None:
    from bench.stats import mean_ci

    by_cell: dict[str, list[dict[str, Any]]] = defaultdict(list)
    errors: dict[str, str] = {}
    for r in trials:
        if r.get("status") == "ok" and not r.get("warmup"):
            by_cell[r["cell_id"]].append(r)
        elif r.get("status") != "ok":
            errors.setdefault(r["cell_id"], r.get("error") or "error")
    estimated = any(r.get("energy_method") == "estimate" for r in trials)
    table = Table(title="per cell: mean ± 95% CI over trials (warm-ups excluded)")
    for col in ("cell", "model", "backend · settings", "workload", "n", "prefill t/s",
                "decode t/s", "TTFT ms", "J/token" + (" (estimate)" if estimated else ""),
                "overhead %"):
        table.add_column(col, overflow="fold")

    def summ(rows: list[dict[str, Any]], key: str) -> Any:
        vals = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
        return mean_ci(vals) if vals else None

    for entry in manifest.get("cells", []):
        cid = entry["cell_id"]
        p = entry["params"]
        model = p["model"] + (f" {p['quant']}" if p.get("quant") else "")
        settings = p["backend"] + "".join(
            f" {short}={p[k]}" for k, short in (("n_threads", "t"), ("n_gpu_layers", "ngl"))
            if p.get(k) is not None
        )
        work = (p["prompt_id"] if p.get("prompt_tokens") is None else f"pp{p['prompt_tokens']}")
        if p.get("lang"):
            work = f"[{p['lang']}] {work}"
        work += f" tg{p['gen_tokens']}"
        rows = by_cell.get(cid, [])
        if not rows:
            err = errors.get(cid) or entry.get("error") or entry.get("status")
            table.add_row(
                escape(cid), escape(model), settings, escape(work), "0",
                f"[red]{escape(str(err))}[/]", "", "", "", "",
            )
            continue
        jpt = summ(rows, "j_per_token")
        ov = summ(rows, "overhead_decode_pct")
        table.add_row(
            escape(cid),
            escape(model),
            settings,
            escape(work),
            str(len(rows)),
            _fmt_ci(summ(rows, "prefill_tps")),
            _fmt_ci(summ(rows, "decode_tps")),
            _fmt_ci(summ(rows, "ttft_s"), 1, 1000.0),
            _fmt_ci(jpt, 4) if jpt else "—",
            f"{ov.mean:.2f}" if ov else "—",
        )
    console.print(table)
    methods = sorted({r.get("energy_method") for r in trials if r.get("energy_method")})
    if "estimate" in methods:
        console.print(
            "[yellow]energy is ESTIMATED[/] from CPU time × a per-core power figure: no energy "
            "meter can be read here (see `python -m bench doctor`)"
        )
    elif not methods:
        console.print("energy: not measured (no meter)")
