"""Runs -> the numbers a report or an export shows: one summary per cell, with runs told apart.

Owns which trials count (non-warm-up, status ok), the 95 % Student's t intervals of the headline
metrics, the representative trial of a cell (the median by decode t/s), the Pareto front of speed
against energy, and the labels that keep cells of several runs and machines apart. No plotting
and no files here, so `bench.export` uses it without matplotlib.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.compare import describe_cell
from bench.results import ResultsError, Run, is_run_folder, load_run
from bench.stats import Summary, mean_ci

if TYPE_CHECKING:
    from bench.report.ladder import Ladder
    from bench.report.multilingual import Languages

# Cell parameters in the order of describe_cell; the numeric ones can be swept as an x axis.
# "lang" is the prompt's language (multilingual packs; None for other prompts).
PARAMS = ("model", "quant", "backend", "n_threads", "n_gpu_layers", "n_ctx", "n_batch",
          "n_ubatch", "flash_attn", "lang", "prompt_tokens", "prompt_id", "gen_tokens",
          # the rwkv and transformers backends' settings, and the context depth (#13)
          "strategy", "device", "dtype", "attn_implementation", "depth")
SWEEP_KEYS = ("n_threads", "prompt_tokens", "gen_tokens", "n_gpu_layers", "n_ctx", "n_batch",
              "n_ubatch")
SWEEP_LABELS = {
    "n_threads": "threads", "prompt_tokens": "prompt tokens", "gen_tokens": "generated tokens",
    "n_gpu_layers": "GPU layers", "n_ctx": "context size", "n_batch": "batch size",
    "n_ubatch": "micro-batch size",
}


@dataclass(frozen=True)
class Metric:
    key: str  # the trials column
    title: str
    unit: str
    scale: float = 1.0  # column value x scale = the number shown in `unit`
    higher_is_better: bool = True
    energy: bool = False

    @property
    def slug(self) -> str:
        return "ttft" if self.key == "ttft_s" else self.key


PREFILL = Metric("prefill_tps", "prefill", "tokens/s")
DECODE = Metric("decode_tps", "decode", "tokens/s")
TTFT = Metric("ttft_s", "time to first token", "ms", 1000.0, higher_is_better=False)
J_PER_TOKEN = Metric("j_per_token", "decode energy per token", "J/token",
                     higher_is_better=False, energy=True)
METRICS: tuple[Metric, ...] = (PREFILL, DECODE, TTFT, J_PER_TOKEN)
# Language-fair figures (per character, per word) of multilingual runs; docs/results.md.
CHARS_PER_S = Metric("decode_chars_per_s", "decode speed", "chars/s")
WORDS_PER_S = Metric("decode_words_per_s", "decode speed", "words/s")
J_PER_KCHAR = Metric("j_per_kchar", "decode energy per 1000 characters", "J/kchar",
                     higher_is_better=False, energy=True)
TOKENS_PER_CHAR = Metric("tokens_per_char", "prompt tokens per character", "tokens/char",
                         higher_is_better=False)
TOKENS_PER_WORD = Metric("tokens_per_word", "prompt tokens per word", "tokens/word",
                         higher_is_better=False)
LANG_METRICS: tuple[Metric, ...] = (CHARS_PER_S, WORDS_PER_S, J_PER_KCHAR, TOKENS_PER_CHAR,
                                    TOKENS_PER_WORD, DECODE, J_PER_TOKEN)


class ReportError(Exception):
    """A run folder that cannot be reported; the message is one sentence for the user."""


@dataclass
class RunInfo:
    """One run of the report, with the short tag ("R1") that labels its cells in plots."""

    tag: str
    run: Run

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def manifest(self) -> dict[str, Any]:
        return self.run.manifest

    @property
    def machine(self) -> dict[str, Any]:
        return dict(self.manifest.get("machine") or {})

    @property
    def machine_id(self) -> str:
        return str(self.machine.get("id") or "?")

    @property
    def machine_label(self) -> str:
        """"AMD EPYC 7B13 on bench-ci-1": what a reader recognises a machine by."""
        m = self.machine
        cpu = str(m.get("cpu_model") or "unknown CPU")
        gpus = m.get("gpus") or []
        names = [str(g.get("name", g)) if isinstance(g, dict) else str(g) for g in gpus]
        if names:
            cpu += " + " + ", ".join(names)
        host = m.get("hostname")
        return f"{cpu} on {host}" if host else cpu

    @property
    def config_name(self) -> str:
        cfg = self.manifest.get("config") or {}
        return str(cfg.get("name") or "")

    @property
    def description(self) -> str:
        cfg = self.manifest.get("config") or {}
        return str(cfg.get("description") or "")

    @property
    def energy_methods(self) -> set[str]:
        return {str(r["energy_method"]) for r in self.run.trials if r.get("energy_method")}

    @property
    def estimated(self) -> bool:
        return "estimate" in self.energy_methods


@dataclass
class CellSummary:
    """One cell of one run: its parameters, status, samples and their summaries."""

    run: RunInfo
    cell_id: str
    cell_key: str | None
    params: dict[str, Any]
    status: str  # "ok", "error", "pending", ...
    error: str | None
    samples: list[dict[str, Any]] = field(default_factory=list)
    failed_trials: int = 0
    stats: dict[str, Summary] = field(default_factory=dict)  # metric key -> scaled summary
    values: dict[str, list[float]] = field(default_factory=dict)  # scaled samples
    energy_method: str = ""  # "counter", "sampled", "estimate", "mixed" or "" (none)
    pareto: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.samples)

    @property
    def estimated(self) -> bool:
        return self.energy_method == "estimate"

    @property
    def description(self) -> str:
        return describe(self.params)

    @property
    def lang(self) -> str | None:
        lang = self.params.get("lang")
        return str(lang) if lang else None

    @property
    def representative_trial(self) -> int | None:
        """The trial with the median decode t/s (the lower middle one for an even count)."""
        rows = [r for r in self.samples if _finite(r.get("decode_tps")) is not None]
        if not rows:
            rows = list(self.samples)
            return int(rows[len(rows) // 2]["trial"]) if rows else None
        rows.sort(key=lambda r: (float(r["decode_tps"]), int(r["trial"])))
        return int(rows[(len(rows) - 1) // 2]["trial"])

    def sample(self, trial: int) -> dict[str, Any] | None:
        return next((r for r in self.samples if r.get("trial") == trial), None)


@dataclass
class ReportData:
    runs: list[RunInfo]
    cells: list[CellSummary]

    @property
    def multi_run(self) -> bool:
        return len(self.runs) > 1

    @property
    def machines(self) -> dict[str, list[RunInfo]]:
        out: dict[str, list[RunInfo]] = {}
        for r in self.runs:
            out.setdefault(r.machine_id, []).append(r)
        return out

    @property
    def mixed_machines(self) -> bool:
        return len(self.machines) > 1

    @property
    def ok_cells(self) -> list[CellSummary]:
        return [c for c in self.cells if c.ok]

    @property
    def failed_cells(self) -> list[CellSummary]:
        return [c for c in self.cells if not c.ok]

    @property
    def estimated(self) -> bool:
        return any(c.estimated and J_PER_TOKEN.key in c.stats for c in self.cells)

    @property
    def has_energy(self) -> bool:
        return any(J_PER_TOKEN.key in c.stats for c in self.cells)

    def varying(self, cells: Sequence[CellSummary] | None = None) -> list[str]:
        """Parameters that differ between the given cells (all ok cells by default)."""
        cells = self.ok_cells if cells is None else cells
        return [k for k in PARAMS if len({_hashable(c.params.get(k)) for c in cells}) > 1]

    def label(self, cell: CellSummary, keys: Iterable[str] | None = None) -> str:
        """A short cell label: the run tag when there are several runs, then the parameters
        in `keys` (by default those that vary), or the cell id when none vary."""
        keys = self.varying() if keys is None else list(keys)
        text = describe({k: cell.params.get(k) for k in keys}) if keys else cell.cell_id
        if text == "?":
            text = cell.cell_id
        return f"{cell.run.tag} {text}" if self.multi_run else text

    def common(self) -> str:
        """The parameters every ok cell shares, as one describe_cell line ("" if none)."""
        cells = self.ok_cells
        if not cells:
            return ""
        vary = set(self.varying())
        shared = {k: cells[0].params.get(k) for k in PARAMS if k not in vary}
        text = describe(shared)
        return "" if text == "?" else text

    # Computed on first use: `bench export` never reads the quality tables.
    @cached_property
    def languages(self) -> Languages | None:
        """Per language and model figures; None unless some cell's prompt has a language."""
        from bench.report.multilingual import languages

        return languages(self)

    @cached_property
    def ladders(self) -> list[Ladder]:
        """Quantization ladders: models with a KL reference or with several quants."""
        from bench.report.ladder import ladders

        return ladders(self)


