"""`bench run` on the new engines: a locally made RWKV-5.2 checkpoint (rwkv backend) and a tiny
Llama folder (transformers backend), over a depth sweep, written to the same tables as
llama.cpp's run of the shipped small model."""
from __future__ import annotations

import pytest

pytest.importorskip("rwkv")
pytest.importorskip("transformers")

from support import SMOL_MODEL_YAML, run_config
from tiny_models import make_rwkv52, make_tiny_llama

from bench.cli import main

pytestmark = pytest.mark.slow


def test_one_run_measures_rwkv_transformers_and_llama_cpp_into_the_same_tables(tmp_path, capsys):
    pth = make_rwkv52(tmp_path / "tiny-rwkv52.pth")
    folder = make_tiny_llama(tmp_path / "tiny-llama")
    folder_run, run = run_config(
        "name: engines\nmodels:\n" + SMOL_MODEL_YAML
        + f"  - {{id: tiny-rwkv52, path: '{pth}'}}\n  - {{id: tiny-llama, path: '{folder}'}}\n"
        "backends:\n  - {name: llama-cpp, n_threads: 2, n_ctx: 512}\n"
        "  - {name: rwkv, strategy: cpu fp32, n_threads: 2}\n"
        "  - {name: transformers, device: cpu, n_threads: 2}\n"
        "workload: {prompt_tokens: 32, gen_tokens: 8, depth: [0, 128]}\n"
        "trials: {warmup: 1, repeat: 2}\nenergy: {meters: [estimate], idle_s: 0.2}\n",
        tmp_path,
    )
    printed = capsys.readouterr().out
    assert "decode t/s" in printed
    m = run.manifest
    assert [c["status"] for c in m["cells"]] == ["ok"] * 6
    assert m["models"]["tiny-rwkv52"]["rwkv_version"] == "5.2"
    assert len(m["models"]["tiny-rwkv52"]["sha256"]) == 64
    assert m["models"]["tiny-llama"]["architecture"] == "llama"
    assert m["software"]["rwkv"] and m["software"]["torch"] and m["software"]["transformers"]
    rows = [r for r in run.trials if not r["warmup"]]
    by_backend: dict[str, list[dict]] = {}
    for r in rows:
        assert r["status"] == "ok", r.get("error")
        by_backend.setdefault(r["backend"], []).append(r)
    assert sorted(by_backend) == ["llama-cpp", "rwkv", "transformers"]
    shared = ("n_prompt", "n_gen", "prefill_tps", "decode_tps", "itl_ms_p50", "j_per_token",
              "energy_method", "depth", "gen_chars", "decode_chars_per_s")
    for backend, rs in by_backend.items():
        assert sorted({r["depth"] for r in rs}) == [0, 128], backend
        for r in rs:
            assert r["n_prompt"] == 32 and r["n_gen"] == 8, backend
            for k in shared:
                assert r.get(k) is not None, (backend, k)
            assert r["decode_tps"] > 0 and r["j_per_token"] > 0
    # Every cell has a roofline figure, with how its bytes per token were obtained: the GGUF
    # tensor table for llama.cpp, the weights as each torch engine holds them for the others.
    method_words = {"llama-cpp": "GGUF tensor table", "rwkv": "rwkv package",
                    "transformers": "transformers loaded"}
    for backend, rs in by_backend.items():
        for r in rs:
            assert r["roofline_pct"] > 0 and r["roofline_memory"] == "cpu", (backend, r)
            assert method_words[backend] in r["roofline_method"], (backend, r)
        per_depth = {r["depth"]: r["roofline_bytes_per_token"] for r in rs}
        if backend == "rwkv":  # a recurrent state: the same bytes at any depth
            assert per_depth[128] == per_depth[0]
        else:  # attention reads a KV cache that grows with depth
            assert per_depth[128] > per_depth[0], backend
    energy = run.table("energy")
    assert {e["phase"] for e in energy} == {"prefill", "decode"}
    # The report draws decode cost against depth for each backend's model.
    rep = tmp_path / "report"
    assert main(["report", str(folder_run), "--out", str(rep)]) == 0
    assert (rep / "depth_decode.png").is_file()
    assert "depth_decode.png" in (rep / "report.md").read_text()
    from bench.report.data import load_runs, summarise
    from bench.report.depth import depth_points, depth_series

    series = depth_series(summarise(load_runs([folder_run])))
    assert sorted({g[0].params["backend"] for g in series.values()}) == [
        "llama-cpp", "rwkv", "transformers"]
    for group in series.values():
        assert [d for d, _, _ in depth_points(group, "decode_tps")] == [0, 128]

