"""The one results schema: every column of every run table, named once with its Arrow type, unit,
direction (higher or lower is better), label and format, and the helpers everything that prints,
compares or exports numbers takes them from (`format_value`, `format_ci`, `cell_label`,
`parse_threshold_pct`, `arrow_schema`).

docs/results.md's column tables are generated from here: `python -m bench.columns` rewrites them
between their `<!-- columns:NAME -->` markers, and tests/test_columns.py checks the doc is current.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

Direction = Literal["higher", "lower"]
Kind = Literal["str", "int", "float", "bool", "json"]

# The one "no value" mark of every table, terminal line and report cell.
MISSING = "–"
# What ± means, everywhere: said once so every output can say it the same way.
CI_NOTE = "± is the half width of the 95% confidence interval (Student's t) of the mean"

_ARROW: dict[Kind, pa.DataType] = {
    "str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
    "json": pa.string(),
}


@dataclass(frozen=True)
class Column:
    """One column of a run table.

    `unit` is the unit of the stored value; `scale` turns it into `display_unit`, the one unit the
    quantity is shown in by every output (TTFT is stored in s and shown in ms everywhere).
    """

    name: str
    kind: Kind
    doc: str
    unit: str = ""
    direction: Direction | None = None
    label: str = ""  # a short header ("decode t/s"); the name when empty
    title: str = ""  # words for a plot axis ("decode"); the label when empty
    display: str = ""  # the unit shown; `unit` when empty
    scale: float = 1.0  # stored value x scale = the value in `display_unit`
    energy: bool = False  # depends on how energy was obtained (meter vs estimate)
    short: str = ""  # the cell-label abbreviation of a setting ("t" for n_threads)

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW[self.kind]

    @property
    def display_unit(self) -> str:
        return self.display or self.unit

    @property
    def header(self) -> str:
        return self.label or self.name

    @property
    def words(self) -> str:
        return self.title or self.header

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"

    @property
    def slug(self) -> str:
        """A file-name part: the name, with a stored unit suffix dropped when shown otherwise."""
        return self.name.removesuffix("_s") if self.display and self.scale != 1.0 else self.name


def _c(name: str, kind: Kind, doc: str, **kw: Any) -> Column:
    return Column(name, kind, doc, **kw)


_HI: dict[str, Any] = {"direction": "higher"}
_LO: dict[str, Any] = {"direction": "lower"}

# Cell parameters: every trial carries them, and cell labels are built from them in this order.
# Every table says which machine measured each row, so a table read alone (DuckDB over the
# parquet files, a fleet run's rows) never mixes machines. Local runs take them from the manifest
# (bench.results.RunWriter stamps them); a fleet run from the worker that measured the row.
_MACHINE: tuple[Column, ...] = (
    _c("machine", "str", "the machine's name: the fleet worker's name, else the hostname"),
    _c("machine_id", "str", "16 hex: fingerprint of what decides performance (CPU model and "
       "cores, RAM in GiB, OS, architecture, NVIDIA GPU models); runs compare only when it "
       "matches. A machine with an NVIDIA GPU got a new id when its GPUs joined the "
       "fingerprint: its earlier runs count as another machine's"),
)

PARAM_COLUMNS: tuple[Column, ...] = (
    _c("model", "str", "model id from the config"),
    _c("quant", "str", 'quantization label ("" if none)'),
    _c("backend", "str", "backend name"),
    _c("n_threads", "int", "CPU threads", short="t", label="threads"),
    _c("n_gpu_layers", "int", "layers offloaded to the GPU (-1 = all)", short="ngl",
       label="GPU layers"),
    _c("n_ctx", "int", "context size", short="ctx", label="context size"),
    _c("n_batch", "int", "batch size", short="b", label="batch size"),
    _c("n_ubatch", "int", "micro-batch size", short="ub", label="micro-batch size"),
    _c("flash_attn", "bool", "flash attention on", short="fa"),
    _c("lang", "str", "the prompt's language (prompt packs; null otherwise)"),
    _c("prompt_tokens", "int", "requested synthetic prompt length (null for text prompts)",
       short="pp", label="prompt tokens"),
    _c("prompt_id", "str", '"synthetic-<N>" or the prompt\'s id'),
    _c("gen_tokens", "int", "requested generated tokens", short="tg", label="generated tokens"),
    _c("depth", "int", "context depth: tokens filled into the KV cache (or RNN state) untimed "
       "before the prompt, like llama-bench -d", short="d", label="context depth"),
)
PARAMS: tuple[str, ...] = tuple(c.name for c in PARAM_COLUMNS)

TRIALS: tuple[Column, ...] = (
    _c("run_id", "str", "the run's id"),
    *_MACHINE,
    _c("cell_id", "str", "`c001`… in run order"),
    _c("cell_key", "str", "16 hex: hash of everything that makes two cells comparable (model "
       "identity = sha256 when known, else id+quant; backend; engine settings; workload); "
       "compare matches on it"),
    _c("settings_hash", "str", "hash of the cell's settings, trial counts included (resume "
       "matches on it)"),
    *PARAM_COLUMNS,
    _c("trial", "int", "0-based within the cell, warm-ups first"),
    _c("warmup", "bool", "warm-up trials are recorded, never summarised"),
    _c("status", "str", '"ok" or "error"'),
    _c("cell_status", "str", "the status of the trial's cell, added when a run is read: "
       '"ok", or "error" for a cell that failed part-way (its measured trials are kept for '
       "diagnosis and never summarised, plotted, compared or exported)"),
    _c("error", "str", "why the trial failed"),
    _c("n_prompt", "int", "prompt tokens evaluated", unit="tokens"),
    _c("n_gen", "int", "tokens generated", unit="tokens"),
    _c("count_source", "str", "where the counts come from: `engine` (in process), `usage`, "
       "`server`, `length`, `tokenizer`, `chunks` (HTTP backends, docs/servers.md)"),
    _c("ttft_s", "float", "time to first token", unit="s", display="ms", scale=1000.0,
       label="TTFT ms", title="time to first token", **_LO),
    _c("prefill_s", "float", "prompt processing time", unit="s", label="prefill s", **_LO),
    _c("decode_s", "float", "first to last token", unit="s", label="decode s", **_LO),
    _c("e2e_s", "float", "start to last token", unit="s", label="e2e s", **_LO),
    _c("prefill_tps", "float", "prompt tokens per second", unit="tokens/s",
       label="prefill t/s", title="prefill", **_HI),
    _c("decode_tps", "float", "generated tokens per second after the first",
       unit="tokens/s", label="decode t/s", title="decode", **_HI),
    _c("e2e_tps", "float", "generated tokens per second, start to last token",
       unit="tokens/s", label="e2e t/s", **_HI),
    _c("itl_ms_p50", "float", "inter-token latency, median", unit="ms", label="ITL p50 ms",
       **_LO),
    _c("itl_ms_p90", "float", "inter-token latency, 90th percentile", unit="ms",
       label="ITL p90 ms", **_LO),
    _c("itl_ms_p99", "float", "inter-token latency, 99th percentile", unit="ms",
       label="ITL p99 ms", **_LO),
    _c("stopped_at_eos", "bool", "generation ended at EOS (only with workload.stop_at_eos)"),
    _c("engine_n_p_eval", "int", "llama.cpp's own prompt token count", unit="tokens"),
    _c("engine_t_p_eval_ms", "float", "llama.cpp's own prompt time", unit="ms"),
    _c("engine_n_eval", "int", "llama.cpp's own generation step count", unit="tokens"),
    _c("engine_t_eval_ms", "float", "llama.cpp's own generation time", unit="ms"),
    _c("engine_prefill_tps", "float", "prefill rate from the engine's timings",
       unit="tokens/s", label="engine prefill t/s", **_HI),
    _c("engine_decode_tps", "float", "decode rate from the engine's timings", unit="tokens/s",
       label="engine decode t/s", **_HI),
    _c("engine_raw_usage", "str", "HTTP backends: the server's own counts (usage, timings) as "
       "JSON, kept as evidence beside bench's checks of them (docs/servers.md)"),
    _c("flash_attn_effective", "bool", "the flash attention llama.cpp chose (with flash_attn "
       "auto, read from its log at context creation); null where it did not say"),
    _c("model_source", "str", '"synthetic" for a model of random weights (bench.synthetic: '
       'speed and energy only, never quality), else the source kind'),
    _c("roofline_tps", "float", "decode bound at batch 1: measured memory bandwidth / bytes "
       "read per token (weights + KV cache at the decode phase's mean context, or + a "
       "recurrent model's state; docs/speed.md)", unit="tokens/s", label="bound t/s"),
    _c("roofline_pct", "float", "decode t/s as a percentage of roofline_tps", unit="%",
       label="% of roofline"),
    _c("roofline_bytes_per_token", "float", "bytes read per generated token in that bound",
       unit="bytes"),
    _c("roofline_memory", "str", 'which memory bounds it: "cpu" (DRAM) or "gpu" (device '
       "memory)"),
    _c("roofline_method", "str", "how the bytes per token were obtained: the GGUF file's "
       "tensor table, or the weights as the engine holds them (an RWKV strategy's or a "
       "transformers dtype's)"),
    _c("roofline_note", "str", "why the bound may not hold (a model that fits in cache, "
       "a bandwidth that could not be measured)"),
    _c("j_floor", "float", "idle power / decode t/s: a lower bound on gross J/token",
       unit="J/token", energy=True),
    _c("j_floor_ratio", "float", "gross J/token / j_floor (1 = nothing but idle power)",
       energy=True),
    _c("overhead_prefill_pct", "float", "(wall − engine) / wall × 100, prefill", unit="%"),
    _c("overhead_decode_pct", "float", "(wall − engine) / wall × 100, decode", unit="%"),
    _c("load_id", "str", "the model load this trial ran under"),
    _c("load_s", "float", "that load's duration", unit="s"),
    _c("peak_rss_bytes", "int", "peak resident memory of the load", unit="bytes"),
    _c("energy_j", "float", "prefill + decode, component domains summed; null when no meter",
       unit="J", label="energy J", energy=True, **_LO),
    _c("energy_net_j", "float", "energy_j minus idle power × time", unit="J",
       label="net energy J", energy=True, **_LO),
    _c("prefill_energy_j", "float", "prefill phase energy", unit="J", label="prefill J",
       energy=True, **_LO),
    _c("decode_energy_j", "float", "decode phase energy", unit="J", label="decode J",
       energy=True, **_LO),
    _c("j_per_token", "float", "decode energy per generated token after the first",
       unit="J/token", label="J/token", title="decode energy per token", energy=True, **_LO),
    _c("j_per_prompt_token", "float", "prefill energy per prompt token", unit="J/token",
       label="J/prompt token", energy=True, **_LO),
    _c("tokens_per_j", "float", "generated tokens per joule", unit="tokens/J",
       label="tokens/J", energy=True, **_HI),
    _c("avg_power_w", "float", "energy_j / e2e_s", unit="W", label="power W", energy=True),
    _c("energy_method", "str", '"counter", "sampled", "estimate", "mixed" or ""'),
    _c("energy_resolved", "bool", "false when a phase was shorter than a meter's update period"),
    _c("energy_error", "str", "why a meter could not be read in this trial (then no energy "
       "columns)"),
    _c("meter_state_start", "json", "device state at the trial's start (NVML: temperature, SM "
       "clock, throttle reasons, memory used)"),
    _c("meter_state_end", "json", "device state at the trial's end"),
    _c("prompt_chars", "int", "the prompt's characters (code points, NFC)", unit="chars"),
    _c("prompt_words", "int", "the prompt's words (bench.workload.text)", unit="words"),
    _c("tokens_per_char", "float", "prompt fertility: n_prompt / prompt_chars",
       unit="tokens/char", title="prompt tokens per character", **_LO),
    _c("tokens_per_word", "float", "prompt fertility: n_prompt / prompt_words",
       unit="tokens/word", title="prompt tokens per word", **_LO),
    _c("gen_chars", "int", "characters of the generated text", unit="chars"),
    _c("decode_chars", "int", "characters of the decode phase (all but the first token)",
       unit="chars"),
    _c("gen_words", "int", "words of the generated text", unit="words"),
    _c("decode_chars_per_s", "float", "decode_chars / decode_s", unit="chars/s",
       label="decode chars/s", title="decode speed", **_HI),
    _c("decode_words_per_s", "float", "gen_words / decode_s", unit="words/s",
       label="decode words/s", title="decode speed", **_HI),
    _c("j_per_kchar", "float", "decode energy per 1000 decode characters", unit="J/kchar",
       label="J/kchar", title="decode energy per 1000 characters", energy=True, **_LO),
)

ENERGY: tuple[Column, ...] = (
    _c("run_id", "str", "the run's id"),
    *_MACHINE,
    _c("cell_id", "str", "the cell"),
    _c("trial", "int", "the trial"),
    _c("warmup", "bool", "a warm-up trial's row"),
    _c("phase", "str", '"prefill" or "decode"'),
    _c("domain", "str", "energy domain (cpu-package-0, gpu0, cpu-estimate, …)"),
    _c("meter", "str", "the meter that read it"),
    _c("method", "str", '"counter", "sampled" or "estimate"'),
    _c("boundary", "str", "what the domain covers (cpu-package, gpu-board, process-cpu, …)"),
    _c("component", "bool", "added to the headline energy (false: inside or around another)"),
    _c("joules", "float", "energy of the phase", unit="J", energy=True, **_LO),
    _c("net_joules", "float", "joules minus idle power × seconds", unit="J", energy=True,
       **_LO),
    _c("seconds", "float", "phase duration", unit="s"),
    _c("resolved", "bool", "the phase lasted at least the meter's update period"),
)

POWER: tuple[Column, ...] = (
    _c("run_id", "str", "the run's id"),
    *_MACHINE,
    _c("cell_id", "str", "the cell"),
    _c("trial", "int", "the trial"),
    _c("domain", "str", "energy domain"),
    _c("t_s", "float", "seconds since the trial started (interval midpoint)", unit="s"),
    _c("watts", "float", "average power over the interval", unit="W", label="power W"),
)

TOKENS: tuple[Column, ...] = (
    _c("run_id", "str", "the run's id"),
    *_MACHINE,
    _c("cell_id", "str", "the cell"),
    _c("trial", "int", "the trial"),
    _c("i", "int", "0-based token index"),
    _c("t_s", "float", "seconds since the trial started", unit="s"),
    _c("token_id", "int", "the token's id"),
)

QUALITY: tuple[Column, ...] = (
    _c("run_id", "str", "the run's id"),
    *_MACHINE,
    _c("model", "str", "model id"),
    _c("quant", "str", "quantization label"),
    _c("reference", "str", "the reference's quant label, or null"),
    _c("is_reference", "bool", "this row is the reference itself"),
    _c("lang", "str", "the text's language"),
    _c("text_id", "str", "the held-out text"),
    _c("n_tokens", "int", "tokens of the text", unit="tokens"),
    _c("n_scored", "int", "tokens scored", unit="tokens"),
    _c("n_bytes", "int", "UTF-8 bytes of the text", unit="bytes"),
    _c("n_chars", "int", "characters of the text", unit="chars"),
    _c("bits_per_byte", "float", "−log₂ p per UTF-8 byte", unit="bits/byte",
       label="bits/byte", **_LO),
    _c("bits_per_char", "float", "−log₂ p per character", unit="bits/char", **_LO),
    _c("perplexity", "float", "per-token perplexity", label="perplexity", **_LO),
    _c("kl_div", "float", "mean KL(reference ‖ this) over scored tokens", unit="nats",
       label="KL", **_LO),
    _c("kl_div_max", "float", "the worst token's KL", unit="nats", label="max KL", **_LO),
    _c("top1_agree", "float", "share of tokens where both pick the same most likely token",
       label="top-1 agree", **_HI),
    _c("size_bytes", "int", "model file size", unit="bytes"),
    _c("bits_per_weight", "float", "model bits per weight", unit="bits"),
    _c("window_tokens", "int", "scoring window", unit="tokens"),
    _c("n_windows", "int", "windows scored"),
)

TABLES: dict[str, tuple[Column, ...]] = {
    "trials": TRIALS, "energy": ENERGY, "power": POWER, "tokens": TOKENS, "quality": QUALITY,
}
_BY_NAME: dict[str, dict[str, Column]] = {t: {c.name: c for c in cols} for t, cols in
                                          TABLES.items()}

# Trial metrics with a direction: what compare can judge and report can rank.
METRICS: dict[str, Column] = {c.name: c for c in TRIALS if c.direction is not None}


class SchemaError(ValueError):
    """A name that is not a column of the schema; the message lists the valid ones."""


def column(name: str, table: str = "trials") -> Column:
    try:
        return _BY_NAME[table][name]
    except KeyError:
        raise SchemaError(f"{name!r} is not a column of {table}") from None


def metric(name: str) -> Column:
    """A trial column with a direction, or SchemaError naming the choices."""
    if name not in METRICS:
        raise SchemaError(f"unknown metric {name!r}; choose from {', '.join(sorted(METRICS))}")
    return METRICS[name]


def direction(name: str) -> Direction:
    return metric(name).direction  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Arrow


def arrow_schema(table: str, rows: Iterable[Mapping[str, Any]] | None = None) -> pa.Schema:
    """The explicit Arrow schema of `table`, declared columns in declared order.

    With `rows`, the schema of exactly the columns those rows hold: the declared ones with their
    declared types, then (trials only) a backend's own swept settings that are not declared
    here (server arguments, Ollama options: open-ended by design), typed from their values.
    Any other undeclared column raises SchemaError: a new column is declared here first.
    """
    if table not in TABLES:
        raise SchemaError(f"unknown table {table!r}; choose from {', '.join(TABLES)}")
    declared = TABLES[table]
    if rows is None:
        return pa.schema([pa.field(c.name, c.arrow_type) for c in declared])
    rows = list(rows)
    present: dict[str, None] = {}
    for r in rows:
        present.update(dict.fromkeys(r))
    fields = [pa.field(c.name, c.arrow_type) for c in declared if c.name in present]
    extra = [k for k in present if k not in _BY_NAME[table]]
    if extra and table != "trials":
        raise SchemaError(
            f"{table} rows hold undeclared column(s) {', '.join(extra)}; declare them in "
            "bench/columns.py"
        )
    for k in extra:
        values = [r.get(k) for r in rows if r.get(k) is not None]
        fields.append(pa.field(k, pa.infer_type(values) if values else pa.null()))
    return pa.schema(fields)


# --------------------------------------------------------------------------------------------
# Formatting


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def format_number(v: float | None) -> str:
    """Three significant digits or so, without scientific notation for ordinary sizes."""
    x = _finite(v)
    if x is None:
        return MISSING
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    if a >= 0.01:
        return f"{x:.3f}"
    if a == 0:
        return "0"
    return f"{x:.2g}"


def format_value(v: Any, col: Column | str | None = None) -> str:
    """A stored value as every output shows it: scaled to the column's display unit."""
    c = column(col) if isinstance(col, str) else col
    if v is None:
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and not math.isfinite(v):
        return MISSING
    if isinstance(v, (int, float)):
        if c is not None and c.kind == "int":
            return str(int(v))
        return format_number(v * (c.scale if c else 1.0))
    return str(v)


