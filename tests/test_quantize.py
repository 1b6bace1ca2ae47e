"""The quantization ladder: built once by llama.cpp, cached, atomic, and ordered by quality.

The slow tests make an F16 file from the shipped SmolLM2 Q4_1 (an exact upcast), then Q8_0, Q4_0
and Q2_K from it, once per module, in a temporary XDG cache.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import struct

import llama_cpp
import numpy as np
import pytest

from bench.quality import quality_rows, reference_logits
from bench.quantize import (
    QuantizeError,
    gguf_facts,
    quant_cache_dir,
    quantize,
    read_imatrix,
    supported_qtypes,
)
from bench.workload.packs import load_heldout

LADDER = ("F16", "Q8_0", "Q4_0", "Q2_K")  # highest precision first
SETTINGS = {"n_threads": 1, "n_ctx": 512}
PARAGRAPH = load_heldout("en").split("\n\n")[1]


@pytest.fixture(scope="module")
def ladder(tmp_path_factory, smol_path):
    cache_home = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache_home))
        f16 = quantize(smol_path, "F16", allow_requantize=True, n_threads=2)
        levels = {"F16": f16}
        for qtype in LADDER[1:]:
            levels[qtype] = quantize(f16, qtype, n_threads=2)
        yield cache_home, levels


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- no build -----------------------------------------------------------------------------------


def test_an_unknown_type_is_refused_with_the_supported_names(smol_path, tmp_path):
    with pytest.raises(QuantizeError) as e:
        quantize(smol_path, "Q9_X", tmp_path)
    for name in ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K", "F16", "BF16"):
        assert name in str(e.value)
        assert name in supported_qtypes()
    assert not any(tmp_path.iterdir())


def test_a_quantized_source_needs_allow_requantize(smol_path, tmp_path):
    with pytest.raises(QuantizeError, match="already quantized .Q4_1.*allow_requantize"):
        quantize(smol_path, "Q8_0", tmp_path)


def test_types_llama_cpp_builds_only_with_an_importance_matrix_say_so(smol_path, tmp_path):
    with pytest.raises(QuantizeError, match="importance matrix"):
        quantize(smol_path, "IQ2_XS", tmp_path, allow_requantize=True)


def test_a_failed_build_leaves_no_file_behind(smol_path, tmp_path, monkeypatch):
    def failing(inp, out, params):
        with open(out, "wb") as f:  # llama.cpp leaves a partial file when it fails midway
            f.write(b"GGUF partial")
        return 1

    monkeypatch.setattr(llama_cpp, "llama_model_quantize", failing)
    with pytest.raises(QuantizeError, match="could not quantize"):
        quantize(smol_path, "Q8_0", tmp_path, allow_requantize=True)
    assert list(tmp_path.iterdir()) == []


def test_gguf_facts_of_the_shipped_model(smol_path):
    facts = gguf_facts(smol_path)
    assert facts["file_type"] == "Q4_1"
    assert facts["size_bytes"] == smol_path.stat().st_size > facts["tensor_bytes"]
    assert 130e6 < facts["n_params"] < 140e6
    assert facts["bits_per_weight"] == facts["tensor_bytes"] * 8 / facts["n_params"]
    assert 5.0 < facts["bits_per_weight"] < 6.0  # Q4_1 is 5 bits a weight, plus F32 norms


def test_a_legacy_importance_matrix_is_divided_by_its_call_count(tmp_path):
    path = tmp_path / "imatrix.dat"
    entries = {"blk.0.attn_q.weight": (4, np.array([4.0, 8.0, 12.0], np.float32)),
               "output.weight": (0, np.array([1.5, 2.5], np.float32))}
    blob = struct.pack("<i", len(entries))
    for name, (ncall, values) in entries.items():
        blob += struct.pack("<i", len(name)) + name.encode()
        blob += struct.pack("<ii", ncall, len(values)) + values.tobytes()
    path.write_bytes(blob + struct.pack("<i", 10))  # trailing last-call count, ignored
    got = read_imatrix(path)
    np.testing.assert_array_equal(got["blk.0.attn_q.weight"], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(got["output.weight"], [1.5, 2.5])  # ncall 0: as stored


def _gguf_string(s: str) -> bytes:
    return struct.pack("<Q", len(s.encode())) + s.encode()


def _write_gguf(path, tensors: dict[str, np.ndarray]) -> None:
    kv = _gguf_string("imatrix.datasets") + struct.pack("<IIQ", 9, 8, 1) + _gguf_string("wiki")
    kv += _gguf_string("imatrix.chunk_count") + struct.pack("<II", 4, 7)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 2) + kv
    data = b""
    for name, arr in tensors.items():
        dims = list(reversed(arr.shape))  # ggml lists the innermost dimension first
        head += _gguf_string(name) + struct.pack("<I", len(dims))
        head += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", 0, len(data))
        data += arr.astype("<f4").tobytes()
        data += b"\0" * (-len(data) % 32)
    head += b"\0" * (-len(head) % 32)
    path.write_bytes(head + data)


def test_a_gguf_importance_matrix_is_divided_by_each_experts_count(tmp_path):
    path = tmp_path / "imatrix.gguf"
    _write_gguf(path, {
        "blk.0.ffn_up_exps.weight.in_sum2": np.array([[2, 4, 6], [5, 5, 5]], np.float32),
        "blk.0.ffn_up_exps.weight.counts": np.array([[2], [0]], np.float32),
        "blk.0.attn_k.weight.in_sum2": np.array([[9, 3]], np.float32),
        "blk.0.attn_k.weight.counts": np.array([[3]], np.float32),
    })
    got = read_imatrix(path)
    # The second expert never saw input: llama-quantize gives it ones.
    np.testing.assert_array_equal(got["blk.0.ffn_up_exps.weight"], [1, 2, 3, 1, 1, 1])
    np.testing.assert_array_equal(got["blk.0.attn_k.weight"], [3, 1])


def test_an_unreadable_importance_matrix_is_refused(tmp_path):
    path = tmp_path / "broken.dat"
    path.write_bytes(b"\x05\x00")
    with pytest.raises(QuantizeError, match="not a readable importance matrix"):
        read_imatrix(path)


# -- the ladder ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_ladder_lives_in_the_xdg_cache_and_shrinks_step_by_step(ladder):
    cache_home, levels = ladder
    facts = {q: gguf_facts(p) for q, p in levels.items()}
    for qtype, path in levels.items():
        assert path.parent == cache_home / "bench" / "quants"
        assert path.name.startswith("SmolLM2-135M-Instruct." + qtype + ".")
        assert facts[qtype]["file_type"] == qtype
        record = json.loads(path.with_suffix(".json").read_text())
        assert record["qtype"] == qtype and record["imatrix_sha256"] is None
    assert len({f["n_params"] for f in facts.values()}) == 1
    assert facts["F16"]["bits_per_weight"] == pytest.approx(16.0, abs=0.05)
    for high, low in itertools.pairwise(LADDER):
        assert facts[high]["size_bytes"] > facts[low]["size_bytes"]
        assert facts[high]["bits_per_weight"] > facts[low]["bits_per_weight"]


@pytest.mark.slow
def test_a_built_level_is_reused_without_running_the_quantizer(ladder, monkeypatch):
    cache_home, levels = ladder
    before = {q: p.stat().st_mtime_ns for q, p in levels.items()}

    def must_not_run(*args):
        raise AssertionError("the quantizer ran for a level already in the cache")

    monkeypatch.setattr(llama_cpp, "llama_model_quantize", must_not_run)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    assert quant_cache_dir() == cache_home / "bench" / "quants"
    assert quantize(levels["F16"], "q8_0") == levels["Q8_0"]  # names are case-insensitive
    assert quantize(levels["F16"], "Q2_K") == levels["Q2_K"]
    assert {q: p.stat().st_mtime_ns for q, p in levels.items()} == before


@pytest.mark.slow
def test_an_importance_matrix_is_used_and_keys_its_own_cache_entry(ladder, tmp_path):
    _, levels = ladder
    imatrix = tmp_path / "imatrix.dat"
    name = "blk.0.attn_q.weight"
    values = np.random.default_rng(0).uniform(0.1, 10.0, 576).astype(np.float32)
    blob = struct.pack("<i", 1) + struct.pack("<i", len(name)) + name.encode()
    imatrix.write_bytes(blob + struct.pack("<ii", 1, len(values)) + values.tobytes())
    built = quantize(levels["F16"], "Q4_0", tmp_path / "cache", imatrix=imatrix, n_threads=2)
    record = json.loads(built.with_suffix(".json").read_text())
    assert record["imatrix_sha256"] == _sha(imatrix)
    assert built.name != levels["Q4_0"].name
    # llama.cpp used it: the weighted rounding error changes the bytes it writes.
    assert gguf_facts(built)["file_type"] == "Q4_0"
    assert _sha(built) != _sha(levels["Q4_0"])


@pytest.mark.slow
def test_kl_is_zero_for_the_reference_and_largest_at_the_bottom_of_the_ladder(ladder):
    _, levels = ladder
    texts = {"p": PARAGRAPH}
    with reference_logits(levels["F16"], texts, SETTINGS) as ref:
        rows = {q: quality_rows(p, texts, ref, SETTINGS)[0] for q, p in levels.items()}
    # The reference evaluated a second time: identical distributions, exactly.
    assert rows["F16"]["kl_div"] == pytest.approx(0.0, abs=1e-12)
    assert rows["F16"]["top1_agree"] == 1.0
    kl = {q: r["kl_div"] for q, r in rows.items()}
    assert 0 < kl["Q8_0"] < kl["Q4_0"] < kl["Q2_K"]
    assert rows["Q2_K"]["top1_agree"] < rows["Q8_0"]["top1_agree"]
    assert rows["Q2_K"]["bits_per_byte"] > rows["F16"]["bits_per_byte"]
    # Naming the reference by its file evaluates it here and gives the same figures.
    (by_path,) = quality_rows(levels["Q8_0"], texts, levels["F16"], SETTINGS)
    assert by_path["kl_div"] == pytest.approx(kl["Q8_0"], rel=1e-6)
