"""A server cannot make bench record nonsense: its token counts are evidence, each request has a
deadline and size caps, odd JSON is one sentence, the API key reaches nothing bench writes, the
prompt cache is not reused, and a server dies with the bench process that started it.

Servers here are real HTTP servers on 127.0.0.1 that misbehave on purpose (the replay server of
test_backend_openai, or raw handlers below)."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import REPO
from test_backend_ollama import FakeOllama, lines
from test_backend_ollama import load as load_ollama
from test_backend_openai import (
    STREAM,
    USAGE,
    ReplayServer,
    chunk,
    load,
    openai_routes,
    reader,
    sse,
)
from test_server_e2e import PY, STUB, gone, managed

from bench.backends.base import BackendError
from bench.backends.openai.backend import (
    COUNT_SLACK_TOKENS,
    OpenAIBackend,
    ServerCountError,
    api_key,
)
from bench.backends.server import Http, _pump_log
from bench.backends.sse import (
    StreamError,
    iter_ndjson,
    iter_sse,
    read_ollama_stream,
    read_openai_stream,
)
from bench.metrics import prompt_check, trial_timing
from bench.redact import redact, register_secret


def NOOP(e):
    return None


def stream_with_usage(**usage: Any) -> list[bytes]:
    return [*STREAM[:-2], *sse({**USAGE, "usage": {**USAGE["usage"], **usage}}, b"[DONE]")]


def generate(s: Any, n_prompt: int = 16, n_gen: int = 8) -> Any:
    return s.generate(s.prompt(f"synthetic-{n_prompt}", n_prompt, None), n_gen, False, NOOP)


# -- token counts are evidence -------------------------------------------------------------------


def test_a_server_claiming_a_billion_generated_tokens_fails_the_trial(smol_path):
    with ReplayServer(openai_routes(stream_with_usage(completion_tokens=10**9))) as srv:
        s = load(srv, smol_path)
        with pytest.raises(ServerCountError) as e:
            generate(s)
    msg = str(e.value)
    assert "reports 1000000000 generated tokens for a request of at most 8" in msg
    assert '"completion_tokens": 1000000000' in msg  # the raw values, for diagnosis
    assert e.value.raw["usage"]["completion_tokens"] == 10**9
    assert "\n" not in msg


@pytest.mark.parametrize("value, says", [
    (-3, "is -3, a negative number of tokens"),
    (7.5, "is 7.5, not a whole number of tokens"),
    ("8", 'is "8", not a whole number of tokens'),
    (True, "is true, not a whole number of tokens"),
])
def test_negative_fractional_text_and_boolean_counts_fail_the_trial(smol_path, value, says):
    with ReplayServer(openai_routes(stream_with_usage(completion_tokens=value))) as srv:
        s = load(srv, smol_path)
        with pytest.raises(ServerCountError, match="usage.completion_tokens " + says):
            generate(s)


def test_a_prompt_count_the_tokenizer_contradicts_fails_the_trial(smol_path):
    with ReplayServer(openai_routes(stream_with_usage(prompt_tokens=40))) as srv:
        s = load(srv, smol_path)
        with pytest.raises(ServerCountError,
                           match="counts 40 prompt tokens where the model's tokenizer counts 16"):
            generate(s)


def test_a_generated_count_the_text_contradicts_fails_the_trial(smol_path):
    # The text " The old river is a long way home" is 8 tokens; 2 is far outside the slack.
    with ReplayServer(openai_routes(stream_with_usage(completion_tokens=2))) as srv:
        s = load(srv, smol_path)
        with pytest.raises(ServerCountError,
                           match="reports 2 generated tokens where the model's tokenizer counts"):
            generate(s)
        # Within the documented slack, a count stands.
        srv.routes["POST /v1/completions"] = (
            200, "text/event-stream", stream_with_usage(completion_tokens=8 - COUNT_SLACK_TOKENS))
        assert generate(s).n_gen == 8 - COUNT_SLACK_TOKENS


def test_a_full_length_count_is_not_second_guessed_by_text_that_hides_tokens(smol_path):
    # With EOS ignored, tokens such as <|im_end|> can stream as no text: a server that says it
    # stopped at max_tokens and counts exactly max_tokens has two signals that agree.
    stream = [*sse(chunk(" The"), chunk("", "length")), *sse(USAGE, b"[DONE]")]
    with ReplayServer(openai_routes(stream)) as srv:
        s = load(srv, smol_path)
        trace = generate(s)
    assert trace.n_gen == 8 and trace.engine["n_gen_retokenized"] == 1


def test_llama_server_timings_are_checked_like_usage(smol_path):
    last = {**chunk("", "length"), "timings": {"prompt_n": 16, "prompt_ms": 8.0,
                                               "predicted_n": True, "predicted_ms": 70.0}}
    stream = sse(chunk(" The"), chunk(" river"), last, b"[DONE]")
    with ReplayServer(openai_routes(stream)) as srv:
        s = load(srv, smol_path)
        with pytest.raises(ServerCountError, match="timings.predicted_n is true"):
            generate(s)


def test_the_raw_usage_is_kept_in_the_row_of_a_good_trial(smol_path):
    with ReplayServer(openai_routes()) as srv:
        s = load(srv, smol_path)
        row = trial_timing(generate(s))
    assert json.loads(row["raw_usage"]) == {"usage": USAGE["usage"]}


def test_ollama_counts_are_evidence_too(smol_path):
    final = lines("generate_stream.ndjson")[-1]
    obj = json.loads(final)
    obj["eval_count"] = 10**9
    bad = [*lines("generate_stream.ndjson")[:-1], json.dumps(obj).encode() + b"\n"]
    srv = FakeOllama()
    usual = srv.generate
    srv.routes["POST /api/generate"] = lambda body: (
        (200, "application/x-ndjson", bad)
        if body.get("stream") is not False and body.get("prompt") else usual(body))
    with srv:
        s = load_ollama(srv, smol_path)
        with pytest.raises(ServerCountError, match="reports 1000000000 generated tokens"):
            generate(s)


def test_a_billion_tokens_is_recorded_as_an_error_row_not_a_result(tmp_path):
    from support import SMOL_MODEL_YAML

    from bench.config import loads_config
    from bench.results import load_run
    from bench.runner import Runner
    from bench.sweep import expand

    with ReplayServer(openai_routes(stream_with_usage(completion_tokens=10**9))) as srv:
        text = "name: liar\nmodels:\n" + SMOL_MODEL_YAML + f"""\
backends:
  - name: openai
    url: {srv.url}/v1
workload: {{prompt_tokens: 16, gen_tokens: 8}}
trials: {{warmup: 0, repeat: 2}}
energy: {{meters: none, idle_s: 0}}
"""
        loaded = loads_config(text)
        outcome = Runner(loaded, expand(loaded.config), tmp_path / "results").run()
    run = load_run(outcome.folder)
    assert outcome.cells_ok == 0
    (row,) = run.trials
    assert row["status"] == "error" and "1000000000 generated tokens" in row["error"]
    assert row.get("decode_tps") is None


# -- a deadline and size caps per request --------------------------------------------------------


class RawServer:
    """A loopback server whose POST handler writes whatever `respond(wfile)` writes, after a
    200 with no length (the body ends when the connection closes)."""

    def __init__(self, respond: Any, get_models: bool = True):
        owner = self
        self.respond = respond

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = b'{"data": [{"id": "m"}]}'
                if not get_models:
                    owner.respond(self)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    owner.respond(self)
                except OSError:
                    pass  # bench hung up, as it should

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> RawServer:  # noqa: PYI034
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def head(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.end_headers()
    h.wfile.flush()


def trickle(piece: bytes, for_s: float = 20.0):
    def respond(h: BaseHTTPRequestHandler) -> None:
        head(h)
        end = time.monotonic() + for_s
        while time.monotonic() < end:
            h.wfile.write(piece)
            h.wfile.flush()
            time.sleep(0.05)

    return respond


@pytest.mark.parametrize("piece", [b": keep-alive\n\n", b"x"], ids=["keep-alives", "bytes"])
def test_a_trickling_server_fails_the_trial_at_the_deadline(smol_path, piece):
    with RawServer(trickle(piece)) as srv:
        s = load(srv.url + "/v1", smol_path, timeout_s=1.0, deadline_s=1.0)
        t0 = time.monotonic()
        with pytest.raises(BackendError, match=r"did not finish the request within deadline_s "
                                               r"\(1 s in all\); raise deadline_s"):
            generate(s)
        took = time.monotonic() - t0
    assert 1.0 <= took < 3.0, took  # bounded: the deadline, not the 20 s the server would go on


def fifty_mb_line(h: BaseHTTPRequestHandler) -> None:
    head(h)
    h.wfile.write(b"data: ")
    block = b"x" * (1 << 20)
    for _ in range(50):
        h.wfile.write(block)
    h.wfile.write(b"\n\n")


def test_a_50_mb_line_fails_the_trial_in_bounded_time_and_memory(smol_path):
    with RawServer(fifty_mb_line) as srv:
        s = load(srv.url + "/v1", smol_path)
        tracemalloc.start()
        t0 = time.monotonic()
        try:
            with pytest.raises(BackendError, match=r"a line longer than max_line_bytes "
                                                   r"\(1048576 bytes\)"):
                generate(s)
            took = time.monotonic() - t0
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert took < 10.0, took
    assert peak < 8 << 20, peak  # a few MiB at most, not the 50 MB the server sent


def test_a_response_over_the_size_cap_fails_the_trial(smol_path):
    def many_lines(h: BaseHTTPRequestHandler) -> None:
        head(h)
        for _ in range(20_000):
            h.wfile.write(b": ping\n")

    with RawServer(many_lines) as srv:
        s = load(srv.url + "/v1", smol_path, max_response_bytes=64 << 10)
        with pytest.raises(BackendError, match=r"more than max_response_bytes \(65536 bytes\)"):
            generate(s)


def test_plain_requests_have_the_deadline_and_the_cap_too():
    def slow_body(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        for _ in range(400):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.05)

    with RawServer(slow_body, get_models=False) as srv:
        h = Http(srv.url, timeout_s=1.0, deadline_s=1.0)
        t0 = time.monotonic()
        with pytest.raises(BackendError, match=r"within deadline_s \(1 s in all\)"):
            h.request("GET", "/models")
        assert time.monotonic() - t0 < 3.0

    def big_body(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.end_headers()
        for _ in range(40):
            h.wfile.write(b"y" * (1 << 16))

    with RawServer(big_body, get_models=False) as srv:
        h = Http(srv.url, timeout_s=5.0, max_response_bytes=1 << 20)
        with pytest.raises(BackendError, match=r"more than max_response_bytes \(1048576"):
            h.json("GET", "/models")


# -- unexpected JSON shapes are one sentence -----------------------------------------------------


@pytest.mark.parametrize("obj, says", [
    ({"choices": {"0": {"text": "a"}}}, "`choices` is dict, not a list"),
    ({"choices": ["a"]}, "first choice is str, not an object"),
    ({"choices": [{"delta": "hello"}]}, "`delta` is str, not an object"),
    ({"choices": [{"delta": {"content": 5}}]}, "`content` is int, not a string"),
    ({"choices": [{"text": ["a"]}]}, "`text` is list, not a string"),
    ({"choices": [{"text": "a", "finish_reason": 1}]}, "`finish_reason` is int"),
    ({"usage": [1, 2]}, "`usage` is list, not an object"),
    ({"timings": "fast"}, "`timings` is str, not an object"),
])
def test_odd_openai_chunks_are_one_sentence(obj, says):
    data = b"".join(sse(obj, b"[DONE]"))
    with pytest.raises(StreamError, match=says):
        read_openai_stream(iter_sse(reader(data)))


def test_json_nested_deeper_than_the_parser_goes_is_one_sentence():
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(StreamError, match="not JSON"):
        read_openai_stream(iter_sse(reader(b"data: " + deep + b"\n\n")))
    with pytest.raises(StreamError, match="not JSON"):
        list(iter_ndjson(reader(deep + b"\n")))


def _json_values(keys: list[str]) -> st.SearchStrategy[Any]:
    leaf = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats() \
        | st.text(max_size=8)
    # A named function, not a lambda: when a draw exceeds max_leaves, hypothesis writes the
    # strategy's repr, and for a lambda that means parsing this file's source with ast at the
    # bottom of a deep stack, which CPython 3.11.7 can fail with a SystemError (seen in CI).
    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.lists(inner, max_size=3) | st.dictionaries(
            st.sampled_from(keys) | st.text(max_size=4), inner, max_size=4)

    return st.recursive(leaf, extend, max_leaves=12)


OPENAI_KEYS = ["choices", "text", "delta", "content", "reasoning_content", "finish_reason",
               "usage", "prompt_tokens", "completion_tokens", "timings", "prompt_n",
               "predicted_n", "predicted_ms", "prompt_ms", "cache_n", "error", "message"]
OLLAMA_KEYS = ["response", "thinking", "done", "done_reason", "prompt_eval_count", "eval_count",
               "eval_duration", "prompt_eval_duration", "prompt_eval_cached_count", "error"]


def test_random_json_shapes_through_a_real_openai_session_give_one_sentence(smol_path):
    """Whatever JSON the server streams, a trial ends as a trace or one BackendError sentence;
    never a KeyError, TypeError or AttributeError."""
    with ReplayServer(openai_routes()) as srv:
        s = load(srv, smol_path)
        outcomes = {"trace": 0, "error": 0}

        @settings(max_examples=60, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(_json_values(OPENAI_KEYS), min_size=1, max_size=4))
        def one(chunks: list[Any]) -> None:
            srv.routes["POST /v1/completions"] = (
                200, "text/event-stream", sse(*chunks, b"[DONE]"))
            try:
                generate(s)
                outcomes["trace"] += 1
            except BackendError as e:
                assert "\n" not in str(e) and str(e)
                outcomes["error"] += 1

        one()
    assert outcomes["error"] > 0


def test_random_json_shapes_in_an_ollama_stream_give_one_sentence():
    @settings(max_examples=200, deadline=None, database=None)
    @given(st.lists(st.dictionaries(st.sampled_from(OLLAMA_KEYS), _json_values(OLLAMA_KEYS),
                                    max_size=5), min_size=1, max_size=4))
    def one(objs: list[dict[str, Any]]) -> None:
        data = b"".join(json.dumps(o).encode() + b"\n" for o in objs)
        buf = iter(data.splitlines(keepends=True) + [b""])
        try:
            read_ollama_stream(iter_ndjson(lambda: next(buf)))
        except StreamError as e:
            assert "\n" not in str(e)

    one()


# -- the API key reaches nothing bench writes or prints ------------------------------------------

KEY = "sk-bench-faults-91b2c3d4e5"


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("BENCH_TEST_FAULTS_KEY", KEY)
    return KEY


def test_redact_masks_registered_secrets_and_bearer_tokens_everywhere():
    register_secret("s3cr3t-value")
    register_secret("")  # ignored, or it would mask everything
    obj = {"a": ["x s3cr3t-value y", ("s3cr3t-value",)], "s3cr3t-value": b"s3cr3t-value",
           "h": "Authorization: Bearer tok-never-registered", "n": 3}
    out = redact(obj)
    assert "s3cr3t-value" not in json.dumps(out, default=str)
    assert out["h"] == "Authorization: Bearer ***" and out["n"] == 3
    assert out["***"] == b"***" and out["a"][1] == ("***",)
    assert redact("no secret here") == "no secret here"


def test_an_error_event_echoing_the_authorization_header_is_stored_masked(smol_path, key):
    echo = (b"event: error\ndata: {\"error\": {\"message\": \"bad request; headers were "
            b"Authorization: Bearer " + KEY.encode() + b"\"}}\n\n")
    with ReplayServer(openai_routes([*sse(chunk(" The")), echo])) as srv:
        s = load(srv, smol_path, api_key_env="BENCH_TEST_FAULTS_KEY")
        with pytest.raises(BackendError) as e:
            generate(s)
    assert KEY not in str(e.value) and "Bearer ***" in str(e.value)


def test_the_servers_model_list_is_stored_masked(smol_path, key):
    models = json.dumps({"data": [{"id": f"m-{KEY}"}, {"id": 3}, "odd"]}).encode()
    routes = {**openai_routes(), "GET /v1/models": (200, "application/json", models)}
    with ReplayServer(routes) as srv:
        s = load(srv, smol_path, api_key_env="BENCH_TEST_FAULTS_KEY")
        info = s.info()
    assert info["server_models"] == ["m-***"]
    assert KEY not in json.dumps(info, default=str)


def test_error_text_from_the_server_is_masked(smol_path, key):
    routes = {**openai_routes(), "POST /v1/completions": (
        500, "application/json", json.dumps({"error": f"you sent key {KEY}"}).encode())}
    with ReplayServer(routes) as srv:
        s = load(srv, smol_path, api_key_env="BENCH_TEST_FAULTS_KEY")
        with pytest.raises(BackendError) as e:
            generate(s)
    assert KEY not in str(e.value) and "you sent key ***" in str(e.value)
    # Also where the message comes from Python's own exception text.
    cell = OpenAIBackend.cell_settings({"url": "http://127.0.0.1:1/v1",
                                        "api_key_env": "BENCH_TEST_FAULTS_KEY"})
    assert api_key(cell) == KEY
    err = Http("http://127.0.0.1:1", 1.0).unreachable(OSError(f"proxy refused {KEY}"))
    assert KEY not in str(err)


def test_the_server_log_is_masked_even_when_the_key_is_split_across_writes(tmp_path, key):
    register_secret(KEY)
    code = ("import sys, time, os;"
            "print('started with', sys.argv[1], flush=True);"
            "sys.stdout.write('half ' + sys.argv[1][:9]); sys.stdout.flush(); time.sleep(0.3);"
            "sys.stdout.write(sys.argv[1][9:] + ' done\\n'); sys.stdout.flush();"
            "print('env', os.environ['SRV_KEY'], flush=True);"
            "import http.server as h; h.test(HandlerClass=h.SimpleHTTPRequestHandler,"
            " port=int(sys.argv[2]), bind='127.0.0.1')")
    srv = managed(tmp_path, [PY, "-c", code, "{api_key}", "{port}"], secrets={"api_key": KEY},
                  env={"SRV_KEY": "{api_key}"})
    srv.start()
    try:
        time.sleep(0.5)
    finally:
        srv.stop()
    log = (tmp_path / "server.log").read_text()
    assert KEY not in log
    assert "started with ***" in log and "half *** done" in log and "env ***" in log


def test_the_log_pump_holds_back_a_partial_secret_until_it_is_whole(tmp_path):
    register_secret("pump-secret-0123456789")
    r, w = os.pipe()
    out = tmp_path / "pump.log"
    t = threading.Thread(target=_pump_log, args=(os.fdopen(r, "rb"), out))
    t.start()
    for piece in (b"a pump-sec", b"ret-01234", b"56789 b\nno newline at the end pump-se"):
        os.write(w, piece)
        time.sleep(0.05)
    os.close(w)
    t.join(5)
    assert out.read_text() == "a *** b\nno newline at the end pump-se"


# -- prefix caches -------------------------------------------------------------------------------


class CachingServer(ReplayServer):
    """llama-server's prompt cache as its README describes it: a request reuses the prefix it
    shares with the previous one unless it says `cache_prompt: false`; the final chunk's
    `timings` say how many prompt tokens were evaluated (prompt_n) and reused (cache_n)."""

    def __init__(self, honours_cache_prompt: bool = True):
        self.last: list[Any] = []
        self.honours = honours_cache_prompt
        super().__init__({"GET /v1/models": openai_routes()["GET /v1/models"],
                          "POST /v1/completions": self.complete})

    def complete(self, body: dict[str, Any]) -> tuple[int, str, list[bytes]]:
        prompt = body["prompt"]
        toks = prompt if isinstance(prompt, list) else prompt.split(" ")
        reuse = 0
        if body.get("cache_prompt", True) or not self.honours:
            while reuse < min(len(toks), len(self.last)) and toks[reuse] == self.last[reuse]:
                reuse += 1
            reuse = min(reuse, len(toks) - 1)
        self.last = list(toks)
        n = len(toks)
        final = {**chunk("", "length"), "timings": {
            "prompt_n": n - reuse, "cache_n": reuse, "prompt_ms": 5.0,
            "predicted_n": 8, "predicted_ms": 40.0}}
        return 200, "text/event-stream", [*STREAM[:-3], *sse(final, b"[DONE]")]


def trials_of_a_fixed_prompt(srv: ReplayServer, smol_path: Path, n: int = 3) -> list[str | None]:
    s = load(srv, smol_path, prompt_as_tokens=True)
    p = s.prompt("fixed", None, "The river is long and the way home is longer still")
    return [prompt_check(trial_timing(s.generate(p, 8, False, NOOP))) for _ in range(n)]


def test_a_fixed_prompt_is_not_served_from_the_prompt_cache(smol_path):
    with CachingServer() as srv:
        problems = trials_of_a_fixed_prompt(srv, smol_path)
        bodies = [r["body"] for r in srv.posts("/v1/completions")]
    assert problems == [None, None, None]
    assert all(b["cache_prompt"] is False for b in bodies)
    salts = [b["cache_salt"] for b in bodies]
    assert len(set(salts)) == len(salts)  # vLLM shares no prefix blocks between trials


def test_a_server_that_reuses_its_cache_anyway_is_still_caught(smol_path):
    with CachingServer(honours_cache_prompt=False) as srv:
        problems = trials_of_a_fixed_prompt(srv, smol_path)
    assert problems[0] is None
    assert all(p and "the KV cache was reused" in p for p in problems[1:])


def test_prompt_cache_true_sends_neither_field(smol_path):
    with CachingServer() as srv:
        s = load(srv, smol_path, prompt_cache=True)
        generate(s)
        body = srv.posts("/v1/completions")[-1]["body"]
    assert "cache_prompt" not in body and "cache_salt" not in body


# -- a server dies with the process that started it ---------------------------------------------

# A server that shuts down gracefully on SIGTERM, as uvicorn does: it finishes the request in
# flight (here a 60 s stream) before it exits.
GRACEFUL = """\
import signal, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def do_POST(self):
        self.send_response(200); self.end_headers()
        for _ in range(600):  # busy for a minute, whether or not the client still listens
            try:
                self.wfile.write(b": busy\\n"); self.wfile.flush()
            except OSError:
                pass
            time.sleep(0.1)
srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
while not stop.is_set():
    time.sleep(0.05)
while threading.active_count() > 2:  # graceful: wait for the request in flight
    time.sleep(0.05)
"""

# The bench side: start the server (from the main thread or from another one), start a request
# that keeps it busy, say the pids, and wait to be killed.
PARENT = """\
import http.client, json, sys, threading, time
from pathlib import Path
from bench.backends.server import ManagedServer, free_port
folder, how = Path(sys.argv[1]), sys.argv[2]
p = free_port()
cmd = [sys.executable, "-c", (folder / "graceful.py").read_text(), str(p)]
if how == "workers":
    cmd = [sys.executable, "-c", (folder / "spawner.py").read_text(), str(p)]
box = {}
def start():
    s = ManagedServer(cmd, {}, {"host": "127.0.0.1", "port": p}, {}, f"http://127.0.0.1:{p}/",
                      20.0, 5.0, folder / "x.log")
    s.start()
    box["s"] = s
if how == "thread":
    t = threading.Thread(target=start); t.start(); t.join()
else:
    start()
c = http.client.HTTPConnection("127.0.0.1", p, timeout=60)
c.request("POST", "/", body=b"{}")
r = c.getresponse(); r.readline()
pids = {"server": box["s"].pid}
w = folder / "worker.pid"
if w.exists():
    pids["worker"] = int(w.read_text())
(folder / "pids.json").write_text(json.dumps(pids))
time.sleep(120)
"""

@pytest.mark.parametrize("how", ["main", "thread", "workers"])
def test_kill_9_of_bench_takes_a_busy_server_down_at_once(tmp_path, how):
    if not hasattr(os, "killpg"):
        pytest.skip("process groups are POSIX only")
    (tmp_path / "graceful.py").write_text(GRACEFUL)
    (tmp_path / "spawner.py").write_text(
        "import subprocess, sys\n"
        "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "open('worker.pid', 'w').write(str(w.pid))\n"
        "exec(open('graceful.py').read())\n")
    parent = subprocess.Popen([PY, "-c", PARENT, str(tmp_path), how], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    marker = tmp_path / "pids.json"
    try:
        deadline = time.monotonic() + 30
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
            assert parent.poll() is None, "the bench stand-in died early"
            time.sleep(0.05)
        pids = json.loads(marker.read_text())
        assert all(not gone(pid, 0) for pid in pids.values())
    finally:
        parent.kill()
        parent.wait()
    t0 = time.monotonic()
    for name, pid in pids.items():
        assert gone(pid, 3.0), f"the {name} outlived bench"
    assert time.monotonic() - t0 < 3.0
    if how == "workers":
        assert "worker" in pids


def test_a_normal_stop_releases_the_reaper_without_a_kill(tmp_path):
    srv = managed(tmp_path, STUB)
    srv.start()
    reaper = srv._reaper
    assert reaper is not None and reaper.poll() is None
    srv.stop()
    assert reaper.returncode == 0 and gone(srv.pid)


def test_no_reaper_or_server_is_left_behind():
    import psutil

    ours = {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)}
    left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline", "ppid"])
            if p.pid in ours and any("killpg" in a or "graceful" in a
                                     for a in (p.info["cmdline"] or []))]
    assert not left

