"""Quality from the model's own log-probabilities: exact bits per byte, windows, KL arithmetic.

The arithmetic tests run on synthetic arrays; the slow ones run the real SmolLM2 and Gemma files
on one thread (steadier than two on a shared two-core machine) and short texts.
"""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from bench import quality
from bench.backends.llama_cpp import LlamaCppBackend
from bench.quality import (
    QualityError,
    bits_per_byte,
    bits_per_char,
    compare_distributions,
    open_model,
    perplexity,
    quality_rows,
    reference_logits,
    text_logprobs,
    windows,
)
from bench.workload.packs import load_heldout

SETTINGS = {"n_threads": 1, "n_ctx": 512, "n_batch": 512, "n_ubatch": 512}
ENGLISH = load_heldout("en")
PARAGRAPH = ENGLISH.split("\n\n")[1]  # about 80 tokens: the first paragraph of the text
ROW_KEYS = {"text_id", "n_tokens", "n_bytes", "n_chars", "bits_per_byte", "bits_per_char",
            "perplexity", "kl_div", "top1_agree"}


# -- arithmetic, no model -----------------------------------------------------------------------


@pytest.mark.parametrize("n,capacity,stride,first", [
    (10, 64, 32, 0), (10, 64, 32, 1), (100, 16, 8, 0), (100, 16, 8, 1), (100, 16, 15, 1),
    (100, 16, 16, 0), (17, 16, 1, 0), (33, 16, 7, 1),
])
def test_windows_score_every_token_once_with_enough_context(n, capacity, stride, first):
    plan = windows(n, capacity, stride, first)
    scored = [i for _, end, frm in plan for i in range(frm, end)]
    assert scored == list(range(first, n))
    for k, (start, end, frm) in enumerate(plan):
        assert 0 <= start <= frm < end <= n and end - start <= capacity
        if k:  # later windows keep capacity - stride tokens of context before what they score
            assert frm - start >= capacity - stride


def test_windows_of_a_text_too_short_to_score_are_empty():
    assert windows(1, 16, 8, 1) == []
    assert windows(0, 16, 8, 0) == []


def _kl_direct(ref: np.ndarray, cand: np.ndarray) -> float:
    ref, cand = ref.astype(np.float64), cand.astype(np.float64)
    p = np.exp(ref - ref.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    q = np.exp(cand - cand.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    return float(np.mean(np.sum(p * np.log(p / q), axis=1)))


def test_kl_and_top1_match_a_direct_computation_across_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 3, (37, 50)).astype(np.float32)
    cand = ref + rng.normal(0, 0.5, ref.shape).astype(np.float32)
    whole = compare_distributions(ref, cand)
    monkeypatch.setattr(quality, "_BLOCK_ELEMENTS", 50 * 4)  # blocks of four rows
    blocked = compare_distributions(ref, cand)
    assert whole["kl_div"] == pytest.approx(_kl_direct(ref, cand), rel=1e-9)
    assert blocked["kl_div"] == pytest.approx(whole["kl_div"], rel=1e-12)
    agree = float(np.mean(ref.argmax(1) == cand.argmax(1)))
    assert whole["top1_agree"] == blocked["top1_agree"] == agree
    assert whole["n_positions"] == 37


def test_kl_ignores_a_constant_added_to_a_row_and_is_zero_against_itself():
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 2, (8, 30))
    shifted = ref + rng.normal(0, 10, (8, 1))  # same distributions, different logits
    assert compare_distributions(ref, shifted)["kl_div"] == pytest.approx(0.0, abs=1e-12)
    same = compare_distributions(ref, ref)
    assert same["kl_div"] == 0.0 and same["top1_agree"] == 1.0


def test_rows_of_different_shape_are_refused():
    with pytest.raises(QualityError, match="shape"):
        compare_distributions(np.zeros((3, 4)), np.zeros((3, 5)))


# -- the real models ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol(smol_path):
    with open_model(smol_path, SETTINGS) as llm:
        yield llm


@pytest.fixture(scope="module")
def gemma_file():
    from support import gemma_path

    return gemma_path()


def _own_log_softmax(row: np.ndarray) -> np.ndarray:
    x = row.astype(np.float64)
    return x - x.max() - math.log(np.exp(x - x.max()).sum())


@pytest.mark.slow
def test_bits_per_byte_equals_a_direct_computation_from_llama_cpp_python_logits(smol_path):
    # An independent path: llama-cpp-python's own evaluation with logits for every position.
    import llama_cpp

    from bench.backends.llama_cpp import quiet_stderr

    text = "The river runs to the sea, and the sea is never full."
    with quiet_stderr(True):
        llm = llama_cpp.Llama(model_path=str(smol_path), n_ctx=64, n_threads=1,
                              logits_all=True, verbose=False)
    try:
        lp = text_logprobs(llm, text)
        toks = llm.tokenize(text.encode(), add_bos=False, special=False)
        llm.reset()
        llm.eval(toks)
        scores = np.array(llm.scores[: len(toks)])
        first_bytes = len(llm.detokenize(toks[:1]))
    finally:
        llm.close()
    # SmolLM2's GGUF adds no BOS: the first token is context, the rest are scored.
    assert lp.prefix == [] and lp.first_scored == 1
    assert list(lp.tokens) == toks
    nats = -sum(_own_log_softmax(scores[i])[toks[i + 1]] for i in range(len(toks) - 1))
    bits = nats / math.log(2)
    n_bytes = len(text.encode()) - first_bytes
    assert lp.scored_bytes(text) == n_bytes
    assert bits_per_byte(lp, text) == pytest.approx(bits / n_bytes, rel=1e-5)
    assert bits_per_char(lp, text) == pytest.approx(bits / (len(text) - first_bytes), rel=1e-5)
    nll = bits * math.log(2) / (len(toks) - 1)
    assert perplexity(lp) == pytest.approx(math.exp(nll), rel=1e-5)


