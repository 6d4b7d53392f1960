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


def noisy_copy(source: Path, folder: Path, scale: float, seed: int = 5) -> Path:
    """A copy of the tiny model in `source` with Gaussian noise of `scale` x each tensor's spread added to its
    weights: a drafter that agrees with the original on most tokens, not all."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(source)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * scale * param.std())
    model.save_pretrained(folder, safe_serialization=True)
    PreTrainedTokenizerFast.from_pretrained(source).save_pretrained(folder)
    return folder


def respelled(source: Path, folder: Path, tokenizer: PreTrainedTokenizerFast) -> Path:
    """The tiny byte-tokenizer model in `source` moved onto `tokenizer` (one with merges): each token keeps
    its embedding and output row by name; a merged token reads as its last byte and is never written (zero
    output row). A drafter with another tokenizer that still agrees with the original."""
    model = LlamaForCausalLM.from_pretrained(source)
    own = PreTrainedTokenizerFast.from_pretrained(source).get_vocab()
    config = model.config
    config.vocab_size = len(tokenizer)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    moved = LlamaForCausalLM(config)
    state = {k: v for k, v in model.state_dict().items() if "embed_tokens" not in k and "lm_head" not in k}
    moved.load_state_dict(state, strict=False)
    embed, head = model.model.embed_tokens.weight, model.lm_head.weight
    with torch.no_grad():
        moved.lm_head.weight.zero_()
        for token, i in tokenizer.get_vocab().items():
            j = own.get(token, own.get(token[-1]))
            moved.model.embed_tokens.weight[i] = embed[j]
            if token in own:
                moved.lm_head.weight[i] = head[own[token]]
    moved.generation_config.eos_token_id = tokenizer.eos_token_id
    moved.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A sentencepiece-style tokenizer without byte fallback: it can spell lowercase letters and spaces only
    (nothing else maps to bytes), so it cannot carry another tokenizer's text exactly."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    order = ["<unk>", "<|endoftext|>", "<|im_end|>", "\u2581", *letters, *(f"\u2581{c}" for c in letters)]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(order)}, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
