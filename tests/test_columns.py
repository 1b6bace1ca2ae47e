"""bench.columns: the one results schema against the doc and against the tables a real run
writes, and the shared formatting (± 95% CI, one missing mark, one cell label, thresholds)."""
from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import SMOL_MODEL_YAML

from bench import columns
from bench.columns import (
    MISSING,
    SchemaError,
    arrow_schema,
    cell_label,
    format_change,
    format_ci,
    format_value,
    md_text,
    parse_threshold_pct,
    unique_labels,
)
from bench.config import loads_config
from bench.results import TABLES, load_run
from bench.runner import Runner
from bench.stats import mean_ci
from bench.sweep import expand

DOC = Path(__file__).resolve().parent.parent / "docs" / "results.md"

# --- the doc ---------------------------------------------------------------------------------


def test_the_results_doc_column_tables_are_the_schema():
    text = DOC.read_text(encoding="utf-8")
    assert columns.update_doc(text) == text, (
        "docs/results.md is out of date: run `python -m bench.columns docs/results.md`"
    )
    for table, cols in columns.TABLES.items():
        for c in cols:
            assert f"| `{c.name}` | {c.kind} |" in text, (table, c.name)


def test_every_table_the_writer_knows_has_a_schema():
    assert set(TABLES) == set(columns.TABLES)


# --- a real run's tables ----------------------------------------------------------------------

# One-token prompts: the shortest real run that writes every table but quality (trials, energy
# from the labelled estimate, power, tokens).
REAL = (
    f"name: schema\nmodels:\n{SMOL_MODEL_YAML}backends:\n  - name: llama-cpp\n"
    "    n_threads: 1\n    n_ctx: 64\n"
    "workload: {prompt_tokens: 1, gen_tokens: 4}\ntrials: {warmup: 1, repeat: 2}\n"
    "energy: {meters: auto, idle_s: 0, interval_ms: 10}\n"
)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    loaded = loads_config(REAL)
    outcome = Runner(loaded, expand(loaded.config), tmp_path_factory.mktemp("schema")).run()
    assert outcome.cells_ok == 1
    return outcome.folder


@pytest.mark.slow
def test_every_column_a_real_run_writes_is_declared_with_its_arrow_type(real_run):
    run = load_run(real_run)
    seen = 0
    for table in ("trials", "energy", "power", "tokens"):
        rows = run.trials if table == "trials" else run.table(table)
        assert rows, table
        schema = arrow_schema(table, rows)
        written = pq.read_schema(real_run / f"{table}.parquet")
        for name in written.names:
            col = columns.column(name, table)  # SchemaError for an undeclared column
            assert schema.field(name).type == col.arrow_type
            # What the writer guessed from the values agrees with the declared type, where the
            # values said anything at all (an all-null column is typed null).
            if written.field(name).type != pa.null():
                assert written.field(name).type == col.arrow_type, (table, name)
            seen += 1
        # The explicit schema takes the rows as they are.
        assert pa.Table.from_pylist(rows, schema=schema).num_rows == len(rows)
    assert seen > 60


def test_the_full_schema_of_a_table_is_every_declared_column_in_order():
    schema = arrow_schema("power")
    assert schema.names == [c.name for c in columns.POWER]
    assert schema.field("watts").type == pa.float64()
    assert arrow_schema("trials").field("warmup").type == pa.bool_()


def test_rows_get_declared_types_even_when_their_values_would_guess_otherwise():
    rows = [{"run_id": "r", "cell_id": "c001", "trial": 0, "domain": "d", "t_s": 1, "watts": 2}]
    schema = arrow_schema("power", rows)
    assert schema.field("watts").type == pa.float64()  # an int value, a float column
    table = pa.Table.from_pylist(rows, schema=schema)
    assert table.column("watts").to_pylist() == [2.0]


def test_a_backends_own_settings_are_typed_from_their_values_in_trials_only():
    rows = [{"run_id": "r", "model": "m", "label": "llama-server", "ctx-size": 2048}]
    schema = arrow_schema("trials", rows)
    assert schema.field("label").type == pa.string()
    assert schema.field("ctx-size").type == pa.int64()
    with pytest.raises(SchemaError, match="undeclared column"):
        arrow_schema("energy", [{"run_id": "r", "joulez": 1.0}])
    with pytest.raises(SchemaError, match="unknown table"):
        arrow_schema("trial")


# --- direction, units, formatting ------------------------------------------------------------


def test_direction_is_declared_once_for_every_metric():
    assert columns.direction("decode_tps") == "higher"
    assert columns.direction("ttft_s") == "lower"
    assert columns.direction("j_per_token") == "lower"
    assert columns.direction("tokens_per_j") == "higher"
    with pytest.raises(SchemaError, match="unknown metric 'tokens_per_fortnight'; choose from"):
        columns.metric("tokens_per_fortnight")
    # Every energy metric says so, so compare can refuse meter-vs-estimate comparisons.
    assert {c.name for c in columns.METRICS.values() if c.energy} >= {
        "energy_j", "j_per_token", "tokens_per_j", "j_per_kchar"}


