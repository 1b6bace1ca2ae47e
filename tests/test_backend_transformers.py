"""The transformers backend on a tiny Llama written with save_pretrained (random weights, fixed
seed) and a small byte-level BPE tokenizer, loaded offline from a temp folder."""
from __future__ import annotations

import pytest

pytest.importorskip("transformers", reason="pip install 'bench[transformers]'")

from tiny_models import make_tiny_llama

from bench.backends.base import BackendError, Prompt, get_backend
from bench.config import ConfigError, loads_config
from bench.models import file_identity, locate
from bench.sweep import expand, model_variants

SETTINGS = {"device": "cpu", "dtype": "auto", "attn_implementation": "default",
            "trust_remote_code": False}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("hf") / "tiny-llama")


@pytest.fixture(scope="module")
def session(folder):
    s = get_backend("transformers")().load(folder, dict(SETTINGS), seed=42)
    s.configure({"n_threads": 1})  # one thread: steadier on a shared machine
    yield s
    s.close()


def nothing(edge: str) -> None:
    pass


@pytest.mark.slow
def test_identity_names_the_architecture_size_and_dtype(session):
    info = session.info()
    assert info["architecture"] == "llama" and info["hf_architecture"] == "LlamaForCausalLM"
    assert (info["n_layer"], info["n_embd"]) == (2, 64)
    assert info["dtype"] == "float32" and info["bits_per_weight"] == 32.0
    assert info["n_params"] == sum(p.numel() for p in session.model.parameters())


@pytest.mark.slow
def test_decode_reads_are_the_parameters_one_embedding_row_and_the_kv_per_position(session):
    """The roofline's bytes per token: the tiny Llama's parameters in float32, its untied
    input embedding one row per token; KV per position = layers x (K + V) x KV heads x head
    size x 4 bytes (2 x 2 x 2 x 16 x 4)."""
    model = session.model
    emb = model.get_input_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    r = session.decode_reads()
    assert r.weight_bytes_per_token == 4 * (total - emb.numel() + emb.shape[1])
    assert r.kv_bytes_per_cell == 2 * 2 * 2 * 16 * 4
    assert r.state_bytes_per_token == 0 and r.memory == "cpu"
    assert "one row per token" in r.method


@pytest.mark.slow
def test_sequence_logits_agree_with_one_token_at_a_time_through_the_cache(session):
    tokens = session.prompt("t", None, "The river rises in the hills.").tokens
    seq = session.logits(tokens, one_at_a_time=False)
    one = session.logits(tokens, one_at_a_time=True)
    assert seq.shape == one.shape
    assert float((seq - one).abs().max()) <= 1e-4 * float(one.abs().max())


@pytest.mark.slow
def test_synthetic_prompts_have_exactly_n_tokens_with_bos_first(session):
    for n in (1, 7, 64, 300):
        p = session.prompt(f"synthetic-{n}", n, None)
        assert len(p.tokens) == n and p.tokens[0] == session.tok.bos_token_id


@pytest.mark.slow
def test_greedy_output_is_deterministic_and_of_fixed_length(session):
    p = session.prompt("synthetic-32", 32, None)
    a = session.generate(p, 12, False, nothing)
    b = session.generate(p, 12, False, nothing)
    assert a.token_ids == b.token_ids and len(a.token_ids) == len(a.token_times) == 12
    assert a.n_prompt == 32


@pytest.mark.slow
def test_each_trial_starts_from_an_empty_cache_and_costs_what_the_first_costs(session):
    p = session.prompt("synthetic-128", 128, None)
    seen: list[int] = []

    def before(module, args, kwargs):
        ids = kwargs["input_ids"]
        if ids.shape[1] > 1:  # the prompt's forward: what does the cache hold already?
            seen.append(kwargs[session.cache_kw].get_seq_length())

    hook = session.model.register_forward_pre_hook(before, with_kwargs=True)
    try:
        session.generate(p, 4, False, nothing)
        runs = [session.generate(p, 16, False, nothing) for _ in range(6)]
    finally:
        hook.remove()
    assert seen == [0] * 7
    assert all(r.token_ids == runs[0].token_ids for r in runs)
    # Early trials against later ones, each side's cheapest: a shared machine's bursts of
    # other work only ever add time, so the minimum is the trial's own cost.
    cost = [r.token_times[-1] - r.t_start for r in runs]
    early, late = min(cost[: len(cost) // 2]), min(cost[len(cost) // 2 :])
    assert 0.5 < late / early < 2.0, cost


@pytest.mark.slow
def test_depth_puts_the_fill_in_the_cache_before_the_timed_prompt(session):
    p0 = session.prompt("synthetic-16", 16, None)
    p2 = session.prompt("synthetic-16", 16, None, depth=200)
    assert len(p2.fill) == 200 and p2.tokens == p0.tokens
    b = session.generate(p2, 8, False, nothing)
    assert b.n_prompt == 16
    joined = session.generate(Prompt("j", p2.fill + p2.tokens, None), 8, False, nothing)
    assert b.token_ids == joined.token_ids  # the fill sat in the cache, at its positions
    alone = session.logits(p0.tokens, one_at_a_time=False)[-1]
    after = session.logits(p2.fill + p2.tokens, one_at_a_time=False)[-1]
    assert float((alone - after).abs().max()) > 1e-4


@pytest.mark.slow
def test_depth_beyond_the_models_positions_is_refused_with_the_numbers(session):
    p = session.prompt("synthetic-16", 16, None, depth=4090)
    with pytest.raises(BackendError, match="4096"):
        session.generate(p, 8, False, nothing)


@pytest.mark.slow
def test_the_generated_text_detokenizes_for_chars_per_second(session):
    t = session.generate(session.prompt("synthetic-8", 8, None), 6, False, nothing)
    assert isinstance(session.detokenize(t.token_ids), str)


@pytest.mark.slow
def test_a_folder_is_located_as_a_model_and_identified_by_its_files(folder):
    cfg = loads_config(f"name: t\nmodels: [{{id: l, path: '{folder}'}}]\n"
                       "backends: [{name: transformers}]\n").config
    loc = locate(model_variants(cfg.models[0])[0])
    assert loc.ok and loc.path == folder and loc.size_bytes > 0
    ident = file_identity(folder)
    assert len(ident["sha256"]) == 64 and ident["size_bytes"] == loc.size_bytes
    assert file_identity(folder)["sha256"] == ident["sha256"]


@pytest.mark.slow
def test_remote_code_is_refused_unless_the_config_allows_it(tmp_path, folder):
    import json
    import shutil

    f = tmp_path / "remote"
    shutil.copytree(folder, f)
    cfg = json.loads((f / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    cfg["model_type"] = "x-remote"
    (f / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BackendError, match="trust_remote_code: true"):
        get_backend("transformers")().load(f, dict(SETTINGS), seed=1)


def test_settings_validate_device_and_dtype():
    with pytest.raises(ConfigError, match="device"):
        loads_config("name: t\nmodels: [{id: l, path: x, format: hf}]\n"
                     "backends: [{name: transformers, device: gpu}]\n")
    cfg = loads_config("name: t\nmodels: [{id: l, repo: org/model, format: hf}]\n"
                       "backends: [{name: transformers, dtype: [float32, bfloat16]}]\n").config
    assert [c.setting["dtype"] for c in expand(cfg)] == ["float32", "bfloat16"]
