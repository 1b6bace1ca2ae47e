"""The rwkv backend on a locally made RWKV-5.2 checkpoint (random weights, fixed seed) through
the real `rwkv` package, and its World tokenizer on every language of the prompt pack."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("rwkv", reason="the rwkv extra is not installed: pip install 'bench[rwkv]'")

from tiny_models import make_rwkv52

from bench.backends.base import BackendError, get_backend
from bench.backends.rwkv.checkpoint import detect_version, inspect
from bench.config import ConfigError, loads_config
from bench.models import locate
from bench.sweep import model_variants


@pytest.fixture(scope="module")
def pth(tmp_path_factory):
    return make_rwkv52(tmp_path_factory.mktemp("rwkv") / "tiny-rwkv52.pth")


@pytest.fixture(scope="module")
def session(pth):
    s = get_backend("rwkv")().load(pth, {"strategy": "cpu fp32", "jit": True}, seed=42)
    s.configure({"n_threads": 1})  # one thread: steadier on a shared machine
    yield s
    s.close()


def nothing(edge: str) -> None:
    pass


@pytest.mark.slow
def test_the_checkpoint_is_detected_as_rwkv_5_2_as_the_package_itself_detects_it(pth, session):
    facts = inspect(pth)
    assert facts.version == 5.2 == session.model.version
    info = session.info()
    assert info["rwkv_version"] == "5.2" and info["architecture"] == "rwkv5.2"
    assert (info["n_layer"], info["n_embd"], info["n_head"], info["n_vocab"]) == (2, 64, 2, 65536)
    assert info["n_layer"] == session.model.args.n_layer
    assert info["n_embd"] == session.model.args.n_embd
    assert info["dtype"] == "bfloat16" and info["bits_per_weight"] == 16.0
    assert info["n_params"] > 2 * 65536 * 64  # embedding and head alone


def test_version_rules_follow_the_packages_key_names():
    base = {"emb.weight": (10, 8), "blocks.0.att.key.weight": (8, 8)}
    assert detect_version(base) == 4
    v5 = {**base, "blocks.0.att.ln_x.weight": (8,), "blocks.0.att.time_decay": (2,)}
    assert detect_version(v5) == 5
    assert detect_version({**v5, "blocks.0.att.gate.weight": (8, 8)}) == 5.1
    v52 = {**v5, "blocks.0.att.gate.weight": (8, 8), "blocks.0.att.time_decay": (2, 4)}
    assert detect_version(v52) == 5.2
    assert detect_version({**v52, "blocks.0.att.time_maa_x": (1, 1, 8)}) == 6
    assert detect_version({**base, "blocks.0.att.r_k": (2, 4)}) == 7


@pytest.mark.slow
def test_sequence_mode_logits_agree_with_one_token_at_a_time(session):
    from bench.backends.rwkv.backend import encode

    tokens = encode("The river rises in the hills and runs for many miles.")
    seq = session.logits(tokens, one_at_a_time=False)
    one = session.logits(tokens, one_at_a_time=True)
    assert seq.shape == one.shape == (len(tokens), 65536)
    scale = float(one.abs().max())
    assert float((seq - one).abs().max()) <= 1e-4 * scale
    assert bool((seq.argmax(-1) == one.argmax(-1)).all())


@pytest.mark.slow
def test_greedy_output_is_deterministic_and_of_fixed_length(session):
    p = session.prompt("synthetic-32", 32, None)
    assert len(p.tokens) == 32
    a = session.generate(p, 12, False, nothing)
    b = session.generate(p, 12, False, nothing)
    assert a.token_ids == b.token_ids and len(a.token_ids) == 12 == len(a.token_times)
    assert a.n_prompt == 32
    assert all(t2 >= t1 for t1, t2 in zip(a.token_times, a.token_times[1:], strict=False))


@pytest.mark.slow
def test_each_trial_starts_from_a_fresh_state_and_costs_what_the_first_costs(session):
    class Recorder:
        """The package's model, with the state each prompt forward starts from recorded."""

        def __init__(self, model):
            self.model, self.starts = model, []

        def forward(self, tokens, state, **kw):
            if len(tokens) > 1:
                self.starts.append(state)
            return self.model.forward(tokens, state, **kw)

    p = session.prompt("synthetic-64", 64, None)
    real = session.model
    session.model = rec = Recorder(real)
    try:
        session.generate(p, 4, False, nothing)  # warm-up: the first forward compiles (JIT)
        runs = [session.generate(p, 16, False, nothing) for _ in range(6)]
    finally:
        session.model = real
    assert rec.starts == [None] * 7  # every prompt starts from the package's zero state
    assert all(r.token_ids == runs[0].token_ids for r in runs)
    # Early trials against later ones, each side's cheapest: a shared machine's bursts of
    # other work only ever add time, so the minimum is the trial's own cost.
    cost = [r.token_times[-1] - r.t_start for r in runs]
    early, late = min(cost[: len(cost) // 2]), min(cost[len(cost) // 2 :])
    assert 0.5 < late / early < 2.0, cost


@pytest.mark.slow
def test_edges_come_in_order_around_the_timed_phases(session):
    seen: list[tuple[str, float]] = []
    p = session.prompt("synthetic-16", 16, None, depth=32)
    t = session.generate(p, 4, False, lambda e: seen.append((e, time.perf_counter())))
    assert [e for e, _ in seen] == ["start", "first", "end"]
    assert seen[0][1] <= t.t_start <= t.token_times[0] <= seen[1][1]


@pytest.mark.slow
def test_depth_fills_the_state_untimed_before_the_same_prompt(session):
    from bench.backends.base import Prompt

    p0 = session.prompt("synthetic-16", 16, None)
    p2 = session.prompt("synthetic-16", 16, None, depth=48)
    assert p2.tokens == p0.tokens and len(p2.fill) == 48 and p2.depth == 48
    b = session.generate(p2, 8, False, nothing)
    assert b.n_prompt == 16  # the fill is context, not prompt
    # The same as one prompt of fill + prompt: the fill went through the state first ...
    joined = session.generate(Prompt("j", p2.fill + p2.tokens, None), 8, False, nothing)
    assert b.token_ids == joined.token_ids
    # ... and it matters: the prompt's last logits differ with and without the context.
    alone = session.logits(p0.tokens, one_at_a_time=False)[-1]
    after = session.logits(p2.fill + p2.tokens, one_at_a_time=False)[-1]
    assert float((alone - after).abs().max()) > 1e-3


def test_the_world_tokenizer_round_trips_every_pack_language():
    from bench.backends.rwkv.backend import decode, encode
    from bench.workload.packs import load_pack

    prompts = load_pack("parallel", None)
    langs = {p.lang for p in prompts}
    assert len(langs) >= 12
    for p in prompts:
        ids = encode(p.text)
        assert ids and max(ids) < 65536
        assert decode(ids) == p.text, p.lang


@pytest.mark.slow
def test_a_cuda_strategy_without_a_gpu_says_so(pth):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(BackendError, match="CUDA build of torch"):
        get_backend("rwkv")().load(pth, {"strategy": "cuda fp16"}, seed=1)


def test_a_strategy_the_package_would_refuse_fails_validation():
    with pytest.raises(ConfigError, match="strategy 'gpu fp16'"):
        loads_config("name: r\nmodels: [{id: e, path: e.pth}]\n"
                     "backends: [{name: rwkv, strategy: 'gpu fp16'}]\n")


@pytest.mark.slow
def test_a_pth_path_is_located_and_a_gguf_given_to_rwkv_is_named(pth, tmp_path):
    cfg = loads_config(f"name: r\nmodels: [{{id: e, path: '{pth}'}}]\n"
                       "backends: [{name: rwkv}]\n").config
    loc = locate(model_variants(cfg.models[0])[0])
    assert loc.ok and loc.path == pth
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 8)
    with pytest.raises(BackendError, match=r"does not end in \.pth"):
        get_backend("rwkv")().load(bad, {"strategy": "cpu fp32"}, seed=1)


@pytest.mark.slow
def test_decode_reads_count_the_weights_as_the_strategy_converted_them(pth, session):
    """The roofline's bytes per token: under 'cpu fp32' every weight is 4 bytes, the embedding
    is one row (the package indexes it), blocks.0.ln0 is folded into the embedding at load;
    the state is RWKV-5.2's per layer (two token-shift vectors and a head x head-size x
    head-size fp32 matrix), read and written once per token."""
    facts = inspect(pth)
    r = session.decode_reads()
    c, hs = facts.n_embd, facts.n_embd // facts.n_head
    weights = facts.n_params - facts.n_vocab * c - 2 * c + c  # emb whole -> one row; ln0 gone
    assert r.weight_bytes_per_token == 4 * weights
    per_layer = 2 * c * 4 + facts.n_head * hs * hs * 4
    assert r.state_bytes_per_token == 2 * facts.n_layer * per_layer
    assert r.kv_bytes_per_cell is None and r.memory == "cpu"
    assert "'cpu fp32'" in r.method and "state" in r.method
    bf16 = get_backend("rwkv")().load(pth, {"strategy": "cpu bf16", "jit": False}, seed=42)
    try:
        half = bf16.decode_reads()
    finally:
        bf16.close()
    # The matrices halve; the few fp32-only vectors (decay, ln_x) keep it above one half.
    assert 0.5 * r.weight_bytes_per_token < half.weight_bytes_per_token \
        < 0.6 * r.weight_bytes_per_token
