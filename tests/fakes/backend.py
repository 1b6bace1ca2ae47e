"""A fake engine for the runner's logic: registered through the backend registry in place of
llama.cpp, it produces token traces at a configurable pace and, per cell, aborts the process,
raises, hangs or runs slowly. The plan travels in $BENCH_FAKE_PLAN (JSON), so it reaches a
spawned worker too: {"<gen_tokens>": {"do": "abort"|"raise"|"crash"|"hang"|"slow",
"after": <trials that succeed first>, "seconds": <per token, for slow>, "message": <of raise>}}.
$BENCH_FAKE_KEY is a secret the fake reads in the worker, like an HTTP backend's API key."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from bench.backends.base import (
    Backend,
    BackendError,
    DecodeReads,
    Edge,
    Prompt,
    Session,
    Trace,
)
from bench.backends.llama_cpp.config import LlamaCppCell
from bench.redact import register_secret

PLAN_ENV = "BENCH_FAKE_PLAN"


def plan() -> dict[str, dict[str, Any]]:
    return json.loads(os.environ.get(PLAN_ENV) or "{}")


class FakeSession(Session):
    def __init__(self, settings: LlamaCppCell):
        self.settings = settings
        self.trials: dict[int, int] = {}
        self.closed = False

    def prompt(
        self, prompt_id: str, n_tokens: int | None, text: str | None, depth: int = 0
    ) -> Prompt:
        n = n_tokens if n_tokens is not None else len((text or "x").split())
        fill = list(range(1, depth + 1)) if depth else None
        return Prompt(prompt_id, list(range(1, n + 1)), text, depth=depth, fill=fill)

    def configure(self, settings: Any) -> None:
        assert isinstance(settings, LlamaCppCell)  # the typed object, never a dict
        self.settings = settings

    def generate(self, prompt: Prompt, n_gen: int, stop_at_eos: bool, on_edge: Edge) -> Trace:
        step = plan().get(str(n_gen), {})
        k = self.trials.get(n_gen, 0)
        self.trials[n_gen] = k + 1
        act = step.get("do") if k >= int(step.get("after", 0)) else None
        if act == "abort":
            os.abort()  # what llama.cpp does on a fatal engine error
        if act == "raise":
            raise BackendError(step.get("message", "the fake engine failed as planned"))
        if act == "crash":
            raise RuntimeError("the fake engine hit a bug")
        per_token = float(step.get("seconds", 0.0005)) if act == "slow" else 0.0005
        on_edge("start")
        t0 = time.perf_counter()
        if act == "hang":
            time.sleep(3600)
        times, ids = [], []
        time.sleep(0.001 * len(prompt.tokens or []) / 64)  # a prefill that takes some time
        for i in range(n_gen):
            if i == 1:
                pass
            time.sleep(per_token)
            times.append(time.perf_counter())
            ids.append(100 + i)
            if i == 0:
                on_edge("first")
        on_edge("end")
        n_prompt = len(prompt.tokens or [])
        return Trace(n_prompt=n_prompt, t_start=t0, token_times=times, token_ids=ids,
                     engine={"engine_n_p_eval": n_prompt, "engine_n_eval": n_gen - 1})

    def detokenize(self, token_ids: list[int]) -> str:
        return " ".join(f"w{t}" for t in token_ids)

    def decode_reads(self) -> DecodeReads | None:
        """What the plan's "decode_reads" says: "raise" (an engine that cannot tell), a
        number of bytes per token (a CPU session that can), or nothing (None)."""
        step = plan().get("decode_reads")
        if step == "raise":
            raise RuntimeError("the fake engine keeps no weights to count")
        if step is None:
            return None
        return DecodeReads(int(step), None, 0, "cpu", "the fake engine's planned bytes")

    def close(self) -> None:
        self.closed = True


class FakeBackend(Backend):
    name = "llama-cpp"
    cell_type = LlamaCppCell

    def load(self, model_path: Path | None, settings: Any, seed: int,
             model_name: str | None = None) -> Session:
        assert isinstance(settings, LlamaCppCell)
        key = os.environ.get("BENCH_FAKE_KEY")
        if key:
            register_secret(key)  # as an HTTP backend does when it reads its API key
        if model_path is None or not model_path.is_file():
            raise BackendError(f"the fake engine needs a file, got {model_path}")
        return FakeSession(settings)
