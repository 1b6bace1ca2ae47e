"""bench report: the files it writes, what they reference, escaping, estimate marking, several
runs together, and errors. Synthetic run folders (written with bench.results) keep most tests
fast; one slow test reports a real small run."""
from __future__ import annotations

import base64
import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import smol_config

from bench.config import loads_config
from bench.report import Report, default_out, plots
from bench.report.data import CellSummary, ReportError, load_runs, pareto_front, summarise
from bench.results import RunWriter, load_run, write_json
from bench.runner import Runner
from bench.stats import mean_ci
from bench.sweep import expand

HOSTILE = "<script>alert(1)</script>"
DOLLARS = r"tiny$\frac$"  # not TeX: matplotlib must draw it as it is
HOSTILE_ERROR = "engine said: boom | broken pipe\nsecond line <script>alert(2)</script>"
MACHINE_A = {"id": "aaaa000011112222", "hostname": "box-a", "cpu_model": "AMD EPYC 7B13",
             "cpu_cores_physical": 2, "cpu_cores_logical": 4, "ram_bytes": 16_000_000_000,
             "os": "Linux", "gpus": []}
MACHINE_B = {**MACHINE_A, "id": "bbbb333344445555", "hostname": "laptop-b",
             "cpu_model": "Intel Core i7-1185G7"}
# The plots a synthetic run supports: the headline, four metrics, speed/energy, the threads
# sweep, power.
SYNTHETIC_PLOTS = {"headline.png", "metric_prefill_tps.png", "metric_decode_tps.png",
                   "metric_ttft.png",
                   "metric_j_per_token.png", "speed_vs_energy.png", "sweep_n_threads.png",
                   "power_1.png"}


def _params(model: str, quant: str, threads: int) -> dict[str, Any]:
    return {"model": model, "quant": quant, "backend": "llama-cpp", "n_threads": threads,
            "n_gpu_layers": 0, "n_ctx": 512, "n_batch": 512, "n_ubatch": 512,
            "flash_attn": False, "prompt_id": "synthetic-64", "prompt_tokens": 64,
            "gen_tokens": 16}


# (model, quant, threads, decode t/s of the measured trials); decode scales with threads.
CELLS = [
    (HOSTILE, "Q4_0", 1, [19.0, 20.0, 21.0]),
    (HOSTILE, "Q4_0", 2, [38.0, 40.0, 42.0]),
    (HOSTILE, "Q4_0", 4, [70.0, 72.0, 74.0]),
    (DOLLARS, "Q8_0", 2, [30.0, 31.0, 32.0]),
]
WARMUP_DECODE_TPS = 5000.0  # far off every measured trial: it must never reach a summary


def make_run(
    root: Path, run_id: str, machine: dict[str, Any] = MACHINE_A, method: str = "estimate",
    cells: list[tuple[str, str, int, list[float]]] = CELLS, failed: bool = True,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A run folder written the way the runner writes one: manifest, trials, power, tokens."""
    folder = root / run_id
    domain = "cpu-estimate" if method == "estimate" else "cpu-package-0"
    manifest: dict[str, Any] = {
        "format_version": 1, "run_id": run_id, "started_utc": "2026-01-02T03:04:05+00:00",
        "finished_utc": "2026-01-02T03:05:05+00:00", "status": "finished",
        "config": {"name": "synthetic", "description": f"a config described as {HOSTILE}"},
        "machine": machine,
        "software": {"python": "3.11.7", "bench": "0.1.0", "llama_cpp_python": "0.3.9"},
        "models": {
            HOSTILE: {"id": HOSTILE, "quant": "Q4_0", "name": f"GGUF name {HOSTILE}",
                      "architecture": "llama", "n_params": 134_515_008, "bits_per_weight": 4.5,
                      "size_bytes": 98_000_000, "sha256": "ab" * 32,
                      "description": "desc with | pipe\nand newline"},
        },
        "meters": [{"name": method if method == "estimate" else "rapl", "available": True,
                    "reason": "", "fix": None, "facts": {}}],
        "domains": [{"name": domain, "meter": "estimate" if method == "estimate" else "rapl",
                     "method": method, "boundary": "process-cpu" if method == "estimate"
                     else "cpu-package", "component": True, "update_period_s": 0.01}],
        "idle": {"seconds": 1.0, "watts": {domain: 1.5}},
        "loads": [],
        "cells": [],
    }
    writer = RunWriter(folder, manifest)
    specs = list(cells) + ([("broken", "Q4_0", 2, [])] if failed else [])
    for n, (model, quant, threads, decode) in enumerate(specs, start=1):
        cid = f"c{n:03d}"
        params = _params(model, quant, threads)
        key = f"{n:016x}"
        ok = bool(decode)
        manifest["cells"].append({"cell_id": cid, "cell_key": key, "params": params,
                                  "status": "ok" if ok else "error",
                                  "error": None if ok else HOSTILE_ERROR})
        if not ok:
            writer.add("trials", [{"run_id": run_id, "cell_id": cid, "cell_key": key, **params,
                                   "trial": 0, "warmup": True, "status": "error",
                                   "error": HOSTILE_ERROR}])
            continue
        for trial, tps in enumerate([WARMUP_DECODE_TPS, *decode]):
            prefill_tps = 100.0 * threads + trial
            ttft = 64 / prefill_tps
            decode_s = 15 / tps
            jpt = 2.0 / tps
            writer.add("trials", [{
                "run_id": run_id, "cell_id": cid, "cell_key": key, **params, "trial": trial,
                "warmup": trial == 0, "status": "ok", "error": None, "n_prompt": 64,
                "n_gen": 16, "ttft_s": ttft, "prefill_s": ttft, "prefill_tps": prefill_tps,
                "decode_s": decode_s, "decode_tps": tps, "e2e_s": ttft + decode_s,
                "energy_j": jpt * 15 + 1.0, "j_per_token": jpt, "energy_method": method,
                **(extra or {}),
            }])
            writer.add("tokens", [{"run_id": run_id, "cell_id": cid, "trial": trial, "i": i,
                                   "t_s": ttft + i * decode_s / 15, "token_id": 7}
                                  for i in range(16)])
            steps = 12
            end = ttft + decode_s
            writer.add("power", [{"run_id": run_id, "cell_id": cid, "trial": trial,
                                  "domain": domain, "t_s": (k + 0.5) * end / steps,
                                  "watts": 8.0 + k % 3} for k in range(steps)])
        writer.flush()
    writer.manifest = manifest
    writer.flush()
    return folder


@dataclass
class Made:
    """A report written by a fixture: its folder, the texts drawn in each figure, stdout."""

    out: Path
    texts: dict[str, list[str]]
    stdout: str = ""


def _report(runs: list[Path], out: Path | None) -> Made:
    """Report.run with every figure's drawn texts collected as it is saved."""
    from matplotlib.text import Text

    texts: dict[str, list[str]] = {}
    save = plots._save

    def spy(fig, folder, name):
        fig.canvas.draw()  # legends and tick labels exist once drawn
        texts[name] = [t.get_text() for t in fig.findobj(Text) if t.get_text()]
        save(fig, folder, name)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "_save", spy)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert Report().run(runs, out=out) == 0
    folder = out if out is not None else default_out(load_runs(runs))
    return Made(folder, texts, buf.getvalue())


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"), "20260102T030405Z-synthetic-0123abcd")


@pytest.fixture(scope="module")
def made(synthetic, tmp_path_factory) -> Made:
    out = tmp_path_factory.mktemp("report")
    # Left by an earlier report in the same folder: a figure name the report writes (stale) and
    # one it does not (someone else's file).
    (out / "sweep_n_gpu_layers.png").write_bytes(b"old")
    (out / "notes.png").write_bytes(b"mine")
    return _report([synthetic], out)


@pytest.fixture(scope="module")
def report(made) -> Path:
    return made.out


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> Made:
    root = tmp_path_factory.mktemp("measured")
    run = make_run(root / "runs", "20260102T030405Z-measured-0123abcd", method="counter")
    return _report([run], root / "rep")


@pytest.fixture(scope="module")
def two_machines(tmp_path_factory) -> tuple[Made, Path, Path]:
    """Two runs from two machines, given as one folder of runs, to the default out folder."""
    root = tmp_path_factory.mktemp("two")
    a = make_run(root / "runs", "20260102T030405Z-synthetic-aaaaaaaa")
    # Machine B decodes the 1-thread cell twice as fast and the others the same.
    faster = [(m, q, t, [2 * x for x in d] if t == 1 else d) for m, q, t, d in CELLS]
    b = make_run(root / "runs", "20260103T030405Z-synthetic-bbbbbbbb", machine=MACHINE_B,
                 method="counter", failed=False, cells=faster)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        made = _report([root / "runs"], None)
    made.out = root / made.out
    return made, a, b


def _png_names(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.png")} - {"notes.png"}


# --------------------------------------------------------------------------------------------


def test_every_plot_file_exists_and_is_embedded_in_the_html_and_linked_from_the_markdown(report):
    assert _png_names(report) == SYNTHETIC_PLOTS
    page = (report / "report.html").read_text()
    md = (report / "report.md").read_text()
    uris = re.findall(r'src="(data:image/png;base64,[A-Za-z0-9+/=]+)"', page)
    assert len(uris) == len(SYNTHETIC_PLOTS)
    for name in SYNTHETIC_PLOTS:
        data = base64.b64encode((report / name).read_bytes()).decode()
        assert f"data:image/png;base64,{data}" in uris, name
        assert f'data-file="{name}"' in page
        assert f"]({name})" in md, name


def test_the_html_is_self_contained_with_no_external_assets_or_scripts(report):
    page = (report / "report.html").read_text()
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert not re.search(r'(src|href)="(?!data:|#)', page), "only data URIs and in-page anchors"
    assert "<style>" in page and "http://" not in page and "https://" not in page


def test_model_names_descriptions_and_errors_are_escaped_in_the_html(report):
    page = (report / "report.html").read_text()
    assert HOSTILE not in page and "<script>alert(2)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "GGUF name &lt;script&gt;" in page  # GGUF metadata
    assert "a config described as &lt;script&gt;" in page
    assert "engine said: boom | broken pipe" in page  # the failed cell's error is shown


def _table_rows_are_well_formed(md: str) -> None:
    # Every row of a Markdown table has as many unescaped | as its header.
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-:|]+\|$",
                                                                     lines[i + 1]):
            width = len(re.findall(r"(?<!\\)\|", line))
            j = i + 2
            while j < len(lines) and lines[j].startswith("|"):
                assert len(re.findall(r"(?<!\\)\|", lines[j])) == width, lines[j]
                j += 1


def test_markdown_escapes_pipes_newlines_and_html(report):
    md = (report / "report.md").read_text()
    assert "<script>" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "boom \\| broken pipe second line" in md  # pipe escaped, newline folded
    assert "desc with \\| pipe and newline" in md
    _table_rows_are_well_formed(md)


def test_failed_cells_are_in_the_tables_with_their_error_and_not_in_any_plot(made):
    page = (made.out / "report.html").read_text()
    assert "FAILED" in page and "boom | broken pipe" in page
    assert "FAILED" in (made.out / "report.md").read_text()
    shown = " ".join(t for ts in made.texts.values() for t in ts)
    assert "broken" not in shown and "c005" not in shown
    assert HOSTILE in shown and DOLLARS in shown  # names reach plots as plain text


def test_estimated_energy_is_marked_in_plots_tables_and_summary(made):
    for name in ("metric_j_per_token.png", "speed_vs_energy.png", "power_1.png"):
        texts = made.texts[name]
        assert any("ESTIMATED" in t for t in texts), name
        assert any("estimate" in t for t in texts if "J/token" in t or "(W)" in t), name
    page = (made.out / "report.html").read_text()
    md = (made.out / "report.md").read_text()
    assert "ESTIMATED ENERGY" in page and "J/token (ESTIMATED)" in page
    assert "(est.)" in page
    assert "ESTIMATED ENERGY" in md and "J/token (ESTIMATED)" in md
    assert "Energy figures are ESTIMATED" in md  # the summary says it too
    assert "ESTIMATED" in made.stdout


def test_measured_energy_is_not_called_an_estimate(measured):
    page = (measured.out / "report.html").read_text()
    assert "ESTIMATED" not in page and "(est.)" not in page
    assert not any("ESTIMATED" in t for ts in measured.texts.values() for t in ts)
    assert _png_names(measured.out) == SYNTHETIC_PLOTS


def test_two_runs_from_two_machines_are_told_apart(two_machines):
    made, a, b = two_machines
    assert made.out.name == "combined-2" and made.out.parent.name == "reports"
    page = (made.out / "report.html").read_text()
    md = (made.out / "report.md").read_text()
    for doc in (page, md):
        assert "DIFFERENT MACHINES" in doc
        assert a.name in doc and b.name in doc
        assert "AMD EPYC 7B13 on box-a" in doc and "Intel Core i7-1185G7 on laptop-b" in doc
    assert "<td>R1</td>" in page and "<td>R2</td>" in page
    drawn = " ".join(made.texts["metric_decode_tps.png"])
    assert f"R1: {a.name} (AMD EPYC 7B13 on box-a)" in drawn
    assert f"R2: {b.name} (Intel Core i7-1185G7 on laptop-b)" in drawn
    assert f"R1 {HOSTILE} t=1" in drawn and f"R2 {HOSTILE} t=1" in drawn  # run tag first
    assert "combined-2" in made.stdout


