"""A trace -> the timing columns of one trial row, as docs/results.md defines them.

Pure arithmetic on timestamps and counts; no engine, no clock.
"""
from __future__ import annotations

from typing import Any

from bench.backends.base import Trace
from bench.stats import percentile
from bench.workload.text import count_chars, count_words


def _rate(n: float, seconds: float | None) -> float | None:
    return n / seconds if seconds and seconds > 0 else None


def trial_timing(trace: Trace) -> dict[str, Any]:
    n_gen = trace.n_gen
    times = trace.token_times
    row: dict[str, Any] = {
        "n_prompt": trace.n_prompt, "n_gen": n_gen, "count_source": trace.count_source
    }
    if n_gen == 0 or not times:
        return row
    ttft = times[0] - trace.t_start
    decode_s = times[-1] - times[0] if n_gen > 1 else None
    e2e = times[-1] - trace.t_start
    row.update(
        ttft_s=ttft,
        # In process the first token is available when prompt processing ends.
        prefill_s=ttft,
        prefill_tps=_rate(trace.n_prompt, ttft),
        decode_s=decode_s,
        decode_tps=_rate(n_gen - 1, decode_s),
        e2e_s=e2e,
        e2e_tps=_rate(n_gen, e2e),
        stopped_at_eos=trace.stopped_at_eos,
    )
    # Gaps between consecutive timestamps: per token in process, per stream chunk over HTTP
    # (count_source says which), where a chunk may carry several tokens.
    gaps = [(b - a) * 1000.0 for a, b in zip(times, times[1:], strict=False)]
    for q in (50, 90, 99):
        row[f"itl_ms_p{q}"] = percentile(gaps, q) if gaps else None
    row.update(engine_columns(trace.engine, ttft, decode_s))
    return row


def engine_columns(engine: dict[str, Any], prefill_s: float, decode_s: float | None) -> dict:
    """The engine's own counters beside ours; the difference is the harness overhead."""
    if not engine:
        return {}
    out = dict(engine)
    t_p = engine.get("engine_t_p_eval_ms")
    t_e = engine.get("engine_t_eval_ms")
    n_p = engine.get("engine_n_p_eval")
    n_e = engine.get("engine_n_eval")
    out["engine_prefill_tps"] = _rate(n_p, t_p / 1000.0) if t_p and n_p else None
    out["engine_decode_tps"] = _rate(n_e, t_e / 1000.0) if t_e and n_e else None
    out["overhead_prefill_pct"] = (
        (prefill_s - t_p / 1000.0) / prefill_s * 100.0 if t_p and prefill_s > 0 else None
    )
    out["overhead_decode_pct"] = (
        (decode_s - t_e / 1000.0) / decode_s * 100.0 if t_e and decode_s else None
    )
    return out


def prompt_check(row: dict[str, Any]) -> str | None:
    """Why a trial cannot be trusted, or None. Proves the whole prompt was evaluated: a reused
    KV-cache prefix would show as n_p_eval < n_prompt and inflate prefill t/s."""
    n_p = row.get("engine_n_p_eval")
    if n_p is None or row.get("n_prompt", 0) < 2:
        return None
    if n_p != row["n_prompt"]:
        return (
            f"llama.cpp evaluated {n_p} of {row['n_prompt']} prompt tokens: the KV cache was "
            "reused, so prefill was not measured"
        )
    n_e = row.get("engine_n_eval")
    if n_e is not None and n_e != row["n_gen"] - 1:
        return f"llama.cpp counted {n_e} generation steps for {row['n_gen']} tokens"
    return None


def text_columns(
    prompt_text: str | None,
    n_prompt: int,
    gen_text: str | None,
    first_token_text: str | None,
    decode_s: float | None,
    decode_energy_j: float | None,
) -> dict[str, Any]:
    """Language-fair figures: per character and per word as well as per token.

    Tokenizers split languages very differently, so tokens/s and J/token mislead across models;
    characters (Unicode code points, NFC) and words (bench.workload.text) do not. Decode-phase
    text is the generated text minus the first token's, matching decode_tps's n_gen - 1 tokens.
    """
    out: dict[str, Any] = {}
    if prompt_text:
        chars, words = count_chars(prompt_text), count_words(prompt_text)
        out.update(
            prompt_chars=chars,
            prompt_words=words,
            tokens_per_char=n_prompt / chars if chars else None,
            tokens_per_word=n_prompt / words if words else None,
        )
    if gen_text is not None:
        gen_chars = count_chars(gen_text)
        decode_chars = max(gen_chars - count_chars(first_token_text or ""), 0)
        decode_words = count_words(gen_text)
        out.update(
            gen_chars=gen_chars,
            decode_chars=decode_chars,
            gen_words=decode_words,
            decode_chars_per_s=_rate(decode_chars, decode_s),
            decode_words_per_s=_rate(decode_words, decode_s),
            j_per_kchar=(
                decode_energy_j / decode_chars * 1000.0
                if decode_energy_j is not None and decode_chars
                else None
            ),
        )
    return out
