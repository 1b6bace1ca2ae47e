"""The ollama backend against a loopback fixture that replays NDJSON streams written after
Ollama's documented /api/generate (tests/data/ollama/): the requests bench sends, the counters it
reads from the final object, and the errors it gives."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from support import SMOL_MODEL_YAML
from test_backend_openai import ReplayServer, closed_port

from bench.backends.base import BackendError
from bench.backends.http_settings import OllamaSettings
from bench.backends.ollama import OllamaBackend, ollama_engine_columns
from bench.backends.sse import StreamError, iter_ndjson, read_ollama_stream
from bench.config import ConfigError, loads_config
from bench.metrics import prompt_check, trial_timing
from bench.sweep import expand, groups

DATA = Path(__file__).parent / "data" / "ollama"


def lines(name: str) -> list[bytes]:
    return [line + b"\n" for line in (DATA / name).read_bytes().splitlines()]


def one(name: str) -> tuple[int, str, bytes]:
    return 200, "application/json", (DATA / name).read_bytes().strip()


class FakeOllama(ReplayServer):
    """/api/version, /api/show, and /api/generate in its four uses: unload (keep_alive 0),
    load (no prompt), a count (stream false) and a streamed generation."""

    def __init__(self, stream: str = "generate_stream.ndjson", model: str = "smollm2-135m"):
        self.stream_file = stream
        self.model = model
        super().__init__({
            "GET /api/version": one("version.ndjson"),
            "POST /api/show": one("show.ndjson"),
            "POST /api/generate": self.generate,
        })

    def generate(self, body: dict[str, Any]) -> tuple[int, str, Any]:
        if body.get("model") != self.model:
            msg = {"error": f"model '{body.get('model')}' not found"}
            return 404, "application/json", json.dumps(msg).encode()
        if body.get("keep_alive") == 0:
            return one("unload.ndjson")
        if "prompt" not in body:
            return one("load.ndjson")
        if body.get("stream") is False:
            return one("count.ndjson")
        return 200, "application/x-ndjson", lines(self.stream_file)


def settings(**kw: Any) -> dict[str, Any]:
    spec = OllamaSettings(name="ollama", **kw)
    return {**{k: v[0] for k, v in spec.axes().items()}, **spec.fixed()}


def load(srv: FakeOllama, model_path: Path | None = None, model: str = "smollm2-135m",
         **kw: Any):
    return OllamaBackend().load(model_path, settings(url=srv.url, **kw), seed=7, model_name=model)


def run(session: Any, n_prompt: int = 16, n_gen: int = 8):
    edges: list[str] = []
    trace = session.generate(session.prompt(f"synthetic-{n_prompt}", n_prompt, None), n_gen,
                             False, edges.append)
    assert edges == ["start", "first", "end"]
    return trace


# -- parsing -------------------------------------------------------------------------------------


def test_the_final_object_carries_the_counts_and_durations():
    out = read_ollama_stream(iter_ndjson(io.BytesIO(b"".join(lines(
        "generate_stream.ndjson"))).readline))
    assert out.text == " The old river is a long way home"
    assert len(out.times) == 7 and out.n_chunks == 9  # one chunk had no text, one was final
    assert out.finish_reason == "length"
    assert out.timings["eval_count"] == 8 and "context" not in out.timings


def test_ollama_counters_become_engine_columns_in_milliseconds_and_decode_steps():
    final = json.loads(lines("generate_stream.ndjson")[-1])
    cols = ollama_engine_columns(final)
    assert cols["engine_n_p_eval"] == 16
    assert cols["engine_t_p_eval_ms"] == pytest.approx(13.074791)
    # eval_count counts every generated token; the first comes from the prompt pass
    assert cols["engine_n_eval"] == 7 and cols["engine_t_eval_ms"] == pytest.approx(52.479709)
    assert cols["ollama_load_ms"] == pytest.approx(101.397084)
    assert cols["ollama_total_ms"] == pytest.approx(174.560334)


def test_an_error_line_mid_stream_is_a_stream_error():
    with pytest.raises(StreamError, match="unexpected EOF"):
        read_ollama_stream(iter_ndjson(io.BytesIO(b"".join(lines(
            "generate_error.ndjson"))).readline))


def test_a_stream_without_done_was_dropped():
    with pytest.raises(StreamError, match="after 4 chunks without `done: true`"):
        read_ollama_stream(iter_ndjson(io.BytesIO(b"".join(lines(
            "generate_dropped.ndjson"))).readline))


# -- the backend against the fixture -------------------------------------------------------------


def test_a_trial_records_ollamas_counts_beside_the_wall_clock(smol_path):
    with FakeOllama() as srv:
        s = load(srv, smol_path)
        trace = run(s)
        s.close()
    assert trace.n_prompt == 16 and trace.n_gen == 8 and trace.count_source == "usage"
    assert len(trace.token_times) == 7
    row = trial_timing(trace)
    assert row["engine_decode_tps"] == pytest.approx(7 / 0.052479709)
    assert row["overhead_decode_pct"] is not None and row["ollama_load_ms"] > 0
    assert prompt_check(row) is None


def test_requests_use_raw_mode_greedy_options_and_the_swept_options(smol_path):
    with FakeOllama() as srv:
        s = load(srv, smol_path, options={"num_ctx": 2048, "num_thread": 2}, keep_alive="5m")
        run(s, 16, 8)
        s.close()
        gens = srv.posts("/api/generate")
    unload, loaded, streamed, closing = gens[0]["body"], gens[1]["body"], gens[2]["body"], \
        gens[3]["body"]
    assert unload == {"model": "smollm2-135m", "keep_alive": 0, "stream": False}
    assert loaded["options"] == {"num_ctx": 2048, "num_thread": 2} and "prompt" not in loaded
    assert streamed["raw"] is True and streamed["stream"] is True
    assert streamed["keep_alive"] == "5m"
    assert streamed["options"] == {"num_ctx": 2048, "num_thread": 2, "num_predict": 8,
                                   "temperature": 0.0, "seed": 7}
    assert isinstance(streamed["prompt"], str) and streamed["prompt"].startswith("The river")
    assert closing["keep_alive"] == 0  # the model is unloaded when the session closes


def test_load_reports_ollamas_version_and_what_it_says_about_the_model(smol_path):
    with FakeOllama() as srv:
        s = load(srv, smol_path, unload_on_close=False)
        info = s.info()
    assert info["ollama_version"] == "0.12.6" and info["quant_type"] == "Q4_1"
    assert info["server_url"] == srv.url and info["architecture"] == "llama"


def test_a_cached_prompt_is_caught_by_the_prompt_check(smol_path):
    with FakeOllama("generate_cached.ndjson") as srv:
        s = load(srv, smol_path)
        row = trial_timing(run(s))
    assert row["n_prompt"] == 16 and row["engine_n_p_eval"] == 1
    assert "evaluated 1 of 16 prompt tokens" in prompt_check(row)


def test_a_model_that_stops_at_eos_records_the_tokens_it_made(smol_path):
    with FakeOllama("generate_eos.ndjson") as srv:
        trace = run(load(srv, smol_path))
    assert trace.n_gen == 3 and trace.stopped_at_eos


def test_an_unknown_model_says_how_to_get_it():
    with FakeOllama() as srv, pytest.raises(BackendError) as e:
        load(srv, model="mistral:7b")
    assert "has no model 'mistral:7b'" in str(e.value)
    assert "ollama pull mistral:7b" in str(e.value)


def test_an_error_mid_stream_fails_the_trial_with_ollamas_message(smol_path):
    with FakeOllama("generate_error.ndjson") as srv:
        s = load(srv, smol_path)
        with pytest.raises(BackendError, match="unexpected EOF"):
            run(s)


def test_no_ollama_running_says_so():
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(BackendError, match=r"no server answered at .* \(connection refused\)"):
        OllamaBackend().load(None, settings(url=url), seed=1, model_name="mistral:7b")


def test_a_served_model_without_a_tokenizer_is_calibrated_with_ollamas_own_count():
    # No local file: the synthetic prompt's length is found with short counting requests.
    with FakeOllama(model="mistral:7b") as srv:
        s = load(srv, None, model="mistral:7b")
        trace = run(s, 16, 8)
        counted = [r for r in srv.posts("/api/generate") if r["body"].get("stream") is False
                   and "prompt" in r["body"]]
    assert counted and trace.n_prompt == 16  # count.ndjson answers 16 for any prompt


# -- settings ------------------------------------------------------------------------------------


def test_options_sweep_and_each_value_is_its_own_load():
    text = "name: o\nmodels:\n" + SMOL_MODEL_YAML + """\
backends:
  - name: ollama
    options: {num_ctx: [1024, 2048], num_thread: 2}
workload: {prompt_tokens: 16, gen_tokens: 4}
"""
    cells = expand(loads_config(text).config)
    assert [(c.setting["num_ctx"], c.setting["num_thread"]) for c in cells] == [
        (1024, 2), (2048, 2)]
    assert len(groups(cells)) == 2


def test_options_bench_sets_itself_are_refused():
    text = "name: o\nmodels:\n" + SMOL_MODEL_YAML + """\
backends:
  - name: ollama
    options: {num_predict: 5}
"""
    with pytest.raises(ConfigError, match="'num_predict' is set by bench"):
        loads_config(text)
