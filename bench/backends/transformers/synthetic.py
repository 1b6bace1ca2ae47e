"""Random-weight Hugging Face model folders for `synthetic:` models with `format: hf`.

A folder transformers loads offline: `config.json` (LlamaForCausalLM or Qwen2ForCausalLM of
the shape), `model.safetensors` in float16 and a tokenizer. The safetensors file is written by
hand, tensor by tensor (its format is an 8-byte header length, a JSON header of names, dtypes,
shapes and offsets, then the raw bytes), so a 7B model never sits in memory whole. The values
come from the same per-tensor generators as the GGUF writer's (bench.synthetic), so a shape
and seed give the same folder, byte for byte, on any machine. The tokenizer is the GGUF's
synthetic SentencePiece-style vocabulary as a `tokenizers` Unigram model with byte fallback:
any text tokenizes, mostly into bytes.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

# GGUF tensor name -> Hugging Face name (blk.N. -> model.layers.N.).
_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight"}


def hf_name(gguf_name: str) -> str:
    if gguf_name in _TOP:
        return _TOP[gguf_name]
    _, layer, rest = gguf_name.split(".", 2)
    return f"model.layers.{layer}.{_NAMES[rest]}"


def config(shape: dict[str, Any]) -> dict[str, Any]:
    """config.json of the shape, as the published model's (same names transformers reads)."""
    qwen = shape["arch"] == "qwen2"
    return {
        "architectures": ["Qwen2ForCausalLM" if qwen else "LlamaForCausalLM"],
        "model_type": "qwen2" if qwen else "llama",
        "hidden_size": shape["embedding"],
        "intermediate_size": shape["ff"],
        "num_hidden_layers": shape["layers"],
        "num_attention_heads": shape["heads"],
        "num_key_value_heads": shape["kv_heads"],
        "vocab_size": shape["vocab"],
        "max_position_embeddings": shape["context"],
        "rms_norm_eps": 1e-6 if qwen else 1e-5,
        "rope_theta": 1000000.0 if qwen else 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float16",
        "bench_synthetic": {k: shape[k] for k in sorted(shape) if k != "name"},
    }


def _write_safetensors(shape: dict[str, Any], path: Path) -> None:
    import numpy as np

    from bench.synthetic import _tensors, _values

    specs = _tensors(shape)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dims, _dtype in specs:
        n = int(np.prod(dims)) * 2  # every tensor float16 (the GGUF's F32 norms too)
        header[hf_name(name)] = {"dtype": "F16", "shape": list(dims),
                                 "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    with path.open("wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for i, (name, dims, dtype) in enumerate(specs):
            f.write(_values(name, dims, dtype, shape["seed"], i).astype(np.float16).tobytes())


def _write_tokenizer(shape: dict[str, Any], folder: Path) -> None:
    try:
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
        from tokenizers.processors import TemplateProcessing
    except ImportError as e:
        from bench.synthetic import SyntheticError

        raise SyntheticError("hf synthetic models need the tokenizers package; install it "
                             "with: pip install 'bench[transformers]'") from e
    from bench.synthetic import _vocab

    tokens, scores, _types = _vocab(shape["vocab"])
    pieces = [(t.decode("utf-8"), float(s)) for t, s in zip(tokens, scores, strict=True)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=0, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    # Bytes back to characters first: a space marker may itself have come out as bytes.
    tok.decoder = decoders.Sequence([
        decoders.ByteFallback(), decoders.Fuse(), decoders.Replace("\u2581", " "),
        decoders.Strip(" ", 1, 0),
    ])
    tok.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                            special_tokens=[("<s>", 1)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "model_max_length": shape["context"],
    }, indent=1) + "\n")


def write_folder(shape: dict[str, Any], folder: Path) -> Path:
    """Write the model folder of a llama or qwen2 shape (a temporary name, then rename)."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        (tmp / "config.json").write_text(json.dumps(config(shape), indent=1) + "\n")
        _write_tokenizer(shape, tmp)
        _write_safetensors(shape, tmp / "model.safetensors")
        try:
            os.replace(tmp, folder)
        except OSError:
            # Another process sharing the cache finished the same folder first.
            if not (folder / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
