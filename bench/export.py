"""`bench export`: run folders -> the JSON that existing benchmark trackers read.

Owns two formats:
- `github-action-benchmark`: the custom JSON of benchmark-action/github-action-benchmark, two
  files in the out folder: `bigger_is_better.json` (tool `customBiggerIsBetter`: prefill and
  decode t/s) and `smaller_is_better.json` (tool `customSmallerIsBetter`: TTFT, J/token). Each
  is a list of `{"name", "unit", "value", "range"?, "extra"?}`; `range` is text ("± 1.2").
- `bencher`: Bencher Metric Format (BMF) JSON,
  `{benchmark: {measure: {"value", "lower_value"?, "upper_value"?}}}`.

Benchmark names are `bench.columns.cell_label` of the cell's parameters, as everywhere. A
value is the mean over non-warm-up successful trials; ranges and bounds are its 95 % Student's t
confidence interval (left out when one trial gives no interval). Several runs of one machine are
pooled per cell (`cell_key`), as compare pools baselines; runs of several machines are refused.
docs/report.md describes the files.
"""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from bench.columns import cell_label, unique_labels
from bench.report.data import (
    DECODE,
    J_PER_TOKEN,
    PREFILL,
    TTFT,
    CellSummary,
    Metric,
    ReportError,
    load_runs,
    summarise,
)
from bench.stats import Summary, mean_ci

Format = Literal["github-action-benchmark", "bencher"]
FORMATS: tuple[str, ...] = ("github-action-benchmark", "bencher")
EXIT_OK, EXIT_USAGE, EXIT_WRITE = 0, 2, 3

BIGGER_FILE = "bigger_is_better.json"
SMALLER_FILE = "smaller_is_better.json"
BENCHER_FILE = "bencher.json"

# Bencher measure slugs (created on first upload when the project lacks them).
BENCHER_MEASURES = {
    PREFILL.name: "prefill-tps",
    DECODE.name: "decode-tps",
    TTFT.name: "ttft-ms",
    J_PER_TOKEN.name: "j-per-token",
}
EXPORTED: tuple[Metric, ...] = (PREFILL, DECODE, TTFT, J_PER_TOKEN)


class ExportError(Exception):
    """A usage or data problem; the message is one sentence for the user."""


@dataclass
class ExportCell:
    """One benchmark: a cell's trials pooled over the given runs."""

    name: str
    params: dict[str, Any]
    runs: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    machine: str = ""
    flags: list[str] = field(default_factory=list)  # validity flags of the pooled cells

    def summary(self, metric: Metric) -> Summary | None:
        vals = [float(r[metric.name]) * metric.scale for r in self.samples
                if isinstance(r.get(metric.name), (int, float))
                and not isinstance(r.get(metric.name), bool) and math.isfinite(r[metric.name])]
        return mean_ci(vals) if vals else None

    @property
    def energy_method(self) -> str:
        methods = {str(r.get("energy_method") or "") for r in self.samples
                   if r.get(J_PER_TOKEN.name) is not None} - {""}
        return methods.pop() if len(methods) == 1 else ("mixed" if methods else "")


def export_cells(cells: Sequence[CellSummary]) -> list[ExportCell]:
    """Successful cells pooled by cell_key (else by run and cell id), named by their cell label;
    two different cells with one label get `#<key>` appended, as in compare."""
    pooled: dict[str, ExportCell] = {}
    for c in cells:
        if not c.ok:
            continue
        key = c.cell_key or f"{c.run.run_id}/{c.cell_id}"
        e = pooled.setdefault(key, ExportCell(cell_label(c.params), c.params,
                                              machine=c.run.machine_label))
        if c.run.run_id not in e.runs:
            e.runs.append(c.run.run_id)
        e.samples.extend(c.samples)
        for f in c.flags:
            text = f"{f.text} (run {c.run.run_id})"
            if text not in e.flags:
                e.flags.append(text)
    names = unique_labels({k: e.name for k, e in pooled.items()})
    for key, e in pooled.items():
        e.name = names[key]
    return list(pooled.values())


def _metric_name(cell: ExportCell, metric: Metric) -> tuple[str, str]:
    """(suffix for the benchmark name, unit). Estimated energy is a series of its own, so a
    tracker never draws an estimate and a measurement as one line."""
    unit = metric.display_unit
    name = metric.name if metric.name != TTFT.name else "ttft_ms"
    if metric.energy and cell.energy_method in ("estimate", "mixed"):
        name += f" ({cell.energy_method})"
    return name, unit


def _finite(v: float) -> bool:
    return math.isfinite(v)


