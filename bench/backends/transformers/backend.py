"""Causal LMs through Hugging Face transformers, in process, on CPU, CUDA or Apple mps.

Each trial: an empty KV cache (a new DynamicCache), the depth fill through it untimed, the
prompt in one forward (logits for its last position only, as llama.cpp computes them), then
one token at a time with a greedy argmax, each timestamp after the device has finished.
"""
from __future__ import annotations

import inspect
import json
import os
from collections.abc import Mapping
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
    as_cell_settings,
)
from bench.backends.torch_util import (
    import_torch,
    synchronizer,
    synthetic_tokens,
    timed_greedy,
    torch_software,
    version_of,
)
from bench.backends.transformers.config import TransformersCell

_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def _lib() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise BackendError(
            "transformers is not installed; install it with: pip install 'bench[transformers]'"
        ) from e
    return transformers


class TransformersSession(Session):
    def __init__(self, model: Any, tokenizer: Any, settings: TransformersCell, torch: Any,
                 source: str):
        self.model = model
        self.tok = tokenizer
        self.settings = settings
        self.torch = torch
        self.source = source
        self.device = settings.device
        self.sync = synchronizer(torch, self.device)
        self.eos = set(_eos_ids(model, tokenizer))
        self.n_ctx = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        # transformers 5 names the cache argument `cache`; older releases and remote-code
        # models call it `past_key_values`.
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"

    # -- prompts (not timed) ----------------------------------------------------------------
    def _encode(self, text: str, special: bool) -> list[int]:
        return list(self.tok(text, add_special_tokens=special)["input_ids"])

    def prompt(
        self, prompt_id: str, n_tokens: int | None, text: str | None, depth: int = 0
    ) -> Prompt:
        head = self._encode("", True)  # BOS where the model wants one
        if text is not None:
            tokens = self._encode(text, True)
        else:
            assert n_tokens is not None
            tokens = synthetic_tokens(lambda t: self._encode(t, False), head, n_tokens)
        if not tokens:
            raise BackendError(f"prompt {prompt_id!r} has no tokens")
        fill = synthetic_tokens(lambda t: self._encode(t, False), head, depth) if depth else None
        return Prompt(prompt_id, tokens, text, depth=depth, fill=fill)

    def detokenize(self, token_ids: list[int]) -> str:
        return str(self.tok.decode(token_ids, skip_special_tokens=False))

    def configure(self, settings: TransformersCell | Mapping[str, Any]) -> None:
        cell: TransformersCell = as_cell_settings(TransformersBackend, settings)
        self.torch.set_num_threads(cell.n_threads)
        self.settings = cell

    # -- the measured loop ------------------------------------------------------------------
    def generate(self, prompt: Prompt, n_gen: int, stop_at_eos: bool, on_edge: Edge) -> Trace:
        from transformers import DynamicCache

        assert prompt.tokens is not None
        torch, model, sync = self.torch, self.model, self.sync
        ck = self.cache_kw
        n_prompt = len(prompt.tokens)
        need = n_prompt + n_gen + prompt.depth
        if self.n_ctx and need > self.n_ctx:
            raise BackendError(
                f"depth {prompt.depth}, prompt {n_prompt} and {n_gen} generated tokens need "
                f"{need} positions; the model has {self.n_ctx} (max_position_embeddings)"
            )
        ids = torch.tensor([prompt.tokens], device=self.device)
        cache = DynamicCache()  # empty every trial
        nxt: Any = None

        def prefill() -> int:
            nonlocal nxt
            out = model(input_ids=ids, **{ck: cache}, use_cache=True, logits_to_keep=1)
            nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            return int(nxt)

        def step(tok: int) -> int:
            nonlocal nxt
            out = model(input_ids=nxt, **{ck: cache}, use_cache=True)
            nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            return int(nxt)

        with torch.inference_mode():
            if prompt.fill:
                fill = torch.tensor([prompt.fill], device=self.device)
                model(input_ids=fill, **{ck: cache}, use_cache=True, logits_to_keep=1)
                sync()
            return timed_greedy(prefill, step, n_gen, (lambda t: t in self.eos) if stop_at_eos
                                else None, sync, on_edge, n_prompt)

    def logits(self, tokens: list[int], one_at_a_time: bool) -> Any:
        """Logits after each token, from one forward or token by token with the cache (tests)."""
        from transformers import DynamicCache

        torch = self.torch
        with torch.inference_mode():
            if not one_at_a_time:
                ids = torch.tensor([tokens], device=self.device)
                return self.model(input_ids=ids).logits[0].float().cpu()
            cache, rows = DynamicCache(), []
            for t in tokens:
                ids = torch.tensor([[t]], device=self.device)
                out = self.model(input_ids=ids, **{self.cache_kw: cache}, use_cache=True)
                rows.append(out.logits[0, -1].float().cpu())
            return torch.stack(rows)

    def decode_reads(self) -> DecodeReads | None:
        """What one decoded token reads: every parameter at the dtype it was loaded in, the
        input embedding one row per token (whole when the output projection is tied to it),
        plus the KV cache per position from the config (layers x 2 x KV heads x head size at
        the model's dtype). A model without attention heads in its config (a recurrent one)
        has no KV figure."""
        model = self.model
        emb = model.get_input_embeddings()
        out = model.get_output_embeddings()
        emb_w = getattr(emb, "weight", None)
        tied = out is not None and getattr(out, "weight", None) is emb_w
        per_token, devices, itemsize = 0, set(), 0
        for p in model.parameters():
            size = p.numel() * p.element_size()
            itemsize = itemsize or p.element_size()
            devices.add(p.device.type)
            if emb_w is not None and p is emb_w and not tied and p.dim() == 2:
                size //= max(1, int(p.shape[0]))
            per_token += size
        if not devices:
            return None
        cfg = getattr(model.config, "get_text_config", lambda: model.config)()
        layers = getattr(cfg, "num_hidden_layers", None)
        heads = getattr(cfg, "num_attention_heads", None)
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or (
            cfg.hidden_size // heads if heads and getattr(cfg, "hidden_size", None) else None)
        kv = (int(layers) * 2 * int(kv_heads) * int(head_dim) * itemsize
              if layers and kv_heads and head_dim else None)
        memory = "split" if len(devices) > 1 else "gpu" if devices == {"cuda"} else "cpu"
        return DecodeReads(
            weight_bytes_per_token=int(per_token), kv_bytes_per_cell=kv,
            state_bytes_per_token=0, memory=memory,
            method=(
                "parameters as transformers loaded them ("
                + ("embedding tied to the output, read whole" if tied
                   else "the input embedding one row per token")
                + ("), plus the KV cache per position from the config" if kv
                   else "); no attention KV figure in the config")
            ),
        )

    def info(self) -> dict[str, Any]:
        cfg = self.model.config
        params = list(self.model.parameters())
        n_params = sum(p.numel() for p in params)
        size = sum(p.numel() * p.element_size() for p in params)
        dtype = str(next(iter(params)).dtype).removeprefix("torch.") if params else None
        arch = (getattr(cfg, "architectures", None) or [getattr(cfg, "model_type", None)])[0]
        return {
            "description": f"{arch} {getattr(cfg, 'num_hidden_layers', '?')}L "
                           f"{getattr(cfg, 'hidden_size', '?')}d {dtype}",
            "architecture": getattr(cfg, "model_type", None),
            "hf_architecture": arch,
            "n_params": n_params,
            "tensor_bytes": size,
            "bits_per_weight": round(size * 8 / n_params, 3) if n_params else None,
            "dtype": dtype,
            "quant_type": {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}.get(
                dtype or "", dtype
            ),
            "n_layer": getattr(cfg, "num_hidden_layers", None),
            "n_embd": getattr(cfg, "hidden_size", None),
            "n_vocab": getattr(cfg, "vocab_size", None),
            "n_ctx_train": self.n_ctx or None,
            "attn_implementation": getattr(cfg, "_attn_implementation", None),
            "device": self.device,
            "hf_source": self.source,
            "trust_remote_code": self.settings.trust_remote_code,
        }

    def close(self) -> None:
        self.model = None


def _eos_ids(model: Any, tok: Any) -> list[int]:
    eos = getattr(model.generation_config, "eos_token_id", None) if getattr(
        model, "generation_config", None) is not None else None
    if eos is None:
        eos = tok.eos_token_id
    if eos is None:
        return []
    return list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]