def _md_table(md: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the first Markdown table after the line `heading`."""
    lines = md.split(f"{heading}\n", 1)[1].strip().splitlines()
    table = []
    for ln in lines:
        if ln.startswith("|"):
            table.append([c.strip() for c in ln.strip("|").split("|")])
        elif table:
            break
    return table[0], table[2:]


def test_the_same_cells_on_two_machines_are_shown_side_by_side_and_never_judged(two_machines):
    made, a, b = two_machines
    md = (made.out / "report.md").read_text()
    page = (made.out / "report.html").read_text()
    assert "## Machines side by side" in md and 'id="machines"' in page
    head, rows = _md_table(md, "### Machines side by side")
    assert head == ["cell", "metric", "box-a", "laptop-b", "ahead"]
    decode = {}
    cell = ""
    for r in rows:
        cell = r[0] or cell
        if r[1].startswith("decode"):
            decode[cell] = r
    # Four cells ran on both machines (the failed one only on A, so it is not matched).
    assert len(decode) == 4
    one = next(r for c, r in decode.items() if "t=1" in c)
    assert one[2].startswith("20.0 ±") and one[3].startswith("40.0 ±") and one[4] == "laptop-b"
    assert all(r[4] == "tied" for c, r in decode.items() if "t=1" not in c)
    # A's joules are estimated, B's metered: never a winner between the two.
    energy = [r for r in rows if r[1].startswith("J/token")]
    assert len(energy) == 4 and all(r[4] == "not comparable: counter vs estimate" for r in energy)
    # Machines are compared side by side, never as a regression of one against the other.
    assert "## Comparison" not in md
    assert "Machines side by side: 4 cells measured on 2 machines; decode clearly faster: " \
        "laptop-b on 1; tied on 3." in md


def test_the_per_cell_table_says_how_near_the_roofline_and_energy_floor_each_cell_ran(
        tmp_path):
    plain, _ = _md_table((_report([make_run(tmp_path / "a", "r-plain", failed=False)],
                                  tmp_path / "ra").out / "report.md").read_text(),
                         "## Per-cell results")
    limits = {"roofline_pct": 35.4, "j_floor_ratio": 2.5,
              "roofline_note": "the weights (80 MiB) fit in the last-level cache (96 MiB): the "
                               "DRAM bound may not hold"}
    run = make_run(tmp_path / "b", "r-roof", failed=False, method="counter", extra=limits)
    md = (_report([run], tmp_path / "rb").out / "report.md").read_text()
    cols, rows = _md_table(md, "## Per-cell results")
    assert "% roofline" in cols and "× J floor" in cols
    i, j = cols.index("% roofline"), cols.index("× J floor")
    assert {r[i] for r in rows} == {"35%\\*"}  # * (escaped in Markdown): may not hold
    assert {r[j] for r in rows} == {"2.50"}
    assert "% roofline: decode t/s as a percentage of the memory-bandwidth bound" in md
    # Without a bound (an HTTP engine, no bandwidth) the columns are not there at all.
    assert len(plain) == len(cols) - 2 and "% roofline" not in plain


def test_one_run_goes_to_reports_run_id_by_default_and_several_to_combined(synthetic):
    run = load_run(synthetic)
    assert default_out([run]) == Path("reports") / synthetic.name
    assert default_out([run, run, run]) == Path("reports") / "combined-3"


def test_a_missing_run_folder_exits_2_with_one_sentence_on_stderr(tmp_path, capsys):
    assert Report().run([tmp_path / "no-such-run"], out=tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-run does not exist" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_an_unreadable_run_folder_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{ not json")
    assert Report().run([bad], out=tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "Traceback" not in err
    (bad / "manifest.json").write_text('{"format_version": 1, "run_id": "x"}')
    (bad / "power.parquet").write_bytes(b"not parquet")
    assert Report().run([bad], out=tmp_path / "out") == 2
    assert "power.parquet" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["truncated energy", "manifest shapes"])
def test_a_damaged_run_folder_is_one_sentence_and_exit_2(synthetic, tmp_path, capsys, how):
    from test_export import _damaged

    bad = _damaged(synthetic, tmp_path / "bad", how)
    assert Report().run([bad], out=tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert ("energy.parquet" if how == "truncated energy" else "cells[0]") in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("run_id", ["../../outside", "/tmp/elsewhere", "..", "a/../../b"])
def test_a_run_id_from_the_manifest_cannot_put_the_report_outside_reports(synthetic, run_id):
    run = load_run(synthetic)
    run.manifest["run_id"] = run_id
    out = default_out([run])
    assert out.parent == Path("reports") and out.name not in ("", ".", "..")
    assert out == Path("reports") / synthetic.name  # the folder's own name instead


def test_link_and_image_syntax_from_a_config_cannot_reach_the_markdown(tmp_path):
    run = make_run(tmp_path / "runs", "20260102T030405Z-links-0123abcd", failed=False)
    m = load_run(run).manifest
    m["config"]["name"] = "![pwn](https://evil.example/x.png)"
    m["config"]["description"] = "[click me](https://evil.example/login)"
    m["models"][HOSTILE]["description"] = "see ![](http://evil.example/t.gif)"
    write_json(run / "manifest.json", m)
    made = _report([run], tmp_path / "rep")
    md = (made.out / "report.md").read_text()
    assert "evil.example" in md.replace("\u200b", "")  # shown as text ...
    # ... never as a link or an image: every [ ] ! from run text is backslash-escaped, and no
    # bare URL is left for an autolinker.
    assert not re.search(r"(?<!\\)\]\(http", md)
    assert not re.search(r"(?<!\\)!(?<!\\)\[pwn", md)
    assert "\\[click me\\]" in md and "\\!\\[pwn\\]" in md
    assert "https://evil" not in md and "http://evil" not in md


def test_stale_figures_of_an_earlier_report_are_removed(report):
    assert not (report / "sweep_n_gpu_layers.png").exists()
    assert (report / "notes.png").read_bytes() == b"mine"  # not a report name: left alone


# -- the numbers behind the plots -------------------------------------------------------------


def test_summaries_leave_out_warmups_and_failed_trials(synthetic):
    data = summarise([load_run(synthetic)])
    first = data.cells[0]
    assert first.stats["decode_tps"].n == 3
    assert first.stats["decode_tps"].mean == pytest.approx(20.0)
    assert first.stats["ttft_s"].mean == pytest.approx(
        1000 * sum(64 / (100.0 + t) for t in (1, 2, 3)) / 3)  # shown in ms
    assert [c.ok for c in data.cells] == [True, True, True, True, False]
    assert data.cells[-1].error == HOSTILE_ERROR


def test_the_representative_trial_is_the_median_by_decode_speed(synthetic):
    cell = summarise([load_run(synthetic)]).cells[0]  # decode 19, 20, 21 in trials 1..3
    assert cell.representative_trial == 2
    cell.samples = [s for s in cell.samples if s["trial"] != 3]  # 19, 20: the lower middle
    assert cell.representative_trial == 1


def test_the_pareto_front_keeps_only_cells_nothing_beats_on_both_axes():
    # (J/token, t/s): the second is dominated by the first; the fourth ties the third.
    pts = [(0.1, 50.0), (0.2, 40.0), (0.3, 80.0), (0.3, 80.0), (0.05, 10.0)]
    assert pareto_front(pts) == [4, 0, 2, 3]


def test_pareto_cells_are_marked_in_the_table(synthetic):
    data = summarise([load_run(synthetic)])
    # More threads: faster and, at fixed power, fewer joules per token.
    assert [c.pareto for c in data.cells] == [False, False, True, False, False]


def test_power_phases_split_at_the_first_token(synthetic):
    data = summarise([load_run(synthetic)])
    cell: CellSummary = data.cells[0]
    first, last = plots._phase_edges(cell, 2)
    row = cell.sample(2)
    assert first == pytest.approx(row["ttft_s"])
    assert last == pytest.approx(row["ttft_s"] + row["decode_s"] * 15 / 15)


def test_load_runs_refuses_a_file(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("")
    with pytest.raises(ReportError, match="is a file"):
        load_runs([f])


# -- a real run --------------------------------------------------------------------------------

REAL = smol_config(
    "report-real", n_ctx="256", workload="{prompt_tokens: [16, 32], gen_tokens: 8}",
    trials="{warmup: 1, repeat: 2}", energy="{meters: [estimate], idle_s: 0.2}",
)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    loaded = loads_config(REAL)
    outcome = Runner(loaded, expand(loaded.config), tmp_path_factory.mktemp("real")).run()
    assert outcome.cells_ok == 2
    return outcome.folder


@pytest.mark.slow
def test_report_on_a_real_small_run(real_run, tmp_path):
    assert Report().run([real_run], out=tmp_path) == 0
    expected = {"headline.png", "metric_prefill_tps.png", "metric_decode_tps.png",
                "metric_ttft.png",
                "metric_j_per_token.png", "speed_vs_energy.png", "sweep_prompt_tokens.png",
                "power_1.png"}
    assert _png_names(tmp_path) == expected
    page = (tmp_path / "report.html").read_text()
    md = (tmp_path / "report.md").read_text()
    for name in expected:
        data = base64.b64encode((tmp_path / name).read_bytes()).decode()
        assert f"data:image/png;base64,{data}" in page
        assert f"]({name})" in md
    assert "ESTIMATED ENERGY" in page and real_run.name in page
    assert "smollm2-135m" in md and "Smollm2" in page  # the GGUF's own name, from metadata


# -- languages (multilingual runs) -------------------------------------------------------------

LANG_PLOTS = {"lang_decode_chars_per_s.png", "lang_j_per_kchar.png", "lang_fertility.png",
              "lang_bits_per_byte.png"}
# (model, lang, prompt ids, decode chars/s, J/kchar, tokens/char, tokens/word, bits/byte):
# English is cheapest on the English-centred model (1.5x), Hindi on the multilingual one (1.8x).
LANG_CELLS = [
    (HOSTILE, "en", ["p01"], 120.0, 100.0, 0.22, 1.2, 0.78),
    (HOSTILE, "hi", ["p01", "p02"], 40.0, 540.0, 1.05, 5.1, 1.21),
    ("gemma", "en", ["p01"], 90.0, 150.0, 0.23, 1.3, 0.77),
    ("gemma", "hi", ["p01", "p02"], 70.0, 300.0, 0.25, 1.2, 0.53),
]


def _trial_row(run_id: str, cid: str, params: dict[str, Any], trial: int, warmup: bool,
               decode_tps: float, jpt: float, method: str, **extra: Any) -> dict[str, Any]:
    return {"run_id": run_id, "cell_id": cid, "cell_key": f"{int(cid[1:]):016x}", **params,
            "trial": trial, "warmup": warmup, "status": "ok", "error": None, "n_prompt": 64,
            "n_gen": 16, "ttft_s": 0.2, "prefill_s": 0.2, "prefill_tps": 320.0,
            "decode_s": 15 / decode_tps, "decode_tps": decode_tps, "e2e_s": 0.2 + 15 / decode_tps,
            "energy_j": jpt * 15, "j_per_token": jpt, "energy_method": method, **extra}


def _manifest(run_id: str, name: str, models: dict[str, Any]) -> dict[str, Any]:
    return {
        "format_version": 1, "run_id": run_id, "started_utc": "2026-01-02T03:04:05+00:00",
        "finished_utc": "2026-01-02T03:05:05+00:00", "status": "finished",
        "config": {"name": name, "description": ""}, "machine": MACHINE_A,
        "software": {"python": "3.11.7", "bench": "0.1.0"}, "models": models,
        "meters": [{"name": "estimate", "available": True, "reason": "", "fix": None,
                    "facts": {}}],
        "domains": [{"name": "cpu-estimate", "meter": "estimate", "method": "estimate",
                     "boundary": "process-cpu", "component": True, "update_period_s": 0.01}],
        "idle": {"seconds": 1.0, "watts": {"cpu-estimate": 1.5}}, "loads": [], "cells": [],
    }


def make_lang_run(root: Path, run_id: str = "20260104T030405Z-multilingual-0123abcd") -> Path:
    """Two models × English and Hindi (Hindi with two prompts), one synthetic-prompt cell with
    no language, and a quality table with bits per byte per model and language."""
    writer = RunWriter(root / run_id, _manifest(run_id, "multilingual", {}))
    manifest = writer.manifest
    n = 0
    for model, lang, prompts, cps, jpk, tpc, tpw, _ in LANG_CELLS:
        quant = "Q4_1" if model == HOSTILE else "Q4_K_M"
        for prompt in prompts:
            n += 1
            cid = f"c{n:03d}"
            params = {**_params(model, quant, 2), "lang": lang, "prompt_id": prompt,
                      "prompt_tokens": None}
            manifest["cells"].append({"cell_id": cid, "cell_key": f"{n:016x}", "params": params,
                                      "status": "ok", "error": None})
            # The warm-up is far off every measured trial: it must never reach a figure.
            for trial, f in enumerate([10.0, 0.98, 1.0, 1.02]):
                writer.add("trials", [_trial_row(
                    run_id, cid, params, trial, trial == 0, 30.0 * f, jpk / 4000 * f,
                    "estimate", lang=lang, prompt_chars=300, prompt_words=60,
                    tokens_per_char=tpc * (1.1 if prompt == "p02" else 1.0),
                    tokens_per_word=tpw, gen_chars=int(cps), decode_chars=int(cps),
                    decode_chars_per_s=cps * f, decode_words_per_s=cps * f / 5,
                    j_per_kchar=jpk * f)])
    n += 1
    params = _params(HOSTILE, "Q4_1", 2)  # a synthetic prompt: no language
    manifest["cells"].append({"cell_id": f"c{n:03d}", "cell_key": f"{n:016x}", "params": params,
                              "status": "ok", "error": None})
    writer.add("trials", [_trial_row(run_id, f"c{n:03d}", params, t, False, 50.0, 0.05,
                                     "estimate", lang=None, j_per_kchar=9999.0,
                                     decode_chars_per_s=9999.0) for t in range(3)])
    writer.add("quality", [
        {"run_id": run_id, "model": model, "quant": "Q4_1" if model == HOSTILE else "Q4_K_M",
         "reference": None, "is_reference": False, "lang": lang, "text_id": f"heldout-{lang}",
         "n_tokens": 400, "n_scored": 399, "n_bytes": 1672, "n_chars": 1672,
         "bits_per_byte": bpb, "bits_per_char": bpb, "perplexity": 12.0, "kl_div": None,
         "kl_div_max": None, "top1_agree": None, "size_bytes": 98_362_432,
         "bits_per_weight": 5.74, "window_tokens": 1024, "n_windows": 1}
        for model, lang, _, _, _, _, _, bpb in LANG_CELLS])
    writer.flush()
    return root / run_id


@pytest.fixture(scope="module")
def lang_made(tmp_path_factory) -> Made:
    root = tmp_path_factory.mktemp("lang")
    return _report([make_lang_run(root / "runs")], root / "rep")


def test_the_language_section_and_its_plots_are_written_and_referenced(lang_made):
    out = lang_made.out
    assert LANG_PLOTS <= _png_names(out)
    assert not {n for n in _png_names(out) if n.startswith("quant_")}
    page = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert '<h2 id="languages">Languages</h2>' in page and '<a href="#languages">' in page
    assert "## Languages" in md
    for name in LANG_PLOTS:
        data = base64.b64encode((out / name).read_bytes()).decode()
        assert f"data:image/png;base64,{data}" in page, name
        assert f"]({name})" in md, name
    # The language figures sit in their section, before the general Figures heading.
    assert page.index('data-file="lang_fertility.png"') < page.index('<h2 id="figures">')
    for title in ("Speed and energy per language", "Tokenizer fertility",
                  "Bits per byte on held-out text"):
        assert title in page and f"### {title}" in md
    assert HOSTILE not in page and "<script>" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt; tokens/char" in page  # fertility header
    _table_rows_are_well_formed(md)


def test_the_language_tables_pool_prompts_and_leave_out_cells_without_a_language(tmp_path):
    data = summarise([load_run(make_lang_run(tmp_path))])
    langs = data.languages
    assert langs is not None
    assert langs.langs == ["en", "hi"] and langs.series == [HOSTILE, "gemma"]
    hi = langs.get("hi", "gemma")
    assert hi.n == 6  # two prompts × three measured trials; warm-ups left out
    assert hi.stats["j_per_kchar"].mean == pytest.approx(300.0)
    assert hi.fertility["tokens_per_char"] == pytest.approx(0.25 * 2.1 / 2)  # mean of prompts
    assert hi.quality["bits_per_byte"] == pytest.approx(0.53)
    assert hi.estimated
    # The no-language cell (9999 chars/s) is in the per-cell table only.
    assert all(r.stats["decode_chars_per_s"].mean < 1000 for r in langs.rows.values())


def test_the_summary_names_the_model_cheapest_per_character_in_each_language(lang_made):
    md = (lang_made.out / "report.md").read_text()
    page = (lang_made.out / "report.html").read_text()
    esc = "&lt;script&gt;alert(1)&lt;/script&gt;"
    en = f"en: {esc} costs 1.5× less energy per character than gemma (100.0 vs 150.0 J/kchar; " \
         "bits per byte 0.780 vs 0.770)."
    hi = f"hi: gemma costs 1.8× less energy per character than {esc} (300.0 vs 540.0 J/kchar; " \
         "bits per byte 0.530 vs 1.21)."
    for doc in (md, page):
        assert en in doc and hi in doc
        assert "Cheapest model per character, by language" in doc
        assert "not a clear difference" not in doc  # the intervals are well apart
    assert f"  - {hi}" in md  # nested under the summary's language line
    assert f"<li>{hi}</li>" in page


def test_the_cheapest_per_character_is_by_mean_j_per_kchar_and_says_when_it_is_noise(tmp_path):
    from bench.report.tables import language_summary

    data = summarise([load_run(make_lang_run(tmp_path))])
    langs = data.languages
    assert langs.cheapest("en").best.series == HOSTILE
    assert langs.cheapest("hi").best.series == "gemma"
    # Widen gemma's Hindi interval until it overlaps: the sentence must say so.
    row = langs.get("hi", "gemma")
    row.stats["j_per_kchar"] = mean_ci([100.0, 500.0, 300.0])
    line = next(x for x in language_summary(data) if x.lstrip().startswith("hi:"))
    assert "hi: gemma costs" in line and "not a clear difference" in line


def test_language_plots_mark_estimated_energy_and_draw_names_as_text(lang_made):
    texts = lang_made.texts["lang_j_per_kchar.png"]
    assert any("ESTIMATED" in t for t in texts)
    assert any("J/kchar, estimated" in t for t in texts)
    assert HOSTILE in texts and "gemma" in texts  # the legend
    assert {"en", "hi"} <= set(lang_made.texts["lang_fertility.png"])
    assert not any("ESTIMATED" in t for t in lang_made.texts["lang_fertility.png"])


# -- quantization ladders ----------------------------------------------------------------------

# quant -> (size, bits/weight, KL, top-1, perplexity, decode t/s, J/token); F16 is the untimed
# reference. Q2_K is beaten on energy by Q4_0 (less KL, fewer J) but is the fastest.
LADDER = {
    "F16": (270_885_952, 16.0, 0.0, 1.0, 13.46, None, None),
    "Q8_0": (144_811_072, 8.51, 0.0038, 0.958, 13.63, 20.0, 0.50),
    "Q4_0": (91_726_912, 5.35, 0.274, 0.730, 15.70, 28.0, 0.35),
    "Q2_K": (88_201_792, 5.14, 0.406, 0.646, 17.69, 31.0, 0.47),
}


def make_ladder_run(root: Path, run_id: str = "20260105T030405Z-ladder-0123abcd") -> Path:
    models = {f"smol@{q}": {"id": "smol", "quant": q, "size_bytes": v[0],
                            "bits_per_weight": v[1]} for q, v in LADDER.items() if v[5]}
    writer = RunWriter(root / run_id, _manifest(run_id, "ladder", models))
    n = 0
    for quant, (_, _, _, _, _, tps, jpt) in LADDER.items():
        if tps is None:
            continue
        n += 1
        cid = f"c{n:03d}"
        params = _params("smol", quant, 2)
        writer.manifest["cells"].append({"cell_id": cid, "cell_key": f"{n:016x}",
                                         "params": params, "status": "ok", "error": None})
        writer.add("trials", [_trial_row(run_id, cid, params, t, t == 0, tps * f, jpt * f,
                                         "estimate", lang=None)
                              for t, f in enumerate([5.0, 0.99, 1.0, 1.01])])
    writer.add("quality", [
        {"run_id": run_id, "model": "smol", "quant": q, "reference": "F16",
         "is_reference": q == "F16", "lang": "en", "text_id": "heldout-en", "n_tokens": 357,
         "n_scored": 356, "n_bytes": 1672, "n_chars": 1672, "bits_per_byte": 0.8,
         "bits_per_char": 0.8, "perplexity": ppl, "kl_div": kl, "kl_div_max": kl * 5,
         "top1_agree": top1, "size_bytes": size, "bits_per_weight": bpw, "window_tokens": 128,
         "n_windows": 5}
        for q, (size, bpw, kl, top1, ppl, _, _) in LADDER.items()])
    writer.flush()
    return root / run_id


@pytest.fixture(scope="module")
def ladder_made(tmp_path_factory) -> Made:
    root = tmp_path_factory.mktemp("ladder")
    return _report([make_ladder_run(root / "runs")], root / "rep")


def test_the_quantization_section_shows_the_ladder_table_and_the_pareto_plot(ladder_made):
    out = ladder_made.out
    page = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert "quant_1.png" in _png_names(out)
    assert not {n for n in _png_names(out) if n.startswith("lang_")}
    data = base64.b64encode((out / "quant_1.png").read_bytes()).decode()
    assert f"data:image/png;base64,{data}" in page and "](quant_1.png)" in md
    assert '<h2 id="quantization">Quantization</h2>' in page and "## Quantization" in md
    assert "Languages" not in page
    assert "### Quantization ladder: smol (reference F16)" in md
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines()
            if line.startswith("| ") and "MB" in line}
    assert list(rows) == ["F16 (reference)", "Q8_0", "Q4_0", "Q2_K"]  # bits/weight down
    assert "| 270.9 MB | 16.00 | 0 |" in rows["F16 (reference)"]
    assert "| 144.8 MB | 8.51 | 0.0038 |" in rows["Q8_0"]
    assert "| 88.2 MB | 5.14 | 0.406 |" in rows["Q2_K"] and "0.646" in rows["Q2_K"]
    assert rows["F16 (reference)"].endswith("| not timed |")
    assert rows["Q8_0"].endswith("| energy, speed |")
    assert rows["Q2_K"].endswith("| speed |")
    _table_rows_are_well_formed(md)
    drawn = ladder_made.texts["quant_1.png"]
    assert {"Q8_0", "Q4_0", "Q2_K"} <= set(drawn)
    assert any("Pareto front" in t for t in drawn) and any("ESTIMATED" in t for t in drawn)
    assert not any("mathdefault" in t for t in drawn)  # log-axis ticks are plain numbers


def test_the_ladder_fronts_are_lower_kl_with_lower_energy_or_higher_speed(tmp_path):
    data = summarise([load_run(make_ladder_run(tmp_path))])
    (ladder,) = data.ladders
    assert ladder.reference == "F16" and ladder.quality_key == "kl_div"
    levels = {lv.quant: lv for lv in ladder.levels}
    assert {q for q, lv in levels.items() if lv.front_energy} == {"Q8_0", "Q4_0"}
    assert {q for q, lv in levels.items() if lv.front_speed} == {"Q8_0", "Q4_0", "Q2_K"}
    assert levels["Q4_0"].stats["j_per_token"].mean == pytest.approx(0.35)  # warm-up left out
    assert not levels["F16"].stats and levels["F16"].size_bytes == 270_885_952


def test_several_quants_without_quality_still_get_a_ladder_table(tmp_path):
    from bench.report.tables import ladder_tables

    cells = [("smol", "Q8_0", 2, [20.0, 21.0]), ("smol", "Q4_0", 2, [28.0, 29.0])]
    data = summarise([load_run(make_run(tmp_path, "20260106T000000Z-q-0123abcd",
                                        cells=cells, failed=False))])
    (ladder,) = data.ladders
    assert ladder.quality_key is None and [lv.quant for lv in ladder.levels] == ["Q8_0", "Q4_0"]
    (table,) = ladder_tables(data)
    assert "No quality was measured" in table.note


def test_a_plain_run_has_neither_a_language_nor_a_quantization_section(made, synthetic):
    data = summarise([load_run(synthetic)])
    assert data.languages is None and data.ladders == []
    page = (made.out / "report.html").read_text()
    md = (made.out / "report.md").read_text()
    for word in ("Languages", "Quantization", "J/kchar", "fertility"):
        assert word not in page and word not in md
    assert not {n for n in _png_names(made.out) if n.startswith(("lang_", "quant_"))}


# -- a real multilingual run -------------------------------------------------------------------

REAL_LANG = smol_config(
    "report-multilingual", n_ctx="512",
    workload="{pack: parallel, languages: [en, hi], prompt_ids: [p03-explain], gen_tokens: 8}",
    trials="{warmup: 0, repeat: 2}", energy="{meters: [estimate], idle_s: 0}",
) + "quality: {texts: heldout, window: 256}\n"


@pytest.mark.slow
def test_report_on_a_real_multilingual_run(tmp_path):
    loaded = loads_config(REAL_LANG)
    outcome = Runner(loaded, expand(loaded.config), tmp_path / "runs").run()
    assert outcome.cells_ok == 2
    assert Report().run([outcome.folder], out=tmp_path / "rep") == 0
    assert LANG_PLOTS <= _png_names(tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Languages" in md and "| hi | smollm2-135m |" in md
    assert "hi: only smollm2-135m was measured" in md  # one model: nothing to compare
    assert "## Quantization" not in md
