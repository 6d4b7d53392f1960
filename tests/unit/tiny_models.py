"""Tiny randomly initialised causal LMs saved as safetensors folders, for fast unit tests of the mechanics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_tokenizer(
    chat_template: str | None = CHAT_TEMPLATE, merges: Sequence[tuple[str, str]] = ()
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer: one token per byte plus special tokens; with `merges`, also the merged
    tokens, and the special tokens at the end (other ids than the plain one: a different tokenizer)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merged = ["".join(pair) for pair in merges]
    order = alphabet + merged + specials if merges else specials + alphabet
    vocab = {tok: i for i, tok in enumerate(order)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    if chat_template:
        fast.chat_template = chat_template
    return fast


def tiny_llama(
    folder: Path,
    seed: int = 0,
    chat_template: str | None = CHAT_TEMPLATE,
    tokenizer: PreTrainedTokenizerFast | None = None,
    max_positions: int = 256,
) -> Path:
    """Save a 2-layer random Llama with the byte tokenizer (or `tokenizer`) into `folder` and return it."""
    torch.manual_seed(seed)
    tok = tokenizer or byte_tokenizer(chat_template)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder
