"""Terminal output that fits: the end table and the progress line at any width, and an ETA
weighted by tokens."""
from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len

from bench.cli.estimate import plan
from bench.cli.oneline import build_config, load_oneline
from bench.cli.progress import Tracker
from bench.cli.summary import METRICS, CellSummary, Stat, format_stat, render_table
from bench.sweep import expand

names = st.text(string.ascii_letters + string.digits + "-._", min_size=1, max_size=60)
values = st.floats(min_value=0.00001, max_value=99999, allow_nan=False)


@st.composite
def cells(draw):
    n = draw(st.integers(1, 6))
    out = []
    for i in range(n):
        stats = {}
        for m in METRICS:
            if draw(st.booleans()) or m.key == "decode_tps":
                stats[m.key] = Stat(draw(values), draw(st.none() | values), 3)
        out.append(CellSummary(
            cell_id=f"c{i + 1:03d}", model=draw(names), quant=draw(st.sampled_from(
                ["", "Q4_K_M", "Q8_0"])), backend="llama-cpp",
            settings=draw(st.sampled_from(["t=1 ngl=0", "t=16 ngl=99", ""])),
            test=draw(st.sampled_from(["pp128 tg64", "pp4096 tg1024 d16384", "[hi] p1 tg8"])),
            status="ok", n=3, stats=stats,
        ))
    return out


@settings(max_examples=150, deadline=None)
@given(cells(), st.integers(60, 200), st.booleans())
def test_the_end_table_fits_and_never_cuts_a_number(rows, width, estimated):
    lines = render_table(rows, width, estimated)
    assert all(cell_len(line) <= width for line in lines), "\n".join(lines)
    header = next(line for line in lines if "decode t/s" in line)  # decode is never dropped
    body = lines[lines.index(header) + 2:]
    assert len(body) == len(rows)
    for cell, line in zip(rows, body, strict=False):
        for m in METRICS:
            shown = m.label in header
            if shown:
                # A shown number is the whole formatted figure, digits and CI intact.
                assert format_stat(m.key, cell.stats.get(m.key)) in line, (m.key, line)


def test_columns_shared_by_every_row_move_above_the_table_when_space_is_short():
    rows = [CellSummary(f"c00{i}", "a-very-long-model-name-from-a-gguf-file", "Q4_K_M",
                        "llama-cpp", f"t={i}", "pp512 tg128", "ok", 5,
                        stats={m.key: Stat(123.4567, 1.3456, 5) for m in METRICS})
            for i in (1, 2)]
    assert all(cell_len(line) > 80 for line in render_table(rows, 200)[:1])  # too wide
    lines = render_table(rows, 80)
    header = next(line for line in lines if "decode t/s" in line)
    above = lines[:lines.index(header)]
    assert above[0].startswith("all cells: model: a-very-long-model-name-from-a-gguf-file Q4_K_M")
    # Each shared item stays whole on its line.
    assert any("backend: llama-cpp" in line for line in above)
    assert any("test: pp512 tg128" in line for line in above)
    # The thread count differs between rows, so it stays, without the shared "llama-cpp".
    assert "backend" in header
    assert [line.split()[1] for line in lines[-2:]] == ["t=1", "t=2"]
    assert all(cell_len(line) <= 80 for line in lines)


def test_the_end_table_shows_percent_of_roofline_only_where_a_cell_has_a_bound():
    def row(stats):
        return CellSummary("c001", "m", "Q4_0", "llama-cpp", "t=2", "pp64 tg16", "ok", 3,
                           stats=stats)

    base = {"decode_tps": Stat(80.0, 2.0, 3)}
    lines = render_table([row({**base, "roofline_pct": Stat(35.4, 1.0, 3)})], 200)
    header = next(line for line in lines if "decode t/s" in line)
    assert "% roofline" in header and lines[-1].split()[-1] == "35"
    lines = render_table([row(base)], 200)
    assert "roofline" not in " ".join(lines)