class TransformersBackend(Backend):
    name = "transformers"
    cell_type = TransformersCell

    def load(
        self, model_path: Path | None, settings: TransformersCell | Mapping[str, Any], seed: int,
        model_name: str | None = None,
    ) -> Session:
        cell: TransformersCell = as_cell_settings(type(self), settings)
        device, dtype_name, remote = cell.device, cell.dtype, cell.trust_remote_code
        attn = None if cell.attn_implementation == "default" else cell.attn_implementation
        if model_path is None:
            raise BackendError(
                f"the transformers backend loads a model folder; model {model_name!r} has "
                "none: give 'path' (a local folder) or 'repo' with format: hf"
            )
        if _needs_remote_code(model_path) and not remote:
            raise BackendError(
                f"{model_path} needs its repository's own Python code (config.json has an "
                "auto_map); set trust_remote_code: true in the transformers backend settings "
                "only if you trust that code, which then runs on this machine"
            )
        torch = import_torch("transformers")
        lib = _lib()
        lib.utils.logging.disable_progress_bar()  # a progress bar per load clutters the run
        _check_device(torch, device)
        torch.manual_seed(seed)
        if dtype_name == "auto":
            dtype: Any = torch.float32 if device == "cpu" else "auto"
        else:
            dtype = getattr(torch, _DTYPES[dtype_name])
        kw: dict[str, Any] = {"dtype": dtype, "trust_remote_code": remote}
        if attn is not None:
            kw["attn_implementation"] = attn
        if os.environ.get("HF_HUB_OFFLINE"):
            kw["local_files_only"] = True
        try:
            tokenizer = lib.AutoTokenizer.from_pretrained(
                str(model_path), trust_remote_code=remote,
                local_files_only=kw.get("local_files_only", False),
            )
            model = lib.AutoModelForCausalLM.from_pretrained(str(model_path), **kw)
        except ValueError as e:
            msg = str(e)
            if "trust_remote_code" in msg and not remote:
                raise BackendError(
                    f"{model_path} needs its repository's own Python code; set "
                    "trust_remote_code: true in the transformers backend settings if you trust "
                    "that code (it runs on this machine)"
                ) from None
            raise BackendError(f"transformers could not load {model_path}: {msg}") from None
        except (OSError, RuntimeError, ImportError, KeyError) as e:
            raise BackendError(
                f"transformers could not load {model_path}: {type(e).__name__}: {e}"
            ) from None
        model.to(device)
        model.eval()
        session = TransformersSession(model, tokenizer, cell, torch, str(model_path))
        session.configure(cell)
        return session

    @classmethod
    def software(cls) -> dict[str, Any]:
        return {
            "transformers": version_of("transformers"),
            "tokenizers": version_of("tokenizers"),
            **torch_software(),
        }


def _needs_remote_code(folder: Path) -> bool:
    """Whether the model's config maps its classes to Python files in the repository."""
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and bool(cfg.get("auto_map"))


def _check_device(torch: Any, device: str) -> None:
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise BackendError(
            f"device {device!r} needs an NVIDIA GPU and a CUDA build of torch, and this torch "
            f"({torch.__version__}) sees none; use device: cpu or install the CUDA build "
            "(docs/engines.md)"
        )
    mps = getattr(torch.backends, "mps", None)
    if kind == "mps" and not (mps is not None and mps.is_available()):
        raise BackendError(
            "device 'mps' needs Apple silicon and a torch build with MPS; use device: cpu"
        )
