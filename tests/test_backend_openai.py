"""The openai backend at the level of the bytes: the requests it sends, the streams it parses,
and the one-sentence errors it gives. A replay server on 127.0.0.1 stands in for the engine."""
from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support import SMOL_MODEL_YAML

from bench.backends.base import BackendError
from bench.backends.http_settings import OpenAISettings
from bench.backends.openai.backend import OpenAIBackend
from bench.backends.server import Http, redact, redact_url
from bench.backends.sse import StreamError, iter_sse, read_openai_stream
from bench.config import ConfigError, loads_config
from bench.metrics import trial_timing
from bench.sweep import expand, groups

# -- a replay server ---------------------------------------------------------------------------


class ReplayServer:
    """A loopback HTTP server answering from a table: path -> (status, content type, body).
    A body that is a list is streamed, one chunked-encoding chunk per item, with a short pause
    between items; `drop_after` ends the connection mid-stream without the final chunk."""

    def __init__(self, routes: dict[str, Any]):
        self.routes = routes
        self.requests: list[dict[str, Any]] = []
        self.drop_after: int | None = None
        self.hang_s = 0.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                owner.requests.append({
                    "method": self.command, "path": self.path, "headers": dict(self.headers),
                    "body": json.loads(raw) if raw else None,
                })
                if owner.hang_s:
                    time.sleep(owner.hang_s)
                route = owner.routes.get(f"{self.command} {self.path}")
                if route is None:
                    route = (404, "application/json", b'{"error": "no such route"}')
                if callable(route):
                    route = route(owner.requests[-1]["body"])
                status, ctype, body = route
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                if isinstance(body, list):
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i, item in enumerate(body):
                        if owner.drop_after is not None and i >= owner.drop_after:
                            self.wfile.flush()
                            self.connection.shutdown(socket.SHUT_RDWR)
                            self.close_connection = True
                            return
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(item), item))
                        self.wfile.flush()
                        time.sleep(0.002)
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            do_GET = _answer
            do_POST = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ReplayServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def posts(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "POST" and r["path"] == path]


def sse(*objs: Any) -> list[bytes]:
    return [b"data: " + (o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n\n"
            for o in objs]


def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"object": "text_completion", "choices": [{"index": 0, "text": text,
                                                      "finish_reason": finish}]}


USAGE = {"object": "text_completion", "choices": [],
         "usage": {"prompt_tokens": 16, "completion_tokens": 8, "total_tokens": 24}}
# Eight tokens in six chunks with text: " river" and " is a" carry two tokens each in one chunk,
# and one chunk is empty (a token whose bytes the server holds back).
STREAM = sse(chunk(" The"), chunk(" old river"), chunk(""), chunk(" is a"), chunk(" long"),
             chunk(" way"), chunk(" home", "length"), USAGE, b"[DONE]")
MODELS = (200, "application/json", b'{"object": "list", "data": [{"id": "smollm2-135m"}]}')


def openai_routes(stream: list[bytes] = STREAM) -> dict[str, Any]:
    return {
        "GET /v1/models": MODELS,
        "POST /v1/completions": (200, "text/event-stream", stream),
        "POST /v1/chat/completions": (200, "text/event-stream", stream),
    }


def settings(**kw: Any) -> dict[str, Any]:
    """The load settings the runner passes: swept values plus the backend's fixed ones."""
    url = kw.pop("url")
    spec = OpenAISettings(name="openai", url=url, **kw)
    axes = {k: v[0] for k, v in spec.axes().items()}
    return {**axes, **spec.fixed()}


@pytest.fixture
def server():
    with ReplayServer(openai_routes()) as s:
        yield s


def load(server_or_url: Any, smol_path: Path | None = None, **kw: Any):
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.url + "/v1"
    return OpenAIBackend().load(smol_path, settings(url=url, **kw), seed=42,
                                model_name="smollm2-135m")


# -- stream parsing (canned bytes) ---------------------------------------------------------------


