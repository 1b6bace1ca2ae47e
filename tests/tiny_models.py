"""Tiny models with random weights (fixed seed), written to a temp folder by the tests: an
RWKV-5.2 checkpoint with the key names and shapes the `rwkv` package's loader expects, and a
two-layer Llama saved with save_pretrained beside a small byte-level BPE tokenizer.

Timing does not depend on weight values, so these exercise the real engines' code paths;
their text is noise and no quality figure is taken from them."""
from __future__ import annotations

from pathlib import Path

WORLD_VOCAB = 65536  # the World tokenizer's size; emb.weight and head.weight rows


def rwkv52_state_dict(n_layer: int = 2, n_embd: int = 64, head_size: int = 32,
                      n_vocab: int = WORLD_VOCAB, seed: int = 0, dtype: str = "bfloat16"):
    """RWKV-5.2 ("Eagle") tensors as RWKV-LM's v5 trainer saves them."""
    import torch

    g = torch.Generator().manual_seed(seed)
    c, h = n_embd, n_embd // head_size
    ffn = int(c * 3.5) // 32 * 32

    def rnd(*shape: int, scale: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    def mix() -> torch.Tensor:  # interpolation weights in (0, 1)
        return torch.rand(1, 1, c, generator=g)

    w: dict[str, torch.Tensor] = {
        "emb.weight": rnd(n_vocab, c, scale=1e-1),
        "blocks.0.ln0.weight": torch.ones(c),
        "blocks.0.ln0.bias": torch.zeros(c),
    }
    for i in range(n_layer):
        b = f"blocks.{i}."
        w.update({
            b + "ln1.weight": torch.ones(c), b + "ln1.bias": torch.zeros(c),
            b + "ln2.weight": torch.ones(c), b + "ln2.bias": torch.zeros(c),
            b + "att.time_mix_k": mix(), b + "att.time_mix_v": mix(),
            b + "att.time_mix_r": mix(), b + "att.time_mix_g": mix(),
            # Two-dimensional (heads x head size): what makes the loader say v5.2.
            b + "att.time_decay": torch.rand(h, head_size, generator=g) * 2 - 3,
            b + "att.time_faaaa": rnd(h, head_size, scale=0.1),
            b + "att.receptance.weight": rnd(c, c), b + "att.key.weight": rnd(c, c),
            b + "att.value.weight": rnd(c, c), b + "att.gate.weight": rnd(c, c),
            b + "att.output.weight": rnd(c, c),
            b + "att.ln_x.weight": torch.ones(c), b + "att.ln_x.bias": torch.zeros(c),
            b + "ffn.time_mix_k": mix(), b + "ffn.time_mix_r": mix(),
            b + "ffn.key.weight": rnd(ffn, c), b + "ffn.receptance.weight": rnd(c, c),
            b + "ffn.value.weight": rnd(c, ffn),
        })
    w.update({
        "ln_out.weight": torch.ones(c), "ln_out.bias": torch.zeros(c),
        "head.weight": rnd(n_vocab, c, scale=0.5),
    })
    return {k: v.to(getattr(torch, dtype)) for k, v in w.items()}


def make_rwkv52(path: Path, **kw) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(rwkv52_state_dict(**kw), str(path))
    return path


_TOKENIZER_TEXT = [
    "The river rises in the hills and runs for many miles through farmland and small towns.",
    "In spring the water is high and fast; in late summer it is slow and clear.",
    "Mills once stood along its course, and some of their stone walls remain.",
]


def make_tiny_llama(folder: Path, seed: int = 0, n_layer: int = 2, hidden: int = 64,
                    max_positions: int = 4096) -> Path:
    """A Llama of two layers and its tokenizer, loadable offline from `folder`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_TOKENIZER_TEXT * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.add_bos_token = True
    from tokenizers.processors import TemplateProcessing

    bos = tok.token_to_id("<s>")
    fast._tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=n_layer, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=max_positions, bos_token_id=bos,
        eos_token_id=tok.token_to_id("</s>"), tie_word_embeddings=False,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder
