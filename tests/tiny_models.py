"""Tiny models with random weights (fixed seed), written to a temp folder by the tests: an
RWKV-5.2 checkpoint with the key names and shapes the `rwkv` package's loader expects (bench's
`synthetic: rwkv5-tiny` writer), and a two-layer Llama saved with save_pretrained beside a
small byte-level BPE tokenizer.

Timing does not depend on weight values, so these exercise the real engines' code paths;
their text is noise and no quality figure is taken from them."""
from __future__ import annotations

from pathlib import Path


def make_rwkv52(path: Path, **shape) -> Path:
    """An RWKV-5.2 ("Eagle") checkpoint as RWKV-LM's v5 trainer saves it: bench's own
    synthetic writer at the `rwkv5-tiny` shape (2 layers of 64, head size 32, the World
    vocabulary), with any key of the shape changed (layers, embedding, heads, ff, seed)."""
    from bench.backends.rwkv.synthetic import write_pth
    from bench.synthetic import SyntheticShape, resolve_shape

    return write_pth(resolve_shape(SyntheticShape(base="rwkv5-tiny", **shape)), path)


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