def reader(data: bytes, fail_after: int | None = None):
    buf = io.BytesIO(data)
    n = [0]

    def readline() -> bytes:
        n[0] += 1
        if fail_after is not None and n[0] > fail_after:
            raise http.client.IncompleteRead(b"")
        return buf.readline()

    return readline


def clock():
    t = [0.0]

    def now() -> float:
        t[0] += 1.0
        return t[0]

    return now


def test_multi_token_chunks_get_one_timestamp_each_and_the_count_comes_from_usage():
    out = read_openai_stream(iter_sse(reader(b"".join(STREAM)), clock()))
    assert out.text == " The old river is a long way home"
    assert len(out.times) == 6  # chunks with text, not tokens
    assert out.times == sorted(out.times)
    assert out.usage == USAGE["usage"]
    assert out.finish_reason == "length" and out.finished


def test_empty_chunks_are_parsed_but_not_timed():
    first: list[int] = []
    data = b"".join(sse(chunk(""), chunk(""), chunk("a"), chunk("", "stop"), b"[DONE]"))
    out = read_openai_stream(iter_sse(reader(data), clock()), lambda: first.append(1))
    assert out.n_chunks == 4 and len(out.times) == 1 and first == [1]
    assert out.finish_reason == "stop"


def test_done_ends_the_stream_and_nothing_after_it_is_read():
    data = b"".join(sse(chunk("a", "length"), b"[DONE]", chunk("never read")))
    out = read_openai_stream(iter_sse(reader(data)))
    assert out.text == "a"


def test_the_usage_chunk_has_no_choices_and_still_counts():
    data = b"".join(sse(chunk("a"), chunk("b", "length"), USAGE, b"[DONE]"))
    out = read_openai_stream(iter_sse(reader(data)))
    assert out.usage["completion_tokens"] == 8 and out.text == "ab"


def test_sse_framing_accepts_crlf_comments_no_space_and_multiline_data():
    data = (b": ping\r\n\r\nevent: message\r\ndata:" + json.dumps(chunk("x")).encode()
            + b"\r\n\r\ndata: [DONE]\r\n\r\n")
    events = list(iter_sse(reader(data)))
    assert [e.data for e in events][-1] == "[DONE]"
    joined = list(iter_sse(reader(b"data: a\ndata: b\n\n")))
    assert joined[0].data == "a\nb"