@pytest.mark.slow
def test_bits_per_byte_equals_the_sum_over_kept_logits_rows(smol):
    lp = text_logprobs(smol, PARAGRAPH, keep_logits=True)
    assert lp.logits is not None and lp.logits.shape == (lp.n_scored, smol.n_vocab())
    targets = lp.scored_tokens
    nats = -sum(_own_log_softmax(lp.logits[k])[targets[k]] for k in range(lp.n_scored))
    direct = nats / math.log(2) / lp.scored_bytes(PARAGRAPH)
    assert bits_per_byte(lp, PARAGRAPH) == pytest.approx(direct, rel=1e-12)


@pytest.mark.slow
def test_a_model_with_a_bos_scores_every_byte_of_the_text(gemma_file):
    text = "Water in a river moves because of gravity."
    with open_model(gemma_file, {**SETTINGS, "n_ctx": 64}) as llm:
        lp = text_logprobs(llm, text, keep_logits=True)
        bos = llm._model.token_bos()
    assert lp.prefix == [bos] and lp.first_scored == 0 and lp.n_scored == lp.n_tokens
    assert lp.scored_bytes(text) == len(text.encode())
    nats = -sum(_own_log_softmax(lp.logits[k])[lp.tokens[k]] for k in range(lp.n_scored))
    assert bits_per_byte(lp, text) == pytest.approx(nats / math.log(2) / len(text), rel=1e-12)


@pytest.mark.slow
def test_a_sliding_window_scores_each_token_once_and_the_first_window_as_a_single_pass(smol):
    whole = text_logprobs(smol, PARAGRAPH)
    small = text_logprobs(smol, PARAGRAPH, 32, stride=8)
    assert whole.n_windows == 1 and small.n_windows > 5
    assert small.n_scored == whole.n_scored == whole.n_tokens - 1
    # Tokens of the first window see the same context either way.
    np.testing.assert_allclose(small.logprobs[:31], whole.logprobs[:31], rtol=1e-4, atol=1e-4)
    # Less context makes the rest of the text harder to predict.
    assert bits_per_byte(small, PARAGRAPH) > bits_per_byte(whole, PARAGRAPH)


@pytest.mark.slow
def test_stride_and_window_outside_their_range_are_refused(smol):
    with pytest.raises(QualityError, match="stride"):
        text_logprobs(smol, PARAGRAPH, 32, stride=32)  # no BOS: at most 31
    with pytest.raises(QualityError, match="n_ctx"):
        text_logprobs(smol, PARAGRAPH, 4096)
    with pytest.raises(QualityError, match="token"):
        text_logprobs(smol, "R")


@pytest.mark.slow
def test_a_well_formed_text_has_lower_perplexity_than_its_shuffled_words(smol):
    words = PARAGRAPH.split()
    random.Random(0).shuffle(words)
    shuffled = " ".join(words)
    good = text_logprobs(smol, PARAGRAPH)
    bad = text_logprobs(smol, shuffled)
    assert perplexity(good) < perplexity(bad) / 3
    assert bits_per_byte(good, PARAGRAPH) < bits_per_byte(bad, shuffled)


@pytest.mark.slow
def test_the_text_given_must_be_the_text_scored(smol):
    lp = text_logprobs(smol, PARAGRAPH)
    with pytest.raises(QualityError, match="not the one"):
        bits_per_byte(lp, PARAGRAPH + " ")


@pytest.mark.slow
def test_smollm2_and_gemma_bits_per_byte_on_english_are_plausible(smol_path, gemma_file):
    texts = {"heldout-en": ENGLISH}
    rows = {}
    for name, path in (("smollm2", smol_path), ("gemma", gemma_file)):
        (row,) = quality_rows(path, texts, None, SETTINGS)
        assert set(row) >= ROW_KEYS
        assert row["kl_div"] is None and row["top1_agree"] is None
        assert 0.3 < row["bits_per_byte"] < 3.0 and math.isfinite(row["perplexity"])
        rows[name] = row
    # SmolLM2 leaves its first token unscored; Gemma (with a BOS) scores every byte.
    assert rows["gemma"]["n_bytes"] == len(ENGLISH.encode())
    assert 0 < len(ENGLISH.encode()) - rows["smollm2"]["n_bytes"] < 10


@pytest.mark.slow
def test_quality_rows_reuse_a_loaded_benchmark_session(smol_path):
    settings = {"n_threads": 1, "n_gpu_layers": 0, "n_ctx": 256, "n_batch": 64, "n_ubatch": 64,
                "flash_attn": False}
    session = LlamaCppBackend().load(smol_path, settings, seed=42)
    try:
        (row,) = quality_rows(session, {"p": PARAGRAPH})
        assert row["window_tokens"] == 256 and row["n_windows"] == 1
        # The session still measures honestly afterwards: a full prefill from an empty cache.
        p = session.prompt("synthetic-40", 40, None)
        trace = session.generate(p, 4, False, lambda edge: None)
        assert trace.engine["engine_n_p_eval"] == 40
    finally:
        session.close()
    with open_model(smol_path, SETTINGS) as llm:
        (again,) = quality_rows(llm, {"p": PARAGRAPH})
    assert again["bits_per_byte"] == pytest.approx(row["bits_per_byte"], rel=1e-4)


@pytest.mark.slow
def test_kl_refuses_models_with_different_tokenizers(smol_path, gemma_file):
    texts = {"t": "Rivers flow to the sea."}
    with (
        reference_logits(smol_path, texts, SETTINGS) as ref,
        pytest.raises(QualityError, match="tokenizes differently"),
    ):
        quality_rows(gemma_file, texts, ref, SETTINGS)
