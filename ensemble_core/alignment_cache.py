"""The vocabulary alignment cached on disk, so that a new process reads it instead of building it again
(building takes about a second for SmolLM2 + Gemma 3's 262k-token vocabulary; reading, a tenth of that).

An entry is keyed by a fingerprint of each tokenizer and the end-of-sequence ids. A tokenizer's fingerprint
is its vocabulary, merges and special tokens: the sha256 of the `tokenizer.json` it was loaded from (or of its
serialised form when it has no such file), its size and its added tokens. The entry is a folder
`alignments_root()/<key>/` in the user cache with `alignment.json` (the small fields, and the sha256 of the
arrays file) and `arrays.safetensors` (token bytes and index tensors; no pickle), written into a temporary
folder and renamed into place. On reading, a wrong hash or format, a missing array, or a sample of tokens
that the live tokenizer no longer reads the same way make it rebuilt and written again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from ensemble_core.alignment import Alignment, TokenTable, align, build_alignment, table_agrees
from ensemble_core.members.weights import cache_root, exclusive, file_digest

FORMAT = 1
_SAMPLE = 257  # tokens per tokenizer compared with the live tokenizer on every read


def cached_alignment(
    tokenizers: Sequence[PreTrainedTokenizerBase], eos_ids: Sequence[Sequence[int]]
) -> Alignment:
    """`align()`, reading the alignment from the disk cache when this process has not built it yet."""
    return align(tokenizers, eos_ids, builder=load_or_build)


def alignment_folder(tokenizers: Sequence[PreTrainedTokenizerBase], eos_ids: Sequence[Sequence[int]]) -> Path:
    """Where the alignment of these tokenizers and end-of-sequence ids is cached."""
    key = hashlib.sha256(
        json.dumps([FORMAT, [fingerprint(t) for t in tokenizers], [sorted(ids) for ids in eos_ids]]).encode()
    ).hexdigest()[:24]
    return alignments_root() / key


def alignments_root() -> Path:
    return cache_root() / "alignments"


def fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """What the alignment of a tokenizer depends on: its vocabulary, merges and decoder (the file it was
    loaded from, or its serialised form), its size and its added tokens."""
    source = Path(str(tokenizer.name_or_path or "")) / "tokenizer.json"
    digest = hashlib.sha256()
    if tokenizer.name_or_path and source.is_file():
        digest.update(file_digest(source).encode())
    else:
        digest.update(tokenizer.backend_tokenizer.to_str().encode())
    added = sorted((i, t.content, t.special) for i, t in tokenizer.added_tokens_decoder.items())
    digest.update(json.dumps([type(tokenizer).__name__, len(tokenizer), added]).encode())
    return digest.hexdigest()


def load_or_build(
    tokenizers: Sequence[PreTrainedTokenizerBase], eos_ids: Sequence[Sequence[int]]
) -> Alignment:
    """The cached alignment if it is there and valid, else a new one, cached for the next process (a cache
    that cannot be written is only slower)."""
    folder = alignment_folder(tokenizers, eos_ids)
    found = read(folder, tokenizers)
    if found is not None:
        return found
    alignment = build_alignment(tokenizers, eos_ids)
    try:
        write(folder, alignment)
    except OSError:
        pass
    return alignment


# reading --------------------------------------------------------------------------------------------------
def read(folder: Path, tokenizers: Sequence[PreTrainedTokenizerBase]) -> Alignment | None:
    """The alignment cached in `folder` for these tokenizers, or None when it is missing or invalid."""
    try:
        meta = json.loads((folder / "alignment.json").read_text())
        arrays_path = folder / "arrays.safetensors"
        if meta.get("format") != FORMAT or meta.get("arrays_sha256") != file_digest(arrays_path):
            return None
        arrays = load_file(arrays_path)
        alignment = _alignment(meta, arrays, tokenizers)
    except Exception:  # whatever is wrong with a cache entry, building it again is the answer
        return None
    for tokenizer, table in zip(tokenizers, alignment.tables, strict=True):
        if not table_agrees(tokenizer, table, _sample_ids(len(tokenizer))):
            return None
    return alignment


def _alignment(
    meta: dict[str, Any], arrays: dict[str, torch.Tensor], tokenizers: Sequence[PreTrainedTokenizerBase]
) -> Alignment:
    n = len(tokenizers)
    if len(meta["tables"]) != n:
        raise ValueError("the cached alignment is for another number of tokenizers")
    tables = [
        TokenTable(
            data=_strings(arrays[f"table{m}_bytes"], arrays[f"table{m}_offsets"]),
            special={int(i): name for i, name in t["special"].items()},
            byte_ids={int(b): i for b, i in t["byte_ids"].items()},
            fallback=frozenset(t["fallback"]),
        )
        for m, t in enumerate(meta["tables"])
    ]
    union_bytes = _strings(arrays["union_bytes"], arrays["union_offsets"])
    from_union = [arrays[f"from_union{m}"].tolist() for m in range(n)]
    if any(len(row) != len(union_bytes) for row in from_union):
        raise ValueError("the cached index rows do not match the union vocabulary")
    return Alignment(
        tokenizers=list(tokenizers),
        tables=tables,
        union_bytes=union_bytes,
        union_special={int(u): name for u, name in meta["union_special"].items()},
        to_union=[arrays[f"to_union{m}"].clone() for m in range(n)],
        from_union=from_union,
        eos=frozenset(meta["eos"]),
        shared=bool(meta["shared"]),
        identity=[bool(x) for x in meta["identity"]],
    )


def _strings(data: torch.Tensor, offsets: torch.Tensor) -> list[bytes]:
    blob = data.numpy().tobytes()
    ends = offsets.tolist()
    return [blob[a:b] for a, b in zip(ends[:-1], ends[1:], strict=True)]


def _sample_ids(size: int) -> list[int]:
    """Ids spread over the whole vocabulary, first and last included."""
    if size <= _SAMPLE:
        return list(range(size))
    return sorted({round(i * (size - 1) / (_SAMPLE - 1)) for i in range(_SAMPLE)})


# writing --------------------------------------------------------------------------------------------------
def write(folder: Path, alignment: Alignment) -> None:
    """Cache `alignment` in `folder`: written to a temporary folder, then renamed into place under a lock."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, torch.Tensor] = {}
    for m, table in enumerate(alignment.tables):
        arrays[f"table{m}_bytes"], arrays[f"table{m}_offsets"] = _packed(table.data)
        arrays[f"to_union{m}"] = alignment.to_union[m].to(torch.int64).clone()  # shared alignments repeat one
        arrays[f"from_union{m}"] = torch.tensor(alignment.from_union[m], dtype=torch.int64)
    arrays["union_bytes"], arrays["union_offsets"] = _packed(alignment.union_bytes)
    with exclusive(folder.parent / f".{folder.name}.lock"):
        tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=folder.parent))
        try:
            save_file(arrays, str(tmp / "arrays.safetensors"))
            meta = {
                "format": FORMAT,
                "arrays_sha256": file_digest(tmp / "arrays.safetensors"),
                "tables": [
                    {
                        "special": {str(i): name for i, name in t.special.items()},
                        "byte_ids": {str(b): i for b, i in t.byte_ids.items()},
                        "fallback": sorted(t.fallback),
                    }
                    for t in alignment.tables
                ],
                "union_special": {str(u): name for u, name in alignment.union_special.items()},
                "eos": sorted(alignment.eos),
                "shared": alignment.shared,
                "identity": alignment.identity,
            }
            (tmp / "alignment.json").write_text(json.dumps(meta))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _packed(strings: Sequence[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    """Byte strings as one uint8 tensor and their offsets (n + 1 of them)."""
    blob = b"".join(strings)
    lengths = torch.tensor([0, *(len(s) for s in strings)], dtype=torch.int64)
    data = torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else torch.empty(0, dtype=torch.uint8)
    return data, lengths.cumsum(0)