def test_chat_deltas_and_reasoning_content_are_generated_text():
    data = b"".join(sse(
        {"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]},
        {"choices": [{"delta": {"reasoning_content": "hmm"}, "finish_reason": None}]},
        {"choices": [{"delta": {"content": "Hi"}, "finish_reason": "stop"}]},
        b"[DONE]",
    ))
    out = read_openai_stream(iter_sse(reader(data)))
    assert out.text == "hmmHi" and len(out.times) == 2


def test_an_error_event_mid_stream_is_a_stream_error_with_the_servers_message():
    data = b"".join(sse(chunk("a"))) + b'data: {"error": {"message": "out of memory"}}\n\n'
    with pytest.raises(StreamError, match="out of memory"):
        read_openai_stream(iter_sse(reader(data)))
    named = b"".join(sse(chunk("a"))) + b"event: error\ndata: engine crashed\n\n"
    with pytest.raises(StreamError, match="engine crashed"):
        read_openai_stream(iter_sse(reader(named)))


def test_a_connection_dropped_mid_stream_is_a_stream_error():
    with pytest.raises(StreamError, match="connection broke after 4 lines"):
        read_openai_stream(iter_sse(reader(b"".join(STREAM), fail_after=4)))


def test_a_stream_that_just_stops_without_finishing_is_a_stream_error():
    data = b"".join(sse(chunk("a"), chunk("b")))
    with pytest.raises(StreamError, match="after 2 chunks without a finish reason"):
        read_openai_stream(iter_sse(reader(data)))


def test_llama_server_timings_are_read_from_the_last_chunk():
    last = {**chunk("", "length"), "timings": {"prompt_n": 16, "prompt_ms": 8.0,
                                               "predicted_n": 8, "predicted_ms": 70.0}}
    out = read_openai_stream(iter_sse(reader(b"".join(sse(chunk("a"), last, b"[DONE]")))))
    assert out.timings["predicted_n"] == 8


# -- requests and traces against the replay server ----------------------------------------------


def test_request_asks_for_a_stream_with_usage_a_fixed_length_and_greedy_decoding(
    server, smol_path
):
    s = load(server, smol_path, extra_body={"repeat_penalty": 1.0})
    p = s.prompt("synthetic-16", 16, None)
    s.generate(p, 8, False, lambda e: None)
    body = server.posts("/v1/completions")[-1]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 8 and body["min_tokens"] == 8 and body["ignore_eos"] is True
    assert body["temperature"] == 0.0 and body["seed"] == 42
    assert body["model"] == "smollm2-135m" and body["repeat_penalty"] == 1.0
    assert isinstance(body["prompt"], str)
    s.close()


def test_stopping_at_eos_sends_no_fixed_length_fields(server, smol_path):
    s = load(server, smol_path)
    s.generate(s.prompt("synthetic-16", 16, None), 8, True, lambda e: None)
    body = server.posts("/v1/completions")[-1]["body"]
    assert "min_tokens" not in body and "ignore_eos" not in body


def test_trace_counts_tokens_from_usage_and_times_chunks(server, smol_path):
    s = load(server, smol_path)
    edges: list[str] = []
    trace = s.generate(s.prompt("synthetic-16", 16, None), 8, False, edges.append)
    assert edges == ["start", "first", "end"]
    assert trace.n_prompt == 16 and trace.n_gen == 8 and trace.count_source == "usage"
    assert len(trace.token_times) == 6 and trace.t_start < trace.token_times[0]
    row = trial_timing(trace)
    assert row["n_gen"] == 8 and row["decode_tps"] > 0 and row["count_source"] == "usage"
    assert row["decode_s"] == pytest.approx(trace.token_times[-1] - trace.token_times[0])


def test_without_usage_a_length_finish_counts_max_tokens_and_the_prompt_is_tokenized(smol_path):
    stream = sse(chunk(" The"), chunk(" river", "length"), b"[DONE]")
    with ReplayServer(openai_routes(stream)) as srv:
        s = load(srv, smol_path)
        trace = s.generate(s.prompt("synthetic-16", 16, None), 5, False, lambda e: None)
    assert trace.n_gen == 5 and trace.n_prompt == 16
    assert trace.count_source == "tokenizer/length"
    assert trace.engine["n_gen_retokenized"] == 2  # what the text alone would suggest


def test_without_usage_or_length_the_tokenizer_counts_the_text(smol_path):
    stream = sse(chunk(" The"), chunk(" river", "stop"), b"[DONE]")
    with ReplayServer(openai_routes(stream)) as srv:
        s = load(srv, smol_path)
        trace = s.generate(s.prompt("synthetic-16", 16, None), 5, False, lambda e: None)
    assert trace.n_gen == 2 and trace.count_source == "tokenizer" and trace.stopped_at_eos


def test_synthetic_prompts_match_the_in_process_tokens_and_vary_per_trial(server, smol_path):
    from bench.backends.llama_cpp import FILLER

    # The replay server's usage counts the 40 tokens it is sent, as a real server would.
    usage = {**USAGE, "usage": {**USAGE["usage"], "prompt_tokens": 40}}
    server.routes["POST /v1/completions"] = (200, "text/event-stream", [*STREAM[:-2],
                                             *sse(usage, b"[DONE]")])
    s = load(server, smol_path, prompt_as_tokens=True)
    p = s.prompt("synthetic-40", 40, None)
    tok = s.tok
    assert p.tokens == tok.tokenize(FILLER * 4, add_special=False)[:40]  # no BOS for SmolLM2
    for _ in range(3):
        s.generate(p, 8, False, lambda e: None)
    sent = [r["body"]["prompt"] for r in server.posts("/v1/completions")]
    assert sent[0] == p.tokens
    assert all(len(x) == 40 for x in sent)
    # consecutive trials share no first token, so no cached prefix can be reused
    assert sent[0][0] != sent[1][0] != sent[2][0]


def test_chat_endpoint_sends_messages_and_is_swept_without_a_reload(server, smol_path):
    text = "name: c\nmodels:\n" + SMOL_MODEL_YAML + f"""\
backends:
  - name: openai
    url: {server.url}/v1
    endpoint: [completions, chat]
workload: {{prompt_tokens: 16, gen_tokens: 8}}
"""
    cells = expand(loads_config(text).config)
    assert [c.setting["endpoint"] for c in cells] == ["completions", "chat"]
    assert len(groups(cells)) == 1
    s = load(server, smol_path, endpoint=["chat"])
    s.configure({"endpoint": "chat"})
    trace = s.generate(s.prompt("p", None, "Hello there"), 8, False, lambda e: None)
    body = server.posts("/v1/chat/completions")[-1]["body"]
    assert body["messages"] == [{"role": "user", "content": "Hello there"}]
    assert trace.n_prompt == 16  # the server's count, template included


def test_the_api_key_goes_in_the_header_and_nowhere_else(server, smol_path, monkeypatch):
    monkeypatch.setenv("BENCH_TEST_OPENAI_KEY", "sk-test-4f1d9c")
    s = load(server, smol_path, api_key_env="BENCH_TEST_OPENAI_KEY")
    s.generate(s.prompt("synthetic-16", 16, None), 8, False, lambda e: None)
    req = server.posts("/v1/completions")[-1]
    assert req["headers"]["Authorization"] == "Bearer sk-test-4f1d9c"
    assert "sk-test-4f1d9c" not in json.dumps(req["body"])
    assert "sk-test-4f1d9c" not in json.dumps(s.info(), default=str)


def test_an_unset_api_key_variable_is_named_in_the_error(server, monkeypatch):
    monkeypatch.delenv("BENCH_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(BackendError, match="BENCH_TEST_NO_SUCH_KEY, but it is not set"):
        load(server, api_key_env="BENCH_TEST_NO_SUCH_KEY")


# -- errors are one sentence -------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_server_at_the_url_says_so_and_how_to_fix_it():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(BackendError) as e:
        load(url)
    assert str(e.value) == (
        f"no server answered at {url} (connection refused); start it or give `server:` so "
        "bench starts it"
    )


def test_a_rejected_key_points_at_the_environment_variable(monkeypatch):
    monkeypatch.setenv("BENCH_TEST_OPENAI_KEY", "wrong")
    routes = {"GET /v1/models": (401, "application/json",
                                 b'{"detail": "Invalid API key"}')}
    with ReplayServer(routes) as srv, pytest.raises(BackendError) as e:
        load(srv, api_key_env="BENCH_TEST_OPENAI_KEY")
    assert "HTTP 401" in str(e.value) and "Invalid API key" in str(e.value)
    assert "check the key in the environment variable BENCH_TEST_OPENAI_KEY" in str(e.value)
    assert "wrong" not in str(e.value)


def test_a_server_error_status_carries_the_servers_message(smol_path):
    routes = {**openai_routes(), "POST /v1/completions": (
        500, "application/json", b'{"error": {"message": "model is loading", "code": 503}}')}
    with ReplayServer(routes) as srv:
        s = load(srv, smol_path)
        with pytest.raises(BackendError, match=r"HTTP 500 to POST /v1/completions: model is "
                                               r"loading \(503\)"):
            s.generate(s.prompt("synthetic-16", 16, None), 8, False, lambda e: None)


def test_a_stream_dropped_by_the_server_is_a_backend_error(smol_path):
    with ReplayServer(openai_routes()) as srv:
        s = load(srv, smol_path)
        srv.drop_after = 3
        with pytest.raises(BackendError, match="dropped the connection|connection broke"):
            s.generate(s.prompt("synthetic-16", 16, None), 8, False, lambda e: None)


def test_a_server_that_never_answers_times_out_with_the_limit_named(smol_path):
    with ReplayServer(openai_routes()) as srv:
        s = load(srv, smol_path, timeout_s=0.3)
        srv.hang_s = 1.0
        with pytest.raises(BackendError, match=r"did not answer within 0.3 s; raise timeout_s"):
            s.generate(s.prompt("synthetic-16", 16, None), 8, False, lambda e: None)


def test_a_stream_with_no_text_has_nothing_to_time(smol_path):
    stream = sse(chunk("", "length"), b"[DONE]")
    with ReplayServer(openai_routes(stream)) as srv:
        s = load(srv, smol_path)
        with pytest.raises(BackendError, match="streamed no text"):
            s.generate(s.prompt("synthetic-16", 16, None), 8, False, lambda e: None)


# -- settings ------------------------------------------------------------------------------------


def cfg(backend: str) -> str:
    return "name: c\nmodels:\n" + SMOL_MODEL_YAML + "backends:\n" + backend


def test_credentials_in_a_url_are_refused_in_favour_of_api_key_env():
    for url in ("http://user:pw@127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1?api_key=sk-1"):
        with pytest.raises(ConfigError, match="name it in api_key_env"):
            loads_config(cfg(f"  - name: openai\n    url: {url}\n"))


def test_an_openai_backend_needs_a_url_or_a_server():
    with pytest.raises(ConfigError, match="needs 'url'"):
        loads_config(cfg("  - name: openai\n"))


def test_an_unknown_placeholder_in_the_server_command_is_named():
    with pytest.raises(ConfigError, match=r"uses \{modle_path\}, which bench does not know"):
        loads_config(cfg("  - name: openai\n    server: {command: [srv, '{modle_path}']}\n"))


def test_request_fields_bench_owns_cannot_be_overridden():
    with pytest.raises(ConfigError, match="extra_body may not set max_tokens"):
        loads_config(cfg("  - name: openai\n    url: http://127.0.0.1:1/v1\n"
                         "    extra_body: {max_tokens: 5}\n"))


def test_server_arguments_sweep_and_each_value_is_a_new_server():
    text = cfg("""\
  - name: openai
    server:
      command: ['{python}', -m, llama_cpp.server, --n_threads, '{n_threads}', --port, '{port}']
      args: {n_threads: [1, 2]}
""") + "workload: {prompt_tokens: 16, gen_tokens: 4}\n"
    cells = expand(loads_config(text).config)
    assert [c.setting["n_threads"] for c in cells] == [1, 2]
    assert cells[0].setting["label"] == "llama_cpp.server"
    assert len(groups(cells)) == 2


def test_two_servers_of_one_backend_stay_apart_by_label():
    text = cfg("""\
  - name: openai
    url: http://127.0.0.1:8080/v1
  - name: openai
    url: http://127.0.0.1:1234/v1
""") + "workload: {prompt_tokens: 16, gen_tokens: 4}\n"
    cells = expand(loads_config(text).config)
    assert [c.setting["label"] for c in cells] == ["127.0.0.1:8080", "127.0.0.1:1234"]
    assert len(groups(cells)) == 2


def test_settings_record_the_key_variables_name_only():
    spec = OpenAISettings(name="openai", url="http://127.0.0.1:1/v1", api_key_env="MY_KEY")
    assert spec.fixed()["api_key_env"] == "MY_KEY"


def test_urls_shown_in_results_hide_passwords_and_tokens():
    assert redact_url("http://user:pw@host:1/v1") == "http://user:***@host:1/v1"
    assert redact_url("http://h/v1?api_key=sk-1&x=2") == "http://h/v1?api_key=***&x=2"
    assert redact("Bearer sk-1 failed", ["sk-1"]) == "Bearer *** failed"


def test_http_errors_never_echo_the_key():
    h = Http("http://127.0.0.1:1/v1", 1.0, secrets=["sk-secret"])
    err = h.status_error(400, b'{"error": "bad key sk-secret"}', "POST", "/v1/completions")
    assert "sk-secret" not in str(err) and "***" in str(err)