# --------------------------------------------------------------------------------------------


def describe(params: dict[str, Any]) -> str:
    """describe_cell, with the prompt's language when it has one: "gemma3-270m p03 lang=hi"."""
    text = describe_cell(params)
    lang = params.get("lang")
    if lang:
        text = f"lang={lang}" if text == "?" else f"{text} lang={lang}"
    return text


def _hashable(v: Any) -> Any:
    return repr(v) if isinstance(v, (dict, list)) else v


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _summaries(cell: CellSummary) -> None:
    for m in METRICS:
        vals = [x * m.scale for x in (_finite(r.get(m.key)) for r in cell.samples) if x is not None]
        if vals:
            cell.values[m.key] = vals
            cell.stats[m.key] = mean_ci(vals)
    methods = {str(r.get("energy_method") or "") for r in cell.samples
               if _finite(r.get(J_PER_TOKEN.key)) is not None}
    methods.discard("")
    cell.energy_method = methods.pop() if len(methods) == 1 else ("mixed" if methods else "")


def run_cells(info: RunInfo) -> list[CellSummary]:
    """The run's cells in manifest order (then any only found in trials), summarised."""
    run = info.run
    cells: dict[str, CellSummary] = {}
    for entry in run.manifest.get("cells") or []:
        cid = str(entry.get("cell_id"))
        params = dict(entry.get("params") or {})
        cells[cid] = CellSummary(
            info, cid, entry.get("cell_key"), {k: params.get(k) for k in PARAMS},
            str(entry.get("status") or "?"), entry.get("error"),
        )
    for row in run.trials:
        cid = str(row.get("cell_id"))
        cell = cells.get(cid)
        if cell is not None and cell.params.get("lang") is None and row.get("lang"):
            cell.params["lang"] = row["lang"]  # manifests older than the lang parameter
        if cell is None:
            cell = cells[cid] = CellSummary(
                info, cid, row.get("cell_key"), {k: row.get(k) for k in PARAMS},
                str(row.get("status") or "?"), row.get("error"),
            )
        if cell.cell_key is None and row.get("cell_key"):
            cell.cell_key = row["cell_key"]
        if row.get("status") != "ok":
            cell.failed_trials += 1
            if not cell.error and row.get("error"):
                cell.error = str(row["error"])
        elif not row.get("warmup"):
            cell.samples.append(row)
    for cell in cells.values():
        _summaries(cell)
    return list(cells.values())


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, gain) that no other point beats: nothing with a cost at
    most as high and a gain at least as high, one of them strictly. Sorted by cost."""
    front = []
    for i, (c, g) in enumerate(points):
        dominated = any(
            (c2 <= c and g2 >= g) and (c2 < c or g2 > g)
            for j, (c2, g2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def mark_pareto(cells: Sequence[CellSummary]) -> list[CellSummary]:
    """Mark the cells on the decode-t/s versus J/token front; returns them by J/token."""
    have = [c for c in cells if DECODE.key in c.stats and J_PER_TOKEN.key in c.stats]
    points = [(c.stats[J_PER_TOKEN.key].mean, c.stats[DECODE.key].mean) for c in have]
    front = [have[i] for i in pareto_front(points)]
    for c in have:
        c.pareto = c in front
    return front


def summarise(runs: Sequence[Run]) -> ReportData:
    infos = [RunInfo(f"R{i + 1}", r) for i, r in enumerate(runs)]
    cells = [c for info in infos for c in run_cells(info)]
    mark_pareto(cells)
    return ReportData(infos, cells)


def load_runs(paths: Sequence[str | Path], what: str = "run") -> list[Run]:
    """Paths -> runs: each a run folder or a folder holding run folders. Raises ReportError."""
    if not paths:
        raise ReportError(f"give at least one {what} folder")
    folders: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise ReportError(f"{p} does not exist; give a run folder written by `bench run`")
        if is_run_folder(p):
            folders.append(p)
        elif p.is_dir():
            try:
                kids = sorted(c for c in p.iterdir() if c.is_dir() and is_run_folder(c))
            except OSError as e:
                raise ReportError(f"cannot read {p} ({e.strerror or e})") from e
            if not kids:
                raise ReportError(
                    f"{p} is not a bench run folder (no manifest.json in it or its subfolders)"
                )
            folders.extend(kids)
        else:
            raise ReportError(f"{p} is a file, not a bench run folder")
    unique = list({f.resolve(): f for f in folders}.values())
    runs = []
    for f in unique:
        try:
            runs.append(load_run(f))
        except ResultsError as e:
            raise ReportError(str(e)) from e
        except Exception as e:  # a damaged file must end in a sentence, not a traceback
            raise ReportError(f"cannot read the run folder {f}: {type(e).__name__}: {e}") from e
    return runs


def fmt_num(v: float | None) -> str:
    """Three significant digits or so, without scientific notation for ordinary sizes."""
    if v is None or not math.isfinite(v):
        return "–"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a >= 0.01:
        return f"{v:.3f}"
    return f"{v:.2g}"


def fmt_ci(s: Summary | None) -> str:
    """"72.9 ± 4.6" (mean ± 95 % CI half width); "72.9 (n=1)" when the interval is infinite."""
    if s is None:
        return "–"
    if not math.isfinite(s.half_width):
        return f"{fmt_num(s.mean)} (n={s.n})"
    if s.half_width <= abs(s.mean) * 1e-9:  # identical trials, up to rounding
        return f"{fmt_num(s.mean)} ± 0"
    # Two significant digits of the half width, and the mean to the same decimal place.
    digits = min(6, max(0, 1 - math.floor(math.log10(s.half_width))))
    return f"{s.mean:,.{digits}f} ± {s.half_width:,.{digits}f}"


class PooledCells:
    """For a series pooled over cells: `cells` (with `samples`) and `energy_method` fields."""

    cells: list[Any]
    energy_method: str

    @property
    def estimated(self) -> bool:
        return self.energy_method == "estimate"

    @property
    def n(self) -> int:
        return sum(len(c.samples) for c in self.cells)
