"""Vocabulary alignment between tokenizers, for token-level fusion.

Every token is reduced to the bytes it stands for (byte-level BPE's "Ġ"/"Ċ" alphabet decoded, sentencepiece's
"▁" read as a space, `<0xNN>` byte-fallback tokens read as their byte), and the union of those byte strings
is the shared vocabulary. Each tokenizer gets an index tensor from its ids into the union, so projecting a
distribution is one `index_add_` (a plain copy for the largest vocabulary, whose ids the union keeps) with no
Python loop over the vocabulary. A token a member lacks is fed to it as its own tokenisation of the same
bytes, so every member reads the same text byte for byte.

Special tokens decode to no text: every member's end-of-sequence ids are end-of-sequence union ids, every
other special token is matched across tokenizers by its name. Alignments are built once per set of
tokenizers and cached per process (and, through `alignment_cache`, on disk across processes).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase
from transformers.convert_slow_tokenizer import bytes_to_unicode

from ensemble_core.errors import EnsembleError

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_BYTE_DECODER = {char: byte for byte, char in bytes_to_unicode().items()}


class AlignmentError(EnsembleError, ValueError):
    """A tokenizer that cannot be aligned (its tokens do not map to bytes, or it cannot spell some bytes)."""


@dataclass(frozen=True)
class TokenTable:
    """What each id of one tokenizer stands for: its bytes, or (for special tokens) its name."""

    data: list[bytes]
    special: dict[int, str]
    byte_ids: dict[int, int]
    fallback: frozenset[int]

    def text_bytes(self, ids: Sequence[int]) -> bytes:
        """The bytes a run of ids decodes to, special tokens skipped."""
        return b"".join(self.data[i] for i in ids if i not in self.special)


def token_table(tokenizer: PreTrainedTokenizerBase) -> TokenTable:
    """The byte table of a tokenizer, from its decoder's kind (byte-level, or sentencepiece with byte
    fallback)."""
    byte_level = _byte_level(tokenizer)
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = {i: tok.content for i, tok in tokenizer.added_tokens_decoder.items() if tok.special}
    data: list[bytes] = []
    byte_ids: dict[int, int] = {}
    fallback_ids: dict[int, int] = {}
    for i, token in enumerate(vocab):
        if i in special or token is None:
            data.append(b"")
            continue
        value, is_fallback = _token_bytes(token, byte_level)
        if is_fallback:
            fallback_ids[value[0]] = i
        data.append(value)
        if len(value) == 1 and not is_fallback:
            byte_ids.setdefault(value[0], i)
    return TokenTable(
        data=data,
        special=special,
        byte_ids={**fallback_ids, **byte_ids},
        fallback=frozenset(fallback_ids.values()),
    )


def _token_bytes(token: str, byte_level: bool) -> tuple[bytes, bool]:
    """The bytes one (non-special) token stands for, and whether it is a `<0xNN>` byte fallback."""
    match = None if byte_level else _BYTE_FALLBACK.match(token)
    if match:
        return bytes([int(match.group(1), 16)]), True
    if byte_level:
        return b"".join(bytes([_BYTE_DECODER[c]]) if c in _BYTE_DECODER else c.encode() for c in token), False
    return token.replace("\u2581", " ").encode(), False


def table_agrees(tokenizer: PreTrainedTokenizerBase, table: TokenTable, ids: Sequence[int]) -> bool:
    """Whether `table` (read from a cache, say) gives `ids` the bytes `tokenizer` gives them now."""
    if len(table.data) != len(tokenizer):
        return False
    byte_level = _byte_level(tokenizer)
    special = {i: tok.content for i, tok in tokenizer.added_tokens_decoder.items() if tok.special}
    if special != table.special:
        return False
    tokens = tokenizer.convert_ids_to_tokens(list(ids))
    for i, token in zip(ids, tokens, strict=True):
        expected = b"" if i in special or token is None else _token_bytes(token, byte_level)[0]
        if table.data[i] != expected:
            return False
    return True


def _byte_level(tokenizer: PreTrainedTokenizerBase) -> bool:
    backend_decoder = tokenizer.backend_tokenizer.decoder
    decoder = json.loads(backend_decoder.__getstate__()) if backend_decoder is not None else {}
    return _has_decoder(decoder, "ByteLevel")


def _has_decoder(decoder: dict, kind: str) -> bool:
    if decoder.get("type") == kind:
        return True
    return any(_has_decoder(d, kind) for d in decoder.get("decoders") or [])


@dataclass
class Alignment:
    """A shared vocabulary for several tokenizers.

    `to_union[m]` maps member m's ids to union ids (a LongTensor), `from_union[m][u]` is member m's own id for
    union token u or -1 when it lacks it. `identity[m]`: member m's ids are the union's first ids unchanged
    (the largest vocabulary). `shared` means one tokenizer for all: union ids are its ids.
    """

    tokenizers: list[PreTrainedTokenizerBase]
    tables: list[TokenTable]
    union_bytes: list[bytes]
    union_special: dict[int, str]
    to_union: list[torch.Tensor]
    from_union: list[list[int]]
    eos: frozenset[int]
    shared: bool
    identity: list[bool]
    _devices: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def size(self) -> int:
        return len(self.union_bytes)

    def index(self, member: int, device: torch.device) -> torch.Tensor:
        """`to_union[member]` on `device` (moved once and kept)."""
        key = (member, str(device))
        if key not in self._devices:
            self._devices[key] = self.to_union[member].to(device)
        return self._devices[key]

    def text_bytes(self, union_ids: Sequence[int]) -> bytes:
        """The bytes a run of union ids stands for (special tokens add nothing)."""
        return b"".join(self.union_bytes[u] for u in union_ids)

    def decode(self, union_ids: Sequence[int]) -> str:
        """Text of union ids, invalid or partial UTF-8 shown as U+FFFD as tokenizers' decoders do."""
        return self.text_bytes(union_ids).decode("utf-8", errors="replace")

    def feed(self, member: int, union_id: int) -> list[int]:
        """The ids that make `member` read union token `union_id`: its own id, or its tokenisation of the
        bytes. A special token the member lacks is skipped (it stands for no text)."""
        own = self.from_union[member][union_id]
        if own >= 0:
            return [own]
        if union_id in self.union_special:
            return []
        return self.spell(member, self.union_bytes[union_id])

    def spell(self, member: int, data: bytes) -> list[int]:
        """`member`'s ids for exactly `data`: its tokenisation when that decodes back to the same bytes, else
        one id per byte (byte-level tokens or `<0xNN>` byte fallback)."""
        table = self.tables[member]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            ids = self.tokenizers[member](text, add_special_tokens=False)["input_ids"]
            if table.text_bytes(ids) == data:
                return ids
        missing = sorted({b for b in data if b not in table.byte_ids})
        if missing:
            raise AlignmentError(
                f"tokenizer {self.tokenizers[member].name_or_path!r} cannot spell the bytes "
                f"{bytes(missing)!r}: it "
                "has neither byte-level tokens nor <0xNN> byte fallback for them; fuse it only with members "
                "that share its tokenizer"
            )
        return [table.byte_ids[b] for b in data]


