"""How long a sweep will take, roughly: tokens × a rate per model, before and during a run.

A rate is measured where a previous run of the same model (id and quant) is in the results
folder; otherwise it is assumed from the model's size, since decoding one token reads every
weight once (a laptop moves about ASSUMED_BANDWIDTH bytes a second) and prefill runs about
PREFILL_SPEEDUP times faster per token. Both are rough and are labelled so wherever shown.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ASSUMED_BANDWIDTH = 20e9  # bytes/s a laptop CPU reads from memory while decoding
PREFILL_SPEEDUP = 10.0  # prompt tokens per decode token, per second, on a CPU
ASSUMED_SIZE = 4e9  # a 7B model at 4 bits, when the file is not local yet
LOAD_S_PER_GB = 1.0  # reading the file (from the page cache, mostly) and building the context
# Writing a synthetic model the first time (random numbers, the file, its digest): about
# 115 MB/s for the Eagle-7B shape on a 2-core VM, so a 7B shape takes minutes.
SYNTHETIC_WRITE_BPS = 100e6
CHARS_PER_TOKEN = 4.0  # for given text prompts, before the tokenizer has seen them
PREVIOUS_RUNS = 20  # newest run folders looked at for measured rates


@dataclass(frozen=True)
class Rates:
    prefill_tps: float
    decode_tps: float
    measured_in: str | None = None  # the run the rates come from; None: assumed

    @property
    def how(self) -> str:
        if self.measured_in:
            return f"rates measured in {self.measured_in}"
        return (f"assumed rates: decode = {ASSUMED_BANDWIDTH / 1e9:g} GB/s ÷ model size, "
                f"prefill {PREFILL_SPEEDUP:g}× that")


def model_key(params: dict[str, Any]) -> str:
    return f"{params.get('model')}@{params.get('quant') or ''}"


def assumed_rates(size_bytes: float | None) -> Rates:
    size = float(size_bytes or ASSUMED_SIZE)
    decode = ASSUMED_BANDWIDTH / max(size, 1e6)
    return Rates(decode * PREFILL_SPEEDUP, decode)


def previous_rates(results: Path) -> dict[str, Rates]:
    """Mean prefill and decode t/s per model in the newest run folders under `results`."""
    try:
        folders = sorted((p for p in results.iterdir() if (p / "manifest.json").is_file()),
                         key=lambda p: p.name, reverse=True)[:PREVIOUS_RUNS]
    except OSError:
        return {}
    found: dict[str, Rates] = {}
    for folder in folders:
        try:
            import pyarrow.parquet as pq

            rows = pq.read_table(
                folder / "trials.parquet",
                columns=["model", "quant", "status", "warmup", "prefill_tps", "decode_tps"],
            ).to_pylist()
        except Exception:  # noqa: BLE001, S112 - a damaged or foreign folder has no rates
            continue
        sums: dict[str, list[list[float]]] = {}
        for r in rows:
            if r.get("status") != "ok" or r.get("warmup"):
                continue
            p, d = r.get("prefill_tps"), r.get("decode_tps")
            if isinstance(p, float) and isinstance(d, float) and p > 0 and d > 0:
                acc = sums.setdefault(model_key(r), [[], []])
                acc[0].append(p)
                acc[1].append(d)
        for key, (ps, ds) in sums.items():
            if key not in found:  # the newest run wins
                found[key] = Rates(sum(ps) / len(ps), sum(ds) / len(ds), folder.name)
    return found


def prompt_tokens(cell: Any) -> float:
    if cell.prompt_tokens is not None:
        return float(cell.prompt_tokens)
    return len(cell.prompt_text or "") / CHARS_PER_TOKEN


def trial_s(cell: Any, rates: Rates) -> float:
    """Seconds one trial of `cell` takes at `rates` (depth is prefilled like a prompt)."""
    depth = float(cell.params().get("depth") or 0)
    return (prompt_tokens(cell) + depth) / rates.prefill_tps + cell.gen_tokens / rates.decode_tps


@dataclass
class Plan:
    """Per cell: trials (warm-ups + the most measured ones) and seconds per trial."""

    cells: list[Any]
    trials_per_cell: int
    seconds_per_trial: dict[str, float]
    load_before: dict[str, float]  # load seconds, charged to the first cell of each load
    idle_s: float
    rates: dict[str, Rates]
    # Of load_before: writing synthetic models on first use (part of load_s, said apart).
    write_s: float = 0.0

    @property
    def load_s(self) -> float:
        return sum(self.load_before.values())

    @property
    def total_s(self) -> float:
        return (self.idle_s + self.load_s
                + sum(self.seconds_per_trial.values()) * self.trials_per_cell)

    @property
    def how(self) -> str:
        kinds = sorted({r.how for r in self.rates.values()})
        return "; ".join(kinds)


def plan(cells: list[Any], config: Any, results: Path | None = None) -> Plan:
    """The time a sweep should take, from its cells, trials and each model's rates."""
    from bench.models import locate
    from bench.sweep import groups

    previous = previous_rates(results) if results is not None else {}
    sizes: dict[str, int | None] = {}
    load_before: dict[str, float] = {}
    write_s = 0.0
    for group in groups(cells):
        key = model_key(group[0].params())
        if key not in sizes:
            try:
                loc = locate(group[0].variant)
                sizes[key] = loc.size_bytes
            except Exception:  # noqa: BLE001 - an odd model reference: size unknown
                loc, sizes[key] = None, None
            if loc is not None and loc.downloadable and group[0].variant.spec.synthetic \
                    is not None and loc.size_bytes:
                write_s += loc.size_bytes / SYNTHETIC_WRITE_BPS  # once per model, first use
                load_before[group[0].cell_id] = loc.size_bytes / SYNTHETIC_WRITE_BPS
        load_before[group[0].cell_id] = load_before.get(group[0].cell_id, 0.0) + (
            LOAD_S_PER_GB * (sizes[key] or ASSUMED_SIZE) / 1e9)
    rates: dict[str, Rates] = {}
    per_trial: dict[str, float] = {}
    for c in cells:
        key = model_key(c.params())
        if key not in rates:
            rates[key] = previous.get(key) or assumed_rates(sizes.get(key))
        per_trial[c.cell_id] = trial_s(c, rates[key])
    trials = config.trials.warmup + config.trials.max_repeat
    return Plan(cells, trials, per_trial, load_before, float(config.energy.idle_s), rates,
                write_s)


def duration(seconds: float) -> str:
    """'42 s', '3 min 5 s', '2 h 10 min'; never blank."""
    if not math.isfinite(seconds) or seconds < 0:
        return "unknown"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"
