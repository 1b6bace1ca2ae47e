"""The decode roofline and the energy floor: bytes per token from real GGUF headers, bandwidth
from a real copy, and the columns a trial row gets from them."""
from __future__ import annotations

import math
from pathlib import Path

import gguf
import pytest

from bench import roofline
from bench.quantize import gguf_facts
from bench.roofline import (
    GGML_TYPE_SIZES,
    cpu_copy_bandwidth,
    decode_bytes_per_token,
    model_bytes,
    trial_columns,
)


def test_ggml_type_sizes_agree_with_the_gguf_package():
    for ttype, sizes in GGML_TYPE_SIZES.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)] == sizes, ttype


def test_tensor_bytes_from_the_header_equal_llama_cpp_model_size(smol_path: Path):
    assert model_bytes(smol_path).tensor_bytes == gguf_facts(smol_path)["tensor_bytes"]


@pytest.fixture(scope="module")
def reader(smol_path: Path) -> gguf.GGUFReader:
    return gguf.GGUFReader(smol_path)  # parses the whole vocabulary: seconds, so once


def test_kv_bytes_per_position_follow_the_model_shape(smol_path: Path, reader):

    def meta(key: str) -> int:
        field = reader.fields[f"llama.{key}"]
        return int(field.parts[field.data[0]][0])

    n_layer, n_head = meta("block_count"), meta("attention.head_count")
    n_kv, n_embd = meta("attention.head_count_kv"), meta("embedding_length")
    head_dim = n_embd // n_head
    mb = model_bytes(smol_path)
    assert mb.n_layer == n_layer
    assert mb.kv_bytes_per_cell == n_layer * n_kv * 2 * head_dim * 2  # K and V, F16


def test_a_tied_embedding_is_read_whole_per_token(smol_path: Path, reader):
    # SmolLM2 has no output.weight: the output projection reuses token_embd.
    names = {t.name for t in reader.tensors}
    assert "output.weight" not in names
    mb = model_bytes(smol_path)
    assert mb.weight_bytes_per_token == mb.tensor_bytes
    assert "tied" in mb.method


def test_kv_share_of_bytes_per_token_grows_with_context(smol_path: Path):
    mb = model_bytes(smol_path)
    short = decode_bytes_per_token(mb, n_prompt=16, n_gen=8)
    long = decode_bytes_per_token(mb, n_prompt=1024, n_gen=8)
    assert long - short == pytest.approx(mb.kv_bytes_per_cell * (1024 - 16))
    deep = decode_bytes_per_token(mb, n_prompt=16, n_gen=8, depth=1008)
    assert deep == pytest.approx(long)


def test_cpu_copy_bandwidth_is_positive_and_says_how():
    bw = cpu_copy_bandwidth(size_bytes=32 << 20, repeats=2, threads=2)
    assert bw.memory == "cpu" and bw.measured
    # Between 100 MB/s and 10 TB/s: any real machine; a unit slip (bits, MiB) falls outside.
    assert 1e8 < bw.bytes_per_s < 1e13
    assert "read+write" in bw.method and "32 MiB" in bw.method


def _manifest(path: Path, bw: float = 10e9, domains=None, idle=None) -> dict:
    return {
        "roofline": {"cpu": {"memory": "cpu", "bytes_per_s": bw, "method": "t",
                             "measured": True}, "gpu": None},
        "models": {"m": {"id": "m", "quant": "Q4_1", "path": str(path)}},
        "domains": domains or [],
        "idle": {"watts": idle or {}},
        "software": {"llama_cpp_gpu_offload": False},
    }


def _row(**kw) -> dict:
    row = {"status": "ok", "model": "m", "quant": "Q4_1", "n_prompt": 256, "n_gen": 64,
           "decode_tps": 50.0, "n_gpu_layers": 0, "j_per_token": None}
    row.update(kw)
    return row


def test_roofline_pct_is_decode_rate_over_bandwidth_per_bytes(smol_path: Path):
    cols = trial_columns(_row(), _manifest(smol_path, bw=10e9))
    per_token = decode_bytes_per_token(model_bytes(smol_path), 256, 64)
    assert cols["roofline_bytes_per_token"] == pytest.approx(per_token)
    assert cols["roofline_tps"] == pytest.approx(10e9 / per_token)
    assert cols["roofline_pct"] == pytest.approx(100 * 50.0 / (10e9 / per_token))
    assert cols["roofline_memory"] == "cpu"


def test_offload_on_a_cpu_only_engine_is_bounded_by_cpu_memory(smol_path: Path):
    cols = trial_columns(_row(n_gpu_layers=-1), _manifest(smol_path))
    assert cols["roofline_memory"] == "cpu" and cols["roofline_pct"] is not None


def test_missing_gpu_bandwidth_leaves_the_bound_empty_with_a_reason(smol_path: Path):
    manifest = _manifest(smol_path)
    manifest["software"]["llama_cpp_gpu_offload"] = True
    cols = trial_columns(_row(n_gpu_layers=-1), manifest)
    assert cols["roofline_pct"] is None and "gpu bandwidth was not measured" in cols[
        "roofline_note"]


def test_partial_offload_has_no_single_bound(smol_path: Path):
    manifest = _manifest(smol_path)
    manifest["roofline"]["gpu"] = {"memory": "gpu", "bytes_per_s": 1e12, "measured": True}
    manifest["software"]["llama_cpp_gpu_offload"] = True
    cols = trial_columns(_row(n_gpu_layers=10), manifest)
    assert cols["roofline_pct"] is None and "partial offload" in cols["roofline_note"]
    full = trial_columns(_row(n_gpu_layers=-1), manifest)
    assert full["roofline_memory"] == "gpu" and full["roofline_pct"] is not None


def test_a_served_model_without_a_file_has_no_bound(tmp_path: Path):
    cols = trial_columns(_row(), _manifest(tmp_path / "absent.gguf"))
    assert cols["roofline_pct"] is None and "no local GGUF" in cols["roofline_note"]


RAPL = [{"name": "package-0", "method": "counter", "component": True},
        {"name": "dram-0", "method": "counter", "component": True},
        {"name": "psys", "method": "counter", "component": False}]


def test_energy_floor_is_idle_watts_of_the_headline_domains_over_decode_rate(smol_path: Path):
    manifest = _manifest(smol_path, domains=RAPL,
                         idle={"package-0": 6.0, "dram-0": 2.0, "psys": 30.0})
    cols = trial_columns(_row(decode_tps=40.0, j_per_token=0.5), manifest)
    # psys overlaps the package: not a component, so not in the floor either.
    assert cols["j_floor"] == pytest.approx(8.0 / 40.0)
    assert cols["j_floor_ratio"] == pytest.approx(0.5 / 0.2)


def test_an_estimated_energy_has_no_floor(smol_path: Path):
    est = [{"name": "process-cpu", "method": "estimate", "component": True}]
    cols = trial_columns(_row(j_per_token=0.1), _manifest(smol_path, domains=est,
                                                          idle={"process-cpu": 0.1}))
    assert cols["j_floor"] is None and "estimate" in cols["roofline_note"]


def test_an_error_row_gets_empty_columns(smol_path: Path):
    cols = trial_columns({"status": "error"}, _manifest(smol_path))
    assert set(cols) == set(roofline.ROOFLINE_COLUMNS)
    assert all(v is None for v in cols.values())


def test_every_row_names_where_its_model_came_from(smol_path: Path):
    manifest = _manifest(smol_path)
    manifest["models"]["m"]["source"] = {"synthetic": {"name": "tiny"}}
    assert trial_columns(_row(), manifest)["model_source"] == "synthetic"
    assert trial_columns({**_row(), "status": "error"}, manifest)["model_source"] == "synthetic"


def test_bandwidth_is_measured_once_per_process(monkeypatch):
    calls = []

    def fake(*a, **k):
        calls.append(1)
        return roofline.Bandwidth("cpu", 1e9, "stand-in", True)

    monkeypatch.setattr(roofline, "_CACHE", {})
    monkeypatch.setattr(roofline, "cpu_copy_bandwidth", fake)
    first = roofline.measure_bandwidth()
    second = roofline.measure_bandwidth()
    assert len(calls) == 1 and not first["reused"] and second["reused"]
    assert math.isclose(second["cpu"]["bytes_per_s"], 1e9)


def test_gpu_bandwidth_runs_in_a_child_process_and_says_why_when_there_is_no_gpu(monkeypatch):
    """The GPU copy runs in a spawned child (no CUDA context left in the runner). On a machine
    without CUDA or NVML the child answers None and the manifest says why; with a GPU it says
    how the figure was measured. Either way the child ran and answered, not crashed."""
    monkeypatch.setattr(roofline, "_CACHE", {})
    monkeypatch.setattr(roofline, "cpu_copy_bandwidth",
                        lambda *a, **k: roofline.Bandwidth("cpu", 1e9, "stand-in", True))
    out = roofline.measure_bandwidth(gpu=True)
    if out["gpu"] is not None:
        assert out["gpu"]["memory"] == "gpu" and out["gpu"]["method"]
    else:
        assert out["errors"] == [
            "gpu bandwidth not measured: no torch or CuPy with CUDA, and NVML not readable"]