_CACHE: dict[tuple[int, ...], tuple[list[PreTrainedTokenizerBase], Alignment]] = {}
_TABLES: dict[int, tuple[PreTrainedTokenizerBase, TokenTable]] = {}
_LOCK = threading.Lock()


def cached_table(tokenizer: PreTrainedTokenizerBase) -> TokenTable:
    """`token_table`, built once per tokenizer object in this process."""
    with _LOCK:
        entry = _TABLES.get(id(tokenizer))
        if entry is None or entry[0] is not tokenizer:
            entry = _TABLES[id(tokenizer)] = (tokenizer, token_table(tokenizer))
        return entry[1]


def align(
    tokenizers: Sequence[PreTrainedTokenizerBase],
    eos_ids: Sequence[Sequence[int]],
    builder: Callable[[Sequence[PreTrainedTokenizerBase], Sequence[Sequence[int]]], Alignment] | None = None,
) -> Alignment:
    """The alignment of these tokenizers (each with its end-of-sequence ids), made once per process by
    `builder` (default `build_alignment`; `alignment_cache` passes one that reads it from disk)."""
    key = tuple(id(t) for t in tokenizers) + tuple(i for ids in eos_ids for i in (-1, *sorted(ids)))
    with _LOCK:
        entry = _CACHE.get(key)
        if entry is not None and all(a is b for a, b in zip(entry[0], tokenizers, strict=True)):
            return entry[1]
    alignment = (builder or build_alignment)(tokenizers, eos_ids)
    with _LOCK:
        _CACHE[key] = (list(tokenizers), alignment)
    return alignment