def github_entries(cells: Sequence[ExportCell]) -> tuple[list[dict], list[dict]]:
    """(customBiggerIsBetter entries, customSmallerIsBetter entries)."""
    bigger: list[dict] = []
    smaller: list[dict] = []
    for cell in cells:
        for metric in EXPORTED:
            s = cell.summary(metric)
            if s is None:
                continue
            suffix, unit = _metric_name(cell, metric)
            entry: dict[str, Any] = {"name": f"{cell.name} - {suffix}", "unit": unit,
                                     "value": s.mean}
            ci = ""
            if _finite(s.half_width):
                entry["range"] = f"± {s.half_width:.4g}"
                ci = f"; 95% CI {s.lo:.4g} to {s.hi:.4g}"
            extra = f"n={s.n} trials{ci}; machine: {cell.machine}; runs: {', '.join(cell.runs)}"
            if metric.energy and cell.energy_method:
                extra += f"; energy method: {cell.energy_method}"
                if cell.energy_method == "estimate":
                    extra += " (ESTIMATED from CPU time, not measured)"
            if cell.flags:  # read these numbers with care: the run says why
                extra += "; UNRELIABLE: measured " + "; ".join(cell.flags)
            entry["extra"] = extra
            (bigger if metric.higher_is_better else smaller).append(entry)
    return bigger, smaller


def bencher_document(cells: Sequence[ExportCell]) -> dict[str, dict[str, dict[str, float]]]:
    doc: dict[str, dict[str, dict[str, float]]] = {}
    for cell in cells:
        measures: dict[str, dict[str, float]] = {}
        for metric in EXPORTED:
            s = cell.summary(metric)
            if s is None:
                continue
            slug = BENCHER_MEASURES[metric.name]
            if metric.energy and cell.energy_method in ("estimate", "mixed"):
                slug += f"-{cell.energy_method}"
            m: dict[str, float] = {"value": s.mean}
            if _finite(s.half_width):
                m["lower_value"] = s.lo
                m["upper_value"] = s.hi
            measures[slug] = m
        if measures:
            doc[cell.name] = measures
    return doc


def _dump(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, allow_nan=False, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


class Export:
    """`bench export RUN... --format github-action-benchmark|bencher --out PATH`."""

    def run(
        self,
        runs: Sequence[str | Path],
        fmt: Format | str,
        out: str | Path,
        console: Any = None,
        err: TextIO | None = None,
        machine: str | None = None,
    ) -> int:
        """Write the files; return 0, 2 (usage or data error, one sentence on stderr) or 3 (the
        files could not be written).

        github-action-benchmark: `out` is a folder that gets bigger_is_better.json and
        smaller_is_better.json. bencher: `out` is the JSON file when it ends in .json, else a
        folder that gets bencher.json.
        """
        err = err if err is not None else sys.stderr
        if isinstance(runs, (str, Path)):
            runs = [runs]
        try:
            if fmt not in FORMATS:
                raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
            out_path = Path(out)
            if fmt == "github-action-benchmark" and out_path.suffix == ".json":
                raise ExportError(
                    f"github-action-benchmark writes two files ({BIGGER_FILE}, {SMALLER_FILE}): "
                    f"give --out a folder, not {out_path}"
                )
            loaded = load_runs(runs)
            if machine is not None:
                from bench.fleet import FleetError, one_machine

                try:
                    loaded = [one_machine(r, machine) for r in loaded]
                except FleetError as e:
                    raise ExportError(str(e)) from None
            data = summarise(loaded)
            if data.mixed_machines:
                found = "; ".join(f"{', '.join(r.tag for r in rs)} on {rs[0].machine_label}"
                                  for rs in data.machines.values())
                fleet = any("@" in r.tag for r in data.runs)
                raise ExportError(
                    f"the runs come from different machines ({found}); export one machine's "
                    "runs at a time" + (" (--machine NAME picks one of a fleet run)"
                                        if fleet else "")
                )
            cells = export_cells(data.cells)
            if not cells:
                raise ExportError("no cell has successful trials to export")
        except (ExportError, ReportError) as e:
            print(f"bench export: {e}", file=err)
            return EXIT_USAGE
        try:
            if fmt == "github-action-benchmark":
                out_path.mkdir(parents=True, exist_ok=True)
                bigger, smaller = github_entries(cells)
                written = [out_path / BIGGER_FILE, out_path / SMALLER_FILE]
                _dump(written[0], bigger)
                _dump(written[1], smaller)
            else:
                target = out_path if out_path.suffix == ".json" else out_path / BENCHER_FILE
                target.parent.mkdir(parents=True, exist_ok=True)
                _dump(target, bencher_document(cells))
                written = [target]
        except OSError as e:
            print(f"bench export: cannot write {out_path} ({e.strerror or e}); choose another "
                  "--out", file=err)
            return EXIT_WRITE
        text = f"export ({fmt}, {len(cells)} cells): " + ", ".join(str(p) for p in written)
        if console is None:
            print(text)
        else:
            console.print(text, markup=False, highlight=False)
        return EXIT_OK
