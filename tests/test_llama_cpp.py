"""The llama.cpp backend on the real small model: honest prefill, fixed length, greedy."""
from __future__ import annotations

import pytest

from bench.backends.llama_cpp.backend import LlamaCppBackend

pytestmark = pytest.mark.slow

SETTINGS = {"n_threads": 2, "n_gpu_layers": 0, "n_ctx": 512, "n_batch": 64, "n_ubatch": 64,
            "flash_attn": False}


@pytest.fixture(scope="module")
def session(smol_path):
    s = LlamaCppBackend().load(smol_path, SETTINGS, seed=42)
    yield s
    s.close()


def run(session, prompt, n_gen, stop_at_eos=False):
    edges = []
    trace = session.generate(prompt, n_gen, stop_at_eos, edges.append)
    assert edges == ["start", "first", "end"]
    return trace


def test_synthetic_prompt_has_exactly_the_requested_tokens(session):
    for n in (2, 17, 64, 300):
        p = session.prompt(f"synthetic-{n}", n, None)
        assert len(p.tokens) == n


def test_same_prompt_twice_evaluates_the_whole_prompt_both_times(session):
    # llama-cpp-python's high-level API would reuse the matching prefix the second time and
    # turn prefill into a no-op; the engine's own counter proves it did not happen here.
    p = session.prompt("synthetic-100", 100, None)
    a = run(session, p, 8)
    b = run(session, p, 8)
    for t in (a, b):
        assert t.engine["engine_n_p_eval"] == 100
        assert t.engine["engine_n_eval"] == 7
    assert a.token_ids == b.token_ids  # greedy decoding is deterministic


def test_a_prompt_one_token_past_a_batch_is_still_counted_as_prompt(session):
    # 65 tokens with n_batch 64 would leave a 1-token chunk that llama.cpp counts as a
    # generation step; the backend splits it 63 + 2 instead.
    p = session.prompt("synthetic-65", 65, None)
    t = run(session, p, 4)
    assert t.engine["engine_n_p_eval"] == 65
    assert t.engine["engine_n_eval"] == 3


def test_generation_runs_to_the_requested_length_past_eos(session):
    chat = ("<|im_start|>user\nReply with one word: hello.<|im_end|>\n"
            "<|im_start|>assistant\n")
    tokens = session.tokenize(chat, add_special=True, special=True)
    from bench.backends.base import Prompt

    p = Prompt("chat", tokens, chat)
    full = run(session, p, 48)
    assert full.n_gen == 48
    is_eog = session.lib.llama_vocab_is_eog
    eog = [i for i, tok in enumerate(full.token_ids) if is_eog(session.vocab, tok)]
    assert eog, "the instruct model should end its one-word reply within 48 tokens"
    stopped = run(session, p, 48, stop_at_eos=True)
    assert stopped.stopped_at_eos
    assert stopped.n_gen == eog[0] + 1
    assert stopped.token_ids == full.token_ids[: eog[0] + 1]


def test_timestamps_are_monotonic_and_one_per_token(session):
    t = run(session, session.prompt("synthetic-32", 32, None), 16)
    assert len(t.token_times) == len(t.token_ids) == 16
    assert t.t_start < t.token_times[0]
    assert all(b > a for a, b in zip(t.token_times, t.token_times[1:], strict=False))


def test_thread_count_changes_without_reload(session):
    session.configure({"n_threads": 1})
    t = run(session, session.prompt("synthetic-32", 32, None), 4)
    assert t.engine["engine_n_p_eval"] == 32
    session.configure({"n_threads": 2})


def test_identity_comes_from_the_loaded_model(session):
    info = session.info()
    assert info["architecture"] == "llama"
    assert info["quant_type"] == "Q4_1"
    assert 100e6 < info["n_params"] < 200e6
    assert 4.0 < info["bits_per_weight"] < 7.0
    assert "Q4_1" in info["description"]