def _cells(tmp_path, prompt: list[str], repetitions: int = 2):
    model = tmp_path / "tiny.Q4_0.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 64)
    loaded, _ = load_oneline(build_config([str(model)], prompt=prompt, gen=["8"],
                                          repetitions=repetitions, gpu=False), "t")
    return loaded.config, expand(loaded.config)


def test_eta_is_never_blank_and_marked_assumed_before_anything_ran(tmp_path):
    config, cs = _cells(tmp_path, ["16"])
    t = Tracker(plan(cs, config), warmup=1, measured=2, now=0.0)
    line = t.line(80, 0.0)
    assert "ETA ~" in line and line.rstrip().split("ETA ~")[1].strip()
    assert cell_len(line) <= 80


def test_eta_weights_cells_by_their_tokens_not_by_trial_count(tmp_path):
    config, cs = _cells(tmp_path, ["16,4096"])
    small, large = cs
    p = plan(cs, config)
    t = Tracker(p, warmup=1, measured=2, now=0.0)
    now = 0.0
    t.cell_start(small, now)
    for j in range(3):  # each trial of the small cell takes one second
        t.trial(small, j, j < 1, now)
        now += 1.0
    t.cell_end(small, now)
    eta, measured = t.eta_s(now)
    assert measured
    by_count = 3 * 1.0  # three trials left, as long as the three that ran
    ratio = p.seconds_per_trial[large.cell_id] / p.seconds_per_trial[small.cell_id]
    assert eta > 2 * by_count
    assert abs(eta - by_count * ratio) < 0.05 * by_count * ratio


def test_warmups_are_counted_apart_from_measured_trials(tmp_path):
    config, cs = _cells(tmp_path, ["16"], repetitions=3)
    t = Tracker(plan(cs, config), warmup=1, measured=3, now=0.0)
    t.cell_start(cs[0], 0.0)
    t.trial(cs[0], 0, True, 0.0)
    t.trial(cs[0], 1, False, 1.0)  # the warm-up finished; the first measured trial starts
    assert (t.done, t.total, t.warm_done, t.warm_total) == (0, 3, 1, 1)
    line = t.line(80, 1.5)
    assert " 0/3 w1/1 " in line and "trial 1/3" in line


def test_a_cell_that_stops_early_leaves_the_total(tmp_path):
    config, cs = _cells(tmp_path, ["16,32"], repetitions=5)
    t = Tracker(plan(cs, config), warmup=1, measured=5, now=0.0)
    t.cell_start(cs[0], 0.0)
    for j in range(3):  # warm-up + 2 measured, then the CI target is met
        t.trial(cs[0], j, j == 0, float(j))
    t.cell_end(cs[0], 3.0)
    assert (t.done, t.total) == (2, 7)
    # A cell that fails before its first trial gives back all of its trials.
    t.cell_end(cs[1], 3.0)
    assert (t.done, t.total, t.warm_total) == (2, 2, 1)


@settings(max_examples=60, deadline=None)
@given(st.integers(20, 220), names)
def test_the_progress_line_fits_any_width(width, model):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        config, cs = _cells(Path(d), ["16"])
    t = Tracker(plan(cs, config), warmup=1, measured=2, now=0.0)
    object.__setattr__(cs[0].variant.spec, "id", model)
    t.cell_start(cs[0], 0.0)
    t.trial(cs[0], 0, True, 0.0)
    line = t.line(width, 3725.0)
    assert cell_len(line) <= width
    assert "ETA" in line or width < 40


def test_eta_counts_down_through_the_idle_baseline_but_not_past_the_trials(tmp_path):
    config, cs = _cells(tmp_path, ["16"])
    p = plan(cs, config)
    t = Tracker(p, warmup=1, measured=2, now=0.0)
    start, _ = t.eta_s(0.0)
    assert t.eta_s(3.0)[0] == pytest.approx(start - 3.0)
    trials_only = p.total_s - p.idle_s - p.load_s
    assert t.eta_s(1000.0)[0] == pytest.approx(trials_only)