def format_ci(
    mean: float | None, half_width: float | None, col: Column | str | None = None,
    n: int | None = None,
) -> str:
    """"72.9 ± 4.6": the mean and the 95% CI half width, scaled to the display unit.

    The half width gets two significant digits and the mean the same decimal place. No
    interval (one trial: an infinite or missing half width) shows the mean with "(n=1)" when
    `n` is given; no mean is MISSING.
    """
    c = column(col) if isinstance(col, str) else col
    scale = c.scale if c else 1.0
    m = _finite(mean)
    if m is None:
        return MISSING
    m *= scale
    h = _finite(half_width)
    if h is None:
        return format_number(m) + (f" (n={n})" if n is not None else "")
    h *= scale
    if h <= abs(m) * 1e-9:  # identical trials, up to rounding
        return f"{format_number(m)} ± 0"
    digits = min(6, max(0, 1 - math.floor(math.log10(h))))
    return f"{m:,.{digits}f} ± {h:,.{digits}f}"


def format_change(pct: float | None) -> str:
    """"+4.2%"; a change that rounds to nothing is "0.0%"."""
    x = _finite(pct)
    if x is None:
        return MISSING
    text = f"{x:+.1f}%"
    return "0.0%" if text in ("+0.0%", "-0.0%") else text


# Enough to defuse links, images, code and emphasis; ( ) alone link nothing.
_MD_SPECIAL = "\\`*[]!|"


def md_text(text: object) -> str:
    """Text from a run (model names, config descriptions, errors) safe anywhere in Markdown:
    no raw HTML (`&`, `<`, `>` become entities), no `*` emphasis, code, link or image syntax (its
    punctuation is backslash-escaped), no table break (`|` escaped, line breaks folded), and no
    bare URL a renderer would turn into a link (a zero-width space after `://` and `www`)."""
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = "".join(f"\\{ch}" if ch in _MD_SPECIAL else ch for ch in s)
    s = s.replace("://", ":/\u200b/").replace("www.", "www\u200b.")
    return " ".join(s.split())


# --------------------------------------------------------------------------------------------
# Cell labels


_PARAM_BY_NAME = {c.name: c for c in PARAM_COLUMNS}


def cell_label(params: Mapping[str, Any], keys: Sequence[str] | None = None) -> str:
    """The one cell label: "smollm2-135m Q4_1 llama-cpp t=2 ngl=0 ctx=2048 b=512 ub=512 pp128
    tg64", llama-bench's abbreviations, then `lang=hi` and any setting a backend adds
    (`label=…`, server arguments) as key=value.

    `params` may be a cell's parameters or a whole trial row. `keys` keeps only those
    parameters (what varies between the cells shown); "?" when nothing is left.
    """
    if keys is None:
        # A whole trial row works too: its measured columns are declared, a backend's own
        # settings (server arguments) are not, and only those join the label.
        trial = _BY_NAME["trials"]
        wanted = [k for k in params if k in _PARAM_BY_NAME or k not in trial]
    else:
        wanted = [k for k in keys if k in params]
    parts: list[str] = []
    for name in ("model", "quant", "backend"):
        if name in wanted and params.get(name):
            parts.append(str(params[name]))
    for name in ("n_threads", "n_gpu_layers", "n_ctx", "n_batch", "n_ubatch"):
        if name in wanted and params.get(name) is not None:
            parts.append(f"{_PARAM_BY_NAME[name].short}={params[name]}")
    if "flash_attn" in wanted and params.get("flash_attn"):
        parts.append("fa")
    if "prompt_tokens" in wanted and params.get("prompt_tokens") is not None:
        parts.append(f"pp{params['prompt_tokens']}")
    elif "prompt_id" in wanted and params.get("prompt_id"):
        parts.append(str(params["prompt_id"]))
    if "gen_tokens" in wanted and params.get("gen_tokens") is not None:
        parts.append(f"tg{params['gen_tokens']}")
    if "depth" in wanted and params.get("depth"):
        parts.append(f"@d{params['depth']}")
    if "lang" in wanted and params.get("lang"):
        parts.append(f"lang={params['lang']}")
    for name in wanted:
        if name not in _PARAM_BY_NAME and params.get(name) is not None:
            parts.append(f"{name}={params[name]}")
    return " ".join(parts) or "?"