def test_ttft_is_stored_in_seconds_and_shown_in_milliseconds_everywhere():
    ttft = columns.column("ttft_s")
    assert (ttft.unit, ttft.display_unit, ttft.scale) == ("s", "ms", 1000.0)
    assert format_value(0.0123, ttft) == "12.30"
    values = [0.010, 0.012, 0.011]
    s = mean_ci(values)
    text = format_ci(s.mean, s.half_width, "ttft_s")
    assert text.startswith("11.") and " ± " in text  # ms, not 0.011 s


def test_format_ci_has_two_significant_digits_of_the_half_width_and_one_missing_mark():
    assert format_ci(72.91, 4.58) == "72.9 ± 4.6"
    assert format_ci(100.333, 0.7093) == "100.33 ± 0.71"
    assert format_ci(72.9, math.inf, n=1) == "72.90 (n=1)"
    assert format_ci(72.9, None) == "72.90"
    assert format_ci(None, 1.0) == MISSING
    assert format_ci(math.nan, 1.0) == MISSING
    assert format_ci(5.0, 0.0) == "5.00 ± 0"
    assert format_value(None) == format_value(math.nan) == format_change(None) == MISSING


def test_changes_are_signed_percentages_and_a_rounded_zero_has_no_sign():
    assert format_change(-10.0) == "-10.0%"
    assert format_change(4.25) == "+4.2%"
    assert format_change(-0.04) == "0.0%"


# --- one cell label ----------------------------------------------------------------------------

PARAMS = {"model": "smollm2-135m", "quant": "Q4_1", "backend": "llama-cpp", "n_threads": 2,
          "n_gpu_layers": 0, "n_ctx": 2048, "n_batch": 512, "n_ubatch": 512,
          "flash_attn": False, "lang": None, "prompt_tokens": 128,
          "prompt_id": "synthetic-128", "gen_tokens": 64}


def test_the_cell_label_reads_like_llama_bench():
    assert cell_label(PARAMS) == (
        "smollm2-135m Q4_1 llama-cpp t=2 ngl=0 ctx=2048 b=512 ub=512 pp128 tg64")
    label = cell_label({**PARAMS, "flash_attn": True, "lang": "hi"})
    assert label.endswith("fa pp128 tg64 lang=hi")
    text = {**PARAMS, "prompt_tokens": None, "prompt_id": "p03"}
    assert "p03 tg64" in cell_label(text)


def test_a_cell_label_of_some_keys_names_only_those():
    assert cell_label(PARAMS, ["quant", "n_threads"]) == "Q4_1 t=2"
    assert cell_label(PARAMS, []) == "?"


def test_a_trial_row_labels_like_its_cell_and_a_backends_own_settings_join_the_label():
    row = {**PARAMS, "trial": 3, "decode_tps": 99.0, "status": "ok", "warmup": False}
    assert cell_label(row) == cell_label(PARAMS)
    served = {**PARAMS, "backend": "openai", "label": "llama-server"}
    assert cell_label(served).endswith("tg64 label=llama-server")


def test_two_keys_with_one_label_are_told_apart_by_their_key():
    out = unique_labels({"aaaaaaaa1111": "x t=2", "bbbbbbbb2222": "x t=2", "cccc": "y"})
    assert out == {"aaaaaaaa1111": "x t=2 #aaaaaaaa", "bbbbbbbb2222": "x t=2 #bbbbbbbb",
                   "cccc": "y"}


# --- thresholds and Markdown -------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [("5%", 5.0), (" 2.5 % ", 2.5), ("10", 10.0),
                                             (7, 7.0), ("0%", 0.0)])
def test_a_threshold_is_a_percentage(text, value):
    assert parse_threshold_pct(text) == value


@pytest.mark.parametrize("text", ["-3%", "five", "5 percent", "nan", "inf%", True])
def test_a_threshold_that_is_not_a_percentage_is_one_sentence(text):
    with pytest.raises(ValueError) as e:
        parse_threshold_pct(text)
    assert "threshold" in str(e.value) and "\n" not in str(e.value)


def test_markdown_text_cannot_make_links_images_html_or_break_a_table():
    hostile = "![x](https://evil.example/p.png) [click](javascript:alert(1)) <b>|a\nb www.x.io"
    out = md_text(hostile)
    assert "![" not in out and "](" not in out.replace("\\](", "")
    assert "\\[click\\]" in out and "\\!\\[x\\]" in out
    assert "<b>" not in out and "&lt;b&gt;" in out
    assert "\\|" in out and "\n" not in out
    assert "https://" not in out and "www." not in out  # no autolink either
