"""bench report over runs whose cells match: a comparison (Δ% with its CI, compare's marks,
validity flags), ties never crowned, plots that read (labels by model and quant, no overlaps,
one power scale), and the HTML checked in a real headless Chromium."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_report import CELLS, HOSTILE, make_run

from bench.report import Report, plots
from bench.results import load_run, write_table

LOAD = ("background CPU load was 40% during the idle baseline (above 10%): other programs were "
        "running")
CV = ("decode t/s varies 9.0% across trials (coefficient of variation above 5%): the machine was "
      "noisy")
# R2: the same cells, the t=2 cell of the first model half as fast: a clear change even with
# three trials a side (their 95% intervals do not overlap).
SLOWER = [(m, q, t, [v * 0.5 for v in d] if (t == 2 and q == "Q4_0") else d)
          for m, q, t, d in CELLS]


@dataclass
class Drawn:
    ylims: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    labels: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)


def _write(runs: list[Path], out: Path) -> Drawn:
    """Report.run, keeping each figure's y limits and its annotations' boxes as drawn."""
    drawn = Drawn()
    save = plots._save

    def spy(fig, folder, name):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        drawn.ylims[name] = [ax.get_ylim() for ax in fig.axes if ax.get_visible()]
        drawn.labels[name] = [(t.get_text(), t.get_window_extent(renderer))
                              for ax in fig.axes for t in ax.texts]
        save(fig, folder, name)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "_save", spy)
        with contextlib.redirect_stdout(io.StringIO()):
            assert Report().run(runs, out=out) == 0
    return drawn


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Drawn]:
    root = tmp_path_factory.mktemp("pair")
    a = make_run(root / "runs", "20260102T030405Z-synthetic-aaaaaaaa", failed=False)
    b = make_run(root / "runs", "20260103T030405Z-synthetic-bbbbbbbb", cells=SLOWER,
                 failed=False)
    # One cell draws three times the power: its own y scale would hide that.
    power = load_run(b).table("power")
    write_table(b / "power.parquet", [{**r, "watts": r["watts"] * (3 if r["cell_id"] == "c002"
                                                                   else 1)} for r in power])
    return root / "rep", _write([a, b], root / "rep")


@pytest.fixture(scope="module")
def flagged(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flagged")
    a = make_run(root / "runs", "20260102T030405Z-synthetic-aaaaaaaa", failed=False)
    b = make_run(root / "runs", "20260103T030405Z-synthetic-bbbbbbbb", cells=SLOWER,
                 failed=False)
    m = json.loads((b / "manifest.json").read_text())
    m["guards"] = {"idle_cpu_load_pct": 40.0, "warnings": [LOAD]}
    m["cells"][2]["warnings"] = [CV]
    (b / "manifest.json").write_text(json.dumps(m))
    _write([a, b], root / "rep")
    return root / "rep"


def test_two_runs_of_the_same_cells_are_compared_cell_by_cell(pair):
    out, _ = pair
    md = (out / "report.md").read_text()
    assert "## Comparison" in md and "### R2 against R1" in md
    assert "| cell | metric | R1 (baseline) | R2 (candidate) | Δ% ± 95% CI | mark | verdict |" in md
    slowed = next(line for line in md.splitlines() if "t=2 ngl=0" in line and "decode t/s" in line
                  and "Q4_0" in line)
    assert "-50.0% ± " in slowed and "| + | worse |" in slowed
    unchanged = next(line for line in md.splitlines() if "t=4 ngl=0" in line
                     and "decode t/s" in line)
    assert "| ~ | tied |" in unchanged
    # The legend says what the marks and ± mean.
    assert "+ worse, - better" in md and "95% confidence interval" in md
    assert md.index("## Comparison") < md.index("## Per-cell results")
    assert "R2 against R1: REGRESSION" in md  # the summary leads with the verdict


def test_a_run_flagged_by_its_guards_makes_the_comparison_unreliable_and_says_why(flagged):
    md = (flagged / "report.md").read_text()
    assert "R2 against R1: UNRELIABLE: candidate measured under background load" in md
    assert "R2 against R1: REGRESSION" not in md
    # The runs table's validity row, highlighted (bold) because a run is flagged.
    assert "| **validity** | no flags | under background load (40% CPU" in md
    # Beside the numbers: the per-cell table's flags column names the noisy cell.
    cells = md.split("## Per-cell results")[1]
    assert "noisy, background load" in cells
    assert "`?+`" not in md and "?+" in md  # marks as plain text in the report table


def test_tied_cells_are_never_crowned(pair):
    md = (pair[0] / "report.md").read_text()
    # R1 and R2 ran the t=4 cell at the same speed: the fastest decode is a tie, not a winner.
    line = next(line for line in md.splitlines() if line.startswith("- Fastest decode"))
    assert "tied (95% intervals overlap)" in line and "R1" in line and "R2" in line


def test_points_are_labelled_by_model_and_quant_and_no_two_labels_overlap(pair):
    _, drawn = pair
    labels = drawn.labels["speed_vs_energy.png"]
    assert len(labels) == 2 * len(CELLS)  # every point labelled
    for text, _ in labels:
        assert ("Q4_0" in text or "Q8_0" in text) and ("R1" in text or "R2" in text)
        assert "c00" not in text  # not cell ids
    boxes = [b for _, b in labels]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b)


def test_power_timelines_share_one_y_scale(pair):
    _, drawn = pair
    limits = [lim for name, lims in drawn.ylims.items() if name.startswith("power_")
              for lim in lims]
    assert len(limits) >= 2 and len(set(limits)) == 1
    assert limits[0][1] >= 3 * 10.0  # the hungriest cell's peak fits the shared scale


def test_the_headline_figure_comes_first(pair):
    out, _ = pair
    html = (out / "report.html").read_text()
    assert html.index('id="headline"') < html.index('id="comparison"') < html.index('id="cells"')
    md = (out / "report.md").read_text()
    assert md.index("](headline.png)") < md.index("## Per-cell results")


# --- the HTML in a real browser ----------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    # No skip: the dev set-up installs Debian's chromium and the playwright package; a missing
    # one is a broken set-up and the test must say so.
    assert Path(CHROMIUM).is_file(), "install chromium: apt-get install -y chromium"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.mark.parametrize("width", [1280, 390])
def test_the_html_report_renders_in_chromium_with_every_image_and_no_errors(
    browser, flagged, width
):
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((flagged / "report.html").as_uri())
    page.wait_for_load_state("load")
    assert page.title().startswith("bench report")
    images = page.eval_on_selector_all(
        "img", "els => els.map(e => [e.getAttribute('data-file'), e.complete, e.naturalWidth])")
    assert len(images) >= 6
    assert all(done and w > 0 for _, done, w in images), images
    assert errors == []
    # Nothing scripted ran: the hostile model name is text.
    assert HOSTILE in page.inner_text("body")
    # The layout holds: the page itself never scrolls sideways (wide tables scroll in their
    # own boxes), and figures fit the width.
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    widest = page.eval_on_selector_all("img", "els => Math.max(...els.map(e => e.clientWidth))")
    assert widest <= width
    page.close()


LOADED_VM = Path(__file__).resolve().parent / "data" / "loaded_vm"


def test_a_report_over_two_real_reruns_on_the_loaded_vm_calls_them_unreliable(browser, tmp_path):
    """Two real runs of one config from this project's shared VM (tests/data/loaded_vm), both
    measured under background load: the report compares them and calls it unreliable, never a
    regression, and the page renders in Chromium."""
    runs = sorted(p for p in LOADED_VM.iterdir() if p.is_dir())[:2]
    _write(runs, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "R2 against R1: UNRELIABLE: candidate measured under background load" in md
    assert "REGRESSION" not in md
    page = browser.new_page(viewport={"width": 390, "height": 800})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto((tmp_path / "rep" / "report.html").as_uri())
    assert page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
    assert page.eval_on_selector_all("img", "els => els.every(e => e.complete && e.naturalWidth)")
    assert errors == []
    page.close()