def unique_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """key -> label, with `#<first 8 of key>` added where two keys share a label."""
    seen: dict[str, int] = {}
    for text in labels.values():
        seen[text] = seen.get(text, 0) + 1
    return {k: (f"{t} #{k[:8]}" if seen[t] > 1 else t) for k, t in labels.items()}


# --------------------------------------------------------------------------------------------
# Thresholds


def parse_threshold_pct(text: str | float) -> float:
    """"5%", "5" or "2.5 %" -> 5.0; a number passes through. Raises ValueError (one sentence)
    for text that is not a percentage >= 0."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        raw = str(text).strip().removesuffix("%").strip()
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"threshold {text!r} is not a percentage such as '5%'") from None
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"the threshold must be a percentage >= 0, got {text}")
    return value


# --------------------------------------------------------------------------------------------
# The doc


def render_doc_table(table: str) -> str:
    """The Markdown column table of `table` for docs/results.md."""
    lines = ["| column | type | unit | better | meaning |", "|---|---|---|---|---|"]
    for c in TABLES[table]:
        unit = c.unit + (f" (shown in {c.display})" if c.display and c.display != c.unit else "")
        lines.append(f"| `{c.name}` | {c.kind} | {unit} | {c.direction or ''} | {c.doc} |")
    return "\n".join(lines)


_START, _END = "<!-- columns:{} -->", "<!-- /columns:{} -->"


def update_doc(text: str) -> str:
    """`text` with every `<!-- columns:TABLE -->` ... `<!-- /columns:TABLE -->` block replaced
    by the current table; SchemaError when a table has no block."""
    for table in TABLES:
        start, end = _START.format(table), _END.format(table)
        i, j = text.find(start), text.find(end)
        if i < 0 or j < i:
            raise SchemaError(f"the doc has no {start} ... {end} block")
        text = text[: i + len(start)] + "\n" + render_doc_table(table) + "\n" + text[j:]
    return text


if __name__ == "__main__":
    import sys
    from pathlib import Path

    doc = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results.md")
    doc.write_text(update_doc(doc.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated the column tables in {doc}")