def build_alignment(
    tokenizers: Sequence[PreTrainedTokenizerBase], eos_ids: Sequence[Sequence[int]]
) -> Alignment:
    """Build the union vocabulary and its index tensors (see the module docstring).

    The union starts with the largest vocabulary's ids unchanged, so projecting that member (the costly one)
    is a copy, not a scatter; the other members' tokens map onto those ids by bytes, or are appended.
    """
    tables = [cached_table(t) for t in tokenizers]
    if all(t.data == tables[0].data and t.special == tables[0].special for t in tables[1:]):
        return _shared(tokenizers, tables, eos_ids)
    base = max(range(len(tables)), key=lambda m: len(tables[m].data))
    table = tables[base]
    union_bytes = [b"" if i in table.special else d for i, d in enumerate(table.data)]
    union_special = {i: name for i, name in table.special.items()}
    keys: dict[bytes | tuple[str, str], int] = {}
    for i in _regular_first(table):
        keys.setdefault(_key(table, i, eos_ids[base]), i)
    to_union: list[torch.Tensor] = []
    owners: list[dict[int, int]] = []
    for m, (other, eos) in enumerate(zip(tables, eos_ids, strict=True)):
        if m == base:
            to_union.append(torch.arange(len(table.data)))
            owners.append({})
            continue
        index = [0] * len(other.data)
        own: dict[int, int] = {}
        for i in _regular_first(other):
            key = _key(other, i, eos)
            u = keys.get(key)
            if u is None:
                u = keys[key] = len(union_bytes)
                union_bytes.append(b"" if isinstance(key, tuple) else key)
                if isinstance(key, tuple):
                    union_special[u] = key[1]
            index[i] = u
            own.setdefault(u, i)
        to_union.append(torch.tensor(index, dtype=torch.long))
        owners.append(own)
    from_union = []
    for m, own in enumerate(owners):
        if m == base:
            from_union.append(list(range(len(table.data))) + [-1] * (len(union_bytes) - len(table.data)))
            continue
        row = [-1] * len(union_bytes)
        for u, i in own.items():
            row[u] = i
        from_union.append(row)
    return Alignment(
        tokenizers=list(tokenizers),
        tables=tables,
        union_bytes=union_bytes,
        union_special=union_special,
        to_union=to_union,
        from_union=from_union,
        eos=frozenset(eos_ids[base]),
        shared=False,
        identity=[m == base for m in range(len(tables))],
    )


def _regular_first(table: TokenTable) -> list[int]:
    """Ids with regular tokens before `<0xNN>` byte fallbacks, so equal bytes map to the regular token."""
    return sorted(range(len(table.data)), key=lambda i: i in table.fallback)


def _key(table: TokenTable, i: int, eos: Sequence[int]) -> bytes | tuple[str, str]:
    """What a token is across tokenizers: its bytes, or its special name (every end-of-sequence id is one)."""
    if i in eos:
        return ("special", "<eos>")
    if i in table.special:
        return ("special", table.special[i])
    return table.data[i]


def _shared(
    tokenizers: Sequence[PreTrainedTokenizerBase],
    tables: Sequence[TokenTable],
    eos_ids: Sequence[Sequence[int]],
) -> Alignment:
    table = tables[0]
    identity = torch.arange(len(table.data))
    ids = list(range(len(table.data)))
    return Alignment(
        tokenizers=list(tokenizers),
        tables=list(tables),
        union_bytes=[b"" if i in table.special else d for i, d in enumerate(table.data)],
        union_special=dict(table.special),
        to_union=[identity for _ in tables],
        from_union=[ids for _ in tables],
        eos=frozenset(i for eos in eos_ids for i in eos),
        shared=True,
        identity=[True for _ in tables],
    )
