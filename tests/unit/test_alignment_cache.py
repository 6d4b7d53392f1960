"""The vocabulary alignment cached on disk: what is read back is what was built, a new process reads
instead of building, anything damaged or stale is rebuilt, and the key follows the tokenizers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from ensemble_core import alignment_cache
from ensemble_core.alignment import Alignment, build_alignment
from ensemble_core.members.weights import file_digest
from tests.unit.tiny_models import byte_tokenizer, tiny_llama

MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("l", "l"), ("e", "r"), ("Ġ", "a"), ("o", "n")]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """Two tokenizers loaded from folders, as members load theirs: the byte tokenizer and one with merges."""
    plain = tiny_llama(tmp_path_factory.mktemp("plain"))
    merged = tiny_llama(tmp_path_factory.mktemp("merged"), seed=2, tokenizer=byte_tokenizer(merges=MERGES))
    return [AutoTokenizer.from_pretrained(plain), AutoTokenizer.from_pretrained(merged)]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "alignments"
    monkeypatch.setattr(alignment_cache, "alignments_root", lambda: folder)
    return folder


def _eos(tokenizers):
    return [[t.eos_token_id] for t in tokenizers]


def _same(a: Alignment, b: Alignment) -> None:
    assert a.tables == b.tables
    assert a.union_bytes == b.union_bytes and a.union_special == b.union_special
    assert a.from_union == b.from_union
    assert all(torch.equal(x, y) for x, y in zip(a.to_union, b.to_union, strict=True))
    assert (a.eos, a.shared, a.identity) == (b.eos, b.shared, b.identity)


def _no_building(monkeypatch):
    def refuse(*args):
        raise AssertionError("the alignment was built instead of read")

    monkeypatch.setattr(alignment_cache, "build_alignment", refuse)


@pytest.mark.parametrize("pair", ["different", "shared"])
def test_what_is_read_back_is_what_was_built(tokenizers, cache, monkeypatch, pair):
    toks = tokenizers if pair == "different" else [tokenizers[0], tokenizers[0]]
    built = alignment_cache.load_or_build(toks, _eos(toks))
    assert (cache / alignment_cache.alignment_folder(toks, _eos(toks)).name / "alignment.json").is_file()
    _no_building(monkeypatch)
    read = alignment_cache.load_or_build(toks, _eos(toks))  # as a new process would
    _same(read, built)
    _same(read, build_alignment(toks, _eos(toks)))
    assert read.tokenizers == list(toks)
    assert read.decode(read.to_union[0][:5].tolist()) == built.decode(built.to_union[0][:5].tolist())


def test_a_new_process_reads_the_alignment_instead_of_building_it(tokenizers, cache, tmp_path):
    import subprocess
    import sys

    alignment_cache.load_or_build(tokenizers, _eos(tokenizers))
    folders = [t.name_or_path for t in tokenizers]
    script = (
        "import sys; from transformers import AutoTokenizer\n"
        "from ensemble_core import alignment_cache\n"
        f"alignment_cache.alignments_root = lambda: __import__('pathlib').Path({str(cache)!r})\n"
        "def refuse(*a): raise SystemExit('built')\n"
        "alignment_cache.build_alignment = refuse\n"
        f"toks = [AutoTokenizer.from_pretrained(f) for f in {folders!r}]\n"
        "a = alignment_cache.cached_alignment(toks, [[t.eos_token_id] for t in toks])\n"
        "print(a.size)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) == build_alignment(tokenizers, _eos(tokenizers)).size


def test_damaged_entries_are_rebuilt_and_written_again(tokenizers, cache, monkeypatch):
    eos = _eos(tokenizers)
    folder = alignment_cache.alignment_folder(tokenizers, eos)
    alignment_cache.load_or_build(tokenizers, eos)
    damages = {
        "truncated arrays": lambda: (folder / "arrays.safetensors").write_bytes(b"\0" * 10),
        "corrupt json": lambda: (folder / "alignment.json").write_text("{not json"),
        "missing arrays": lambda: (folder / "arrays.safetensors").unlink(),
        "other format": lambda: (folder / "alignment.json").write_text(
            json.dumps({**json.loads((folder / "alignment.json").read_text()), "format": 0})
        ),
    }
    for name, damage in damages.items():
        damage()
        assert alignment_cache.read(folder, tokenizers) is None, name
        rebuilt = alignment_cache.load_or_build(tokenizers, eos)
        _same(rebuilt, build_alignment(tokenizers, eos))
        assert alignment_cache.read(folder, tokenizers) is not None, name  # written again


def test_an_entry_the_live_tokenizer_disagrees_with_is_not_used(tokenizers, cache):
    """Consistent files (hashes match) whose token bytes are not the tokenizer's: the sample check catches
    it."""
    eos = _eos(tokenizers)
    folder = alignment_cache.alignment_folder(tokenizers, eos)
    alignment_cache.load_or_build(tokenizers, eos)
    arrays = load_file(folder / "arrays.safetensors")
    data = arrays["table0_bytes"].clone()
    data[:] = ord("x")
    arrays["table0_bytes"] = data
    save_file(arrays, str(folder / "arrays.safetensors"))
    meta = json.loads((folder / "alignment.json").read_text())
    meta["arrays_sha256"] = file_digest(folder / "arrays.safetensors")
    (folder / "alignment.json").write_text(json.dumps(meta))
    assert alignment_cache.read(folder, tokenizers) is None


def test_the_key_follows_the_tokenizers_and_the_end_of_sequence_ids(tokenizers, cache):
    eos = _eos(tokenizers)
    key = alignment_cache.alignment_folder(tokenizers, eos)
    assert alignment_cache.alignment_folder(list(reversed(tokenizers)), list(reversed(eos))) != key
    assert alignment_cache.alignment_folder(tokenizers, [eos[0], [0]]) != key
    grown = AutoTokenizer.from_pretrained(tokenizers[0].name_or_path)
    grown.add_tokens(["<new>"])
    assert alignment_cache.alignment_folder([grown, tokenizers[1]], eos) != key
    in_memory = byte_tokenizer()  # no file behind it: its serialised form is hashed
    assert alignment_cache.fingerprint(in_memory) == alignment_cache.fingerprint(byte_tokenizer())
    assert alignment_cache.fingerprint(in_memory) != alignment_cache.fingerprint(
        byte_tokenizer(merges=MERGES)
    )


def test_an_unwritable_cache_only_costs_the_rebuild(tokenizers, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setattr(alignment_cache, "alignments_root", lambda: blocker / "alignments")
    alignment = alignment_cache.load_or_build(tokenizers, _eos(tokenizers))
    _same(alignment, build_alignment(tokenizers, _eos(tokenizers)))
